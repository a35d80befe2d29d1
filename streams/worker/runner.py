"""The batch runner: the worker's input loop, below Faust's per-message stream.

Faust stays the application (agents, the table and its changelog, co-partitioned assignment,
recovery, web, timers, sensors), but the input topic's records never become Faust messages.
``faust_compat.BatchConsumer`` hands each fetch of the input partitions to ``BatchRunner.process``,
which keeps every partition in strict offset order, runs the pure step over the whole fetch
(``streams.processing.step.run_step``) against a bounded cache of decoded profiles, and sends
the scores and dead letters at once. About once a second it checkpoints, in one order:

1. scores and dead letters delivered (their futures awaited);
2. one changelog record per changed user delivered;
3. one RocksDB write batch per partition;
4. the input offsets committed.

Only taking the checkpoint's snapshot (what is pending, and the changed profiles) stalls the
input loop. The four steps wait on the broker, so they run as a task while the next
fetches apply (``BatchRunner._checkpoint``): one at a time and in order, the profiles they
write pinned in the cache until RocksDB has them, a failure raised at the next fetch (nothing
of that snapshot or later is committed), and a revocation or a stop waiting for them.

A crash anywhere replays from the last commit. Each stored profile carries the position of
the last event applied to it (``streams.processing.envelope``), so the replay skips what the
profiles already hold, and they end equal to those of an uninterrupted run. The model to read
for this shape is Quix Streams' ``Checkpoint.commit()``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from streams.contracts.erasure import EraseCommand, EraseReceipt
from streams.features import PROFILE_FORMAT_VERSION, compiled_core
from streams.privacy.pseudonyms import Pseudonymizer
from streams.processing.envelope import StoredProfile, decode_stored, encode_stored
from streams.processing.step import Record, run_step
from streams.worker import faust_compat
from streams.worker.context import Worker
from streams.worker.drift import FeatureMonitor
from streams.worker.retention import RetentionSweep
from streams.worker.sending import publish_dead_letters, publish_scores, score_rows

log = logging.getLogger("intentflow.worker")


class ProfileCache:
    """Decoded profiles of the assigned partitions: every changed one until the next
    checkpoint writes it, and up to ``capacity`` unchanged ones, least recently used first out.
    Misses read the partition's RocksDB database. It is the step's ``ProfileLookup``.

    Stores are keyed by the user's pseudonym (``streams.privacy.pseudonyms``), never the raw
    id. A profile found only under an older key is moved: rewritten under the active key and
    its old entry tombstoned at the next checkpoint.
    """

    def __init__(self, table: Any, capacity: int, pseudonyms: Pseudonymizer) -> None:
        self._table = table
        self.capacity = capacity
        self.pseudonyms = pseudonyms
        self.clean: OrderedDict[tuple[int, str], StoredProfile] = OrderedDict()
        self.dirty: dict[tuple[int, str], StoredProfile] = {}
        self.tombstones: set[tuple[int, str]] = set()  # (partition, pseudonym) to delete
        # Writes a checkpoint has taken but not yet put into RocksDB (None: a tombstone): until
        # they are there, they are the user's latest state, whatever the LRU evicts.
        self.pinned: dict[tuple[int, str], StoredProfile | None] = {}
        self.hits = self.misses = self.moved = 0

    def get(self, partition: int, user_id: str, /) -> StoredProfile | None:
        key = (partition, self.pseudonyms.pseudonym(user_id))
        found = self.dirty.get(key)
        if found is not None:
            self.hits += 1
            return found
        found = self.clean.get(key)
        if found is not None:
            self.clean.move_to_end(key)
            self.hits += 1
            return found
        if key in self.tombstones:  # erased since the last checkpoint: starts afresh
            return None
        if key in self.pinned:  # on its way to RocksDB
            found = self.pinned[key]
            if found is not None:
                self._remember(key, found)
            return found
        self.misses += 1
        db = faust_compat.partition_db(self._table, partition)
        data = db.get(key[1].encode())
        if data is not None:
            stored = decode_stored(data)  # a ProfileDecodeError dead-letters the user's events
            self._remember(key, stored)
            return stored
        for old in self.pseudonyms.all_pseudonyms(user_id)[1:]:  # a rotated key
            data = db.get(old.encode())
            if data is not None:
                stored = decode_stored(data)
                self.dirty[key] = stored  # rewritten under the active key...
                self.tombstones.add((partition, old))  # ...and gone under the old one
                self.moved += 1
                return stored
        return None

    def put(self, partition: int, user_id: str, stored: StoredProfile) -> None:
        key = (partition, self.pseudonyms.pseudonym(user_id))
        self.clean.pop(key, None)
        self.tombstones.discard(key)
        self.dirty[key] = stored

    def delete(self, partition: int, pseudonym: str) -> bool:
        """Erase a profile: forget it here and tombstone it at the next checkpoint. Whether the
        worker held it (cached or in RocksDB)."""
        key = (partition, pseudonym)
        held = self.dirty.pop(key, None) is not None
        held = self.clean.pop(key, None) is not None or held
        held = self.pinned.get(key) is not None or held
        if not held and key not in self.pinned:  # a pinned tombstone: already erased
            db = faust_compat.partition_db(self._table, partition)
            held = db.get(pseudonym.encode()) is not None
        self.tombstones.add(key)
        return held

    def take_writes(self) -> dict[tuple[int, str], StoredProfile | None]:
        """What the next checkpoint writes: changed profiles (which become clean cache entries)
        and tombstones (None), by (partition, pseudonym)."""
        dirty, self.dirty = self.dirty, {}
        for key, stored in dirty.items():
            self._remember(key, stored)
        writes: dict[tuple[int, str], StoredProfile | None] = dict(dirty)
        for key in self.tombstones:
            writes.setdefault(key, None)
        self.tombstones = set()
        return writes

    def latest(self, key: tuple[int, str]) -> tuple[bool, StoredProfile | None]:
        """(held here, the profile) for a key, without reading RocksDB: (True, None) when it
        is erased but not yet written."""
        found = self.dirty.get(key) or self.clean.get(key)
        if found is not None:
            return True, found
        if key in self.tombstones:
            return True, None
        if key in self.pinned:
            return True, self.pinned[key]
        return False, None

    def pin(self, writes: Mapping[tuple[int, str], StoredProfile | None]) -> None:
        """Hold a checkpoint's writes until RocksDB has them (``unpin``)."""
        self.pinned.update(writes)

    def unpin(self, writes: Mapping[tuple[int, str], StoredProfile | None]) -> None:
        for key, stored in writes.items():
            if key in self.pinned and self.pinned[key] is stored:
                del self.pinned[key]

    def drop_partitions(self, partitions: set[int]) -> None:
        """Forget partitions this worker no longer owns (changed entries included)."""
        for store in (self.clean, self.dirty, self.pinned):
            for key in [k for k in store if k[0] in partitions]:
                del store[key]
        self.tombstones = {k for k in self.tombstones if k[0] not in partitions}

    def _remember(self, key: tuple[int, str], stored: StoredProfile) -> None:
        self.clean[key] = stored
        self.clean.move_to_end(key)
        while len(self.clean) > self.capacity:
            self.clean.popitem(last=False)


@dataclass
class Pending:
    """What the runner has sent or changed since its last checkpoint."""

    sends: list[Any] = field(default_factory=list)  # awaitables: deliveries of scores, DLQ
    commit: dict[Any, int] = field(default_factory=dict)  # TP -> next offset to read
    receipts: list[EraseReceipt] = field(default_factory=list)  # sent once the tombstones are
    events: int = 0


@dataclass
class Snapshot:
    """One checkpoint's share of the work: what was pending, and the profile writes taken from
    the cache (pinned there until RocksDB has them)."""

    pending: Pending
    writes: dict[tuple[int, str], StoredProfile | None]
    started: float


YIELD_EVERY = 128  # profiles a checkpoint's flush encodes or sends between two yields


class FencedError(Exception):
    """The group moved this worker's partitions while a checkpoint was writing."""


class BatchRunner:
    """Processes the input partitions' fetches and checkpoints them (see the module doc)."""

    def __init__(self, w: Worker) -> None:
        self.w = w
        self.settings = w.settings
        self.topic = w.settings.topic_events
        self.topics = {w.settings.topic_events, w.settings.topic_erasure}
        self.cache = ProfileCache(w.profiles, w.settings.profile_cache_users, w.pseudonyms)
        self.lock = asyncio.Lock()
        self.pending = Pending()
        self.expected: dict[Any, int] = {}  # TP -> next offset to apply
        # TP -> an offset known to be committed (or the first one read): committing it again
        # proves the worker is still a member of the group
        self.safe_offsets: dict[Any, int] = {}
        self.refetched: dict[Any, tuple[int, int]] = {}  # TP -> (expected, got) seeked once
        self.last_checkpoint = time.monotonic()
        # The delivering half of the last checkpoint, running while the next fetches apply
        # (``_checkpoint``); None when there is none.
        self.flushing: asyncio.Task[None] | None = None
        self.generation = -1
        self.stopping = False  # set by ``stop``: no fetch is applied after the last checkpoint
        self.features = FeatureMonitor(w.metrics, half_life_s=w.settings.drift_half_life_seconds)
        self.event_clock: dict[int, float] = {}  # partition -> newest event time applied
        self.retention = RetentionSweep(
            self,
            w.settings.profile_ttl_days * 86_400,
            w.settings.pseudonym_grace_days * 86_400,
            w.settings.retention_sweep_pause_seconds,
        )
        log.info(
            "per-event core: %s",
            "compiled with mypyc (streams.devtools.compile)"
            if compiled_core() else "the Python sources",
        )  # fmt: skip
        if w.settings.profile_format != PROFILE_FORMAT_VERSION:
            log.warning(
                "writing profiles in format %d (INTENTFLOW_PROFILE_FORMAT), not the current %d: "
                "set it to %d once no worker that reads only format %d can be rolled back to",
                w.settings.profile_format, PROFILE_FORMAT_VERSION, PROFILE_FORMAT_VERSION,
                w.settings.profile_format,
            )  # fmt: skip

    # -- the input loop ------------------------------------------------------------------

    async def process(self, fetched: Mapping[Any, Sequence[Any]], generation: int) -> None:
        """Apply one fetch of the input partitions (aiokafka records, by TP).

        Shielded: a fetch loop cancelled mid-fetch (Faust stopping) must not leave profiles
        that hold events whose scores were never handed to the producer; the fetch in hand
        finishes, and ``stop`` waits for it."""
        await asyncio.shield(self._process(fetched, generation))

    async def _process(self, fetched: Mapping[Any, Sequence[Any]], generation: int) -> None:
        async with self.lock:
            if self.stopping:
                return  # after the last checkpoint: not applied, not committed, read again
            if self.flushing is not None and self.flushing.done():
                await self._flushed()  # its failure stops the worker here, as if inline
            app = self.w.app
            if generation != app.consumer_generation_id:
                return  # fetched before a rebalance: the new owner reads it again
            self.generation = generation
            owned = app.consumer.assignment()
            now = time.time()
            batch: list[Record] = []
            commands: list[tuple[Any, Any]] = []
            for tp, records in fetched.items():
                if tp not in owned:
                    continue
                if tp.topic != self.topic:
                    commands.extend((tp, r) for r in await self._in_order(tp, records))
                    continue
                for r in await self._in_order(tp, records):
                    timestamp = r.timestamp / 1000 if r.timestamp is not None else None
                    batch.append(
                        Record(tp.topic, tp.partition, r.offset, r.key, r.value, now, timestamp)
                    )
            if batch:
                await self._apply(batch, now)
            for tp, record in commands:
                self._erase(tp, record)
            if self._checkpoint_due():
                await self._checkpoint(wait=False)

    async def _in_order(self, tp: Any, records: Sequence[Any]) -> list[Any]:
        """The records that continue ``tp`` exactly where this worker left it.

        A record before the expected offset was already applied (a prefetch handed over
        again) and is skipped. A record after it means offsets in between were not handed
        over: the partition is seeked back to the expected offset and read again, never
        skipped. Only when the re-read jumps the same way again (offsets that hold no
        record, such as transaction markers) is the jump accepted.
        """
        expected = self.expected.get(tp)
        if expected is None:  # first records since the assignment: continue from the commit
            committed = faust_compat.committed_offset(self.w.app.consumer, tp)
            expected = committed if committed is not None and committed >= 0 else None
            start = expected if expected is not None else (records[0].offset if records else None)
            if start is not None:
                self.safe_offsets.setdefault(tp, start)
        out = []
        for record in records:
            if expected is not None and record.offset < expected:
                continue
            if expected is not None and record.offset > expected:
                if self.refetched.get(tp) != (expected, record.offset):
                    self.refetched[tp] = (expected, record.offset)
                    log.warning(
                        "%s[%d]: offsets %d..%d were not handed over; reading them again",
                        tp.topic, tp.partition, expected, record.offset - 1,
                    )  # fmt: skip
                    self.w.metrics.offset_rewinds.inc()
                    await self.w.app.consumer.seek_wait({tp: expected})
                    break
                log.info(
                    "%s[%d]: offsets %d..%d hold no records (read twice); going on",
                    tp.topic, tp.partition, expected, record.offset - 1,
                )  # fmt: skip
            out.append(record)
            expected = record.offset + 1
        if expected is not None:
            self.expected[tp] = expected
        return out

    async def _apply(self, batch: list[Record], now: float) -> None:
        w, metrics = self.w, self.w.metrics
        bundle = w.models.bundle
        assert bundle is not None  # the worker does not start without a model
        started = time.perf_counter()
        out = run_step(
            batch, self.cache, bundle, w.step_config, throttle=w.throttle_policy, now=now
        )
        applied = out.applied
        for user, (stored, record) in applied.profiles.items():
            self.cache.put(record.partition, user, stored)
        letters = await publish_dead_letters(w, out.dead_letters)
        if letters:
            self.pending.sends.append(letters)
        self.pending.sends.extend(await publish_scores(w, out.scored, started))
        self.features.observe(bundle, out)  # drift and freshness gauges
        metrics.events_consumed.labels("valid").inc(
            len(applied.rows) - len(out.scored.dead_letters)
        )
        if applied.replayed:
            metrics.events_consumed.labels("replayed").inc(applied.replayed)
            log.info("skipped %d events already applied before a restart", applied.replayed)
        clock = self.event_clock
        for row in applied.rows:
            p, ts = row.record.partition, row.event.ts
            if ts > clock.get(p, float("-inf")):
                clock[p] = ts
        for record in batch:
            tp = faust_compat.tp(record.topic, record.partition)
            self.pending.commit[tp] = record.offset + 1
            w.processed_offsets[record.partition] = record.offset
        self.pending.events += len(batch)
        metrics.last_event_processed.set(now)

    def _erase(self, tp: Any, record: Any) -> None:
        """Execute one erase command on this partition: the profile leaves the cache now and
        RocksDB and the changelog (a tombstone) at the next checkpoint, with the receipt; a
        pending throttled score of the user is dropped. The command's offset commits with the
        tombstone, so a crash before it replays the command after the events it followed."""
        self.pending.commit[tp] = record.offset + 1
        try:
            command = EraseCommand.model_validate_json(record.value or b"")
        except ValueError as exc:
            self.w.metrics.errors.labels("erase_command").inc()
            log.error(
                "erase command at %s[%d]@%d is not an intentflow.erasure-commands.v1 record "
                "(%s); skipped", tp.topic, tp.partition, record.offset, type(exc).__name__,
            )  # fmt: skip
            return
        erased = set(command.pseudonyms)
        held = [self.cache.delete(tp.partition, pseudonym) for pseudonym in command.pseudonyms]
        self.w.throttle.forget(lambda user: self.w.pseudonyms.pseudonym(user) in erased)
        self.pending.receipts.append(
            EraseReceipt(
                request_id=command.request_id,
                partition=tp.partition,
                held=any(held),
                executed_at=datetime.now(UTC),
            )
        )
        self.w.metrics.erasures.labels("held" if any(held) else "not_held").inc()

    # -- checkpoints ----------------------------------------------------------------------

    def owned_partitions(self) -> set[int]:
        return {tp.partition for tp in self.w.app.consumer.assignment() if tp.topic == self.topic}

    def _checkpoint_due(self) -> bool:
        elapsed = time.monotonic() - self.last_checkpoint
        return bool(self.pending.commit or self.pending.sends or self.pending.receipts) and (
            elapsed >= self.settings.checkpoint_interval_seconds
            or len(self.cache.dirty) >= self.settings.profile_cache_users
        )

    async def checkpoint_if_due(self) -> None:
        """Checkpoint when one is due (a timer: an idle input still delivers and commits)."""
        async with self.lock:
            if self.flushing is not None and self.flushing.done():
                await self._flushed()
            if self._checkpoint_due():
                await self._checkpoint(wait=False)

    async def _checkpoint(self, *, wait: bool = True) -> None:
        """Checkpoint (under ``lock``). The snapshot is taken here: what is pending, and the
        changed profiles, pinned in the cache. Its flush (encoding, deliveries, changelog,
        RocksDB, commit: ``_flush``) waits for broker round trips; with ``wait=False`` it runs
        as a task while the next fetches apply, so scoring does not stall on it. One flush at
        a time, in order: a checkpoint first waits for the previous one's."""
        await self._flushed()
        self.flushing = asyncio.ensure_future(self._flush(self._snapshot()))
        if wait:
            await self._flushed()

    async def _flushed(self) -> None:
        """Wait for the last checkpoint's flush (under ``lock``); its failure raises here, and
        a flush that found the worker fenced drops everything not yet written."""
        task, self.flushing = self.flushing, None
        if task is None:
            return
        try:
            await task
        except FencedError as exc:
            self._drop_everything(str(exc))

    def _snapshot(self) -> Snapshot:
        pending, self.pending = self.pending, Pending()
        started = time.perf_counter()
        self.last_checkpoint = time.monotonic()
        owned = self.owned_partitions()
        writes = {k: v for k, v in self.cache.take_writes().items() if k[0] in owned}
        self.cache.pin(writes)
        return Snapshot(pending, writes, started)

    async def _flush(self, snapshot: Snapshot) -> None:
        """The checkpoint's four steps for a snapshot. Profiles are immutable, so they are
        encoded here, a slice at a time between fetches, not in the snapshot's stall."""
        w = self.w
        pending = snapshot.pending
        values = await self._encoded(snapshot.writes)
        # 1. scores and dead letters delivered
        for send in pending.sends:
            await send
        # Still a member of the group? A worker that was frozen (or cut off) past the session
        # timeout has lost its partitions to another worker, which writes newer profiles: its
        # own must not follow them into the changelog. Committing offsets that are already
        # committed changes nothing, and the broker refuses it from a stale generation.
        owned_tps = w.app.consumer.assignment()
        proof = {tp: o for tp, o in self.safe_offsets.items() if tp in owned_tps}
        if proof and not await faust_compat.prove_membership(w.app.consumer, proof):
            raise FencedError("the group moved its partitions while it was not running")
        # 2. one changelog record per changed user (a tombstone per erased one), delivered
        owned = self.owned_partitions()
        values = {k: v for k, v in values.items() if k[0] in owned}
        send, changelog = w.app.producer.send, w.changelog_topic
        futures = []
        for i, ((partition, pseudonym), value) in enumerate(values.items(), 1):
            futures.append(await send(changelog, pseudonym.encode(), value, partition, None, None))
            if i % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # let a fetch apply between slices
        for future in futures:
            await future
        # 3. one RocksDB write batch per partition
        by_partition: dict[int, list[tuple[bytes, bytes | None]]] = {}
        for (partition, pseudonym), value in values.items():
            by_partition.setdefault(partition, []).append((pseudonym.encode(), value))
        for partition, items in by_partition.items():
            faust_compat.write_batch(w.profiles, partition, items)
        self.cache.unpin(snapshot.writes)
        # receipts of the erasures those tombstones executed
        receipts = [
            await send(w.settings.topic_erasure_receipts, r.request_id.encode(),
                       r.model_dump_json().encode(), None, None, None)
            for r in pending.receipts
            if r.partition in owned
        ]  # fmt: skip
        for future in receipts:
            await future
        # 4. input offsets committed (only of partitions still owned)
        commit = {tp: offset for tp, offset in pending.commit.items() if tp.partition in owned}
        if commit and await faust_compat.commit(w.app.consumer, commit):
            self.safe_offsets.update(commit)
        w.metrics.checkpoint_duration.observe(time.perf_counter() - snapshot.started)
        w.metrics.checkpoint_users.observe(len(values))

    async def _encoded(
        self, writes: Mapping[tuple[int, str], StoredProfile | None]
    ) -> dict[tuple[int, str], bytes | None]:
        """Each write's bytes (None: a tombstone). A profile that cannot be encoded (a bug, never
        an input: the feature code saturates what it stores) is left out, counted and logged,
        and dropped from the cache, so the stored version stays and the worker goes on."""
        values: dict[tuple[int, str], bytes | None] = {}
        for i, (key, stored) in enumerate(writes.items(), 1):
            if i % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            try:
                values[key] = (
                    encode_stored(stored, self.settings.profile_format)
                    if stored is not None else None
                )  # fmt: skip
            except Exception as exc:  # one profile must not stop every checkpoint
                self.w.metrics.errors.labels("checkpoint_encode").inc()
                self.cache.clean.pop(key, None)
                self.cache.unpin({key: stored})
                log.error(
                    "profile %s on partition %d could not be encoded (%s: %s); its stored "
                    "version is kept", key[1], key[0], type(exc).__name__, exc,
                )  # fmt: skip
        return values

    async def stop(self) -> None:
        """The last checkpoint, when the worker stops: after the fetch in hand, before Faust
        stops the fetch loop and the tables. A restart then continues where this left off
        and scores nothing twice. If the checkpoint cannot complete (the broker is gone),
        the restart replays from the last commit, as after a crash."""
        async with self.lock:
            self.stopping = True
            started = time.monotonic()
            try:
                if self.w.throttle_policy is not None:  # scores held back are published now
                    self.pending.sends.extend(await score_rows(self.w, self.w.throttle.take_all()))
                await asyncio.wait_for(self._checkpoint(), self.settings.stop_checkpoint_seconds)
            except Exception as exc:  # stopping anyway; the restart replays, nothing is lost
                log.warning(
                    "last checkpoint failed (%s: %s); the next start replays from the last "
                    "committed offsets", type(exc).__name__, exc,
                )  # fmt: skip
            else:
                log.info("last checkpoint done in %.2fs", time.monotonic() - started)

    def _drop_everything(self, why: str, kind: str = "fenced") -> None:
        """Forget all unwritten state (the partitions' new owners re-apply its events)."""
        cache = self.cache
        dropped = len(cache.dirty) + len(cache.tombstones) + len(cache.pinned)
        log.warning("%s: dropping %d unwritten profile changes, writing nothing", why, dropped)
        cache.drop_partitions({p for p, _ in [*cache.clean, *cache.dirty, *cache.pinned]})
        cache.tombstones.clear()
        self.pending = Pending()
        self.expected.clear()
        self.refetched.clear()
        self.safe_offsets.clear()
        self.w.metrics.errors.labels(kind).inc()

    # -- rebalances -----------------------------------------------------------------------

    async def on_revoked(self, revoked: set[Any]) -> None:
        """Checkpoint while the partitions are still owned, then forget them."""
        mine = {tp for tp in revoked if tp.topic in self.topics}
        async with self.lock:
            try:
                await self._checkpoint()
            except Exception as exc:  # the partitions go anyway; their owner replays the rest
                self._drop_everything(
                    f"the checkpoint at revocation failed ({type(exc).__name__}: {exc}); the "
                    "partitions' next owner replays from the last committed offsets",
                    kind="checkpoint",
                )
            self.cache.drop_partitions({tp.partition for tp in mine})
            self.retention.forget({tp.partition for tp in mine})
            for tp in mine:
                self.event_clock.pop(tp.partition, None)
            for tp in mine:
                self.expected.pop(tp, None)
                self.refetched.pop(tp, None)
                self.safe_offsets.pop(tp, None)

    def on_assigned(self) -> None:
        """Each partition continues from its committed offset (Faust seeks there)."""
        self.expected.clear()
        self.refetched.clear()
        self.safe_offsets.clear()
