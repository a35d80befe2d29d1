"""Training writes the reference of reasons and drift into the bundle: the mean and the decile
histograms of the train split's features, exactly."""

from __future__ import annotations

import numpy as np
import pytest

from model_export.dataset import build_dataset, read_events, time_split
from streams.features import FEATURE_SPEC
from streams.features.reference import fit_reference
from streams.model.bundle import REFERENCE_FILE, load_bundle
from tests.model_fixtures import TinyBundle

pytestmark = pytest.mark.train


def test_the_bundle_holds_the_train_splits_mean_and_histograms(tiny_bundle: TinyBundle) -> None:
    bundle = load_bundle(tiny_bundle.path)
    assert bundle.reference is not None and (tiny_bundle.path / REFERENCE_FILE).is_file()
    meta = bundle.metadata
    data = build_dataset(
        read_events(tiny_bundle.events).events, meta["horizon_seconds"], bundle.embeddings
    )
    train, _ = time_split(data, meta["training"]["split"]["quantile"])
    assert bundle.reference.rows == len(train) == meta["reference"]["rows"]
    want = fit_reference(train.X)
    np.testing.assert_array_equal(bundle.reference.mean, want.mean)
    np.testing.assert_allclose(
        bundle.reference.mean, train.X.astype(np.float64).mean(axis=0), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_array_equal(bundle.reference.expected, want.expected)
    groups = meta["reference"]["feature_groups"]
    assert sorted(n for names in groups.values() for n in names) == sorted(FEATURE_SPEC.names)
