"""End to end against the real broker: 20,000 simulated events with 1% malformed go in; every
valid event gets a schema-valid score equal to the offline path's, and every malformed one
lands in the DLQ with its reason."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson
import pytest
from jsonschema import Draft202012Validator, FormatChecker

from model_export.dataset import replay_features
from streams.contracts.dead_letters import MAX_DLQ_PAYLOAD_BYTES
from streams.contracts.events import ClickEvent, decode_event
from streams.model.bundle import load_bundle
from streams.sources.simulate.stream import SimRecord, generate
from tests.conftest import SCHEMAS
from tests.integration.harness import WorkerProcess, consume_until, produce, score_ids
from tests.integration.test_worker import make_stack

pytestmark = pytest.mark.integration

N_EVENTS = 20_000


@pytest.fixture(scope="module")
def simulated() -> list[SimRecord]:
    start = datetime(2025, 3, 3, tzinfo=UTC)
    records = list(itertools.islice(generate(1500, 3 * 86_400, 21, 0.01, start), N_EVENTS))
    assert len(records) == N_EVENTS
    return records


@pytest.fixture(scope="module")
def run(simulated: list[SimRecord], kafka_broker, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Produce everything, run one worker until every valid event is scored, collect outputs."""
    tmp = tmp_path_factory.mktemp("e2e")
    stack = make_stack(kafka_broker.bootstrap, tmp, "e2e" + tmp.name[-6:])
    worker = WorkerProcess(
        dict(stack.env, INTENTFLOW_DATA_DIR=str(tmp / "data")), tmp / "worker.log"
    ).start()
    try:
        worker.wait_ready()
        produce(stack.settings.kafka_bootstrap, stack.settings.topic_events,
                [(r.key, r.payload) for r in simulated])  # fmt: skip
        valid = {r.event_id for r in simulated if r.valid}
        n_bad = sum(1 for r in simulated if not r.valid)
        scores = consume_until(
            stack.settings.kafka_bootstrap, stack.settings.topic_scores,
            lambda recs: valid <= set(score_ids(recs)), timeout=300,
        )  # fmt: skip
        letters = consume_until(
            stack.settings.kafka_bootstrap, stack.settings.topic_dlq,
            lambda recs: len(recs) >= n_bad, timeout=60,
        )  # fmt: skip
        return {"scores": scores, "dlq": letters, "bundle": stack.models, "log": worker.log()}
    finally:
        worker.stop()


def test_every_valid_event_is_scored_with_a_schema_valid_record(
    simulated: list[SimRecord], run: dict
) -> None:
    valid = {r.event_id for r in simulated if r.valid}
    assert 150 <= N_EVENTS - len(valid) <= 250  # about 1% malformed went in
    ids = Counter(score_ids(run["scores"]))
    assert valid <= set(ids), f"unscored: {sorted(valid - set(ids))[:5]}"
    assert set(ids) <= valid  # nothing invented
    validator = Draft202012Validator(
        json.loads((SCHEMAS / "purchase-scores.v1.json").read_text()),
        format_checker=FormatChecker(),
    )
    for key, value in run["scores"]:
        score = orjson.loads(value)
        validator.validate(score)
        assert key == score["user_id"].encode()
        assert score["model_version"] == "test-v1"


def test_every_malformed_event_is_in_the_dlq_with_its_reason(
    simulated: list[SimRecord], run: dict
) -> None:
    bad = [r for r in simulated if not r.valid]
    validator = Draft202012Validator(
        json.loads((SCHEMAS / "clickstream-dlq.v2.json").read_text()),
        format_checker=FormatChecker(),
    )
    letters = [orjson.loads(v) for _, v in run["dlq"]]
    assert len(letters) == len(bad)
    by_payload = Counter()
    for letter in letters:
        validator.validate(letter)
        raw = (
            base64.b64decode(letter["payload"])
            if letter["payload_encoding"] == "base64"
            else letter["payload"].encode()
        )
        # A dead letter keeps the first 64 KiB of a payload, with the whole one's size and hash.
        assert letter["payload_truncated"] == (letter["payload_bytes"] > MAX_DLQ_PAYLOAD_BYTES)
        by_payload[(letter["payload_sha256"], letter["payload_bytes"], letter["error_class"])] += 1
        assert len(raw) <= MAX_DLQ_PAYLOAD_BYTES
        assert letter["reason"]
        assert letter["source_offset"] >= 0
    expected = Counter(
        (
            hashlib.sha256(r.payload).hexdigest(),
            len(r.payload),
            r.error_class.value,
        )
        for r in bad
        if r.error_class
    )
    assert by_payload == expected
    assert len({r.error_class for r in bad}) >= 8  # every kind of problem was exercised


def test_worker_probabilities_equal_the_offline_path(simulated: list[SimRecord], run: dict) -> None:
    bundle = load_bundle(Path(run["bundle"]))
    events = [
        e for r in simulated if r.valid and isinstance(e := decode_event(r.payload), ClickEvent)
    ]
    ordered, features = replay_features(events, bundle.embeddings, sort=False)
    offline = bundle.predict(features)
    published: dict[str, float] = {}
    for _, value in run["scores"]:
        score = orjson.loads(value)
        published[score["event_id"]] = score["purchase_probability"]
    online = np.array([published[e.event_id] for e in ordered])
    diff = float(np.max(np.abs(online - offline)))
    print(f"worker vs offline over {len(ordered)} events: max abs diff {diff:.2e}")
    assert diff <= 1e-5
