"""The human part of a bundle: ``report.md`` with ROC and reliability plots (PNG).

Plots use matplotlib's object API (``Figure``, Agg canvas): no pyplot, no global backend.
The model and its baselines share axes, so one glance says whether the model earns its keep
and whether its probabilities mean what they say.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from model_export import metrics

MIN_BIN_ROWS = 30  # reliability points from fewer rows are noise, not miscalibration
ROC_PNG = "roc.png"
CALIBRATION_PNG = "calibration.png"
_COLORS = {
    "model": "#1f77b4",
    "logistic_regression": "#ff7f0e",
    "heuristic": "#2ca02c",
    "oracle": "#7f7f7f",
}


def plot_roc(y: np.ndarray, scores: Mapping[str, np.ndarray], path: Path, title: str) -> None:
    """ROC curves of every scorer on the same rows."""
    fig = Figure(figsize=(6, 6), dpi=110)
    ax = fig.subplots()
    for name, p in scores.items():
        fpr, tpr = metrics.roc_curve(y, p)
        auc = metrics.roc_auc(y, p)
        style = "--" if name == "oracle" else "-"
        ax.plot(fpr, tpr, style, color=_COLORS.get(name), lw=2, label=f"{name} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], ":", color="black", lw=1, label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)


def plot_calibration(
    y: np.ndarray, scores: Mapping[str, np.ndarray], path: Path, title: str
) -> None:
    """Reliability diagram (observed frequency against mean prediction per bin) over a
    histogram of the predictions, on a log scale so the rare high scores stay visible.

    Bins with fewer than MIN_BIN_ROWS rows are not drawn, and both axes zoom to the populated
    range (purchase probabilities within an hour are mostly small)."""
    fig = Figure(figsize=(6, 7.5), dpi=110)
    ax, hist = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], ":", color="black", lw=1, label="perfectly calibrated")
    upper = 0.0
    for name, p in scores.items():
        if name == "oracle":
            continue
        rel = metrics.reliability(y, p)
        mp, obs = np.asarray(rel["mean_predicted"]), np.asarray(rel["observed"])
        ok = np.asarray(rel["count"]) >= MIN_BIN_ROWS
        ece = metrics.ece(y, p)
        ax.plot(mp[ok], obs[ok], "o-", color=_COLORS.get(name), label=f"{name} (ECE {ece:.3f})")
        hist.hist(p, bins=40, range=(0, 1), histtype="step", color=_COLORS.get(name), lw=1.5)
        if ok.any():
            upper = max(upper, float(np.max(mp[ok])), float(np.max(obs[ok])))
    top = min(1.0, max(0.2, math.ceil(upper * 1.15 * 10) / 10))
    ax.set(ylabel="observed purchase rate", xlim=(0, top), ylim=(0, top))
    ax.text(
        0.98,
        0.02,
        f"15 equal-width bins; bins under {MIN_BIN_ROWS} rows hidden",
        transform=ax.transAxes,
        ha="right",
        va="bottom",
        fontsize=8,
        color="dimgray",
    )
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    hist.set(xlabel="predicted probability", ylabel="rows", yscale="log", xlim=(0, top))
    hist.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def metrics_table(rows: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Markdown table lines: one row per scorer."""
    cols = ("roc_auc", "pr_auc", "log_loss", "ece", "brier")
    lines = ["| scorer | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, m in rows.items():
        lines.append(f"| {name} | " + " | ".join(_fmt(m.get(c)) for c in cols) + " |")
    return lines


def _iso(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat() if ts is not None else "n/a"


def _interval(values: list[float] | None) -> str:
    return f"[{values[0]:.4f}, {values[1]:.4f}]" if values else "n/a"


def _card_lines(metadata: Mapping[str, Any]) -> list[str]:
    """The model card: intended use, metrics with intervals, importance, limitations."""
    info = metadata.get("card")
    if not info:
        return []
    intervals = info["intervals"]
    pct = f"{100 * intervals['confidence']:.0f}%"
    lines = [
        "## Model card",
        "",
        "**Intended use.** Ranking and targeting shoppers by their probability of purchasing "
        f"within {metadata['horizon_seconds'] / 60:g} minutes of an event, as a calibrated "
        "probability for marketing services (offers, reminders, bidding), re-scored at every "
        "event. Not for decisions about individuals with legal or similarly significant "
        "effects, and not for shoppers or sites unlike the training data without "
        "re-evaluating (`intentflow evaluate` on their log).",
        "",
        "**Training data.** The event log named under Data below: point-in-time snapshots "
        "(features from events up to each snapshot only), labels from the following horizon, "
        "a time split with an embargo of one horizon.",
        "",
        f"**Metrics with {pct} intervals** (bootstrap over the {intervals['users']} validation "
        f"users, {intervals['samples']} resamples, all of a user's rows together; the "
        "difference column is paired: model minus that scorer on the same resamples):",
        "",
        f"| scorer | ROC-AUC {pct} | ECE {pct} | model minus scorer, ROC-AUC {pct} |",
        "|---|---|---|---|",
    ]
    for name, entry in intervals["scorers"].items():
        lines.append(
            f"| {name} | {_interval(entry['roc_auc'])} | {_interval(entry['ece'])} | "
            f"{_interval(entry.get('model_minus_this_roc_auc'))} |"
        )
    lines += [
        "",
        "The reliability diagram above is the calibration plot (the served model's "
        "probabilities against the observed purchase rate, per bin).",
        "",
        "**What matters most** (permutation importance on validation: the ROC-AUC the served "
        "model loses when one feature group's columns are shuffled across rows; the group "
        "names are the reason codes):",
        "",
        "| feature group | ROC-AUC lost |",
        "|---|---|",
        *(f"| `{g['group']}` | {g['roc_auc_drop']:+.4f} |" for g in info["importance"]),
        "",
        "**Known limitations.** Users' rows are autocorrelated and few users carry many rows, "
        "so intervals are wide on small logs. Behaviour drifts from day to day (on the Taobao "
        "sample, leaving out the latest 15% of the train period costs a logistic regression "
        "0.02 ROC-AUC), so retrain often and watch the drift metrics. Lifetime counters grow "
        "with a profile's age; only their ratio is a feature. A profile written before format 3 "
        "carries no item history (its items count as touched at its clock). The Taobao "
        "sample has no prices, so the price features are constant there.",
        "",
    ]
    return lines


def _gradient_boosting_line(params: Mapping[str, Any] | None) -> list[str]:
    if not params:
        return []
    searched = "; ".join(
        f"{p['max_leaf_nodes']} leaves, min {p['min_samples_leaf']} rows per leaf: best "
        f"{p['best_trees']} trees, tuning log loss {p['tune_log_loss']:.4f}"
        for p in params["search"]
    )
    return [
        f"- Gradient boosting (HistGradientBoosting, learning rate {params['learning_rate']:g}): "
        f"{searched}; kept {params['max_leaf_nodes']} leaves and {params['trees_kept']} trees, "
        "fitted again on all train rows"
    ]


def write_report(
    out_dir: Path, metadata: Mapping[str, Any], y: np.ndarray, scores: Mapping[str, np.ndarray]
) -> None:
    """Write roc.png, calibration.png and report.md into ``out_dir``."""
    horizon_min = metadata["horizon_seconds"] / 60
    title = f"validation, purchase within {horizon_min:g} min"
    plot_roc(y, scores, out_dir / ROC_PNG, f"ROC: {title}")
    plot_calibration(y, scores, out_dir / CALIBRATION_PNG, f"Reliability: {title}")

    val = metadata["metrics"]["validation"]
    base = metadata["metrics"]["baselines"]
    training = metadata["training"]
    selection = metadata["selection"]
    calibration = metadata["calibration"]
    rows: dict[str, Mapping[str, Any]] = {
        f"**model: {selection['chosen']}, calibrated, served as ONNX**": val
    }
    for cand in selection["candidates"]:
        rows[f"candidate {cand['name']} (fit rows only, uncalibrated)"] = cand[
            "validation_uncalibrated"
        ]
    for name, m in base.items():
        rows[f"{name}: {m['name']}" if "name" in m else name] = m
    oracle = val.get("oracle_roc_auc")
    lines = [
        f"# Model report: {metadata['model_version']}",
        "",
        f"Predicts whether a user purchases within **{horizon_min:g} minutes** after a "
        f"non-purchase event. Trained on `{training['source']}`, validated on the last "
        f"{100 * (1 - training['split']['quantile']):.0f}% of snapshot times.",
        "",
        "![ROC curves](roc.png)",
        "",
        "![Reliability diagram](calibration.png)",
        "",
        f"## Validation metrics ({val['rows']} rows, {val['positives']} positives, "
        f"base rate {_fmt(val['base_rate'])})",
        "",
        *metrics_table(rows),
        "",
    ]
    if oracle is not None:
        ratio = val["roc_auc"] / oracle if oracle else None
        lines += [
            f"Oracle ROC-AUC (the simulator's true intent as the score, same rows): "
            f"**{oracle:.4f}**; the model reaches {_fmt(ratio)} of it.",
            "",
        ]
    lines += _card_lines(metadata)
    lines += [
        "## Data",
        "",
        f"- Events: {training['events']} valid of {training['lines']} lines "
        f"(rejected: {training['rejected'] or 'none'}), "
        f"{_iso(training['time_range']['start'])} .. {_iso(training['time_range']['end'])}",
        f"- Split boundary {_iso(training['split']['boundary'])}; train rows "
        f"{training['rows']} ({training['positives']} positive), of which the last "
        f"{training['tuning_rows']} ({training['tuning_positives']} positive) are the tuning "
        "slice: early stopping, the choice of network, the gradient-boosting grid and "
        "number of trees, and the calibration are all decided there, never on validation",
        f"- Category embeddings: {metadata['embeddings']['categories']} categories, "
        f"{metadata['embeddings']['method']}, from train-period events only",
        f"- Class imbalance: {training['class_weighting']}",
        f"- Model: {training['network']}; Adam {training['learning_rate']:g}, "
        f"batch {training['batch_size']}, best epoch {training['best_epoch']} of "
        f"{training['epochs_run']} run (early stopping on the tuning slice, patience "
        f"{training.get('patience', '?')}, seed {training['seed']})"
        + (
            f", then fitted again on all {metadata['refit']['rows']} train rows for "
            f"{metadata['refit']['epochs']} epochs"
            if metadata.get("refit", {}).get("done")
            else ""
        ),
        f"- Selection: {selection['rule']}; chose **{selection['chosen']}**",
        *_gradient_boosting_line(metadata.get("baseline_params", {}).get("gradient_boosting")),
        f"- Calibration: {calibration['method']}: a = {calibration['a']:.4f}, "
        f"c = {calibration['c']:+.4f}; tuning-slice ECE {calibration['tune_ece_before']:.4f} "
        f"-> {calibration['tune_ece_after']:.4f}",
        "",
        "| candidate | network | tuning ROC-AUC | tuning log loss | best epoch |",
        "|---|---|---|---|---|",
        *(
            f"| {c['name']} | {c['network']} | {_fmt(c['tune']['roc_auc'])} | "
            f"{_fmt(c['tune']['log_loss'])} | {c['best_epoch']} of {c['epochs_run']} |"
            for c in selection["candidates"]
        ),
        "",
        "## Export",
        "",
        f"- {metadata['export']['method']}, opset {metadata['export']['opset']}; "
        f"max |Keras - onnxruntime| on {metadata['parity']['rows']} validation rows: "
        f"{metadata['parity']['max_abs_diff']:.2e} (limit {metadata['parity']['tolerance']:g})",
        f"- Timings: dataset {metadata['timings']['dataset_seconds']:.1f} s, train "
        f"{metadata['timings']['train_seconds']:.1f} s, baselines "
        f"{metadata['timings'].get('baselines_seconds', 0.0):.1f} s, export "
        f"{metadata['timings']['export_seconds']:.1f} s",
        f"- Feature spec {metadata['feature_version']} / {metadata['feature_spec_hash'][:12]}, "
        f"{len(metadata['feature_names'])} features",
        "",
    ]
    (out_dir / "report.md").write_text("\n".join(lines), encoding="utf-8")
