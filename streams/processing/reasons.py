"""Reasons for scores, by occlusion on the served model, in the batch's one onnxruntime call.

For a batch of feature rows ``X`` (n, F) the model is run once on a stacked matrix:

    X                      n rows: the scores themselves
    reference              1 row: the training mean (``reference_probability``)
    X, group g occluded    n rows per group: the group's features set to the training mean
    X, interest c dropped  one row per (row, top interest c): c left out of the embedding

and each impact is ``p - p_without``: positive when the group (or interest) raises the
probability above what it would be at the training reference. The copies are built by
``streams.features.occlusion``; the reference comes from the bundle. A bundle without one
(trained before reasons existed) gives no reasons, and scores as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from streams.contracts.scores_v2 import ScoreReasons, reasons_wire
from streams.features import FEATURE_SPEC
from streams.features.embeddings import EMBEDDING_DIM
from streams.features.occlusion import interests_without, occlude_groups
from streams.model.bundle import ModelBundle

N_REASONS = 3  # groups listed per score (largest |impact| first)
N_INTERESTS = 3  # top interests measured per score (strongest first)
GROUP_COLUMNS = FEATURE_SPEC.group_columns()
GROUPS: tuple[str, ...] = tuple(GROUP_COLUMNS)


@dataclass(frozen=True, slots=True)
class Layout:
    """Where each part of the stacked matrix lives."""

    n: int  # batch rows
    owners: np.ndarray  # intp (m,): the batch row of each interest copy
    categories: list[str]  # (m,): the category each interest copy drops

    @property
    def groups_start(self) -> int:
        return self.n + 1

    @property
    def interests_start(self) -> int:
        return self.n + 1 + len(GROUPS) * self.n


def occlusions(
    X: np.ndarray,  # noqa: N803 - X is the usual name
    tops: Sequence[Sequence[tuple[str, float]]],
    bundle: ModelBundle,
) -> tuple[np.ndarray, Layout]:
    """The stacked matrix (see the module doc) for rows ``X``; ``tops[j]``: row j's strongest
    interests with their shares, strongest first (``top_categories``; the first N_INTERESTS
    are measured)."""
    reference = bundle.reference
    if reference is None:
        raise ValueError(f"bundle {bundle.path} has no reference")
    mean = reference.mean
    owners: list[int] = []
    dropped: list[str] = []
    shares: list[float] = []
    for j, top in enumerate(tops):
        for category, share in top[:N_INTERESTS]:
            owners.append(j)
            dropped.append(category)
            shares.append(share)
    owner = np.asarray(owners, dtype=np.intp)
    n, g = len(X), len(GROUP_COLUMNS)
    # One allocation, filled in place: the batch, the reference row, the group copies, the
    # interest copies.
    stacked = np.empty((n * (1 + g) + 1 + len(owner), X.shape[1]), dtype=np.float32)
    stacked[:n] = X
    stacked[n] = mean
    start = n + 1 + g * n
    occlude_groups(X, mean, list(GROUP_COLUMNS.values()), out=stacked[n + 1 : start])
    copies = stacked[start:]
    copies[:] = X[owner]
    copies[:, :EMBEDDING_DIM] = interests_without(
        copies[:, :EMBEDDING_DIM], dropped, np.asarray(shares), bundle.embeddings
    )
    return stacked, Layout(len(X), owner, dropped)


@dataclass(slots=True)
class Explained:
    """The probabilities of a batch and their reasons, from one onnxruntime call. A row's
    reasons are assembled when asked for (``wire`` for the published object, ``reasons``
    for the step's view), from the batch's arrays."""

    probabilities: np.ndarray  # float32 (n,)
    reference_probability: float
    impacts: np.ndarray  # float64 (n, len(GROUPS)): p - p with the group at its reference
    order: list[list[int]]  # per row: its N_REASONS groups of largest |impact|, largest first
    values: list[list[float]]  # per row: their impacts
    categories: list[str]  # the interest copies' dropped categories, row after row
    without: list[float]  # and their impacts, p - p without the category
    starts: list[int]  # row j's interest copies: starts[j] to starts[j + 1]

    def _top(self, j: int) -> list[tuple[str, float]]:
        return [
            (GROUPS[k], v) for k, v in zip(self.order[j], self.values[j], strict=True) if v != 0.0
        ]

    def _interests(self, j: int) -> list[tuple[str, float]]:
        a, b = self.starts[j], self.starts[j + 1]
        return list(zip(self.categories[a:b], self.without[a:b], strict=True))

    @property
    def top(self) -> list[list[tuple[str, float]]]:
        """Per row: the N_REASONS (code, impact) of largest |impact|, none zero."""
        return [self._top(j) for j in range(len(self.order))]

    @property
    def interests(self) -> list[list[tuple[str, float]]]:
        """Per row: (category_id, p - p without it), strongest interest first."""
        return [self._interests(j) for j in range(len(self.order))]

    def reasons(self, j: int) -> ScoreReasons:
        """Row ``j``'s reasons as published: the N_REASONS groups of largest |impact| (none
        that is exactly zero), and the impacts of its top interests, strongest interest first."""
        return ScoreReasons(self.reference_probability, self._top(j), self._interests(j))

    def wire(self, j: int) -> dict[str, Any]:
        """``reasons(j).to_wire()``, without the ``ScoreReasons`` (this runs for every score)."""
        a, b = self.starts[j], self.starts[j + 1]
        return reasons_wire(
            self.reference_probability,
            self._top(j),
            zip(self.categories[a:b], self.without[a:b], strict=True),
        )


def split(probabilities: np.ndarray, layout: Layout) -> Explained:
    """The model's output on the stacked matrix, taken apart."""
    p = probabilities.astype(np.float64)
    n, g = layout.n, len(GROUPS)
    batch = p[:n]
    occluded = p[layout.groups_start : layout.interests_start].reshape(g, n).T
    impacts = batch[:, None] - occluded
    without = batch[layout.owners] - p[layout.interests_start :]
    # The interest copies are in row order (``occlusions``): row j's start where the row
    # numbers first reach j.
    starts = np.searchsorted(layout.owners, np.arange(n + 1)).tolist()
    order = np.argsort(-np.abs(impacts), axis=1, kind="stable")[:, :N_REASONS]
    return Explained(
        probabilities=probabilities[:n].astype(np.float32),
        reference_probability=float(p[n]),
        impacts=impacts,
        order=order.tolist(),
        values=np.take_along_axis(impacts, order, axis=1).tolist(),
        categories=layout.categories,
        without=without.tolist(),
        starts=starts,
    )


def explain(
    bundle: ModelBundle,
    X: np.ndarray,  # noqa: N803
    tops: Sequence[Sequence[tuple[str, float]]],
) -> Explained | None:
    """Score rows ``X`` and their occluded copies in ONE onnxruntime call (``tops``: see
    ``occlusions``). None when the bundle has no reference, or when the call fails (the caller
    then scores the batch alone, and isolates the failing rows)."""
    if bundle.reference is None or len(X) == 0:
        return None
    try:
        stacked, layout = occlusions(X, tops, bundle)
        return split(bundle.predict(stacked), layout)
    except Exception:
        return None
