"""The retention sweep on 200,000 stored profiles: how long a full pass takes, and the longest
time one slice holds the event loop (the worker's sweep, ``streams.worker.retention``, run
against a real RocksDB with the worker's envelope, no broker).

Half of the profiles are idle past the TTL (in event time) and must be expired; the rest must
stay. Run: ``python -m bench.retention [--users 200000]``; it prints a JSON line and writes
``bench/results/retention.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import rocksdict
from faust.types import TP
from prometheus_client import CollectorRegistry, Histogram
from pydantic import SecretStr

from streams import features
from streams.contracts.events import ClickEvent, EventType
from streams.privacy.pseudonyms import Pseudonymizer, parse_keys
from streams.processing.envelope import StoredProfile, encode_stored
from streams.worker.gc_pauses import GcPauses, freeze_startup_heap
from streams.worker.metrics import Metrics
from streams.worker.retention import SLICE_SECONDS, RetentionSweep
from streams.worker.runner import ProfileCache

DAY = 86_400.0
NOW = 1_760_000_000.0


class _Store:
    def __init__(self, db: Any) -> None:
        self.db = db

    def _db_for_partition(self, partition: int) -> Any:
        return self.db


def _profile(clock: float) -> bytes:
    event = ClickEvent(
        schema_version="1", event_id="e", user_id="u", event_type=EventType.VIEW,
        item_id="i", category_id="c1", price=10.0,
        occurred_at=datetime.fromtimestamp(clock, UTC),
    )  # fmt: skip
    return encode_stored(StoredProfile(1, features.update(None, event), 0, 1))


async def run(users: int, *, freeze_gc: bool = True) -> dict[str, Any]:
    keys = Pseudonymizer(parse_keys(SecretStr("b1:bench-retention-key-0123456789")))
    with tempfile.TemporaryDirectory() as tmp:
        db = rocksdict.Rdict(str(Path(tmp) / "p0"), options=rocksdict.Options(raw_mode=True))
        old, fresh = _profile(NOW - 40 * DAY), _profile(NOW - DAY)
        batch = rocksdict.WriteBatch(raw_mode=True)
        for n in range(users):
            batch.put(keys.pseudonym(f"u{n}").encode(), old if n % 2 else fresh)
            if n % 50_000 == 49_999:
                db.write(batch)
                batch = rocksdict.WriteBatch(raw_mode=True)
        db.write(batch)
        table = SimpleNamespace(data=_Store(db))
        consumer = SimpleNamespace(assignment=lambda: {TP("events", 0)})
        w = SimpleNamespace(
            profiles=table, metrics=Metrics(), app=SimpleNamespace(consumer=consumer)
        )
        runner = SimpleNamespace(
            w=w, cache=ProfileCache(table, 100_000, keys), lock=asyncio.Lock(),
            event_clock={0: NOW}, owned_partitions=lambda: {0},
        )  # fmt: skip
        sweep = RetentionSweep(runner, 30 * DAY, 7 * DAY, pause_seconds=3600)  # type: ignore[arg-type]
        # As the worker does once it is up (streams/worker/gc_pauses.py); freeze_gc=False
        # measures the sweep without it.
        frozen = freeze_startup_heap() if freeze_gc else 0
        registry = CollectorRegistry()
        gc_pauses = GcPauses(Histogram("gc_pause", "", ["generation"], registry=registry))
        gc_pauses.install()
        durations: list[float] = []  # wall time of each slice
        cpu: list[float] = []  # CPU time of each slice (what it costs the loop when it runs)
        started = time.perf_counter()
        while True:
            t0, c0 = time.perf_counter(), time.thread_time()
            await sweep.step()
            durations.append(time.perf_counter() - t0)
            cpu.append(time.thread_time() - c0)
            if sweep.cursors.get(0) is None and 0 in sweep.rest_until:
                break
        elapsed = time.perf_counter() - started
        gc_pauses.remove()
        gc.unfreeze()
        db.close()
    full = {"generation": "2"}
    return {
        "users": users,
        "expired": sweep.expired,
        "expected_expired": users // 2,
        "slices": len(durations),
        "sweep_seconds": round(elapsed, 3),
        "wall_seconds_at_10_slices_per_s": round(len(durations) / 10, 1),
        "slice_ms_p50": round(sorted(durations)[len(durations) // 2] * 1000, 2),
        "slice_ms_max": round(max(durations) * 1000, 2),
        "slice_cpu_ms_max": round(max(cpu) * 1000, 2),
        "gc_frozen_objects": frozen,
        "gc_full_passes": int(registry.get_sample_value("gc_pause_count", full) or 0),
        "gc_full_pass_ms_total": round(
            (registry.get_sample_value("gc_pause_sum", full) or 0.0) * 1000, 2
        ),
        "load_average_1m": round(__import__("os").getloadavg()[0], 2),
        "slice_budget_ms": SLICE_SECONDS * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--out", type=Path, default=Path("bench/results/retention.json"))
    parser.add_argument(
        "--no-freeze", action="store_true", help="leave the start-up heap to the collector"
    )
    args = parser.parse_args()
    result = asyncio.run(run(args.users, freeze_gc=not args.no_freeze))
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
