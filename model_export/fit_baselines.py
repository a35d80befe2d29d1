"""Fitting the baselines with scikit-learn (training only; see ``baselines`` for applying)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from model_export import metrics
from model_export.baselines import HEURISTICS
from streams.features import FEATURE_NAMES


def fit_logistic_regression(X: np.ndarray, y: np.ndarray, seed: int = 0) -> dict[str, Any]:  # noqa: N803
    """Standardise, then fit; returns the parameters as JSON-ready lists."""
    scaler = StandardScaler().fit(X)
    clf = LogisticRegression(C=1.0, max_iter=5000, random_state=seed)
    clf.fit(scaler.transform(X), y)
    return {
        "mean": scaler.mean_.tolist(),
        "scale": scaler.scale_.tolist(),
        "coef": clf.coef_.ravel().tolist(),
        "intercept": float(clf.intercept_[0]),
    }


def fit_heuristic(X: np.ndarray, y: np.ndarray) -> dict[str, Any]:  # noqa: N803
    """Pick the rule with the best train ROC-AUC, then Platt-scale it on train."""
    train_auc = {
        name: metrics.roc_auc(y, X[:, FEATURE_NAMES.index(col)]) for name, col in HEURISTICS.items()
    }
    name = max(train_auc, key=lambda k: (np.nan_to_num(train_auc[k], nan=0.0), k))
    column = FEATURE_NAMES.index(HEURISTICS[name])
    platt = LogisticRegression(C=1e6, max_iter=1000).fit(X[:, [column]].astype(np.float64), y)
    return {
        "name": name,
        "feature": HEURISTICS[name],
        "a": float(platt.coef_[0, 0]),
        "b": float(platt.intercept_[0]),
        "train_roc_auc": {k: round(v, 6) for k, v in train_auc.items()},
    }


# The grid searched on the tuning slice; the number of trees is chosen there too (up to
# GB_MAX_TREES), from the staged predictions of one fit per grid point.
GB_GRID: tuple[dict[str, Any], ...] = (
    {"max_leaf_nodes": 7, "min_samples_leaf": 200, "l2_regularization": 1.0},
    {"max_leaf_nodes": 15, "min_samples_leaf": 400, "l2_regularization": 1.0},
)
GB_LEARNING_RATE = 0.1
GB_MAX_TREES = 150


def fit_gradient_boosting(
    X: np.ndarray,  # noqa: N803
    y: np.ndarray,
    X_tune: np.ndarray,  # noqa: N803
    y_tune: np.ndarray,
    seed: int = 0,
) -> dict[str, Any]:
    """HistGradientBoosting: every choice (grid point, number of trees) by log loss on the
    later, time-ordered tuning slice for a fit on (X, y); then, like the network, fitted again
    with those choices on (X, y) and the tuning slice together. JSON-ready trees and the
    search."""
    # One OpenMP thread: on the shared 2-core machine its threads spin against other processes,
    # and one thread fitted 4x faster than two.
    with threadpool_limits(1):
        return _fit_gradient_boosting(X, y, X_tune, y_tune, seed)


def _fit_gradient_boosting(
    X: np.ndarray,  # noqa: N803
    y: np.ndarray,
    X_tune: np.ndarray,  # noqa: N803
    y_tune: np.ndarray,
    seed: int,
) -> dict[str, Any]:
    best: tuple[float, int, dict[str, Any], HistGradientBoostingClassifier] | None = None
    searched = []
    for point in GB_GRID:
        clf = HistGradientBoostingClassifier(
            learning_rate=GB_LEARNING_RATE,
            max_iter=GB_MAX_TREES,
            early_stopping=False,
            random_state=seed,
            **point,
        ).fit(X, y)
        losses = [metrics.log_loss(y_tune, p[:, 1]) for p in clf.staged_predict_proba(X_tune)]
        n_trees = int(np.argmin(losses)) + 1
        loss = round(losses[n_trees - 1], 6)
        searched.append({**point, "best_trees": n_trees, "tune_log_loss": loss})
        if best is None or losses[n_trees - 1] < best[0]:
            best = (losses[n_trees - 1], n_trees, point, clf)
    assert best is not None
    _, n_trees, point, _ = best
    clf = HistGradientBoostingClassifier(
        learning_rate=GB_LEARNING_RATE,
        max_iter=n_trees,
        early_stopping=False,
        random_state=seed,
        **point,
    ).fit(np.concatenate([X, X_tune]), np.concatenate([y, y_tune]))
    return {
        **point,
        "learning_rate": GB_LEARNING_RATE,
        "trees_kept": n_trees,
        "search": searched,
        "baseline": float(np.ravel(clf._baseline_prediction)[0]),
        "trees": [_tree(predictors[0]) for predictors in clf._predictors[:n_trees]],
    }


def _tree(predictor: Any) -> dict[str, Any]:
    nodes = predictor.nodes
    if nodes["is_categorical"].any():  # never: every feature is numeric
        raise ValueError("categorical splits are not supported by predict_gradient_boosting")
    return {
        "feature": nodes["feature_idx"].tolist(),
        "threshold": nodes["num_threshold"].tolist(),
        "left": nodes["left"].tolist(),
        "right": nodes["right"].tolist(),
        "is_leaf": nodes["is_leaf"].astype(int).tolist(),
        "missing_left": nodes["missing_go_to_left"].astype(int).tolist(),
        "value": nodes["value"].tolist(),
        "depth": int(nodes["depth"].max()),
    }
