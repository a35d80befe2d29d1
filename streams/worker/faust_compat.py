"""Every private Faust name the worker relies on, and every Faust subclass, in one file.

Nothing here changes Faust when imported: ``install`` registers the store and transport
aliases, and ``create_app`` calls it. No Faust function is patched. When faust-streaming
changes one of these internals, this is the one file to read.
"""

from __future__ import annotations

from typing import Any

from faust.sensors.prometheus import PrometheusMonitor
from faust.stores import STORES
from faust.stores.rocksdb import Store as RocksDBStore
from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from faust.transport.drivers.aiokafka import Transport as AIOKafkaTransport
from faust.types import TP

STORE_URL = "intentflow-rocksdb://"
CONSUMER_SCHEME = "intentflow-batch"  # broker_consumer=["intentflow-batch://host:port"]


class BatchConsumer(AIOKafkaConsumer):
    """Faust's aiokafka consumer, whose fetches of the input topic go to the batch runner.

    Every fetch passes through ``_wait_next_records``; the input topic's records are taken
    out there and handed, as one batch, to ``app.batch_runner.process`` (which returns once
    they are applied and sent). The rest (changelog records during recovery and standby)
    continue into Faust as usual.
    """

    async def _wait_next_records(self, timeout: float) -> Any:
        generation = self.app.consumer_generation_id
        records, active = await super()._wait_next_records(timeout)
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


class BatchTransport(AIOKafkaTransport):
    """The aiokafka transport with ``BatchConsumer``."""

    Consumer = BatchConsumer


class ChangelogRecoveredStore(RocksDBStore):
    """RocksDB that rebuilds every partition it is assigned from the changelog.

    Faust's RocksDB store remembers how far it had read each changelog partition and, on a
    later assignment, reads only past that point. After a partition moved away and back (a
    takeover) that shortcut skipped the other worker's writes in our tests, and the
    partition's stream was never resumed. Reading the compacted changelog from the start makes
    the table equal to the changelog after every rebalance, at the cost of a longer recovery
    (measured in bench/: 200k users).
    """

    def persisted_offset(self, tp: Any) -> int | None:
        return None


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
    partition_db(table, partition).write(batch)


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
    """Users held: RocksDB's key estimate per partition database (cheap), summed."""
    total = 0
    for db in getattr(table.data, "_dbs", {}).values():
        try:
            total += int(db.property_int_value("rocksdb.estimate-num-keys") or 0)
        except (AttributeError, TypeError, ValueError):
            continue
    return total
