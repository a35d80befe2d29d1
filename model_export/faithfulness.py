"""How faithful the reasons are to the served model, measured on a bundle's validation rows.

The reasons are the worker's own (``streams.processing.reasons``, one onnxruntime call); each
check recomputes what they claim by other calls to the same ONNX model:

1. ``batched_vs_single``: every impact of the batched call equals one call per occluded copy.
2. ``top_up_is_largest``: removing (occluding) the reported top "up" group lowers the
   probability at least as much as removing any other single group, on every row reporting one.
3. ``top3_vs_random``: removing the three groups of largest positive impact together lowers the
   probability at least twice as much as removing three random groups together (on average).
4. ``randomised_model``: with the model's dense weights re-initialised (as before training), the
   impacts' median Spearman correlation with the trained model's is low: the reasons depend on
   the model, not on the data alone.
5. ``truth``: where the simulator's true intent is >= 0.5, a cart group is among the two
   largest "up" reasons; reported overall and split by whether the shopper has added to the
   cart in this session (intent is high early in a buy mission too, before any cart).

Needs ``onnx`` (the train extra) for check 4 only.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from model_export.dataset import label_events, read_events, read_truth, replay
from streams.features import FEATURE_NAMES, feature_matrix, top_categories
from streams.model.bundle import MODEL_FILE, ModelBundle, load_bundle
from streams.processing import reasons

CART_GROUPS = ("cart", "session_carts")
INTENT_HIGH = 0.5


def validation_rows(
    bundle: ModelBundle, events_path: Path
) -> tuple[np.ndarray, list[list[tuple[str, float]]], list[str]]:
    """Features, top interests and event ids of the bundle's validation snapshots in
    ``events_path`` (the log it was trained on): labelled snapshots after its split boundary."""
    training = bundle.metadata["training"]
    boundary = float(training["split"]["boundary"])
    events = read_events(events_path).events
    keep, _ = label_events(events, float(bundle.metadata["horizon_seconds"]))
    pairs = [
        (profile, event)
        for (profile, event), k in zip(replay(events), keep.tolist(), strict=True)
        if k and event.ts > boundary
    ]
    X = feature_matrix(pairs, bundle.embeddings)  # noqa: N806
    tops = [top_categories(profile, reasons.N_INTERESTS) for profile, _ in pairs]
    return X, tops, [event.event_id for _, event in pairs]


def _occluded(bundle: ModelBundle, X: np.ndarray, groups: list[int]) -> np.ndarray:  # noqa: N803
    """The probabilities with ``groups`` (indices into reasons.GROUPS) at the reference."""
    assert bundle.reference is not None
    x = np.array(X, dtype=np.float32)
    for g in groups:
        cols = reasons.GROUP_COLUMNS[reasons.GROUPS[g]]
        x[:, cols] = bundle.reference.mean[cols]
    return bundle.predict(x).astype(np.float64)


def randomised(bundle: ModelBundle, out: Path, seed: int = 0) -> ModelBundle:
    """A copy of ``bundle`` whose dense layers are re-initialised as before training: kernels
    Glorot-uniform, hidden biases zero, the output bias at the training base rate's log-odds.
    The normalisation constants (statistics of the data, not weights) are kept."""
    import onnx
    from onnx import numpy_helper

    shutil.copytree(bundle.path, out)
    model = onnx.load(str(out / MODEL_FILE))
    inits = {i.name: i for i in model.graph.initializer}
    rng = np.random.default_rng(seed)
    matmuls = [n for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in inits]
    kernels = list(dict.fromkeys(n.input[1] for n in matmuls))  # graph order: reproducible
    dense_out = {m.output[0] for m in matmuls}
    biases = [
        n.input[1]
        for n in model.graph.node
        if n.op_type == "Add" and n.input[1] in inits and n.input[0] in dense_out
    ]
    rows = bundle.metadata["training"]
    rate = min(max(rows["positives"] / rows["rows"], 1e-4), 1 - 1e-4)
    for name in kernels:
        w = numpy_helper.to_array(inits[name])
        limit = math.sqrt(6.0 / (w.shape[0] + w.shape[1]))
        new = rng.uniform(-limit, limit, size=w.shape).astype(w.dtype)
        inits[name].CopyFrom(numpy_helper.from_array(new, name))
    for k, name in enumerate(biases):
        b = numpy_helper.to_array(inits[name])
        value = math.log(rate / (1 - rate)) if k == len(biases) - 1 else 0.0
        inits[name].CopyFrom(numpy_helper.from_array(np.full_like(b, value), name))
    if not kernels or len(biases) != len(kernels):
        raise ValueError(f"{bundle.path / MODEL_FILE}: expected dense layers (MatMul + Add)")
    onnx.save(model, str(out / MODEL_FILE))
    return load_bundle(out)


def _spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman correlation of each row of ``a`` with the same row of ``b`` (NaN if constant)."""
    ra = np.argsort(np.argsort(a, axis=1), axis=1).astype(np.float64)
    rb = np.argsort(np.argsort(b, axis=1), axis=1).astype(np.float64)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    den = np.sqrt((ra * ra).sum(axis=1) * (rb * rb).sum(axis=1))
    ok = (np.ptp(a, axis=1) > 0) & (np.ptp(b, axis=1) > 0)
    return np.where(ok, (ra * rb).sum(axis=1) / np.where(den > 0, den, 1.0), np.nan)


def faithfulness(
    bundle_dir: Path,
    events_path: Path,
    truth_path: Path | None = None,
    *,
    seed: int = 0,
    single_rows: int = 200,
    random_rows: int = 3000,
) -> dict[str, Any]:
    """Every check of the module doc, on the validation rows of the bundle's training log."""
    bundle = load_bundle(bundle_dir)
    if bundle.reference is None:
        raise ValueError(f"bundle {bundle_dir} has no reference (trained before reasons)")
    X, tops, event_ids = validation_rows(bundle, events_path)  # noqa: N806
    explained = reasons.explain(bundle, X, tops)
    assert explained is not None
    n, g = X.shape[0], len(reasons.GROUPS)
    p = explained.probabilities.astype(np.float64)
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {"bundle": str(bundle.path), "rows": n, "groups": g}

    # The batch's probabilities are those of the batch scored without reasons.
    alone = bundle.predict(X).astype(np.float64)
    out["probability_vs_no_reasons_max_abs_diff"] = float(np.abs(alone - p).max())

    # 1. Batched impacts against one onnxruntime call per occluded copy.
    pick = np.sort(rng.choice(n, size=min(single_rows, n), replace=False))
    sub = reasons.explain(bundle, X[pick], [tops[i] for i in pick])
    stacked, layout = reasons.occlusions(X[pick], [tops[i] for i in pick], bundle)
    single = np.array([bundle.predict(stacked[i : i + 1])[0] for i in range(len(stacked))])
    single = single.astype(np.float64)
    m = layout.n
    want = single[:m, None] - single[layout.groups_start : layout.interests_start].reshape(g, m).T
    want_interests = single[:m][layout.owners] - single[layout.interests_start :]
    assert sub is not None
    got_interests = np.array([i for row in sub.interests for _, i in row])
    out["batched_vs_single"] = {
        "rows": m,
        "calls": len(stacked),
        "max_abs_diff": float(
            max(
                np.abs(sub.impacts - want).max(),
                np.abs(got_interests - want_interests).max() if len(want_interests) else 0.0,
                np.abs(explained.impacts[pick] - want).max(),
            )
        ),
    }

    # 2. The reported top "up" group removes the most, against per-group occlusion calls.
    drops = np.stack([p - _occluded(bundle, X, [k]) for k in range(g)], axis=1)
    reported_up = []
    for j in range(n):
        ups = [code for code, impact in explained.reasons(j).top if impact > 0]
        reported_up.append(reasons.GROUPS.index(ups[0]) if ups else -1)
    up = np.asarray(reported_up)
    has = up >= 0
    best = drops[has].max(axis=1)
    theirs = drops[has, up[has]]
    out["top_up_is_largest"] = {
        "rows_with_an_up_reason": int(has.sum()),
        "share_where_largest": float(np.mean(theirs >= best - 1e-6)) if has.any() else None,
    }

    # 3. The three largest positive impacts together against three random groups together.
    impacts = explained.impacts
    order = np.argsort(-impacts, axis=1, kind="stable")[:, :3]
    three_up = np.take_along_axis(impacts, order, axis=1).min(axis=1) > 0
    rows3 = np.flatnonzero(three_up)
    top_drop, random_drop = np.zeros(len(rows3)), np.zeros(len(rows3))
    combos: dict[tuple[int, ...], list[int]] = {}
    for k, j in enumerate(rows3.tolist()):
        combos.setdefault(tuple(sorted(order[j].tolist())), []).append(k)
    for combo, ks in combos.items():
        rows_ = rows3[ks]
        top_drop[ks] = p[rows_] - _occluded(bundle, X[rows_], list(combo))
    randoms = np.array([np.sort(rng.choice(g, size=3, replace=False)) for _ in rows3])
    combos = {}
    for k, combo_ in enumerate(randoms.tolist()):
        combos.setdefault(tuple(combo_), []).append(k)
    for combo, ks in combos.items():
        rows_ = rows3[ks]
        random_drop[ks] = p[rows_] - _occluded(bundle, X[rows_], list(combo))
    mean_top = float(top_drop.mean()) if len(rows3) else 0.0
    mean_random = float(random_drop.mean()) if len(rows3) else 0.0
    out["top3_vs_random"] = {
        "rows_with_three_up": len(rows3),
        "mean_drop_top3": mean_top,
        "mean_drop_random3": mean_random,
        "ratio": mean_top / mean_random if mean_random > 0 else math.inf,
    }

    # 4. A re-initialised model gives other reasons.
    with tempfile.TemporaryDirectory(prefix="intentflow-randomised-") as tmp:
        shuffled = randomised(bundle, Path(tmp) / "bundle", seed=seed)
        pick = np.sort(rng.choice(n, size=min(random_rows, n), replace=False))
        other = reasons.explain(shuffled, X[pick], [tops[i] for i in pick])
        assert other is not None
        rho = _spearman(explained.impacts[pick], other.impacts)
    out["randomised_model"] = {
        "rows": int(np.isfinite(rho).sum()),
        "median_spearman": float(np.nanmedian(rho)),
    }

    # 5. The simulator's truth: carts drive the reasons of the shoppers about to buy.
    if truth_path is not None:
        truth = read_truth(truth_path)
        intent = np.array([truth.get(e, np.nan) for e in event_ids])
        high = np.flatnonzero(intent >= INTENT_HIGH)
        carted = X[:, FEATURE_NAMES.index("session_carts_log")] > 0
        hits = np.zeros(len(high), dtype=bool)
        for k, j in enumerate(high.tolist()):
            ups = [code for code, impact in explained.reasons(j).top if impact > 0][:2]
            hits[k] = any(code in CART_GROUPS for code in ups)
        with_cart = carted[high]
        out["truth"] = {
            "rows_intent_at_least_0_5": len(high),
            "cart_group_in_top2_up_share": float(hits.mean()) if len(high) else None,
            # Intent can be high before the session's first add to cart (a buy mission): no
            # cart feature is there to cite on such rows.
            "rows_with_a_cart_this_session": int(with_cart.sum()),
            "share_with_a_cart_this_session": float(with_cart.mean()) if len(high) else None,
            "cart_group_in_top2_up_share_with_a_cart": (
                float(hits[with_cart].mean()) if with_cart.any() else None
            ),
            "cart_group_in_top2_up_share_without_a_cart": (
                float(hits[~with_cart].mean()) if (~with_cart).any() else None
            ),
        }
    return out
