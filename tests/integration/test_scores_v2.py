"""purchase-scores.v2 through a real broker: a worker publishes every score on both topics,
v2 with reasons, and exports the drift and freshness gauges."""

from __future__ import annotations

import json
import time
from pathlib import Path

import orjson
import pytest
from jsonschema import Draft202012Validator, FormatChecker

from streams import features
from streams.contracts.events import ClickEvent, decode_event
from streams.features.reference import fit_reference
from streams.kafka.topics import create_topics
from streams.model.bundle import load_bundle
from streams.settings import load_settings
from streams.worker.drift import DRIFT_GROUPS
from tests.bundles import make_bundle, point
from tests.conftest import SCHEMAS
from tests.integration.harness import WorkerProcess, click_events, consume_until, produce

pytestmark = pytest.mark.integration


def test_a_worker_publishes_v2_with_reasons_beside_v1(
    bootstrap: str, tmp_path: Path, unique: str
) -> None:
    payloads = click_events(800, users=40, seed=12, start=time.time() - 3600)
    # A bundle whose training reference is these events' own features.
    plain = load_bundle(make_bundle(tmp_path / "plain", "it-plain", seed=1))
    profiles: dict[str, features.Profile] = {}
    pairs = []
    for _, value in payloads:
        event = decode_event(value)
        assert isinstance(event, ClickEvent)
        profiles[event.user_id] = features.update(profiles.get(event.user_id), event)
        pairs.append((profiles[event.user_id], event))
    reference = fit_reference(features.feature_matrix(pairs, plain.embeddings))
    current = tmp_path / "current"
    point(current, make_bundle(tmp_path / "ref", "it-ref", seed=1, reference=reference))
    env = {
        "INTENTFLOW_KAFKA_BOOTSTRAP": bootstrap,
        "INTENTFLOW_TOPIC_EVENTS": f"events-{unique}",
        "INTENTFLOW_TOPIC_SCORES": f"scores-{unique}.v1",
        "INTENTFLOW_TOPIC_DLQ": f"dlq-{unique}",
        "INTENTFLOW_APP_ID": f"app-{unique}",
        "INTENTFLOW_PARTITIONS": "2",
        "INTENTFLOW_MODEL_PATH": str(current),
        "INTENTFLOW_KAFKA_CONNECT_TIMEOUT_SECONDS": "10",
        "INTENTFLOW_DATA_DIR": str(tmp_path / "data"),
    }
    settings = load_settings(**{k.removeprefix("INTENTFLOW_").lower(): v for k, v in env.items()})
    assert settings.scores_v2_topic == f"scores-{unique}.v2"
    create_topics(settings)
    produce(bootstrap, settings.topic_events, payloads)
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    try:
        worker.wait_ready()
        ids = {orjson.loads(v)["event_id"] for _, v in payloads}

        def all_scored(records: list[tuple[bytes | None, bytes]]) -> bool:
            return ids <= {orjson.loads(v)["event_id"] for _, v in records}

        v1 = consume_until(bootstrap, settings.topic_scores, all_scored, timeout=90)
        v2 = consume_until(bootstrap, settings.scores_v2_topic, all_scored, timeout=90)
        assert all_scored(v1) and all_scored(v2), worker.log()
        validator = Draft202012Validator(
            json.loads((SCHEMAS / "purchase-scores.v2.json").read_text()),
            format_checker=FormatChecker(),
        )
        first_v1 = {}
        for key, value in v1:
            record = orjson.loads(value)
            first_v1.setdefault(record["event_id"], (key, record))
        for key, value in v2:
            record = orjson.loads(value)
            validator.validate(record)
            assert record["reasons"] is not None and record["exploration"] is None
            key1, one = first_v1[record["event_id"]]
            assert key == key1 == record["user_id"].encode()
            assert record["purchase_probability"] == one["purchase_probability"]
        assert (
            worker.metric("intentflow_scores_v2_published_total", {"reasons": "explained"}) >= 800
        )
        assert worker.metric("intentflow_scores_v2_published_total", {"reasons": "failed"}) == 0
        _, body = worker.get("/metrics")
        drift = [line for line in body.splitlines() if line.startswith("intentflow_feature_drift")]
        assert {line.split('group="')[1].split('"')[0] for line in drift} == set(DRIFT_GROUPS)
        # The stream is the reference's own data: no group drifts.
        assert max(float(line.rsplit(" ", 1)[1]) for line in drift) < 0.25
        assert worker.metric("intentflow_feature_freshness_seconds") > 0
    finally:
        worker.stop()
