"""Baselines the model must beat, applied with numpy (``fit_baselines`` fits them).

- ``logistic_regression``: standardised features, scikit-learn's L2 logistic regression.
- ``heuristic``: the best single simple rule on the TRAIN split (by ROC-AUC), turned into a
  probability by Platt scaling on train.

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


def predict_logistic_regression(params: dict[str, Any], X: np.ndarray) -> np.ndarray:  # noqa: N803
    z = (np.asarray(X, dtype=np.float64) - np.asarray(params["mean"])) / np.asarray(params["scale"])
    return sigmoid(z @ np.asarray(params["coef"]) + params["intercept"])


def predict_heuristic(params: dict[str, Any], X: np.ndarray) -> np.ndarray:  # noqa: N803
    column = FEATURE_NAMES.index(params["feature"])
    return sigmoid(params["a"] * np.asarray(X[:, column], dtype=np.float64) + params["b"])
