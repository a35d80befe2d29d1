"""A plain aiokafka consume -> handle batch -> produce loop, shared by the passthrough and the
plain-loop job so that both use the Kafka clients exactly as the Faust worker configures them.

Per batch (``getmany`` of at most ``batch_max`` records): hand the records to ``handle``, send
every output, wait until all are acknowledged, and only then count the input offsets as done.
Offsets are committed at most once a second, like the worker (``broker_commit_interval=1.0``).
So the delivery guarantee is the worker's: at-least-once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import time
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.kafkautil import connection_of

Handler = Callable[[Sequence[Any]], list[tuple[bytes | None, bytes]]]


def arguments(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--batch-max", type=int, default=256)
    parser.add_argument("--batch-window-ms", type=int, default=20)
    return parser


async def run(args: argparse.Namespace, handle: Handler) -> None:
    """Consume ``args.input`` in group ``args.group`` until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    kafka = connection_of(args.bootstrap).aiokafka()  # INTENTFLOW_KAFKA_* security, TLS
    consumer = AIOKafkaConsumer(
        args.input,
        **kafka,
        group_id=args.group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=max(500, args.batch_max * 2),
        session_timeout_ms=10_000,
        heartbeat_interval_ms=3_000,
    )
    producer = AIOKafkaProducer(
        **kafka,
        acks="all",
        linger_ms=2,
        max_batch_size=262_144,
        compression_type=None,
    )
    await producer.start()
    await consumer.start()
    pending: dict[TopicPartition, int] = {}
    last_commit = time.monotonic()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(
                timeout_ms=args.batch_window_ms, max_records=args.batch_max
            )
            records = [r for batch in batches.values() for r in batch]
            if not records:
                continue
            futures = [
                await producer.send(args.output, key=key, value=value)
                for key, value in handle(records)
            ]
            if futures:
                await asyncio.gather(*futures)
            for tp, batch in batches.items():
                pending[tp] = batch[-1].offset + 1
            if time.monotonic() - last_commit >= 1.0:
                await consumer.commit(dict(pending))
                last_commit = time.monotonic()
    finally:
        if pending:
            with contextlib.suppress(Exception):  # shutting down: best effort
                await consumer.commit(dict(pending))
        await consumer.stop()
        await producer.stop()
