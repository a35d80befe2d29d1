"""Train, evaluate, export and verify a model bundle from one event log.

Steps: read and sort the log; label snapshots; split by time; learn category embeddings from
the train period; replay the log through the feature code; fit the Keras model (early stopping
on the last 15% of the train period, so the validation split is never used for any choice);
fit the baselines; export to ONNX and check parity on the whole validation split; write the
bundle atomically, with the training reference of every feature (its mean, the reference of
reasons, and its histogram, the reference of drift: ``streams.features.reference``).

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

from model_export import baselines, fit_baselines, metrics, report
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
from model_export.export import OPSET, PARITY_TOLERANCE, check_parity, export_onnx, onnx_predict
from streams.errors import DataError
from streams.features import EMBEDDING_DIM, FEATURE_NAMES, FEATURE_SPEC
from streams.features.reference import BINS, fit_reference
from streams.model.bundle import (
    EMBEDDINGS_FILE,
    INPUT_NAME,
    OUTPUT_NAME,
    REFERENCE_FILE,
    BundleWriter,
)
from streams.progress import Progress

EARLY_STOPPING_FRACTION = 0.15
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


def build_model(
    x_train: np.ndarray,
    base_rate: float,
    learning_rate: float,
    l2: float = 0.0,
    dropout: float = 0.0,
) -> Any:
    """Normalization (adapted on train) -> Dense(64, relu) -> Dense(1, sigmoid), functional.

    Users' rows are strongly autocorrelated, so an unregularised MLP memorises users within an
    epoch; L2 and dropout keep it general (see the report for the measured effect).
    """
    inputs = keras.Input(shape=(x_train.shape[1],), name=INPUT_NAME, dtype="float32")
    norm = keras.layers.Normalization(name="normalize")
    norm.adapt(x_train)
    penalty = keras.regularizers.L2(l2) if l2 > 0 else None
    hidden = keras.layers.Dense(64, activation="relu", kernel_regularizer=penalty, name="hidden")(
        norm(inputs)
    )
    if dropout > 0:
        hidden = keras.layers.Dropout(dropout, name="dropout")(hidden)
    rate = min(max(base_rate, 1e-4), 1 - 1e-4)
    outputs = keras.layers.Dense(
        1,
        activation="sigmoid",
        kernel_regularizer=penalty,
        name=OUTPUT_NAME,
        bias_initializer=keras.initializers.Constant(math.log(rate / (1 - rate))),
    )(hidden)
    model = keras.Model(inputs=inputs, outputs=outputs, name="purchase_intent")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss="binary_crossentropy",
        metrics=[keras.metrics.AUC(name="auc")],
    )
    return model


class EpochProgress(keras.callbacks.Callback):
    """Advances a ``Progress`` bar at the end of each epoch, with the losses as its note."""

    def __init__(self, bar: Progress) -> None:
        super().__init__()
        self.bar = bar

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        logs = logs or {}
        shown = [f"{k} {logs[k]:.4f}" for k in ("loss", "val_loss", "val_auc") if k in logs]
        self.bar.update(epoch + 1, note=", ".join(shown))


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

    # Keras
    t0 = time.perf_counter()
    _configure_tensorflow(cfg.threads, cfg.seed)
    n_fit = int(len(train) * (1 - EARLY_STOPPING_FRACTION))
    x_fit, y_fit = train.X[:n_fit], train.y[:n_fit].astype(np.float32)
    x_es, y_es = train.X[n_fit:], train.y[n_fit:].astype(np.float32)
    model = build_model(
        train.X, float(train.y.mean()), cfg.learning_rate, l2=cfg.l2, dropout=cfg.dropout
    )
    stop = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=cfg.patience, restore_best_weights=True
    )
    with Progress("train", cfg.epochs, unit="epochs", enabled=cfg.verbose == 1) as bar:
        history = model.fit(
            x_fit,
            y_fit,
            validation_data=(x_es, y_es),
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            callbacks=[stop, EpochProgress(bar)],
            shuffle=True,
            verbose=2 if cfg.verbose >= 2 else 0,
        )
        val_losses = history.history["val_loss"]
        best_epoch = int(np.argmin(val_losses)) + 1
        if len(val_losses) < cfg.epochs:
            ran = len(val_losses)
            bar.update(ran, total=ran, note=f"early stop; best epoch {best_epoch}")
    p_keras = model.predict(val.X, batch_size=4096, verbose=0).reshape(-1)
    t_train = time.perf_counter() - t0

    # Baselines (same train rows, same validation rows)
    lr_params = fit_baselines.fit_logistic_regression(train.X, train.y, cfg.seed)
    heuristic_params = fit_baselines.fit_heuristic(train.X, train.y)
    p_lr = baselines.predict_logistic_regression(lr_params, val.X)
    p_heuristic = baselines.predict_heuristic(heuristic_params, val.X)

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
        created = datetime.now(UTC)
        model_version = f"{created:%Y%m%dT%H%M%SZ}-{writer.model_digest()[:8]}"
        validation = metrics.summary(val.y, p_onnx)  # what the worker will serve
        scores = {"model": p_onnx, "logistic_regression": p_lr, "heuristic": p_heuristic}
        if truth is not None:
            oracle_auc, oracle_rows = _oracle(truth, val)
            validation["oracle_roc_auc"] = oracle_auc
            validation["oracle_rows"] = oracle_rows
            if oracle_auc is not None and oracle_rows == len(val):
                scores["oracle"] = np.array([truth[e] for e in val.event_ids.tolist()])
        heuristic_metrics = {"name": heuristic_params["name"]}
        heuristic_metrics.update(metrics.summary(val.y, p_heuristic))
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
                "validation_rows": len(val),
                "validation_positives": int(val.y.sum()),
                "class_weighting": CLASS_WEIGHTING,
                "seed": cfg.seed,
                "epochs_max": cfg.epochs,
                "epochs_run": len(val_losses),
                "best_epoch": best_epoch,
                "batch_size": cfg.batch_size,
                "learning_rate": cfg.learning_rate,
                "l2": cfg.l2,
                "dropout": cfg.dropout,
            },
            "metrics": {
                "validation": validation,
                "baselines": {
                    "logistic_regression": metrics.summary(val.y, p_lr),
                    "heuristic": heuristic_metrics,
                },
            },
            "baseline_params": {
                "logistic_regression": lr_params,
                "heuristic": heuristic_params,
            },
            "parity": {
                "max_abs_diff": max_diff,
                "rows": len(val),
                "tolerance": PARITY_TOLERANCE,
            },
            "export": {"method": "tf2onnx.convert.from_keras", "opset": OPSET},
            "timings": {
                "dataset_seconds": round(t_dataset, 3),
                "train_seconds": round(t_train, 3),
                "export_seconds": round(t_export, 3),
            },
            "versions": _versions(),
        }
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
