"""Health pages (``/livez``, ``/readyz``) and the gauges that are sampled rather than counted."""

from __future__ import annotations

import logging
from typing import Any

from streams.worker import faust_compat
from streams.worker.context import Worker

log = logging.getLogger("intentflow.worker")


def register(w: Worker) -> None:
    """Attach the health pages and the sampling timer to the worker's app."""
    app = w.app

    @app.timer(5.0)
    async def observe() -> None:
        try:
            observe_state(w)
        except Exception:
            w.metrics.errors.labels("observe").inc()
            log.exception("sampling gauges failed")

    @app.page("/livez")
    async def livez(web: Any, request: Any) -> Any:
        return web.json({"status": "alive"})

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        checks = readiness(w)
        return web.json(checks, status=200 if all(checks.values()) else 503)


def readiness(w: Worker) -> dict[str, bool]:
    """The readiness checks: a model, partitions assigned, recovery done."""
    app = w.app
    return {
        "model_loaded": w.models.bundle is not None,
        "partitions_assigned": w.assigned_once and not app.rebalancing,
        "recovered": not app.in_recovery and w.assigned_once,
    }


def observe_state(w: Worker) -> None:
    """Refresh the sampled gauges: lag, table size, readiness."""
    metrics = w.metrics
    consumer = getattr(w.app, "_consumer", None)
    if consumer is not None:
        for tp in consumer.assignment():
            if tp.topic != w.settings.topic_events:
                continue
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            done = w.processed_offsets.get(tp.partition, -1) + 1
            metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(max(0, highwater - done))
    metrics.profile_users.set(faust_compat.rocksdb_key_estimate(w.profiles))
    metrics.ready.set(1 if all(readiness(w).values()) else 0)
