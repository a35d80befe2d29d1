"""The ONNX scorer: loads without TensorFlow, predicts any batch, refuses bad bundles with a
message naming the file."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from streams.errors import FeatureSpecMismatchError, ModelCorruptError, ModelNotFoundError
from streams.features import FEATURE_SPEC, N_FEATURES
from streams.model.bundle import bundle_fingerprint, load_bundle
from tests.bundles import make_bundle, point
from tests.model_fixtures import TinyBundle

REPO = Path(__file__).resolve().parents[2]

BLOCK_TF = textwrap.dedent(
    """
    import importlib.abc, sys

    class _BlockTensorFlow(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {"tensorflow", "keras", "tf2onnx", "tf_keras"}:
                raise ImportError(f"{name} is blocked in this test")
            return None

    sys.meta_path.insert(0, _BlockTensorFlow())
    """
)


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    """A small valid bundle built without TensorFlow (tests/bundles.py)."""
    return make_bundle(tmp_path / "b1", "test-1")


@pytest.mark.train
def test_a_trained_bundle_scores_and_evaluates_where_tensorflow_cannot_be_imported(
    tiny_bundle: TinyBundle,
) -> None:
    code = BLOCK_TF + textwrap.dedent(
        f"""
        import json
        try:
            import tensorflow
        except ImportError:
            pass
        else:
            raise SystemExit("the block does not work")
        from model_export.dataset import read_events, replay_features
        from streams.model.bundle import load_bundle

        bundle = load_bundle({str(tiny_bundle.path)!r}, threads=1)
        events, X = replay_features(read_events({str(tiny_bundle.events)!r}).events,
                                    bundle.embeddings)
        probs = bundle.predict(X[:500])

        from click.testing import CliRunner
        from streams.cli import main

        cli = CliRunner().invoke(main, ["evaluate", "--model", {str(tiny_bundle.path)!r},
                                        "--events", {str(tiny_bundle.events)!r}])
        print(json.dumps({{
            "evaluate_exit": cli.exit_code,
            "evaluate_output": cli.output,
            "version": bundle.model_version,
            "probs": probs.tolist(),
            "tf_loaded": any(m.split(".")[0] in {{"tensorflow", "keras", "tf2onnx"}}
                             for m in sys.modules),
        }}))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["tf_loaded"] is False
    assert out["evaluate_exit"] == 0, out["evaluate_output"]
    assert "logistic_regression" in out["evaluate_output"]
    probs = np.asarray(out["probs"])
    assert probs.shape == (500,)
    assert np.all((probs >= 0) & (probs <= 1)) and probs.std() > 0
    assert (
        out["version"]
        == json.loads((tiny_bundle.path / "metadata.json").read_text())["model_version"]
    )


def test_predict_takes_any_batch_size(bundle: Path) -> None:
    model = load_bundle(bundle)
    assert model.model_version == "test-1"
    assert model.feature_spec_hash == FEATURE_SPEC.hash
    rng = np.random.default_rng(0)
    big = rng.normal(size=(1000, N_FEATURES)).astype(np.float32)
    full = model.predict(big)
    assert full.dtype == np.float32 and full.shape == (1000,)
    assert np.all((full >= 0) & (full <= 1))
    np.testing.assert_allclose(model.predict(big[:1]), full[:1], rtol=1e-6)
    np.testing.assert_allclose(model.predict(big[:37]), full[:37], rtol=1e-6)
    assert model.predict(np.zeros((0, N_FEATURES), np.float32)).shape == (0,)
    with pytest.raises(ValueError, match=f"\\(n, {N_FEATURES}\\)"):
        model.predict(np.zeros((3, N_FEATURES - 1), np.float32))


def test_non_finite_input_is_refused_not_scored(bundle: Path) -> None:
    model = load_bundle(bundle)
    x = np.zeros((4, N_FEATURES), np.float32)
    x[2, 0] = np.nan
    with pytest.raises(ModelCorruptError, match="non-finite"):
        model.predict(x)


def test_symlinks_are_resolved(bundle: Path, tmp_path: Path) -> None:
    link = tmp_path / "current"
    point(link, bundle)
    model = load_bundle(link, threads=2)
    assert model.path == bundle.resolve()


def test_missing_bundle(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="nowhere"):
        load_bundle(tmp_path / "nowhere")
    dangling = tmp_path / "current"
    dangling.symlink_to("gone")
    with pytest.raises(ModelNotFoundError, match="current"):
        load_bundle(dangling)


@pytest.mark.parametrize("name", ["model.onnx", "metadata.json", "embeddings.npz"])
def test_missing_file(bundle: Path, name: str) -> None:
    (bundle / name).unlink()
    with pytest.raises(ModelCorruptError, match=f"{bundle / name}.*missing|missing.*{name}"):
        load_bundle(bundle)


def test_corrupt_model(bundle: Path) -> None:
    (bundle / "model.onnx").write_bytes(b"\x00garbage\xff" * 100)
    with pytest.raises(ModelCorruptError, match=r"model\.onnx"):
        load_bundle(bundle)


def test_corrupt_metadata(bundle: Path) -> None:
    (bundle / "metadata.json").write_text("{ not json")
    with pytest.raises(ModelCorruptError, match=r"metadata\.json.*not valid JSON"):
        load_bundle(bundle)
    (bundle / "metadata.json").write_text('{"model_version": "x"}')
    with pytest.raises(ModelCorruptError, match=r"metadata\.json lacks feature_version"):
        load_bundle(bundle)


def test_corrupt_embeddings(bundle: Path) -> None:
    (bundle / "embeddings.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ModelCorruptError, match=r"embeddings\.npz"):
        load_bundle(bundle)


def test_feature_spec_mismatch_names_file_expected_and_got(bundle: Path) -> None:
    meta = json.loads((bundle / "metadata.json").read_text())
    meta["feature_spec_hash"] = "0" * 64
    (bundle / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(FeatureSpecMismatchError) as info:
        load_bundle(bundle)
    message = str(info.value)
    assert "metadata.json" in message
    assert "000000000000" in message and FEATURE_SPEC.hash[:12] in message


def test_wrong_graph_signature(bundle: Path, tmp_path: Path) -> None:
    other = make_bundle(tmp_path / "other", "x")
    # A graph whose input is not named "features" (rename in the protobuf).
    import onnx

    proto = onnx.load(str(other / "model.onnx"))
    proto.graph.input[0].name = "inputs"
    proto.graph.node[0].input[0] = "inputs"
    onnx.save(proto, str(bundle / "model.onnx"))
    with pytest.raises(ModelCorruptError, match=r"wrong signature.*'features'"):
        load_bundle(bundle)


def test_fingerprint_tracks_the_served_files(bundle: Path, tmp_path: Path) -> None:
    assert bundle_fingerprint(tmp_path / "missing") is None
    link = tmp_path / "current"
    point(link, bundle)
    first = bundle_fingerprint(link)
    assert first is not None and str(bundle.resolve()) in first
    assert bundle_fingerprint(link) == first
    second = make_bundle(tmp_path / "b2", "test-2", seed=1)
    point(link, second)
    assert bundle_fingerprint(link) not in (None, first)
    shutil.rmtree(second)
    assert bundle_fingerprint(link) is None
