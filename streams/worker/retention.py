"""Retention: profiles idle for ``INTENTFLOW_PROFILE_TTL_DAYS`` (in event time) are deleted, and
after a key rotation, profiles still under a retired pseudonym key once they are idle for
``INTENTFLOW_PSEUDONYM_GRACE_DAYS`` (a shopper who comes back is moved to the active key).

A background sweep walks each owned partition's RocksDB in slices of at most a few
milliseconds (so the event loop never stalls), reads each stored profile's clock without
decoding the rest, and sends every profile whose newest event is older than the partition's
newest event time minus the TTL through the erasure path: out of the cache now, a tombstone in
RocksDB and the compacted changelog at the next checkpoint. A partition starts being swept once
the worker has seen an event of it (event time, not wall-clock time: a replay of old data does
not expire everything at once).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from streams.errors import ProfileDecodeError
from streams.privacy.pseudonyms import key_id_of
from streams.processing.envelope import stored_clock
from streams.worker import faust_compat

if TYPE_CHECKING:
    from streams.worker.runner import BatchRunner

log = logging.getLogger("intentflow.retention")

SLICE_SECONDS = 0.02  # longest one slice holds the event loop
INTERVAL_SECONDS = 0.1  # a slice this often


class RetentionSweep:
    """Sweeps the runner's partitions for idle profiles, a slice per call of ``step``."""

    def __init__(
        self, runner: BatchRunner, ttl_seconds: float, grace_seconds: float, pause_seconds: float
    ) -> None:
        self.runner = runner
        self.pause = pause_seconds  # rest between two full passes over a partition
        self.ttl = ttl_seconds
        self.grace = grace_seconds  # for profiles under a retired pseudonym key
        self.cursors: dict[int, bytes | None] = {}  # partition -> next key (None: start)
        self.rest_until: dict[int, float] = {}  # partition -> monotonic time of the next pass
        self.expired = 0

    async def step(self) -> int:
        """Sweep one slice (under the runner's lock); how many profiles it expired."""
        runner = self.runner
        async with runner.lock:
            deadline = time.perf_counter() + SLICE_SECONDS
            expired = 0
            for partition, horizon in sorted(runner.event_clock.items()):
                if time.monotonic() < self.rest_until.get(partition, 0.0):
                    continue
                if partition not in runner.owned_partitions():
                    continue
                expired += self._slice(partition, horizon, deadline)
                if time.perf_counter() >= deadline:
                    break
            self.expired += expired
            if expired:
                runner.w.metrics.profiles_expired.inc(expired)
            return expired

    def _slice(self, partition: int, horizon: float, deadline: float) -> int:
        cache = self.runner.cache
        active = cache.pseudonyms.active_key_id
        cutoff, retired_cutoff = horizon - self.ttl, horizon - min(self.ttl, self.grace)
        db = faust_compat.partition_db(self.runner.w.profiles, partition)
        it = db.iter()
        start = self.cursors.get(partition)
        if start is None:
            it.seek_to_first()
        else:
            it.seek(start)
        expired = 0
        while it.valid():
            key = it.key()
            pseudonym = key.decode()
            held = (partition, pseudonym)
            known, cached = cache.latest(held)  # newer than RocksDB's copy, if held here
            try:
                if known:  # (None: erased, the tombstone not yet written)
                    clock = cached.profile.clock if cached is not None else None
                else:
                    clock = stored_clock(it.value())
            except ProfileDecodeError:
                clock = None  # left to the worker version that knows it
            limit = cutoff if key_id_of(pseudonym) == active else retired_cutoff
            if clock is not None and clock < limit:
                cache.delete(partition, pseudonym)
                expired += 1
            it.next()
            if time.perf_counter() >= deadline:
                self.cursors[partition] = it.key() if it.valid() else None
                if not it.valid():
                    self.rest_until[partition] = time.monotonic() + self.pause
                return expired
        self.cursors[partition] = None  # a full pass done: rest
        self.rest_until[partition] = time.monotonic() + self.pause
        return expired

    def forget(self, partitions: set[int]) -> None:
        for partition in partitions:
            self.cursors.pop(partition, None)
            self.rest_until.pop(partition, None)
