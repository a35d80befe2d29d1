"""The worker's job without Faust: a plain aiokafka loop with the profiles in a dict.

Per batch: ``streams.events.decode_event`` each record, ``streams.features.update`` its user's
profile, one ``feature_matrix`` and one onnxruntime call (``streams.scoring``) for the batch,
and purchase-scores.v1 records from ``streams.pipeline.encode_scores``. No table, no changelog,
no framework: the difference to the worker is what Faust and its RocksDB table cost.
A rejected payload becomes a dead letter on the same output topic (one record out per record
in); the benchmark input has none.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.systems.aioloop import arguments, run
from streams import features
from streams.events import Rejection, dead_letter, decode_event
from streams.pipeline import Row, encode_dead_letter, encode_scores
from streams.scoring import ModelBundle, load_bundle


class PlainJob:
    def __init__(self, bundle: ModelBundle, top_k: int = 5) -> None:
        self.bundle = bundle
        self.top_k = top_k
        self.profiles: dict[str, features.Profile] = {}

    def __call__(self, records: Sequence[Any]) -> list[tuple[bytes | None, bytes]]:
        out: list[tuple[bytes | None, bytes]] = []
        rows: list[Row] = []
        profiles = self.profiles
        for r in records:
            event = decode_event(r.value)
            if isinstance(event, Rejection):
                letter = dead_letter(
                    r.value, event, topic=r.topic, partition=r.partition, offset=r.offset
                )
                out.append((r.key, encode_dead_letter(letter)))
                continue
            profile = features.update(profiles.get(event.user_id), event)
            profiles[event.user_id] = profile
            rows.append(Row(event, profile, None))  # type: ignore[arg-type]
        if rows:
            matrix = features.feature_matrix(
                [(r.profile, r.event) for r in rows], self.bundle.embeddings
            )
            probabilities = self.bundle.predict(matrix)
            out.extend(encode_scores(rows, probabilities, self.bundle, top_k=self.top_k))
        return out


def main() -> None:
    parser = arguments(__doc__ or "")
    parser.add_argument("--bundle", required=True, type=Path)
    args = parser.parse_args()
    job = PlainJob(load_bundle(args.bundle, threads=1))
    asyncio.run(run(args, job))


if __name__ == "__main__":
    main()
