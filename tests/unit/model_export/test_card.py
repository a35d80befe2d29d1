"""The model card's numbers: bootstrap intervals over users, permutation importance by group."""

from __future__ import annotations

import numpy as np

from model_export import metrics
from model_export.card import bootstrap_intervals, permutation_importance


def _scored(users: int, rows_per_user: int, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    user_ids = np.repeat([f"u{i}" for i in range(users)], rows_per_user)
    y = (rng.random(user_ids.size) < 0.2).astype(np.int8)
    good = np.clip(0.2 + 0.3 * y + rng.normal(0, 0.2, y.size), 0, 1)
    noise = rng.random(y.size)
    return y, good, noise, user_ids


def test_intervals_hold_the_estimate_and_shrink_with_more_users() -> None:
    y, good, noise, users = _scored(400, 20, 0)
    out = bootstrap_intervals(y, {"model": good, "noise": noise}, users, samples=100)
    assert out["users"] == 400 and out["samples"] == 100
    lo, hi = out["scorers"]["model"]["roc_auc"]
    assert lo < metrics.roc_auc(y, good) < hi
    diff = out["scorers"]["noise"]["model_minus_this_roc_auc"]
    assert diff[0] > 0.2  # the model is clearly better than noise
    assert "model_minus_this_roc_auc" not in out["scorers"]["model"]
    few = bootstrap_intervals(y[:800], {"model": good[:800]}, users[:800], samples=100)
    assert few["users"] == 40
    width = hi - lo
    few_lo, few_hi = few["scorers"]["model"]["roc_auc"]
    assert few_hi - few_lo > 2 * width


def test_the_bootstrap_resamples_users_not_rows() -> None:
    # Each user's rows share one label and one score: resampling users keeps every user's
    # rows together, so the interval is as wide as 30 independent users give, not 3,000 rows.
    rng = np.random.default_rng(1)
    users = np.repeat([f"u{i}" for i in range(30)], 100)
    y = np.repeat(rng.random(30) < 0.5, 100).astype(np.int8)
    p = np.repeat(rng.random(30), 100)
    lo, hi = bootstrap_intervals(y, {"model": p}, users, samples=200)["scorers"]["model"]["roc_auc"]
    assert hi - lo > 0.2


def test_permutation_importance_finds_the_group_the_model_reads() -> None:
    rng = np.random.default_rng(2)
    X = rng.normal(size=(5000, 4))
    y = (X[:, 0] + 0.3 * rng.normal(size=5000) > 0).astype(np.int8)

    def predict(x: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-3 * x[:, 0]))

    groups = {"used": np.array([0, 1]), "unused": np.array([2, 3])}
    out = permutation_importance(predict, X, y, groups)
    assert [g["group"] for g in out] == ["used", "unused"]
    assert out[0]["roc_auc_drop"] > 0.4 and out[1]["roc_auc_drop"] == 0.0
