"""Point-in-time datasets: labels, censoring, no leakage, and parity with the streaming path."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from model_export.dataset import (
    build_dataset,
    label_events,
    read_events,
    read_truth,
    replay_features,
    sort_events,
    time_split,
)
from streams.contracts.events import ClickEvent, decode_event
from streams.errors import DataError
from streams.features import CategoryEmbeddings, Profile, feature_vector, update
from tests.model_fixtures import T0, Ev, ev, synthetic_events, synthetic_log, to_json

H = 3600.0


def labels_by_id(events: list[Ev], horizon: float = H) -> dict[str, int]:
    ordered = sort_events(events)
    keep, y = label_events(ordered, horizon)
    return {e.event_id: int(y[i]) for i, e in enumerate(ordered) if keep[i]}


def test_labels_on_a_hand_made_log() -> None:
    events = [
        ev("view", T0, event_id="a"),
        ev("add_to_cart", T0 + 100, event_id="b"),
        ev("view", T0 + 50, user="u2", event_id="other-user"),
        ev("purchase", T0 + 1000, event_id="buy"),
        ev("view", T0 + 1000 + H, event_id="after"),
        ev("view", T0 + 3 * H, user="u3", event_id="end-of-log"),
    ]
    got = labels_by_id(events)
    assert got == {"a": 1, "b": 1, "other-user": 0, "after": 0}  # buy: not a snapshot


def test_horizon_is_half_open_and_strictly_after() -> None:
    events = [
        ev("view", T0, event_id="edge"),  # purchase at exactly t + H: inside
        ev("purchase", T0 + H),
        ev("view", T0 + 10 * H, event_id="just-out"),
        ev("purchase", T0 + 11 * H + 1),  # t + H + 1: outside
        ev("view", T0 + 20 * H, event_id="same-second"),
        ev("purchase", T0 + 20 * H),  # at t itself: not a prediction ...
        ev("purchase", T0 + 20 * H + 5),  # ... but a later one still counts
        ev("view", T0 + 30 * H, event_id="same-second-only"),
        ev("purchase", T0 + 30 * H),
        ev("view", T0 + 40 * H, user="u9", event_id="end"),
    ]
    got = labels_by_id(events)
    assert got["edge"] == 1
    assert got["just-out"] == 0
    assert got["same-second"] == 1
    assert got["same-second-only"] == 0


def test_events_within_the_horizon_of_the_end_are_censored() -> None:
    events = [ev("view", T0 + 60 * i, event_id=f"v{i}") for i in range(200)]
    t_end = T0 + 60 * 199
    got = labels_by_id(events)
    assert got  # something is kept
    kept_ts = {e.ts for e in events if e.event_id in got}
    assert max(kept_ts) <= t_end - H
    assert len(got) == sum(1 for e in events if e.ts <= t_end - H)


def test_label_events_needs_sorted_input_and_a_positive_horizon() -> None:
    with pytest.raises(ValueError, match="sorted"):
        label_events([ev("view", T0 + 5), ev("view", T0)], H)
    with pytest.raises(ValueError, match="positive"):
        label_events([ev("view", T0)], 0)


def _features_by_id(events: list[Ev], emb: CategoryEmbeddings) -> dict[str, np.ndarray]:
    data = build_dataset(events, H, emb)
    return {eid: data.X[i] for i, eid in enumerate(data.event_ids.tolist())}


def test_no_leakage_future_events_never_change_a_snapshot() -> None:
    events = [e for e, _ in synthetic_events(users=40, days=1.0, seed=3)]
    emb = CategoryEmbeddings.empty()
    cut = sort_events(events)[len(events) // 2].ts
    base = _features_by_id(events, emb)
    rng = random.Random(1)
    future = [e for e in events if e.ts > cut]
    changed = [e for e in events if e.ts <= cut]
    for e in future:  # rewrite the future: other categories, types, and extra purchases
        kind = rng.choice(["view", "add_to_cart", "purchase", "favorite"])
        changed.append(replace(e, event_type=kind, category_id=f"z{rng.randrange(5)}"))
        if rng.random() < 0.3:
            changed.append(ev("purchase", e.ts + 1, user=e.user_id, category="z0"))
    changed.append(ev("view", cut + H * 10, user="newcomer"))  # also stretches the log's end
    after = _features_by_id(changed, emb)
    past_ids = [eid for eid, e in ((e.event_id, e) for e in events) if e.ts <= cut]
    compared = 0
    for eid in past_ids:
        if eid in base and eid in after:
            np.testing.assert_array_equal(base[eid], after[eid])
            compared += 1
    assert compared > 100


def test_dataset_features_equal_one_event_at_a_time_updates() -> None:
    events = [e for e, _ in synthetic_events(users=30, days=1.0, seed=5)]
    emb = CategoryEmbeddings(["c1", "c2"], np.eye(2, 16, dtype=np.float32))
    data = build_dataset(events, H, emb)
    profiles: dict[str, Profile] = {}
    expected: dict[str, np.ndarray] = {}
    for e in sort_events(events):
        profiles[e.user_id] = update(profiles.get(e.user_id), e)
        expected[e.event_id] = feature_vector(profiles[e.user_id], e, emb)
    assert len(data) > 100
    for i, eid in enumerate(data.event_ids.tolist()):
        np.testing.assert_array_equal(data.X[i], expected[eid])


def test_replay_features_matches_the_worker_path_for_every_event(tmp_path: Path) -> None:
    """File -> read_events -> replay_features equals what the worker does: decode each line
    into a ClickEvent, update the profile and compute features one event at a time."""
    log = synthetic_log(tmp_path / "log.jsonl", users=25, days=1.0, seed=9)
    events, X = replay_features(read_events(log).events)
    assert X.shape == (len(events), X.shape[1])
    decoded = []
    for line in log.read_bytes().splitlines():
        event = decode_event(line)
        if isinstance(event, ClickEvent):
            decoded.append(event)
    decoded.sort(key=lambda e: e.ts)
    emb = CategoryEmbeddings.empty()
    profiles: dict[str, Profile] = {}
    assert [e.event_id for e in decoded] == [e.event_id for e in events]
    assert any(e.event_type == "purchase" for e in events)  # every event, purchases too
    for i, click in enumerate(decoded):
        profiles[click.user_id] = update(profiles.get(click.user_id), click)
        np.testing.assert_array_equal(X[i], feature_vector(profiles[click.user_id], click, emb))


def test_time_split_is_by_time_with_an_embargo() -> None:
    events = [e for e, _ in synthetic_events(users=30, days=2.0, seed=2)]
    data = build_dataset(events, H)
    train, val = time_split(data, 0.7)
    boundary = np.quantile(data.ts, 0.7, method="lower")
    assert train.ts.max() <= boundary - H
    assert val.ts.min() > boundary
    assert 0.25 < len(val) / len(data) < 0.35
    assert len(train) + len(val) <= len(data)
    assert not set(train.event_ids.tolist()) & set(val.event_ids.tolist())


def test_read_events_counts_rejections_and_reports_bad_files(tmp_path: Path) -> None:
    good = [ev("view", T0 + i, event_id=f"g{i}") for i in range(3)]
    path = tmp_path / "log.jsonl"
    path.write_text(
        "\n".join([to_json(good[2]), "{oops", to_json(good[0]), "", '"x"', to_json(good[1])]) + "\n"
    )
    log = read_events(path)
    assert [e.event_id for e in log.events] == ["g0", "g1", "g2"]  # sorted by time
    assert log.lines == 5
    assert log.rejected == {"malformed_json": 1, "not_an_object": 1}
    with pytest.raises(DataError, match="does not exist"):
        read_events(tmp_path / "missing.jsonl")
    (tmp_path / "bad.jsonl").write_text("{}\nnope\n")
    with pytest.raises(DataError, match=r"no valid clickstream\.v1 events"):
        read_events(tmp_path / "bad.jsonl")


def test_read_truth(tmp_path: Path) -> None:
    path = tmp_path / "truth.jsonl"
    path.write_text('{"event_id": "a", "intent": 0.25}\n\n{"event_id": "b", "intent": 1}\n')
    assert read_truth(path) == {"a": 0.25, "b": 1.0}
    path.write_text('{"event_id": "a"}\n')
    with pytest.raises(DataError, match="line 1"):
        read_truth(path)
