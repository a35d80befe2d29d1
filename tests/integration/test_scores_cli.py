"""``intentflow scores`` reads the scores topic of a real broker, readable or as JSON."""

from __future__ import annotations

import os
import re
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
        app_id=f"app-{unique}",  # its own erase-command topics too
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

    # --v2 reads purchase-scores.v2 and shows the reasons.
    reasons = {"reference_probability": 0.05, "interests": [], "top": [
        {"code": "cart", "direction": "up", "impact": 0.42}]}  # fmt: skip
    v2 = score | {"schema_version": "2", "reasons": reasons, "exploration": None}
    produce(bootstrap, settings.scores_v2_topic, [(b"u42", orjson.dumps(v2))])
    explained = subprocess.run(
        [*cmd[:-1], "1", "--v2"], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    assert explained.stdout.splitlines() == [lines[0] + "  why=[cart +0.420]"]


def test_dedupe_prints_each_event_id_once_within_its_window(bootstrap: str, unique: str) -> None:
    settings = load_settings(
        kafka_bootstrap=bootstrap, topic_scores=f"s-{unique}", app_id=f"app-{unique}"
    )
    create_topics(settings)

    def score(event_id: str, **fields: object) -> bytes:
        record = {
            "schema_version": "1", "user_id": "u42", "event_id": event_id,
            "occurred_at": "2025-01-06T10:00:00+00:00",
            "scored_at": "2025-01-06T10:00:00.250000+00:00", "purchase_probability": 0.5,
            "model_version": "m-7", "feature_version": "1",
            "top_categories": [{"category_id": "c0001", "weight": 1.0}],
        }  # fmt: skip
        record.update(fields)
        return orjson.dumps({k: v for k, v in record.items() if v is not None})

    newer = score("e-3", schema_version="2", top_categories=None, exploration=True)
    values = [score("e-1"), score("e-2"), score("e-1"), b"not json", newer, score("e-2"),
              score("e-1")]  # fmt: skip
    # One key, so one partition: the order read is the order written.
    produce(bootstrap, settings.topic_scores, [(b"u42", v) for v in values])
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTENTFLOW_")}
    env.update(INTENTFLOW_KAFKA_BOOTSTRAP=bootstrap, INTENTFLOW_TOPIC_SCORES=settings.topic_scores)

    def scores(*args: str) -> tuple[list[str], list[str]]:
        run = subprocess.run(
            [sys.executable, "-m", "streams.cli", "scores", "--from-beginning", "--timeout", "5",
             *args],
            env=env, capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        return run.stdout.splitlines(), run.stderr.splitlines()

    out, err = scores()
    assert len(out) == 6  # every JSON record, duplicates included
    assert len(err) == 1, err
    skipped = rf"skipped the record at {settings.topic_scores}\[\d+\]@3: not JSON .*"
    assert re.fullmatch(skipped, err[0]), err

    out, err = scores("--dedupe")
    assert len(out) == 3, out
    assert out[0].endswith("p=0.500  model=m-7  top=[c0001:1.00]")
    assert out[2].endswith("p=0.500  model=m-7  top=[]")  # e-3: version 2, no top_categories
    assert err[-1] == "3 printed, 3 duplicates dropped, 1 skipped"

    out, err = scores("--dedupe", "--json")
    assert [orjson.loads(line)["event_id"] for line in out] == ["e-1", "e-2", "e-3"]

    # Memory for two ids: e-2 and e-1 are forgotten before they come back the last time.
    out, err = scores("--dedupe", "--dedupe-window", "2", "--json")
    assert [orjson.loads(line)["event_id"] for line in out] == ["e-1", "e-2", "e-3", "e-2", "e-1"]
    assert err[-1] == "5 printed, 1 duplicates dropped, 1 skipped"
