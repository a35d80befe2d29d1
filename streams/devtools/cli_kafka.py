"""``intentflow kafka start|stop|status`` and ``intentflow topics create``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from streams.devtools.localkafka import DEFAULT_HOME, DEFAULT_JARS_DIR, LocalKafka
from streams.settings import load_settings


def _default_port() -> int:
    first = load_settings().bootstrap_servers[0]
    return int(first.rpartition(":")[2])


def _broker(
    home: Path, port: int | None, controller_port: int | None, jars_dir: Path = DEFAULT_JARS_DIR
) -> LocalKafka:
    port = port or _default_port()
    return LocalKafka(
        home=home, port=port, controller_port=controller_port or port + 1, jars_dir=jars_dir
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
def start(
    home: Path, port: int | None, controller_port: int | None, jars_dir: Path, timeout: float
) -> None:
    """Start the broker (a no-op if it runs) and wait until it answers."""
    broker = _broker(home, port, controller_port, jars_dir)
    click.echo("resolving Kafka jars with Maven (cached after the first run)...", err=True)
    seconds = broker.start(timeout=timeout)
    click.echo(f"kafka ready at {broker.bootstrap} in {seconds:.1f}s (log: {broker.log_file})")


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
    st = _broker(home, port, controller_port).status()
    if st.healthy:
        click.echo(f"kafka healthy at {st.bootstrap} (pid {st.pid})")
        return
    state = f"running (pid {st.pid}) but not answering" if st.running else "not running"
    click.echo(f"kafka {state} at {st.bootstrap} (log: {st.log_file})")
    sys.exit(1)


@click.group()
def topics() -> None:
    """Manage intentflow's topics."""


@topics.command("create")
def topics_create() -> None:
    """Create the input, scores and dead-letter topics from settings (idempotent)."""
    from streams.kafka.topics import create_topics

    for name, outcome in create_topics(load_settings()).items():
        click.echo(f"{name}: {outcome}")
