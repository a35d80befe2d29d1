"""Thin agents: move bytes between Kafka and ``streams.processing.step``, then count.

``track_interest`` consumes clickstream.v1 in micro-batches (``stream.take_events``), applies
each event to its user's profile, scores the batch with one onnxruntime call and publishes the
scores. Offsets are acked when the batch's loop body is done, which is after every score and
dead letter has been delivered and the profiles written: delivery is at-least-once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any

from streams.contracts.dead_letters import encode_dead_letter
from streams.processing.envelope import StoredProfile, decode_stored, encode_stored
from streams.processing.step import Record, Scored, run_step, score
from streams.settings import ScoringPolicy
from streams.worker import faust_compat
from streams.worker.context import Worker

log = logging.getLogger("intentflow.worker")


def register(w: Worker) -> None:
    """Attach the agents, timers and health pages to the worker's app."""
    app, settings = w.app, w.settings
    throttled = settings.scoring_policy is ScoringPolicy.THROTTLED

    @app.agent(w.events_topic, name="track_interest", concurrency=1)
    async def track_interest(stream: Any) -> None:
        async for events in stream.take_events(settings.batch_max, settings.batch_window_seconds):
            try:
                await handle_batch(w, events, throttled=throttled)
            except Exception:
                # take_events acks what it yielded even when the loop body fails: take the
                # batch back out, so the commit stops before it. The supervisor then stops the
                # worker, and the restarted one replays from that commit.
                for event in events:
                    faust_compat.unacknowledge(w.app.consumer, event.message)
                w.metrics.errors.labels("batch").inc()
                log.exception("batch of %d events failed; stopping the worker", len(events))
                raise

    @app.timer(settings.model_poll_seconds)
    async def reload_model() -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(w.executor, w.models.poll)
        except Exception:  # the serving model stays; the next poll tries again
            w.metrics.errors.labels("model_reload").inc()
            log.exception("model poll failed")

    if throttled:

        @app.timer(max(0.2, settings.score_interval_seconds / 4))
        async def flush_throttled() -> None:
            rows = w.throttle.due(time.time())
            if rows:
                bundle = w.models.bundle
                assert bundle is not None
                started = time.perf_counter()
                await publish_scores(w, score(rows, bundle, top_k=settings.top_categories), started)

    @app.on_partitions_assigned.connect
    async def on_assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        w.assigned_once = True
        # Faust seeks every partition to its committed offset after a rebalance: each
        # partition continues from there.
        w.next_offsets.clear()

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        # A partition that moved to another worker is that worker's to report.
        revoked = args[0] if args else kwargs.get("revoked", ())
        for tp in revoked:
            if tp.topic == settings.topic_events:
                w.processed_offsets.pop(tp.partition, None)
                with contextlib.suppress(KeyError):  # never reported
                    w.metrics.consumer_lag.remove(tp.topic, str(tp.partition))


class TableProfiles:
    """The profile table as the step's ``ProfileLookup``. Faust's RocksDB table reads the
    partition of the current event, so each read first makes an event of that partition
    current."""

    def __init__(self, table: Any, events: Sequence[Any]) -> None:
        self._table = table
        self._by_partition = {e.message.partition: e for e in events}

    def get(self, partition: int, user_id: str, /) -> StoredProfile | None:
        faust_compat.set_current_event(self._by_partition[partition])
        data = self._table.get(user_id.encode())
        return decode_stored(data) if data is not None else None


async def handle_batch(w: Worker, events: Sequence[Any], *, throttled: bool) -> None:
    """One micro-batch: the pure step, then send, wait for delivery, write profiles."""
    now = time.time()
    events, filled = await in_offset_order(w, events)
    if not events:
        return
    records = [
        Record(e.message.topic, e.message.partition, e.message.offset, e.key, e.value, now)
        for e in events
    ]
    bundle = w.models.bundle
    assert bundle is not None  # the worker does not start without a model
    started = time.perf_counter()
    out = run_step(
        records,
        TableProfiles(w.profiles, events),
        bundle,
        max_event_bytes=w.settings.max_event_bytes,
        top_k=w.settings.top_categories,
        throttle=w.throttle if throttled else None,
        now=now,
    )
    applied, metrics = out.applied, w.metrics
    pending = []
    for record, letter in applied.dead_letters:
        pending.append(await w.dlq_topic.send(key=record.key, value=encode_dead_letter(letter)))
        metrics.events_consumed.labels(letter.error_class.value).inc()
        metrics.dlq_writes.labels(letter.error_class.value).inc()
    metrics.events_consumed.labels("valid").inc(len(applied.rows))
    metrics.events_consumed.labels("replayed").inc(applied.replayed)
    pending.extend(await publish_scores(w, out.scored, started))
    # Scores and dead letters are delivered before the profiles (and their input offsets) are
    # written, so a stored offset always means "scored": see streams.processing.envelope.
    if pending:
        await asyncio.gather(*pending)
    by_offset = {(e.message.partition, e.message.offset): e for e in events}
    for user, (stored, record) in applied.profiles.items():
        faust_compat.set_current_event(by_offset[(record.partition, record.offset)])
        w.profiles[user.encode()] = encode_stored(stored)
    for tp, first, last in filled:  # processed now: let commits pass them
        await faust_compat.acknowledge_range(w.app.consumer, tp, first, last)
    for record in records:
        w.processed_offsets[record.partition] = record.offset
    metrics.last_event_processed.set(now)
    if applied.replayed:
        log.info("skipped %d events already applied before a restart", applied.replayed)


async def in_offset_order(
    w: Worker, events: Sequence[Any]
) -> tuple[list[Any], list[tuple[Any, int, int]]]:
    """The batch with every partition continued exactly where this worker left it.

    An event from an older consumer generation is dropped without an acknowledgement (its
    partition may have moved). An event beyond the next expected offset of its partition is
    preceded by the records Faust skipped, read directly (``streams.worker.gapfill``). Returns the
    events to apply and the filled ranges ``(tp, first, last)``, which the caller hands to
    Faust's acknowledgements once they are processed.
    """
    generation = w.app.consumer_generation_id
    consumer: Any = w.app.consumer
    out: list[Any] = []
    filled: list[tuple[Any, int, int]] = []
    for event in events:
        message = event.message
        if message.generation_id != generation:
            faust_compat.unacknowledge(consumer, message)
            continue
        partition, offset = message.partition, message.offset
        expected = w.next_offsets.get(partition)
        if expected is None:  # first event since the assignment: continue from the commit
            committed = faust_compat.committed_offset(consumer, message.tp)
            expected = committed if committed is not None and committed >= 0 else offset
        if offset > expected:
            fetched = await w.gaps.fetch(message.tp, expected, offset, generation)
            log.warning(
                "partition %d: Faust skipped offsets %d..%d; read %d records of them directly",
                partition, expected, offset - 1, len(fetched),
            )  # fmt: skip
            w.metrics.offset_gaps_filled.inc()
            out.extend(fetched)
            filled.append((message.tp, expected, offset - 1))
        w.next_offsets[partition] = max(expected, offset + 1)
        out.append(event)
    return out, filled


async def publish_scores(w: Worker, scored: Scored, started: float) -> list[Any]:
    """Hand scored records to the producer; count them. Returns the delivery futures."""
    if not scored.rows:
        return []
    metrics = w.metrics
    metrics.inference_duration.observe(time.perf_counter() - started)
    metrics.inference_batch_size.observe(len(scored.rows))
    # Straight to the transport producer: Topic.send's channel layers cost more per score
    # than the scoring itself. Each returns the delivery future the batch waits for.
    send, topic = w.app.producer.send, w.settings.topic_scores
    futures = [await send(topic, key, value, None, None, None) for key, value in scored.records]
    handed = time.time()
    for row, probability in zip(scored.rows, scored.probabilities.tolist(), strict=True):
        metrics.event_to_score_latency.observe(max(0.0, handed - row.event.ts))
        metrics.ingest_to_score_latency.observe(max(0.0, handed - row.record.consumed_at))
        metrics.purchase_probability.observe(probability)
    metrics.scores_published.inc(len(scored.rows))
    return futures
