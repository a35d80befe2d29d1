"""Occluded copies of feature rows, for reasons: pure numpy, beside the features they change.

A reason's impact is ``p - p_without``: the probability of the row minus that of a copy with
one thing taken away. Two kinds of copies exist:

- a feature group set to its training reference (``occlude_groups``);
- one of the user's interests dropped from the interest embedding (``interests_without``):
  the weighted mean of the category vectors of ``feature_matrix``, without that category.
  Only the embedding columns change; the interest statistics (concentration, entropy...)
  stay, so the impact is that of the category's direction in the embedding.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from streams.features.embeddings import EMBEDDING_DIM, CategoryEmbeddings


def occlude_groups(
    X: np.ndarray,  # noqa: N803 - X is the usual name
    reference: np.ndarray,
    groups: Sequence[np.ndarray],
    out: np.ndarray | None = None,
) -> np.ndarray:
    """``len(groups)`` copies of ``X`` (n, F) stacked, copy ``g`` with the columns of
    ``groups[g]`` set to ``reference``: float32 ``(len(groups) * n, F)``, written into ``out``
    when given (a slice of a larger matrix, filled in place)."""
    n = X.shape[0]
    if out is None:
        out = np.empty((len(groups) * n, X.shape[1]), dtype=np.float32)
    for g, cols in enumerate(groups):
        block = out[g * n : (g + 1) * n]
        block[:] = X
        block[:, cols] = reference[cols]
    return out


def interests_without(
    embedding: np.ndarray,
    dropped: Sequence[str],
    shares: np.ndarray,
    embeddings: CategoryEmbeddings,
) -> np.ndarray:
    """Interest embeddings with one category left out, one row per drop: float32
    ``(len(dropped), EMBEDDING_DIM)``.

    ``embedding`` holds the full interest embedding ``e`` of each drop's row (the weighted mean
    of ``feature_matrix``), ``dropped`` the category ``c`` and ``shares`` its share ``s`` of the
    row's total interest (as ``top_categories`` gives it). Without ``c`` the weighted mean is
    ``(e - s v_c) / (1 - s)``: exact up to the float32 rounding of ``e``, and no pass over the
    profile's other categories. A row left with no interest (``s == 1``) gets the zero vector,
    as ``feature_matrix`` gives a user without interests.
    """
    m = len(dropped)
    out = np.zeros((m, EMBEDDING_DIM), dtype=np.float64)
    if m == 0:
        return out.astype(np.float32)
    s = np.asarray(shares, dtype=np.float64)
    rest = 1.0 - s
    keep = rest > 0
    num = np.asarray(embedding, dtype=np.float64) - embeddings.vectors(dropped) * s[:, None]
    out[keep] = num[keep] / rest[keep, None]
    return out.astype(np.float32)
