"""The Faust app, its topics and its table, declared once from the settings object.

Every Faust option is passed explicitly, and Faust is given an empty environment (``env={}``)
so variables such as ``BROKER_URL`` cannot silently override these settings.
"""

from __future__ import annotations

import ssl
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import faust
from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from faust.stores import STORES
from faust.stores.rocksdb import Store as RocksDBStore
from mode import CrashingSupervisor
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streams.gapfill import GapFiller
from streams.metrics import Metrics
from streams.model_server import ModelServer
from streams.pipeline import Throttle
from streams.settings import SecurityProtocol, Settings

PROFILE_TABLE = "user_profile"


class ChangelogRecoveredStore(RocksDBStore):
    """RocksDB that rebuilds every partition it is assigned from the changelog.

    Faust's RocksDB store remembers how far it had read each changelog partition and, on a
    later assignment, reads only past that point. After a partition moved away and back (a
    takeover) that shortcut skipped the other worker's writes in our tests, and the
    partition's stream was never resumed. Reading the compacted changelog from the start makes
    the table equal to the changelog after every rebalance, at the cost of a longer recovery
    (measured in bench/: 200k users).
    """

    def persisted_offset(self, tp: Any) -> int | None:
        return None


STORES.aliases["intentflow-rocksdb"] = f"{__name__}:ChangelogRecoveredStore"


class BatchLevelMonitor(PrometheusMonitor):
    """Faust's Prometheus sensors without the hooks that run for every message, event, table
    access and send (a fifth of the worker's CPU in bench/). The worker counts its traffic per
    batch in ``streams.metrics``; rebalance, commit, recovery and error series remain."""

    def on_message_in(self, *args: Any, **kwargs: Any) -> None:
        return None

    def on_stream_event_in(self, *args: Any, **kwargs: Any) -> None:
        return None

    def on_stream_event_out(self, *args: Any, **kwargs: Any) -> None:
        return None

    def on_message_out(self, *args: Any, **kwargs: Any) -> None:
        return None

    def on_table_get(self, *args: Any, **kwargs: Any) -> None:
        return None

    def on_table_set(self, *args: Any, **kwargs: Any) -> None:
        return None

    def on_send_initiated(self, *args: Any, **kwargs: Any) -> None:
        return None

    def on_send_completed(self, *args: Any, **kwargs: Any) -> None:
        return None

    def on_send_error(self, producer: Any, exc: BaseException, state: Any) -> None:
        self.send_errors += 1  # on_send_initiated kept no start time to measure from
        self._metrics.total_error_messages_sent.inc()


def _setup_faust_sensors(app: faust.App, metrics: Metrics) -> None:
    """What ``faust.sensors.prometheus.setup_prometheus_sensors`` does, with the batch-level
    monitor: Faust's series on the worker's registry (fixed prefix ``intentflow``, so the
    dashboard survives a change of app id), and ``/metrics`` serving that registry."""
    app.monitor = BatchLevelMonitor(metrics=FaustMetrics.create(metrics.registry, "intentflow"))

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        return web.bytes(
            generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )


def changelog_topic_name(settings: Settings) -> str:
    """The profile table's changelog topic (Faust's naming)."""
    return f"{settings.app_id}-{PROFILE_TABLE}-changelog"


def broker_credentials(settings: Settings) -> Any:
    """Faust credentials for the configured security protocol, or None for PLAINTEXT."""
    protocol = settings.kafka_security_protocol
    if protocol is SecurityProtocol.PLAINTEXT:
        return None
    context = None
    if protocol in {SecurityProtocol.SSL, SecurityProtocol.SASL_SSL}:
        context = ssl.create_default_context(
            purpose=ssl.Purpose.SERVER_AUTH,
            cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None,
        )
        if settings.kafka_ssl_certfile:
            context.load_cert_chain(
                str(settings.kafka_ssl_certfile),
                str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
            )
    if protocol is SecurityProtocol.SSL:
        return faust.SSLCredentials(context)
    assert settings.kafka_sasl_password is not None  # checked by Settings
    return faust.SASLCredentials(
        username=settings.kafka_sasl_username,
        password=settings.kafka_sasl_password.get_secret_value(),
        mechanism=settings.kafka_sasl_mechanism.value if settings.kafka_sasl_mechanism else None,
        ssl_context=context,
    )


@dataclass
class Worker:
    """Everything the agents use: the app, its channels, state holders and metrics."""

    settings: Settings
    app: faust.App
    events_topic: Any
    scores_topic: Any
    dlq_topic: Any
    profiles: Any  # faust Table[bytes, bytes]: user_id -> streams.state envelope
    metrics: Metrics
    models: ModelServer
    throttle: Throttle
    executor: ThreadPoolExecutor
    gaps: GapFiller
    # partition -> offset of the last record this worker processed (for the lag gauge)
    processed_offsets: dict[int, int] = field(default_factory=dict)
    # partition -> next input offset to apply (streams.agents.in_offset_order)
    next_offsets: dict[int, int] = field(default_factory=dict)
    assigned_once: bool = False


def create_app(settings: Settings, *, models: ModelServer, metrics: Metrics) -> Worker:
    """Build the Faust app with topics, table, agents, timers and web pages."""
    app = faust.App(
        settings.app_id,
        env={},
        broker=[f"kafka://{server}" for server in settings.bootstrap_servers],
        broker_credentials=broker_credentials(settings),
        broker_client_id=f"{settings.app_id}-worker",
        broker_request_timeout=40.0,
        broker_session_timeout=10.0,
        broker_heartbeat_interval=3.0,
        broker_commit_interval=1.0,
        broker_commit_every=10_000,
        broker_max_poll_records=max(500, settings.batch_max * 2),
        consumer_auto_offset_reset="earliest",
        processing_guarantee="at_least_once",
        producer_acks=-1,
        producer_linger_ms=2,
        producer_max_batch_size=262_144,
        producer_compression_type=None,
        key_serializer="raw",
        value_serializer="raw",
        store="intentflow-rocksdb://",
        datadir=str(settings.data_dir),
        table_standby_replicas=0,
        table_cleanup_interval=300.0,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_allow_declare=True,
        topic_disable_leader=True,
        stream_buffer_maxsize=max(4096, settings.batch_max * 4),
        stream_wait_empty=True,
        web_enabled=True,
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
    profiles = app.Table(
        PROFILE_TABLE,
        partitions=settings.partitions,
        key_type=bytes,
        value_type=bytes,
        options={
            "driver": "rocksdict",
            "block_cache_size": settings.rocksdb_block_cache_mb * 1024 * 1024,
        },
        help="user_id -> time-decayed interest profile (streams.state envelope)",
    )
    _setup_faust_sensors(app, metrics)
    worker = Worker(
        settings=settings,
        app=app,
        events_topic=events_topic,
        scores_topic=scores_topic,
        dlq_topic=dlq_topic,
        profiles=profiles,
        metrics=metrics,
        models=models,
        throttle=Throttle(settings.score_interval_seconds),
        executor=ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnx"),
        gaps=GapFiller(settings),
    )
    from streams import agents  # agents register themselves on this worker's app

    agents.register(worker)
    return worker
