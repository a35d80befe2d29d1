"""``intentflow scores``: tail the scores topic as readable lines or JSON.

It reads ``purchase-scores`` records of schema version "1" and newer: newer versions only add
fields, so fields it does not know are ignored and a missing one is shown as ``?``. A record
that is not a JSON object is skipped with its position and reason on stderr, never a crash.
"""

from __future__ import annotations

import sys
import time
from collections import OrderedDict
from typing import Any

import click
import orjson

from streams.kafka.connection import connection
from streams.settings import load_settings

DEDUPE_WINDOW = 100_000


def parse_score(value: bytes | None) -> dict[str, Any]:
    """A scores record as a dict, or ``ValueError`` saying why it is not one."""
    if value is None:
        raise ValueError("no value (a tombstone)")
    try:
        score = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(score, dict):
        raise ValueError(f"a JSON {type(score).__name__}, expected an object")
    return score


def _number(value: object, fmt: str) -> str:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    return format(value, fmt) if ok else "?"


def score_line(score: dict[str, Any]) -> str:
    """One readable line for a parsed score (any schema version; missing fields show as ?)."""
    scored_at = score.get("scored_at")
    at = scored_at[11:23] if isinstance(scored_at, str) else "?"
    categories = score.get("top_categories")
    top = ", ".join(
        f"{c.get('category_id', '?')}:{_number(c.get('weight'), '.2f')}"
        for c in (categories if isinstance(categories, list) else [])[:3]
        if isinstance(c, dict)
    )
    line = (
        f"{at}  user={score.get('user_id', '?')!s:<10} "
        f"p={_number(score.get('purchase_probability'), '.3f')}  "
        f"model={score.get('model_version', '?')}  top=[{top}]"
    )
    return line + _why(score.get("reasons"))


def _why(reasons: object) -> str:
    """purchase-scores.v2's reasons, as ``  why=[cart +0.120, habits -0.031]`` (largest impact
    first); nothing for a record without them."""
    if not isinstance(reasons, dict) or not isinstance(reasons.get("top"), list):
        return ""
    listed = ", ".join(
        f"{r.get('code', '?')} {_number(r.get('impact'), '+.3f')}"
        for r in reasons["top"]
        if isinstance(r, dict)
    )
    return f"  why=[{listed}]"


def format_score(value: bytes) -> str:
    """One readable line for a purchase-scores record (``ValueError`` if it is not JSON)."""
    return score_line(parse_score(value))


class RecentIds:
    """The last ``capacity`` distinct ids seen; the least recently seen is forgotten first."""

    def __init__(self, capacity: int = DEDUPE_WINDOW) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def seen_before(self, key: str) -> bool:
        """True if ``key`` is among the remembered ids; either way it is remembered now."""
        if key in self._ids:
            self._ids.move_to_end(key)
            return True
        self._ids[key] = None
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)
        return False

    def repeats(self, score: dict[str, Any]) -> bool:
        """True if the score's event_id was seen before (a score without one never is)."""
        event_id = score.get("event_id")
        return isinstance(event_id, str) and self.seen_before(event_id)

    def __len__(self) -> int:
        return len(self._ids)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print each record as one JSON line.")
@click.option("--from-beginning", is_flag=True, help="Start at the earliest offset.")
@click.option(
    "--max", "max_records", type=click.IntRange(min=1), default=None,
    help="Stop after printing this many.",
)  # fmt: skip
@click.option("--timeout", type=float, default=None, help="Stop after this many idle seconds.")
@click.option(
    "--dedupe", is_flag=True,
    help="Print each event_id once. Delivery is at-least-once: after a worker crash or a "
    "rebalance, the events since its last commit are scored again, so the same score "
    "(same event_id) can appear twice. Remembers the last --dedupe-window ids.",
)  # fmt: skip
@click.option(
    "--v2", "v2", is_flag=True,
    help="Read purchase-scores.v2 (INTENTFLOW_TOPIC_SCORES_V2, or the v1 topic's name with "
    ".v2): every v1 field and the reasons behind each score, shown as why=[...].",
)  # fmt: skip
@click.option(
    "--dedupe-window", type=click.IntRange(min=1), default=DEDUPE_WINDOW, show_default=True,
    metavar="N", help="With --dedupe: how many recent event ids to remember (bounds memory).",
)  # fmt: skip
def scores_command(
    *,
    as_json: bool,
    from_beginning: bool,
    max_records: int | None,
    timeout: float | None,
    dedupe: bool,
    dedupe_window: int,
    v2: bool,
) -> None:
    """Tail purchase-scores (schema version 1 and newer), for demos and downstream developers.

    Records that are not JSON objects are skipped with their offset on stderr. With --dedupe,
    a count of what was printed and dropped ends the run, on stderr.
    """
    from kafka import KafkaConsumer

    from streams.kafka.topics import admin_client

    settings = load_settings()
    admin_client(settings).close()  # a clear error now if the broker is unreachable
    consumer = KafkaConsumer(
        settings.scores_v2_topic if v2 else settings.topic_scores,
        **connection(settings).kafka_python(),
        group_id=None,
        auto_offset_reset="earliest" if from_beginning else "latest",
        enable_auto_commit=False,
    )
    recent = RecentIds(dedupe_window) if dedupe else None
    printed = duplicates = skipped = 0
    idle_since = time.monotonic()
    try:
        while max_records is None or printed < max_records:
            batch = consumer.poll(timeout_ms=500)
            if not batch:
                if timeout is not None and time.monotonic() - idle_since > timeout:
                    break
                continue
            idle_since = time.monotonic()
            for records in batch.values():
                for record in records:
                    if max_records is not None and printed >= max_records:
                        break
                    try:
                        score = parse_score(record.value)
                    except ValueError as exc:
                        skipped += 1
                        where = f"{record.topic}[{record.partition}]@{record.offset}"
                        click.echo(f"skipped the record at {where}: {exc}", err=True)
                        continue
                    if recent is not None and recent.repeats(score):
                        duplicates += 1
                        continue
                    line = record.value.decode() if as_json else score_line(score)
                    sys.stdout.write(line + "\n")
                    printed += 1
            sys.stdout.flush()
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    if dedupe:
        click.echo(
            f"{printed:,} printed, {duplicates:,} duplicates dropped, {skipped:,} skipped",
            err=True,
        )
