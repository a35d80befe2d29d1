"""Point-in-time datasets: replay an event log through ``streams.features``, one event at a time.

The replay is the worker's computation (``update`` then ``feature_matrix``) applied in event-time
order, so a snapshot at time t is built only from events at or before t. Labels look forward:
1 iff the same user purchases in (t, t + H]. Events within H of the end of the log cannot be
labelled (their window is cut off) and are dropped.
"""

from __future__ import annotations

import bisect
import json
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from streams.contracts.events import ClickEvent, Rejection, decode_event
from streams.errors import DataError
from streams.features import (
    FEATURE_NAMES,
    CategoryEmbeddings,
    EventLike,
    Profile,
    feature_matrix,
    update,
)
from streams.progress import Progress

CHUNK_ROWS = 4096

E = TypeVar("E", bound=EventLike)


@dataclass(frozen=True, slots=True)
class LogEvent:
    """A decoded event in the shape the feature code reads; lighter than a ``ClickEvent``."""

    event_id: str
    user_id: str
    session_id: str | None
    event_type: str
    item_id: str | None
    category_id: str | None
    price: float | None
    quantity: int | None
    ts: float

    @classmethod
    def from_click(cls, event: ClickEvent) -> LogEvent:
        return cls(
            event_id=event.event_id,
            user_id=event.user_id,
            session_id=event.session_id,
            event_type=event.event_type.value,
            item_id=event.item_id,
            category_id=event.category_id,
            price=event.price,
            quantity=event.quantity,
            ts=event.ts,
        )


@dataclass(frozen=True)
class EventLog:
    """The valid events of a JSONL file, stably sorted by event time, and what was rejected."""

    events: list[LogEvent]
    source: str
    lines: int
    rejected: dict[str, int] = field(default_factory=dict)


def sort_events(events: Iterable[E]) -> list[E]:
    """Stable sort by event time: events with equal times keep their log order."""
    return sorted(events, key=lambda e: e.ts)


def read_events(path: Path, *, progress: bool = False) -> EventLog:
    """Decode a clickstream.v1 JSONL file with ``decode_event``, counting rejected lines.

    ``progress`` shows how much of the file is read, on stderr (``streams.progress``).
    """
    path = Path(path)
    events: list[LogEvent] = []
    rejected: Counter[str] = Counter()
    lines = done = 0
    try:
        with (
            path.open("rb") as fh,
            Progress("read events", path.stat().st_size, enabled=progress) as bar,
        ):
            for line in fh:
                done += len(line)
                raw = line.rstrip(b"\r\n")
                if not raw.strip():
                    continue
                lines += 1
                if lines % CHUNK_ROWS == 0:
                    bar.update(done, note=f"{lines:,} lines")
                decoded = decode_event(raw)
                if isinstance(decoded, Rejection):
                    rejected[decoded.error_class.value] += 1
                else:
                    events.append(LogEvent.from_click(decoded))
            bar.update(done, note=f"{lines:,} lines")
    except FileNotFoundError:
        raise DataError(f"event log {path} does not exist") from None
    except OSError as exc:
        raise DataError(f"event log {path} is unreadable: {exc}") from None
    if not events:
        raise DataError(
            f"event log {path} has no valid clickstream.v1 events "
            f"({lines} lines, rejected: {dict(rejected) or 'none'})"
        )
    return EventLog(sort_events(events), str(path), lines, dict(rejected))


def read_truth(path: Path) -> dict[str, float]:
    """The simulator's sidecar: one ``{"event_id": ..., "intent": p}`` per line."""
    path = Path(path)
    truth: dict[str, float] = {}
    try:
        with path.open("rb") as fh:
            for n, raw in enumerate(fh, start=1):
                if not raw.strip():
                    continue
                try:
                    row = json.loads(raw)
                    truth[str(row["event_id"])] = float(row["intent"])
                except (ValueError, KeyError, TypeError) as exc:
                    raise DataError(
                        f"truth file {path} line {n}: expected {{'event_id', 'intent'}}: {exc}"
                    ) from None
    except FileNotFoundError:
        raise DataError(f"truth file {path} does not exist") from None
    return truth


def replay(events: Iterable[E]) -> Iterator[tuple[Profile, E]]:
    """Each event with its user's profile just after it, in the order given."""
    profiles: dict[str, Profile] = {}
    for event in events:
        profile = update(profiles.get(event.user_id), event)
        profiles[event.user_id] = profile
        yield profile, event


def _features(
    pairs: Iterable[tuple[Profile, EventLike]],
    embeddings: CategoryEmbeddings,
    bar: Progress | None = None,
) -> np.ndarray:
    blocks: list[np.ndarray] = []
    chunk: list[tuple[Profile, EventLike]] = []
    for pair in pairs:
        chunk.append(pair)
        if len(chunk) == CHUNK_ROWS:
            blocks.append(feature_matrix(chunk, embeddings))
            chunk = []
            if bar is not None:
                bar.advance(CHUNK_ROWS)
    if chunk or not blocks:
        blocks.append(feature_matrix(chunk, embeddings))
    return np.concatenate(blocks) if len(blocks) > 1 else blocks[0]


def replay_features(
    events: Iterable[E], embeddings: CategoryEmbeddings | None = None, *, sort: bool = True
) -> tuple[list[E], np.ndarray]:
    """Features for EVERY event (as the worker scores them): ``(events in replay order, X)``.

    ``sort=False`` replays in the given order (for example a worker's arrival order).
    """
    ordered = sort_events(events) if sort else list(events)
    emb = embeddings if embeddings is not None else CategoryEmbeddings.empty()
    return ordered, _features(replay(ordered), emb)


def label_events(events: Sequence[EventLike], horizon_s: float) -> tuple[np.ndarray, np.ndarray]:
    """For time-sorted events: (snapshot mask, labels).

    A snapshot is a non-purchase event at least ``horizon_s`` before the end of the log; its
    label is 1 iff the same user purchases in (t, t + horizon_s].
    """
    if horizon_s <= 0:
        raise ValueError(f"horizon must be positive, got {horizon_s}")
    n = len(events)
    ts = np.fromiter((e.ts for e in events), dtype=np.float64, count=n)
    if n and np.any(np.diff(ts) < 0):
        raise ValueError("events must be sorted by time (use sort_events)")
    purchase = np.fromiter((str(e.event_type) == "purchase" for e in events), dtype=bool, count=n)
    t_end = ts[-1] if n else 0.0
    keep = ~purchase & (ts <= t_end - horizon_s)
    purchases: dict[str, list[float]] = defaultdict(list)  # per user, ascending
    for i in np.flatnonzero(purchase).tolist():
        purchases[events[i].user_id].append(float(ts[i]))
    y = np.zeros(n, dtype=np.int8)
    for i in np.flatnonzero(keep).tolist():
        times = purchases.get(events[i].user_id)
        if times:
            # First purchase strictly after t: one in the same second is no prediction.
            j = bisect.bisect_right(times, ts[i])
            if j < len(times) and times[j] <= ts[i] + horizon_s:
                y[i] = 1
    return keep, y


@dataclass(frozen=True)
class Dataset:
    """Point-in-time snapshots: features, labels and where each row came from."""

    X: np.ndarray  # float32 (n, n_features)
    y: np.ndarray  # int8 (n,)
    ts: np.ndarray  # float64 (n,), event time of each snapshot
    event_ids: np.ndarray  # str (n,)
    user_ids: np.ndarray  # str (n,)
    horizon_s: float
    t_start: float  # first and last event time of the whole log
    t_end: float
    feature_names: tuple[str, ...] = FEATURE_NAMES

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, mask: np.ndarray) -> Dataset:
        return Dataset(
            X=self.X[mask],
            y=self.y[mask],
            ts=self.ts[mask],
            event_ids=self.event_ids[mask],
            user_ids=self.user_ids[mask],
            horizon_s=self.horizon_s,
            t_start=self.t_start,
            t_end=self.t_end,
            feature_names=self.feature_names,
        )

    def summary(self) -> dict[str, Any]:
        return {
            "rows": len(self),
            "positives": int(self.y.sum()),
            "base_rate": round(float(self.y.mean()), 6) if len(self) else None,
            "users": len(set(self.user_ids.tolist())),
            "first_ts": float(self.ts.min()) if len(self) else None,
            "last_ts": float(self.ts.max()) if len(self) else None,
        }


def build_dataset(
    events: Iterable[EventLike],
    horizon_s: float,
    embeddings: CategoryEmbeddings | None = None,
    *,
    progress: bool = False,
) -> Dataset:
    """Snapshots at every labelled non-purchase event (see ``label_events``).

    ``progress`` shows the replay's snapshots done, on stderr (``streams.progress``).
    """
    ordered = sort_events(events)
    keep, y = label_events(ordered, horizon_s)
    emb = embeddings if embeddings is not None else CategoryEmbeddings.empty()
    kept_pairs = (pair for pair, k in zip(replay(ordered), keep, strict=True) if k)
    total = int(keep.sum())
    with Progress("features", total, unit="snapshots", enabled=progress) as bar:
        features = _features(kept_pairs, emb, bar)
        bar.update(total)
    kept = [e for e, k in zip(ordered, keep, strict=True) if k]
    return Dataset(
        X=features,
        y=y[keep],
        ts=np.fromiter((e.ts for e in kept), dtype=np.float64, count=len(kept)),
        event_ids=np.array([e.event_id for e in kept], dtype=np.str_),
        user_ids=np.array([e.user_id for e in kept], dtype=np.str_),
        horizon_s=float(horizon_s),
        t_start=float(ordered[0].ts) if ordered else 0.0,
        t_end=float(ordered[-1].ts) if ordered else 0.0,
    )


def split_time(ts: np.ndarray, q: float) -> float:
    """The time at quantile ``q`` of the snapshot times (the train/validation boundary)."""
    if not 0 < q < 1:
        raise ValueError(f"split quantile must be in (0, 1), got {q}")
    if ts.size == 0:
        raise DataError("no labelled snapshots to split (is the log shorter than the horizon?)")
    return float(np.quantile(ts, q, method="lower"))


def time_split(dataset: Dataset, q: float = 0.7) -> tuple[Dataset, Dataset]:
    """(train, validation) by time. Validation is after the q-quantile of snapshot times.

    Train rows whose label window (t, t + H] reaches past the boundary are dropped (an
    embargo), so no training label is decided by validation-period events.
    """
    boundary = split_time(dataset.ts, q)
    train = dataset.ts <= boundary - dataset.horizon_s
    val = dataset.ts > boundary
    return dataset.subset(train), dataset.subset(val)


@dataclass(frozen=True)
class UserSplit:
    users: tuple[int, int]  # distinct users written to (a, b)
    lines: tuple[int, int]
    skipped: int  # lines with no readable user_id (in neither file)


def split_users(source: Path, out_a: Path, out_b: Path, *, seed: int = 0) -> UserSplit:
    """Write each line of a JSONL event log to ``out_a`` or ``out_b`` by its user: about half
    of the users each, every event of a user in the same file (crc32 of seed and user id), so
    a model trained on one file is evaluated on shoppers it never saw."""
    users: tuple[set[str], set[str]] = (set(), set())
    lines = [0, 0]
    skipped = 0
    try:
        with (
            Path(source).open("rb") as fh,
            Path(out_a).open("wb") as a,
            Path(out_b).open("wb") as b,
        ):
            for raw in fh:
                if not raw.strip():
                    continue
                try:
                    user = json.loads(raw)["user_id"]
                except (ValueError, KeyError, TypeError):
                    skipped += 1
                    continue
                if not isinstance(user, str):
                    skipped += 1
                    continue
                half = zlib.crc32(f"{seed}:{user}".encode()) % 2
                (a, b)[half].write(raw if raw.endswith(b"\n") else raw + b"\n")
                users[half].add(user)
                lines[half] += 1
    except FileNotFoundError:
        raise DataError(f"event log {source} does not exist") from None
    except OSError as exc:
        raise DataError(f"cannot split {source} into {out_a} and {out_b}: {exc}") from None
    return UserSplit((len(users[0]), len(users[1])), (lines[0], lines[1]), skipped)
