"""The numpy metrics agree with scikit-learn; the learned embeddings mean something."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from model_export import metrics
from model_export.embeddings import learn_embeddings, ppmi_matrix, session_baskets
from streams.features import EMBEDDING_DIM
from tests.model_fixtures import T0, ev


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_scikit_learn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.random(3000) < 0.2
    p = np.clip(0.2 + 0.3 * y + rng.normal(0, 0.2, 3000), 0, 1)
    p = np.round(p, 2)  # plenty of ties
    assert metrics.roc_auc(y, p) == pytest.approx(skm.roc_auc_score(y, p), abs=1e-12)
    assert metrics.pr_auc(y, p) == pytest.approx(skm.average_precision_score(y, p), abs=1e-12)
    assert metrics.log_loss(y, p) == pytest.approx(
        skm.log_loss(y, np.clip(p, 1e-7, 1 - 1e-7)), abs=1e-9
    )
    fpr, tpr = metrics.roc_curve(y, p)
    assert np.trapezoid(tpr, fpr) == pytest.approx(metrics.roc_auc(y, p), abs=1e-12)


def test_ece_is_zero_when_calibrated_and_large_when_not() -> None:
    p = np.repeat([0.1, 0.5, 0.9], 1000)
    y = np.concatenate([np.arange(1000) < k for k in (100, 500, 900)])
    assert metrics.ece(y, p) == pytest.approx(0.0, abs=1e-12)
    assert metrics.ece(y, np.full(3000, 0.99)) == pytest.approx(0.99 - 0.5, abs=1e-12)
    summary = metrics.summary(y, p)
    assert summary["rows"] == 3000 and summary["positives"] == 1500


def test_single_class_gives_none_not_nan() -> None:
    s = metrics.summary(np.zeros(10), np.linspace(0, 1, 10))
    assert s["roc_auc"] is None and s["pr_auc"] is None


def test_sessions_split_on_the_inactivity_gap() -> None:
    events = [
        ev("view", T0, category="a"),
        ev("view", T0 + 60, category="b"),
        ev("view", T0 + 60, category="a"),
        ev("search", T0 + 70),
        ev("view", T0 + 60 + 1801, category="c"),
        ev("view", T0 + 100, user="u2", category="a"),
    ]
    assert sorted(map(sorted, session_baskets(events))) == [["a"], ["a", "b"], ["c"]]


def _co_browsing_events() -> list:
    """Two groups of categories that are browsed together, never across groups."""
    rng = np.random.default_rng(0)
    groups = [[f"g0_{i}" for i in range(12)], [f"g1_{i}" for i in range(12)]]
    events, t = [], T0
    for s in range(600):
        group = groups[s % 2]
        for cat in rng.choice(group, size=4, replace=False):
            events.append(ev("view", t, user=f"u{s}", category=str(cat)))
            t += 10
        t += 4000
    return events


def test_co_browsed_categories_get_similar_vectors() -> None:
    events = _co_browsing_events()
    emb = learn_embeddings(events)
    assert len(emb) == 24 and emb.matrix.shape == (24, EMBEDDING_DIM)
    np.testing.assert_allclose(np.linalg.norm(emb.matrix, axis=1), 1.0, rtol=1e-5)
    a, b, c = emb.vector("g0_0"), emb.vector("g0_1"), emb.vector("g1_0")
    assert float(a @ b) > float(a @ c) + 0.3
    again = learn_embeddings(events)
    np.testing.assert_array_equal(again.matrix, emb.matrix)  # deterministic


def test_ppmi_ignores_rare_and_solitary_categories() -> None:
    ids, ppmi = ppmi_matrix([["a", "b"], ["a", "b"], ["c"], ["a", "d"]], min_count=2)
    assert ids == ["a", "b"]
    assert ppmi.shape == (2, 2)
    assert learn_embeddings([ev("view", T0, category="solo")]).ids == ()
