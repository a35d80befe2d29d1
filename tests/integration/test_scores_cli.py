"""``intentflow scores`` reads the scores topic of a real broker, readable or as JSON."""

from __future__ import annotations

import os
import subprocess
import sys

import orjson
import pytest

from streams.kafka.topics import create_topics
from streams.settings import load_settings
from tests.integration.harness import produce

pytestmark = pytest.mark.integration


def test_scores_tails_the_topic_readably_and_as_json(bootstrap: str, unique: str) -> None:
    settings = load_settings(
        kafka_bootstrap=bootstrap,
        topic_events=f"e-{unique}",
        topic_scores=f"s-{unique}",
        topic_dlq=f"d-{unique}",
    )
    create_topics(settings)
    score = {
        "schema_version": "1", "user_id": "u42", "event_id": "e-1",
        "occurred_at": "2025-01-06T10:00:00+00:00", "scored_at": "2025-01-06T10:00:00.250000+00:00",
        "purchase_probability": 0.8125, "model_version": "m-7", "feature_version": "1",
        "top_categories": [
            {"category_id": "c0001", "weight": 0.75},
            {"category_id": "c0002", "weight": 0.25},
        ],
    }  # fmt: skip
    produce(bootstrap, settings.topic_scores, [(b"u42", orjson.dumps(score))] * 2)
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTENTFLOW_")}
    env.update(INTENTFLOW_KAFKA_BOOTSTRAP=bootstrap, INTENTFLOW_TOPIC_SCORES=settings.topic_scores)
    cmd = [sys.executable, "-m", "streams.cli", "scores", "--from-beginning", "--max", "2"]
    readable = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, check=True)
    lines = readable.stdout.splitlines()
    assert len(lines) == 2
    assert "user=u42" in lines[0] and "p=0.812" in lines[0] and "model=m-7" in lines[0]
    assert "c0001:0.75" in lines[0]
    as_json = subprocess.run(
        [*cmd, "--json"], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    assert [orjson.loads(line) for line in as_json.stdout.splitlines()] == [score, score]
