"""Handing a batch's scores and dead letters to the producer, and counting them.

Both the batch runner and the per-message agent send through here. Sends return delivery
futures that the caller awaits before it writes profiles or commits offsets.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any, cast

import numpy as np

from streams.contracts.dead_letters import DeadLetter, dead_letter_key, encode_dead_letter
from streams.processing.step import Record, Row, Scored, score
from streams.worker.context import Worker
from streams.worker.faust_compat import ChangelogTrackingProducer
from streams.worker.metrics import observe_many

log = logging.getLogger("intentflow.worker")


class DeadLetterSends:
    """Delivery futures of a batch's dead letters, with their source positions."""

    def __init__(self, w: Worker) -> None:
        self.w = w
        self.sends: list[tuple[Record, Any]] = []

    def __await__(self) -> Any:
        return self.delivered().__await__()

    def __bool__(self) -> bool:
        return bool(self.sends)

    async def delivered(self) -> None:
        """Wait for every dead letter. One the broker refuses for its size (it cannot happen
        with the capped records, but a broker may set a smaller limit) is counted and logged
        with its source position instead of stopping the worker; any other failure raises, so
        the batch is not committed and is read again."""
        from aiokafka.errors import MessageSizeTooLargeError, RecordTooLargeError

        for record, future in self.sends:
            try:
                await future
            except (MessageSizeTooLargeError, RecordTooLargeError) as exc:
                self.w.metrics.errors.labels("dead_letter").inc()
                log.error(
                    "dead letter for %s[%d]@%d could not be written (%s); the record stays "
                    "readable at that position while the topic retains it",
                    record.topic, record.partition, record.offset, type(exc).__name__,
                )  # fmt: skip


async def publish_dead_letters(
    w: Worker, letters: Sequence[tuple[Record, DeadLetter]]
) -> DeadLetterSends:
    """Hand dead letters to the producer and count them by class."""
    sends = DeadLetterSends(w)
    metrics = w.metrics
    for record, letter in letters:
        future = await w.app.producer.send(
            w.settings.topic_dlq, dead_letter_key(record.key, w.pseudonyms.pseudonym),
            encode_dead_letter(letter),
            None, None, None,
        )  # fmt: skip
        sends.sends.append((record, future))
        metrics.events_consumed.labels(letter.error_class.value).inc()
        metrics.dlq_writes.labels(letter.error_class.value).inc()
    return sends


async def publish_scores(w: Worker, scored: Scored, started: float) -> list[Any]:
    """Hand scored records to the producer; count them. Returns the delivery futures."""
    if not scored.rows:
        return []
    metrics = w.metrics
    metrics.inference_duration.observe(time.perf_counter() - started)
    metrics.inference_batch_size.observe(len(scored.rows))
    # Straight to the transport producer, one record batch per partition: Topic.send's
    # channel layers, and even one producer send per score, cost more than the scoring.
    # Each batch's delivery future is what the checkpoint waits for.
    send_many = cast(ChangelogTrackingProducer, w.app.producer).send_many
    futures = []
    if scored.records:
        futures += await send_many(w.settings.topic_scores, scored.records)
    if scored.records_v2:  # purchase-scores.v2 on its own topic
        futures += await send_many(w.settings.scores_v2_topic, scored.records_v2)
        metrics.scores_explained.labels(_explained(w, scored)).inc(len(scored.records_v2))
    handed = time.time()
    rows = scored.rows
    occurred = np.fromiter((r.event.ts for r in rows), dtype=np.float64, count=len(rows))
    consumed = np.fromiter((r.record.consumed_at for r in rows), np.float64, count=len(rows))
    observe_many(metrics.event_to_score_latency, np.maximum(handed - occurred, 0.0))
    observe_many(metrics.ingest_to_score_latency, np.maximum(handed - consumed, 0.0))
    observe_many(metrics.purchase_probability, scored.probabilities)
    metrics.scores_published.inc(len(rows))
    return futures


def _explained(w: Worker, scored: Scored) -> str:
    """Whether a batch's v2 records carry reasons, or why not (EXPLAIN_OUTCOMES)."""
    if scored.explained:
        return "explained"
    if not w.settings.reasons:
        return "off"
    bundle = w.models.bundle
    return "no_reference" if bundle is None or bundle.reference is None else "failed"


async def score_rows(w: Worker, rows: Sequence[Row]) -> list[Any]:
    """Score rows the throttled policy held back, publish them; their delivery awaitables."""
    if not rows:
        return []
    bundle = w.models.bundle
    assert bundle is not None  # the worker does not start without a model
    started = time.perf_counter()
    scored = score(rows, bundle, top_k=w.settings.top_categories)
    letters = await publish_dead_letters(w, scored.dead_letters)
    return [*([letters] if letters else []), *await publish_scores(w, scored, started)]
