"""Every private Faust name the worker relies on, and every Faust subclass, in one file.

Nothing here changes Faust when imported: ``install`` registers the store and transport
aliases, and ``create_app`` calls it. No Faust function is patched. When faust-streaming
changes one of these internals, this is the one file to read.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import faust
from faust.sensors.prometheus import PrometheusMonitor
from faust.stores import STORES
from faust.stores.rocksdb import Store as RocksDBStore
from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from faust.transport.drivers.aiokafka import Producer as AIOKafkaProducer
from faust.transport.drivers.aiokafka import Transport as AIOKafkaTransport
from faust.types import TP
from faust.web.drivers import DRIVERS as WEB_DRIVERS
from faust.web.drivers.aiohttp import Web as AiohttpWeb

STORE_URL = "intentflow-rocksdb://"
CONSUMER_SCHEME = "intentflow-batch"  # broker_consumer=["intentflow-batch://host:port"]
WEB_URL = "intentflow-aiohttp://"
log = logging.getLogger("intentflow.worker")

PARTITION_CACHE_KEYS = 200_000  # keys whose partition the producer remembers, per topic


class App(faust.App):
    """Faust's app, whose stop checkpoints the batch runner first. Faust's ``_stop_consumer``
    stops the fetch loop and then the tables; the runner's last checkpoint (scores delivered,
    profiles in the changelog and RocksDB, offsets committed) must come before both, while the
    consumer is still a member of its group, so a restart replays nothing."""

    async def _stop_consumer(self) -> None:
        runner = getattr(self, "batch_runner", None)
        if runner is not None:
            await runner.stop()
        await super()._stop_consumer()


class BatchConsumerThread(AIOKafkaConsumerThread):
    """Faust's consumer thread, with the fetch wait and size from the settings. Faust hard-codes
    ``fetch_max_wait_ms=1500``: aiokafka keeps one fetch in flight per broker and leaves out
    the partitions whose records it still holds, so a fetch of only the idle partitions sat
    at the broker for 1.5 s while records for the others waited behind it (bench/: p99 2.2 s
    at 3,200 events/s with the worker using a third of a core; 62 ms with 100 ms)."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        settings = self.consumer.app.batch_runner.settings  # type: ignore[attr-defined]
        # Read when the consumer starts.
        consumer._fetch_max_wait_ms = int(settings.fetch_max_wait_seconds * 1000)
        consumer._fetch_min_bytes = settings.fetch_min_bytes
        return consumer


class BatchConsumer(AIOKafkaConsumer):
    """Faust's aiokafka consumer, whose fetches of the input topic go to the batch runner.

    Every fetch passes through ``_wait_next_records``; the input topic's records are taken
    out there and handed, as one batch, to ``app.batch_runner.process`` (which returns once
    they are applied and sent). The rest (changelog records during recovery and standby)
    continue into Faust as usual.
    """

    def _new_consumer_thread(self) -> Any:
        return BatchConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _wait_next_records(self, timeout: float) -> Any:
        generation = self.app.consumer_generation_id
        records, active = await super()._wait_next_records(timeout)
        if records:
            records = self._restore_in_bulk(records)
        runner = getattr(self.app, "batch_runner", None)
        if records and runner is not None:
            mine = {tp: rs for tp, rs in records.items() if tp.topic in runner.topics}
            if mine:
                records = {tp: rs for tp, rs in records.items() if tp not in mine}
                try:
                    await runner.process(mine, generation)
                except Exception as exc:
                    # Delivery or commit failed (the broker, not an input: the step isolates
                    # those). Stop: the restarted worker replays from the last commit.
                    await self.app.crash(exc)
                    raise
        return records, active

    def _restore_in_bulk(self, records: Any) -> Any:
        """Write each fetch of the profile changelog (recovery, standby replicas) to RocksDB
        at once, and hand Faust's recovery only the fetch's last record, as already read.

        Faust's recovery takes each changelog record through its per-message path (the
        conductor, a queue, a task per record: ~200 µs each, so 200k profiles took 38 s to
        restore). Here the records go to the store's ``apply_changelog_batch`` in one
        RocksDB write batch per partition, and the recovery's read position is moved to the
        last one. Faust still sees that last record: its position is not past what was read,
        so it is not applied again, and it wakes the recovery to notice that the partition
        has caught up (it would otherwise wait up to 5 s for the next record). Faust itself
        never writes a record of this changelog, so nothing it holds can overwrite a newer
        value."""
        recovery = self.app.tables.recovery  # type: ignore[attr-defined]
        stores = _profile_changelog_stores(self.app)
        for tp, batch in records.items():
            store = stores.get(tp.topic)
            if store is None or not batch:
                continue
            if tp in recovery.active_tps:
                read = recovery.active_offsets
            elif tp in recovery.standby_tps:
                read = recovery.standby_offsets
            else:
                continue
            seen = read.get(tp)
            fresh = [r for r in batch if seen is None or r.offset > seen]
            if fresh:
                store.apply_changelog_batch([_ChangelogRecord(tp, r) for r in fresh], None, None)
                read[tp] = fresh[-1].offset
            records[tp] = batch[-1:]
        return records


class _ChangelogRecord:
    """A changelog record shaped as the store's ``apply_changelog_batch`` reads an event
    (``event.message.tp``, ``.offset``, ``.partition``, ``.key``, ``.value``)."""

    __slots__ = ("key", "offset", "partition", "tp", "value")

    def __init__(self, tp: Any, record: Any) -> None:
        self.tp, self.offset, self.partition = tp, record.offset, tp.partition
        self.key, self.value = record.key, record.value

    @property
    def message(self) -> _ChangelogRecord:
        return self


def _profile_changelog_stores(app: Any) -> dict[str, ChangelogRecoveredStore]:
    """Changelog topic -> store, for the tables whose store is a ``ChangelogRecoveredStore``."""
    return {
        table.changelog_topic.get_topic_name(): table.data
        for table in app.tables.values()
        if isinstance(table.data, ChangelogRecoveredStore)
    }


class ChangelogTrackingProducer(AIOKafkaProducer):
    """Faust's aiokafka producer that tells a table's store the offset of each changelog
    record it delivered (see ``ChangelogRecoveredStore.cover_own_writes``)."""

    _stores: dict[str, ChangelogRecoveredStore] | None = None

    async def send(  # noqa: PLR0917  (Faust's signature)
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        timestamp: float | None,
        headers: Any,
        *,
        transactional_id: str | None = None,
    ) -> Any:
        future: Any = await super().send(
            topic, key, value, partition, timestamp, headers, transactional_id=transactional_id
        )
        store = self._changelog_stores().get(topic)
        if store is not None:
            future.add_done_callback(store.note_delivered)
        return future

    async def send_many(self, topic: str, records: Sequence[tuple[bytes, bytes]]) -> list[Any]:
        """``send_batches`` on this producer (see there)."""
        caches = self.__dict__.setdefault("_partitions_by_key", {})
        return await send_batches(self._ensure_producer(), topic, records, caches)

    def _changelog_stores(self) -> dict[str, ChangelogRecoveredStore]:
        if not self._stores:
            self._stores = _profile_changelog_stores(self.app)
        return self._stores


async def send_batches(
    client: Any,
    topic: str,
    records: Sequence[tuple[bytes, bytes]],
    caches: dict[str, tuple[int, dict[bytes, int]]],
) -> list[Any]:
    """Hand ``records`` (key, value) to an aiokafka producer as record batches, one or more per
    partition (``create_batch``/``send_batch``), each record on the partition ``send`` would
    choose for its key. Returns one delivery future per batch: a record is delivered when its
    batch is. ``send`` costs several µs of Python per record (metadata wait, partitioner,
    accumulator, future); this costs one ``append``. ``caches`` remembers each key's
    partition per topic (murmur2 in Python is most of the partitioner's cost)."""
    await client.client._wait_on_metadata(topic)
    metadata = client.client.cluster
    all_partitions = sorted(metadata.partitions_for_topic(topic))
    available = list(metadata.available_partitions_for_topic(topic))
    cached = caches.get(topic)
    if cached is None or cached[0] != len(all_partitions) or len(cached[1]) > PARTITION_CACHE_KEYS:
        cached = caches[topic] = (len(all_partitions), {})
    known, partitioner = cached[1], client._partitioner
    by_partition: dict[int, list[tuple[bytes, bytes]]] = {}
    for key, value in records:
        partition = known.get(key)
        if partition is None:
            partition = known[key] = partitioner(key, all_partitions, available)
        by_partition.setdefault(partition, []).append((key, value))
    futures = []
    for partition, items in by_partition.items():
        batch = client.create_batch()
        for key, value in items:
            if batch.append(timestamp=None, key=key, value=value) is None:  # full
                futures.append(await client.send_batch(batch, topic, partition=partition))
                batch = client.create_batch()
                if batch.append(timestamp=None, key=key, value=value) is None:
                    raise ValueError(
                        f"a record of {len(value)} bytes for {topic} does not fit in an empty "
                        f"producer batch; raise the producer's max_batch_size"
                    )
        futures.append(await client.send_batch(batch, topic, partition=partition))
    return futures


class BatchTransport(AIOKafkaTransport):
    """The aiokafka transport with ``BatchConsumer`` and ``ChangelogTrackingProducer``."""

    Consumer = BatchConsumer
    Producer = ChangelogTrackingProducer


class ChangelogRecoveredStore(RocksDBStore):
    """RocksDB whose remembered changelog position is only ever where it has *read* the
    changelog to (recovery and standby replicas), never the offset of a write of its own.

    Faust stores that position in each partition's database and, on a later assignment, reads
    the changelog only past it: after a restart, and after a standby replica is promoted, the
    partition catches up from there instead of from the start. Faust's table also records the
    offsets of its own changelog sends there; a send delivered after its partition had moved
    away once recorded a position past the new owner's writes, which a later assignment then
    skipped. The batch runner writes the table below Faust's table API, and this store ignores
    any position that does not come from reading the changelog, so that cannot recur. Every
    position it keeps is one up to which the database holds every record of the changelog.
    """

    _reading_changelog = False
    _delivered: dict[int, set[int]]  # partition -> own changelog offsets, delivered
    _synced_noted: dict[int, float]  # partition -> when its in-sync time was last written

    def apply_changelog_batch(self, batch: Any, to_key: Any, to_value: Any) -> None:
        self._reading_changelog = True
        try:
            super().apply_changelog_batch(batch, to_key, to_value)
        finally:
            self._reading_changelog = False

    def set_persisted_offset(self, tp: Any, offset: int) -> None:
        if self._reading_changelog:
            super().set_persisted_offset(tp, offset)
            self._note_in_sync(tp.partition)

    # -- erased profiles must not come back from a stale local copy --------------------------
    #
    # An erasure is a tombstone in the compacted changelog, which the broker keeps for
    # ``delete.retention.ms`` (INTENTFLOW_CHANGELOG_DELETE_RETENTION_SECONDS) and then removes
    # along with the profile's earlier records. A copy of a partition that was last in sync
    # with the changelog longer ago than that may have missed a tombstone for good: reading on
    # from its position would keep the erased profile. Such a copy is discarded at assignment
    # and the partition rebuilt from the start of the changelog (a fetch at a time, see
    # ``BatchConsumer._restore_in_bulk``). When the copy was last in sync is kept beside each
    # partition's database (``<partition>.db.in-sync``: unix seconds), written whenever its
    # position moves, at most every ``IN_SYNC_NOTE_SECONDS``; a copy without it (written by an
    # older worker) counts as stale.

    IN_SYNC_NOTE_SECONDS = 10.0

    def persisted_offset(self, tp: Any) -> int | None:
        position = super().persisted_offset(tp)
        if position is None:
            return None
        limit = self._tombstone_lifetime()
        age = time.time() - self._in_sync_at(tp.partition)
        if limit is None or age < limit:
            return position
        log.warning(
            "%s partition %d: the local copy was last in sync with the changelog %s ago, "
            "longer than the changelog keeps tombstones (%.0f s with a margin); discarding it "
            "and reading the partition from the start, so no erased profile can come back",
            self.table.name, tp.partition,
            f"{age:.0f} s" if age != float("inf") else "at an unknown time", limit,
        )  # fmt: skip
        self._discard_partition(tp.partition)
        return None

    def _tombstone_lifetime(self) -> float | None:
        """How long a local copy may have been out of touch and still hold every tombstone:
        90% of the changelog's delete.retention (a margin for clock skew)."""
        runner = getattr(self.app, "batch_runner", None)
        if runner is None:
            return None
        return 0.9 * float(runner.settings.changelog_delete_retention_seconds)

    def _in_sync_path(self, partition: int) -> Path:
        path = self.partition_path(partition)
        return path.with_name(path.name + ".in-sync")

    def _in_sync_at(self, partition: int) -> float:
        try:
            return float(self._in_sync_path(partition).read_text())
        except (FileNotFoundError, ValueError):
            return float("-inf")

    def _note_in_sync(self, partition: int, *, force: bool = False) -> None:
        now = time.time()
        noted = self.__dict__.setdefault("_synced_noted", {})
        if not force and now - noted.get(partition, 0.0) < self.IN_SYNC_NOTE_SECONDS:
            return
        path = self._in_sync_path(partition)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(repr(now))
        os.replace(tmp, path)
        noted[partition] = now

    def _discard_partition(self, partition: int) -> None:
        """Empty the partition's database (its position included)."""
        import rocksdict

        db = self._db_for_partition(partition)
        keys = list(db.keys())
        for start in range(0, len(keys), 10_000):
            batch = rocksdict.WriteBatch(raw_mode=True)
            for key in keys[start : start + 10_000]:
                batch.delete(key)
            db.write(batch)
        self._in_sync_path(partition).unlink(missing_ok=True)
        self.__dict__.setdefault("_synced_noted", {}).pop(partition, None)

    def _position(self, partition: int) -> int | None:
        found = self._db_for_partition(partition).get(self.offset_key)
        return int(found) if found is not None else None

    async def on_recovery_completed(self, active_tps: Any, standby_tps: Any) -> None:
        """Recovery read each active partition up to the changelog's end as it was when
        recovery began: the database holds every record up to there, even where the last
        records were compacted away or the partition is empty."""
        await super().on_recovery_completed(active_tps, standby_tps)
        tables: Any = self.app.tables
        read_to = tables.recovery.active_highwaters  # last offset read to (highwater - 1)
        for tp in active_tps:
            last, position = read_to.get(tp), self._position(tp.partition)
            if last is not None and (position is None or position < last):
                # -1 for an empty changelog: the position Faust itself starts reading from
                self._db_for_partition(tp.partition).put(self.offset_key, str(last).encode())
            self._note_in_sync(tp.partition, force=True)
        self._delivered = {}

    def note_delivered(self, future: Any) -> None:
        """A changelog record this worker produced was delivered (a send future's callback)."""
        if future.cancelled() or future.exception() is not None:
            return
        meta = future.result()
        if not hasattr(self, "_delivered"):
            self._delivered = {}
        self._delivered.setdefault(meta.partition, set()).add(meta.offset)

    def cover_own_writes(self, partition: int, batch: Any) -> bool:
        """Move the partition's position over this worker's own changelog records once they
        are in the database (``batch`` writes them; the position goes into the same batch).
        Only a run of consecutive offsets right after the position counts: a record of another
        writer in between (a worker that lost the partition and still wrote) stops the run, so
        the next recovery reads that record rather than skipping it."""
        own = getattr(self, "_delivered", {}).get(partition)
        position = self._position(partition)
        if not own or position is None:
            return False
        moved = position
        while moved + 1 in own:
            moved += 1
        own.difference_update([o for o in own if o <= moved])
        if moved > position:
            batch.put(self.offset_key, str(moved).encode())
        return moved > position


class HardenedWeb(AiohttpWeb):
    """Faust's aiohttp web server without its index page (Faust serves it whenever the
    statistics pages are off). With the router, table, graph, statistics and performance
    pages switched off in the app's settings, only the pages the worker adds remain."""

    production_blueprints = ()


class BatchLevelMonitor(PrometheusMonitor):
    """Faust's Prometheus sensors without the hooks that run for every message, event, table
    access and send (a fifth of the worker's CPU in bench/). The worker counts its traffic per
    batch in ``streams.worker.metrics``; rebalance, commit, recovery and error series remain."""

    def on_message_in(self, *args: Any, **kwargs: Any) -> None:
        return None

    def on_stream_event_in(self, *args: Any, **kwargs: Any) -> None:
        return None

    def on_stream_event_out(self, *args: Any, **kwargs: Any) -> None:
        return None

    def on_message_out(self, *args: Any, **kwargs: Any) -> None:
        return None

    def on_table_get(self, *args: Any, **kwargs: Any) -> None:
        return None

    def on_table_set(self, *args: Any, **kwargs: Any) -> None:
        return None

    def on_send_initiated(self, *args: Any, **kwargs: Any) -> None:
        return None

    def on_send_completed(self, *args: Any, **kwargs: Any) -> None:
        return None

    def on_send_error(self, producer: Any, exc: BaseException, state: Any) -> None:
        self.send_errors += 1  # on_send_initiated kept no start time to measure from
        self._metrics.total_error_messages_sent.inc()


def install() -> None:
    """Register the store and transport aliases (idempotent)."""
    STORES.aliases[STORE_URL.split(":", maxsplit=1)[0]] = f"{__name__}:ChangelogRecoveredStore"
    TRANSPORTS.aliases[CONSUMER_SCHEME] = f"{__name__}:BatchTransport"
    WEB_DRIVERS.aliases[WEB_URL.split(":", maxsplit=1)[0]] = f"{__name__}:HardenedWeb"


def tp(topic: str, partition: int) -> TP:
    return TP(topic, partition)


def partition_db(table: Any, partition: int) -> Any:
    """The RocksDB database (rocksdict, raw mode) of one partition of a table."""
    return table.data._db_for_partition(partition)


def write_batch(table: Any, partition: int, items: list[tuple[bytes, bytes | None]]) -> None:
    """One RocksDB write batch into a partition of a table: a put per ``(key, value)``, a
    delete where the value is None."""
    import rocksdict

    batch = rocksdict.WriteBatch(raw_mode=True)
    for key, value in items:
        if value is None:
            batch.delete(key)
        else:
            batch.put(key, value)
    store = table.data if isinstance(table.data, ChangelogRecoveredStore) else None
    # the checkpoint delivered them before (step 2): the position moves over them
    moved = store is not None and store.cover_own_writes(partition, batch)
    partition_db(table, partition).write(batch)
    if moved:
        store._note_in_sync(partition)  # type: ignore[union-attr]


async def prove_membership(consumer: Any, offsets: dict[TP, int]) -> bool:
    """Whether the consumer is still a member of its group, proven by committing ``offsets``
    (already committed: nothing changes) straight through aiokafka; the broker refuses a commit
    from a stale generation. Faust's own commit path would crash the app on that refusal."""
    from aiokafka.errors import CommitFailedError, IllegalStateError
    from aiokafka.structs import OffsetAndMetadata, TopicPartition

    thread = consumer._thread

    async def _commit() -> None:
        await thread._ensure_consumer().commit(
            {
                TopicPartition(tp.topic, tp.partition): OffsetAndMetadata(o, "")
                for tp, o in offsets.items()
            }
        )

    try:
        await thread.call_thread(_commit)
    except (CommitFailedError, IllegalStateError):
        return False
    return True


async def commit(consumer: Any, offsets: dict[TP, int]) -> bool:
    """Commit ``offsets`` (next offset to read, per TP) through Faust's consumer, which flushes
    the producer first and keeps its own committed-offset bookkeeping."""
    committed: bool = await consumer._commit_offsets(offsets)
    return committed


def committed_offset(consumer: Any, tp: TP) -> int | None:
    """The offset Faust last committed for ``tp`` (None: nothing yet)."""
    committed: int | None = consumer._committed_offset.get(tp)
    return committed


def rocksdb_key_estimate(table: Any) -> int:
    """Users held: RocksDB's key estimate per partition database (cheap), summed, less each
    database's changelog position (Faust's offset key, not a user)."""
    total = 0
    offset_key = getattr(table.data, "offset_key", None)
    for db in getattr(table.data, "_dbs", {}).values():
        try:
            estimate = int(db.property_int_value("rocksdb.estimate-num-keys") or 0)
        except (AttributeError, TypeError, ValueError):
            continue
        holds_position = offset_key is not None and db.get(offset_key) is not None
        total += max(0, estimate - holds_position)
    return total
