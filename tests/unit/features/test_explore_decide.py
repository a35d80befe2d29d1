"""``Explorer.decide``'s shortcuts decide exactly as the full computation does.

A fresh state (no counts, nothing open) with one interest or none has candidates that depend
on that interest's arm alone, memoised per arm. Each decision here is compared with the same
decision of a new Explorer (nothing memoised yet, so computed in full), after the memo was
warmed by another category of the same arm with another weight.
"""

from __future__ import annotations

import numpy as np
import pytest

from streams.features.arms import Arms
from streams.features.embeddings import CategoryEmbeddings, hashed_vector
from streams.features.explore import ExploreConfig, Explorer, ExploreState, Exposure

K = 6
CATEGORIES = [[f"c{a}-{i}" for i in range(3)] for a in range(K)]
CONFIGS = [
    ExploreConfig(),
    ExploreConfig(policy="greedy", rate=0.5, floor=0.2),
    ExploreConfig(policy="random", rate=0.7, slots=3, exclude_top=1),
    ExploreConfig(policy="exploit", exclude_top=0, known_share=1.5),  # the interest's arm too
]


def _arms() -> Arms:
    rng = np.random.default_rng(7)
    centroids = np.stack([np.mean([hashed_vector(c) for c in cats], axis=0) for cats in CATEGORIES])
    return Arms(CATEGORIES, centroids, rng.normal(0.0, 1.0, (K, K + 1)), prior_strength=4.0)


ARMS = _arms()


def _explorer(config: ExploreConfig) -> Explorer:
    return Explorer(ARMS, CategoryEmbeddings.empty(), config)


def _cold(config: ExploreConfig, state: ExploreState, event_id: str, weights: dict) -> tuple:
    """The decision of an Explorer that has memoised nothing."""
    return _explorer(config).decide(state, event_id=event_id, ts=50.0, weights=weights)


@pytest.mark.parametrize("config", CONFIGS)
def test_a_fresh_state_decides_as_computed_in_full(config: ExploreConfig) -> None:
    warm = _explorer(config)
    fresh = ExploreState(10.0)
    for a, cats in enumerate(CATEGORIES):  # the memo filled by each arm's first category
        warm.decide(fresh, event_id=f"warm-{a}", ts=50.0, weights={cats[0]: 0.25})
    warm.decide(fresh, event_id="warm-none", ts=50.0, weights={})
    assert len(warm._fresh) == K + 1
    decided = 0
    for cats in CATEGORIES:
        for category in [*cats[1:], "unknown-category"]:
            for n, weight in enumerate([1.0, 3.5, 1e-6]):
                event_id = f"e-{category}-{n}"
                weights = {category: weight}
                got = warm.decide(fresh, event_id=event_id, ts=50.0, weights=weights)
                assert got == _cold(config, fresh, event_id, weights)
                decided += len(got[1])
    got = warm.decide(fresh, event_id="none", ts=50.0, weights={})
    assert got == _cold(config, fresh, "none", {})
    assert len(warm._fresh) == K + 1  # one entry per arm and one for no interest, no more
    assert decided > 2 * K  # decisions were made, not just skipped
    with pytest.raises(ValueError):  # the memoised posteriors cannot be changed in place
        warm._fresh[0].alpha[0] = 1.0  # type: ignore[union-attr]


@pytest.mark.parametrize("config", CONFIGS)
def test_states_the_memo_does_not_cover_decide_as_computed_in_full(config: ExploreConfig) -> None:
    warm = _explorer(config)
    fresh = ExploreState(10.0)
    for a, cats in enumerate(CATEGORIES):
        warm.decide(fresh, event_id=f"warm-{a}", ts=50.0, weights={cats[0]: 1.0})
    memo = dict(warm._fresh)
    one = {CATEGORIES[2][1]: 2.0}
    cases = [
        (ExploreState(10.0, {3: (2.0, 1.0), 4: (0.0, 3.0)}), one),  # counts
        (ExploreState(10.0, {2: (1.0, 0.0)}), one),  # counts on the interest's own arm
        (ExploreState(10.0, {}, (Exposure(4, 5.0, 0.3, 1, 0.5, 4.0),)), one),  # open
        (fresh, {CATEGORIES[2][1]: 2.0, CATEGORIES[5][0]: 1.0}),  # two interests
        (fresh, {CATEGORIES[2][1]: 2.0, CATEGORIES[2][0]: 1.0}),  # two, on one arm
        (fresh, {CATEGORIES[2][1]: 0.0}),  # one interest without weight
        (fresh, {CATEGORIES[2][1]: -1.0}),
    ]
    for n, (state, weights) in enumerate(cases):
        got = warm.decide(state, event_id=f"x-{n}", ts=50.0, weights=weights)
        assert got == _cold(config, state, f"x-{n}", weights), (state, weights)
    # none of them filled the memo (or changed what it holds)
    assert warm._fresh.keys() == memo.keys()
    assert all(warm._fresh[a] is memo[a] for a in memo)
