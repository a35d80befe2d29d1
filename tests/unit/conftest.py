"""Fixtures of the unit tests. The trained bundle is built once per session, lazily: only tests
that ask for it (all marked ``train``) pay for TensorFlow."""

from __future__ import annotations

import pytest

from tests.model_fixtures import TinyBundle, train_tiny_bundle


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> TinyBundle:
    """A real bundle (Keras -> ONNX) trained on a small synthetic log."""
    return train_tiny_bundle(tmp_path_factory.mktemp("tiny-bundle"))
