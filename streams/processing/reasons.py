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

import numpy as np

from streams.contracts.scores_v2 import ScoreReasons
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
    """The probabilities of a batch and their reasons, from one onnxruntime call."""

    probabilities: np.ndarray  # float32 (n,)
    reference_probability: float
    impacts: np.ndarray  # float64 (n, len(GROUPS)): p - p with the group at its reference
    interests: list[list[tuple[str, float]]]  # per row: (category_id, p - p without it)
    top: list[list[tuple[str, float]]]  # per row: the N_REASONS largest |impact|, none zero

    def reasons(self, j: int) -> ScoreReasons:
        """Row ``j``'s reasons as published: the N_REASONS groups of largest |impact| (none
        that is exactly zero), and the impacts of its top interests, strongest interest first."""
        return ScoreReasons(self.reference_probability, self.top[j], self.interests[j])


def split(probabilities: np.ndarray, layout: Layout) -> Explained:
    """The model's output on the stacked matrix, taken apart."""
    p = probabilities.astype(np.float64)
    n, g = layout.n, len(GROUPS)
    batch = p[:n]
    occluded = p[layout.groups_start : layout.interests_start].reshape(g, n).T
    impacts = batch[:, None] - occluded
    interests: list[list[tuple[str, float]]] = [[] for _ in range(n)]
    without = batch[layout.owners] - p[layout.interests_start :]
    for owner, category, impact in zip(
        layout.owners.tolist(), layout.categories, without.tolist(), strict=True
    ):
        interests[owner].append((category, impact))
    order = np.argsort(-np.abs(impacts), axis=1, kind="stable")[:, :N_REASONS]
    values = np.take_along_axis(impacts, order, axis=1).tolist()
    top = [
        [(GROUPS[k], v) for k, v in zip(ks, vs, strict=True) if v != 0.0]
        for ks, vs in zip(order.tolist(), values, strict=True)
    ]
    return Explained(
        probabilities=probabilities[:n].astype(np.float32),
        reference_probability=float(p[n]),
        impacts=impacts,
        interests=interests,
        top=top,
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
