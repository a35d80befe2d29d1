"""Opt-in latent structure for measuring exploration (issue 11). Off by default: with every
option at its default, the shoppers draw exactly what they drew before (a golden test).

* **Correlated interests** (``Behaviour.interest_rank`` > 0): the personal baseline of the
  log-interests is ``L z_u + noise``, with population loadings ``L`` (n_top x rank) shared by
  every user of a seed and a personal ``z_u``, scaled so each category keeps the marginal
  spread ``interest_sd``; a share ``interest_shared`` of the variance is low-rank.
* **Dormant interests** (``Behaviour.dormant`` per user): top-level categories the user truly
  likes (their log-interest is raised to near the user's strongest) but visits at a tiny rate
  (``dormant_visit`` times the usual) until they have engaged ``awaken_after`` times with a
  suggestion of it; then they *awaken* and are visited normally. The first is the category the
  low-rank structure predicts best among the user's non-top ones; the others are random.
* **Responses** to suggestions: shown a cluster of categories, the user engages with
  probability ``response_probability`` of their true affinity for it (its categories' mean
  affinity, affinity being ``theta / max(theta)`` without the dormant damping), and an
  engagement is a click and a view on a popular item of the cluster's category the user likes
  best. The coin of the ``j``-th showing of a cluster to a user comes from its own generator
  keyed by (seed, user, cluster, j): every policy faces the same coin flips.

Each part draws from its own generators; the shopper's main generator is untouched.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from streams.sources.simulate.shoppers import Behaviour


def top_of(category_id: str) -> int:
    """The top-level category of a leaf id ``cTTLL``."""
    return int(category_id[1:3])


@lru_cache(maxsize=16)
def loadings(seed: int, n_top: int, rank: int) -> np.ndarray:
    """The population's low-rank loadings ``L`` (n_top x rank), rows of unit length."""
    rng = np.random.default_rng([seed, 0x1A7E47])
    raw = rng.normal(0.0, 1.0, (n_top, rank))
    return raw / np.linalg.norm(raw, axis=1, keepdims=True)


@dataclass
class Latent:
    """One user's latent exploration state."""

    dormant: tuple[int, ...] = ()  # top-level categories, in the order they were picked
    awake: set[int] = field(default_factory=set)
    engagements: dict[int, int] = field(default_factory=dict)  # dormant top -> engagements
    shown: dict[str, int] = field(default_factory=dict)  # cluster -> times shown
    z: tuple[float, ...] = ()

    def sleeping(self) -> set[int]:
        return set(self.dormant) - self.awake


def init_latent(
    seed: int, index: int, eta_base: list[float], behaviour: Behaviour
) -> tuple[Latent, list[float]]:
    """The user's latent state and (possibly new) baseline log-interests."""
    rng = random.Random(f"intentflow-sim/{seed}/latent/{index}")
    n_top = len(eta_base)
    latent = Latent()
    eta = list(eta_base)
    structure = np.zeros(n_top)
    if behaviour.interest_rank > 0:
        rank = behaviour.interest_rank
        z = [rng.gauss(0.0, 1.0) for _ in range(rank)]
        structure = loadings(seed, n_top, rank) @ np.asarray(z)
        shared = behaviour.interest_shared
        sd = behaviour.interest_sd
        eta = [
            sd
            * (math.sqrt(shared) * float(structure[c]) + math.sqrt(1.0 - shared) * rng.gauss(0, 1))
            for c in range(n_top)
        ]
        latent.z = tuple(z)
    if behaviour.dormant > 0:
        ranked = sorted(range(n_top), key=lambda c: -eta[c])
        candidates = ranked[3:]  # never one of the three strongest
        picks: list[int] = []
        if behaviour.interest_rank > 0 and candidates:
            picks.append(max(candidates, key=lambda c: (structure[c], -c)))
        while len(picks) < min(behaviour.dormant, len(candidates)):
            c = rng.choice(candidates)
            if c not in picks:
                picks.append(c)
        strongest = max(eta)
        for c in picks:
            eta[c] = strongest - behaviour.dormant_eta_gap * rng.random()
        latent.dormant = tuple(picks)
    return latent, eta


def response_probability(
    affinity: float | Sequence[float] | np.ndarray, behaviour: Behaviour
) -> np.ndarray:
    """P(engage | shown a cluster) for a true affinity in [0, 1]: increasing, from
    ``response_floor`` to ``response_floor + response_gain``."""
    a = np.clip(np.asarray(affinity, dtype=np.float64), 0.0, 1.0)
    return behaviour.response_floor + behaviour.response_gain * a**behaviour.response_power


@lru_cache(maxsize=4096)
def _tops(categories: tuple[str, ...]) -> np.ndarray:
    return np.fromiter((top_of(c) for c in categories), dtype=np.intp, count=len(categories))


def cluster_affinity(affinity: np.ndarray, categories: Sequence[str]) -> float:
    """The user's true affinity for a cluster: the mean affinity of its categories' tops."""
    if not categories:
        return 0.0
    return float(affinity[_tops(tuple(categories))].mean())


def coin(seed: int, index: int, cluster: str, j: int) -> float:
    """The uniform deciding the ``j``-th showing of ``cluster`` to user ``index``."""
    return random.Random(f"intentflow-sim/{seed}/respond/{index}/{cluster}/{j}").random()
