"""The agent's in-order guard: events that do not continue their partition are held back,
never acknowledged, and the partition is rewound (see streams.agents.in_offset_order)."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from faust.types import TP

from streams.agents import in_offset_order
from streams.metrics import Metrics


@dataclass(eq=False)
class Message:
    partition: int
    offset: int
    generation_id: int = 1
    acked: bool = False

    @property
    def tp(self) -> TP:
        return TP("events", self.partition)


@dataclass
class Consumer:
    seeks: list[tuple[TP, int]] = field(default_factory=list)
    _unacked_messages: set[Any] = field(default_factory=set)

    async def seek(self, tp: TP, offset: int) -> None:
        self.seeks.append((tp, offset))


def worker(generation: int = 1) -> Any:
    consumer = Consumer()
    app = SimpleNamespace(consumer_generation_id=generation, consumer=consumer)
    return SimpleNamespace(app=app, next_offsets={}, rewinding={}, metrics=Metrics())


def events(*pairs: tuple[int, int], generation: int = 1) -> list[Any]:
    return [SimpleNamespace(message=Message(p, o, generation)) for p, o in pairs]


async def test_contiguous_events_pass_and_advance_the_partition() -> None:
    w = worker()
    batch = events((0, 10), (1, 3), (0, 11), (1, 4))
    assert await in_offset_order(w, batch) == batch
    assert w.next_offsets == {0: 12, 1: 5}
    assert w.app.consumer.seeks == []


async def test_an_event_ahead_of_its_partition_is_held_back_and_the_partition_rewound() -> None:
    w = worker()
    await in_offset_order(w, events((2, 100), (2, 101)))
    batch = events((2, 102), (2, 540), (2, 541), (3, 7))
    w.app.consumer._unacked_messages.update(e.message for e in batch)
    kept = await in_offset_order(w, batch)
    assert [(e.message.partition, e.message.offset) for e in kept] == [(2, 102), (3, 7)]
    assert w.app.consumer.seeks == [(TP("events", 2), 103)]
    held = [e.message for e in batch if e not in kept]
    assert all(m.acked for m in held)  # Faust's ack() will not count them
    assert not any(m in w.app.consumer._unacked_messages for m in held)
    assert w.next_offsets[2] == 103
    assert w.metrics.offset_rewinds._value.get() == 1
    # The redelivery continues the partition in order.
    assert len(await in_offset_order(w, events((2, 103), (2, 104)))) == 2


async def test_events_from_before_a_rebalance_are_held_back() -> None:
    w = worker(generation=5)
    batch = events((0, 1), (0, 2), generation=4) + events((0, 0), generation=5)
    kept = await in_offset_order(w, batch)
    assert [e.message.offset for e in kept] == [0]
    assert all(e.message.acked for e in batch[:2])


async def test_prefetched_events_are_held_until_the_rewound_offset_arrives() -> None:
    w = worker()
    await in_offset_order(w, events((0, 5)))
    stale = events((0, 90), (0, 91))
    assert await in_offset_order(w, stale) == []  # rewind to 6
    assert await in_offset_order(w, events((0, 92), (0, 93))) == []  # more prefetched
    assert await in_offset_order(w, stale[1:]) == []  # the same prefetched event again
    assert len(w.app.consumer.seeks) == 1  # one seek, however many stale events follow
    kept = await in_offset_order(w, events((0, 6), (0, 7)))  # the refetch, in order
    assert [e.message.offset for e in kept] == [6, 7]
    assert w.rewinding == {}


async def test_a_gap_seen_again_after_the_rewind_is_real_and_accepted() -> None:
    w = worker()
    await in_offset_order(w, events((0, 5)))
    assert await in_offset_order(w, events((0, 7))) == []  # 6 is a transaction marker
    kept = await in_offset_order(w, events((0, 7), (0, 8)))  # refetched: 7 again
    assert [e.message.offset for e in kept] == [7, 8]
    assert w.next_offsets[0] == 9
    assert len(w.app.consumer.seeks) == 1


async def test_replays_below_the_next_offset_pass_to_the_replay_guard() -> None:
    w = worker()
    await in_offset_order(w, events((0, 50)))
    kept = await in_offset_order(w, events((0, 40), (0, 41)))  # a seek back to a commit
    assert len(kept) == 2
    assert w.next_offsets[0] == 42
