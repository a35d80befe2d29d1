"""Small, valid model bundles for worker tests, built without TensorFlow.

The model is a real ONNX graph with the served signature (``features`` -> sigmoid(X.w + b) ->
``purchase_probability``), so the worker loads, checks and runs it exactly like an exported
Keras model. Different seeds give different weights and so different probabilities.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from streams.contracts.events import ClickEvent
from streams.features import EMBEDDING_DIM, FEATURE_SPEC, CategoryEmbeddings
from streams.features.reference import Reference
from streams.model.bundle import INPUT_NAME, OUTPUT_NAME, BundleWriter, point_link


def make_bundle(
    directory: Path,
    version: str,
    *,
    seed: int = 0,
    reference: Reference | None = None,
    arms: int = 0,
    fitted_prior: bool = False,
) -> Path:
    """Write a bundle (model.onnx, metadata.json, embeddings.npz, reference.npz when a
    ``reference`` is given, and ``arms`` exploration arms (k-means of the embeddings) when
    ``arms`` > 0) to ``directory``. The arms' prior is flat, or with ``fitted_prior`` fitted
    as training fits it (``explore_prior.fit_prior``) on ``simulated_events``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    n = len(FEATURE_SPEC.names)
    weights = (rng.normal(0.0, 0.3, size=(n, 1))).astype(np.float32)
    bias = np.array([-1.0], dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", [INPUT_NAME, "w"], ["logit0"]),
            helper.make_node("Add", ["logit0", "b"], ["logit"]),
            helper.make_node("Sigmoid", ["logit"], [OUTPUT_NAME]),
        ],
        "test_logistic",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", n])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", 1])],
        [numpy_helper.from_array(weights, "w"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    ids = [f"c{i:04d}" for i in range(50)]
    with BundleWriter(directory) as writer:
        writer.model_path.write_bytes(model.SerializeToString())
        writer.write_embeddings(CategoryEmbeddings(ids, rng.normal(size=(50, EMBEDDING_DIM))))
        if reference is not None:
            writer.write_reference(reference)
        if arms:
            from streams.features.arms import Arms, kmeans

            matrix = rng.normal(size=(50, EMBEDDING_DIM))
            writer.write_embeddings(CategoryEmbeddings(ids, matrix))
            labels, centroids = kmeans(matrix, arms, seed=seed)
            groups = [
                [c for c, lab in zip(ids, labels, strict=True) if lab == a] for a in range(arms)
            ]
            flat = Arms(groups, centroids, np.zeros((arms, arms + 1)), 2.0)
            if fitted_prior:
                from model_export.explore_prior import fit_prior

                flat = fit_prior(flat, simulated_events(), CategoryEmbeddings(ids, matrix))
            writer.write_arms(flat)
        writer.publish(
            {
                "model_version": version,
                "feature_version": FEATURE_SPEC.version,
                "feature_spec_hash": FEATURE_SPEC.hash,
                "feature_names": list(FEATURE_SPEC.names),
                "horizon_seconds": 3600,
                "note": "test bundle: logistic weights drawn from a seeded RNG",
            }
        )
    return directory


def point(link: Path, target: Path) -> None:
    """Atomically point the ``link`` symlink at ``target`` (how a model is rolled)."""
    point_link(link, target)


def simulated_reference(bundle: Path) -> Reference:
    """A training reference for a bundle made here: the features, under the bundle's
    embeddings, of 300 simulated shoppers over two days (seed 7), as ``intentflow train``
    fits one on its training rows. With it the worker publishes reasons and drift."""
    from streams import features
    from streams.features.reference import fit_reference
    from streams.model.bundle import load_bundle

    embeddings = load_bundle(bundle, threads=1).embeddings
    profiles: dict[str, features.Profile] = {}
    pairs = []
    for event in simulated_events():
        profiles[event.user_id] = features.update(profiles.get(event.user_id), event)
        pairs.append((profiles[event.user_id], event))
    return fit_reference(features.feature_matrix(pairs, embeddings))


def simulated_events() -> list[ClickEvent]:
    """The valid events of 300 simulated shoppers over two days (seed 7), in time order."""
    from streams.contracts.events import decode_event
    from streams.sources.simulate import generate

    out = []
    for record in generate(300, 2 * 86_400.0, 7):
        event = decode_event(record.payload) if record.valid else None
        if isinstance(event, ClickEvent):
            out.append(event)
    return out


def make_explained_bundle(
    directory: Path, version: str, *, seed: int = 0, arms: int = 0, fitted_prior: bool = False
) -> Path:
    """``make_bundle`` with a ``simulated_reference``: scores come with reasons (and, with
    ``arms``, exploration suggestions)."""
    plain = make_bundle(
        directory.with_name(directory.name + "-plain"), version, seed=seed, arms=arms
    )
    return make_bundle(
        directory, version, seed=seed, reference=simulated_reference(plain), arms=arms,
        fitted_prior=fitted_prior,
    )  # fmt: skip
