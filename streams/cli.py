"""The ``intentflow`` command. Subcommands load lazily, so ``intentflow kafka status`` never
imports TensorFlow or Faust. Every IntentflowError is shown as its message and an exit code,
never as a traceback."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from streams.errors import IntentflowError

# name -> "module:attribute" of a click command. Each module owns its own options.
COMMANDS: dict[str, tuple[str, str]] = {
    "kafka": (
        "streams.devtools.cli_kafka:kafka",
        "Run a local Kafka broker (start, stop, status).",
    ),
    "topics": (
        "streams.devtools.cli_kafka:topics",
        "Create the input, scores and dead-letter topics.",
    ),
    "simulate": (
        "streams.sources.simulate.cli:simulate_command",
        "Simulate shoppers' clickstreams.",
    ),
    "import-taobao": ("streams.sources.taobao:import_taobao_command", "Convert the Taobao sample."),
    "train": ("model_export.cli:train_command", "Train, export and verify a model bundle."),
    "evaluate": ("model_export.cli:evaluate_command", "Evaluate a bundle on an event log."),
    "split-users": (
        "model_export.cli:split_users_command",
        "Split an event log into two logs of different users.",
    ),
    "evaluate-explore": (
        "model_export.explore_eval:evaluate_explore_command",
        "Evaluate the exploration policies in the simulator's closed loop.",
    ),
    "explain": (
        "model_export.explain:explain_command",
        "Print one user's score history with its reasons.",
    ),
    "worker": ("streams.worker.command:worker_command", "Run the scoring worker (Faust)."),
    "scores": ("streams.kafka.tail:scores_command", "Tail the scores topic."),
    "demo": (
        "streams.devtools.demo:demo_command",
        "Run the whole pipeline locally with live traffic.",
    ),
    "erase": ("streams.privacy.erase:erase_command", "Erase shoppers' profiles (data protection)."),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported only when used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module_name, attr = entry[0].split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.split(".")[0] in {"tensorflow", "tf2onnx", "sklearn"}:
                raise click.ClickException(
                    f"`intentflow {cmd_name}` needs the training extra ({exc.name} is missing): "
                    "pip install 'intentflow[train]'"
                ) from None
            raise
        command: click.Command = getattr(module, attr)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Help lists every command without importing it (train would load TensorFlow).
        with formatter.section("Commands"):
            formatter.write_dl([(name, COMMANDS[name][1]) for name in sorted(COMMANDS)])

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except IntentflowError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(exc.exit_code)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="intentflow")
def main() -> None:
    """intentflow: real-time purchase-intent scoring on Kafka.

    The broker address comes from INTENTFLOW_KAFKA_BOOTSTRAP (default 127.0.0.1:9092).
    """


if __name__ == "__main__":  # pragma: no cover
    main()
