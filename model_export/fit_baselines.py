"""Fitting the baselines with scikit-learn (training only; see ``baselines`` for applying)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

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
