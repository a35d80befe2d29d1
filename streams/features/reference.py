"""What a model was trained on, per feature: the reference for explanations and for drift.

A ``Reference`` holds, for every feature of the spec, the training mean (the value a group is
set to when its reason is measured by occlusion) and a histogram of the training rows over
bins cut at the training deciles (what live features are compared with, by the population
stability index). Training fits it (``fit_reference``) and writes it into the bundle; the worker
and ``intentflow explain`` read it from there. numpy and the standard library only.

Histograms are per feature; a group's drift is that of its most drifted feature
(``group_psi``), so regrouping features never invalidates a trained bundle.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streams.errors import DataError
from streams.features.embeddings import save_npz_atomically

REFERENCE_FORMAT_VERSION = 1
BINS = 10  # per feature: cut at the training deciles (fewer where values repeat)
PSI_FLOOR = 1e-4  # shares below this count as this much, so an empty bin is finite


@dataclass(frozen=True)
class Reference:
    """Per-feature training mean and histogram. ``edges[f]`` holds the inner bin edges of
    feature ``f`` ascending, padded with +inf (a value ``v`` falls in bin ``#edges <= v``);
    ``expected[f]`` the share of training rows in each bin."""

    mean: np.ndarray  # float32 (F,)
    edges: np.ndarray  # float64 (F, BINS - 1)
    expected: np.ndarray  # float64 (F, BINS), rows sum to 1
    rows: int  # training rows it was fitted on

    def __post_init__(self) -> None:
        n = self.mean.shape[0] if self.mean.ndim == 1 else -1
        if (
            n < 1
            or self.edges.shape != (n, BINS - 1)
            or self.expected.shape != (n, BINS)
            or not np.isfinite(self.mean).all()
            or np.isnan(self.edges).any()
            or not np.allclose(self.expected.sum(axis=1), 1.0, atol=1e-6)
        ):
            raise ValueError(
                f"reference shapes mean {self.mean.shape}, edges {self.edges.shape}, expected "
                f"{self.expected.shape} (expected (F,), (F, {BINS - 1}), (F, {BINS})), finite "
                "means and histograms that sum to 1"
            )

    @property
    def n_features(self) -> int:
        return int(self.mean.shape[0])

    def bins(self, X: np.ndarray) -> np.ndarray:  # noqa: N803 - X is the usual name
        """The bin of every value, the number of its feature's edges <= it: intp ``(n, F)``."""
        x = np.asarray(X)
        out = np.empty(x.shape, dtype=np.intp)
        for f, edges in enumerate(self.edges):  # one binary search per feature, all rows
            out[:, f] = np.searchsorted(edges, x[:, f], side="right")
        return out

    def bin_counts(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        """Rows per (feature, bin): int64 ``(F, BINS)``."""
        f = self.n_features
        flat = (self.bins(X) + np.arange(f) * BINS).ravel()
        return np.bincount(flat, minlength=f * BINS).reshape(f, BINS)

    def save(self, path: Path) -> None:
        """Write an ``.npz``, atomically."""
        save_npz_atomically(
            Path(path),
            mean=self.mean,
            edges=self.edges,
            expected=self.expected,
            rows=np.array(self.rows),
            format_version=np.array(REFERENCE_FORMAT_VERSION),
        )

    @classmethod
    def load(cls, path: Path) -> Reference:
        """Read what ``save`` wrote; DataError naming the file if it is not that."""
        path = Path(path)
        try:
            with path.open("rb") as fh, np.load(fh, allow_pickle=False) as npz:
                version = int(npz["format_version"])
                arrays = (np.array(npz["mean"]), np.array(npz["edges"]), np.array(npz["expected"]))
                rows = int(npz["rows"])
        except FileNotFoundError:
            raise DataError(f"reference file {path} does not exist") from None
        except (OSError, ValueError, KeyError, EOFError, TypeError, zipfile.BadZipFile) as exc:
            raise DataError(f"reference file {path} is unreadable: {exc}") from None
        if version != REFERENCE_FORMAT_VERSION:
            raise DataError(
                f"reference file {path} has format version {version}; "
                f"expected {REFERENCE_FORMAT_VERSION}"
            )
        mean, edges, expected = arrays
        try:
            return cls(mean.astype(np.float32), edges.astype(np.float64), expected, rows)
        except ValueError as exc:
            raise DataError(f"reference file {path} is inconsistent: {exc}") from None


def fit_reference(X: np.ndarray) -> Reference:  # noqa: N803
    """The reference of training rows ``X`` (n, F): means, decile edges and histograms."""
    x = np.asarray(X, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0 or not np.isfinite(x).all():
        raise ValueError(f"expected finite training rows (n > 0, F), got shape {x.shape}")
    quantiles = np.quantile(x, np.arange(1, BINS) / BINS, axis=0).T  # (F, BINS - 1)
    edges = np.full((x.shape[1], BINS - 1), np.inf)
    for f, cuts in enumerate(quantiles):
        unique = np.unique(cuts)
        edges[f, : unique.size] = unique
    partial = Reference(
        x.mean(axis=0).astype(np.float32),
        edges,
        np.full((x.shape[1], BINS), 1.0 / BINS),
        x.shape[0],
    )
    counts = partial.bin_counts(x)
    return Reference(partial.mean, edges, counts / x.shape[0], x.shape[0])


def psi(expected: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Population stability index per feature: ``sum((a - e) * ln(a / e))`` over bins, with
    ``a`` the observed shares (from ``counts``, (F, BINS)) and shares floored at PSI_FLOOR."""
    total = counts.sum(axis=1, keepdims=True)
    actual = np.divide(counts, total, out=np.zeros(counts.shape), where=total > 0)
    a = np.maximum(actual, PSI_FLOOR)
    e = np.maximum(expected, PSI_FLOOR)
    return ((a - e) * np.log(a / e)).sum(axis=1)


def group_psi(per_feature: np.ndarray, groups: Mapping[str, np.ndarray]) -> dict[str, float]:
    """A group's PSI: the largest of its features' (one drifted feature is enough to show)."""
    return {group: float(per_feature[cols].max()) for group, cols in groups.items()}


class DriftWindow:
    """Bin counts of the recent rows, decayed in time: each batch first ages what is held by
    ``0.5 ** (seconds since the previous batch / half_life_s)``, then adds its own rows.
    Cheap per batch: one comparison against the edges and one ``bincount``."""

    def __init__(self, reference: Reference, *, half_life_s: float, min_rows: float) -> None:
        if half_life_s <= 0 or min_rows < 0:
            raise ValueError("half_life_s must be positive and min_rows not negative")
        self.reference = reference
        self.half_life_s = half_life_s
        self.min_rows = min_rows
        self.counts = np.zeros((reference.n_features, BINS))
        self.weight = 0.0  # decayed number of rows held

    def add(self, X: np.ndarray, elapsed_s: float) -> None:  # noqa: N803
        """Take a batch of feature rows (n, F), ``elapsed_s`` after the previous one."""
        decay = 0.5 ** (max(elapsed_s, 0.0) / self.half_life_s)
        self.counts *= decay
        self.weight *= decay
        if len(X):
            self.counts += self.reference.bin_counts(X)
            self.weight += len(X)

    def psi(self) -> np.ndarray | None:
        """PSI per feature, or None while fewer than ``min_rows`` (decayed) rows are held."""
        if self.weight < max(self.min_rows, 1e-9):
            return None
        return psi(self.reference.expected, self.counts)
