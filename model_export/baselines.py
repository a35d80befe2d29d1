"""Baselines the model must beat, applied with numpy (``fit_baselines`` fits them).

- ``logistic_regression``: standardised features, scikit-learn's L2 logistic regression.
- ``heuristic``: the best single simple rule on the TRAIN split (by ROC-AUC), turned into a
  probability by Platt scaling on train.
- ``gradient_boosting``: scikit-learn's HistGradientBoostingClassifier, its hyperparameters and
  number of trees chosen on the time-ordered tuning slice; stored as plain arrays of nodes and
  applied here by walking the trees in numpy.

Fitting needs scikit-learn; applying them is plain numpy on parameters stored in the bundle's
metadata, so ``intentflow evaluate`` can compare against them on any log without retraining.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from streams.features import FEATURE_NAMES

# name -> feature column it ranks by (higher = more likely to purchase).
HEURISTICS: dict[str, str] = {
    "cart_in_session": "session_carts_log",
    "item_in_cart": "item_in_cart",
    "carts_last_30min": "count_short_add_to_cart_log",
    "carts_last_day": "count_long_add_to_cart_log",
    "category_affinity": "category_share",
    "item_revisits": "item_interactions_log",
    "session_depth": "session_events_log",
}


def sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(z, -60, 60))))


def _columns(params: dict[str, Any], X: np.ndarray) -> np.ndarray:  # noqa: N803
    """The columns a baseline was fitted on: the first ``columns`` (the dense features; the
    recent sequence after them is for the sequence encoder only), or all for older bundles."""
    x = np.asarray(X, dtype=np.float64)
    n = int(params["columns"]) if "columns" in params else x.shape[1]
    return x[:, :n]


def predict_logistic_regression(params: dict[str, Any], X: np.ndarray) -> np.ndarray:  # noqa: N803
    z = (_columns(params, X) - np.asarray(params["mean"])) / np.asarray(params["scale"])
    return sigmoid(z @ np.asarray(params["coef"]) + params["intercept"])


def predict_heuristic(params: dict[str, Any], X: np.ndarray) -> np.ndarray:  # noqa: N803
    column = FEATURE_NAMES.index(params["feature"])
    return sigmoid(params["a"] * np.asarray(X[:, column], dtype=np.float64) + params["b"])


def predict_gradient_boosting(params: dict[str, Any], X: np.ndarray) -> np.ndarray:  # noqa: N803
    """Probabilities of the stored trees: sigmoid(baseline + sum of the leaf values reached).

    Each tree is ``[feature, threshold, left, right, is_leaf, value]`` arrays over its nodes
    (root 0); a row goes left when its value is <= the threshold, or is NaN and the node sends
    missing values left, exactly as scikit-learn's predictor does.
    """
    x = _columns(params, X)
    raw = np.full(x.shape[0], float(params["baseline"]))
    rows = np.arange(x.shape[0])
    for tree in params["trees"]:
        feature = np.asarray(tree["feature"], dtype=np.intp)
        threshold = np.asarray(tree["threshold"], dtype=np.float64)
        left = np.asarray(tree["left"], dtype=np.intp)
        right = np.asarray(tree["right"], dtype=np.intp)
        leaf = np.asarray(tree["is_leaf"], dtype=bool)
        missing_left = np.asarray(tree["missing_left"], dtype=bool)
        node = np.zeros(x.shape[0], dtype=np.intp)
        for _ in range(int(tree["depth"])):
            value = x[rows, feature[node]]
            go_left = (value <= threshold[node]) | (np.isnan(value) & missing_left[node])
            node = np.where(leaf[node], node, np.where(go_left, left[node], right[node]))
        raw += np.asarray(tree["value"], dtype=np.float64)[node]
    return sigmoid(raw)
