"""Keras -> ONNX with tf2onnx, and the parity check that decides whether the export ships.

``tf2onnx.convert.from_keras`` works on a Keras 3 *functional* model with an explicit
``input_signature`` (a ``Sequential`` model fails on Keras 3, see DESIGN.md). The batch axis is
``None`` in the signature, so the ONNX graph takes any batch size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import tensorflow as tf
import tf2onnx

from streams.errors import ExportParityError
from streams.model.bundle import INPUT_NAME, OUTPUT_NAME

OPSET = 17
PARITY_TOLERANCE = 1e-5


def export_onnx(model: Any, path: Path, *, metadata: dict[str, str] | None = None) -> None:
    """Write ``model`` (a functional Keras model) to ``path`` as ONNX, opset 17."""
    n_features = int(model.inputs[0].shape[-1])
    signature = (tf.TensorSpec((None, n_features), tf.float32, name=INPUT_NAME),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=OPSET)
    inputs = [i.name for i in proto.graph.input]
    outputs = [o.name for o in proto.graph.output]
    if inputs != [INPUT_NAME] or outputs != [OUTPUT_NAME]:
        raise ExportParityError(
            f"tf2onnx produced inputs {inputs} and outputs {outputs}; "
            f"expected ['{INPUT_NAME}'] and ['{OUTPUT_NAME}']"
        )
    for key, value in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    Path(path).write_bytes(proto.SerializeToString())


def onnx_predict(path: Path, X: np.ndarray) -> np.ndarray:  # noqa: N803
    """Probabilities from the exported file through onnxruntime (one thread, as served)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    (out,) = session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(X, dtype=np.float32)})
    return np.asarray(out, dtype=np.float32).reshape(-1)


def check_parity(
    keras_probs: np.ndarray, onnx_probs: np.ndarray, *, tolerance: float = PARITY_TOLERANCE
) -> float:
    """Max absolute difference between Keras and onnxruntime; ExportParityError above tolerance."""
    if keras_probs.shape != onnx_probs.shape:
        raise ExportParityError(
            f"Keras gave {keras_probs.shape} probabilities but ONNX gave {onnx_probs.shape}"
        )
    if not np.isfinite(onnx_probs).all():
        raise ExportParityError("the ONNX model returned non-finite probabilities")
    diff = (
        float(np.max(np.abs(keras_probs.astype(np.float64) - onnx_probs)))
        if onnx_probs.size
        else 0.0
    )
    if diff > tolerance:
        raise ExportParityError(
            f"ONNX export differs from Keras by up to {diff:.3g} on {onnx_probs.size} rows; "
            f"the limit is {tolerance:g}"
        )
    return diff
