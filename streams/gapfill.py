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
range as acknowledged (``acknowledge_range``), so a commit never passes an unprocessed offset.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from typing import Any

from faust.transport.consumer import Consumer as FaustConsumer
from faust.types import TP

from streams.errors import BrokerUnreachableError
from streams.settings import SecurityProtocol, Settings

_faust_add_gap = FaustConsumer._add_gap


async def _never_ack_a_gap(self: Any, tp: Any, offset_from: int, offset_to: int) -> None:
    """Replaces Faust's automatic acknowledgement of an offset jump: the input topic is neither
    compacted nor transactional, so a jump means records not yet processed (see above)."""


FaustConsumer._add_gap = _never_ack_a_gap  # type: ignore[method-assign]


async def acknowledge_range(consumer: Any, tp: TP, first: int, last: int) -> None:
    """Count offsets ``first..last`` as acknowledged in Faust's commit bookkeeping (after the
    agent processed the records it fetched for them)."""
    await _faust_add_gap(consumer, tp, first, last)


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

            s = self.settings
            context = None
            if s.kafka_security_protocol in {SecurityProtocol.SSL, SecurityProtocol.SASL_SSL}:
                context = ssl.create_default_context(
                    cafile=str(s.kafka_ssl_cafile) if s.kafka_ssl_cafile else None
                )
                if s.kafka_ssl_certfile:
                    context.load_cert_chain(
                        str(s.kafka_ssl_certfile),
                        str(s.kafka_ssl_keyfile) if s.kafka_ssl_keyfile else None,
                    )
            self._consumer = AIOKafkaConsumer(
                bootstrap_servers=s.bootstrap_servers,
                group_id=None,
                enable_auto_commit=False,
                client_id=f"{s.app_id}-gapfill",
                security_protocol=s.kafka_security_protocol.value,
                sasl_mechanism=s.kafka_sasl_mechanism.value if s.kafka_sasl_mechanism else "PLAIN",
                sasl_plain_username=s.kafka_sasl_username,
                sasl_plain_password=(
                    s.kafka_sasl_password.get_secret_value() if s.kafka_sasl_password else None
                ),
                ssl_context=context,
            )
            await self._consumer.start()
        return self._consumer

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
