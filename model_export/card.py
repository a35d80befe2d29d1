"""The model card's numbers: confidence intervals by bootstrap over users, and permutation
importance by feature group. numpy only (the predictor is passed in).

Rows of one user are strongly correlated, so the bootstrap resamples *users* (all of a user's
rows together), not rows: row resampling would give intervals far too narrow.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from model_export import metrics

BOOTSTRAP_SAMPLES = 200
CONFIDENCE = 0.95


def _user_rows(users: np.ndarray) -> list[np.ndarray]:
    _, inverse = np.unique(users, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.flatnonzero(np.diff(inverse[order])) + 1
    return np.split(order, bounds)


def bootstrap_intervals(
    y: np.ndarray,
    scores: Mapping[str, np.ndarray],
    users: np.ndarray,
    *,
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
) -> dict[str, Any]:
    """Per scorer: ROC-AUC and ECE with their central ``CONFIDENCE`` intervals over ``samples``
    resamples of the users, and the interval of the ROC-AUC difference from ``model`` (same
    resamples, so the comparison is paired)."""
    groups = _user_rows(np.asarray(users))
    rng = np.random.default_rng(seed)
    draws = [
        np.concatenate([groups[i] for i in rng.integers(0, len(groups), len(groups))])
        for _ in range(samples)
    ]
    auc = {
        name: np.array([metrics.roc_auc(y[d], p[d]) for d in draws]) for name, p in scores.items()
    }
    ece = {name: np.array([metrics.ece(y[d], p[d]) for d in draws]) for name, p in scores.items()}
    lo, hi = 100 * (1 - CONFIDENCE) / 2, 100 * (1 + CONFIDENCE) / 2
    out: dict[str, dict[str, Any]] = {}
    for name in scores:
        entry: dict[str, Any] = {
            "roc_auc": [round(float(np.nanpercentile(auc[name], q)), 4) for q in (lo, hi)],
            "ece": [round(float(np.nanpercentile(ece[name], q)), 4) for q in (lo, hi)],
        }
        if "model" in auc and name != "model":
            diff = auc["model"] - auc[name]
            entry["model_minus_this_roc_auc"] = [
                round(float(np.nanpercentile(diff, q)), 4) for q in (lo, hi)
            ]
        out[name] = entry
    return {"users": len(groups), "samples": samples, "confidence": CONFIDENCE, "scorers": out}


def permutation_importance(
    predict: Callable[[np.ndarray], np.ndarray],
    X: np.ndarray,  # noqa: N803
    y: np.ndarray,
    groups: Mapping[str, np.ndarray],
    *,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """ROC-AUC lost when one feature group's columns are shuffled together across rows (the
    rows' other features kept), largest loss first."""
    base = metrics.roc_auc(y, predict(X))
    rng = np.random.default_rng(seed)
    out = []
    for group, cols in groups.items():
        shuffled = X.copy()
        shuffled[:, cols] = X[rng.permutation(X.shape[0])][:, cols]
        drop = base - metrics.roc_auc(y, predict(shuffled))
        out.append({"group": group, "roc_auc_drop": round(float(drop), 4)})
    return sorted(out, key=lambda g: -g["roc_auc_drop"])
