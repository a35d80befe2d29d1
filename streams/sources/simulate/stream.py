"""The merged, serialised event stream: the pure generator API of the simulator.

``generate`` merges every shopper's events into one event-time-ordered stream (a heap merge
of per-user generators, each with its own seeded RNG, so the output depends on the seed
only), gives them ids, serialises them to the canonical clickstream.v1 bytes (identical to
``ClickEvent.to_json()``), and injects malformed payloads at the requested fraction.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import numpy as np
import orjson

from streams.contracts.events import DEFAULT_MAX_EVENT_BYTES, SCHEMA_VERSION, ErrorClass
from streams.sources.simulate.catalog import build_catalog
from streams.sources.simulate.corrupt import BAD_KINDS, EXPECTED_CLASS, BadKind, corrupt
from streams.sources.simulate.shoppers import DEFAULT_BEHAVIOUR, Behaviour, Shopper

# A Monday at midnight UTC: the default start keeps runs byte-for-byte reproducible.
DEFAULT_START = datetime(2025, 1, 6, tzinfo=UTC)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class SimRecord(NamedTuple):
    """One payload of the simulated stream, valid or not."""

    ts_ms: int  # event time, unix milliseconds
    key: bytes  # the Kafka key: the user id
    payload: bytes  # exactly what goes on the wire
    event_id: str | None  # None for a malformed payload
    event_type: str | None  # None for a malformed payload
    intent: float | None  # P(purchase within 1 h | latent state); None when malformed
    error_class: ErrorClass | None  # what decode_event must say; None when valid
    bad_kind: BadKind | None  # the finer kind of problem; None when valid

    @property
    def valid(self) -> bool:
        """True for a schema-valid event."""
        return self.error_class is None


_day_cache: dict[int, str] = {}


def format_timestamp(ts_ms: int) -> str:
    """RFC 3339 UTC text exactly as pydantic serialises it (``Z``; 6 fraction digits or none)."""
    day, ms_of_day = divmod(ts_ms, 86_400_000)
    date = _day_cache.get(day)
    if date is None:
        date = (_EPOCH + timedelta(days=day)).strftime("%Y-%m-%d")
        _day_cache[day] = date
    seconds, ms = divmod(ms_of_day, 1000)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    if ms:
        return f"{date}T{hours:02d}:{minutes:02d}:{seconds:02d}.{ms:03d}000Z"
    return f"{date}T{hours:02d}:{minutes:02d}:{seconds:02d}Z"


def make_shoppers(
    users: int, duration_s: float, seed: int, start: datetime, behaviour: Behaviour
) -> list[Shopper]:
    """The shoppers of a run, with the ids ``generate`` gives them."""
    start_ms = round(start.timestamp() * 1000)
    end_ms = start_ms + round(duration_s * 1000)
    catalog = build_catalog(np.random.default_rng([seed, 0x0CA7A106]))
    width = max(6, len(str(users - 1)))
    return [
        Shopper(
            i,
            user_id=f"u{i:0{width}d}",
            seed=seed,
            catalog=catalog,
            behaviour=behaviour,
            start_ms=start_ms,
            end_ms=end_ms,
        )
        for i in range(users)
    ]


def generate(
    users: int,
    duration_s: float,
    seed: int = 0,
    bad_fraction: float = 0.0,
    start: datetime = DEFAULT_START,
    *,
    max_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    behaviour: Behaviour = DEFAULT_BEHAVIOUR,
) -> Iterator[SimRecord]:
    """Simulate ``users`` shoppers for ``duration_s`` seconds of event time from ``start``.

    Yields records in event-time order (ties broken by user, then by the user's sequence).
    Valid events get ids ``sim-<seed>-<n>``; a fraction ``bad_fraction`` of all payloads are
    malformed (ids ``sim-<seed>-x<n>`` where one survives), inserted just before a valid event
    of the same user, never replacing one, so the valid stream and its intents do not depend
    on ``bad_fraction``. Same arguments, same bytes.
    """
    if users < 1:
        raise ValueError(f"users must be at least 1, got {users}")
    if duration_s <= 0:
        raise ValueError(f"duration must be positive, got {duration_s}s")
    if not 0.0 <= bad_fraction < 1.0:
        raise ValueError(f"bad_fraction must be within [0, 1), got {bad_fraction}")
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware (e.g. 2025-01-06T00:00:00Z)")
    shoppers = make_shoppers(users, duration_s, seed, start, behaviour)
    bad_rng = random.Random(f"intentflow-sim/{seed}/bad")
    n_bad = 0
    prefix = f"sim-{seed}-"
    merged = heapq.merge(*(s.events() for s in shoppers))
    for n_valid, (ts, uidx, _, etype, sid, item, cat, price, qty, intent) in enumerate(merged, 1):
        user_id = shoppers[uidx].user_id
        event: dict[str, object] = {
            "schema_version": SCHEMA_VERSION,
            "event_id": "",
            "user_id": user_id,
            "session_id": sid,
            "event_type": etype,
        }
        if item is not None:
            event["item_id"] = item
        if cat is not None:
            event["category_id"] = cat
        if price is not None:
            event["price"] = price
        if qty is not None:
            event["quantity"] = qty
        event["occurred_at"] = format_timestamp(ts)
        key = user_id.encode()
        while bad_fraction and bad_rng.random() < bad_fraction:
            n_bad += 1
            kind = BAD_KINDS[bad_rng.randrange(len(BAD_KINDS))]
            event["event_id"] = f"{prefix}x{n_bad}"
            raw = corrupt(event, kind, bad_rng, max_bytes)
            yield SimRecord(ts, key, raw, None, None, None, EXPECTED_CLASS[kind], kind)
        event_id = f"{prefix}{n_valid}"
        event["event_id"] = event_id
        yield SimRecord(ts, key, orjson.dumps(event), event_id, etype, intent, None, None)
