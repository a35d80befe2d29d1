"""Fetch the input records a Faust stream skipped, so that every offset is applied in order.

Around rebalances Faust can hand a stream events out of order: events prefetched before the
rebalance, or prefetched events far ahead of the offset it has just seeked back to, after which
its own read-offset filter drops the re-fetched ones (faust-streaming issues 216 and 221). An
agent that applied such an event would skip the events in between, and Faust would acknowledge
the skipped range as a "gap" (a mechanism meant for compacted and transactional topics).

``GapFiller`` closes such a hole directly: it reads the missing offsets of the partition with a
plain aiokafka consumer (no group, no commits) and the agent applies them before the event that
arrived early. Offsets that do not exist (transaction markers) come back as nothing, which ends
the fetch. Only after the filled records are processed does the agent tell Faust to count the
range as acknowledged (``faust_compat.acknowledge_range``), so a commit never passes an
unprocessed offset.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from faust.types import TP

from streams.errors import BrokerUnreachableError
from streams.kafka.connection import connection
from streams.settings import Settings


@dataclass(eq=False)
class FetchedMessage:
    """Enough of a Faust message for the agent and the table (which reads the partition)."""

    topic: str
    partition: int
    offset: int
    generation_id: int
    acked: bool = True  # never part of Faust's acknowledgements: see acknowledge_range

    @property
    def tp(self) -> TP:
        return TP(self.topic, self.partition)


@dataclass(eq=False)
class FetchedEvent:
    message: FetchedMessage
    key: bytes | None
    value: bytes


class GapFiller:
    """A group-less aiokafka consumer that reads given offset ranges of the input topic."""

    def __init__(self, settings: Settings, *, timeout: float = 30.0) -> None:
        self.settings = settings
        self.timeout = timeout
        self._consumer: Any = None
        self._lock = asyncio.Lock()

    async def fetch(self, tp: TP, first: int, end: int, generation: int) -> list[FetchedEvent]:
        """The records at offsets ``first <= offset < end`` of ``tp``, in order."""
        from aiokafka import TopicPartition

        async with self._lock:
            consumer = await self._ensure()
            atp = TopicPartition(tp.topic, tp.partition)
            consumer.assign([atp])
            consumer.seek(atp, first)
            out: list[FetchedEvent] = []
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.timeout
            while True:
                batch = (await consumer.getmany(atp, timeout_ms=500)).get(atp, [])
                for record in batch:
                    if record.offset >= end:
                        return out
                    message = FetchedMessage(tp.topic, tp.partition, record.offset, generation)
                    out.append(FetchedEvent(message, record.key, record.value))
                if out and out[-1].message.offset >= end - 1:
                    return out
                if loop.time() > deadline:
                    raise BrokerUnreachableError(
                        f"could not read offsets {first}..{end - 1} of {tp.topic}[{tp.partition}] "
                        f"from {self.settings.kafka_bootstrap} within {self.timeout:.0f}s"
                    )

    async def _ensure(self) -> Any:
        if self._consumer is None:
            from aiokafka import AIOKafkaConsumer

            self._consumer = AIOKafkaConsumer(
                **connection(self.settings).aiokafka(),
                group_id=None,
                enable_auto_commit=False,
                client_id=f"{self.settings.app_id}-gapfill",
            )
            await self._consumer.start()
        return self._consumer

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
