"""The worker's batch step, free of Faust and Kafka so it can be tested and benchmarked alone.

``process_batch`` takes consumed records and the current stored profiles, and returns what to
publish: dead letters, rows to score and the profiles to write back. ``encode_scores`` turns
scored rows into purchase-scores.v1 records. The agent in ``streams.agents`` only moves bytes
between Kafka and these functions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import orjson

from streams import features
from streams.events import ClickEvent, DeadLetter, Rejection, dead_letter, decode_event
from streams.scoring import ModelBundle
from streams.state import StoredProfile


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed Kafka record, as the pipeline needs it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    consumed_at: float  # unix seconds when the worker took it


@dataclass(slots=True)
class Row:
    """A valid event with the user's profile right after applying it: one score to compute."""

    event: ClickEvent
    profile: features.Profile
    record: Record


@dataclass(slots=True)
class BatchOutcome:
    rows: list[Row] = field(default_factory=list)
    dead_letters: list[tuple[Record, DeadLetter]] = field(default_factory=list)
    # user_id -> (new stored profile, the record whose partition the changelog write uses)
    profiles: dict[str, tuple[StoredProfile, Record]] = field(default_factory=dict)
    replayed: int = 0  # events already applied before a restart (skipped, already scored)


def process_batch(
    records: Sequence[Record],
    load: Callable[[str, Record], StoredProfile | None],
    *,
    max_event_bytes: int,
) -> BatchOutcome:
    """Decode, validate and apply a batch of records to the users' profiles, in order.

    ``load(user, record)`` returns a user's stored profile (from the table) the first time the
    batch touches the user; later events of the same user build on the in-batch profile.
    """
    out = BatchOutcome()
    current: dict[str, StoredProfile | None] = {}
    for record in records:
        decoded = decode_event(record.value, max_event_bytes)
        if isinstance(decoded, Rejection):
            letter = dead_letter(
                record.value,
                decoded,
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
            )
            out.dead_letters.append((record, letter))
            continue
        user = decoded.user_id
        if user in current:
            stored = current[user]
        else:
            stored = current[user] = load(user, record)
        if stored is not None and record.offset <= stored.offset:
            out.replayed += 1
            continue
        profile = features.update(stored.profile if stored else None, decoded)
        stored = current[user] = StoredProfile(record.offset, profile)
        out.profiles[user] = (stored, record)
        out.rows.append(Row(decoded, profile, record))
    return out


def score_rows(bundle: ModelBundle, rows: Sequence[Row]) -> np.ndarray:
    """One onnxruntime call for the whole batch."""
    matrix = features.feature_matrix([(r.profile, r.event) for r in rows], bundle.embeddings)
    return bundle.predict(matrix)


def encode_scores(
    rows: Sequence[Row],
    probabilities: np.ndarray,
    bundle: ModelBundle,
    *,
    top_k: int,
    scored_at: datetime | None = None,
) -> list[tuple[bytes, bytes]]:
    """purchase-scores.v1 records as (key, value) pairs, keyed by user_id."""
    stamp = (scored_at or datetime.now(UTC)).isoformat()
    out = []
    for row, probability in zip(rows, probabilities.tolist(), strict=True):
        event = row.event
        top = features.top_categories(row.profile, top_k) if top_k else []
        value = orjson.dumps(
            {
                "schema_version": "1",
                "user_id": event.user_id,
                "event_id": event.event_id,
                "occurred_at": event.occurred_at.isoformat(),
                "scored_at": stamp,
                "purchase_probability": min(1.0, max(0.0, probability)),
                "model_version": bundle.model_version,
                "feature_version": bundle.feature_version,
                "top_categories": [{"category_id": c, "weight": w} for c, w in top],
            }
        )
        out.append((event.user_id.encode(), value))
    return out


def encode_dead_letter(letter: DeadLetter) -> bytes:
    return letter.model_dump_json().encode()


@dataclass
class Throttle:
    """The throttled scoring policy: at most one score per user per ``interval`` seconds.

    A user's events inside the window are not scored at once; the latest one is kept and scored
    when the window closes (``due``), so the last state of every user is always scored.
    """

    interval: float
    _last: dict[str, float] = field(default_factory=dict)
    _pending: dict[str, Row] = field(default_factory=dict)

    def admit(self, rows: Sequence[Row], now: float) -> list[Row]:
        """Rows to score now; the others wait (only each user's latest is kept)."""
        scored = []
        for row in rows:
            user = row.event.user_id
            last = self._last.get(user)
            if last is None or now - last >= self.interval:
                self._last[user] = now
                self._pending.pop(user, None)
                scored.append(row)
            else:
                self._pending[user] = row
        return scored

    def due(self, now: float) -> list[Row]:
        """Pending rows whose user's window has closed, to score now."""
        ready = [
            row
            for user, row in self._pending.items()
            if now - self._last.get(user, 0.0) >= self.interval
        ]
        for row in ready:
            user = row.event.user_id
            del self._pending[user]
            self._last[user] = now
        if len(self._last) > 1_000_000:  # bound memory: forget users idle for two windows
            cutoff = now - 2 * self.interval
            self._last = {u: t for u, t in self._last.items() if t >= cutoff}
        return ready

    @property
    def pending(self) -> int:
        return len(self._pending)
