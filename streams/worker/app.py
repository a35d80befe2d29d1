"""The Faust app, its topics and its table, declared once from the settings object.

Every Faust option is passed explicitly, and Faust is given an empty environment (``env={}``)
so variables such as ``BROKER_URL`` cannot silently override these settings.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import faust
from faust.sensors.prometheus import FaustMetrics
from mode import CrashingSupervisor
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streams.kafka.connection import KafkaConnection, connection
from streams.model.server import ModelServer
from streams.privacy.pseudonyms import Pseudonymizer, parse_keys
from streams.processing.envelope import topic_identity
from streams.processing.step import StepConfig, explorer_for
from streams.processing.throttle import Throttle
from streams.settings import Settings
from streams.worker import agents, faust_compat, health
from streams.worker.context import Worker
from streams.worker.metrics import Metrics
from streams.worker.runner import BatchRunner

PROFILE_TABLE = "user_profile"


def _setup_faust_sensors(app: faust.App, metrics: Metrics) -> None:
    """What ``faust.sensors.prometheus.setup_prometheus_sensors`` does, with the batch-level
    monitor: Faust's series on the worker's registry (fixed prefix ``intentflow``, so the
    dashboard survives a change of app id), and ``/metrics`` serving that registry."""
    app.monitor = faust_compat.BatchLevelMonitor(
        metrics=FaustMetrics.create(metrics.registry, "intentflow")
    )

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        return web.bytes(
            generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )


def changelog_topic_name(settings: Settings) -> str:
    """The profile table's changelog topic (Faust's naming)."""
    return f"{settings.app_id}-{PROFILE_TABLE}-changelog"


def broker_credentials(conn: KafkaConnection) -> Any:
    """Faust credentials for the connection's security protocol, or None for PLAINTEXT."""
    if conn.uses_sasl:
        assert conn.sasl_mechanism is not None and conn.sasl_password is not None
        return faust.SASLCredentials(
            username=conn.sasl_username,
            password=conn.sasl_password.get_secret_value(),
            mechanism=conn.sasl_mechanism.value,
            ssl_context=conn.ssl_context(),
        )
    if conn.uses_tls:
        return faust.SSLCredentials(conn.ssl_context())
    return None


def step_config(
    settings: Settings, events_topic_id: str | None = None, pseudonyms: Pseudonymizer | None = None
) -> StepConfig:
    """The batch step's configuration. ``events_topic_id``: the input topic's Kafka topic id,
    stored with each profile so a re-created topic is never mistaken for a replay;
    ``pseudonyms``: dead letters keep no raw identifier."""
    return StepConfig(
        max_event_bytes=settings.max_event_bytes,
        max_clock_skew_seconds=settings.max_clock_skew_seconds,
        top_k=settings.top_categories,
        score_versions=settings.score_versions,
        explain=settings.reasons,
        explore=settings.explore_config,
        topic_ids={settings.topic_events: topic_identity(settings.topic_events, events_topic_id)},
        pseudonym=pseudonyms.pseudonym if pseudonyms is not None else None,
    )


def create_app(
    settings: Settings,
    *,
    models: ModelServer,
    metrics: Metrics,
    events_topic_id: str | None = None,
) -> Worker:
    """Build the Faust app with topics, table, agents, timers and web pages."""
    faust_compat.install()
    app = faust_compat.App(
        settings.app_id,
        env={},
        broker=[f"kafka://{server}" for server in settings.bootstrap_servers],
        broker_consumer=[
            f"{faust_compat.CONSUMER_SCHEME}://{server}" for server in settings.bootstrap_servers
        ],
        broker_producer=[
            f"{faust_compat.CONSUMER_SCHEME}://{server}" for server in settings.bootstrap_servers
        ],
        broker_credentials=broker_credentials(connection(settings)),
        broker_client_id=f"{settings.app_id}-worker",
        broker_request_timeout=40.0,
        broker_session_timeout=10.0,
        broker_heartbeat_interval=3.0,
        broker_commit_interval=1.0,
        broker_commit_every=10_000,
        broker_max_poll_records=settings.batch_max,
        consumer_auto_offset_reset="earliest",
        processing_guarantee="at_least_once",
        producer_acks=-1,
        producer_linger_ms=2,
        producer_max_batch_size=262_144,
        producer_compression_type=None,
        key_serializer="raw",
        value_serializer="raw",
        store=faust_compat.STORE_URL,
        datadir=str(settings.data_dir),
        table_standby_replicas=settings.standby_replicas,
        table_cleanup_interval=300.0,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_allow_declare=True,
        topic_disable_leader=True,
        stream_buffer_maxsize=max(4096, settings.batch_max * 4),
        stream_wait_empty=True,
        web_enabled=True,
        # Only /metrics, /livez and /readyz: no router, table, graph, stats or index pages.
        web=faust_compat.WEB_URL,
        web_router_enabled=False,
        web_host=settings.web_host,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        web_in_thread=False,
        web_stats_enabled=False,
        web_graph_enabled=False,
        web_tables_enabled=False,
        web_metrics_enabled=False,
        worker_redirect_stdouts=False,
        autodiscover=False,
        origin="streams",
        # A crashed agent stops the worker instead of restarting in place, so the events of
        # the failed batch (never acked) are consumed again after the restart.
        agent_supervisor=CrashingSupervisor,
    )
    retention = {"retention.ms": str(settings.topic_retention_hours * 3_600_000)}
    events_topic = app.topic(
        settings.topic_events, partitions=settings.partitions, config=retention
    )
    scores_topic = app.topic(
        settings.topic_scores, partitions=settings.partitions, config=retention
    )
    dlq_topic = app.topic(settings.topic_dlq, partitions=settings.partitions)
    erasure_topic = app.topic(settings.topic_erasure, partitions=settings.partitions)
    profiles = app.Table(
        PROFILE_TABLE,
        partitions=settings.partitions,
        key_type=bytes,
        value_type=bytes,
        options={
            "driver": "rocksdict",
            "block_cache_size": settings.rocksdb_block_cache_mb * 1024 * 1024,
        },
        help="pseudonym -> time-decayed interest profile (streams.processing.envelope)",
    )
    _setup_faust_sensors(app, metrics)
    pseudonyms = Pseudonymizer(parse_keys(settings.pseudonym_keys))
    worker = Worker(
        settings=settings,
        app=app,
        events_topic=events_topic,
        scores_topic=scores_topic,
        dlq_topic=dlq_topic,
        erasure_topic=erasure_topic,
        profiles=profiles,
        metrics=metrics,
        models=models,
        throttle=Throttle(settings.score_interval_seconds),
        executor=ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnx"),
        step_config=step_config(settings, events_topic_id, pseudonyms),
        changelog_topic=changelog_topic_name(settings),
        pseudonyms=pseudonyms,
    )
    worker.runner = BatchRunner(worker)
    app.batch_runner = worker.runner  # type: ignore[attr-defined]  # BatchConsumer reads it
    if models.bundle is not None:  # the policy's start-up work, before the first event
        explorer_for(models.bundle, worker.step_config)
    agents.register(worker)
    health.register(worker)
    return worker
