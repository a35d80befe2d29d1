"""The changelog position a partition's RocksDB database keeps: it moves only over this
worker's own delivered records, in an unbroken run (never over another writer's record)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from streams.worker.faust_compat import ChangelogRecoveredStore

KEY = b"__faust\x00offset__"


class Batch:
    def __init__(self) -> None:
        self.puts: list[tuple[bytes, bytes]] = []

    def put(self, key: bytes, value: bytes) -> None:
        self.puts.append((key, value))


def store(position: int | None) -> Any:
    fake = SimpleNamespace(offset_key=KEY, _delivered={}, _position=lambda partition: position)
    fake.note_delivered = lambda future: ChangelogRecoveredStore.note_delivered(fake, future)
    return fake


def delivered(fake: Any, partition: int, *offsets: int) -> None:
    for offset in offsets:
        future = SimpleNamespace(
            cancelled=lambda: False,
            exception=lambda: None,
            result=lambda o=offset: SimpleNamespace(partition=partition, offset=o),
        )
        fake.note_delivered(future)


def covered(fake: Any, partition: int) -> int | None:
    batch = Batch()
    ChangelogRecoveredStore.cover_own_writes(fake, partition, batch)
    assert all(key == KEY for key, _ in batch.puts)
    return int(batch.puts[-1][1]) if batch.puts else None


def test_the_position_moves_over_an_unbroken_run_of_own_records() -> None:
    fake = store(position=9)
    delivered(fake, 0, 10, 11, 12)
    assert covered(fake, 0) == 12
    assert fake._delivered[0] == set()


def test_another_writers_record_in_between_stops_the_run() -> None:
    fake = store(position=9)
    delivered(fake, 0, 10, 11, 13, 14)  # 12 was written by someone else
    assert covered(fake, 0) == 11
    assert fake._delivered[0] == {13, 14}  # kept: never counted past 12


def test_nothing_moves_without_a_known_start_or_own_records() -> None:
    unknown = store(position=None)
    delivered(unknown, 0, 0, 1)
    assert covered(unknown, 0) is None
    assert covered(store(position=5), 0) is None
    other_partition = store(position=5)
    delivered(other_partition, 1, 6)
    assert covered(other_partition, 0) is None


def test_a_failed_delivery_is_not_counted() -> None:
    fake = store(position=9)
    failed = SimpleNamespace(cancelled=lambda: False, exception=lambda: RuntimeError("no"))
    fake.note_delivered(failed)
    assert fake._delivered == {}
