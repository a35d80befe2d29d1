"""Fit the exploration arms of a bundle at train time: k-means clusters of the category
embeddings, and the population prior of each arm given a user's interest shares.

The prior is fitted on organic behaviour: at the end of each day of the log, a user's interest
shares over the arms (from the same profile code the worker runs) against whether they engaged
with each arm the next day. One logistic regression per arm over the shares (L2-regularised,
numpy gradient descent): users who like A and B tend to engage with C, so C's prior is higher
for them. Its strength is in pseudo-observations of the Beta posterior.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from streams import features
from streams.features.arms import Arms, kmeans
from streams.features.embeddings import CategoryEmbeddings
from streams.features.explore import ENGAGEMENTS

DAY_S = 86_400.0
DEFAULT_ARMS = 20
DEFAULT_PRIOR_STRENGTH = 2.0


def cluster_categories(
    embeddings: CategoryEmbeddings, k: int = DEFAULT_ARMS, seed: int = 0
) -> tuple[list[list[str]], np.ndarray]:
    """k-means (cosine) of the learned category vectors: each arm's categories (sorted) and
    the unit centroids."""
    k = min(k, len(embeddings))
    labels, centroids = kmeans(np.asarray(embeddings.matrix, dtype=np.float64), k, seed=seed)
    groups = [sorted(c for c, lab in zip(embeddings.ids, labels, strict=True) if lab == a)
              for a in range(k)]  # fmt: skip
    return groups, centroids


def _logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-2, steps: int = 400) -> np.ndarray:
    """Weights (bias first) of one L2 logistic regression per column of ``y``."""
    n, d = x.shape
    xb = np.hstack([np.ones((n, 1)), x])
    w = np.zeros((y.shape[1], d + 1))
    base = np.clip(y.mean(axis=0), 1e-3, 1 - 1e-3)
    w[:, 0] = np.log(base / (1 - base))
    lr = 1.0
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-np.clip(xb @ w.T, -30, 30)))
        grad = (p - y).T @ xb / n
        grad[:, 1:] += l2 * w[:, 1:]
        w -= lr * grad
    return w


def fit_arms(
    events: Iterable[features.EventLike],
    embeddings: CategoryEmbeddings,
    *,
    k: int = DEFAULT_ARMS,
    strength: float = DEFAULT_PRIOR_STRENGTH,
    seed: int = 0,
) -> Arms:
    """The arms of a bundle from its embeddings and the (time-sorted) training events."""
    groups, centroids = cluster_categories(embeddings, k, seed)
    k = len(groups)
    return fit_prior(Arms(groups, centroids, np.zeros((k, k + 1)), strength), events, embeddings)


def fit_prior(
    placeholder: Arms, events: Iterable[features.EventLike], embeddings: CategoryEmbeddings
) -> Arms:
    """``placeholder``'s arms with the population prior fitted on the (time-sorted) events;
    ``placeholder`` itself when they are too few to fit one."""
    k = len(placeholder)
    groups, centroids = placeholder.categories, placeholder.centroids
    strength = placeholder.prior_strength
    events = list(events)
    if not events:
        return placeholder
    t0 = events[0].ts
    profiles: dict[str, features.Profile] = {}
    day_shares: dict[tuple[str, int], np.ndarray] = {}
    engaged: dict[tuple[str, int], set[int]] = {}
    for e in events:
        day = int((e.ts - t0) // DAY_S)
        if e.category_id is not None and str(e.event_type) in ENGAGEMENTS:
            engaged.setdefault((e.user_id, day), set()).add(
                placeholder.arm_of(e.category_id, embeddings)
            )
        profile = profiles[e.user_id] = features.update(profiles.get(e.user_id), e)
        day_shares[(e.user_id, day)] = profile.weights  # type: ignore[assignment]
    xs, ys = [], []
    for (user, day), weights in day_shares.items():
        nxt = engaged.get((user, day + 1))
        if nxt is None and (user, day + 1) not in day_shares:
            continue  # no next day observed for this user
        xs.append(placeholder.shares(weights, embeddings))  # type: ignore[arg-type]
        y = np.zeros(k)
        y[list(nxt or ())] = 1.0
        ys.append(y)
    if len(xs) < 10:
        return placeholder
    weights_ = _logistic(np.asarray(xs), np.asarray(ys))
    return Arms(groups, centroids, weights_, strength)


def describe(arms: Arms) -> dict[str, object]:
    """A summary for the bundle metadata."""
    sizes: Sequence[int] = [len(c) for c in arms.categories]
    return {"arms": len(arms), "categories": int(sum(sizes)), "min_size": min(sizes),
            "max_size": max(sizes), "prior_strength": arms.prior_strength}  # fmt: skip


def fit_prior_from_exposures(
    arms: Arms, exposures: Sequence[tuple[np.ndarray, int, bool]], *, min_per_arm: int = 20
) -> Arms:
    """The prior refitted on logged exposures under a uniform policy (the uniform floor's
    purpose): per arm, P(success | shown, the user's shares). Arms with fewer than
    ``min_per_arm`` exposures keep their organic prior."""
    k = len(arms)
    weights = arms.prior_weights.copy()
    for a in range(k):
        rows = [(x, s) for x, arm, s in exposures if arm == a]
        if len(rows) < min_per_arm:
            continue
        x = np.asarray([r[0] for r in rows])
        y = np.asarray([[1.0 if r[1] else 0.0] for r in rows])
        weights[a] = _logistic(x, y, l2=5e-2)[0]
    return Arms(arms.categories, arms.centroids, weights, arms.prior_strength)
