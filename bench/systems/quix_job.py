"""The worker's job in Quix Streams 3.x: a stateful ``StreamingDataFrame``.

Per message, in a ``stateful=True`` apply (Quix keeps one state per message key, in RocksDB with a
changelog topic, like the worker's Faust table): decode with
``streams.contracts.events.decode_event``, read the user's profile from state,
``streams.features.update`` it and write it back (``encode_profile`` bytes, stored as they are).
Then score, two ways:

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
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from quixstreams import Application, State
from quixstreams.models import TopicConfig
from quixstreams.sinks.base import BatchingSink, SinkBatch
from quixstreams.state.rocksdb import RocksDBOptions
from quixstreams.utils.json import dumps as json_dumps
from quixstreams.utils.json import loads as json_loads

from streams import features
from streams.contracts.events import Rejection, decode_event
from streams.model.bundle import ModelBundle, load_bundle
from streams.processing.step import Row, encode_scores

PROFILE = "profile"


def _dumps(value: Any) -> bytes:
    return value if isinstance(value, bytes) else json_dumps(value)


def _loads(value: bytes) -> Any:
    return value if value[:2] == b"ip" else json_loads(value)  # b"ip": profile magic


def apply_event(value: bytes, state: State) -> tuple[features.Profile, Any] | None:
    """Decode, update the user's profile in state; (profile, event), or None if rejected."""
    event = decode_event(value)
    if isinstance(event, Rejection):
        return None
    raw = state.get(PROFILE)
    profile = features.update(features.decode_profile(raw) if raw else None, event)
    state.set(PROFILE, features.encode_profile(profile))
    return profile, event


class ScoringSink(BatchingSink):
    """Scores a checkpoint's rows in chunks and produces purchase-scores.v1."""

    def __init__(self, bundle: ModelBundle, bootstrap: str, topic: str, batch_max: int) -> None:
        super().__init__()
        self.bundle = bundle
        self.topic = topic
        self.batch_max = batch_max
        self.producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "acks": "all",
                "linger.ms": 2,
                "batch.size": 262_144,
                "partitioner": "murmur2_random",
            }
        )

    def write(self, batch: SinkBatch) -> None:
        for chunk in batch.iter_chunks(self.batch_max):
            rows = [Row(item.value[1], item.value[0], None) for item in chunk]  # type: ignore[arg-type]
            matrix = features.feature_matrix(
                [(r.profile, r.event) for r in rows], self.bundle.embeddings
            )
            probabilities = self.bundle.predict(matrix)
            for key, value in encode_scores(rows, probabilities, self.bundle, top_k=5):
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
        broker_address=args.bootstrap,
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
    sdf = sdf.apply(apply_event, stateful=True).filter(lambda v: v is not None)
    if args.mode == "batched":
        sdf.sink(ScoringSink(bundle, args.bootstrap, args.output, args.batch_max))
    else:
        scores = app.topic(
            args.output, key_serializer="bytes", value_serializer="bytes", config=config
        )

        def score_one(value: tuple[features.Profile, Any]) -> bytes:
            profile, event = value
            probability = bundle.predict(features.feature_matrix([value], bundle.embeddings))
            ((_, payload),) = encode_scores(
                [Row(event, profile, None)],  # type: ignore[arg-type]
                probability,
                bundle,
                top_k=5,
            )
            return payload

        sdf = sdf.apply(score_one)
        sdf.to_topic(scores)
    app.run()


if __name__ == "__main__":
    main()
