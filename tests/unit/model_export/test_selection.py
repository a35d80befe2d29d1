"""Model selection: the gradient-boosting baseline applied from its stored trees equals
scikit-learn's, its choices come from the tuning slice; Platt scaling folded into the output
layer equals applying it after; the choice of network follows the tuning slice."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier

from model_export import metrics
from model_export.baselines import predict_gradient_boosting
from model_export.fit_baselines import GB_GRID, GB_LEARNING_RATE, fit_gradient_boosting


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5)).astype(np.float32)
    z = 1.5 * x[:, 0] - x[:, 1] ** 2 + 0.5 * x[:, 2] * x[:, 3] + rng.normal(size=n)
    return x, (z > 0.5).astype(np.int8)


def test_gradient_boosting_trees_apply_exactly_in_numpy() -> None:
    x, y = _data(6000, 0)
    x[:40, 2] = np.nan  # missing values follow the node's learned side
    params = json.loads(json.dumps(fit_gradient_boosting(x[:4000], y[:4000], x[4000:], y[4000:])))
    assert [p["max_leaf_nodes"] for p in params["search"]] == [g["max_leaf_nodes"] for g in GB_GRID]
    best = min(params["search"], key=lambda p: p["tune_log_loss"])
    assert params["max_leaf_nodes"] == best["max_leaf_nodes"]
    assert params["trees_kept"] == best["best_trees"] == len(params["trees"])
    point = {k: params[k] for k in ("max_leaf_nodes", "min_samples_leaf", "l2_regularization")}
    reference = HistGradientBoostingClassifier(
        learning_rate=GB_LEARNING_RATE,
        max_iter=params["trees_kept"],
        early_stopping=False,
        random_state=0,
        **point,
    ).fit(x, y)  # the refit: fit rows and tuning slice together
    expected = reference.predict_proba(x)[:, 1]
    np.testing.assert_allclose(predict_gradient_boosting(params, x), expected, atol=1e-12)
    # Stored with its column count, it reads only those columns of a wider matrix (the dense
    # features before the recent sequence).
    wider = np.hstack([x, np.full((x.shape[0], 3), 1e6, np.float32)])
    params["columns"] = x.shape[1]
    np.testing.assert_allclose(predict_gradient_boosting(params, wider), expected, atol=1e-12)
    assert metrics.roc_auc(y, expected) > 0.8  # it learned the interactions


@pytest.mark.train
def test_platt_folded_into_the_output_layer_equals_platt_applied_after() -> None:
    from model_export import selection
    from model_export.train import _configure_tensorflow

    x, y = _data(3000, 1)
    _configure_tensorflow(threads=1, seed=0)
    model = selection.build_model(x, float(y.mean()), 1e-2, l2=1e-3, wide=True)
    model.fit(x, y.astype(np.float32), epochs=2, batch_size=256, verbose=0)
    before = selection.predict(model, x)
    a, c = selection.fit_platt(before, y)
    assert a > 0
    selection.fold_platt(model, a, c)
    np.testing.assert_allclose(
        selection.predict(model, x), selection.apply_platt(before, a, c), atol=2e-6
    )
    # The fitted scaling is the maximum-likelihood one: it never does worse than none.
    assert metrics.log_loss(y, selection.predict(model, x)) <= metrics.log_loss(y, before)


@pytest.mark.train
def test_the_network_with_the_best_tuning_roc_auc_is_chosen() -> None:
    from model_export.selection import FittedNetwork, NetworkSpec, choose

    def net(name: str, auc: float, loss: float) -> FittedNetwork:
        return FittedNetwork(
            NetworkSpec(name, 0.0, 0.0), None, 1, 1, {"roc_auc": auc, "log_loss": loss}
        )

    assert choose([net("a", 0.61, 0.3), net("b", 0.64, 0.4), net("c", 0.62, 0.2)]).spec.name == "b"
    assert choose([net("a", 0.64, 0.3), net("b", 0.64, 0.2)]).spec.name == "b"
