"""The worker's job in Quix Streams 3.x: a stateful ``StreamingDataFrame``.

Per message, in a ``stateful=True`` apply (Quix keeps one state per message key, in RocksDB with a
changelog topic, like the worker's Faust table): the worker's own step applies the record
(``streams.processing.step.apply_batch`` with the message's state as the profile lookup) and the
new stored profile is written back. Then the step's ``score`` scores, two ways:

* ``--mode batched`` (the default): a ``BatchingSink``. Quix hands a sink everything a
  checkpoint processed, per partition; the sink scores it in chunks of ``--batch-max`` with one
  ``feature_matrix`` and one onnxruntime call each and produces the scores, and the checkpoint
  commits only after the sink's flush returned (at-least-once). Quix has no micro-batching
  inside a dataframe, so a sink is how it batches.
* ``--mode per-message``: ``feature_matrix`` and onnxruntime for each message, then
  ``to_topic``: the straightforward Quix way.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from quixstreams import Application, State, message_context
from quixstreams.kafka.configuration import ConnectionConfig
from quixstreams.models import TopicConfig
from quixstreams.sinks.base import BatchingSink, SinkBatch
from quixstreams.state.rocksdb import RocksDBOptions
from quixstreams.utils.json import dumps as json_dumps
from quixstreams.utils.json import loads as json_loads

from bench.kafkautil import rdkafka
from streams.model.bundle import ModelBundle, load_bundle
from streams.processing.envelope import StoredProfile, decode_stored, encode_stored
from streams.processing.step import Record, Row, StepConfig, apply_batch, score

PROFILE = "profile"
CONFIG = StepConfig()


def _dumps(value: Any) -> bytes:
    return value if isinstance(value, bytes) else json_dumps(value)


def _loads(value: bytes) -> Any:
    # A stored profile envelope starts with its version byte (1, 2, ...: a control character),
    # which no JSON document (Quix's own values) starts with.
    return value if value[:1] < b" " else json_loads(value)


class StateProfiles:
    """One message's Quix state as the step's ``ProfileLookup``."""

    def __init__(self, state: State) -> None:
        self.state = state

    def get(self, partition: int, user_id: str, /) -> StoredProfile | None:
        raw = self.state.get(PROFILE)
        return decode_stored(raw) if raw else None


def apply_event(value: bytes, key: Any, timestamp: int, headers: Any, state: State) -> Row | None:
    """Apply one record with the worker's step; the scored row, or None if rejected."""
    ctx = message_context()
    record = Record(ctx.topic, ctx.partition, ctx.offset, key, value, time.time(), timestamp / 1000)
    applied = apply_batch([record], StateProfiles(state), CONFIG)
    for stored, _ in applied.profiles.values():
        state.set(PROFILE, encode_stored(stored))
    return applied.rows[0] if applied.rows else None


class ScoringSink(BatchingSink):
    """Scores a checkpoint's rows in chunks and produces purchase-scores.v1."""

    def __init__(self, bundle: ModelBundle, bootstrap: str, topic: str, batch_max: int) -> None:
        super().__init__()
        self.bundle = bundle
        self.topic = topic
        self.batch_max = batch_max
        self.producer = Producer(
            rdkafka(
                bootstrap,
                **{
                    "acks": "all",
                    "linger.ms": 2,
                    "batch.size": 262_144,
                    "partitioner": "murmur2_random",
                },
            )
        )

    def write(self, batch: SinkBatch) -> None:
        for chunk in batch.iter_chunks(self.batch_max):
            scored = score([item.value for item in chunk], self.bundle, top_k=5)
            for key, value in scored.records:
                while True:
                    try:
                        self.producer.produce(self.topic, value=value, key=key)
                        break
                    except BufferError:
                        self.producer.poll(0.01)
            self.producer.poll(0)
        if self.producer.flush(60):
            raise RuntimeError("scores were not delivered within 60 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--bundle", required=True, type=Path)
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--batch-max", type=int, default=256)
    parser.add_argument("--mode", choices=["batched", "per-message"], default="batched")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    bundle = load_bundle(args.bundle, threads=1)
    app = Application(
        # the INTENTFLOW_KAFKA_* connection (security, SASL, TLS), as every bench client
        broker_address=ConnectionConfig.from_librdkafka_dict(rdkafka(args.bootstrap)),
        consumer_group=args.group,
        auto_offset_reset="earliest",
        commit_interval=1.0,  # the worker's broker_commit_interval
        state_dir=args.state_dir,
        rocksdb_options=RocksDBOptions(dumps=_dumps, loads=_loads),
        producer_extra_config={"acks": "all", "linger.ms": 2},
        loglevel="WARNING",
        processing_guarantee="at-least-once",
    )
    config = TopicConfig(num_partitions=4, replication_factor=1)
    events = app.topic(
        args.input, key_deserializer="bytes", value_deserializer="bytes", config=config
    )
    sdf = app.dataframe(events)
    sdf = sdf.apply(apply_event, stateful=True, metadata=True).filter(lambda v: v is not None)
    if args.mode == "batched":
        sdf.sink(ScoringSink(bundle, args.bootstrap, args.output, args.batch_max))
    else:
        scores = app.topic(
            args.output, key_serializer="bytes", value_serializer="bytes", config=config
        )

        def score_one(row: Row) -> bytes:
            ((_, payload),) = score([row], bundle, top_k=5).records
            return payload

        sdf = sdf.apply(score_one)
        sdf.to_topic(scores)
    app.run()


if __name__ == "__main__":
    main()
