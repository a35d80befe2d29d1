"""Category embeddings from session co-occurrence: PPMI, then truncated SVD.

Categories that appear in the same browsing session are substitutes or complements. The
positive pointwise mutual information of session co-occurrence, factorised by a truncated SVD,
is the count-based equivalent of skip-gram embeddings (Levy and Goldberg, 2014; Levy, Goldberg
and Dagan, 2015, whose context smoothing alpha = 0.75 and eigenvalue weighting p = 0.5 are used
here). It is closed form, deterministic, takes seconds on a CPU and needs no labels, so it is
learned from the training period only and cannot leak the target.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import numpy as np
from scipy import sparse  # type: ignore[import-untyped]  # scipy ships no stubs
from sklearn.utils.extmath import randomized_svd

from streams.features import EMBEDDING_DIM, SESSION_GAP_S, CategoryEmbeddings, EventLike

MAX_SESSION_CATEGORIES = 50  # longer sessions keep their first 50 distinct categories


def session_baskets(events: Iterable[EventLike], gap_s: float = SESSION_GAP_S) -> list[list[str]]:
    """Distinct categories of each session (a new session after ``gap_s`` of inactivity).

    ``events`` must be sorted by time.
    """
    open_baskets: dict[str, tuple[float, list[str]]] = {}
    baskets: list[list[str]] = []
    for event in events:
        category = event.category_id
        if category is None:
            continue
        last = open_baskets.get(event.user_id)
        if last is None or event.ts - last[0] > gap_s:
            basket: list[str] = []
            if last is not None:
                baskets.append(last[1])
        else:
            basket = last[1]
        if category not in basket and len(basket) < MAX_SESSION_CATEGORIES:
            basket.append(category)
        open_baskets[event.user_id] = (event.ts, basket)
    baskets.extend(b for _, b in open_baskets.values())
    return baskets


def ppmi_matrix(
    baskets: list[list[str]], min_count: int = 2, alpha: float = 0.75
) -> tuple[list[str], sparse.csr_matrix]:
    """Category ids and their PPMI matrix over session co-occurrence.

    Each session adds 1/(m - 1) to each ordered pair of its m categories, so one long session
    weighs as much as a short one. Categories in fewer than ``min_count`` multi-category
    sessions are left out (they fall back to hashed vectors).
    """
    multi = [b for b in baskets if len(b) >= 2]
    seen = Counter(c for b in multi for c in b)
    ids = sorted(c for c, n in seen.items() if n >= min_count)
    index = {c: i for i, c in enumerate(ids)}
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    for basket in multi:
        members = [index[c] for c in basket if c in index]
        m = len(members)
        if m < 2:
            continue
        w = 1.0 / (m - 1)
        for a in members:
            for b in members:
                if a != b:
                    rows.append(a)
                    cols.append(b)
                    vals.append(w)
    n = len(ids)
    counts = sparse.coo_matrix((vals, (rows, cols)), shape=(n, n)).tocsr()
    counts.sum_duplicates()
    total = counts.sum()
    if n == 0 or total <= 0:
        return ids, sparse.csr_matrix((n, n))
    row_sum = np.asarray(counts.sum(axis=1)).ravel()
    col_sum = np.asarray(counts.sum(axis=0)).ravel()
    context = col_sum**alpha
    context /= context.sum()
    coo = counts.tocoo()
    pmi = np.log((coo.data / total) / ((row_sum[coo.row] / total) * context[coo.col]))
    positive = pmi > 0
    ppmi = sparse.coo_matrix(
        (pmi[positive], (coo.row[positive], coo.col[positive])), shape=(n, n)
    ).tocsr()
    return ids, ppmi


def learn_embeddings(
    events: Iterable[EventLike], dim: int = EMBEDDING_DIM, min_count: int = 2, seed: int = 0
) -> CategoryEmbeddings:
    """Unit category vectors of length ``dim`` from time-sorted events (the train period)."""
    ids, ppmi = ppmi_matrix(session_baskets(events), min_count=min_count)
    n = len(ids)
    if n < 2 or ppmi.nnz == 0:
        return CategoryEmbeddings.empty()
    k = min(dim, n - 1)
    if n <= 4 * dim:
        u, s, _ = np.linalg.svd(ppmi.toarray())
        u, s = u[:, :k], s[:k]
    else:
        u, s, _ = randomized_svd(ppmi, n_components=k, n_iter=8, random_state=seed)
    # Deterministic signs: the largest-magnitude entry of each component is positive.
    signs = np.sign(u[np.argmax(np.abs(u), axis=0), np.arange(k)])
    signs[signs == 0] = 1.0
    vectors = np.zeros((n, dim))
    vectors[:, :k] = u * signs * np.sqrt(s)
    norms = np.linalg.norm(vectors, axis=1)
    useful = norms > 1e-9  # a category with no positive PMI has no learned direction
    vectors = vectors[useful] / norms[useful, None]
    return CategoryEmbeddings(
        [c for c, ok in zip(ids, useful, strict=True) if ok], vectors.astype(np.float32)
    )
