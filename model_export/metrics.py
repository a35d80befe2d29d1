"""Classification metrics in plain numpy, so ``intentflow evaluate`` needs neither TensorFlow nor
scikit-learn. Tests check them against scikit-learn."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

ECE_BINS = 15
_EPS = 1e-7


def _check(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y).astype(bool).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels have {y.shape[0]} rows but scores have {p.shape[0]}")
    return y, p


def roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve (ties count half); NaN when only one class is present."""
    y, p = _check(y, p)
    n1 = int(y.sum())
    n0 = y.size - n1
    if n1 == 0 or n0 == 0:
        return math.nan
    order = np.argsort(p, kind="mergesort")
    _, inverse, counts = np.unique(p[order], return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    average_rank = (ends - counts + 1 + ends) / 2.0
    rank_sum = float(average_rank[inverse][y[order]].sum())
    return (rank_sum - n1 * (n1 + 1) / 2.0) / (n1 * n0)


def _ranked_counts(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True and false positives at each distinct threshold, highest score first."""
    order = np.argsort(-p, kind="mergesort")
    ys, ps = y[order], p[order]
    last = np.r_[np.flatnonzero(np.diff(ps)), ys.size - 1]
    tps = np.cumsum(ys)[last].astype(np.float64)
    fps = (last + 1) - tps
    return tps, fps, ps[last]


def pr_auc(y: np.ndarray, p: np.ndarray) -> float:
    """Average precision (the step-wise area under the precision-recall curve)."""
    y, p = _check(y, p)
    n1 = int(y.sum())
    if n1 == 0:
        return math.nan
    tps, fps, _ = _ranked_counts(y, p)
    precision = tps / (tps + fps)
    recall = tps / n1
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    """Mean binary cross-entropy, probabilities clipped to [1e-7, 1 - 1e-7]."""
    y, p = _check(y, p)
    p = np.clip(p, _EPS, 1 - _EPS)
    return float(-np.mean(np.where(y, np.log(p), np.log1p(-p))))


def reliability(y: np.ndarray, p: np.ndarray, bins: int = ECE_BINS) -> dict[str, list[float]]:
    """Per equal-width bin: mean predicted probability, observed frequency and row count."""
    y, p = _check(y, p)
    idx = np.minimum((p * bins).astype(np.intp), bins - 1)
    count = np.bincount(idx, minlength=bins).astype(np.float64)
    p_sum = np.bincount(idx, weights=p, minlength=bins)
    y_sum = np.bincount(idx, weights=y.astype(np.float64), minlength=bins)
    nz = count > 0
    mean_p = np.divide(p_sum, count, out=np.full(bins, np.nan), where=nz)
    freq = np.divide(y_sum, count, out=np.full(bins, np.nan), where=nz)
    return {"mean_predicted": mean_p.tolist(), "observed": freq.tolist(), "count": count.tolist()}


def ece(y: np.ndarray, p: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error: row-weighted mean |predicted - observed| over equal bins."""
    rel = reliability(y, p, bins)
    count = np.asarray(rel["count"])
    gap = np.abs(np.asarray(rel["mean_predicted"]) - np.asarray(rel["observed"]))
    nz = count > 0
    return float(np.sum(count[nz] * gap[nz]) / count.sum()) if count.sum() else math.nan


def roc_curve(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False and true positive rates at each distinct threshold, from (0, 0) to (1, 1)."""
    y, p = _check(y, p)
    tps, fps, _ = _ranked_counts(y, p)
    n1, n0 = max(int(y.sum()), 1), max(y.size - int(y.sum()), 1)
    return np.r_[0.0, fps / n0], np.r_[0.0, tps / n1]


def summary(y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    """All the metrics the bundle records, as plain floats (NaN becomes None for JSON)."""
    y, p = _check(y, p)
    values = {
        "roc_auc": roc_auc(y, p),
        "pr_auc": pr_auc(y, p),
        "log_loss": log_loss(y, p),
        "ece": ece(y, p),
        "brier": float(np.mean((p - y) ** 2)) if y.size else math.nan,
    }
    out: dict[str, Any] = {k: (None if math.isnan(v) else round(v, 6)) for k, v in values.items()}
    out["rows"] = int(y.size)
    out["positives"] = int(y.sum())
    out["base_rate"] = round(float(y.mean()), 6) if y.size else None
    return out
