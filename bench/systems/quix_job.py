"""The worker's job in Quix Streams 3.x: a stateful ``StreamingDataFrame``.

The job is the worker's default one (``CONFIG``: purchase-scores v1 on ``--output`` and v2,
with reasons and exploration suggestions, on ``--output-v2``), so both systems do the same work.
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
from streams.features.explore import ExploreConfig, Explorer
from streams.model.bundle import ModelBundle, load_bundle
from streams.processing.envelope import StoredProfile, decode_stored, encode_stored
from streams.processing.step import (
    Record,
    Row,
    Scored,
    StepConfig,
    apply_batch,
    explorer_for,
    score,
)

PROFILE = "profile"
# The worker's default job (the defaults of streams.settings; a unit test holds them together).
CONFIG = StepConfig(score_versions=frozenset({"1", "2"}), explain=True, explore=ExploreConfig())


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


class Job:
    """The worker's step for one bundle: apply per message, score per chunk."""

    def __init__(self, bundle: ModelBundle) -> None:
        self.bundle = bundle
        self.explorer: Explorer | None = explorer_for(bundle, CONFIG)

    def apply_event(
        self, value: bytes, key: Any, timestamp: int, headers: Any, state: State
    ) -> Row | None:
        """Apply one record with the worker's step; the scored row, or None if rejected."""
        ctx = message_context()
        record = Record(
            ctx.topic, ctx.partition, ctx.offset, key, value, time.time(), timestamp / 1000
        )
        applied = apply_batch([record], StateProfiles(state), CONFIG, self.explorer)
        for stored, _ in applied.profiles.values():
            state.set(PROFILE, encode_stored(stored))
        return applied.rows[0] if applied.rows else None

    def score(self, rows: list[Row]) -> Scored:
        """The worker's scoring of rows: v1 and v2 records, reasons, exploration suggestions."""
        return score(
            rows, self.bundle, top_k=CONFIG.top_k, versions=CONFIG.score_versions,
            explain=CONFIG.explain, explorer=self.explorer,
        )  # fmt: skip


def producer(bootstrap: str) -> Producer:
    return Producer(
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


def produce(producer: Producer, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    for key, value in records:
        while True:
            try:
                producer.produce(topic, value=value, key=key)
                break
            except BufferError:
                producer.poll(0.01)


class ScoringSink(BatchingSink):
    """Scores a checkpoint's rows in chunks and produces purchase-scores v1 and v2."""

    def __init__(self, job: Job, bootstrap: str, topic: str, topic_v2: str, batch_max: int) -> None:
        super().__init__()
        self.job = job
        self.topic = topic
        self.topic_v2 = topic_v2
        self.batch_max = batch_max
        self.producer = producer(bootstrap)

    def write(self, batch: SinkBatch) -> None:
        for chunk in batch.iter_chunks(self.batch_max):
            scored = self.job.score([item.value for item in chunk])
            produce(self.producer, self.topic, scored.records)
            produce(self.producer, self.topic_v2, scored.records_v2)
            self.producer.poll(0)
        if self.producer.flush(60):
            raise RuntimeError("scores were not delivered within 60 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--output-v2", help="purchase-scores.v2 topic (default: OUTPUT.v2)")
    parser.add_argument("--group", required=True)
    parser.add_argument("--bundle", required=True, type=Path)
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--batch-max", type=int, default=256)
    parser.add_argument("--mode", choices=["batched", "per-message"], default="batched")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    job = Job(load_bundle(args.bundle, threads=1))
    output_v2 = args.output_v2 or f"{args.output}.v2"
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
    sdf = sdf.apply(job.apply_event, stateful=True, metadata=True).filter(lambda v: v is not None)
    if args.mode == "batched":
        sdf.sink(ScoringSink(job, args.bootstrap, args.output, output_v2, args.batch_max))
    else:
        scores = app.topic(
            args.output, key_serializer="bytes", value_serializer="bytes", config=config
        )
        side = producer(args.bootstrap)  # the v2 record beside the v1 one to_topic produces

        def score_one(row: Row) -> bytes:
            scored = job.score([row])
            produce(side, output_v2, scored.records_v2)
            side.poll(0)
            ((_, payload),) = scored.records
            return payload

        sdf = sdf.apply(score_one)
        sdf.to_topic(scores)
    app.run()


if __name__ == "__main__":
    main()
