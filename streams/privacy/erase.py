"""``intentflow erase``: erase shoppers' profiles and wait for the workers' receipts.

The command computes each shopper's pseudonyms (under every configured key, so a profile not
yet moved to the active key is found too) and sends one erase command per shopper to EVERY
partition of the erase-command topic: the worker that owns the partition holding the profile
receives it whatever partitioner the event producers used. Each partition's owner deletes the
profile from RocksDB, tombstones it in the compacted changelog, drops any throttled score
waiting for the shopper, and publishes a receipt. The command prints one line per shopper once
every partition has answered, or says which have not within ``--wait``.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import click

from streams.contracts.erasure import EraseCommand, EraseReceipt
from streams.errors import IntentflowError
from streams.kafka.connection import connection
from streams.privacy.pseudonyms import Pseudonymizer, parse_keys
from streams.settings import Settings, load_settings


class ErasureTimeoutError(IntentflowError):
    """Not every partition confirmed an erasure in time. Check that workers run and own every
    partition (their /readyz and logs), then run the same `intentflow erase` again: erasing
    twice is harmless."""


@dataclass
class Request:
    user_label: str  # what to print: the position in the request, never the id itself
    command: EraseCommand
    receipts: dict[int, EraseReceipt] = field(default_factory=dict)


def erase(
    settings: Settings, user_ids: list[str], *, wait: float, echo: bool = True
) -> list[Request]:
    """Send the erase commands and wait for a receipt from every partition."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    _check_cluster(settings)
    pseudonyms = Pseudonymizer(parse_keys(settings.pseudonym_keys))
    conn = connection(settings).kafka_python()
    receipts_tp = TopicPartition(settings.topic_erasure_receipts, 0)
    consumer = KafkaConsumer(**conn, group_id=None, enable_auto_commit=False)
    consumer.assign([receipts_tp])
    consumer.seek_to_end(receipts_tp)
    consumer.position(receipts_tp)  # fix the start before sending
    producer = KafkaProducer(**conn, acks="all")
    now = datetime.now(UTC)
    requests = {}
    try:
        for n, user_id in enumerate(user_ids, start=1):
            command = EraseCommand(
                request_id=uuid.uuid4().hex,
                pseudonyms=pseudonyms.all_pseudonyms(user_id),
                requested_at=now,
            )
            requests[command.request_id] = Request(f"#{n}", command)
            value = command.model_dump_json().encode()
            for partition in range(settings.partitions):
                producer.send(
                    settings.topic_erasure, value=value, key=command.request_id.encode(),
                    partition=partition,
                )  # fmt: skip
        producer.flush(30)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and not all(
            len(r.receipts) == settings.partitions for r in requests.values()
        ):
            for batch in consumer.poll(timeout_ms=250).values():
                for record in batch:
                    receipt = EraseReceipt.model_validate_json(record.value)
                    if receipt.request_id in requests:
                        requests[receipt.request_id].receipts[receipt.partition] = receipt
    finally:
        producer.close(5)
        consumer.close()
    done = list(requests.values())
    if echo:
        for r in done:
            held = sorted(p for p, receipt in r.receipts.items() if receipt.held)
            where = f"profile erased on partition {held[0]}" if held else "no profile held"
            silent = settings.partitions - len(r.receipts)
            status = where if not silent else f"{where}; {silent} partitions did not answer"
            click.echo(f"{r.user_label}  request {r.command.request_id}  {status}")
    missing = [r for r in done if len(r.receipts) < settings.partitions]
    if missing:
        raise ErasureTimeoutError(
            f"{len(missing)} of {len(done)} erase requests were not confirmed by every partition "
            f"of {settings.topic_erasure} within {wait:.0f}s"
        )
    return done


def _check_cluster(settings: Settings) -> None:
    """The broker answers, the principal may send commands and read receipts (with ACLs: the
    eraser's grants only), and the erase-command topic has a partition per profile partition.
    Topics are created only where none exist yet (a development cluster)."""
    from streams.kafka.access import check_access, eraser_grants, explained
    from streams.kafka.probe import diagnose
    from streams.kafka.topics import check_partition_count, create_topics, existing_partitions

    conn = connection(settings)
    if (problem := diagnose(conn, settings.kafka_connect_timeout_seconds)) is not None:
        raise problem
    check_access(conn, eraser_grants(settings), who="intentflow erase")
    with explained(conn, "checking the erasure topics"):
        topics = [settings.topic_erasure, settings.topic_erasure_receipts]
        found = existing_partitions(settings, topics)
        if len(found) < len(topics):
            create_topics(settings)  # an open cluster; on a secured one an admin provisions
        else:
            check_partition_count(
                settings.topic_erasure, found[settings.topic_erasure], settings.partitions
            )


def _read_ids(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path}: {exc.strerror}") from None
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


@click.command("erase")
@click.option("--user-id", "user_ids", multiple=True, help="A shopper to erase (repeatable).")
@click.option(
    "--from-file", type=click.Path(path_type=Path), default=None,
    help="A file with one user id per line (# comments and blank lines are skipped).",
)  # fmt: skip
@click.option(
    "--wait", type=float, default=60.0, show_default=True,
    help="Seconds to wait for every partition's receipt.",
)  # fmt: skip
def erase_command(user_ids: tuple[str, ...], from_file: Path | None, wait: float) -> None:
    """Erase shoppers' profiles (RocksDB and the compacted changelog) and print the receipts.

    User ids are never printed: each line names the shopper by its position in the request.
    """
    ids = list(user_ids) + (_read_ids(from_file) if from_file else [])
    if not ids:
        raise click.UsageError("give --user-id U (repeatable) or --from-file F")
    erase(load_settings(), ids, wait=wait)  # IntentflowErrors become a message and exit 2
