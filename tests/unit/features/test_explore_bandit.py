"""The exploration policy on a plain Bernoulli bandit (issue 11): 20 arms, T = 5000, 10 seeds.

The rounds run through the policy's own ``Explorer.decide`` and ``observe`` (the code the
worker runs): one slot, every slot to the policy (rate 1, no uniform floor), a flat
Beta(1, 1) prior, no decay. A success is an engagement inside the exposure window; a failure
is the window running out.
"""

from __future__ import annotations

import numpy as np
import pytest

from streams.features.arms import Arms
from streams.features.embeddings import CategoryEmbeddings, hashed_vector
from streams.features.explore import ExploreConfig, Explorer, ExploreState, observe

K, T, SEEDS = 20, 5000, range(10)
WINDOW = 10.0


def _explorer(policy: str) -> Explorer:
    names = [f"a{i:02d}" for i in range(K)]
    arms = Arms(
        [[n] for n in names],
        np.stack([hashed_vector(n) for n in names]),
        np.zeros((K, K + 1)),  # prior mean 0.5 for everyone
        prior_strength=2.0,  # Beta(1, 1)
    )
    config = ExploreConfig(
        policy=policy, rate=1.0, slots=1, floor=0.0, window_s=WINDOW, half_life_s=1e15,
        exclude_top=0,
    )  # fmt: skip
    return Explorer(arms, CategoryEmbeddings.empty(), config)


def _run(policy: str, seed: int) -> np.ndarray:
    """Cumulative expected regret after each round."""
    rng = np.random.default_rng(1000 + seed)
    p = rng.uniform(0.05, 0.95, K)
    explorer = _explorer(policy)
    state = ExploreState(0.0)
    regret = np.zeros(T)
    for t in range(T):
        ts = t * (WINDOW + 1.0)
        state, _ = observe(state, ts, None, False, explorer.config)  # the last one expired
        state, opened, _ = explorer.decide(state, event_id=f"bern-{seed}-{t}", ts=ts, weights={})
        (exposure,) = opened
        regret[t] = p.max() - p[exposure.arm]
        if rng.random() < p[exposure.arm]:
            state, closed = observe(state, ts + 1.0, exposure.arm, True, explorer.config)
            assert closed == ((exposure.arm, True),)
        else:
            state, closed = observe(state, ts + WINDOW + 0.5, None, False, explorer.config)
            assert closed == ((exposure.arm, False),)
    return np.cumsum(regret)


@pytest.fixture(scope="module")
def curves() -> dict[str, np.ndarray]:
    return {
        policy: np.mean([_run(policy, s) for s in SEEDS], axis=0) for policy in ("ts", "random")
    }


def test_thompson_sampling_regret_is_under_a_third_of_random(curves: dict[str, np.ndarray]) -> None:
    ts, rnd = curves["ts"][-1], curves["random"][-1]
    print(f"regret at T={T}: ts {ts:.1f}, random {rnd:.1f}, ratio {ts / rnd:.3f}")
    assert ts <= 0.3 * rnd


def test_thompson_sampling_regret_grows_sub_linearly(curves: dict[str, np.ndarray]) -> None:
    ratio = curves["ts"][T - 1] / curves["ts"][T // 2 - 1]
    print(f"ts regret(5000)/regret(2500) = {ratio:.3f}")
    assert ratio <= 1.5
    # Random's regret is linear, which is what the ratio is measured against.
    assert curves["random"][T - 1] / curves["random"][T // 2 - 1] == pytest.approx(2.0, rel=0.05)
