"""The worker's batch step: pure, free of Faust, Kafka and Prometheus.

``run_step`` is the one function the worker (and every benchmarked system) calls per batch:
consumed records and the users' stored profiles in, what to send and write out. Data flows one
way: records -> checked events -> updated profiles -> one onnxruntime call -> encoded records.

No input stops it. Each record is checked and applied on its own: a record that is not a valid
event, or that fails any stage (loading its user's profile, updating it, featurising, scoring,
encoding), becomes a dead letter with its class and reason, and the batch goes on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np
import orjson

from streams import features
from streams.contracts.dead_letters import DeadLetter, dead_letter
from streams.contracts.events import ClickEvent, ErrorClass, Rejection, decode_event
from streams.contracts.scores import encode_fields, fields_json, score_fields
from streams.contracts.scores_v2 import encode_fields_v2
from streams.features.explore import ExploreConfig, Explorer, Exposure
from streams.model.bundle import ModelBundle
from streams.privacy.redact import redact_payload
from streams.processing import reasons
from streams.processing.envelope import StoredProfile, topic_identity
from streams.processing.throttle import Throttle


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed Kafka record, as the step needs it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None  # None: a tombstone
    consumed_at: float  # unix seconds when the worker took it
    timestamp: float | None = None  # the record's Kafka timestamp, unix seconds


@dataclass(frozen=True, slots=True)
class StepConfig:
    """The step's limits and output options (from the settings object)."""

    max_event_bytes: int = 65_536
    max_clock_skew_seconds: float = 300.0
    top_k: int = 5
    score_versions: frozenset[str] = frozenset({"1"})  # purchase-scores versions to encode
    explain: bool = False  # reasons by occlusion in v2 scores (streams.processing.reasons)
    # exploration suggestions in v2 scores (streams.features.explore); None: off
    explore: ExploreConfig | None = None
    # topic name -> identity stored with each profile (streams.processing.envelope)
    topic_ids: Mapping[str, int] = field(default_factory=dict)
    # user id -> pseudonym: dead letters keep no raw identifier (streams.privacy.redact)
    pseudonym: Callable[[str], str] | None = None

    def topic_id(self, topic: str) -> int:
        known = self.topic_ids.get(topic)
        return known if known is not None else topic_identity(topic)


@dataclass(slots=True)
class Row:
    """A valid event with the user's profile right after applying it: one score to compute."""

    event: ClickEvent
    profile: features.Profile
    record: Record


class ProfileLookup(Protocol):
    """Read access to stored profiles (the worker's table, a benchmark's dict). Profiles are
    partitioned like the input: a user's profile lives in the partition of the user's events.
    ``get`` may raise (an unreadable stored profile): the step dead-letters that user's records.
    """

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
    """Rows scored with one onnxruntime call, and their purchase-scores records."""

    rows: list[Row]
    probabilities: np.ndarray
    records: list[tuple[bytes, bytes]]  # (key, value): purchase-scores.v1
    dead_letters: list[tuple[Record, DeadLetter]] = field(default_factory=list)
    records_v2: list[tuple[bytes, bytes]] = field(default_factory=list)  # purchase-scores.v2
    features: np.ndarray | None = None  # the rows that reached the model (drift)
    explained: bool = False  # the v2 records carry reasons


@dataclass(slots=True)
class StepOutput:
    """Everything one batch produces: what to send, and what to write once it is delivered."""

    applied: Applied
    scored: Scored

    @property
    def dead_letters(self) -> list[tuple[Record, DeadLetter]]:
        return self.applied.dead_letters + self.scored.dead_letters


def processing_error(stage: str, exc: BaseException) -> Rejection:
    """The rejection for a record that a stage failed on: names the stage and the exception."""
    detail = str(exc).splitlines()[0][:300] if str(exc) else ""
    reason = f"stage `{stage}` failed: {type(exc).__name__}" + (f": {detail}" if detail else "")
    return Rejection(ErrorClass.PROCESSING_ERROR, reason)


def check_record(record: Record, config: StepConfig) -> ClickEvent | Rejection:
    """The event a record carries, or why it is not one. Never raises.

    Beyond the schema: a record must have a value, its key must be the payload's user_id (the
    profile of a user lives in the partition its key maps to), and its event time may not be
    more than ``max_clock_skew_seconds`` after the record's Kafka timestamp (a far-future event
    would freeze the user's clock and make every later event "out of order").
    """
    if record.value is None:
        return Rejection(
            ErrorClass.NULL_VALUE,
            "record has no value (a tombstone); clickstream.v1 records carry a JSON event",
        )
    decoded = decode_event(record.value, config.max_event_bytes)
    if isinstance(decoded, Rejection):
        return decoded
    if record.key is None:
        return Rejection(
            ErrorClass.KEY_MISMATCH,
            "record has no key; clickstream.v1 records must be keyed by the event's user_id",
        )
    if record.key != decoded.user_id.encode("utf-8"):
        return Rejection(
            ErrorClass.KEY_MISMATCH,
            f"record key ({len(record.key)} bytes) is not the event's user_id; "
            "clickstream.v1 records must be keyed by user_id",
        )
    if record.timestamp is not None:
        skew = decoded.ts - record.timestamp
        if skew > config.max_clock_skew_seconds or not math.isfinite(skew):
            return Rejection(
                ErrorClass.CLOCK_SKEW,
                f"field `occurred_at` is {skew:.0f} s after the record's Kafka timestamp; "
                f"at most {config.max_clock_skew_seconds:.0f} s is accepted "
                "(INTENTFLOW_MAX_CLOCK_SKEW_SECONDS)",
            )
    return decoded


class _Unreadable:
    """A user whose stored profile could not be read in this batch."""

    __slots__ = ("rejection",)

    def __init__(self, rejection: Rejection) -> None:
        self.rejection = rejection


_EXPLORERS: dict[tuple[int, ExploreConfig], tuple[ModelBundle, Explorer]] = {}


def explorer_for(bundle: ModelBundle, config: StepConfig) -> Explorer | None:
    """The exploration policy of a bundle, or None when exploration is off (not configured,
    or a bundle without arms). Built once per bundle and config, not per batch: the policy
    keeps its generator and per-arm caches across batches. A new one builds the propensity
    tables of new shoppers' first decisions at once (``Explorer.warm``, about 0.25 s): the
    worker calls this at start-up, and a hot-reloaded bundle's first batch pays it once."""
    if config.explore is None or bundle.arms is None:
        return None
    key = (id(bundle), config.explore)
    cached = _EXPLORERS.get(key)
    if cached is None or cached[0] is not bundle:
        if len(_EXPLORERS) >= 8:  # bundles are replaced rarely (hot reload): keep a few
            _EXPLORERS.clear()
        explorer = Explorer(bundle.arms, bundle.embeddings, config.explore)
        explorer.warm()
        cached = _EXPLORERS[key] = (bundle, explorer)
    return cached[1]


def apply_batch(
    records: Sequence[Record],
    profiles: ProfileLookup,
    config: StepConfig,
    explorer: Explorer | None = None,
) -> Applied:
    """Check and apply a batch of records to the users' profiles, in order, each on its own.

    A user's stored profile is read from ``profiles`` the first time the batch touches the
    user; later events of the same user build on the in-batch profile. With an ``explorer``,
    each event also updates the user's exploration state (feedback, then new suggestions).
    """
    out = Applied()
    current: dict[str, StoredProfile | _Unreadable | None] = {}
    for record in records:
        checked = check_record(record, config)
        if isinstance(checked, Rejection):
            out.dead_letters.append((record, _letter(record, checked, config.pseudonym)))
            continue
        user = checked.user_id
        if user in current:
            stored = current[user]
        else:
            try:
                stored = profiles.get(record.partition, user)
            except Exception as exc:
                stored = _Unreadable(processing_error("load_profile", exc))
            current[user] = stored
        if isinstance(stored, _Unreadable):
            out.dead_letters.append((record, _letter(record, stored.rejection, config.pseudonym)))
            continue
        topic = config.topic_id(record.topic)
        if stored is not None and stored.has_applied(topic, record.partition, record.offset):
            out.replayed += 1
            continue
        try:
            profile = features.update(stored.profile if stored else None, checked)
        except Exception as exc:
            out.dead_letters.append(
                (record, _letter(record, processing_error("update", exc), config.pseudonym))
            )
            continue
        if explorer is not None:
            try:
                state, _ = explorer.apply(
                    profile.explore, event_id=checked.event_id, ts=checked.ts,
                    event_type=checked.event_type, category_id=checked.category_id,
                    weights=profile.weights,
                )  # fmt: skip
                profile.explore = state  # a new object from update: never a stored one
            except Exception as exc:
                out.dead_letters.append(
                    (record, _letter(record, processing_error("explore", exc), config.pseudonym))
                )
                continue
        stored = current[user] = StoredProfile(record.offset, profile, record.partition, topic)
        out.profiles[user] = (stored, record)
        out.rows.append(Row(checked, profile, record))
    return out


def _letter(
    record: Record, rejection: Rejection, pseudonym: Callable[[str], str] | None
) -> DeadLetter:
    stored = None
    if pseudonym is not None and record.value is not None:
        stored, _ = redact_payload(record.value, record.key, pseudonym)
    return dead_letter(
        record.value,
        rejection,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        stored=stored,
    )


def _features(rows: Sequence[Row], bundle: ModelBundle) -> tuple[np.ndarray, list[int], list]:
    """The feature matrix of the rows that featurise to finite values, their indices, and the
    (index, rejection) of the others."""
    failed: list[tuple[int, Rejection]] = []
    try:
        matrix = features.feature_matrix([(r.profile, r.event) for r in rows], bundle.embeddings)
    except Exception:  # find the rows that fail, one at a time
        vectors, keep = [], []
        for i, row in enumerate(rows):
            try:
                vectors.append(features.feature_vector(row.profile, row.event, bundle.embeddings))
                keep.append(i)
            except Exception as exc:
                failed.append((i, processing_error("features", exc)))
        n = len(features.FEATURE_NAMES)
        matrix = np.asarray(vectors, dtype=np.float32).reshape(len(vectors), n)
    else:
        keep = list(range(len(rows)))
    finite = np.isfinite(matrix).all(axis=1)
    if not finite.all():
        for j in np.flatnonzero(~finite).tolist():
            bad = [features.FEATURE_NAMES[c] for c in np.flatnonzero(~np.isfinite(matrix[j]))]
            reason = f"stage `features` failed: non-finite values in {', '.join(bad[:5])}"
            failed.append((keep[j], Rejection(ErrorClass.PROCESSING_ERROR, reason)))
        matrix = matrix[finite]
        keep = [i for i, ok in zip(keep, finite.tolist(), strict=True) if ok]
    return matrix, keep, failed


def _predict(
    bundle: ModelBundle, matrix: np.ndarray
) -> tuple[np.ndarray, list[tuple[int, Rejection]]]:
    """One onnxruntime call; if it fails, one call per row to find the rows that fail."""
    try:
        return bundle.predict(matrix), []
    except Exception:
        probabilities = np.full(len(matrix), np.nan, dtype=np.float32)
        failed = []
        for j in range(len(matrix)):
            try:
                probabilities[j] = bundle.predict(matrix[j : j + 1])[0]
            except Exception as exc:
                failed.append((j, processing_error("score", exc)))
        return probabilities, failed


def score(
    rows: Sequence[Row],
    bundle: ModelBundle,
    *,
    top_k: int,
    scored_at: datetime | None = None,
    versions: frozenset[str] = frozenset({"1"}),
    explain: bool = False,
    pseudonym: Callable[[str], str] | None = None,
    explorer: Explorer | None = None,
) -> Scored:
    """Score rows with one onnxruntime call and encode their purchase-scores records (the
    ``versions`` asked for). With ``explain``, the v2 records carry reasons computed in that
    same call (``streams.processing.reasons``).

    Non-finite features never reach the model: such a row, and any row the model or the
    encoder fails on, becomes a ``processing_error`` dead letter naming the stage.
    """
    rows = list(rows)
    if not rows:
        return Scored([], np.zeros(0, dtype=np.float32), [])
    matrix, keep, failed = _features(rows, bundle)
    dead = [(rows[i].record, _letter(rows[i].record, r, pseudonym)) for i, r in failed]
    explain = explain and "2" in versions
    k = max(top_k, reasons.N_INTERESTS) if explain else top_k
    tops = [features.top_categories(rows[i].profile, k) if k else [] for i in keep]
    explained = reasons.explain(bundle, matrix, tops) if explain else None
    probabilities, failed_score = (
        (explained.probabilities, []) if explained else _predict(bundle, matrix) if keep
        else (np.zeros(0), [])
    )  # fmt: skip
    bad = {j for j, _ in failed_score}
    dead += [
        (rows[keep[j]].record, _letter(rows[keep[j]].record, r, pseudonym)) for j, r in failed_score
    ]
    stamp = (scored_at or datetime.now(UTC)).isoformat()  # once per batch
    out_rows, out_p, records, records_v2 = [], [], [], []
    for j, (i, probability) in enumerate(zip(keep, probabilities.tolist(), strict=True)):
        if j in bad:
            continue
        row = rows[i]
        try:
            fields = score_fields(
                row.event, probability, model_version=bundle.model_version,
                feature_version=bundle.feature_version, top_categories=tops[j][:top_k],
                scored_at=stamp,
            )  # fmt: skip
            body = fields_json(fields)  # once, for both versions
            value = encode_fields(fields, body) if "1" in versions else None
            reasons_j = explained.wire(j) if explained else None
            value_v2 = (
                encode_fields_v2(
                    fields, reasons_j, exploration(explorer, row.profile, tops[j]), body
                ) if "2" in versions else None
            )  # fmt: skip
        except Exception as exc:
            dead.append(
                (row.record, _letter(row.record, processing_error("encode", exc), pseudonym))
            )
            continue
        out_rows.append(row)
        out_p.append(probability)
        key = row.event.user_id.encode()
        if value is not None:
            records.append((key, value))
        if value_v2 is not None:
            records_v2.append((key, value_v2))
    return Scored(
        out_rows, np.asarray(out_p, dtype=np.float32), records, dead, records_v2, matrix,
        explained is not None,
    )  # fmt: skip


def run_step(
    records: Sequence[Record],
    profiles: ProfileLookup,
    bundle: ModelBundle,
    config: StepConfig,
    *,
    throttle: Throttle | None = None,
    now: float = 0.0,
) -> StepOutput:
    """One batch: check and apply, (throttle,) score and encode.

    With a ``throttle``, rows inside a user's window wait in it (``Throttle.due``) instead of
    being scored now; ``now`` is the wall-clock time the throttle measures windows in.
    """
    explorer = explorer_for(bundle, config)
    applied = apply_batch(records, profiles, config, explorer)
    rows = throttle.admit(applied.rows, now) if throttle is not None else applied.rows
    return StepOutput(
        applied,
        score(
            rows, bundle, top_k=config.top_k, versions=config.score_versions,
            explain=config.explain, pseudonym=config.pseudonym, explorer=explorer,
        ),
    )  # fmt: skip


_WIRE: dict[tuple[Explorer, tuple[Exposure, ...]], orjson.Fragment] = {}
# The same, by the identity of the exposures' tuple: a user's state keeps its very tuple from
# event to event until a suggestion opens or closes, so this finds it without hashing the
# exposures (a Python __hash__ each). An entry holds its tuple, so no other object can take
# its id while it is there, and a hit is checked to be that tuple and explorer.
_WIRE_SAME: dict[int, tuple[tuple[Exposure, ...], Explorer, orjson.Fragment]] = {}


def exploration(
    explorer: Explorer | None,
    profile: features.Profile,
    tops: Sequence[tuple[str, float]] | None = None,
) -> dict[str, Any] | orjson.Fragment | None:
    """A v2 score's ``exploration`` object: the policy, its knobs and the user's open
    suggestions; None when exploration is off. ``tops``: the user's strongest interests
    (``features.top_categories``), when the caller has them.

    Every score of a user repeats the object until a suggestion opens or closes, and open
    suggestions keep their decision's figures, so the object's JSON is made once per set of
    open exposures (an ``orjson.Fragment``). Exposures of older profiles, whose figures are
    computed as of each score, get a fresh object."""
    if explorer is None:
        return None
    state = profile.explore
    opened = state.open if state is not None else ()
    same = _WIRE_SAME.get(id(opened))
    if same is not None and same[0] is opened and same[1] is explorer:
        return same[2]
    for exposure in opened:
        if exposure.mean is None:
            return _exploration_object(explorer, profile, tops)
    key = (explorer, opened)
    found = _WIRE.get(key)
    if found is None:
        if len(_WIRE) >= 20_000:  # bound it (about 1 KB each): the users of the last seconds
            _WIRE.clear()
        found = _WIRE[key] = orjson.Fragment(
            orjson.dumps(_exploration_object(explorer, profile, tops))
        )
    if len(_WIRE_SAME) >= 20_000:
        _WIRE_SAME.clear()
    _WIRE_SAME[id(opened)] = (opened, explorer, found)
    return found


def _exploration_object(
    explorer: Explorer, profile: features.Profile, tops: Sequence[tuple[str, float]] | None
) -> dict[str, Any]:
    cfg = explorer.config
    return {
        "policy": cfg.policy,
        "rate": cfg.rate,
        "floor": cfg.floor,
        "suggestions": explorer.suggestions(
            profile.explore, profile.weights, profile.clock, tops=tops
        ),
    }
