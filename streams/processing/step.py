"""The worker's batch step: pure, free of Faust, Kafka and Prometheus.

``run_step`` is the one function the worker (and every benchmarked system) calls per batch:
consumed records and the users' stored profiles in, what to send and write out. Data flows one
way: records -> decoded events -> updated profiles -> one onnxruntime call -> encoded scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import numpy as np

from streams import features
from streams.contracts.dead_letters import DeadLetter, dead_letter
from streams.contracts.events import ClickEvent, Rejection, decode_event
from streams.contracts.scores import encode_score
from streams.model.bundle import ModelBundle
from streams.processing.envelope import StoredProfile
from streams.processing.throttle import Throttle


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed Kafka record, as the step needs it."""

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


class ProfileLookup(Protocol):
    """Read access to stored profiles (the worker's table, a benchmark's dict). Profiles are
    partitioned like the input: a user's profile lives in the partition of the user's events."""

    def get(self, partition: int, user_id: str, /) -> StoredProfile | None: ...


@dataclass(slots=True)
class Applied:
    """The records of a batch applied to the users' profiles."""

    rows: list[Row] = field(default_factory=list)
    dead_letters: list[tuple[Record, DeadLetter]] = field(default_factory=list)
    # user_id -> (new stored profile, the record whose partition the changelog write uses)
    profiles: dict[str, tuple[StoredProfile, Record]] = field(default_factory=dict)
    replayed: int = 0  # events already applied before a restart (skipped, already scored)


@dataclass(slots=True)
class Scored:
    """Rows scored with one onnxruntime call, and their purchase-scores.v1 records."""

    rows: list[Row]
    probabilities: np.ndarray
    records: list[tuple[bytes, bytes]]  # (key, value)


@dataclass(slots=True)
class StepOutput:
    """Everything one batch produces: what to send, and what to write once it is delivered."""

    applied: Applied
    scored: Scored


def apply_batch(
    records: Sequence[Record], profiles: ProfileLookup, *, max_event_bytes: int
) -> Applied:
    """Decode, validate and apply a batch of records to the users' profiles, in order.

    A user's stored profile is read from ``profiles`` the first time the batch touches the
    user; later events of the same user build on the in-batch profile.
    """
    out = Applied()
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
            stored = current[user] = profiles.get(record.partition, user)
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
    stamp = scored_at or datetime.now(UTC)
    return [
        (
            row.event.user_id.encode(),
            encode_score(
                row.event,
                probability,
                model_version=bundle.model_version,
                feature_version=bundle.feature_version,
                top_categories=features.top_categories(row.profile, top_k) if top_k else [],
                scored_at=stamp,
            ),
        )
        for row, probability in zip(rows, probabilities.tolist(), strict=True)
    ]


def score(rows: Sequence[Row], bundle: ModelBundle, *, top_k: int) -> Scored:
    """Score rows with one onnxruntime call and encode their records."""
    rows = list(rows)
    if not rows:
        return Scored([], np.zeros(0, dtype=np.float32), [])
    probabilities = score_rows(bundle, rows)
    return Scored(rows, probabilities, encode_scores(rows, probabilities, bundle, top_k=top_k))


def run_step(
    records: Sequence[Record],
    profiles: ProfileLookup,
    bundle: ModelBundle,
    *,
    max_event_bytes: int,
    top_k: int,
    throttle: Throttle | None = None,
    now: float = 0.0,
) -> StepOutput:
    """One batch: decode, apply, (throttle,) score and encode.

    With a ``throttle``, rows inside a user's window wait in it (``Throttle.due``) instead of
    being scored now; ``now`` is the wall-clock time the throttle measures windows in.
    """
    applied = apply_batch(records, profiles, max_event_bytes=max_event_bytes)
    rows = throttle.admit(applied.rows, now) if throttle is not None else applied.rows
    return StepOutput(applied, score(rows, bundle, top_k=top_k))
