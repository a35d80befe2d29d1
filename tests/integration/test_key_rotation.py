"""Pseudonym key rotation mid-stream, against the real broker: scores are bit-identical to
those of the same events without a rotation, returning shoppers are moved to the new key, and
after the grace period no entry under the retired key is left in the compacted changelog."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from streams.model.bundle import load_bundle
from streams.processing.envelope import StoredProfile
from streams.processing.step import Record, StepConfig, apply_batch, score
from tests.integration.harness import click_events, consume_until, produce, score_ids
from tests.integration.test_erasure import _changelog_keys
from tests.integration.test_worker import make_stack

pytestmark = pytest.mark.integration

START = time.time() - 8 * 3600
OLD = "ka:first-secret-0123456789"
NEW = "kb:second-secret-0123456789"


class Memory(dict):
    def get(self, partition: int, user_id: str, /) -> StoredProfile | None:  # type: ignore[override]
        return dict.get(self, user_id)


def offline_probabilities(
    bundle_path: Path, payloads: list[tuple[bytes, bytes]]
) -> dict[str, float]:
    """Every event's probability from the worker's own step, with no broker and no rotation."""
    bundle, memory, out = load_bundle(bundle_path), Memory(), {}
    config = StepConfig(max_clock_skew_seconds=10**9)
    for i, (key, value) in enumerate(payloads):
        applied = apply_batch([Record("e", 0, i, key, value, 0.0, None)], memory, config)
        for user, (stored, _) in applied.profiles.items():
            memory[user] = stored
        scored = score(applied.rows, bundle, top_k=0)
        for row, p in zip(scored.rows, scored.probabilities.tolist(), strict=True):
            out[row.event.event_id] = p
    return out


def _scores(stack, ids: set[str]) -> dict[str, float]:  # type: ignore[no-untyped-def]
    records = consume_until(
        stack.settings.kafka_bootstrap, stack.settings.topic_scores,
        lambda recs: ids <= set(score_ids(recs)), timeout=120,
    )  # fmt: skip
    return {
        s["event_id"]: s["purchase_probability"] for s in map(orjson.loads, (v for _, v in records))
    }


def test_rotating_keys_mid_stream_changes_no_score_and_leaves_no_old_key_entry(
    bootstrap: str, tmp_path: Path, unique: str
) -> None:
    stack = make_stack(
        bootstrap, tmp_path, unique,
        INTENTFLOW_CHANGELOG_MAX_COMPACTION_LAG_SECONDS="2",
        INTENTFLOW_CHANGELOG_DELETE_RETENTION_SECONDS="2",
        INTENTFLOW_PSEUDONYM_GRACE_DAYS="0.001",  # 86 s of event time
        INTENTFLOW_RETENTION_SWEEP_PAUSE_SECONDS="1",
    )  # fmt: skip
    before = click_events(600, users=100, seed=41, start=START, step=1.0)
    returning = {f"tu{n}" for n in range(60)}
    after = [
        (k, v)
        for k, v in click_events(1200, users=100, seed=42, start=START + 3600, step=1.0)
        if k.decode() in returning
    ]
    worker = stack.worker("a", INTENTFLOW_PSEUDONYM_KEYS=OLD).start()
    try:
        worker.wait_ready()
        produce(stack.settings.kafka_bootstrap, stack.settings.topic_events, before)
        _scores(stack, set(score_ids([(None, v) for _, v in before])))
    finally:
        worker.stop()
    worker = stack.worker("a", INTENTFLOW_PSEUDONYM_KEYS=f"{NEW},{OLD}").start()
    try:
        worker.wait_ready()
        produce(stack.settings.kafka_bootstrap, stack.settings.topic_events, after)
        got = _scores(stack, set(score_ids([(None, v) for _, v in before + after])))
        expected = offline_probabilities(stack.bundles / "v1", before + after)
        assert got == expected  # bit-identical: the same floats, event by event
        deadline, n = time.monotonic() + 150, 0
        while time.monotonic() < deadline:
            keys = _changelog_keys(stack)
            if keys and not any(k.startswith("p1.ka.") for k in keys):
                break
            filler = click_events(
                40, users=20, seed=900 + n, start=START + 7200 + 60 * n, prefix="f"
            )
            produce(stack.settings.kafka_bootstrap, stack.settings.topic_events, filler)
            n += 1
            time.sleep(3)
        else:
            old = [k for k in keys if k.startswith("p1.ka.")]
            pytest.fail(f"{len(old)} entries under the retired key remain in the changelog")
        assert sum(1 for k, v in keys.items() if k.startswith("p1.kb.") and v) >= len(returning)
    finally:
        worker.stop()
