"""Exploration in the batch step: v2 scores carry suggestions that validate, the worker's
step and the evaluation harness's per-event path give identical suggestions on the same
events, a replayed event decides the same, and a bundle without arms turns it off."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from streams import features
from streams.contracts.events import decode_event
from streams.contracts.scores_v2 import PurchaseScoreV2
from streams.features.explore import ExploreConfig, Explorer, ExploreState, Exposure
from streams.model.bundle import ModelBundle, load_bundle
from streams.processing.envelope import StoredProfile
from streams.processing.step import Record, StepConfig, explorer_for, run_step
from streams.processing.step import exploration as exploration_of
from streams.sources.simulate import Behaviour, generate
from tests.bundles import make_bundle

CONFIG = StepConfig(score_versions=frozenset({"1", "2"}), explore=ExploreConfig())
BEHAVIOUR = Behaviour(interest_rank=4, dormant=2)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> ModelBundle:
    return load_bundle(make_bundle(tmp_path_factory.mktemp("b") / "m", "m-arms", arms=8))


@pytest.fixture(scope="module")
def stream() -> list[Record]:
    """Simulated events whose categories the test bundle knows (c0000..c0049) and others."""
    out = []
    for n, sim in enumerate(generate(30, 2 * 86_400.0, seed=5, behaviour=BEHAVIOUR)):
        out.append(Record("clickstream.v1", 0, n, sim.key, sim.payload, 0.0))
    return out


class Store:
    """A profile table that stores bytes, as the worker's does."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def get(self, partition: int, user_id: str, /) -> StoredProfile | None:
        raw = self.data.get(user_id)
        return StoredProfile(0, features.decode_profile(raw), 0, 0) if raw else None


def _run_worker(bundle: ModelBundle, stream: list[Record], batch: int) -> dict[str, dict]:
    store = Store()
    out = {}
    for i in range(0, len(stream), batch):
        step = run_step(stream[i : i + batch], store, bundle, CONFIG)
        assert not step.dead_letters
        for _, value in step.scored.records_v2:
            record = orjson.loads(value)
            out[record["event_id"]] = record["exploration"]
        for user, (stored, _) in step.applied.profiles.items():
            store.data[user] = features.encode_profile(stored.profile)
    return out


def _run_harness(bundle: ModelBundle, stream: list[Record]) -> dict[str, list]:
    """The evaluation harness's path: features.update, then Explorer.apply, per event."""
    explorer = Explorer(bundle.arms, bundle.embeddings, CONFIG.explore)  # type: ignore[arg-type]
    profiles: dict[str, features.Profile] = {}
    states: dict[str, ExploreState | None] = {}
    out = {}
    for record in stream:
        event = decode_event(record.value, 65_536)
        assert not hasattr(event, "error_class")
        profile = features.update(profiles.get(event.user_id), event)
        state, _ = explorer.apply(
            states.get(event.user_id), event_id=event.event_id, ts=event.ts,
            event_type=event.event_type, category_id=event.category_id, weights=profile.weights,
        )  # fmt: skip
        profiles[event.user_id], states[event.user_id] = profile, state
        # As the wire carries it (JSON: tuples become lists).
        out[event.event_id] = orjson.loads(
            orjson.dumps(explorer.suggestions(state, profile.weights, profile.clock))
        )
    return out


def test_v2_scores_carry_suggestions_that_validate(
    bundle: ModelBundle, stream: list[Record]
) -> None:
    got = _run_worker(bundle, stream, 200)
    assert len(got) == len(stream)
    with_suggestions = [e for e in got.values() if e["suggestions"]]
    assert len(with_suggestions) > 0.9 * len(got)
    for exploration in with_suggestions[:500]:
        PurchaseScoreV2.model_validate(
            {
                "user_id": "u", "event_id": "e", "occurred_at": "2025-01-06T00:00:00Z",
                "scored_at": "2025-01-06T00:00:00Z", "purchase_probability": 0.5,
                "model_version": "m", "feature_version": "1", "top_categories": [],
                "reasons": None, "exploration": exploration,
            }
        )  # fmt: skip
        assert exploration["policy"] == "ts" and exploration["rate"] == 1.0
        assert len(exploration["suggestions"]) <= 2
        for s in exploration["suggestions"]:
            assert 0.05 / 8 <= s["propensity"] <= 1.0  # the floor bounds it from below


def test_worker_step_and_harness_give_identical_suggestions(
    bundle: ModelBundle, stream: list[Record]
) -> None:
    harness = _run_harness(bundle, stream)
    for batch in (1, 37, 500):  # batching and the stored bytes change nothing
        worker = _run_worker(bundle, stream, batch)
        assert {k: v["suggestions"] for k, v in worker.items()} == harness


def test_a_replayed_event_decides_the_same(bundle: ModelBundle) -> None:
    explorer = explorer_for(bundle, CONFIG)
    assert explorer is not None
    weights = {"c0001": 3.0, "c0002": 1.0}
    state = ExploreState(100.0)
    a = explorer.decide(state, event_id="e-42", ts=100.0, weights=weights)
    b = explorer.decide(state, event_id="e-42", ts=100.0, weights=weights)
    assert a == b and len(a[1]) == 2
    draws = {explorer.decide(state, event_id=f"e-{i}", ts=100.0, weights=weights)[1]
             for i in range(50)}  # fmt: skip
    assert len(draws) > 3  # another event id, other draws


def test_exposures_expire_as_failures_and_engagements_succeed(bundle: ModelBundle) -> None:
    explorer = explorer_for(bundle, CONFIG)
    assert explorer is not None and bundle.arms is not None
    arm = 3
    category = bundle.arms.categories[arm][0]
    state = ExploreState(0.0, {}, (Exposure(arm, 0.0, 0.5, 1),))
    kw = {"event_type": "view", "weights": {}}
    engaged, d = explorer.apply(state, event_id="x", ts=10.0, category_id=category, **kw)  # type: ignore[arg-type]
    assert (arm, True) in d.closed and engaged.counts[arm][0] == 1.0
    expired, d = explorer.apply(state, event_id="y", ts=90_000.0, category_id=None, **kw)  # type: ignore[arg-type]
    assert (arm, False) in d.closed and expired.counts[arm][1] == 1.0


def test_profile_bytes_keep_the_exploration_state_exactly(
    bundle: ModelBundle, stream: list[Record]
) -> None:
    store = Store()
    step = run_step(stream[:400], store, bundle, CONFIG)
    for stored, _ in step.applied.profiles.values():
        raw = features.encode_profile(stored.profile)
        assert features.decode_profile(raw) == stored.profile
        assert stored.profile.explore is not None
        plain = features.encode_profile(
            features.Profile(**{**_fields(stored.profile), "explore": None})
        )
        # The exploration section comes last: a 0 byte without it, 1 and the state with it.
        assert plain[-1] == 0 and raw[: len(plain) - 1] == plain[:-1]
        assert raw[len(plain) - 1] == 1 and len(raw) > len(plain)


def _fields(profile: features.Profile) -> dict:
    return {name: getattr(profile, name) for name in profile.__dataclass_fields__}


def test_a_bundle_without_arms_scores_with_exploration_null(
    tmp_path: Path, stream: list[Record]
) -> None:
    plain = load_bundle(make_bundle(tmp_path / "m", "m-plain"))
    assert plain.arms is None and explorer_for(plain, CONFIG) is None
    step = run_step(stream[:50], Store(), plain, CONFIG)
    assert step.scored.records_v2
    assert all(orjson.loads(v)["exploration"] is None for _, v in step.scored.records_v2)


def test_the_exploration_object_is_made_once_per_set_of_open_exposures(
    bundle: ModelBundle, stream: list[Record]
) -> None:
    explorer = explorer_for(bundle, CONFIG)
    assert explorer is not None and bundle.arms is not None
    step = run_step(stream[:200], Store(), bundle, CONFIG)
    profile = next(
        s.profile for s, _ in step.applied.profiles.values()
        if s.profile.explore is not None and len(s.profile.explore.open) == 2
    )  # fmt: skip
    state = profile.explore
    assert state is not None
    first = exploration_of(explorer, profile)
    assert isinstance(first, orjson.Fragment)
    assert exploration_of(explorer, profile) is first  # the very same tuple of exposures
    equal = ExploreState(state.clock, state.counts, tuple(list(state.open)))
    assert equal.open is not state.open
    again = features.Profile(**{**_fields(profile), "explore": equal})
    assert exploration_of(explorer, again) is first  # an equal one, found by value
    greedy = Explorer(bundle.arms, bundle.embeddings, ExploreConfig(policy="greedy", rate=0.5))
    other = exploration_of(greedy, profile)  # the same tuple, another policy
    assert orjson.loads(orjson.dumps(other))["policy"] == "greedy"
    assert orjson.loads(orjson.dumps(first))["policy"] == "ts"
    # An exposure of an older profile keeps no posterior: computed for each score, never kept.
    old = ExploreState(
        state.clock, state.counts, (Exposure(state.open[0].arm, state.clock, 0.5, 1),)
    )
    older = features.Profile(**{**_fields(profile), "explore": old})
    assert isinstance(exploration_of(explorer, older), dict)
    assert isinstance(exploration_of(explorer, older), dict)
