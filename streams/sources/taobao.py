"""``intentflow import-taobao``: the Taobao UserBehavior sample as clickstream.v1 JSONL.

Rows ``user_id,item_id,category_id,behavior_type,timestamp`` (unix seconds, UTC) become
events: ``pv`` -> view, ``cart`` -> add_to_cart, ``fav`` -> favorite, ``buy`` -> purchase.
Every row is kept. Event ids are readable and deterministic
(``tb-<user>-<timestamp>-<item>-<behavior>``, with ``-<n>`` for the n-th repeat of an
identical row); sessions split a user's time-ordered events at 30 minutes or more of
inactivity; the output is in event-time order (a stable sort, so file order breaks ties).
The data has no prices and no session ids of its own.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import click

from streams.contracts.events import SCHEMA_VERSION, ClickEvent, EventType
from streams.errors import DataError
from streams.progress import Progress

HEADER = ("user_id", "item_id", "category_id", "behavior_type", "timestamp")
BEHAVIOURS: dict[str, EventType] = {
    "pv": EventType.VIEW,
    "cart": EventType.ADD_TO_CART,
    "fav": EventType.FAVORITE,
    "buy": EventType.PURCHASE,
}
SESSION_GAP_S = 30 * 60  # a gap of at least this long starts a new session
# The dataset's official window, 2017-11-25 .. 2017-12-03 in China time (UTC+8). A few rows
# fall outside it (noise in the original); they are kept and counted.
WINDOW_START = 1_511_539_200  # 2017-11-25T00:00:00+08:00
WINDOW_END = 1_512_316_800  # 2017-12-04T00:00:00+08:00


@dataclass(frozen=True, slots=True)
class TaobaoRow:
    """One parsed CSV row and where it came from."""

    line: int
    user_id: str
    item_id: str
    category_id: str
    behavior: str
    timestamp: int


@dataclass
class ImportSummary:
    """What an import read and wrote."""

    rows: int = 0
    users: int = 0
    sessions: int = 0
    repeated_rows: int = 0
    outside_window: int = 0
    by_type: Counter[str] = field(default_factory=Counter)
    first_ts: int | None = None
    last_ts: int | None = None

    def lines(self) -> list[str]:
        """Human-readable summary lines."""
        span = ""
        if self.first_ts is not None and self.last_ts is not None:
            span = f", {_iso(self.first_ts)} .. {_iso(self.last_ts)}"
        types = ", ".join(f"{k} {v:,}" for k, v in self.by_type.most_common())
        return [
            f"events   {self.rows:>9,}{span}",
            f"types    {types}",
            f"users    {self.users:>9,}   sessions {self.sessions:,} (30-minute gap)",
            f"repeats  {self.repeated_rows:>9,}   (identical rows, kept with a -<n> id suffix)",
            f"outside  {self.outside_window:>9,}   (rows outside 2017-11-25 .. 12-03 UTC+8, kept)",
        ]


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_id(value: str, what: str, path: Path, line: int) -> str:
    if not value or not value.isdigit():
        raise DataError(f"{path} line {line}: {what} must be a non-negative integer, got {value!r}")
    return value


def _counted(lines: Iterable[str], bar: Progress, every: int = 8192) -> Iterator[str]:
    """The lines, advancing ``bar`` by their length (the sample is ASCII: characters = bytes)."""
    done = n = 0
    for n, line in enumerate(lines, start=1):
        done += len(line)
        if n % every == 0:
            bar.update(done, note=f"{n:,} lines")
        yield line
    bar.update(done, note=f"{n:,} lines")


def read_rows(path: Path, *, progress: bool = False) -> list[TaobaoRow]:
    """Parse and check every row, or raise ``DataError`` naming the file and line.

    ``progress`` shows how much of the file is read, on stderr (``streams.progress``).
    """
    path = Path(path)
    try:
        fh = path.open(newline="", encoding="utf-8")
    except FileNotFoundError:
        raise DataError(
            f"{path} does not exist. Pass the Taobao sample CSV "
            "(data/taobao/user_behavior_815_users.csv in the repository)."
        ) from None
    except OSError as exc:
        raise DataError(f"{path} is unreadable: {exc}") from None
    rows: list[TaobaoRow] = []
    size = path.stat().st_size
    with fh, Progress("read CSV", size, enabled=progress) as bar:
        reader = csv.reader(_counted(fh, bar))
        try:
            header = next(reader, None)
            if header is None or tuple(h.strip() for h in header) != HEADER:
                raise DataError(
                    f"{path} line 1: expected the header {','.join(HEADER)}, got "
                    f"{','.join(header) if header else 'an empty file'}"
                )
            for cells in reader:
                line = reader.line_num
                if not cells:
                    continue
                if len(cells) != len(HEADER):
                    raise DataError(
                        f"{path} line {line}: expected {len(HEADER)} fields "
                        f"({','.join(HEADER)}), got {len(cells)}: {','.join(cells)[:120]!r}"
                    )
                user, item, category, behavior, ts = (c.strip() for c in cells)
                if behavior not in BEHAVIOURS:
                    raise DataError(
                        f"{path} line {line}: behavior_type must be one of "
                        f"{', '.join(BEHAVIOURS)}, got {behavior!r}"
                    )
                try:
                    timestamp = int(ts)
                except ValueError:
                    raise DataError(
                        f"{path} line {line}: timestamp must be unix seconds, got {ts!r}"
                    ) from None
                if timestamp < 0:
                    raise DataError(f"{path} line {line}: timestamp is negative ({timestamp})")
                rows.append(
                    TaobaoRow(
                        line,
                        _check_id(user, "user_id", path, line),
                        _check_id(item, "item_id", path, line),
                        _check_id(category, "category_id", path, line),
                        behavior,
                        timestamp,
                    )
                )
        except UnicodeDecodeError as exc:
            raise DataError(f"{path} is not UTF-8 text ({exc.reason})") from None
        except csv.Error as exc:
            raise DataError(f"{path} line {reader.line_num}: not valid CSV ({exc})") from None
    if not rows:
        raise DataError(f"{path} has a header but no rows")
    return rows


def to_events(
    rows: Iterable[TaobaoRow], summary: ImportSummary | None = None, *, progress: bool = False
) -> list[ClickEvent]:
    """Events in event-time order, with ids and 30-minute-gap sessions.

    ``progress`` shows how many users are done, on stderr (``streams.progress``).
    """
    summary = summary if summary is not None else ImportSummary()
    by_user: dict[str, list[TaobaoRow]] = {}
    for row in rows:
        by_user.setdefault(row.user_id, []).append(row)
    seen: Counter[tuple[str, int, str, str]] = Counter()
    stamped: list[tuple[int, int, ClickEvent]] = []
    with Progress("build events", len(by_user), unit="users", enabled=progress) as bar:
        for done, (user, user_rows) in enumerate(by_user.items(), start=1):
            user_rows.sort(key=lambda r: r.timestamp)  # stable: file order breaks ties
            session, last = 0, None
            for row in user_rows:
                if last is None or row.timestamp - last >= SESSION_GAP_S:
                    session += 1
                    summary.sessions += 1
                last = row.timestamp
                identity = (user, row.timestamp, row.item_id, row.behavior)
                seen[identity] += 1
                event_id = f"tb-{user}-{row.timestamp}-{row.item_id}-{row.behavior}"
                if seen[identity] > 1:
                    event_id += f"-{seen[identity]}"
                    summary.repeated_rows += 1
                event = ClickEvent(
                    schema_version=SCHEMA_VERSION,
                    event_id=event_id,
                    user_id=user,
                    session_id=f"tb-{user}-s{session}",
                    event_type=BEHAVIOURS[row.behavior],
                    item_id=row.item_id,
                    category_id=row.category_id,
                    occurred_at=datetime.fromtimestamp(row.timestamp, UTC),
                )
                stamped.append((row.timestamp, row.line, event))
                summary.outside_window += not WINDOW_START <= row.timestamp < WINDOW_END
                summary.by_type[event.event_type.value] += 1
            if done % 256 == 0:
                bar.update(done)
        bar.update(len(by_user))
    stamped.sort(key=lambda s: (s[0], s[1]))
    summary.rows = len(stamped)
    summary.users = len(by_user)
    if stamped:
        summary.first_ts, summary.last_ts = stamped[0][0], stamped[-1][0]
    return [event for _, _, event in stamped]


def import_taobao(csv_path: Path, out: Path, *, progress: bool = False) -> ImportSummary:
    """Convert ``csv_path`` to clickstream.v1 JSONL at ``out``; returns the summary.

    ``progress`` shows each step (read, build, write) on stderr (``streams.progress``).
    """
    summary = ImportSummary()
    events = to_events(read_rows(csv_path, progress=progress), summary, progress=progress)
    tmp = out.with_name(out.name + ".tmp")
    with (
        tmp.open("wb") as fh,
        Progress("write JSONL", len(events), unit="events", enabled=progress) as bar,
    ):
        for n, event in enumerate(events):
            fh.write(event.to_json() + b"\n")
            if n % 8192 == 0:
                bar.update(n)
        bar.update(len(events))
    tmp.replace(out)  # never leave a half-written log under the real name
    return summary


@click.command("import-taobao")
@click.argument("csv_path", metavar="CSV", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--out", type=click.Path(path_type=Path, dir_okay=False), required=True,
    help="Where to write the clickstream.v1 JSONL (event-time order).",
)  # fmt: skip
@click.option("--quiet", is_flag=True, help="No progress on stderr.")
def import_taobao_command(csv_path: Path, out: Path, quiet: bool) -> None:
    """Convert the Taobao UserBehavior sample CSV to clickstream.v1 JSONL (keeps every row)."""
    summary = import_taobao(csv_path, out, progress=not quiet)
    for line in summary.lines():
        click.echo(line)
    click.echo(f"wrote {out}")
