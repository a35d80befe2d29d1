"""``intentflow simulate``: simulated shoppers to a JSONL file or to Kafka."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import replace
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import IO

import click

from streams.contracts.events import DEFAULT_MAX_EVENT_BYTES
from streams.progress import Progress
from streams.settings import load_settings
from streams.sources.simulate.shoppers import DEFAULT_BEHAVIOUR, Shopper
from streams.sources.simulate.sinks import COMPRESSIONS, Tally, produce, write_jsonl
from streams.sources.simulate.stream import (
    DEFAULT_START,
    format_timestamp,
    generate,
    make_shoppers,
)

_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhdw])")


def parse_duration(text: str) -> float:
    """Seconds in ``90s``, ``30m``, ``12h``, ``3d``, ``1w`` or a sum like ``1d12h``."""
    compact = text.strip().lower().replace(" ", "")
    parts = _DURATION_PART.findall(compact)
    if not compact or "".join(n + u for n, u in parts) != compact:
        raise ValueError(f"{text!r} is not a duration: use a number and a unit, like 90s, 30m, 3d")
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError(f"{text!r} is not a positive duration")
    return seconds


def parse_start(text: str) -> datetime:
    """An RFC 3339 / ISO 8601 time with a timezone (``2025-01-06T00:00:00Z``)."""
    try:
        start = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 time like 2025-01-06T00:00:00Z") from None
    if start.tzinfo is None:
        raise ValueError(f"{text!r} has no timezone: add Z or an offset like +02:00")
    return start


class _Duration(click.ParamType):
    name = "duration"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class _Start(click.ParamType):
    name = "iso-time"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            return parse_start(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def show_progress(
    bar: Progress, start: datetime, duration: float, max_events: int | None
) -> Callable[[Tally], None]:
    """A sink's progress callback: the share done is of the event-time span (or of
    ``max_events``, whichever ends the run first), shown with the count, rate and event time."""
    start_ms = start.timestamp() * 1000

    def show(tally: Tally) -> None:
        done = 0.0
        if tally.last_ts_ms is not None:
            done = (tally.last_ts_ms - start_ms) / 1000 / duration
        if max_events is not None:
            done = max(done, tally.payloads / max_events)
        at = format_timestamp(tally.last_ts_ms)[:16] if tally.last_ts_ms is not None else "-"
        rate = tally.payloads / max(bar.elapsed(), 1e-9)
        bar.update(min(done, 1.0), note=f"{tally.payloads:,} payloads, {rate:,.0f}/s, at {at}")

    return show


def write_latent(path: Path, shoppers: list[Shopper]) -> None:
    """One JSON line per shopper: dormant top-level categories and P(engage) per category."""
    n_top = shoppers[0].catalog.n_top if shoppers else 0
    clusters = [(f"c{t:02d}00",) for t in range(n_top)]
    with path.open("w", encoding="utf-8") as fh:
        for s in shoppers:
            probs = s.response_probabilities(clusters)
            fh.write(json.dumps({
                "user_id": s.user_id,
                "dormant": [f"{t:02d}" for t in (s.latent.dormant if s.latent else ())],
                "response_probabilities": {f"{t:02d}": round(float(p), 6)
                                           for t, p in enumerate(probs)},
            }) + "\n")  # fmt: skip


@click.command("simulate")
@click.option("--users", type=click.IntRange(min=1), required=True, help="Number of shoppers.")
@click.option(
    "--duration", type=_Duration(), required=True,
    help="Event-time span to simulate: 90s, 30m, 12h, 3d, 1w or sums like 1d12h.",
)  # fmt: skip
@click.option(
    "--rate", type=click.FloatRange(min=0, min_open=True), default=None,
    help="With --kafka: pace to this many payloads per wall-clock second (default: flat out).",
)  # fmt: skip
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same bytes.")
@click.option(
    "--bad-fraction", type=click.FloatRange(0.0, 0.99), default=0.0, show_default=True,
    help="Share of payloads that are malformed (every kind the decoder classifies).",
)  # fmt: skip
@click.option(
    "--truth-out", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Write {event_id, intent} per valid event: the simulator's own P(purchase within 1 h).",
)  # fmt: skip
@click.option(
    "--start", type=_Start(), default=DEFAULT_START.isoformat(), show_default=True,
    help="Event time of the start, with a timezone.",
)  # fmt: skip
@click.option(
    "--max-events", type=click.IntRange(min=1), default=None,
    help="Stop after this many payloads (valid and malformed).",
)  # fmt: skip
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Write JSONL here (one payload per line; malformed ones as raw bytes).",
)  # fmt: skip
@click.option("--kafka", "to_kafka", is_flag=True, help="Produce to INTENTFLOW_TOPIC_EVENTS.")
@click.option(
    "--compression", type=click.Choice(COMPRESSIONS), default="auto", show_default=True,
    help="With --kafka: auto is lz4 when the lz4 package is installed, else none.",
)  # fmt: skip
@click.option(
    "--correlated-interests", "interest_rank", type=click.IntRange(0, 20), default=0,
    show_default=True, help="Rank of correlated interests (L z + noise); 0: independent.",
)  # fmt: skip
@click.option(
    "--dormant", type=click.IntRange(0, 5), default=0, show_default=True,
    help="Dormant interests per shopper (visited rarely until a suggestion awakens them).",
)  # fmt: skip
@click.option(
    "--latent-out", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Write per shopper its dormant interests and P(engage | shown) per top-level category "
    "at the start (per-decision rewards: intentflow evaluate-explore).",
)  # fmt: skip
@click.option("--quiet", is_flag=True, help="No progress on stderr.")
def simulate_command(
    *,
    users: int,
    duration: float,
    rate: float | None,
    seed: int,
    bad_fraction: float,
    truth_out: Path | None,
    start: datetime,
    max_events: int | None,
    out: Path | None,
    to_kafka: bool,
    compression: str,
    interest_rank: int,
    dormant: int,
    latent_out: Path | None,
    quiet: bool,
) -> None:
    """Simulate shoppers' clickstreams, in event-time order, keyed by user id.

    Exactly one of --out FILE.jsonl or --kafka. The broker and topic come from the
    INTENTFLOW_* settings. A summary (valid events by type, malformed by class) ends the run.
    """
    if (out is None) == (not to_kafka):
        raise click.UsageError("choose exactly one of --out FILE.jsonl or --kafka")
    settings = load_settings() if to_kafka else None
    max_bytes = settings.max_event_bytes if settings else DEFAULT_MAX_EVENT_BYTES
    behaviour = replace(DEFAULT_BEHAVIOUR, interest_rank=interest_rank, dormant=dormant)
    if latent_out is not None:
        write_latent(latent_out, make_shoppers(users, duration, seed, start, behaviour))
    records = generate(
        users, duration, seed, bad_fraction, start, max_bytes=max_bytes, behaviour=behaviour
    )
    if max_events is not None:
        records = islice(records, max_events)
    started = time.monotonic()
    with ExitStack() as stack:
        truth: IO[bytes] | None = None
        if truth_out is not None:
            truth = stack.enter_context(truth_out.open("wb"))
        bar = stack.enter_context(Progress("simulate", 1.0, enabled=not quiet))
        progress = show_progress(bar, start, duration, max_events)
        if settings is not None:
            report = produce(
                records, settings, rate=rate, compression=compression, truth=truth,
                progress=progress, max_request_bytes=max(1_048_576, max_bytes + 65_536),
            )  # fmt: skip
            tally, seconds = report.tally, report.seconds
            where = (
                f"produced to {report.topic!r} ({report.partitions} partitions) at "
                f"{settings.kafka_bootstrap}, compression {report.compression}, all acknowledged"
            )
        else:
            assert out is not None
            with out.open("wb") as fh:
                tally = write_jsonl(records, fh, truth, progress)
            seconds = time.monotonic() - started
            where = f"wrote {out}"
        progress(tally)
        bar.update(1.0)  # the records ran out: done, wherever the last event time fell
    for line in tally.lines():
        click.echo(line)
    click.echo(f"{where} in {seconds:.1f}s ({tally.payloads / max(seconds, 1e-9):,.0f}/s)")
    if truth_out is not None:
        click.echo(f"truth for {tally.valid:,} valid events in {truth_out}")
