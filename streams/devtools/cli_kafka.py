"""``intentflow kafka start|stop|status`` and ``intentflow topics create``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from streams.devtools.kafka_security import (
    ADMIN,
    MARKETING,
    PRIVACY,
    SIMULATOR,
    WORKER,
    Security,
)
from streams.devtools.localkafka import DEFAULT_HOME, DEFAULT_JARS_DIR, LocalKafka
from streams.settings import load_settings


def _default_port() -> int:
    first = load_settings().bootstrap_servers[0]
    return int(first.rpartition(":")[2])


def _broker(
    home: Path,
    port: int | None,
    controller_port: int | None,
    jars_dir: Path = DEFAULT_JARS_DIR,
    security: str | None = None,
) -> LocalKafka:
    port = port or _default_port()
    broker = LocalKafka(
        home=home, port=port, controller_port=controller_port or port + 1, jars_dir=jars_dir
    )
    chosen = Security(security) if security else broker.formatted_security() or Security.NONE
    return LocalKafka(
        home=home,
        port=port,
        controller_port=controller_port or port + 1,
        jars_dir=jars_dir,
        security=chosen,
    )


_home = click.option(
    "--home", type=click.Path(path_type=Path), default=DEFAULT_HOME, show_default=True,
    help="State directory: the broker's data, config and logs (relative to the working dir).",
)  # fmt: skip
_jars = click.option(
    "--jars-dir", type=click.Path(path_type=Path), default=DEFAULT_JARS_DIR, show_default=True,
    help="Cache directory of the Kafka jars Maven resolves (shared by every checkout).",
)  # fmt: skip
_port = click.option(
    "--port", type=int, default=None, help="Client port (default: from INTENTFLOW_KAFKA_BOOTSTRAP)."
)
_cport = click.option(
    "--controller-port", type=int, default=None, help="KRaft controller port (default: port+1)."
)


@click.group()
def kafka() -> None:
    """Run a local single-node Apache Kafka broker (KRaft) without Docker."""


@kafka.command()
@_home
@_port
@_cport
@_jars
@click.option("--timeout", type=float, default=90.0, show_default=True)
@click.option(
    "--security", type=click.Choice([s.value for s in Security]), default=None,
    help="Secure the client listener: sasl_ssl (TLS, SCRAM-SHA-512/256 or PLAIN logins), ssl "
    "(mutual TLS: the client certificate's CN is the user) or sasl_plaintext. Certificates, "
    "users and ACLs are made on the first start (HOME/secrets). Default: as this home was "
    "first started, else none (plaintext, no ACLs).",
)  # fmt: skip
@click.option(
    "--worker-creates-topics", is_flag=True,
    help="Secured: let the worker create its own topics (CREATE ACLs). Default: the topics of "
    "the INTENTFLOW_* settings are created now, as admin, and the worker may not create any.",
)  # fmt: skip
def start(
    *,
    home: Path,
    port: int | None,
    controller_port: int | None,
    jars_dir: Path,
    timeout: float,
    security: str | None,
    worker_creates_topics: bool,
) -> None:
    """Start the broker (a no-op if it runs) and wait until it answers."""
    broker = _broker(home, port, controller_port, jars_dir, security)
    click.echo("resolving Kafka jars with Maven (cached after the first run)...", err=True)
    seconds = broker.start(timeout=timeout)
    click.echo(f"kafka ready at {broker.bootstrap} in {seconds:.1f}s (log: {broker.log_file})")
    admin = broker.connection(ADMIN)
    if admin is None:
        return
    from streams.devtools.kafka_security import provision

    settings = load_settings()
    acls = provision(admin, settings, worker_creates_topics=worker_creates_topics)
    secrets_dir = broker.secrets_dir
    click.echo(
        f"{broker.security} listener; topics of app {settings.app_id!r} "
        f"{'left to the worker' if worker_creates_topics else 'created'}; ACLs: "
        + ", ".join(f"{user} {n}" for user, n in acls.items())
    )
    click.echo(f"settings for each user (set -a; . FILE): {secrets_dir}/<user>.env")
    for user, role in ((WORKER, "the worker"), (SIMULATOR, "intentflow simulate"),
                       (MARKETING, "intentflow scores, examples/score_consumer.py"),
                       (PRIVACY, "intentflow erase"),
                       (ADMIN, "intentflow topics create, admin tools")):  # fmt: skip
        click.echo(f"  {secrets_dir / (user + '.env')}  {role}")


@kafka.command()
@_home
@_port
@_cport
def stop(home: Path, port: int | None, controller_port: int | None) -> None:
    """Stop the broker and wait until its process is gone."""
    broker = _broker(home, port, controller_port)
    click.echo("kafka stopped" if broker.stop() else "kafka was not running")


@kafka.command()
@_home
@_port
@_cport
def status(home: Path, port: int | None, controller_port: int | None) -> None:
    """Report whether the broker runs and answers; exit 1 if it is not healthy."""
    broker = _broker(home, port, controller_port)
    st = broker.status()
    if st.healthy:
        click.echo(f"kafka healthy at {st.bootstrap} (pid {st.pid}, security {broker.security})")
        return
    state = f"running (pid {st.pid}) but not answering" if st.running else "not running"
    click.echo(f"kafka {state} at {st.bootstrap} (log: {st.log_file})")
    sys.exit(1)


@kafka.command("secrets")
@click.option(
    "--dir", "directory", type=click.Path(path_type=Path), required=True,
    help="Where to write: DIR/clients (CA, keys, passwords, one <user>.env per user) and "
    "DIR/broker (server.properties, format-args, cluster-id).",
)  # fmt: skip
@click.option(
    "--security", type=click.Choice([s.value for s in Security if s is not Security.NONE]),
    default=Security.SASL_SSL.value, show_default=True,
)  # fmt: skip
@click.option("--host", default="kafka", show_default=True, help="The broker's name for clients.")
@click.option("--port", type=int, default=9092, show_default=True)
@click.option("--controller-port", type=int, default=9093, show_default=True)
@click.option(
    "--data", type=click.Path(path_type=Path), default=Path("/var/lib/kafka/data"),
    show_default=True, help="The broker's log.dirs.",
)  # fmt: skip
def secrets_command(
    *, directory: Path, security: str, host: str, port: int, controller_port: int, data: Path
) -> None:
    """Make a secured broker's certificates, users and configuration for a container (see
    docker-compose.secured.yml); existing secrets are kept."""
    from streams.devtools.kafka_security import container_files

    files = container_files(
        directory, Security(security), host=host, port=port, controller_port=controller_port,
        data=data,
    )  # fmt: skip
    for name, path in files.items():
        click.echo(f"{name}: {path}")


@kafka.command("provision")
@click.option(
    "--worker-creates-topics", is_flag=True,
    help="Grant the worker CREATE on its topics instead of creating them now.",
)  # fmt: skip
@click.option("--worker-user", default=WORKER, show_default=True)
@click.option("--producer-user", default=SIMULATOR, show_default=True)
@click.option("--reader-user", default=MARKETING, show_default=True)
@click.option("--eraser-user", default=PRIVACY, show_default=True)
def provision_command(
    *,
    worker_creates_topics: bool,
    worker_user: str,
    producer_user: str,
    reader_user: str,
    eraser_user: str,
) -> None:
    """As an admin (INTENTFLOW_KAFKA_* of an admin user), create the app's topics (from the
    INTENTFLOW_* settings) and grant each principal exactly its ACLs (User:<name>)."""
    from streams.devtools.kafka_security import provision
    from streams.kafka.connection import connection

    settings = load_settings()
    acls = provision(
        connection(settings),
        settings,
        worker_creates_topics=worker_creates_topics,
        worker=worker_user,
        producer=producer_user,
        reader=reader_user,
        eraser=eraser_user,
    )
    click.echo("ACLs: " + ", ".join(f"User:{user} {n}" for user, n in acls.items()))


@click.group()
def topics() -> None:
    """Manage intentflow's topics."""


@topics.command("create")
def topics_create() -> None:
    """Create the input, scores and dead-letter topics from settings (idempotent)."""
    from streams.kafka.topics import create_topics

    for name, outcome in create_topics(load_settings()).items():
        click.echo(f"{name}: {outcome}")
