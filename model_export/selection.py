"""Fitting the network candidates, choosing one, and calibrating it: every choice on the tuning
slice, never on the validation split.

The train period is cut in time: the first rows fit the networks (``fit``), the last
``TUNE_FRACTION`` of them (``tune``, strictly later) decide early stopping, which candidate is
exported (highest ROC-AUC on ``tune``), the gradient-boosting baseline's hyperparameters, and the
calibration. Calibration is Platt scaling of the chosen network's logit, ``sigmoid(a * z + c)``,
fitted on ``tune`` and folded into the output layer's weights (``a * w``, ``a * b + c``), so the
exported graph is unchanged in shape and the worker serves the calibrated probability as is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
from sklearn.linear_model import LogisticRegression

from model_export import metrics
from streams.features.profile import SEQ_CATEGORY_BUCKETS, SEQ_LEN
from streams.features.vector import N_DENSE_FEATURES, SEQUENCE_FIELDS, SEQUENCE_SCALES
from streams.model.bundle import INPUT_NAME, OUTPUT_NAME
from streams.progress import Progress

TUNE_FRACTION = 0.15  # the last part of the train period, in time: the tuning slice
SEQ_DIM = 16  # width of the sequence encoder's tokens
SEQ_ATTENTION_BLOCKS = 1
# The category buckets of the sequence are not embedded: on the Taobao sample's tuning slice the
# encoder reached ROC-AUC 0.559 with them (L2 1e-2 on the table; 0.555 with 1e-3) and 0.601
# without (815 users: a 4,094-row table memorises them).
SEQ_CATEGORIES = False
SEQ_EMBEDDING_L2 = 1e-2


@dataclass(frozen=True)
class NetworkSpec:
    """One candidate: the product's head on the feature vector, with its regularisation."""

    name: str
    l2: float
    dropout: float
    hidden: int = 64
    wide: bool = False  # the output also reads the normalised features (wide and deep)
    sequence: bool = False  # a self-attention encoder over the recent events joins the head

    def describe(self) -> str:
        if self.sequence:
            return (
                f"[Normalization(dense features), self-attention encoder over the last {SEQ_LEN} "
                f"events ({'category + ' if SEQ_CATEGORIES else ''}type/repeat embedding + "
                f"gap + position, {SEQ_ATTENTION_BLOCKS} block, "
                f"width {SEQ_DIM}, masked mean pool)] -> Dense({self.hidden}, relu, L2 "
                f"{self.l2:g}) -> dropout {self.dropout:g} -> Dense(1, sigmoid)"
            )
        head = (
            "Dense(1, sigmoid) over [hidden, normalised features]"
            if self.wide
            else ("Dense(1, sigmoid)")
        )
        return (
            f"Normalization -> Dense({self.hidden}, relu, L2 {self.l2:g}) -> dropout "
            f"{self.dropout:g} -> {head}"
        )


@dataclass
class FittedNetwork:
    spec: NetworkSpec
    model: Any  # keras.Model
    epochs_run: int
    best_epoch: int
    tune: dict[str, Any] = field(default_factory=dict)  # metrics on the tuning slice


def build_model(
    x_train: np.ndarray,
    base_rate: float,
    learning_rate: float,
    *,
    l2: float = 0.0,
    dropout: float = 0.0,
    hidden: int = 64,
    wide: bool = False,
    sequence: bool = False,
) -> Any:
    """Normalization (adapted on train) -> Dense(hidden, relu) -> Dense(1, sigmoid), functional.

    Users' rows are strongly autocorrelated, so an unregularised MLP memorises users within an
    epoch; L2 and dropout keep it general (see the report for the measured effect). ``wide``
    also feeds the normalised features straight to the output (wide and deep), so the network
    contains the logistic regression as a special case.
    """
    inputs = keras.Input(shape=(x_train.shape[1],), name=INPUT_NAME, dtype="float32")
    dense = min(N_DENSE_FEATURES, x_train.shape[1])  # the sequence columns are not read here
    norm = keras.layers.Normalization(name="normalize")
    norm.adapt(x_train[:, :dense])
    penalty = keras.regularizers.L2(l2) if l2 > 0 else None
    normed = norm(inputs[:, :dense] if dense < x_train.shape[1] else inputs)
    head_in = normed
    if sequence:
        head_in = keras.layers.Concatenate(name="dense_and_sequence")(
            [normed, _sequence_encoder(inputs[:, N_DENSE_FEATURES:])]
        )
    hidden_out = keras.layers.Dense(
        hidden, activation="relu", kernel_regularizer=penalty, name="hidden"
    )(head_in)
    if dropout > 0:
        hidden_out = keras.layers.Dropout(dropout, name="dropout")(hidden_out)
    if wide:
        hidden_out = keras.layers.Concatenate(name="wide_and_deep")([hidden_out, normed])
    rate = min(max(base_rate, 1e-4), 1 - 1e-4)
    outputs = keras.layers.Dense(
        1,
        activation="sigmoid",
        kernel_regularizer=penalty,
        name=OUTPUT_NAME,
        bias_initializer=keras.initializers.Constant(math.log(rate / (1 - rate))),
    )(hidden_out)
    model = keras.Model(inputs=inputs, outputs=outputs, name="purchase_intent")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss="binary_crossentropy",
        metrics=[keras.metrics.AUC(name="auc")],
    )
    return model


def _sequence_encoder(flat: Any) -> Any:
    """(batch, SEQ_LEN * 3) numbers -> (batch, SEQ_DIM): embed each event (code, log gap,
    position; the category bucket only with SEQ_CATEGORIES), one block of single-head
    self-attention with padding masked out, a residual and layer norm, then the mean over the
    real events. Plain matmul and softmax, so tf2onnx exports it as ordinary ONNX ops."""
    ops = keras.ops
    steps = keras.layers.Reshape((SEQ_LEN, len(SEQUENCE_FIELDS)), name="seq_steps")(flat)
    category = ops.cast(ops.round(steps[:, :, 0] * SEQUENCE_SCALES[0]), "int32")
    code = ops.cast(ops.round(steps[:, :, 1] * SEQUENCE_SCALES[1]), "int32")
    gap = steps[:, :, 2:3]  # the gap code / 255, in [0, 1]
    real = ops.cast(code > 0, "float32")  # padding rows are all zeros; real codes are >= 1
    tokens = (
        keras.layers.Embedding(16, SEQ_DIM, name="seq_code")(code)
        + keras.layers.Dense(SEQ_DIM, name="seq_gap")(gap)
        + keras.layers.Embedding(SEQ_LEN, SEQ_DIM, name="seq_position")(
            ops.arange(SEQ_LEN, dtype="int32")
        )
    )
    if SEQ_CATEGORIES:
        tokens = tokens + keras.layers.Embedding(
            SEQ_CATEGORY_BUCKETS + 1,
            SEQ_DIM,
            embeddings_regularizer=keras.regularizers.L2(SEQ_EMBEDDING_L2),
            name="seq_category",
        )(category)
    for b in range(SEQ_ATTENTION_BLOCKS):
        q = keras.layers.Dense(SEQ_DIM, name=f"seq_q{b}")(tokens)
        k = keras.layers.Dense(SEQ_DIM, name=f"seq_k{b}")(tokens)
        v = keras.layers.Dense(SEQ_DIM, name=f"seq_v{b}")(tokens)
        scores = ops.matmul(q, ops.transpose(k, (0, 2, 1))) / float(np.sqrt(SEQ_DIM))
        scores = scores + (1.0 - real[:, None, :]) * -1e9  # never attend to padding
        attended = ops.matmul(ops.softmax(scores, axis=-1), v)
        tokens = keras.layers.LayerNormalization(name=f"seq_norm{b}")(tokens + attended)
    weights = real[:, :, None]
    pooled = ops.sum(tokens * weights, axis=1) / ops.maximum(ops.sum(weights, axis=1), 1.0)
    return keras.layers.Dense(SEQ_DIM, activation="relu", name="seq_pooled")(pooled)


class EpochProgress(keras.callbacks.Callback):
    """Advances a ``Progress`` bar at the end of each epoch, with the losses as its note."""

    def __init__(self, bar: Progress) -> None:
        super().__init__()
        self.bar = bar

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        logs = logs or {}
        shown = [f"{k} {logs[k]:.4f}" for k in ("loss", "val_loss", "val_auc") if k in logs]
        self.bar.update(epoch + 1, note=", ".join(shown))


def predict(model: Any, X: np.ndarray) -> np.ndarray:  # noqa: N803
    return np.asarray(model.predict(X, batch_size=4096, verbose=0), dtype=np.float32).reshape(-1)


def fit_network(
    spec: NetworkSpec,
    fit: tuple[np.ndarray, np.ndarray],
    tune: tuple[np.ndarray, np.ndarray],
    *,
    learning_rate: float,
    epochs: int,
    batch_size: int,
    patience: int,
    verbose: int = 0,
) -> FittedNetwork:
    """Fit on ``fit``; early stopping (best weights restored) on ``tune``'s loss."""
    x_fit, y_fit = fit
    x_tune, y_tune = tune
    model = _build(spec, x_fit, y_fit, learning_rate)
    stop = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=patience, restore_best_weights=True
    )
    label = f"train {spec.name}"
    with Progress(label, epochs, unit="epochs", enabled=verbose == 1) as bar:
        history = model.fit(
            x_fit,
            y_fit.astype(np.float32),
            validation_data=(x_tune, y_tune.astype(np.float32)),
            epochs=epochs,
            batch_size=batch_size,
            callbacks=[stop, EpochProgress(bar)],
            shuffle=True,
            verbose=2 if verbose >= 2 else 0,
        )
        losses = history.history["val_loss"]
        best_epoch = int(np.argmin(losses)) + 1
        if len(losses) < epochs:
            bar.update(len(losses), total=len(losses), note=f"early stop; best epoch {best_epoch}")
    tuned = FittedNetwork(spec, model, len(losses), best_epoch)
    tuned.tune = metrics.summary(y_tune, predict(model, x_tune))
    return tuned


def choose(candidates: list[FittedNetwork]) -> FittedNetwork:
    """The candidate with the highest ROC-AUC on the tuning slice (then the lowest log loss)."""
    return max(
        candidates,
        key=lambda c: (c.tune["roc_auc"] or 0.0, -(c.tune["log_loss"] or math.inf)),
    )


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    return np.log(q) - np.log1p(-q)


def fit_platt(p_tune: np.ndarray, y_tune: np.ndarray) -> tuple[float, float]:
    """(a, c) of ``sigmoid(a * logit(p) + c)`` by maximum likelihood on the tuning slice."""
    z = _logit(p_tune).reshape(-1, 1)
    clf = LogisticRegression(C=1e6, max_iter=1000).fit(z, y_tune)
    return float(clf.coef_[0, 0]), float(clf.intercept_[0])


def apply_platt(p: np.ndarray, a: float, c: float) -> np.ndarray:
    z = a * _logit(p) + c
    return np.asarray(1.0 / (1.0 + np.exp(-z)))


def fold_platt(model: Any, a: float, c: float) -> None:
    """Fold ``sigmoid(a * z + c)`` into the output layer: its logit z = w.h + b becomes
    (a w).h + (a b + c). In place; the graph (and so the ONNX signature) is unchanged."""
    layer = model.get_layer(OUTPUT_NAME)
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel * np.float32(a), bias * np.float32(a) + np.float32(c)])


def refit(
    spec: NetworkSpec,
    rows: tuple[np.ndarray, np.ndarray],
    *,
    epochs: int,
    learning_rate: float,
    batch_size: int,
    verbose: int = 0,
) -> Any:
    """The chosen candidate fitted again on every train row (the tuning slice too: the latest
    behaviour matters most on shifting data) for the number of epochs early stopping chose."""
    x, y = rows
    model = _build(spec, x, y, learning_rate)
    with Progress(f"refit {spec.name}", epochs, unit="epochs", enabled=verbose == 1) as bar:
        model.fit(
            x,
            y.astype(np.float32),
            epochs=epochs,
            batch_size=batch_size,
            callbacks=[EpochProgress(bar)],
            shuffle=True,
            verbose=2 if verbose >= 2 else 0,
        )
    return model


def calibration(network: FittedNetwork, tune: tuple[np.ndarray, np.ndarray]) -> dict[str, Any]:
    """Platt scaling fitted on the tuning slice's predictions of ``network`` (which never
    trained on it): ``a``, ``c`` and the slice's ECE before and after."""
    x_tune, y_tune = tune
    before = predict(network.model, x_tune)
    a, c = fit_platt(before, y_tune)
    after = apply_platt(before, a, c)
    return {
        "method": "Platt scaling of the network's logit, sigmoid(a * logit + c), fitted on the "
        "tuning slice and folded into the output layer's weights",
        "a": a,
        "c": c,
        "tune_ece_before": round(metrics.ece(y_tune, before), 6),
        "tune_ece_after": round(metrics.ece(y_tune, after), 6),
        "tune_rows": len(y_tune),
    }


def _build(spec: Any, x: Any, y: Any, learning_rate: float) -> Any:
    """The network ``spec`` describes, its output bias at the base rate of ``y``."""
    return build_model(
        x,
        float(y.mean()),
        learning_rate,
        l2=spec.l2,
        dropout=spec.dropout,
        hidden=spec.hidden,
        wide=spec.wide,
        sequence=spec.sequence,
    )
