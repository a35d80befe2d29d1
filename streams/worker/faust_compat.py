"""Every private Faust name the worker relies on, and every Faust subclass, in one file.

Nothing here changes Faust when imported: ``install`` applies the store alias and the gap
patch, and ``create_app`` calls it. When faust-streaming changes one of these internals, this
is the one file to read.
"""

from __future__ import annotations

import weakref
from typing import Any

from faust.sensors.prometheus import PrometheusMonitor
from faust.stores import STORES
from faust.stores.rocksdb import Store as RocksDBStore
from faust.streams import _current_event
from faust.transport.consumer import Consumer as FaustConsumer
from faust.types import TP

STORE_URL = "intentflow-rocksdb://"
_faust_add_gap = FaustConsumer._add_gap


class ChangelogRecoveredStore(RocksDBStore):
    """RocksDB that rebuilds every partition it is assigned from the changelog.

    Faust's RocksDB store remembers how far it had read each changelog partition and, on a
    later assignment, reads only past that point. After a partition moved away and back (a
    takeover) that shortcut skipped the other worker's writes in our tests, and the
    partition's stream was never resumed. Reading the compacted changelog from the start makes
    the table equal to the changelog after every rebalance, at the cost of a longer recovery
    (measured in bench/: 200k users).
    """

    def persisted_offset(self, tp: Any) -> int | None:
        return None


class BatchLevelMonitor(PrometheusMonitor):
    """Faust's Prometheus sensors without the hooks that run for every message, event, table
    access and send (a fifth of the worker's CPU in bench/). The worker counts its traffic per
    batch in ``streams.worker.metrics``; rebalance, commit, recovery and error series remain."""

    def on_message_in(self, *args: Any, **kwargs: Any) -> None:
        return None

    def on_stream_event_in(self, *args: Any, **kwargs: Any) -> None:
        return None

    def on_stream_event_out(self, *args: Any, **kwargs: Any) -> None:
        return None

    def on_message_out(self, *args: Any, **kwargs: Any) -> None:
        return None

    def on_table_get(self, *args: Any, **kwargs: Any) -> None:
        return None

    def on_table_set(self, *args: Any, **kwargs: Any) -> None:
        return None

    def on_send_initiated(self, *args: Any, **kwargs: Any) -> None:
        return None

    def on_send_completed(self, *args: Any, **kwargs: Any) -> None:
        return None

    def on_send_error(self, producer: Any, exc: BaseException, state: Any) -> None:
        self.send_errors += 1  # on_send_initiated kept no start time to measure from
        self._metrics.total_error_messages_sent.inc()


async def _never_ack_a_gap(self: Any, tp: Any, offset_from: int, offset_to: int) -> None:
    """Replaces Faust's automatic acknowledgement of an offset jump: the input topic is neither
    compacted nor transactional, so a jump means records not yet processed (see
    ``streams.worker.gapfill``)."""


def install() -> None:
    """Register the store alias and turn Faust's gap acknowledgement off (idempotent)."""
    STORES.aliases[STORE_URL.split(":", maxsplit=1)[0]] = f"{__name__}:ChangelogRecoveredStore"
    FaustConsumer._add_gap = _never_ack_a_gap  # type: ignore[method-assign]


async def acknowledge_range(consumer: Any, tp: TP, first: int, last: int) -> None:
    """Count offsets ``first..last`` as acknowledged in Faust's commit bookkeeping (after the
    agent processed the records it fetched for them)."""
    await _faust_add_gap(consumer, tp, first, last)


def unacknowledge(consumer: Any, message: Any) -> None:
    """Keep a held-back message out of Faust's acknowledgements: take_events acks every event
    it yielded, and a counted ack would let the committed offset pass the held-back range."""
    message.acked = True  # Consumer.ack() records nothing for an already-acked message
    consumer._unacked_messages.discard(message)  # nor waits for it at a rebalance


def committed_offset(consumer: Any, tp: TP) -> int | None:
    """The offset Faust last committed for ``tp`` (None: nothing yet)."""
    committed: int | None = consumer._committed_offset.get(tp)
    return committed


def set_current_event(event: Any) -> None:
    """Make ``event`` Faust's "current event" for the next table read or write.

    Faust's RocksDB table reads and writes the partition database, and sends the changelog to
    the partition, of the current event. In a micro-batch the current event is not the one
    whose user we touch, so set it per access. Set only the context variable:
    ``Stream._set_current_event`` would also overwrite ``stream.current_event``, which
    take_events' buffer filler reads concurrently, and pair the next message with this event.
    """
    _current_event.set(weakref.ref(event))


def rocksdb_key_estimate(table: Any) -> int:
    """Users held: RocksDB's key estimate per partition database (cheap), summed."""
    total = 0
    for db in getattr(table.data, "_dbs", {}).values():
        try:
            total += int(db.property_int_value("rocksdb.estimate-num-keys") or 0)
        except (AttributeError, TypeError, ValueError):
            continue
    return total
