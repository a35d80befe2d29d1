"""The simulated shop's catalogue: a two-level category tree and priced items.

Leaf category ids look like ``c0417`` (top-level category 04, leaf 17); item ids like
``i04170123``. Prices are log-normal around a per-leaf median, so "price relative to the
category median" is a meaningful signal. The catalogue also keeps, per leaf, the
popularity-weighted histogram of log price ratios: the shoppers' closed-form purchase
probabilities integrate over it instead of sampling (see ``shoppers.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import accumulate

import numpy as np

# Log price ratio bins for the closed-form expectation over items. Items never fall outside:
# their log ratios are clipped to this range when the catalogue is built.
PRICE_BIN_EDGES = np.linspace(-2.4, 2.4, 49)
PRICE_BIN_CENTERS = (PRICE_BIN_EDGES[:-1] + PRICE_BIN_EDGES[1:]) / 2


@dataclass(frozen=True)
class Leaf:
    """One leaf category and its items (ordered by popularity rank)."""

    category_id: str
    top: int
    median_price: float
    item_ids: tuple[str, ...]
    prices: tuple[float, ...]
    log_ratios: tuple[float, ...]
    cum_popularity: tuple[float, ...]  # for bisect sampling, last value is 1.0


@dataclass(frozen=True)
class Catalog:
    """Every leaf, grouped by top-level category, and the per-leaf price histograms."""

    n_top: int
    leaves_per_top: int
    leaves: tuple[Leaf, ...]
    # price_hist[leaf, bin]: popularity-weighted share of the leaf's views in each price bin.
    price_hist: np.ndarray
    # Same, pooled over a top-level category by leaf popularity: shape (n_top, n_bins).
    top_price_hist: np.ndarray
    # leaf popularity within its top-level category, cumulative, per top: for bisect.
    cum_leaf_popularity: tuple[tuple[float, ...], ...]

    def leaf(self, top: int, index: int) -> Leaf:
        """The ``index``-th leaf of top-level category ``top``."""
        return self.leaves[top * self.leaves_per_top + index]


def _cumulative(weights: np.ndarray) -> tuple[float, ...]:
    total = float(weights.sum())
    cum = list(accumulate(float(w) / total for w in weights))
    cum[-1] = 1.0
    return tuple(cum)


def build_catalog(
    rng: np.random.Generator,
    n_top: int = 20,
    leaves_per_top: int = 15,
    items_per_leaf: tuple[int, int] = (40, 240),
) -> Catalog:
    """Draw a catalogue: leaf medians log-normal around 35 (log sd 0.35), item prices
    log-normal per leaf, item and leaf popularity Zipf-like. Deterministic for an ``rng``."""
    if not (1 <= n_top <= 99 and 1 <= leaves_per_top <= 99):
        raise ValueError("n_top and leaves_per_top must be within 1..99 (two-digit ids)")
    leaves: list[Leaf] = []
    hists = []
    for top in range(n_top):
        for index in range(leaves_per_top):
            n_items = int(rng.integers(items_per_leaf[0], items_per_leaf[1] + 1))
            median = float(np.round(np.exp(rng.normal(np.log(35.0), 0.35)), 2)) + 1.0
            spread = float(rng.uniform(0.25, 0.7))
            log_ratio = np.clip(rng.normal(0.0, spread, n_items), -2.3, 2.3)
            prices = np.maximum(np.round(median * np.exp(log_ratio), 2), 0.5)
            log_ratio = np.log(prices / median)
            popularity = 1.0 / (np.arange(n_items) + 3.0) ** 0.9
            hist, _ = np.histogram(log_ratio, bins=PRICE_BIN_EDGES, weights=popularity)
            hists.append(hist / hist.sum())
            code = f"{top:02d}{index:02d}"
            leaves.append(
                Leaf(
                    category_id=f"c{code}",
                    top=top,
                    median_price=median,
                    item_ids=tuple(f"i{code}{k:04d}" for k in range(n_items)),
                    prices=tuple(float(p) for p in prices),
                    log_ratios=tuple(float(x) for x in log_ratio),
                    cum_popularity=_cumulative(popularity),
                )
            )
    price_hist = np.asarray(hists).reshape(n_top, leaves_per_top, -1)
    leaf_popularity = 1.0 / (np.arange(leaves_per_top) + 2.0) ** 0.7
    leaf_share = leaf_popularity / leaf_popularity.sum()
    return Catalog(
        n_top=n_top,
        leaves_per_top=leaves_per_top,
        leaves=tuple(leaves),
        price_hist=price_hist,
        top_price_hist=np.einsum("l,tlb->tb", leaf_share, price_hist),
        cum_leaf_popularity=tuple(_cumulative(leaf_popularity) for _ in range(n_top)),
    )
