"""The closed loop: every shopper's events in event-time order, with the events of their
responses to suggestions injected as they happen (``ClosedLoop.show``).

Used by ``intentflow evaluate-explore``: the policy sees an event, may show a suggestion, the
shopper may respond (``Shopper.respond``, common random numbers per user), and the response's
events come out of the loop in their time order with everyone else's.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from datetime import datetime
from typing import NamedTuple

import numpy as np

from streams.sources.simulate.catalog import build_catalog
from streams.sources.simulate.shoppers import Behaviour, Row, Shopper
from streams.sources.simulate.stream import DEFAULT_START


class LoopEvent(NamedTuple):
    """One event of the loop, with the fields the feature code reads (``EventLike``)."""

    event_id: str
    user_id: str
    session_id: str | None
    event_type: str
    item_id: str | None
    category_id: str | None
    price: float | None
    quantity: int | None
    ts: float  # unix seconds
    user_index: int  # index into ``ClosedLoop.shoppers``
    injected: bool  # a response to a suggestion


class ClosedLoop:
    """``users`` shoppers (indices from ``first_index``) over ``duration_s`` of event time."""

    def __init__(
        self,
        users: int,
        duration_s: float,
        seed: int,
        behaviour: Behaviour,
        *,
        start: datetime = DEFAULT_START,
        first_index: int = 0,
    ) -> None:
        self.seed = seed
        self.start_ms = round(start.timestamp() * 1000)
        self.end_ms = self.start_ms + round(duration_s * 1000)
        catalog = build_catalog(np.random.default_rng([seed, 0x0CA7A106]))
        self.shoppers = [
            Shopper(
                first_index + i, user_id=f"u{first_index + i:07d}", seed=seed, catalog=catalog,
                behaviour=behaviour, start_ms=self.start_ms, end_ms=self.end_ms,
            )
            for i in range(users)
        ]  # fmt: skip
        self._gens = [s.events() for s in self.shoppers]
        self._head: list[Row | None] = [None] * users
        self._heap: list[tuple[Row, int, bool]] = []
        self._injected = 0
        for i in range(users):
            self._pull(i)

    def _pull(self, i: int) -> None:
        row = next(self._gens[i], None)
        self._head[i] = row
        if row is not None:
            heapq.heappush(self._heap, (row, i, False))

    def __iter__(self) -> Iterator[LoopEvent]:
        base = self.shoppers[0].index if self.shoppers else 0
        while self._heap:
            row, i, injected = heapq.heappop(self._heap)
            if not injected:
                self._pull(i)
            ts, _, seq, etype, sid, item, cat, price, qty, _ = row
            yield LoopEvent(
                f"loop-{self.seed}-{base + i}-{seq}", self.shoppers[i].user_id, sid, etype, item,
                cat, price, qty, ts / 1000.0, i, injected,
            )  # fmt: skip

    def show(self, i: int, cluster: str, categories: tuple[str, ...], ts: float) -> float:
        """Show user ``i`` a cluster at ``ts`` (unix seconds): P(engage); an engagement's events
        join the loop."""
        p, rows = self.shoppers[i].respond(cluster, categories, round(ts * 1000))
        for row in rows:
            heapq.heappush(self._heap, (row, i, True))
        return p
