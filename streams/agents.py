"""Thin agents: move bytes between Kafka and ``streams.pipeline``, then count.

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
import weakref
from collections.abc import Sequence
from typing import Any

from faust.streams import _current_event

from streams.app import Worker
from streams.gapfill import acknowledge_range
from streams.pipeline import (
    Record,
    Row,
    encode_dead_letter,
    encode_scores,
    process_batch,
    score_rows,
)
from streams.settings import ScoringPolicy
from streams.state import StoredProfile, decode_stored, encode_stored

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
                    _unacknowledge(w, event.message)
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
                await publish_scores(w, rows)

    @app.timer(5.0)
    async def observe() -> None:
        try:
            observe_state(w)
        except Exception:
            w.metrics.errors.labels("observe").inc()
            log.exception("sampling gauges failed")

    @app.page("/livez")
    async def livez(web: Any, request: Any) -> Any:
        return web.json({"status": "alive"})

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        checks = readiness(w)
        return web.json(checks, status=200 if all(checks.values()) else 503)

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


async def handle_batch(w: Worker, events: Sequence[Any], *, throttled: bool) -> None:
    """One micro-batch: decode, update profiles, score, publish, write profiles."""
    now = time.time()
    events, filled = await in_offset_order(w, events)
    if not events:
        return
    records = [
        Record(e.message.topic, e.message.partition, e.message.offset, e.key, e.value, now)
        for e in events
    ]
    by_record = {id(r): e for r, e in zip(records, events, strict=True)}

    def load(user: str, record: Record) -> StoredProfile | None:
        _as_current(by_record[id(record)])
        data = w.profiles.get(user.encode())
        return decode_stored(data) if data is not None else None

    outcome = process_batch(records, load, max_event_bytes=w.settings.max_event_bytes)
    metrics = w.metrics
    pending = []
    for record, letter in outcome.dead_letters:
        pending.append(await w.dlq_topic.send(key=record.key, value=encode_dead_letter(letter)))
        metrics.events_consumed.labels(letter.error_class.value).inc()
        metrics.dlq_writes.labels(letter.error_class.value).inc()
    metrics.events_consumed.labels("valid").inc(len(outcome.rows))
    metrics.events_consumed.labels("replayed").inc(outcome.replayed)
    rows = w.throttle.admit(outcome.rows, now) if throttled else outcome.rows
    if rows:
        pending.extend(await publish_scores(w, rows))
    # Scores and dead letters are delivered before the profiles (and their input offsets) are
    # written, so a stored offset always means "scored": see streams.state.
    if pending:
        await asyncio.gather(*pending)
    for user, (stored, record) in outcome.profiles.items():
        _as_current(by_record[id(record)])
        w.profiles[user.encode()] = encode_stored(stored)
    for tp, first, last in filled:  # processed now: let commits pass them
        await acknowledge_range(w.app.consumer, tp, first, last)
    for record in records:
        w.processed_offsets[record.partition] = record.offset
    metrics.last_event_processed.set(now)
    if outcome.replayed:
        log.info("skipped %d events already applied before a restart", outcome.replayed)


async def in_offset_order(
    w: Worker, events: Sequence[Any]
) -> tuple[list[Any], list[tuple[Any, int, int]]]:
    """The batch with every partition continued exactly where this worker left it.

    An event from an older consumer generation is dropped without an acknowledgement (its
    partition may have moved). An event beyond the next expected offset of its partition is
    preceded by the records Faust skipped, read directly (``streams.gapfill``). Returns the
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
            _unacknowledge(w, message)
            continue
        partition, offset = message.partition, message.offset
        expected = w.next_offsets.get(partition)
        if expected is None:  # first event since the assignment: continue from the commit
            committed = consumer._committed_offset.get(message.tp)
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


def _unacknowledge(w: Worker, message: Any) -> None:
    """Keep a held-back message out of Faust's acknowledgements: take_events acks every event
    it yielded, and a counted ack would let the committed offset pass the held-back range."""
    message.acked = True  # Consumer.ack() records nothing for an already-acked message
    consumer: Any = w.app.consumer
    consumer._unacked_messages.discard(message)  # nor waits for it at a rebalance


async def publish_scores(w: Worker, rows: Sequence[Row]) -> list[Any]:
    """Score rows with one onnxruntime call and hand the scores to the producer."""
    bundle = w.models.bundle
    assert bundle is not None  # the worker does not start without a model
    metrics = w.metrics
    started = time.perf_counter()
    # On the loop: the features are Python under the GIL and onnxruntime takes well under a
    # microsecond per event here, so a thread hop would only add latency (bench/ measured it).
    probabilities = score_rows(bundle, rows)
    metrics.inference_duration.observe(time.perf_counter() - started)
    metrics.inference_batch_size.observe(len(rows))
    # Straight to the transport producer: Topic.send's channel layers cost more per score
    # than the scoring itself. Each returns the delivery future the batch waits for.
    send, topic = w.app.producer.send, w.settings.topic_scores
    futures = []
    for key, value in encode_scores(rows, probabilities, bundle, top_k=w.settings.top_categories):
        futures.append(await send(topic, key, value, None, None, None))
    handed = time.time()
    for row, probability in zip(rows, probabilities.tolist(), strict=True):
        metrics.event_to_score_latency.observe(max(0.0, handed - row.event.ts))
        metrics.ingest_to_score_latency.observe(max(0.0, handed - row.record.consumed_at))
        metrics.purchase_probability.observe(probability)
    metrics.scores_published.inc(len(rows))
    return futures


def _as_current(event: Any) -> None:
    """Make ``event`` Faust's "current event" for the next table read or write.

    Faust's RocksDB table reads and writes the partition database, and sends the changelog to
    the partition, of the current event. In a micro-batch the current event is not the one
    whose user we touch, so set it per access. Set only the context variable:
    ``Stream._set_current_event`` would also overwrite ``stream.current_event``, which
    take_events' buffer filler reads concurrently, and pair the next message with this event.
    """
    _current_event.set(weakref.ref(event))


def readiness(w: Worker) -> dict[str, bool]:
    """The readiness checks: a model, partitions assigned, recovery done."""
    app = w.app
    return {
        "model_loaded": w.models.bundle is not None,
        "partitions_assigned": w.assigned_once and not app.rebalancing,
        "recovered": not app.in_recovery and w.assigned_once,
    }


def observe_state(w: Worker) -> None:
    """Refresh the gauges that are sampled rather than counted: lag, table size, readiness."""
    metrics = w.metrics
    consumer = getattr(w.app, "_consumer", None)
    if consumer is not None:
        for tp in consumer.assignment():
            if tp.topic != w.settings.topic_events:
                continue
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            done = w.processed_offsets.get(tp.partition, -1) + 1
            metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(max(0, highwater - done))
    metrics.profile_users.set(table_size(w))
    metrics.ready.set(1 if all(readiness(w).values()) else 0)


def table_size(w: Worker) -> int:
    """Users held: RocksDB's key estimate per partition database (cheap), summed."""
    store = w.profiles.data
    total = 0
    for db in getattr(store, "_dbs", {}).values():
        try:
            total += int(db.property_int_value("rocksdb.estimate-num-keys") or 0)
        except (AttributeError, TypeError, ValueError):
            continue
    return total
