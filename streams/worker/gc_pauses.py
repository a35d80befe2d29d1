"""The garbage collector's pauses: measured, and kept short.

CPython's full (generation 2) collection walks every container object the process holds. In a
worker that is mostly what start-up made (Faust, aiokafka, onnxruntime, pydantic, the model
bundle): objects that live as long as the process and are never garbage. Each full pass walked
them again, and held the event loop for it (bench/retention.py: 55 ms of one 20 ms sweep slice,
a full pass over a heap of 89k objects). ``freeze_startup_heap`` moves what exists once the
worker is up into the collector's permanent generation (``gc.freeze``): still freed by
reference counting, no longer walked. Only objects made since are walked (cached profiles,
batches in flight).

It also raises the young generation's threshold (``YOUNG_THRESHOLD``): a batch of 500 events
allocates tens of thousands of container objects (rows, profiles, score dicts), so at CPython's
default of 700 a young collection ran dozens of times per batch, each walking the batch's
objects in flight again (8% of the pure step's CPU on the bench's shoppers). At 10,000 it runs
a few times per batch and each pass stays around a millisecond.

``GcPauses`` times every collection per generation into a histogram, so SREs see the pauses
the event loop takes (``intentflow_gc_pause_seconds``).
"""

from __future__ import annotations

import gc
import logging
import time
from typing import Any

from prometheus_client import Histogram

log = logging.getLogger("intentflow.worker")


YOUNG_THRESHOLD = 10_000  # allocations between young collections (CPython's default: 700)


def freeze_startup_heap() -> int:
    """Collect once, then exclude every surviving object from later collections, and raise
    the young generation's threshold to ``YOUNG_THRESHOLD``. Returns how many objects were
    frozen."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
    frozen = gc.get_freeze_count()
    log.info("froze %d start-up objects out of the garbage collector's full passes", frozen)
    return frozen


class GcPauses:
    """Observes each collection's duration into ``histogram`` (label: generation)."""

    def __init__(self, histogram: Histogram) -> None:
        self.histogram = histogram
        self.started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
        elif self.started:
            self.histogram.labels(str(info["generation"])).observe(
                time.perf_counter() - self.started
            )

    def install(self) -> None:
        if self not in gc.callbacks:
            gc.callbacks.append(self)

    def remove(self) -> None:
        if self in gc.callbacks:
            gc.callbacks.remove(self)
