"""``intentflow worker`` with candidate performance fixes applied as patches (bench only).

The worker's code is not changed here: this launcher patches the imported modules before the
worker starts, so a fix can be measured before anyone writes it into ``streams/``. Choose
patches with ``BENCH_WORKER_PATCHES`` (comma separated):

* ``no_faust_prometheus``: no Faust ``PrometheusMonitor`` (which updates labelled Prometheus
  series for every message, event, send and table access); ``/metrics`` still serves the
  worker's own registry, and Faust keeps its default in-memory ``Monitor``.
* ``noop_monitor``: also replace Faust's default ``Monitor`` with one whose per-message hooks
  do nothing (the worker reads none of its statistics).
* ``quiet_prometheus``: keep Faust's ``PrometheusMonitor`` (its rebalance, commit, recovery
  and error series feed the Grafana dashboard) but make its per-message hooks no-ops; this is
  the recommended form of ``noop_monitor``.
* ``direct_send``: publish scores through the transport producer (``app.producer.send``,
  aiokafka underneath) instead of ``Topic.send``, skipping Faust's channel, ``FutureMessage``
  and callback layers; still one awaited delivery future per score.
* ``batch_observe``: observe the latency histograms once per batch (its maximum) instead of
  once per score.
* ``inline_scoring``: run ``score_rows`` (feature_matrix + onnxruntime) on the event loop
  instead of handing it to the one-thread executor (under the GIL the thread buys no
  parallelism for the numpy-heavy feature code, only a hop and contention).
* ``fast_recovery``: Faust's changelog recovery loop (``Recovery._slurp_changelogs``) takes
  each record with ``asyncio.wait_for(queue.get())`` (a task and a timer per record),
  formats two debug f-strings, and recounts the remaining offsets of every partition after
  every record. The patch takes records with ``get_nowait()`` while the queue has some, and
  checks for the end of recovery only when the queue is empty.
* ``max_poll_records``: pass ``broker_max_poll_records=$BENCH_MAX_POLL_RECORDS`` (default
  10000) to Faust instead of ``max(500, 2 * batch_max)``; the agent's batches stay the same.
  With ``BENCH_STREAM_BUFFER_MAXSIZE`` also ``stream_buffer_maxsize`` (default: unchanged).
* ``fetch_batching``: every aiokafka consumer of the worker asks the broker to hold a fetch
  until ``$BENCH_FETCH_MIN_BYTES`` (default 65536) are there or ``$BENCH_FETCH_MAX_WAIT_MS``
  (default 10) passed. Faust leaves ``fetch_min_bytes`` at 1, so when events trickle in
  every fetch returns a few records and the next one goes out at once.
* ``dict_state``: keep profiles in a Python dict instead of the Faust RocksDB table (no
  changelog, no persistence: NOT a fix, it measures what the table costs).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

PATCHES = {p.strip() for p in os.environ.get("BENCH_WORKER_PATCHES", "").split(",") if p.strip()}
KNOWN = {
    "fetch_batching",
    "quiet_prometheus",
    "no_faust_prometheus",
    "noop_monitor",
    "direct_send",
    "batch_observe",
    "inline_scoring",
    "dict_state",
    "fast_recovery",
    "max_poll_records",
}


def _patch_recovery() -> None:
    """Rewrite three spots of ``Recovery._slurp_changelogs`` (see the module docstring)."""
    import inspect
    import textwrap

    from faust.tables import recovery

    task = recovery.Recovery.__dict__["_slurp_changelogs"]  # a mode ServiceTask
    src = inspect.getsource(task.fun)  # edited as written (indented), dedented after
    edits = [
        (
            """                    event: EventT = await asyncio.wait_for(
                        changelog_queue.get(), timeout=5.0
                    )""",
            """                    if changelog_queue.empty():
                        event = await asyncio.wait_for(changelog_queue.get(), timeout=5.0)
                    else:
                        event = changelog_queue.get_nowait()""",
        ),
        ('logger.debug(f"Recovery message topic {tp} offset {offset}")', "pass"),
        (
            """logger.debug(
                    f"seen offset for {tp} is {seen_offset} message offset {offset}"
                )""",
            "pass",
        ),
        (
            """                await _maybe_signal_recovery_end()

                standby_ready""",
            """                if not changelog_queue.empty():
                    continue
                await _maybe_signal_recovery_end()

                standby_ready""",
        ),
    ]
    for old, new in edits:
        if old not in src:
            raise SystemExit(f"fast_recovery: this Faust version differs; not found:\n{old}")
        src = src.replace(old, new)
    src = textwrap.dedent(src)
    namespace: dict[str, Any] = {}
    exec(compile(src, recovery.__file__, "exec"), vars(recovery), namespace)
    task.fun = namespace["_slurp_changelogs"]


def _metrics_page_only(app: Any, registry: Any, name_prefix: str | None = None) -> None:
    from aiohttp.web import Response
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    @app.page("/metrics")
    async def metrics_handler(self: Any, request: Any) -> Any:
        return Response(
            body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )


def _quiet_monitor_class() -> type:
    """Faust's default in-memory Monitor with the same per-message hooks silenced as the
    worker's own ``streams.app.BatchLevelMonitor``."""
    from faust.sensors import Monitor

    from streams.app import BatchLevelMonitor

    hooks = {
        name: fn
        for name, fn in vars(BatchLevelMonitor).items()
        if name.startswith("on_") and name != "on_send_error"
    }
    return type("QuietMonitor", (Monitor,), hooks)


def _batch_level_monitor_class() -> type:
    """Now the worker's own monitor (the fix this experiment measured has landed)."""
    from streams.app import BatchLevelMonitor

    return BatchLevelMonitor


def apply() -> None:
    unknown = PATCHES - KNOWN
    if unknown:
        raise SystemExit(f"BENCH_WORKER_PATCHES: unknown {sorted(unknown)}; known {sorted(KNOWN)}")
    import streams.app as app_module
    from streams import agents

    if "fast_recovery" in PATCHES:
        _patch_recovery()
    if "fetch_batching" in PATCHES:
        import aiokafka

        min_bytes = int(os.environ.get("BENCH_FETCH_MIN_BYTES", "65536"))
        max_wait = int(os.environ.get("BENCH_FETCH_MAX_WAIT_MS", "10"))
        consumer_init = aiokafka.AIOKafkaConsumer.__init__

        def init(self: Any, *args: Any, **kwargs: Any) -> None:
            kwargs["fetch_min_bytes"] = min_bytes
            kwargs["fetch_max_wait_ms"] = max_wait
            consumer_init(self, *args, **kwargs)

        aiokafka.AIOKafkaConsumer.__init__ = init  # type: ignore[method-assign]
    if "max_poll_records" in PATCHES:
        import faust

        records = int(os.environ.get("BENCH_MAX_POLL_RECORDS", "10000"))
        buffer = os.environ.get("BENCH_STREAM_BUFFER_MAXSIZE")
        original_app = faust.App

        def app_with_poll_records(*args: Any, **kwargs: Any) -> Any:
            kwargs["broker_max_poll_records"] = records
            if buffer:
                kwargs["stream_buffer_maxsize"] = int(buffer)
            return original_app(*args, **kwargs)

        app_module.faust.App = app_with_poll_records  # type: ignore[attr-defined]

    if "quiet_prometheus" in PATCHES:
        setup_sensors = app_module.setup_prometheus_sensors
        monitor_class = _batch_level_monitor_class()

        def setup_quiet(app: Any, registry: Any, name_prefix: str | None = None) -> None:
            setup_sensors(app, registry=registry, name_prefix=name_prefix)
            app.monitor = monitor_class(metrics=app.monitor._metrics)

        app_module.setup_prometheus_sensors = setup_quiet  # type: ignore[assignment]

    if "no_faust_prometheus" in PATCHES or "noop_monitor" in PATCHES:
        quiet = _quiet_monitor_class() if "noop_monitor" in PATCHES else None

        def setup(app: Any, registry: Any, name_prefix: str | None = None) -> None:
            _metrics_page_only(app, registry)
            if quiet is not None:
                app.monitor = quiet(loop=app.loop, beacon=app.beacon)

        app_module.setup_prometheus_sensors = setup  # type: ignore[assignment]

    if "dict_state" in PATCHES:
        create = app_module.create_app

        def create_app(*args: Any, **kwargs: Any) -> Any:
            worker = create(*args, **kwargs)
            worker.profiles = {}
            return worker

        app_module.create_app = create_app  # type: ignore[assignment]
        agents.table_size = lambda w: len(w.profiles)  # type: ignore[assignment]

    if PATCHES & {"direct_send", "batch_observe", "inline_scoring"}:
        direct = "direct_send" in PATCHES
        inline = "inline_scoring" in PATCHES
        per_batch = "batch_observe" in PATCHES
        from streams.pipeline import encode_scores, score_rows

        async def publish_scores(w: Any, rows: Sequence[Any]) -> list[Any]:
            bundle = w.models.bundle
            metrics = w.metrics
            started = time.perf_counter()
            if inline:
                probabilities = score_rows(bundle, rows)
            else:
                probabilities = await asyncio.get_running_loop().run_in_executor(
                    w.executor, score_rows, bundle, rows
                )
            metrics.inference_duration.observe(time.perf_counter() - started)
            metrics.inference_batch_size.observe(len(rows))
            futures = []
            encoded = encode_scores(rows, probabilities, bundle, top_k=w.settings.top_categories)
            if direct:
                producer, topic = w.app.producer, w.settings.topic_scores
                for key, value in encoded:
                    futures.append(await producer.send(topic, key, value, None, None, None))
            else:
                for key, value in encoded:
                    futures.append(await w.scores_topic.send(key=key, value=value))
            handed = time.time()
            if per_batch:
                metrics.event_to_score_latency.observe(
                    max(0.0, handed - min(r.event.ts for r in rows))
                )
                metrics.ingest_to_score_latency.observe(
                    max(0.0, handed - min(r.record.consumed_at for r in rows))
                )
            else:
                for row in rows:
                    metrics.event_to_score_latency.observe(max(0.0, handed - row.event.ts))
                    metrics.ingest_to_score_latency.observe(
                        max(0.0, handed - row.record.consumed_at)
                    )
            for probability in probabilities.tolist():
                metrics.purchase_probability.observe(probability)
            metrics.scores_published.inc(len(rows))
            return futures

        agents.publish_scores = publish_scores  # type: ignore[assignment]


def main() -> None:
    apply()
    from streams.cli import main as cli

    sys.argv = ["intentflow", "worker"]
    cli()


if __name__ == "__main__":
    main()
