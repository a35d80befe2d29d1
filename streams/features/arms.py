"""Exploration arms: clusters of categories and their population prior. numpy and stdlib only.

An *arm* is a cluster of categories found by k-means on the bundle's category embeddings at
train time. A category the bundle has never seen still belongs to an arm: the one whose
centroid is nearest its (hashed fallback) vector, so a new category inherits that arm's
prior and counts. The *population prior* of arm ``c`` for a user is a logistic function of
the user's interest shares over the arms (``shares``, summing to 1 or all zero):
``mean_c = sigmoid(W[c, 0] + W[c, 1:] @ shares)``, fitted at train time on organic behaviour
(``model_export.explore_prior``), with a strength in pseudo-observations.
"""

from __future__ import annotations

import math
import operator
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from streams.errors import DataError
from streams.features.embeddings import CategoryEmbeddings, save_npz_atomically

ARMS_FORMAT_VERSION = 1
MAX_ARMS = 255  # an arm index is one byte in the profile


class Arms:
    """The arms of a bundle: each arm's categories and centroid, and the population prior."""

    __slots__ = (
        "_bias", "_cache", "_index", "_labels", "_rows", "_sims", "_w0", "_w1", "categories",
        "centroids", "prior_strength", "prior_weights",
    )  # fmt: skip

    def __init__(
        self,
        categories: Sequence[Sequence[str]],
        centroids: np.ndarray,
        prior_weights: np.ndarray,
        prior_strength: float,
    ) -> None:
        k = len(categories)
        centroids = np.asarray(centroids, dtype=np.float64)
        prior_weights = np.asarray(prior_weights, dtype=np.float64)
        if not 2 <= k <= MAX_ARMS:
            raise ValueError(f"{k} arms; expected 2..{MAX_ARMS}")
        if centroids.ndim != 2 or centroids.shape[0] != k:
            raise ValueError(f"centroids have shape {centroids.shape}; expected ({k}, dim)")
        if prior_weights.shape != (k, k + 1):
            raise ValueError(
                f"prior weights have shape {prior_weights.shape}; expected ({k}, {k + 1})"
            )
        if not (np.isfinite(centroids).all() and np.isfinite(prior_weights).all()):
            raise ValueError("arms hold non-finite values")
        if not (math.isfinite(prior_strength) and prior_strength > 0):
            raise ValueError(f"prior strength must be positive, got {prior_strength}")
        self.categories: tuple[tuple[str, ...], ...] = tuple(tuple(c) for c in categories)
        norms = np.linalg.norm(centroids, axis=1, keepdims=True)
        self.centroids = centroids / np.where(norms > 0, norms, 1.0)
        self.prior_weights = prior_weights
        self.prior_strength = float(prior_strength)
        self._index = {c: a for a, cats in enumerate(self.categories) for c in cats}
        # every category's arm met so far: the known ones, then the nearest of unknown ones
        self._cache: dict[str, int] = dict(self._index)
        # Per score, plain Python beats numpy on vectors this small (see ``prior_mean_of``).
        self._w0 = np.ascontiguousarray(prior_weights[:, 0])
        self._w1 = np.ascontiguousarray(prior_weights[:, 1:])
        self._bias: list[float] = self._w0.tolist()
        self._rows: list[list[float]] = prior_weights[:, 1:].tolist()
        self._labels = [self.label(a) for a in range(k)]
        self._sims: dict[str, list[float]] = {}

    def __len__(self) -> int:
        return len(self.categories)

    @staticmethod
    def label(arm: int) -> str:
        """The arm's stable name in scores (``k07``)."""
        return f"k{arm:02d}"

    def arm_of(self, category_id: str, embeddings: CategoryEmbeddings) -> int:
        """The arm of a category: its cluster, or the nearest centroid for an unknown one."""
        arm = self._cache.get(category_id)
        return self._nearest(category_id, embeddings) if arm is None else arm

    def _nearest(self, category_id: str, embeddings: CategoryEmbeddings) -> int:
        """An unknown category's arm (the nearest centroid to its vector), cached."""
        vec = np.asarray(embeddings.vector(category_id), dtype=np.float64)
        arm = int(np.argmax(self.centroids[:, : vec.shape[0]] @ vec))
        if len(self._cache) > 100_000 + len(self._index):  # bound it for long-running workers
            self._cache = dict(self._index)
        self._cache[category_id] = arm
        return arm

    def totals(self, weights: Mapping[str, float], embeddings: CategoryEmbeddings) -> list[float]:
        """The user's interest weight per arm, in plain Python (the categories in dict order,
        so the sums are the same whichever way they are read)."""
        out = [0.0] * len(self.categories)
        known = self._cache.get
        for category, weight in weights.items():
            arm = known(category)
            out[self._nearest(category, embeddings) if arm is None else arm] += weight
        return out

    def shares(self, weights: Mapping[str, float], embeddings: CategoryEmbeddings) -> np.ndarray:
        """The user's interest share per arm (sums to 1; all zero without interests)."""
        out = np.asarray(self.totals(weights, embeddings))
        total = out.sum()
        return out / total if total > 0 else out

    def prior_mean_of(self, arm: int, totals: Sequence[float], total: float) -> float:
        """The population prior mean of one arm for a user's interest ``totals`` per arm
        (``totals``) and their sum ``total`` (the shares are the totals over it)."""
        z = self._bias[arm] + (
            sum(map(operator.mul, self._rows[arm], totals)) / total if total > 0 else 0.0
        )
        return 1.0 / (1.0 + math.exp(-min(max(z, -30.0), 30.0)))

    def name(self, arm: int) -> str:
        """``label(arm)``, precomputed."""
        return self._labels[arm]

    def similarity(self, category_id: str, arm: int, embeddings: CategoryEmbeddings) -> float:
        """Cosine of a category's vector and an arm's centroid (cached per category)."""
        sims = self._sims.get(category_id)
        if sims is None:
            vec = np.asarray(embeddings.vector(category_id), dtype=np.float64)
            sims = (self.centroids[:, : vec.shape[0]] @ vec).tolist()
            if len(self._sims) > 100_000:  # bound it for long-running workers
                self._sims.clear()
            self._sims[category_id] = sims
        return sims[arm]

    def prior_mean(self, shares: np.ndarray, arms: np.ndarray | None = None) -> np.ndarray:
        """The population prior mean of every arm (or of ``arms``, an index array) for a user
        with these shares, in (0, 1)."""
        z = self._w0 + self._w1 @ shares
        if arms is not None:
            z = z[arms]
        return 1.0 / (1.0 + np.exp(-np.minimum(np.maximum(z, -30.0), 30.0)))

    def save(self, path: Path) -> None:
        """Write an ``.npz`` (atomically) that ``load`` reads back."""
        flat = [c for cats in self.categories for c in cats]
        sizes = [len(cats) for cats in self.categories]
        save_npz_atomically(
            Path(path),
            categories=np.array(flat, dtype=np.str_),
            sizes=np.array(sizes, dtype=np.int64),
            centroids=self.centroids,
            prior_weights=self.prior_weights,
            prior_strength=np.array(self.prior_strength),
            format_version=np.array(ARMS_FORMAT_VERSION),
        )

    @classmethod
    def load(cls, path: Path) -> Arms:
        """Read what ``save`` wrote; DataError naming the file if it is not that."""
        path = Path(path)
        try:
            with path.open("rb") as fh, np.load(fh, allow_pickle=False) as npz:
                version = int(npz["format_version"])
                flat = [str(c) for c in npz["categories"]]
                sizes = [int(s) for s in npz["sizes"]]
                centroids = np.array(npz["centroids"])
                weights = np.array(npz["prior_weights"])
                strength = float(npz["prior_strength"])
        except FileNotFoundError:
            raise DataError(f"arms file {path} does not exist") from None
        except (OSError, ValueError, KeyError, EOFError, TypeError, zipfile.BadZipFile) as exc:
            raise DataError(f"arms file {path} is unreadable: {exc}") from None
        if version != ARMS_FORMAT_VERSION:
            raise DataError(
                f"arms file {path} has format version {version}; expected {ARMS_FORMAT_VERSION}"
            )
        if sum(sizes) != len(flat) or min(sizes, default=0) < 0:
            raise DataError(f"arms file {path} is inconsistent: sizes do not add up")
        bounds = np.cumsum([0, *sizes])
        groups = [flat[bounds[i] : bounds[i + 1]] for i in range(len(sizes))]
        try:
            return cls(groups, centroids, weights, strength)
        except ValueError as exc:
            raise DataError(f"arms file {path} is inconsistent: {exc}") from None


def kmeans(
    vectors: np.ndarray, k: int, *, seed: int = 0, iterations: int = 50
) -> tuple[np.ndarray, np.ndarray]:
    """Spherical k-means (cosine) with k-means++ seeding: (labels, unit centroids).
    Deterministic for a seed; every cluster keeps at least one member."""
    x = np.asarray(vectors, dtype=np.float64)
    n = len(x)
    if not 2 <= k <= n:
        raise ValueError(f"k-means needs 2 <= k <= {n} points, got k={k}")
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    rng = np.random.default_rng(seed)
    chosen = [int(rng.integers(n))]
    dist = 1.0 - x @ x[chosen[0]]
    for _ in range(1, k):
        p = np.maximum(dist, 0.0) ** 2
        total = p.sum()
        nxt = int(rng.choice(n, p=p / total)) if total > 0 else int(rng.integers(n))
        chosen.append(nxt)
        dist = np.minimum(dist, 1.0 - x @ x[nxt])
    centroids = x[chosen].copy()
    labels = np.full(n, -1)
    for _ in range(iterations):
        new = np.argmax(x @ centroids.T, axis=1)
        for c in range(k):  # an empty cluster takes the point farthest from its centroid
            if not (new == c).any():
                fit = (x * centroids[new]).sum(axis=1)
                fit[np.isin(np.arange(n), [np.flatnonzero(new == j)[0] for j in range(k)
                                          if (new == j).sum() == 1])] = np.inf  # fmt: skip
                new[int(np.argmin(fit))] = c
        if (new == labels).all():
            break
        labels = new
        for c in range(k):
            mean = x[labels == c].sum(axis=0)
            norm = np.linalg.norm(mean)
            centroids[c] = mean / norm if norm > 0 else x[labels == c][0]
    return labels, centroids
