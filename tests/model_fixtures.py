"""Event builders and a small synthetic clickstream for the model-path tests.

``synthetic_log`` is a tiny stand-in for the simulator: shoppers with a latent intent browse a
few favourite categories in sessions, cart with a probability that grows with intent, and buy
some minutes after carting. It writes clickstream.v1 JSON lines (plus a couple of malformed
ones) and an intent sidecar, in well under a second.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from streams.features import Profile, update

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z


@dataclass(frozen=True)
class Ev:
    """A plain EventLike for unit tests (no pydantic)."""

    event_id: str
    user_id: str
    event_type: str
    ts: float
    item_id: str | None = "i1"
    category_id: str | None = "c1"
    price: float | None = None
    quantity: int | None = None
    session_id: str | None = None


_counter = iter(range(10**9))


def ev(
    event_type: str = "view",
    ts: float = T0,
    *,
    user: str = "u1",
    item: str | None = "i1",
    category: str | None = "c1",
    price: float | None = None,
    event_id: str | None = None,
) -> Ev:
    if event_type == "search":
        item, category = None, None
    return Ev(
        event_id=event_id or f"e{next(_counter)}",
        user_id=user,
        event_type=event_type,
        ts=float(ts),
        item_id=item,
        category_id=category,
        price=price,
    )


def replay(events: list[Ev], profile: Profile | None = None) -> Profile:
    """The profile after ``events``, applied in order with ``features.update``."""
    for e in events:
        profile = update(profile, e)
    assert profile is not None
    return profile


def to_json(e: Ev) -> str:
    occurred = datetime.fromtimestamp(e.ts, UTC).isoformat().replace("+00:00", "Z")
    row = {
        "schema_version": "1",
        "event_id": e.event_id,
        "user_id": e.user_id,
        "event_type": e.event_type,
        "occurred_at": occurred,
    }
    for key in ("item_id", "category_id", "price", "quantity", "session_id"):
        value = getattr(e, key)
        if value is not None:
            row[key] = value
    return json.dumps(row)


def _shopper(
    rng: random.Random, user: str, n_categories: int, days: float
) -> Iterator[tuple[Ev, float]]:
    intent_level = rng.betavariate(1.2, 4.0)  # most shoppers browse, a few are ready to buy
    favourites = rng.sample(range(n_categories), 3)
    t = T0 + rng.uniform(0, 3600 * 6)
    end = T0 + days * 86400
    while t < end:
        session_intent = min(1.0, intent_level * rng.uniform(0.3, 1.7))
        n = 1 + int(rng.expovariate(1 / 6))
        carted: list[tuple[str, str]] = []
        for _ in range(n):
            cat = (
                f"c{rng.choice(favourites) if rng.random() < 0.8 else rng.randrange(n_categories)}"
            )
            item = f"i{cat[1:]}_{rng.randrange(30)}"
            price = round(rng.uniform(5, 120), 2)
            kind = "search" if rng.random() < 0.05 else "view"
            yield ev(kind, t, user=user, item=item, category=cat, price=price), session_intent
            t += rng.expovariate(1 / 60)
            if kind == "view" and rng.random() < 0.6 * session_intent:
                yield (
                    ev("add_to_cart", t, user=user, item=item, category=cat, price=price),
                    session_intent,
                )
                carted.append((item, cat))
                t += rng.expovariate(1 / 30)
        if carted and rng.random() < 0.2 + 0.7 * session_intent:
            t += rng.uniform(60, 1800)
            item, cat = rng.choice(carted)
            yield ev("purchase", t, user=user, item=item, category=cat, price=50.0), session_intent
        t += rng.expovariate(1 / (3600 * 5)) + 1800


def synthetic_events(users: int = 150, days: float = 2.0, seed: int = 0) -> list[tuple[Ev, float]]:
    """(event, true intent) for a small population, sorted by time."""
    rng = random.Random(seed)
    rows = [pair for u in range(users) for pair in _shopper(rng, f"u{u}", 40, days)]
    rows.sort(key=lambda pair: pair[0].ts)
    return rows


def synthetic_log(
    path: Path, truth: Path | None = None, *, users: int = 150, days: float = 2.0, seed: int = 0
) -> Path:
    """Write a clickstream.v1 JSONL log (with two malformed lines) and the intent sidecar."""
    rows = synthetic_events(users, days, seed)
    lines = [to_json(e) for e, _ in rows]
    lines.insert(len(lines) // 2, "{not json")
    lines.insert(len(lines) // 3, json.dumps({"schema_version": "1", "event_id": "x"}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    if truth is not None:
        truth.write_text(
            "\n".join(json.dumps({"event_id": e.event_id, "intent": p}) for e, p in rows) + "\n",
            encoding="utf-8",
        )
    return path


@dataclass(frozen=True)
class TinyBundle:
    """A bundle trained once per test session on a synthetic log (see ``tiny_bundle``)."""

    path: Path
    events: Path
    truth: Path


def train_tiny_bundle(root: Path) -> TinyBundle:
    """Train a small model (a few thousand rows, two epochs) and write its bundle."""
    from model_export.train import TrainConfig, train_bundle

    events = synthetic_log(root / "events.jsonl", root / "truth.jsonl", users=120, days=2.0)
    result = train_bundle(
        TrainConfig(
            events=events,
            truth=root / "truth.jsonl",
            out=root / "bundle",
            epochs=2,
            verbose=0,
            threads=1,
        ),
        log=lambda _msg: None,
    )
    return TinyBundle(result.path, events, root / "truth.jsonl")


def simulated_log(
    path: Path, truth: Path | None = None, *, users: int, days: float, seed: int
) -> Path:
    """Write the shopper simulator's clickstream.v1 JSONL (and its intent sidecar)."""
    from streams.sources.simulate import generate
    from streams.sources.simulate.sinks import write_jsonl

    with path.open("wb") as out:
        if truth is None:
            write_jsonl(generate(users, days * 86400.0, seed), out)
        else:
            with truth.open("wb") as sidecar:
                write_jsonl(generate(users, days * 86400.0, seed), out, sidecar)
    return path


def train_simulated_bundle(
    root: Path, *, users: int = 600, days: float = 3.0, seed: int = 7
) -> TinyBundle:
    """A bundle trained (default settings, one thread) on the simulator's shoppers: for the
    reasons' faithfulness tests. About 25 s here for 600 users over 3 days."""
    from model_export.train import TrainConfig, train_bundle

    events = simulated_log(
        root / "sim.jsonl", root / "sim.truth.jsonl", users=users, days=days, seed=seed
    )
    result = train_bundle(
        TrainConfig(events=events, truth=root / "sim.truth.jsonl", out=root / "bundle", threads=1),
        log=lambda _msg: None,
    )
    return TinyBundle(result.path, events, root / "sim.truth.jsonl")
