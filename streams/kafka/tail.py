"""``intentflow scores``: tail the scores topic as readable lines or JSON."""

from __future__ import annotations

import sys
import time

import click
import orjson

from streams.kafka.connection import connection
from streams.settings import load_settings


def format_score(value: bytes) -> str:
    """One readable line for a purchase-scores.v1 record."""
    score = orjson.loads(value)
    top = ", ".join(f"{c['category_id']}:{c['weight']:.2f}" for c in score["top_categories"][:3])
    return (
        f"{score['scored_at'][11:23]}  user={score['user_id']:<10} "
        f"p={score['purchase_probability']:.3f}  model={score['model_version']}  top=[{top}]"
    )


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print each record as one JSON line.")
@click.option("--from-beginning", is_flag=True, help="Start at the earliest offset.")
@click.option("--max", "max_records", type=int, default=None, help="Stop after this many.")
@click.option("--timeout", type=float, default=None, help="Stop after this many idle seconds.")
def scores_command(
    as_json: bool, from_beginning: bool, max_records: int | None, timeout: float | None
) -> None:
    """Tail purchase-scores.v1 (for demos and downstream developers)."""
    from kafka import KafkaConsumer

    from streams.kafka.topics import admin_client

    settings = load_settings()
    admin_client(settings).close()  # a clear error now if the broker is unreachable
    consumer = KafkaConsumer(
        settings.topic_scores,
        **connection(settings).kafka_python(),
        group_id=None,
        auto_offset_reset="earliest" if from_beginning else "latest",
        enable_auto_commit=False,
    )
    seen = 0
    idle_since = time.monotonic()
    try:
        while max_records is None or seen < max_records:
            batch = consumer.poll(timeout_ms=500)
            if not batch:
                if timeout is not None and time.monotonic() - idle_since > timeout:
                    break
                continue
            idle_since = time.monotonic()
            for records in batch.values():
                for record in records:
                    line = record.value.decode() if as_json else format_score(record.value)
                    sys.stdout.write(line + "\n")
                    seen += 1
            sys.stdout.flush()
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
