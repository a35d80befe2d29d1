"""The worker's agent, timers and rebalance hooks, all thin: the batch runner does the work.

The ``track_interest`` and ``erase_profiles`` agents are declared so that Faust subscribes the
input and erase-command topics and co-partitions the profile table with them; their records
never reach them (``faust_compat``'s ``BatchConsumer`` hands them to ``streams.worker.runner``
first), and one that did would stop the worker rather than be acknowledged unprocessed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from streams.worker.context import Worker
from streams.worker.gc_pauses import freeze_startup_heap
from streams.worker.retention import INTERVAL_SECONDS
from streams.worker.sending import score_rows

log = logging.getLogger("intentflow.worker")


def register(w: Worker) -> None:
    """Attach the agent, timers and rebalance hooks to the worker's app."""
    app, settings, runner = w.app, w.settings, w.runner

    @app.agent(w.events_topic, name="track_interest", concurrency=1)
    async def track_interest(stream: Any) -> None:
        await _refuse(stream)

    @app.agent(w.erasure_topic, name="erase_profiles", concurrency=1)
    async def erase_profiles(stream: Any) -> None:
        await _refuse(stream)

    @app.timer(settings.model_poll_seconds)
    async def reload_model() -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(w.executor, w.models.poll)
        except Exception:  # the serving model stays; the next poll tries again
            w.metrics.errors.labels("model_reload").inc()
            log.exception("model poll failed")

    @app.timer(INTERVAL_SECONDS)
    async def expire_idle_profiles() -> None:
        await runner.retention.step()  # one slice of a few milliseconds

    @app.timer(settings.checkpoint_interval_seconds)
    async def checkpoint() -> None:
        await runner.checkpoint_if_due()  # an idle input still delivers and commits

    if w.throttle_policy is not None:

        @app.timer(max(0.2, settings.score_interval_seconds / 4))
        async def flush_throttled() -> None:
            async with runner.lock:  # the scores join the runner's next checkpoint
                runner.pending.sends.extend(await score_due(w))

    @app.on_partitions_assigned.connect
    async def on_assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        if w.freeze_startup_heap and not w.assigned_once:  # up: what exists now stays
            freeze_startup_heap()
        w.assigned_once = True
        runner.on_assigned()

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        revoked = set(args[0] if args else kwargs.get("revoked", ()))
        await runner.on_revoked(revoked)
        # A partition that moved to another worker is that worker's to report.
        for tp in revoked:
            if tp.topic == settings.topic_events:
                w.processed_offsets.pop(tp.partition, None)
                with contextlib.suppress(KeyError):  # never reported
                    w.metrics.consumer_lag.remove(tp.topic, str(tp.partition))


async def _refuse(stream: Any) -> None:
    async for event in stream.events():
        raise RuntimeError(
            f"record {event.message.tp}@{event.message.offset} reached Faust's stream: the "
            "batch consumer is not installed (streams.worker.faust_compat)"
        )


async def score_due(w: Worker) -> list[Any]:
    """Score the throttled rows whose window closed; their delivery awaitables."""
    return await score_rows(w, w.throttle.due(time.time()))
