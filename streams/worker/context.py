"""What the worker's agents, timers and pages share: one object, built by ``create_app``."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import faust

from streams.model.server import ModelServer
from streams.processing.throttle import Throttle
from streams.settings import Settings
from streams.worker.gapfill import GapFiller
from streams.worker.metrics import Metrics


@dataclass
class Worker:
    """Everything the agents use: the app, its channels, state holders and metrics."""

    settings: Settings
    app: faust.App
    events_topic: Any
    scores_topic: Any
    dlq_topic: Any
    profiles: Any  # faust Table[bytes, bytes]: user_id -> streams.processing.envelope bytes
    metrics: Metrics
    models: ModelServer
    throttle: Throttle
    executor: ThreadPoolExecutor
    gaps: GapFiller
    # partition -> offset of the last record this worker processed (for the lag gauge)
    processed_offsets: dict[int, int] = field(default_factory=dict)
    # partition -> next input offset to apply (streams.worker.agents.in_offset_order)
    next_offsets: dict[int, int] = field(default_factory=dict)
    assigned_once: bool = False
