"""Benchmark input: simulated clickstream.v1 events, and variants of them for each scenario.

The simulator's Python API (``streams.sources.simulate.generate``) is used when it is importable;
else a small generator of valid events with the same shape (sessions of views and clicks, some carts
and purchases, skewed users and categories) stands in, and the results say so.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson

SIM_DURATION_S = 7 * 86_400.0  # long enough that N events never run out


@dataclass
class Dataset:
    """Payloads in event-time order, keyed by user id."""

    records: list[tuple[bytes, bytes]]
    source: str  # "simulator" or "fallback"
    users: int  # simulated population
    seconds: float  # wall time to generate
    active_users: int = 0
    event_types: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def events_per_s(self) -> float:
        return len(self.records) / self.seconds if self.seconds else 0.0


def generate(n: int, users: int, seed: int = 7) -> Dataset:
    """``n`` valid events from a population of ``users`` shoppers."""
    started = time.perf_counter()
    try:
        from streams.sources.simulate import generate as simulate
    except ImportError:
        records = list(itertools.islice(_fallback(users, seed), n))
        source = "fallback"
    else:
        stream = simulate(users, SIM_DURATION_S, seed)
        records = [(r.key, r.payload) for r in itertools.islice(stream, n)]
        source = "simulator"
    seconds = time.perf_counter() - started
    types: dict[str, int] = {}
    for _, payload in records:
        kind = orjson.loads(payload)["event_type"]
        types[kind] = types.get(kind, 0) + 1
    return Dataset(
        records, source, users, seconds, len({k for k, _ in records}), dict(sorted(types.items()))
    )


def _fallback(users: int, seed: int) -> Iterator[tuple[bytes, bytes]]:
    """Sessions of a Zipf-ish user population: mostly views and clicks, some carts and buys."""
    rng = random.Random(seed)
    t = datetime(2025, 1, 6, tzinfo=UTC).timestamp()
    weights = [1.0 / (i + 1) ** 0.8 for i in range(users)]
    kinds = ["view"] * 13 + ["click"] * 4 + ["search", "favorite", "add_to_cart", "purchase"]
    n = 0
    while True:
        user = rng.choices(range(users), weights)[0]
        session = f"s{seed}-{n}"
        focus = rng.randrange(200)
        for _ in range(rng.randint(1, 20)):
            n += 1
            t += rng.expovariate(50.0)
            kind = rng.choice(kinds)
            event: dict[str, object] = {
                "schema_version": "1",
                "event_id": f"fb-{seed}-{n}",
                "user_id": f"u{user:06d}",
                "session_id": session,
                "event_type": kind,
            }
            if kind != "search":
                cat = focus if rng.random() < 0.7 else rng.randrange(200)
                event["item_id"] = f"i{cat}-{rng.randrange(300)}"
                event["category_id"] = f"c{cat:04d}"
                event["price"] = round(rng.lognormvariate(3.0, 1.0), 2)
            event["occurred_at"] = datetime.fromtimestamp(t, UTC).isoformat()
            yield event["user_id"].encode(), orjson.dumps(event)  # type: ignore[union-attr]


def rfc3339_now(ts: float) -> str:
    """``ts`` as RFC 3339 UTC with microseconds."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
