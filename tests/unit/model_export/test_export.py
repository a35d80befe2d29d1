"""Keras -> ONNX export: parity within 1e-5, a dynamic batch axis, and a complete bundle."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from streams.errors import ExportParityError
from streams.features import FEATURE_NAMES, FEATURE_SPEC
from streams.model.bundle import load_bundle
from tests.model_fixtures import TinyBundle, synthetic_log

pytestmark = pytest.mark.train


def test_export_parity_on_rows_and_any_batch_size(tmp_path: Path) -> None:
    from model_export.dataset import build_dataset, read_events
    from model_export.export import check_parity, export_onnx, onnx_predict
    from model_export.selection import build_model
    from model_export.train import _configure_tensorflow

    log = synthetic_log(tmp_path / "log.jsonl", users=40, days=1.0, seed=4)
    data = build_dataset(read_events(log).events, 3600.0)
    _configure_tensorflow(threads=1, seed=0)
    model = build_model(data.X, float(data.y.mean()), 1e-3)
    model.fit(data.X, data.y.astype(np.float32), epochs=1, batch_size=128, verbose=0)
    path = tmp_path / "model.onnx"
    export_onnx(model, path, metadata={"feature_spec_hash": FEATURE_SPEC.hash})
    keras_p = model.predict(data.X, verbose=0).reshape(-1)
    onnx_p = onnx_predict(path, data.X)
    assert len(data) > 1000
    assert check_parity(keras_p, onnx_p) <= 1e-5
    assert np.abs(keras_p - onnx_p).max() <= 1e-5
    for n in (1, 3, 257):  # the batch axis is dynamic
        np.testing.assert_allclose(onnx_predict(path, data.X[:n]), onnx_p[:n], atol=1e-6)
    import onnx

    proto = onnx.load(str(path))
    assert proto.opset_import[0].version == 17
    assert {p.key: p.value for p in proto.metadata_props}["feature_spec_hash"] == FEATURE_SPEC.hash


def test_the_sequence_encoder_exports_with_parity_and_a_dynamic_batch(tmp_path: Path) -> None:
    from model_export.dataset import build_dataset, read_events
    from model_export.export import check_parity, export_onnx, onnx_predict
    from model_export.selection import build_model
    from model_export.train import _configure_tensorflow
    from streams.features.vector import N_DENSE_FEATURES

    log = synthetic_log(tmp_path / "log.jsonl", users=40, days=1.0, seed=5)
    data = build_dataset(read_events(log).events, 3600.0)
    assert (data.X[:, N_DENSE_FEATURES:] > 0).any()  # real sequences, not only padding
    _configure_tensorflow(threads=1, seed=0)
    model = build_model(data.X, float(data.y.mean()), 1e-3, sequence=True)
    model.fit(data.X, data.y.astype(np.float32), epochs=2, batch_size=128, verbose=0)
    path = tmp_path / "sequence.onnx"
    export_onnx(model, path)
    keras_p = model.predict(data.X, verbose=0).reshape(-1)
    onnx_p = onnx_predict(path, data.X)
    assert check_parity(keras_p, onnx_p) <= 1e-5
    for n in (1, 3, 257):
        np.testing.assert_allclose(onnx_predict(path, data.X[:n]), onnx_p[:n], atol=1e-6)
    # The encoder reads the sequence: changing only the sequence columns changes the output.
    shuffled = data.X.copy()
    shuffled[:, N_DENSE_FEATURES:] = data.X[::-1, N_DENSE_FEATURES:]
    assert np.abs(onnx_predict(path, shuffled) - onnx_p).max() > 1e-4


def test_parity_failure_raises() -> None:
    from model_export.export import check_parity

    with pytest.raises(ExportParityError, match=r"differs from Keras by up to 0\.001"):
        check_parity(np.array([0.5, 0.2], np.float32), np.array([0.501, 0.2], np.float32))
    with pytest.raises(ExportParityError, match="non-finite"):
        check_parity(np.array([0.5], np.float32), np.array([np.nan], np.float32))


def test_bundle_metadata_is_complete_and_sane(tiny_bundle: TinyBundle) -> None:
    root = tiny_bundle.path
    for name in ("model.onnx", "embeddings.npz", "metadata.json", "report.md", "roc.png"):
        assert (root / name).is_file(), name
    assert (root / "calibration.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(root.parent.glob(".bundle.*"))  # no staging leftovers
    meta = json.loads((root / "metadata.json").read_text())
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{8}", meta["model_version"])
    assert meta["feature_version"] == FEATURE_SPEC.version
    assert meta["feature_spec_hash"] == FEATURE_SPEC.hash
    assert meta["feature_names"] == list(FEATURE_NAMES)
    assert meta["horizon_seconds"] == 3600.0
    training = meta["training"]
    assert training["rows"] > 1000 and 0 < training["positives"] < training["rows"]
    assert training["source"] == str(tiny_bundle.events)
    assert training["rejected"] == {"malformed_json": 1, "missing_field": 1}
    assert training["time_range"]["start"] < training["split"]["boundary"]
    assert training["split"]["boundary"] < training["time_range"]["end"]
    assert training["split"]["quantile"] == 0.7
    val = meta["metrics"]["validation"]
    for scorer in (
        val,
        meta["metrics"]["baselines"]["logistic_regression"],
        meta["metrics"]["baselines"]["heuristic"],
    ):
        # A two-epoch model on a few thousand rows: sane ranges, not quality (the acceptance
        # runs on the simulator and Taobao logs judge quality).
        assert 0 <= scorer["roc_auc"] <= 1
        assert (
            scorer["positives"] / scorer["rows"] < scorer["pr_auc"] <= 1 or scorer["roc_auc"] <= 0.5
        )
        assert 0 < scorer["log_loss"] < math.log(2)  # better than a coin
        assert 0 <= scorer["ece"] < 0.25
    assert meta["metrics"]["baselines"]["heuristic"]["name"]
    assert 0.5 < val["oracle_roc_auc"] <= 1 and val["oracle_rows"] == val["rows"]
    assert 0 <= meta["parity"]["max_abs_diff"] <= 1e-5
    assert meta["parity"]["rows"] == val["rows"]
    assert meta["timings"]["train_seconds"] > 0 and meta["timings"]["export_seconds"] > 0
    for lib in ("tensorflow", "tf2onnx", "onnxruntime"):
        assert meta["versions"][lib]
    model = load_bundle(root)
    assert model.model_version == meta["model_version"]
    assert len(model.embeddings) == meta["embeddings"]["categories"] > 0
    report = (root / "report.md").read_text()
    assert "![ROC curves](roc.png)" in report and meta["model_version"] in report
