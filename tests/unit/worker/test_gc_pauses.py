"""The collector's pauses are timed per generation, and the start-up heap leaves its passes."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from streams.worker.gc_pauses import YOUNG_THRESHOLD, GcPauses, freeze_startup_heap
from streams.worker.metrics import Metrics


@pytest.fixture
def unfrozen() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def _count(metrics: Metrics, generation: str) -> float:
    value = metrics.registry.get_sample_value(
        "intentflow_gc_pause_seconds_count", {"generation": generation}
    )
    assert value is not None
    return value


def test_each_collection_is_timed_by_generation() -> None:
    metrics = Metrics()
    pauses = GcPauses(metrics.gc_pause)
    pauses.install()
    try:
        gc.collect(0)
        gc.collect()
        gc.collect()
    finally:
        pauses.remove()
    assert _count(metrics, "0") == 1 and _count(metrics, "2") == 2
    total = metrics.registry.get_sample_value(
        "intentflow_gc_pause_seconds_sum", {"generation": "2"}
    )
    assert total is not None and total > 0
    gc.collect()  # removed: no longer counted
    assert _count(metrics, "2") == 2


def test_the_frozen_start_up_heap_is_not_walked_again(unfrozen: None) -> None:
    survivors = [[i] for i in range(50_000)]  # long-lived containers, as after start-up
    frozen = freeze_startup_heap()
    assert frozen >= len(survivors) and gc.get_freeze_count() == frozen
    # A full pass now walks only what was made since: far fewer objects than were frozen.
    assert len(gc.get_objects()) < frozen // 2
    del survivors


def test_young_collections_wait_for_more_allocations_once_up(unfrozen: None) -> None:
    _, middle, old = gc.get_threshold()
    freeze_startup_heap()
    assert gc.get_threshold() == (YOUNG_THRESHOLD, middle, old)
    young = gc.get_stats()[0]["collections"]
    batch = [{"row": i} for i in range(YOUNG_THRESHOLD // 2)]  # fewer than the threshold
    assert gc.get_stats()[0]["collections"] == young
    del batch
