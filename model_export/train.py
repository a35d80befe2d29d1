"""Train, evaluate, export and verify a model bundle from one event log.

Steps: read and sort the log; label snapshots; split by time; learn category embeddings from
the train period; replay the log through the feature code; fit the network candidates on the
train period but its last 15% (the tuning slice, later in time), choose one and calibrate it on
that slice (``model_export.selection``: the validation split is never used for any choice); fit
the baselines on the same train rows (logistic regression, gradient-boosted trees tuned on the
tuning slice, a one-feature heuristic); export to ONNX and check parity on the whole validation
split; write the bundle atomically, with the training reference of every feature (its mean,
the reference of reasons, and its histogram, the reference of drift:
``streams.features.reference``).

Class imbalance: no class weights or resampling. They trade calibration for recall, and the
scores are consumed as probabilities downstream. The output bias starts at the log-odds of the
training base rate instead, so training does not spend its first epochs learning the prior.
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import keras
import numpy as np
import onnx
import onnxruntime
import sklearn
import tensorflow as tf
import tf2onnx

from model_export import baselines, card, fit_baselines, metrics, report, selection
from model_export.dataset import (
    Dataset,
    build_dataset,
    label_events,
    read_events,
    read_truth,
    split_time,
    time_split,
)
from model_export.embeddings import learn_embeddings
from model_export.explore_prior import describe as describe_arms
from model_export.explore_prior import fit_arms
from model_export.export import OPSET, PARITY_TOLERANCE, check_parity, export_onnx, onnx_predict
from model_export.selection import TUNE_FRACTION, NetworkSpec
from streams.errors import DataError
from streams.features import EMBEDDING_DIM, FEATURE_NAMES, FEATURE_SPEC
from streams.features.reference import BINS, fit_reference
from streams.features.vector import N_DENSE_FEATURES
from streams.model.bundle import (
    EMBEDDINGS_FILE,
    INPUT_NAME,
    OUTPUT_NAME,
    REFERENCE_FILE,
    BundleWriter,
)

CLASS_WEIGHTING = "none (calibrated probabilities); output bias initialised to the train log-odds"


@dataclass(frozen=True)
class TrainConfig:
    events: Path
    out: Path
    truth: Path | None = None
    horizon_s: float = 3600.0
    epochs: int = 50
    seed: int = 0
    split: float = 0.7
    batch_size: int = 512
    patience: int = 4
    learning_rate: float = 3e-4
    l2: float = 3e-3  # kernel L2 penalty of both Dense layers
    dropout: float = 0.3  # after the hidden layer (identity at inference and in the export)
    threads: int = 2
    # Network candidates beside the configured (l2, dropout): the same head with this many times
    # the L2 penalty and dropout 0.5. The tuning slice chooses between them.
    candidates: tuple[float, ...] = (10.0,)
    # Fit the chosen network again on every train row (tuning slice included) for the epochs
    # early stopping chose; the calibration fitted before is folded into it.
    refit: bool = True
    wide: bool = True  # also a wide-and-deep candidate (the output reads the features too)
    # Also the sequence encoder (self-attention over the recent events). Off by default: on the
    # Taobao sample it lost to the feature MLP on the tuning slice and added a minute of training.
    sequence: bool = False
    gradient_boosting: bool = True  # fit the HistGradientBoosting baseline (the slowest step)
    # 0 silent; 1 progress bars (reading, features, epochs) on stderr; 2 the bars and Keras's
    # own line per epoch instead of the epochs bar (INTENTFLOW_LOG_LEVEL=debug)
    verbose: int = 0
    link: Path | None = None  # also point this symlink (e.g. models/current) at the bundle
    # ``out`` may contain "{model_version}", filled in once the model is exported, for example
    # models/bundles/{model_version}.


@dataclass(frozen=True)
class TrainResult:
    path: Path
    metadata: dict[str, Any]


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def _configure_tensorflow(threads: int, seed: int) -> None:
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # already initialised in this process (a second run): keep it
        pass
    tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(seed)


def _require_both_classes(name: str, data: Dataset, source: Path) -> None:
    positives = int(data.y.sum())
    if len(data) == 0 or positives == 0 or positives == len(data):
        raise DataError(
            f"{source}: the {name} split has {len(data)} rows and {positives} positives; it "
            "needs both classes (a longer log, a longer --horizon or another --split)"
        )


def _oracle(truth: dict[str, float], data: Dataset) -> tuple[float | None, int]:
    scores = np.array([truth.get(e, np.nan) for e in data.event_ids.tolist()], dtype=np.float64)
    known = ~np.isnan(scores)
    if not known.any():
        return None, 0
    auc = metrics.roc_auc(data.y[known], scores[known])
    return (None if math.isnan(auc) else round(auc, 6)), int(known.sum())


def train_bundle(cfg: TrainConfig, log: Callable[[str], None] = print) -> TrainResult:
    """Run the whole pipeline and write the bundle to ``cfg.out``."""
    t_start = time.perf_counter()
    bars = cfg.verbose >= 1
    event_log = read_events(cfg.events, progress=bars)
    events = event_log.events
    truth = read_truth(cfg.truth) if cfg.truth else None
    log(
        f"read {len(events)} valid events of {event_log.lines} lines from {cfg.events}"
        + (f" (rejected: {event_log.rejected})" if event_log.rejected else "")
    )

    keep, _ = label_events(events, cfg.horizon_s)
    all_ts = np.fromiter((e.ts for e in events), dtype=np.float64, count=len(events))
    boundary = split_time(all_ts[keep], cfg.split)
    embeddings = learn_embeddings([e for e in events if e.ts <= boundary], seed=cfg.seed)
    data = build_dataset(events, cfg.horizon_s, embeddings, progress=bars)
    train, val = time_split(data, cfg.split)
    _require_both_classes("train", train, cfg.events)
    _require_both_classes("validation", val, cfg.events)
    t_dataset = time.perf_counter() - t_start
    log(
        f"dataset: {len(data)} snapshots; train {len(train)} ({int(train.y.sum())} positive), "
        f"validation {len(val)} ({int(val.y.sum())} positive); "
        f"{len(embeddings)} category embeddings; {t_dataset:.1f} s"
    )

    # Networks: fitted on the train period but its tail; that later tail (the tuning slice)
    # stops them early, chooses one and calibrates it.
    t0 = time.perf_counter()
    _configure_tensorflow(cfg.threads, cfg.seed)
    n_fit = int(len(train) * (1 - TUNE_FRACTION))
    fit = (train.X[:n_fit], train.y[:n_fit])
    tune = (train.X[n_fit:], train.y[n_fit:])
    _require_both_classes("tuning slice", train.subset(np.arange(len(train)) >= n_fit), cfg.events)
    specs = [NetworkSpec("mlp", cfg.l2, cfg.dropout)]
    specs += [
        NetworkSpec(f"mlp_l2x{k:g}", cfg.l2 * k, max(cfg.dropout, 0.5)) for k in cfg.candidates
    ]
    if cfg.wide:
        specs.append(NetworkSpec("wide_and_deep", cfg.l2, cfg.dropout, wide=True))
    if cfg.sequence:
        specs.append(NetworkSpec("sequence", cfg.l2, cfg.dropout, sequence=True))
    fitted = []
    for spec in specs:
        keras.utils.set_random_seed(cfg.seed)
        net = selection.fit_network(
            spec,
            fit,
            tune,
            learning_rate=cfg.learning_rate,
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            patience=cfg.patience,
            verbose=cfg.verbose,
        )
        log(
            f"candidate {spec.name}: tuning slice roc_auc {net.tune['roc_auc']:.4f}, "
            f"log_loss {net.tune['log_loss']:.4f} (best epoch {net.best_epoch} of {net.epochs_run})"
        )
        fitted.append(net)
    chosen = selection.choose(fitted)
    candidate_val = {net.spec.name: selection.predict(net.model, val.X) for net in fitted}
    calibration = selection.calibration(chosen, tune)
    log(
        f"chose {chosen.spec.name} on the tuning slice; calibration sigmoid("
        f"{calibration['a']:.3f} * logit {calibration['c']:+.3f}): tuning-slice ECE "
        f"{calibration['tune_ece_before']:.4f} -> {calibration['tune_ece_after']:.4f}"
    )
    model = chosen.model
    if cfg.refit:
        keras.utils.set_random_seed(cfg.seed)
        model = selection.refit(
            chosen.spec,
            (train.X, train.y),
            epochs=chosen.best_epoch,
            learning_rate=cfg.learning_rate,
            batch_size=cfg.batch_size,
            verbose=cfg.verbose,
        )
    selection.fold_platt(model, calibration["a"], calibration["c"])
    p_keras = selection.predict(model, val.X)
    t_train = time.perf_counter() - t0
    log(f"networks took {t_train:.1f} s")

    # Baselines (same train rows, same validation rows)
    t0 = time.perf_counter()
    dense = N_DENSE_FEATURES  # the baselines read the dense features, not the sequence
    lr_params = fit_baselines.fit_logistic_regression(train.X[:, :dense], train.y, cfg.seed)
    lr_params["columns"] = dense
    heuristic_params = fit_baselines.fit_heuristic(train.X, train.y)
    p_lr = baselines.predict_logistic_regression(lr_params, val.X)
    p_heuristic = baselines.predict_heuristic(heuristic_params, val.X)
    gb_params: dict[str, Any] | None = None
    if cfg.gradient_boosting:
        gb_params = fit_baselines.fit_gradient_boosting(
            fit[0][:, :dense], fit[1], tune[0][:, :dense], tune[1], seed=cfg.seed
        )
        gb_params["columns"] = dense
        p_gb = baselines.predict_gradient_boosting(gb_params, val.X)
    t_baselines = time.perf_counter() - t0
    log(f"baselines took {t_baselines:.1f} s")

    with BundleWriter(cfg.out) as writer:
        t0 = time.perf_counter()
        model_path = writer.model_path
        export_onnx(
            model,
            model_path,
            metadata={
                "feature_spec_hash": FEATURE_SPEC.hash,
                "feature_version": FEATURE_SPEC.version,
            },
        )
        p_onnx = onnx_predict(model_path, val.X)
        max_diff = check_parity(p_keras, p_onnx)
        t_export = time.perf_counter() - t0
        log(f"exported ONNX opset {OPSET}; parity max |diff| {max_diff:.2e} on {len(val)} rows")

        writer.write_embeddings(embeddings)
        # The reference of reasons (the train mean) and of drift (train histograms).
        writer.write_reference(fit_reference(train.X))
        # Exploration arms: k-means clusters of the embeddings, prior fitted on the train period.
        arms = None
        if len(embeddings) >= 2:
            arms = fit_arms([e for e in events if e.ts <= boundary], embeddings, seed=cfg.seed)
            writer.write_arms(arms)
        created = datetime.now(UTC)
        model_version = f"{created:%Y%m%dT%H%M%SZ}-{writer.model_digest()[:8]}"
        validation = metrics.summary(val.y, p_onnx)  # what the worker will serve
        scores = {"model": p_onnx, "logistic_regression": p_lr, "heuristic": p_heuristic}
        baseline_metrics: dict[str, Any] = {"logistic_regression": metrics.summary(val.y, p_lr)}
        baseline_params: dict[str, Any] = {"logistic_regression": lr_params}
        if gb_params is not None:
            scores["gradient_boosting"] = p_gb
            baseline_metrics["gradient_boosting"] = metrics.summary(val.y, p_gb)
            baseline_params["gradient_boosting"] = gb_params
        if truth is not None:
            oracle_auc, oracle_rows = _oracle(truth, val)
            validation["oracle_roc_auc"] = oracle_auc
            validation["oracle_rows"] = oracle_rows
            if oracle_auc is not None and oracle_rows == len(val):
                scores["oracle"] = np.array([truth[e] for e in val.event_ids.tolist()])
        heuristic_metrics = {"name": heuristic_params["name"]}
        heuristic_metrics.update(metrics.summary(val.y, p_heuristic))
        baseline_metrics["heuristic"] = heuristic_metrics
        baseline_params["heuristic"] = heuristic_params
        metadata: dict[str, Any] = {
            "model_version": model_version,
            "created_at": created.isoformat(),
            "feature_version": FEATURE_SPEC.version,
            "feature_spec_hash": FEATURE_SPEC.hash,
            "feature_names": list(FEATURE_NAMES),
            "feature_spec": FEATURE_SPEC.to_dict(),
            "input_name": INPUT_NAME,
            "output_name": OUTPUT_NAME,
            "horizon_seconds": cfg.horizon_s,
            "embeddings": {
                "file": EMBEDDINGS_FILE,
                "method": "PPMI + truncated SVD over session co-occurrence",
                "dim": EMBEDDING_DIM,
                "categories": len(embeddings),
            },
            "arms": describe_arms(arms) if arms is not None else None,
            "reference": {
                "file": REFERENCE_FILE,
                "rows": len(train),
                "bins": BINS,
                "what": "train-split mean (the occlusion reference of reasons) and decile "
                "histograms (the reference of drift) of every feature",
                "feature_groups": {
                    group: [FEATURE_NAMES[c] for c in cols.tolist()]
                    for group, cols in FEATURE_SPEC.group_columns().items()
                },
            },
            "training": {
                "source": str(cfg.events),
                "truth": str(cfg.truth) if cfg.truth else None,
                "lines": event_log.lines,
                "events": len(events),
                "rejected": event_log.rejected,
                "time_range": {"start": data.t_start, "end": data.t_end},
                "time_range_iso": {"start": _iso(data.t_start), "end": _iso(data.t_end)},
                "split": {
                    "quantile": cfg.split,
                    "boundary": boundary,
                    "boundary_iso": _iso(boundary),
                    "embargo_seconds": cfg.horizon_s,
                },
                "snapshots": len(data),
                "rows": len(train),
                "positives": int(train.y.sum()),
                "early_stopping_rows": len(train) - n_fit,
                "tuning_rows": len(train) - n_fit,
                "tuning_positives": int(tune[1].sum()),
                "tuning_fraction": TUNE_FRACTION,
                "validation_rows": len(val),
                "validation_positives": int(val.y.sum()),
                "class_weighting": CLASS_WEIGHTING,
                "seed": cfg.seed,
                "epochs_max": cfg.epochs,
                "epochs_run": chosen.epochs_run,
                "best_epoch": chosen.best_epoch,
                "batch_size": cfg.batch_size,
                "learning_rate": cfg.learning_rate,
                "patience": cfg.patience,
                "l2": chosen.spec.l2,
                "dropout": chosen.spec.dropout,
                "network": chosen.spec.describe(),
            },
            "selection": {
                "rule": "highest ROC-AUC on the tuning slice (the last "
                f"{TUNE_FRACTION:.0%} of the train period, in time)",
                "chosen": chosen.spec.name,
                "candidates": [
                    {
                        "name": net.spec.name,
                        "network": net.spec.describe(),
                        "l2": net.spec.l2,
                        "dropout": net.spec.dropout,
                        "epochs_run": net.epochs_run,
                        "best_epoch": net.best_epoch,
                        "tune": net.tune,
                        "validation_uncalibrated": metrics.summary(
                            val.y, candidate_val[net.spec.name]
                        ),
                    }
                    for net in fitted
                ],
            },
            "calibration": calibration,
            "refit": {
                "done": cfg.refit,
                "rows": len(train) if cfg.refit else n_fit,
                "epochs": chosen.best_epoch,
            },
            "metrics": {"validation": validation, "baselines": baseline_metrics},
            "baseline_params": baseline_params,
            "parity": {
                "max_abs_diff": max_diff,
                "rows": len(val),
                "tolerance": PARITY_TOLERANCE,
            },
            "export": {"method": "tf2onnx.convert.from_keras", "opset": OPSET},
            "timings": {
                "dataset_seconds": round(t_dataset, 3),
                "train_seconds": round(t_train, 3),
                "baselines_seconds": round(t_baselines, 3),
                "export_seconds": round(t_export, 3),
            },
            "versions": _versions(),
        }
        t0 = time.perf_counter()
        served = {k: v for k, v in scores.items() if k != "oracle"}
        metadata["card"] = {
            "intervals": card.bootstrap_intervals(val.y, served, val.user_ids, seed=cfg.seed),
            "importance": card.permutation_importance(
                lambda x: onnx_predict(model_path, x),
                val.X,
                val.y,
                FEATURE_SPEC.group_columns(),
                seed=cfg.seed,
            ),
        }
        metadata["timings"]["card_seconds"] = round(time.perf_counter() - t0, 3)
        report.write_report(writer.staged, metadata, val.y, scores)
        metadata["timings"]["total_seconds"] = round(time.perf_counter() - t_start, 3)
        out = writer.publish(metadata, link=cfg.link)
    return TrainResult(out, metadata)


def _versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "tf2onnx": tf2onnx.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "scikit-learn": sklearn.__version__,
        "numpy": np.__version__,
    }
