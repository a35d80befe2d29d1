"""The throttled scoring policy, as pure state: which rows to score now, which later."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streams.processing.step import Row


@dataclass
class Throttle:
    """The throttled scoring policy: at most one score per user per ``interval`` seconds.

    A user's events inside the window are not scored at once; the latest one is kept and scored
    when the window closes (``due``), so the last state of every user is always scored.
    """

    interval: float
    _last: dict[str, float] = field(default_factory=dict)
    _pending: dict[str, Row] = field(default_factory=dict)

    def admit(self, rows: Sequence[Row], now: float) -> list[Row]:
        """Rows to score now; the others wait (only each user's latest is kept)."""
        scored = []
        for row in rows:
            user = row.event.user_id
            last = self._last.get(user)
            if last is None or now - last >= self.interval:
                self._last[user] = now
                self._pending.pop(user, None)
                scored.append(row)
            else:
                self._pending[user] = row
        return scored

    def due(self, now: float) -> list[Row]:
        """Pending rows whose user's window has closed, to score now."""
        ready = [
            row
            for user, row in self._pending.items()
            if now - self._last.get(user, 0.0) >= self.interval
        ]
        for row in ready:
            user = row.event.user_id
            del self._pending[user]
            self._last[user] = now
        if len(self._last) > 1_000_000:  # bound memory: forget users idle for two windows
            cutoff = now - 2 * self.interval
            self._last = {u: t for u, t in self._last.items() if t >= cutoff}
        return ready

    @property
    def pending(self) -> int:
        return len(self._pending)

    def take_all(self) -> list[Row]:
        """Every pending row, windows closed or not (the worker is stopping: the last state of
        every user is still scored)."""
        rows, self._pending = list(self._pending.values()), {}
        return rows

    def forget(self, erased: Callable[[str], bool]) -> int:
        """Drop the pending row of every user for whom ``erased(user_id)`` holds (an erasure:
        the waiting score is never published); how many were dropped."""
        pending = [u for u in self._pending if erased(u)]
        for user in pending:
            del self._pending[user]
        return len(pending)
