"""Serves one model bundle and swaps in a new one when ``model_path`` changes (hot reload).

A bundle that is missing, corrupt or built for another feature spec is refused: the previous
model keeps serving, and a log line and the ``on_outcome`` callback (the worker counts it in
``intentflow_model_reloads_total{outcome}``) say why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from streams.errors import FeatureSpecMismatchError, ModelError, ModelNotFoundError
from streams.model.bundle import ModelBundle, bundle_fingerprint, load_bundle

log = logging.getLogger("intentflow.model")


class ModelServer:
    """Holds the serving bundle. ``bundle`` is swapped atomically (one attribute write)."""

    def __init__(
        self,
        path: Path,
        *,
        threads: int,
        on_outcome: Callable[[str, ModelBundle | None], None] | None = None,
    ) -> None:
        self.path = path
        self.threads = threads
        # Called with each load's outcome ("loaded", "missing", "corrupt", "spec_mismatch")
        # and, when loaded, the new bundle.
        self.on_outcome = on_outcome or (lambda outcome, bundle: None)
        self.bundle: ModelBundle | None = None
        self._fingerprint: str | None = None
        self._refused: str | None = None  # fingerprint last refused, to log it once

    def load_initial(self) -> ModelBundle:
        """Load the bundle at start-up; raise the ModelError if there is none to serve."""
        fingerprint = bundle_fingerprint(self.path)
        try:
            bundle = load_bundle(self.path, threads=self.threads)
        except ModelError as exc:
            self.on_outcome(_outcome(exc), None)
            raise
        self._install(bundle, fingerprint)
        return bundle

    def poll(self) -> str:
        """Check ``path`` once; load a changed bundle. Returns the outcome label."""
        fingerprint = bundle_fingerprint(self.path)
        if fingerprint is not None and fingerprint in (self._fingerprint, self._refused):
            return "unchanged"
        if fingerprint is None and self._refused == "missing":
            return "unchanged"
        try:
            bundle = load_bundle(self.path, threads=self.threads)
        except ModelError as exc:
            outcome = _outcome(exc)
            self._refused = fingerprint or "missing"
            self.on_outcome(outcome, None)
            serving = self.bundle.model_version if self.bundle else "none"
            log.error("model reload refused (%s): %s; still serving %s", outcome, exc, serving)
            return outcome
        self._install(bundle, fingerprint)
        return "loaded"

    def _install(self, bundle: ModelBundle, fingerprint: str | None) -> None:
        previous = self.bundle.model_version if self.bundle else None
        self.bundle = bundle
        self._fingerprint = fingerprint
        self._refused = None
        self.on_outcome("loaded", bundle)
        if previous is None:
            log.info("serving model %s from %s", bundle.model_version, bundle.path)
        else:
            log.info("model reloaded: %s -> %s (%s)", previous, bundle.model_version, bundle.path)
        if bundle.arms is None:
            log.info(
                "model %s has no exploration arms (arms.npz): exploration is off and v2 scores "
                "carry exploration null; retrain the model to turn it on",
                bundle.model_version,
            )


def _outcome(exc: ModelError) -> str:
    if isinstance(exc, ModelNotFoundError):
        return "missing"
    if isinstance(exc, FeatureSpecMismatchError):
        return "spec_mismatch"
    return "corrupt"
