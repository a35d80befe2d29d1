"""What the worker's agents, timers and pages share: one object, built by ``create_app``."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import faust

from streams.model.server import ModelServer
from streams.privacy.pseudonyms import Pseudonymizer
from streams.processing.step import StepConfig
from streams.processing.throttle import Throttle
from streams.settings import Settings
from streams.worker.metrics import Metrics

if TYPE_CHECKING:
    from streams.worker.runner import BatchRunner


@dataclass
class Worker:
    """Everything the agents use: the app, its channels, state holders and metrics."""

    settings: Settings
    app: faust.App
    events_topic: Any
    scores_topic: Any
    dlq_topic: Any
    erasure_topic: Any
    profiles: Any  # faust Table[bytes, bytes]: user_id -> streams.processing.envelope bytes
    metrics: Metrics
    models: ModelServer
    throttle: Throttle
    executor: ThreadPoolExecutor
    step_config: StepConfig
    changelog_topic: str
    pseudonyms: Pseudonymizer
    runner: BatchRunner = field(init=False)  # set by create_app
    # partition -> offset of the last record this worker processed (for the lag gauge)
    processed_offsets: dict[int, int] = field(default_factory=dict)
    assigned_once: bool = False
    # the worker process (not a test) freezes its start-up heap at the first assignment
    freeze_startup_heap: bool = False

    @property
    def throttle_policy(self) -> Throttle | None:
        """The throttle, when the throttled scoring policy is on."""
        throttled = self.settings.scoring_policy.value == "throttled"
        return self.throttle if throttled else None
