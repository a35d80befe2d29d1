"""``intentflow train`` and ``intentflow evaluate``.

Importing this module is cheap: TensorFlow loads only inside ``train``, and ``evaluate`` never
loads it (it scores with onnxruntime through ``streams.model.bundle``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import click

from model_export.evaluate import evaluate_bundle, format_table
from model_export.tf_logs import quiet_tensorflow_import
from streams.errors import DataError
from streams.settings import load_settings

_UNITS = {"": 1, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """'90', '90s', '30m', '1h', '1.5h', '3d' -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d)?\s*", text)
    if not match or float(match.group(1)) <= 0:
        raise click.BadParameter(f"{text!r} is not a positive duration like 3600, 30m, 1h or 3d")
    return float(match.group(1)) * _UNITS[match.group(2) or ""]


class Duration(click.ParamType):
    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, int | float):
            return float(value)
        try:
            return parse_duration(str(value))
        except click.BadParameter as exc:
            self.fail(exc.message, param, ctx)


def _metrics_line(name: str, m: dict[str, Any]) -> str:
    def f(key: str) -> str:
        v = m.get(key)
        return f"{v:.4f}" if isinstance(v, float) else "-"

    return (
        f"  {name:<40} roc_auc {f('roc_auc')}  pr_auc {f('pr_auc')}  "
        f"log_loss {f('log_loss')}  ece {f('ece')}"
    )


@click.command("train")
@click.option("--events", type=click.Path(path_type=Path), required=True, help="Event log JSONL.")
@click.option("--truth", type=click.Path(path_type=Path), help="Simulator intent sidecar JSONL.")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="Bundle directory; may contain {model_version}, e.g. models/bundles/{model_version}.",
)
@click.option(
    "--horizon", type=Duration(), default="1h", show_default=True, help="Label horizon H."
)
@click.option("--epochs", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--split",
    type=click.FloatRange(0.05, 0.95),
    default=0.7,
    show_default=True,
    help="Quantile of snapshot times where validation starts.",
)
@click.option("--batch-size", type=click.IntRange(8, 65536), default=512, show_default=True)
@click.option("--learning-rate", type=click.FloatRange(1e-6, 1.0), default=3e-4, show_default=True)
@click.option("--l2", type=click.FloatRange(0.0, 10.0), default=3e-3, show_default=True)
@click.option("--dropout", type=click.FloatRange(0.0, 0.9), default=0.3, show_default=True)
@click.option("--threads", type=click.IntRange(1, 64), default=2, show_default=True)
@click.option(
    "--sequence/--no-sequence",
    default=False,
    show_default=True,
    help="Also fit the sequence encoder (self-attention over the last 16 events) as a candidate.",
)
@click.option(
    "--link",
    type=click.Path(path_type=Path),
    help="Also point this symlink (e.g. models/current) at the new bundle, atomically.",
)
@click.option(
    "--quiet", is_flag=True,
    help="No progress on stderr. (INTENTFLOW_LOG_LEVEL=debug shows Keras's line per epoch and "
    "TensorFlow's own log.)",
)  # fmt: skip
def train_command(  # noqa: PLR0917 - one parameter per click option
    events: Path,
    truth: Path | None,
    out: Path,
    horizon: float,
    epochs: int,
    seed: int,
    split: float,
    batch_size: int,
    learning_rate: float,
    l2: float,
    dropout: float,
    threads: int,
    sequence: bool,
    link: Path | None,
    quiet: bool,
) -> None:
    """Train, export and verify a model bundle from an event log."""
    log_level = load_settings().log_level
    with quiet_tensorflow_import(log_level):  # TensorFlow loads here, only for this command
        from model_export.train import TrainConfig, train_bundle

    result = train_bundle(
        TrainConfig(
            events=events,
            out=out,
            truth=truth,
            horizon_s=horizon,
            epochs=epochs,
            seed=seed,
            split=split,
            batch_size=batch_size,
            learning_rate=learning_rate,
            l2=l2,
            dropout=dropout,
            threads=threads,
            sequence=sequence,
            verbose=0 if quiet else 2 if log_level == "debug" else 1,
            link=link,
        ),
        log=click.echo,
    )
    md = result.metadata
    val = md["metrics"]["validation"]
    base = md["metrics"]["baselines"]
    sel = md["selection"]
    click.echo(f"\nbundle {result.path} (model_version {md['model_version']})")
    click.echo(f"validation: {val['rows']} rows, {val['positives']} positives")
    click.echo(_metrics_line(f"model: {sel['chosen']}, calibrated (onnx)", val))
    for cand in sel["candidates"]:
        click.echo(_metrics_line(f"{cand['name']} (uncalibrated)", cand["validation_uncalibrated"]))
    for name, m in base.items():
        label = f"{name} ({m['name']})" if "name" in m else name
        click.echo(_metrics_line(label, m))
    if val.get("oracle_roc_auc") is not None:
        ratio = val["roc_auc"] / val["oracle_roc_auc"]
        click.echo(f"  oracle roc_auc {val['oracle_roc_auc']:.4f} (model reaches {ratio:.3f})")
    t = md["timings"]
    click.echo(
        f"timings: dataset {t['dataset_seconds']:.1f} s, networks {t['train_seconds']:.1f} s, "
        f"baselines {t['baselines_seconds']:.1f} s, export {t['export_seconds']:.1f} s, "
        f"total {t['total_seconds']:.1f} s; parity max |diff| {md['parity']['max_abs_diff']:.2e}"
    )
    if link is not None:
        click.echo(f"{link} -> {result.path}")


@click.command("evaluate")
@click.option("--model", "model_dir", type=click.Path(path_type=Path), required=True)
@click.option("--events", type=click.Path(path_type=Path), required=True, help="Event log JSONL.")
@click.option("--truth", type=click.Path(path_type=Path), help="Simulator intent sidecar JSONL.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Also write JSON here.")
@click.option("--horizon", type=Duration(), help="Label horizon (default: the bundle's).")
@click.option("--quiet", is_flag=True, help="No progress on stderr.")
def evaluate_command(  # noqa: PLR0917 - one parameter per click option
    model_dir: Path,
    events: Path,
    truth: Path | None,
    json_out: Path | None,
    horizon: float | None,
    quiet: bool,
) -> None:
    """Evaluate a bundle on an event log with onnxruntime (no TensorFlow)."""
    result = evaluate_bundle(
        model_dir, events, truth_path=truth, horizon_s=horizon, progress=not quiet
    )
    click.echo(f"model {result['model_version']} on {events}")
    click.echo(format_table(result))
    if json_out is not None:
        try:
            json_out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            raise DataError(f"cannot write {json_out}: {exc}") from None


@click.command("split-users")
@click.option("--events", type=click.Path(path_type=Path), required=True, help="Event log JSONL.")
@click.option("--out-a", type=click.Path(path_type=Path), required=True, help="First half.")
@click.option("--out-b", type=click.Path(path_type=Path), required=True, help="Second half.")
@click.option("--seed", type=int, default=0, show_default=True)
def split_users_command(events: Path, out_a: Path, out_b: Path, seed: int) -> None:
    """Split an event log into two logs of different users (about half each)."""
    from model_export.dataset import split_users

    result = split_users(events, out_a, out_b, seed=seed)
    click.echo(
        f"{out_a}: {result.users[0]} users, {result.lines[0]} events; "
        f"{out_b}: {result.users[1]} users, {result.lines[1]} events"
        + (f"; {result.skipped} lines without a user_id skipped" if result.skipped else "")
    )
