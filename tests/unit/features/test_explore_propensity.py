"""The logged propensity of a Thompson-sampling suggestion serves offline evaluation: weighting
each logged suggestion by one over its propensity (inverse propensity weighting) must count each
arm as often as the policy suggests it.

A prior-only posterior logs the probability ``p`` that the arm wins a draw, from a shared table
of 8,192 draws: its weights are exact to a few per cent for an arm chosen a tenth of the time.
Any other posterior logs (1 + W) / 17, W the 16 extra rows the arm wins, whose inverse
estimates 1 / p with expectation (1 - (1 - p)^17) / p: close to 1 / p except for rarely chosen
arms. (W / 16 estimates ``p`` itself without bias, but an arm that wins none of the rows would
then be weighted by the floor alone, and the weights average several times too much.)
"""

from __future__ import annotations

import numpy as np
import pytest

from streams.features.arms import Arms
from streams.features.embeddings import CategoryEmbeddings, hashed_vector
from streams.features.explore import (
    DRAW_POLICY,
    PRIOR_TABLE_DRAWS,
    ExploreConfig,
    Explorer,
    ExploreState,
    PriorTable,
)

K, EVENTS = 6, 4000
PRIOR_MEANS = np.array([0.15, 0.25, 0.35, 0.45, 0.55, 0.65])


def _explorer(slots: int = 1, floor: float = 0.0) -> Explorer:
    names = [f"a{i}" for i in range(K)]
    weights = np.zeros((K, K + 1))
    weights[:, 0] = np.log(PRIOR_MEANS / (1 - PRIOR_MEANS))  # the prior mean, whatever the shares
    arms = Arms([[n] for n in names], np.stack([hashed_vector(n) for n in names]), weights, 4.0)
    config = ExploreConfig(rate=1.0, slots=slots, floor=floor, exclude_top=0, known_share=1.01)
    return Explorer(arms, CategoryEmbeddings.empty(), config)


def _picks(
    state: ExploreState, weights: dict[str, float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Over EVENTS events: how often each arm was suggested, the mean propensity logged for its
    suggestions, its inverse-propensity weighted count per event and that count's standard
    error."""
    explorer = _explorer()
    picked = np.zeros(K)
    logged = np.zeros(K)
    weighted = np.zeros((EVENTS, K))
    for i in range(EVENTS):
        _, opened, _ = explorer.decide(state, event_id=f"p-{i}", ts=10.0, weights=weights)
        (exposure,) = opened
        assert exposure.draw == DRAW_POLICY
        picked[exposure.arm] += 1
        logged[exposure.arm] += exposure.propensity
        weighted[i, exposure.arm] = 1.0 / exposure.propensity
    frequency = picked / EVENTS
    mean_logged = np.divide(logged, picked, out=np.zeros(K), where=picked > 0)
    return frequency, mean_logged, weighted.mean(axis=0), weighted.std(axis=0) / np.sqrt(EVENTS)


@pytest.mark.parametrize(
    ("label", "state", "weights"),
    [
        ("no interest", ExploreState(0.0), {}),
        ("one interest", ExploreState(0.0), {"a5": 2.0}),
    ],
)
def test_a_prior_only_posterior_logs_each_arms_chance_and_weights_count_it_once(
    label: str, state: ExploreState, weights: dict[str, float]
) -> None:
    frequency, mean_logged, ips, se = _picks(state, weights)
    print(label, "suggested", frequency.round(3), "logged", mean_logged.round(3), "ips", ips)
    often = frequency >= 0.02  # enough suggestions for a mean
    # Standard errors: about 0.008 for a frequency, 0.005 for a table share (8,192 draws).
    assert np.abs(mean_logged[often] - frequency[often]).max() < 0.035
    assert np.all(np.abs(ips[often] - 1.0) < 4 * se[often] + 0.05)


def test_a_posterior_of_its_own_logs_weights_that_count_each_arm_about_once() -> None:
    state = ExploreState(0.0, {0: (2.0, 1.0), 3: (0.0, 3.0)})  # counts: no shared table
    frequency, mean_logged, ips, se = _picks(state, {"a1": 1.0, "a2": 1.0})
    print("suggested", frequency.round(3), "logged", mean_logged.round(3), "ips", ips.round(3))
    often = frequency >= 0.02
    # E[17 / (1 + W)] p = 1 - (1 - p)^17 with W ~ Binomial(16, p): about 1 unless p is small.
    expected = 1.0 - (1.0 - frequency) ** 17
    assert np.all(np.abs(ips[often] - expected[often]) < 4 * se[often] + 0.05)
    assert np.all(ips[frequency >= 0.2] > 0.93)
    # The weights never blow up: the choosing row is one of the 17.
    assert mean_logged[often].min() >= 1 / 17


def test_a_prior_table_is_the_same_for_every_worker_and_sums_to_one_over_the_free_arms() -> None:
    alpha, beta = 4.0 * PRIOR_MEANS, 4.0 * (1 - PRIOR_MEANS)
    key = (-1, tuple(range(K)))
    one, other = PriorTable(key, alpha, beta, slots=2), PriorTable(key, alpha, beta, slots=2)
    for chosen in (frozenset(), frozenset({5}), frozenset({0})):
        shares = [one.share(chosen, j) for j in range(K)]
        assert shares == [other.share(chosen, j) for j in range(K)]
        assert sum(shares) == pytest.approx(1.0)
        assert all(shares[j] == 0.0 for j in chosen)
        assert all(s * PRIOR_TABLE_DRAWS == int(s * PRIOR_TABLE_DRAWS) for s in shares)
    # Take the likeliest winner out and the others gain exactly its draws.
    first, second = (
        [one.share(frozenset(), j) for j in range(K)],
        [one.share(frozenset({5}), j) for j in range(K)],
    )
    assert sum(second[j] - first[j] for j in range(5)) == pytest.approx(first[5])


def test_two_slots_of_a_prior_only_state_log_the_second_given_the_first() -> None:
    explorer = _explorer(slots=2)
    state = ExploreState(0.0)
    for i in range(50):
        _, opened, eligible = explorer.decide(state, event_id=f"s-{i}", ts=1.0, weights={})
        first, second = opened
        table = explorer._tables[(-1, eligible)]
        assert first.propensity == pytest.approx(table.share(frozenset(), first.arm), abs=1e-6)
        assert second.propensity == pytest.approx(
            table.share(frozenset({first.arm}), second.arm), abs=1e-6
        )
        assert second.propensity > 0.0  # the arm that won among the rest won some draws


def test_warming_builds_every_first_decisions_table_and_changes_no_decision() -> None:
    cold, warm = _explorer(slots=2, floor=0.05), _explorer(slots=2, floor=0.05)
    assert warm.warm() == K + 1  # one per arm of a first interest, and one for no interest
    built = dict(warm._tables)
    for i in range(200):
        weights = {f"a{i % K}": 1.0} if i % 3 else {}
        a = cold.decide(ExploreState(0.0), event_id=f"w-{i}", ts=5.0, weights=weights)
        b = warm.decide(ExploreState(0.0), event_id=f"w-{i}", ts=5.0, weights=weights)
        assert a == b
    assert warm._tables == built  # first decisions found their tables built
