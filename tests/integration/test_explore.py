"""Exploration through a real broker (issue 11): a worker serving a bundle with arms fills
``exploration`` in purchase-scores.v2 with exactly the suggestions the evaluation harness's
per-event path computes on the same events (parity), and v1 stays as it was."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from jsonschema import Draft202012Validator, FormatChecker

from streams import features
from streams.contracts.events import ClickEvent, decode_event
from streams.features.explore import ExploreState
from streams.kafka.topics import create_topics
from streams.model.bundle import load_bundle
from streams.processing.step import StepConfig, explorer_for
from streams.settings import load_settings
from streams.sources.simulate import Behaviour, generate
from tests.bundles import make_bundle, point
from tests.conftest import SCHEMAS
from tests.integration.harness import WorkerProcess, consume_until, produce

pytestmark = pytest.mark.integration


def _harness(current: Path, payloads: list[tuple[bytes, bytes]]) -> dict[str, list]:
    """event_id -> suggestions, by the harness's path (features.update, Explorer.apply)."""
    bundle = load_bundle(current)
    explorer = explorer_for(bundle, StepConfig(explore=load_settings().explore_config))
    assert explorer is not None
    profiles: dict[str, features.Profile] = {}
    states: dict[str, ExploreState | None] = {}
    out = {}
    for _, value in payloads:
        event = decode_event(value)
        assert isinstance(event, ClickEvent)
        profile = features.update(profiles.get(event.user_id), event)
        state, _ = explorer.apply(
            states.get(event.user_id), event_id=event.event_id, ts=event.ts,
            event_type=event.event_type, category_id=event.category_id, weights=profile.weights,
        )  # fmt: skip
        profiles[event.user_id], states[event.user_id] = profile, state
        # As the wire carries it (JSON: tuples become lists).
        out[event.event_id] = orjson.loads(
            orjson.dumps(explorer.suggestions(state, profile.weights, profile.clock))
        )
    return out


def test_worker_and_harness_give_identical_suggestions(
    bootstrap: str, tmp_path: Path, unique: str
) -> None:
    start = datetime.now(UTC) - timedelta(hours=8)
    behaviour = Behaviour(interest_rank=4, dormant=2)
    payloads = [
        (r.key, r.payload)
        for r in generate(60, 6 * 3600.0, seed=21, start=start, behaviour=behaviour)
    ]
    assert len(payloads) > 300
    current = tmp_path / "current"
    point(current, make_bundle(tmp_path / "arms", "it-arms", seed=3, arms=8))
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
    create_topics(settings)
    expected = _harness(current, payloads)
    produce(bootstrap, settings.topic_events, payloads)
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    try:
        worker.wait_ready()
        ids = set(expected)

        def all_scored(records: list[tuple[bytes | None, bytes]]) -> bool:
            return ids <= {orjson.loads(v)["event_id"] for _, v in records}

        v2 = consume_until(bootstrap, settings.scores_v2_topic, all_scored, timeout=120)
        v1 = consume_until(bootstrap, settings.topic_scores, all_scored, timeout=60)
        assert all_scored(v2) and all_scored(v1), worker.log()
    finally:
        worker.stop()
    v2_schema = Draft202012Validator(
        json.loads((SCHEMAS / "purchase-scores.v2.json").read_text()),
        format_checker=FormatChecker(),
    )
    v1_schema = Draft202012Validator(
        json.loads((SCHEMAS / "purchase-scores.v1.json").read_text()),
        format_checker=FormatChecker(),
    )
    suggested = 0
    for _, value in v2:  # every copy, duplicates of at-least-once delivery included
        record = orjson.loads(value)
        v2_schema.validate(record)
        exploration = record["exploration"]
        assert exploration["policy"] == "ts"
        assert exploration["suggestions"] == expected[record["event_id"]], record["event_id"]
        suggested += bool(exploration["suggestions"])
    assert suggested > 0.9 * len(expected)
    for _, value in v1:
        record = orjson.loads(value)
        v1_schema.validate(record)
        assert "exploration" not in record
