"""Progress of a long step on stderr: a rich bar on a terminal, plain periodic lines otherwise.

One helper for every long command (simulate, import-taobao, train, evaluate). It imports only
rich and the standard library, so any room may use it (``model_export`` included). On a
terminal the bar redraws in place and is cleared when the step ends (the command's own summary
follows, and the demo's screen stays short). When stderr is a file or a pipe (CI logs,
``| tee``) it writes one line at most every ``every_s`` seconds, and the final state at the end
if it wrote any, so a short step prints nothing and a long one leaves a readable trail.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import IO

from rich.console import Console
from rich.progress import (
    BarColumn,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress
from rich.table import Column

PLAIN_EVERY_S = 5.0
BAR_WIDTH = 20


def on_terminal() -> bool:
    """True when stderr is an interactive terminal that can redraw a bar in place."""
    console = Console(stderr=True)
    return console.is_terminal and not console.is_dumb_terminal


class Progress:
    """A context manager that shows how far a step is.

    ``total`` is in the caller's units (payloads, bytes, epochs, seconds of event time) or None
    when unknown; ``unit`` names them in the shown count (``7/20 epochs``); leave it empty when
    the count means nothing to a reader and say what matters in ``note`` instead.
    ``live=None`` picks the bar on a terminal and plain lines otherwise.
    """

    def __init__(
        self,
        description: str,
        total: float | None = None,
        *,
        unit: str = "",
        enabled: bool = True,
        live: bool | None = None,
        every_s: float = PLAIN_EVERY_S,
        stream: IO[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.description = description
        self.total = total
        self.unit = unit
        self.enabled = enabled
        self.live = on_terminal() if live is None and enabled else bool(live)
        self.every_s = every_s
        self._stream = stream
        self._clock = clock
        self.completed = 0.0
        self.note = ""
        self.started = clock()
        self._next_line = self.started + every_s
        self._lines = 0
        self._shown: tuple[float, float | None, str] | None = None  # the last line's state
        self._bar: RichProgress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> Progress:
        self.started = self._clock()
        self._next_line = self.started + self.every_s
        if self.enabled and self.live:
            # Fixed columns keep their width; the note takes what is left, cut with an ellipsis.
            self._bar = RichProgress(
                TextColumn("[bold]{task.description}", table_column=Column(no_wrap=True)),
                BarColumn(bar_width=BAR_WIDTH),
                TaskProgressColumn(),
                TextColumn("{task.fields[count]}", table_column=Column(no_wrap=True)),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                TextColumn(
                    "{task.fields[note]}",
                    table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1),
                ),
                console=Console(stderr=True),
                expand=True,
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(
                self.description, total=self.total, count=self._count(), note=""
            )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._refresh()
            self._bar.stop()
            self._bar = None
        elif self.enabled and exc_type is None and self._lines and self._shown != self._state():
            self._write_line()

    def elapsed(self) -> float:
        """Seconds since the step started."""
        return self._clock() - self.started

    def advance(self, amount: float = 1, *, note: str | None = None) -> None:
        """Add ``amount`` to the count done."""
        self.update(self.completed + amount, note=note)

    def update(
        self, completed: float, *, total: float | None = None, note: str | None = None
    ) -> None:
        """Set the count done (and the total, or the note, when they change)."""
        self.completed = completed
        if total is not None:
            self.total = total
        if note is not None:
            self.note = note
        if not self.enabled:
            return
        if self._bar is not None:
            self._refresh()
        elif self._clock() >= self._next_line:
            self._write_line()

    def _state(self) -> tuple[float, float | None, str]:
        return (self.completed, self.total, self.note)

    def _count(self) -> str:
        if not self.unit:
            return ""
        if self.total is None:
            return f"{self.completed:,.0f} {self.unit}"
        return f"{self.completed:,.0f}/{self.total:,.0f} {self.unit}"

    def _refresh(self) -> None:
        assert self._bar is not None and self._task is not None
        self._bar.update(
            self._task,
            completed=self.completed,
            total=self.total,
            count=self._count(),
            note=self.note,
        )

    def plain_line(self) -> str:
        """The state as one line, as written when stderr is not a terminal."""
        parts = []
        if self.total:
            parts.append(f"{min(100.0, 100.0 * self.completed / self.total):.0f}%")
        if self.unit:
            parts.append(self._count())
        if self.note:
            parts.append(self.note)
        parts.append(f"{self.elapsed():.0f}s elapsed")
        return f"{self.description}: " + " | ".join(parts)

    def _write_line(self) -> None:
        stream = self._stream or sys.stderr
        stream.write(self.plain_line() + "\n")
        stream.flush()
        self._lines += 1
        self._shown = self._state()
        self._next_line = self._clock() + self.every_s
