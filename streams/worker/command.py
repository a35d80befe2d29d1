"""``intentflow worker``: pre-flight checks, then Faust's own worker CLI.

The checks turn the usual start-up failures into one clear message and a non-zero exit within
seconds: a bad setting, an unreachable broker, a topic whose partition count breaks
co-partitioning, and a missing or unusable model. Everything after that is Faust's worker,
so every Faust worker option (``--loglevel``, ``--web-port``, ...) still works.
"""

from __future__ import annotations

import logging
import sys

import click

from streams.errors import ConfigError, IntentflowError
from streams.kafka.access import check_access, explained, worker_grants
from streams.kafka.connection import connection
from streams.kafka.probe import diagnose
from streams.kafka.topics import create_topics, ensure_changelog, topic_id
from streams.model.server import ModelServer
from streams.settings import Settings, load_settings
from streams.worker.gc_pauses import GcPauses
from streams.worker.metrics import Metrics

log = logging.getLogger("intentflow.worker")


# Third-party loggers whose debug lines print whole records or protocol dumps (keys and values:
# raw shopper ids). They stay at INFO even at INTENTFLOW_LOG_LEVEL=debug, so a debug log holds
# no personal data (the canary test scans one).
PAYLOAD_LOGGERS = (
    "aiokafka.conn",
    "aiokafka.producer.producer",
    "aiokafka.consumer.fetcher",
    "aiokafka.consumer.group_coordinator",
    "kafka",
)


def quiet_payload_loggers() -> None:
    for name in PAYLOAD_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(max(logging.INFO, logger.getEffectiveLevel()))


def preflight(settings: Settings, models: ModelServer) -> str | None:
    """Fail fast, with the fix in the message, before Faust starts retrying forever.

    Returns the input topic's Kafka topic id (see ``streams.processing.envelope``)."""
    from streams.worker.app import changelog_topic_name

    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"INTENTFLOW_DATA_DIR {settings.data_dir} cannot be created ({exc.strerror}); "
            "point it at a writable directory"
        ) from None
    models.load_initial()
    conn = connection(settings)
    if (problem := diagnose(conn, settings.kafka_connect_timeout_seconds)) is not None:
        raise problem  # TLS, SASL or an unreachable broker, named before any client retries
    check_access(conn, worker_grants(settings), who="the intentflow worker")
    with explained(conn, "creating or checking the worker's topics"):
        create_topics(settings)  # also checks partitions of existing input/scores/DLQ topics
        ensure_changelog(settings, changelog_topic_name(settings))
        return topic_id(settings, settings.topic_events)


@click.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.pass_context
def worker_command(ctx: click.Context) -> None:
    """Run one scoring worker. Extra arguments go to Faust's worker (try --help)."""
    if "--help" in ctx.args or "-h" in ctx.args:
        click.echo(worker_command.__doc__)
        click.echo("Configuration comes from INTENTFLOW_* variables; see the README.\n")
    settings = load_settings()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="[%(asctime)s] %(levelname)s %(name)s: %(message)s",
    )
    quiet_payload_loggers()
    metrics = Metrics()
    models = ModelServer(
        settings.model_path, threads=settings.onnx_threads, on_outcome=metrics.model_outcome
    )
    events_topic_id = preflight(settings, models)
    if settings.uses_development_pseudonym_key:
        log.warning(
            "profiles are pseudonymised with the built-in development key: anyone with this "
            "source can recompute them. Set INTENTFLOW_PSEUDONYM_KEYS (README: Data protection)"
        )
    from streams.worker.app import create_app

    worker = create_app(settings, models=models, metrics=metrics, events_topic_id=events_topic_id)
    worker.freeze_startup_heap = True
    GcPauses(metrics.gc_pause).install()
    sys.argv = ["intentflow worker", "worker", "--loglevel", settings.log_level, *ctx.args]
    try:
        worker.app.main()
    except IntentflowError:
        raise
    finally:
        worker.executor.shutdown(wait=False, cancel_futures=True)
