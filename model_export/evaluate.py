"""Evaluate an existing bundle on an event log, the way the worker would score it.

onnxruntime (through ``streams.model.bundle``) and numpy only: no TensorFlow, no scikit-learn. The
baselines are re-applied from the parameters stored in the bundle's metadata.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from model_export import baselines, metrics
from model_export.dataset import build_dataset, read_events, read_truth
from streams.errors import DataError, ModelCorruptError
from streams.model.bundle import load_bundle
from streams.progress import Progress

PREDICT_CHUNK = 65_536


def evaluate_bundle(
    model_dir: Path,
    events_path: Path,
    *,
    truth_path: Path | None = None,
    horizon_s: float | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Metrics of the bundle and its stored baselines on every labelled snapshot of the log.

    ``progress`` shows reading, the feature replay and scoring on stderr (``streams.progress``).
    """
    model = load_bundle(Path(model_dir))
    horizon = float(horizon_s if horizon_s is not None else model.metadata["horizon_seconds"])
    event_log = read_events(events_path, progress=progress)
    data = build_dataset(event_log.events, horizon, model.embeddings, progress=progress)
    if len(data) == 0:
        raise DataError(f"{events_path}: no labelled snapshots (is the log shorter than H?)")
    chunks = []
    with Progress("score", len(data), unit="snapshots", enabled=progress) as bar:
        for i in range(0, len(data), PREDICT_CHUNK):
            chunks.append(model.predict(data.X[i : i + PREDICT_CHUNK]))
            bar.update(min(i + PREDICT_CHUNK, len(data)))
    probs = np.concatenate(chunks)
    result: dict[str, Any] = {
        "model_version": model.model_version,
        "model_path": str(model.path),
        "events": str(events_path),
        "lines": event_log.lines,
        "valid_events": len(event_log.events),
        "rejected": event_log.rejected,
        "horizon_seconds": horizon,
        "model": metrics.summary(data.y, probs),
        "baselines": {},
    }
    params = model.metadata.get("baseline_params", {})
    try:
        if "logistic_regression" in params:
            p_lr = baselines.predict_logistic_regression(params["logistic_regression"], data.X)
            result["baselines"]["logistic_regression"] = metrics.summary(data.y, p_lr)
        if "gradient_boosting" in params:
            p_gb = baselines.predict_gradient_boosting(params["gradient_boosting"], data.X)
            result["baselines"]["gradient_boosting"] = metrics.summary(data.y, p_gb)
        if "heuristic" in params:
            p_h = baselines.predict_heuristic(params["heuristic"], data.X)
            result["baselines"]["heuristic"] = {
                "name": params["heuristic"]["name"],
                **metrics.summary(data.y, p_h),
            }
    except (KeyError, ValueError, TypeError) as exc:
        raise ModelCorruptError(
            f"bundle file {model.path / 'metadata.json'} has unusable baseline_params: {exc}"
        ) from None
    if truth_path is not None:
        truth = read_truth(truth_path)
        scores = np.array([truth.get(e, np.nan) for e in data.event_ids.tolist()])
        known = ~np.isnan(scores)
        auc = metrics.roc_auc(data.y[known], scores[known]) if known.any() else math.nan
        result["oracle_roc_auc"] = None if math.isnan(auc) else round(auc, 6)
        result["oracle_rows"] = int(known.sum())
    return result


def format_table(result: dict[str, Any]) -> str:
    """The result as a fixed-width table, one row per scorer."""
    cols = ("roc_auc", "pr_auc", "log_loss", "ece", "brier")
    rows: list[tuple[str, dict[str, Any]]] = [("model", result["model"])]
    for name, m in result["baselines"].items():
        label = f"{name} ({m['name']})" if "name" in m else name
        rows.append((label, m))
    if result.get("oracle_roc_auc") is not None:
        rows.append(("oracle (true intent)", {"roc_auc": result["oracle_roc_auc"]}))
    width = max(len(r[0]) for r in rows) + 2
    lines = ["scorer".ljust(width) + "".join(c.rjust(10) for c in cols)]
    for label, m in rows:
        cells = "".join(
            (f"{m[c]:.4f}" if isinstance(m.get(c), float) else "-").rjust(10) for c in cols
        )
        lines.append(label.ljust(width) + cells)
    m = result["model"]
    lines.append(
        f"rows {m['rows']}, positives {m['positives']} (base rate {m['base_rate']}), "
        f"horizon {result['horizon_seconds']:g} s"
    )
    return "\n".join(lines)
