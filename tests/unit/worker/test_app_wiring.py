"""How the Faust app is put together: every guarantee that rests on a setting is checked."""

from __future__ import annotations

from pathlib import Path

from mode import CrashingSupervisor

from streams.model.server import ModelServer
from streams.settings import load_settings
from streams.worker.app import changelog_topic_name, create_app
from streams.worker.metrics import Metrics


def test_app_declares_co_partitioned_topics_table_and_one_agent(tmp_path: Path) -> None:
    settings = load_settings(
        partitions=6, app_id="wiring", data_dir=tmp_path, rocksdb_block_cache_mb=32
    )
    metrics = Metrics()
    w = create_app(
        settings,
        models=ModelServer(settings.model_path, threads=1, on_outcome=metrics.model_outcome),
        metrics=metrics,
    )
    try:
        app = w.app
        assert app.conf.processing_guarantee.value == "at_least_once"
        assert app.conf.agent_supervisor is CrashingSupervisor
        assert app.conf.topic_partitions == 6
        assert w.events_topic.partitions == 6 and w.scores_topic.partitions == 6
        assert w.profiles.partitions == 6
        assert w.profiles.changelog_topic.get_topic_name() == changelog_topic_name(settings)
        assert str(app.conf.store) == "intentflow-rocksdb:"
        assert w.profiles.options["block_cache_size"] == 32 * 1024 * 1024
        # Both agents only subscribe their topics (the batch runner consumes them) and are
        # co-partitioned with the table.
        assert list(app.agents) == ["track_interest", "erase_profiles"]
        assert all(agent.concurrency == 1 for agent in app.agents.values())
        assert w.erasure_topic.partitions == 6
        assert app.conf.broker_consumer[0].scheme == "intentflow-batch"
        assert app.batch_runner is w.runner and w.runner.topics == {
            settings.topic_events,
            settings.topic_erasure,
        }
        assert app.conf.web_port == settings.web_port
        assert app.conf.datadir.is_relative_to(tmp_path)
    finally:
        w.executor.shutdown()


def test_the_batch_consumer_fetches_with_a_short_wait(tmp_path: Path) -> None:
    """Faust hard-codes a 1.5 s fetch wait; the worker's consumer waits 20 ms by default (bench/:
    the long wait held records of busy partitions behind fetches of idle ones), for the
    configured bytes."""
    import asyncio

    from streams.worker.faust_compat import BatchConsumerThread

    settings = load_settings(app_id="wiring-fetch", data_dir=tmp_path, fetch_min_bytes=4096)
    metrics = Metrics()
    w = create_app(
        settings,
        models=ModelServer(settings.model_path, threads=1, on_outcome=metrics.model_outcome),
        metrics=metrics,
    )
    try:

        async def build() -> tuple[int, int]:
            thread = w.app.consumer._new_consumer_thread()
            assert isinstance(thread, BatchConsumerThread)
            aio = thread._create_worker_consumer(w.app.consumer.transport)
            try:
                return int(aio._fetch_max_wait_ms), int(aio._fetch_min_bytes)
            finally:
                await aio.stop()  # never started: only closes its client

        assert asyncio.run(build()) == (20, 4096)  # Faust's own: 1,500 ms and 1 byte
    finally:
        w.executor.shutdown()
