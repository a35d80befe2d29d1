"""The worker's batched sends through a real broker: every record arrives, on the partition a
per-record ``send`` puts its key on, in order within each partition, split over several record
batches when one is full."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams.worker.faust_compat import send_batches

pytestmark = pytest.mark.integration


async def _scenario(bootstrap: str, unique: str) -> None:
    by_send, by_batch = f"it-send-{unique}", f"it-batches-{unique}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, 5, 1) for t in (by_send, by_batch)])
    finally:
        await admin.close()
    keys = [f"user-{i:04d}".encode() for i in range(300)]
    records = [(keys[i % len(keys)], f"score {i} ".encode() * 8) for i in range(3_000)]

    # A small batch size, so each partition's share takes several record batches.
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_batch_size=4_096)
    await producer.start()
    try:
        for key in keys:  # the partition a per-record send chooses for each key
            await producer.send_and_wait(by_send, b"", key=key)
        caches: dict = {}
        futures = await send_batches(producer, by_batch, records[:1_500], caches)
        futures += await send_batches(producer, by_batch, records[1_500:], caches)
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    assert len(futures) > 5 * 2, "expected several batches per partition"
    assert len(caches[by_batch][1]) == len(keys)

    consumer = AIOKafkaConsumer(by_send, by_batch, bootstrap_servers=bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False)  # fmt: skip
    await consumer.start()
    expected_partition: dict[bytes, int] = {}
    got: dict[int, list[tuple[bytes, bytes]]] = {}
    try:
        async with asyncio.timeout(60):
            while len(expected_partition) < len(keys) or sum(map(len, got.values())) < 3_000:
                for tp, msgs in (await consumer.getmany(timeout_ms=500)).items():
                    for m in msgs:
                        if tp.topic == by_send:
                            expected_partition[m.key] = tp.partition
                        else:
                            got.setdefault(tp.partition, []).append((m.key, m.value))
    finally:
        await consumer.stop()
    # Every record, once, on its key's partition, in the order it was handed over.
    for partition, received in got.items():
        assert all(expected_partition[key] == partition for key, _ in received)
        assert received == [r for r in records if expected_partition[r[0]] == partition]
    assert sum(map(len, got.values())) == len(records)


def test_send_batches_partitions_like_send_and_keeps_order(bootstrap: str, unique: str) -> None:
    asyncio.run(_scenario(bootstrap, unique))
