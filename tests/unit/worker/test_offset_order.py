"""The agent's in-order guard: a partition continues exactly where the worker left it; offsets
that Faust skipped are read directly and applied first (see streams.worker.gapfill)."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from faust.types import TP

from streams.worker.agents import in_offset_order
from streams.worker.gapfill import FetchedEvent, FetchedMessage
from streams.worker.metrics import Metrics


@dataclass(eq=False)
class Message:
    partition: int
    offset: int
    generation_id: int = 1
    acked: bool = False
    topic: str = "events"

    @property
    def tp(self) -> TP:
        return TP(self.topic, self.partition)


@dataclass
class Consumer:
    _committed_offset: dict[TP, int] = field(default_factory=dict)
    _unacked_messages: set[Any] = field(default_factory=set)


@dataclass
class Gaps:
    """Stands in for the broker: offsets listed in ``missing`` do not exist."""

    missing: set[int] = field(default_factory=set)
    calls: list[tuple[int, int]] = field(default_factory=list)

    async def fetch(self, tp: TP, first: int, end: int, generation: int) -> list[FetchedEvent]:
        self.calls.append((first, end))
        return [
            FetchedEvent(FetchedMessage(tp.topic, tp.partition, o, generation), b"k", b"v")
            for o in range(first, end)
            if o not in self.missing
        ]


def worker(generation: int = 1, committed: dict[int, int] | None = None) -> Any:
    consumer = Consumer({TP("events", p): o for p, o in (committed or {}).items()})
    app = SimpleNamespace(consumer_generation_id=generation, consumer=consumer)
    return SimpleNamespace(app=app, next_offsets={}, gaps=Gaps(), metrics=Metrics())


def events(*pairs: tuple[int, int], generation: int = 1) -> list[Any]:
    return [SimpleNamespace(message=Message(p, o, generation)) for p, o in pairs]


def offsets(batch: list[Any]) -> list[tuple[int, int]]:
    return [(e.message.partition, e.message.offset) for e in batch]


async def test_contiguous_events_pass_unchanged() -> None:
    w = worker(committed={0: 10, 1: 3})
    batch = events((0, 10), (1, 3), (0, 11), (1, 4))
    out, filled = await in_offset_order(w, batch)
    assert out == batch and filled == []
    assert w.next_offsets == {0: 12, 1: 5}
    assert w.gaps.calls == []


async def test_skipped_offsets_are_read_and_applied_before_the_early_event() -> None:
    w = worker(committed={2: 100})
    await in_offset_order(w, events((2, 100), (2, 101)))
    out, filled = await in_offset_order(w, events((2, 102), (2, 540), (3, 7)))
    assert offsets(out) == [(2, 102), *((2, o) for o in range(103, 540)), (2, 540), (3, 7)]
    assert filled == [(TP("events", 2), 103, 539)]
    assert w.next_offsets[2] == 541
    assert w.metrics.offset_gaps_filled._value.get() == 1


async def test_the_first_event_after_an_assignment_continues_from_the_commit() -> None:
    w = worker(committed={0: 40})
    out, filled = await in_offset_order(w, events((0, 45)))
    assert offsets(out) == [(0, 40), (0, 41), (0, 42), (0, 43), (0, 44), (0, 45)]
    assert filled == [(TP("events", 0), 40, 44)]


async def test_offsets_that_do_not_exist_are_acknowledged_as_a_range() -> None:
    w = worker(committed={0: 5})
    w.gaps.missing = {6}  # a transaction marker
    await in_offset_order(w, events((0, 5)))
    out, filled = await in_offset_order(w, events((0, 8)))
    assert offsets(out) == [(0, 7), (0, 8)]
    assert filled == [(TP("events", 0), 6, 7)]


async def test_events_from_before_a_rebalance_are_dropped_unacknowledged() -> None:
    w = worker(generation=5, committed={0: 0})
    stale = events((0, 1), (0, 2), generation=4)
    w.app.consumer._unacked_messages.update(e.message for e in stale)
    out, _ = await in_offset_order(w, [*stale, *events((0, 0), generation=5)])
    assert offsets(out) == [(0, 0)]
    assert all(e.message.acked for e in stale)
    assert not w.app.consumer._unacked_messages


async def test_replays_below_the_next_offset_go_to_the_replay_guard() -> None:
    w = worker(committed={0: 50})
    await in_offset_order(w, events((0, 50), (0, 51)))
    out, filled = await in_offset_order(w, events((0, 40), (0, 41)))
    assert offsets(out) == [(0, 40), (0, 41)] and filled == []
    assert w.next_offsets[0] == 52  # never moves backwards
