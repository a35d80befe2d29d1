"""Drift and freshness of the live features, observed once per batch.

- ``intentflow_feature_drift_psi{group}``: the scored rows' features (the matrix the model saw)
  are binned against the serving bundle's training histograms, one comparison and one
  ``bincount`` per batch, into a window decayed in wall-clock time (half-life
  ``INTENTFLOW_DRIFT_HALF_LIFE_SECONDS``); each group's PSI is that of its most drifted
  feature (``streams.features.reference``). Nothing is exported until the window holds
  MIN_ROWS rows, nor for a bundle without a reference; a new model starts a new window.
  The ``hour`` group is left out: a window of minutes holds minutes of the day, never the
  training data's spread over the whole day, so its PSI would always be large.
- ``intentflow_feature_freshness_seconds``: now minus the event time of the newest event this
  worker applied to a profile, computed when scraped, so it grows while no event arrives.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from streams.features import FEATURE_SPEC
from streams.features.reference import DriftWindow, Reference, group_psi
from streams.model.bundle import ModelBundle
from streams.processing.step import StepOutput
from streams.worker.metrics import Metrics

DRIFT_EXCLUDED_GROUPS = ("hour",)
DRIFT_GROUPS = {
    group: cols
    for group, cols in FEATURE_SPEC.group_columns().items()
    if group not in DRIFT_EXCLUDED_GROUPS
}
MIN_ROWS = 500.0  # decayed rows the window must hold before its PSI is exported


class FeatureMonitor:
    """The drift window of the serving model and the newest event time, with their gauges."""

    def __init__(
        self,
        metrics: Metrics,
        *,
        half_life_s: float,
        min_rows: float = MIN_ROWS,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.metrics = metrics
        self.half_life_s = half_life_s
        self.min_rows = min_rows
        self.clock = clock
        self.wall = wall
        self.window: DriftWindow | None = None
        self._reference: Reference | None = None
        self._last: float | None = None
        self.newest_event_ts: float | None = None
        metrics.feature_freshness.set_function(self.freshness)

    def freshness(self) -> float:
        """Seconds since the newest applied event's time (NaN before the first)."""
        if self.newest_event_ts is None:
            return math.nan
        return max(0.0, self.wall() - self.newest_event_ts)

    def observe(self, bundle: ModelBundle, out: StepOutput) -> None:
        """Take one batch's output: its profile updates and its scored features."""
        if out.applied.rows:
            newest = max(row.event.ts for row in out.applied.rows)
            if self.newest_event_ts is None or newest > self.newest_event_ts:
                self.newest_event_ts = newest
        if bundle.reference is not self._reference:  # a new model: a new window
            self._reference = bundle.reference
            self.window = None
            self._last = None
            self.metrics.feature_drift_psi.clear()
            if bundle.reference is not None:
                self.window = DriftWindow(
                    bundle.reference, half_life_s=self.half_life_s, min_rows=self.min_rows
                )
        features = out.scored.features
        if self.window is None or features is None or len(features) == 0:
            return
        now = self.clock()
        self.window.add(features, now - self._last if self._last is not None else 0.0)
        self._last = now
        per_feature = self.window.psi()
        if per_feature is None:
            return
        gauge = self.metrics.feature_drift_psi
        for group, value in group_psi(per_feature, DRIFT_GROUPS).items():
            gauge.labels(group).set(value)
