"""Example consumer of intentflow's purchase scores, for marketing services downstream.

Copy it and replace ``handle`` with your own action (send an offer, update a CRM field). It needs
only kafka-python (``pip install 'kafka-python>=3'``), not intentflow.

What it shows:

* **De-duplication on ``event_id``.** Delivery is at-least-once: when a worker crashes or its
  partitions move, the events since its last commit are scored again, so the same score (same
  ``event_id``) can arrive twice. ``Deduper`` remembers the event ids it handled in a bounded
  memory: at most ``capacity`` ids, each forgotten ``ttl`` seconds after it was last seen.
  Duplicates come from replays of the last seconds before a failure, so an hour is ample. The
  memory is per process and is lost on restart: if an action must never happen twice, also
  make it idempotent on ``event_id`` where you store its effect (a unique key).
* **Tolerance of schema versions.** ``purchase-scores.v1`` records carry ``schema_version`` "1";
  newer versions only add fields. ``parse_score`` reads the fields it needs, checks their
  types, and ignores everything else, so a "2" record (which adds ``exploration`` and
  ``reasons``) is handled the same way. A record without a needed field, or that is not JSON,
  is counted and skipped with its reason, never crashing the consumer.
* **Offsets committed after handling.** Auto-commit is off. Each polled batch is handled first
  and committed after, so a crash in between replays the batch (at-least-once again, which
  the de-duplication absorbs) and never loses a score. If ``handle`` raises, nothing of that
  batch is committed and the exception stops the consumer.

Run it (``--help`` lists every option)::

    python examples/score_consumer.py --bootstrap localhost:9092 --group marketing-offers

The broker's address and security come from the same variables as intentflow's own, when set:
``INTENTFLOW_KAFKA_BOOTSTRAP`` (the default of ``--bootstrap``),
``INTENTFLOW_KAFKA_SECURITY_PROTOCOL`` (PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL),
``INTENTFLOW_KAFKA_SASL_MECHANISM`` (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512),
``INTENTFLOW_KAFKA_SASL_USERNAME``, ``INTENTFLOW_KAFKA_SASL_PASSWORD``, and
``INTENTFLOW_KAFKA_SSL_CAFILE``, ``INTENTFLOW_KAFKA_SSL_CERTFILE`` and
``INTENTFLOW_KAFKA_SSL_KEYFILE`` (mutual TLS). Like intentflow, it refuses SASL PLAIN over
SASL_PLAINTEXT (a password sent unencrypted) unless ``INTENTFLOW_KAFKA_ALLOW_PLAIN_OVER_PLAINTEXT``
is true.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger("score_consumer")

# The oldest schema version this consumer understands. Newer versions add fields only.
MIN_SCHEMA_VERSION = 1
_VERSION = re.compile(r"^(\d+)(?:\.\d+)*$")


@dataclass(frozen=True)
class Score:
    """The fields of a score this consumer uses; every other field is ignored."""

    event_id: str
    user_id: str
    purchase_probability: float
    model_version: str
    schema_version: str
    occurred_at: str
    top_categories: tuple[tuple[str, float], ...] = ()


class ScoreFormatError(ValueError):
    """A record this consumer cannot use: it is skipped and counted, with this reason."""


def _field(record: Mapping[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    if name not in record:
        raise ScoreFormatError(f"no {name!r} field")
    value = record[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ScoreFormatError(f"{name!r} is {type(value).__name__}, expected {kind}")
    return value


def parse_score(value: bytes | None) -> Score:
    """Read one record value of the scores topic, of schema version "1" or newer."""
    if value is None:
        raise ScoreFormatError("empty record value")
    try:
        record = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ScoreFormatError(f"not JSON: {exc}") from None
    if not isinstance(record, dict):
        raise ScoreFormatError(f"a JSON {type(record).__name__}, expected an object")
    version = _field(record, "schema_version", str)
    match = _VERSION.match(version)
    if not match or int(match[1]) < MIN_SCHEMA_VERSION:
        raise ScoreFormatError(f"unsupported schema_version {version!r}")
    event_id = _field(record, "event_id", str)
    if not event_id:
        raise ScoreFormatError("empty 'event_id'")
    probability = float(_field(record, "purchase_probability", (int, float)))
    if not 0.0 <= probability <= 1.0:
        raise ScoreFormatError(f"purchase_probability {probability} is outside 0..1")
    categories = []  # optional for this consumer: malformed entries are dropped, not fatal
    items = record.get("top_categories")
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        category, weight = item.get("category_id"), item.get("weight")
        if isinstance(category, str) and isinstance(weight, int | float):
            categories.append((category, float(weight)))
    return Score(
        event_id=event_id,
        user_id=_field(record, "user_id", str),
        purchase_probability=probability,
        model_version=_field(record, "model_version", str),
        schema_version=version,
        occurred_at=_field(record, "occurred_at", str),
        top_categories=tuple(categories),
    )


class Deduper:
    """Remembers recently handled event ids: at most ``capacity``, each for ``ttl`` seconds after
    it was last seen (least recently seen forgotten first)."""

    def __init__(
        self,
        capacity: int = 100_000,
        ttl: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if capacity < 1 or ttl <= 0:
            raise ValueError("capacity must be >= 1 and ttl > 0")
        self.capacity = capacity
        self.ttl = ttl
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()  # event_id -> last seen, oldest first

    def first_time(self, event_id: str) -> bool:
        """True the first time an id is seen (within ttl and capacity), False for a repeat."""
        now = self._clock()
        while self._seen:
            oldest, seen_at = next(iter(self._seen.items()))
            if now - seen_at < self.ttl:
                break
            del self._seen[oldest]
        repeat = event_id in self._seen
        self._seen[event_id] = now
        self._seen.move_to_end(event_id)
        if len(self._seen) > self.capacity:
            self._seen.popitem(last=False)
        return not repeat

    def __len__(self) -> int:
        return len(self._seen)


@dataclass
class Stats:
    handled: int = 0
    duplicates: int = 0
    invalid: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


class Consumer(Protocol):
    """The part of kafka-python's KafkaConsumer this example uses."""

    def poll(self, timeout_ms: int = ..., max_records: int | None = ...) -> Mapping[Any, Any]: ...

    def commit(self) -> Any: ...


def run(
    consumer: Consumer,
    handle: Callable[[Score], None],
    deduper: Deduper,
    *,
    max_records: int | None = None,
    idle_timeout: float | None = None,
    stats: Stats | None = None,
) -> Stats:
    """Poll, handle each new score once, commit after each handled batch.

    Stops after ``max_records`` records (handled, duplicate or invalid) or ``idle_timeout``
    seconds without a record; without either it runs until interrupted.
    """
    stats = stats or Stats()
    seen = 0
    idle_since = time.monotonic()
    while max_records is None or seen < max_records:
        limit = None if max_records is None else max_records - seen
        batch = consumer.poll(timeout_ms=500, max_records=limit)
        if not batch:
            if idle_timeout is not None and time.monotonic() - idle_since > idle_timeout:
                break
            continue
        idle_since = time.monotonic()
        for records in batch.values():
            for record in records:
                seen += 1
                _handle_one(record, handle, deduper, stats)
        consumer.commit()  # only after every record of the batch was handled
    return stats


def _handle_one(
    record: Any, handle: Callable[[Score], None], deduper: Deduper, stats: Stats
) -> None:
    try:
        score = parse_score(record.value)
    except ScoreFormatError as exc:
        stats.invalid += 1
        reason = str(exc).split(":")[0]
        stats.reasons[reason] = stats.reasons.get(reason, 0) + 1
        log.warning("skipped %s[%s]@%s: %s", record.topic, record.partition, record.offset, exc)
        return
    if not deduper.first_time(score.event_id):
        stats.duplicates += 1
        return
    handle(score)
    stats.handled += 1


def print_score(score: Score) -> None:
    """The example's action: one JSON line per new score on stdout. Replace with yours."""
    line = {
        "event_id": score.event_id,
        "user_id": score.user_id,
        "purchase_probability": score.purchase_probability,
        "model_version": score.model_version,
        "schema_version": score.schema_version,
    }
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")


def security_options(env: Mapping[str, str]) -> dict[str, Any]:
    """kafka-python's security options from the ``INTENTFLOW_KAFKA_*`` variables in ``env``.
    Raises ``ValueError`` naming the variable for a setting it cannot use."""
    prefix = "INTENTFLOW_KAFKA_"
    protocol = env.get(prefix + "SECURITY_PROTOCOL", "PLAINTEXT").upper()
    if protocol not in _SECURITY_PROTOCOLS:
        raise ValueError(f"{prefix}SECURITY_PROTOCOL must be one of {_SECURITY_PROTOCOLS}")
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol.startswith("SASL_"):
        mechanism = env.get(prefix + "SASL_MECHANISM", "").upper()
        if not (
            mechanism and env.get(prefix + "SASL_USERNAME") and env.get(prefix + "SASL_PASSWORD")
        ):
            raise ValueError(
                f"{protocol} needs {prefix}SASL_MECHANISM, {prefix}SASL_USERNAME and "
                f"{prefix}SASL_PASSWORD"
            )
        allowed = env.get(prefix + "ALLOW_PLAIN_OVER_PLAINTEXT", "").lower() in {"1", "true", "yes"}
        if mechanism == "PLAIN" and protocol == "SASL_PLAINTEXT" and not allowed:
            raise ValueError(
                "SASL PLAIN over SASL_PLAINTEXT sends the password unencrypted: use SASL_SSL or "
                f"a SCRAM mechanism, or set {prefix}ALLOW_PLAIN_OVER_PLAINTEXT=true"
            )
        options["sasl_mechanism"] = mechanism
        options["sasl_plain_username"] = env[prefix + "SASL_USERNAME"]
        options["sasl_plain_password"] = env[prefix + "SASL_PASSWORD"]
    for name in ("cafile", "certfile", "keyfile"):
        if value := env.get(f"{prefix}SSL_{name.upper()}"):
            options[f"ssl_{name}"] = value
    return options


def make_consumer(
    bootstrap: str,
    topic: str,
    group: str,
    *,
    from_beginning: bool = False,
    env: Mapping[str, str] | None = None,
) -> Any:
    """A kafka-python consumer in ``group`` with auto-commit off, secured as ``env`` (default:
    the process environment) says."""
    from kafka import KafkaConsumer

    return KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap.split(","),
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
        **security_options(os.environ if env is None else env),
    )


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--bootstrap",
        default=os.environ.get("INTENTFLOW_KAFKA_BOOTSTRAP", "localhost:9092"),
        help="host:port[,host:port] (default: INTENTFLOW_KAFKA_BOOTSTRAP or localhost:9092)",
    )
    parser.add_argument("--topic", default="purchase-scores.v1")
    parser.add_argument("--group", default="marketing-score-consumer", help="consumer group")
    parser.add_argument(
        "--from-beginning", action="store_true", help="a new group starts at the earliest offset"
    )
    parser.add_argument("--dedupe-capacity", type=int, default=100_000)
    parser.add_argument("--dedupe-ttl", type=float, default=3600.0, help="seconds")
    parser.add_argument("--max", type=int, default=None, help="stop after this many records")
    parser.add_argument(
        "--idle-timeout", type=float, default=None, help="stop after this many idle seconds"
    )
    args = parser.parse_args(None if argv is None else list(argv))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    try:
        consumer = make_consumer(
            args.bootstrap, args.topic, args.group, from_beginning=args.from_beginning
        )
    except ValueError as exc:
        parser.error(str(exc))  # exit 2, the message, no traceback
    stats = Stats()
    try:
        run(
            consumer,
            print_score,
            Deduper(args.dedupe_capacity, args.dedupe_ttl),
            max_records=args.max,
            idle_timeout=args.idle_timeout,
            stats=stats,
        )
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
        log.info(
            "handled %d, duplicates %d, invalid %d",
            stats.handled,
            stats.duplicates,
            stats.invalid,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
