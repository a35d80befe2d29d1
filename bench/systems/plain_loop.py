"""The worker's job without Faust: a plain aiokafka loop with the profiles in a dict.

Per batch it calls the worker's own step (``streams.processing.step.run_step``): decode,
update profiles, one onnxruntime call, encode scores and dead letters. No table, no changelog,
no framework: the difference to the worker is what Faust and its RocksDB table cost.
A rejected payload becomes a dead letter on the same output topic (one record out per record
in); the benchmark input has none.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.systems.aioloop import arguments, run
from streams.contracts.dead_letters import encode_dead_letter
from streams.model.bundle import ModelBundle, load_bundle
from streams.processing.envelope import StoredProfile
from streams.processing.step import Record, StepConfig, run_step


class DictProfiles(dict[tuple[int, str], StoredProfile]):
    """Profiles in memory, as the step's ``ProfileLookup``."""

    def get(self, partition: int, user_id: str, /) -> StoredProfile | None:  # type: ignore[override]
        return dict.get(self, (partition, user_id))


class PlainJob:
    def __init__(self, bundle: ModelBundle, top_k: int = 5) -> None:
        self.bundle = bundle
        self.config = StepConfig(top_k=top_k)
        self.profiles = DictProfiles()

    def __call__(self, records: Sequence[Any]) -> list[tuple[bytes | None, bytes]]:
        now = time.time()
        batch = [
            Record(r.topic, r.partition, r.offset, r.key, r.value, now, r.timestamp / 1000)
            for r in records
        ]
        out = run_step(batch, self.profiles, self.bundle, self.config)
        sends: list[tuple[bytes | None, bytes]] = [
            (record.key, encode_dead_letter(letter)) for record, letter in out.dead_letters
        ]
        sends.extend(out.scored.records)
        for user, (stored, record) in out.applied.profiles.items():
            self.profiles[(record.partition, user)] = stored
        return sends


def main() -> None:
    parser = arguments(__doc__ or "")
    parser.add_argument("--bundle", required=True, type=Path)
    args = parser.parse_args()
    job = PlainJob(load_bundle(args.bundle, threads=1))
    asyncio.run(run(args, job))


if __name__ == "__main__":
    main()
