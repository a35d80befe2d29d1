"""``intentflow explain``: one user's score history with its reasons, for support staff.

The user's events are replayed from an event log through the feature code, scored by the
bundle, and explained by the worker's own reasons code (``streams.processing.reasons``), so
each line shows what the worker published for that event in ``purchase-scores.v2`` (up to
the model that was serving then). onnxruntime and numpy only: no TensorFlow.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import click

from model_export.dataset import LogEvent, read_events, replay
from streams.contracts.scores_v2 import ScoreReasons
from streams.errors import DataError
from streams.features import feature_matrix, top_categories
from streams.features.vector import GROUP_DESCRIPTIONS
from streams.model.bundle import load_bundle
from streams.processing import reasons

ARROW = {"up": "+", "down": "-"}


@dataclass(frozen=True)
class Explained:
    """One scored event of the user and why."""

    event: LogEvent
    probability: float
    reasons: ScoreReasons | None


@dataclass(frozen=True)
class History:
    """A user's scored events, in event-time order, and the model that scored them."""

    model_version: str
    reference_probability: float | None  # None: the bundle has no training reference
    items: list[Explained]


def explain_user(model_dir: Path, events_path: Path, user: str) -> History:
    """The user's events in the log, in event-time order, each with its score and reasons."""
    bundle = load_bundle(model_dir)
    log = read_events(events_path)
    mine = [e for e in log.events if e.user_id == user]
    if not mine:
        raise DataError(f"event log {events_path} has no valid event of user {user!r}")
    pairs = list(replay(mine))
    x = feature_matrix(pairs, bundle.embeddings)
    tops = [top_categories(profile, reasons.N_INTERESTS) for profile, _ in pairs]
    explained = reasons.explain(bundle, x, tops)
    probabilities = explained.probabilities if explained else bundle.predict(x)
    items = [
        Explained(event, float(p), explained.reasons(j) if explained else None)
        for j, (event, p) in enumerate(zip(mine, probabilities.tolist(), strict=True))
    ]
    reference = explained.reference_probability if explained else None
    return History(bundle.model_version, reference, items)


def format_line(item: Explained) -> str:
    """One readable line: time, what happened, the probability, why."""
    e = item.event
    when = datetime.fromtimestamp(e.ts, UTC).strftime("%Y-%m-%d %H:%M:%S")
    what = f"{e.event_type:<16} {e.category_id or '-':<8}"
    line = f"{when}  {what}  p={item.probability:.3f}"
    why = item.reasons
    if why is None:
        return line + "  (no reasons: the model has no training reference)"
    shown = ", ".join(f"{code} {impact:+.3f}" for code, impact in why.top) or "none"
    interests = ", ".join(f"{c} {impact:+.3f}" for c, impact in why.interests)
    return line + f"  why: {shown}" + (f"  interests: {interests}" if interests else "")


@click.command("explain")
@click.option("--model", "model_dir", type=click.Path(path_type=Path), required=True)
@click.option("--events", type=click.Path(path_type=Path), required=True, help="Event log JSONL.")
@click.option("--user", required=True, help="The user id, as in the events.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event (the v2 reasons).")
def explain_command(model_dir: Path, events: Path, user: str, as_json: bool) -> None:
    """Print one user's score history with its reasons (for support staff).

    Each reason is a feature group and its impact: the probability minus the probability with
    that group set to the training average. + raises the score, - lowers it. The codes are
    listed at the end and explained in the README.
    """
    history = explain_user(model_dir, events, user)
    if as_json:
        for item in history.items:
            row = {
                "event_id": item.event.event_id,
                "occurred_at": datetime.fromtimestamp(item.event.ts, UTC).isoformat(),
                "event_type": item.event.event_type,
                "category_id": item.event.category_id,
                "purchase_probability": item.probability,
                "reasons": item.reasons.to_wire() if item.reasons else None,
            }
            click.echo(json.dumps(row))
        return
    line = f"user {user}: {len(history.items)} events, model {history.model_version}"
    if history.reference_probability is not None:
        line += f"; a shopper at the training average scores {history.reference_probability:.3f}"
    click.echo(line)
    for item in history.items:
        click.echo(format_line(item))
    items = history.items
    codes = sorted({code for item in items if item.reasons for code, _ in item.reasons.top})
    if codes:
        click.echo("\nreason codes:")
        for code in codes:
            click.echo(f"  {code:<16} {GROUP_DESCRIPTIONS.get(code, '')}")
