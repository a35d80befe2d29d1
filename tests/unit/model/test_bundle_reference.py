"""The bundle's training reference: read when present, None for older bundles (which keep
serving), refused as corrupt when unreadable or of the wrong width."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streams.errors import ModelCorruptError
from streams.features import FEATURE_SPEC
from streams.features.reference import Reference, fit_reference
from streams.model.bundle import REFERENCE_FILE, load_bundle
from tests.bundles import make_bundle


def _reference(n_features: int = len(FEATURE_SPEC.names)) -> Reference:
    rng = np.random.default_rng(0)
    return fit_reference(rng.normal(size=(500, n_features)).astype(np.float32))


def test_a_bundle_with_a_reference_serves_it(tmp_path: Path) -> None:
    reference = _reference()
    bundle = load_bundle(make_bundle(tmp_path / "b", "with-ref", reference=reference))
    assert bundle.reference is not None
    np.testing.assert_array_equal(bundle.reference.mean, reference.mean)
    np.testing.assert_array_equal(bundle.reference.expected, reference.expected)


def test_an_older_bundle_without_one_still_serves(tmp_path: Path) -> None:
    bundle = load_bundle(make_bundle(tmp_path / "b", "old"))
    assert bundle.reference is None
    assert bundle.predict(np.zeros((3, len(FEATURE_SPEC.names)), dtype=np.float32)).shape == (3,)


def test_a_bad_reference_is_corrupt_and_named(tmp_path: Path) -> None:
    path = make_bundle(tmp_path / "bad", "bad")
    (path / REFERENCE_FILE).write_bytes(b"garbage")
    with pytest.raises(ModelCorruptError, match=REFERENCE_FILE):
        load_bundle(path)
    narrow = make_bundle(tmp_path / "narrow", "narrow", reference=_reference(5))
    with pytest.raises(ModelCorruptError, match="describes 5 features"):
        load_bundle(narrow)
