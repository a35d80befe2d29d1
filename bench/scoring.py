"""Scenario 3: scoring cost, onnxruntime batched against Keras per event, on the same weights.

Bundles do not store the Keras model, so this trains a small one through the training code
path (``model_export``: PPMI+SVD embeddings, the point-in-time dataset, ``build_model``,
``export_onnx``) on simulated events, writes it as a bundle, loads that with the worker's own
``streams.model.bundle.load_bundle``, and checks that Keras and onnxruntime agree within 1e-5 before
timing anything. TensorFlow and onnxruntime both get one intra-op thread (the worker's
``INTENTFLOW_ONNX_THREADS`` default). Run as its own process: ``python -m bench.scoring``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

BATCHES = (1, 32, 256, 1024)


def per_event_us(
    fn: Callable[[], Any],
    events_per_call: int,
    *,
    min_seconds: float = 0.25,
    rounds: int = 5,
    min_calls: int = 5,
) -> dict[str, float]:
    """Median (and min/max) over ``rounds`` of the µs per event of ``fn``."""
    for _ in range(3):
        fn()
    results = []
    for _ in range(rounds):
        calls = 0
        started = time.perf_counter()
        while calls < min_calls or time.perf_counter() - started < min_seconds:
            fn()
            calls += 1
        results.append((time.perf_counter() - started) / calls / events_per_call * 1e6)
    return {
        "median": round(statistics.median(results), 3),
        "min": round(min(results), 3),
        "max": round(max(results), 3),
    }


def per_row_us(fn: Callable[[int], Any], rows: int, *, rounds: int = 3) -> dict[str, float]:
    """Median µs of ``fn(i)`` for single rows ``i``, ``rows`` calls per round."""
    for i in range(3):
        fn(i)
    results = []
    for _ in range(rounds):
        started = time.perf_counter()
        for i in range(rows):
            fn(i)
        results.append((time.perf_counter() - started) / rows * 1e6)
    return {
        "median": round(statistics.median(results), 1),
        "min": round(min(results), 1),
        "max": round(max(results), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", required=True, type=Path, help="JSONL payloads")
    parser.add_argument("--bundle-out", required=True, type=Path)
    parser.add_argument("--serving-bundle", type=Path, help="also time the worker's bundle")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()

    from model_export.dataset import build_dataset, sort_events
    from model_export.embeddings import learn_embeddings
    from streams import features
    from streams.contracts.events import Rejection, decode_event
    from streams.model.bundle import BundleWriter, load_bundle

    t0 = time.perf_counter()
    decoded = [decode_event(line.rstrip(b"\n")) for line in args.events.open("rb")]
    events = sort_events([e for e in decoded if not isinstance(e, Rejection)])
    embeddings = learn_embeddings(events, seed=0)
    data = build_dataset(events, 3600.0, embeddings)
    t_data = time.perf_counter() - t0
    if len(data.y) < 1000 or not 0 < float(data.y.mean()) < 1:
        # events within the label horizon (1 h) of the log's end are censored: a short log
        # leaves no training rows, or only one class, and the model would be NaN
        reason = f"{len(events):,} events give {len(data.y):,} labelled rows"
        args.out.write_text(json.dumps({"skipped": reason}))
        return

    import keras
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    keras.utils.set_random_seed(0)
    from model_export.export import check_parity, export_onnx
    from model_export.selection import build_model

    t0 = time.perf_counter()
    X, y = data.X, data.y.astype(np.float32)  # noqa: N806
    model = build_model(X, float(y.mean()), 1e-3)
    model.fit(X, y, epochs=args.epochs, batch_size=256, verbose=0, shuffle=True)
    t_train = time.perf_counter() - t0

    with BundleWriter(args.bundle_out) as writer:
        export_onnx(
            model,
            writer.model_path,
            metadata={
                "feature_spec_hash": features.FEATURE_SPEC.hash,
                "feature_version": features.FEATURE_SPEC.version,
            },
        )
        writer.write_embeddings(embeddings)
        out_dir = writer.publish(
            {
                "model_version": "bench-keras-small",
                "feature_version": features.FEATURE_SPEC.version,
                "feature_spec_hash": features.FEATURE_SPEC.hash,
                "feature_names": list(features.FEATURE_SPEC.names),
                "horizon_seconds": 3600.0,
                "note": "trained by bench/scoring.py on simulated events (model_export code path)",
            }
        )
    bundle = load_bundle(out_dir, threads=1)

    check_rows = X[:4096]
    p_keras = model.predict(check_rows, batch_size=4096, verbose=0).reshape(-1)
    p_onnx = bundle.predict(check_rows)
    max_diff = check_parity(p_keras, p_onnx)  # raises above 1e-5
    single_diffs = [
        abs(float(model(check_rows[i : i + 1], training=False).numpy()[0, 0]) - float(p_onnx[i]))
        for i in range(64)
    ]
    max_diff = max(max_diff, *single_diffs)

    timings: dict[str, Any] = {}
    for b in BATCHES:
        xb = np.ascontiguousarray(X[:b])
        timings[f"onnx_batch_{b}"] = per_event_us(lambda xb=xb: bundle.predict(xb), b)
    if args.serving_bundle is not None:
        serving = load_bundle(args.serving_bundle, threads=1)
        for b in BATCHES:
            xb = np.ascontiguousarray(X[:b])
            timings[f"serving_onnx_batch_{b}"] = per_event_us(
                lambda xb=xb, s=serving: s.predict(xb), b
            )
    rows = [np.ascontiguousarray(X[i : i + 1]) for i in range(400)]
    timings["keras_call"] = per_row_us(lambda i: model(rows[i], training=False), 300)
    timings["keras_predict"] = per_row_us(lambda i: model.predict(rows[i], verbose=0), 40)
    x256 = X[:256]
    timings["keras_call_batch_256"] = per_event_us(lambda: model(x256, training=False), 256)

    # The feature computation the worker runs before every onnxruntime call, for scale.
    replayed: dict[str, features.Profile] = {}
    pairs = []
    for e in events[:5000]:
        replayed[e.user_id] = features.update(replayed.get(e.user_id), e)
        pairs.append((replayed[e.user_id], e))
    for b in BATCHES:
        chunk = pairs[:b]
        timings[f"feature_matrix_batch_{b}"] = per_event_us(
            lambda chunk=chunk: features.feature_matrix(chunk, bundle.embeddings), b
        )

    def us(key: str) -> float:
        return float(timings[key]["median"])

    result = {
        "us_per_event": {k: v["median"] for k, v in timings.items()},
        "detail": timings,
        "speedups": {
            f"onnx_batch_{b}_vs_keras_call": round(us("keras_call") / us(f"onnx_batch_{b}"), 1)
            for b in BATCHES
        }
        | {
            f"onnx_batch_{b}_vs_keras_predict": round(
                us("keras_predict") / us(f"onnx_batch_{b}"), 1
            )
            for b in BATCHES
        },
        "parity_max_abs_diff": max_diff,
        "parity_rows": len(check_rows) + len(single_diffs),
        "model": {
            "layers": "Normalization -> Dense(64, relu) -> Dense(1, sigmoid)",
            "features": int(X.shape[1]),
            "train_rows": len(X),
            "positives": int(y.sum()),
            "epochs": args.epochs,
            "bundle": str(out_dir),
        },
        "threads": {"onnxruntime_intra_op": 1, "tensorflow_intra_op": 1},
        "versions": {
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "onnxruntime": __import__("onnxruntime").__version__,
        },
        "seconds": {"dataset": round(t_data, 1), "train": round(t_train, 1)},
    }
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
