"""Feature groups (declared once in the spec), the training reference, PSI and occlusion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streams.errors import DataError
from streams.features import (
    EMBEDDING_DIM,
    FEATURE_NAMES,
    FEATURE_SPEC,
    CategoryEmbeddings,
    feature_vector,
    top_categories,
)
from streams.features.occlusion import interests_without, occlude_groups
from streams.features.reference import (
    BINS,
    DriftWindow,
    Reference,
    fit_reference,
    group_psi,
    psi,
)
from streams.features.vector import FEATURE_GROUPS, GROUP_DESCRIPTIONS, GROUP_NAMES
from tests.model_fixtures import T0, ev
from tests.model_fixtures import replay as run

# The hash of feature spec version 1 before groups were declared: bundles trained then must
# keep loading, so declaring groups may not change it.
# Version 2 (item memory, open cart, repeats, propensity, the recent sequence); version 1 was
# 7cde99b6d9a7...
SPEC_V2_HASH = "b0e72edeedce6fa519ad563801a9b91eda113561007ef8b4fe00479dbe254ed8"


def test_every_feature_has_one_group_declared_in_the_spec_and_the_hash_is_unchanged() -> None:
    assert FEATURE_SPEC.hash == SPEC_V2_HASH
    assert FEATURE_SPEC.groups == FEATURE_GROUPS
    assert len(FEATURE_GROUPS) == len(FEATURE_NAMES)
    columns = FEATURE_SPEC.group_columns()
    assert tuple(columns) == GROUP_NAMES == tuple(GROUP_DESCRIPTIONS)
    together = np.sort(np.concatenate(list(columns.values())))
    np.testing.assert_array_equal(together, np.arange(len(FEATURE_NAMES)))  # a partition
    names = {g: {FEATURE_NAMES[c] for c in cols.tolist()} for g, cols in columns.items()}
    assert {"price_log", "price_missing", "price_rel_log"} == names["price"]
    assert "session_carts_log" in names["session_carts"]
    assert {"cart_age_log", "item_in_cart", "count_short_add_to_cart_log"} <= names["cart"]
    assert all(n.startswith("interest_") for n in names["interests"])
    assert {"item_new", "item_gap_log", "item_carts_log"} <= names["item"]
    assert {"cart_open_log", "item_cart_age_log"} <= names["cart"]
    assert names["propensity"] == {"conversion_rate", "conversion_rate_long"}
    assert len(names["sequence"]) == 48 and all(n.startswith("seq_") for n in names["sequence"])
    assert len(GROUP_NAMES) == 15


def test_groups_are_not_part_of_the_hash() -> None:
    regrouped = type(FEATURE_SPEC)(
        FEATURE_SPEC.version,
        FEATURE_SPEC.names,
        FEATURE_SPEC.dtype,
        FEATURE_SPEC.params,
        ("x",) * len(FEATURE_SPEC.names),
    )
    assert regrouped.hash == FEATURE_SPEC.hash
    with pytest.raises(ValueError, match="groups"):
        type(FEATURE_SPEC)("1", ("a", "b"), "float32", (), ("g",)).group_columns()


def _training(n: int = 5000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    x[:, 1] = rng.random(n) < 0.2  # binary
    x[:, 2] = 3.0  # constant
    x[:, 3] = np.round(rng.exponential(2.0, n))  # repeated values
    return x.astype(np.float32)


def test_reference_holds_the_training_mean_and_decile_histograms() -> None:
    x = _training()
    ref = fit_reference(x)
    np.testing.assert_allclose(ref.mean, x.astype(np.float64).mean(axis=0), rtol=1e-6)
    assert ref.rows == len(x)
    np.testing.assert_allclose(ref.expected.sum(axis=1), 1.0)
    # A continuous feature: ten bins of about a tenth each.
    np.testing.assert_allclose(ref.expected[0], 0.1, atol=0.002)
    # Binary and constant features: only the bins their values can fall in are used.
    assert np.count_nonzero(ref.expected[1]) == 2
    assert np.count_nonzero(ref.expected[2]) == 1
    assert ref.bin_counts(x).sum(axis=1).tolist() == [len(x)] * 4
    # The same rows score a PSI of (about) zero against their own reference.
    assert psi(ref.expected, ref.bin_counts(x)).max() < 1e-9


def test_reference_round_trips_and_a_bad_file_is_named(tmp_path: Path) -> None:
    ref = fit_reference(_training())
    ref.save(tmp_path / "reference.npz")
    back = Reference.load(tmp_path / "reference.npz")
    np.testing.assert_array_equal(back.mean, ref.mean)
    np.testing.assert_array_equal(back.edges, ref.edges)
    np.testing.assert_array_equal(back.expected, ref.expected)
    assert back.rows == ref.rows
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"bad\.npz"):
        Reference.load(tmp_path / "bad.npz")
    with pytest.raises(DataError, match="does not exist"):
        Reference.load(tmp_path / "missing.npz")
    with pytest.raises(ValueError, match="shapes"):
        Reference(ref.mean, ref.edges[:, :3], ref.expected, 1)


def test_psi_is_the_textbook_formula_and_grows_with_a_shift() -> None:
    expected = np.array([[0.25, 0.25, 0.5]])
    counts = np.array([[50, 30, 20]])
    a = np.array([0.5, 0.3, 0.2])
    e = expected[0]
    assert psi(expected, counts)[0] == pytest.approx(float(((a - e) * np.log(a / e)).sum()))
    ref = fit_reference(_training())
    shifted = _training(seed=1)
    shifted[:, 0] += 1.0
    values = psi(ref.expected, ref.bin_counts(shifted))
    assert values[0] > 0.25 and values[1:].max() < 0.01
    groups = {"a": np.array([0, 1]), "b": np.array([2, 3])}
    assert group_psi(values, groups) == {"a": values[0], "b": max(values[2], values[3])}


def test_drift_window_decays_old_rows_and_waits_for_enough_of_them() -> None:
    ref = fit_reference(_training())
    window = DriftWindow(ref, half_life_s=60.0, min_rows=500)
    fresh = _training(seed=2)
    window.add(fresh[:100], 0.0)
    assert window.psi() is None  # 100 rows: not enough to say
    window.add(fresh[100:2000], 1.0)
    before = window.psi()
    assert before is not None and before.max() < 0.05
    shifted = _training(seed=3)
    shifted[:, 0] *= 3.0
    for i in range(0, 5000, 250):  # a batch of a shifted stream every 10 s: the old rows fade
        window.add(shifted[i : i + 250], 10.0)
    after = window.psi()
    assert after is not None and after[0] > 0.25 and after[1:].max() < 0.05
    # The weight held is the decayed row count: 250 rows every 10 s with a 60 s half-life.
    decay = 0.5 ** (10 / 60)
    assert window.weight == pytest.approx(250 / (1 - decay), rel=0.05)
    window.add(shifted[:0], 0.0)  # an empty batch at once changes nothing
    np.testing.assert_array_equal(window.psi(), after)
    window.add(shifted[:0], 3600.0)  # an hour without rows: too little left to say
    assert window.psi() is None
    assert window.counts.shape == (4, BINS)


def test_occluded_groups_take_the_reference_and_nothing_else() -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    reference = np.array([-1, -2, -3, -4], dtype=np.float32)
    out = occlude_groups(x, reference, [np.array([0]), np.array([1, 3])])
    assert out.shape == (6, 4)
    np.testing.assert_array_equal(out[:3, 0], -1)
    np.testing.assert_array_equal(out[:3, 1:], x[:, 1:])
    np.testing.assert_array_equal(out[3:, [1, 3]], np.tile([-2, -4], (3, 1)))
    np.testing.assert_array_equal(out[3:, [0, 2]], x[:, [0, 2]])


def test_an_interest_left_out_equals_the_embedding_computed_without_it() -> None:
    emb = CategoryEmbeddings.empty()  # hashed vectors
    events = [
        ev("view", T0, category="a"),
        ev("view", T0 + 60, category="b"),
        ev("add_to_cart", T0 + 120, category="a"),
        ev("view", T0 + 180, category="c"),
    ]
    p = run(events)
    full = feature_vector(p, events[-1], emb)[:EMBEDDING_DIM]
    tops = top_categories(p, 3)
    got = interests_without(
        np.tile(full, (len(tops), 1)), [c for c, _ in tops], np.array([s for _, s in tops]), emb
    )
    for row, (cat, _) in zip(got, tops, strict=True):
        rest = {c: w for c, w in p.weights.items() if c != cat}
        want = sum(w * emb.vector(c).astype(np.float64) for c, w in rest.items()) / sum(
            rest.values()
        )
        np.testing.assert_allclose(row, want, atol=1e-6)
    # The only interest left out: no interest at all, the zero vector.
    alone = run([ev("view", T0, category="z")])
    only = feature_vector(alone, ev("view", T0, category="z"), emb)[:EMBEDDING_DIM]
    zero = interests_without(only[None, :], ["z"], np.array([1.0]), emb)
    np.testing.assert_array_equal(zero, np.zeros((1, EMBEDDING_DIM), dtype=np.float32))
    assert interests_without(np.zeros((0, EMBEDDING_DIM)), [], np.zeros(0), emb).shape == (
        0,
        EMBEDDING_DIM,
    )


def test_every_reason_code_is_explained_in_the_readme() -> None:
    from tests.conftest import REPO_ROOT

    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    lines = readme[readme.index("| Code | What it means |") :].splitlines()[2:]
    rows = [line for line in lines[: next(i for i, x in enumerate(lines) if not x.startswith("|"))]]
    documented = [row.split("`")[1] for row in rows]
    assert documented == list(GROUP_NAMES)
    assert all(len(row.split("|")[2].strip()) > 20 for row in rows)  # a sentence each
