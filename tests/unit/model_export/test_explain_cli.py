"""``intentflow explain``: one user's history with the reasons the worker publishes for it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import orjson
import pytest
from click.testing import CliRunner

from model_export.dataset import read_events, replay
from streams.cli import COMMANDS, main
from streams.contracts.events import ClickEvent, decode_event
from streams.features import feature_matrix
from streams.features.reference import fit_reference
from streams.model.bundle import load_bundle
from streams.processing.step import Record, StepConfig, run_step
from tests.bundles import make_bundle
from tests.model_fixtures import synthetic_log


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("explain")
    log = synthetic_log(root / "events.jsonl", users=30, days=1.0, seed=2)
    plain = make_bundle(root / "plain", "explain-plain", seed=6)
    bundle = load_bundle(plain)
    x = feature_matrix(list(replay(read_events(log).events)), bundle.embeddings)
    with_ref = make_bundle(root / "ref", "explain-ref", seed=6, reference=fit_reference(x))
    return log, plain, with_ref


def test_explain_is_a_registered_command() -> None:
    assert COMMANDS["explain"][0] == "model_export.explain:explain_command"


def test_the_history_is_what_the_worker_publishes_for_that_user(
    setup: tuple[Path, Path, Path],
) -> None:
    log, _, with_ref = setup
    result = CliRunner().invoke(
        main, ["explain", "--model", str(with_ref), "--events", str(log), "--user", "u3", "--json"]
    )
    assert result.exit_code == 0, result.output
    printed = [json.loads(line) for line in result.output.splitlines()]
    # The worker's step over the same user's events, as Kafka would hand them over.
    mine = [e for e in read_events(log).events if e.user_id == "u3"]
    lines = [line for line in log.read_bytes().splitlines() if b'"u3"' in line]
    records = []
    for i, raw in enumerate(lines):
        event = decode_event(raw)
        if isinstance(event, ClickEvent) and event.user_id == "u3":
            records.append(Record("events", 0, i, b"u3", raw, event.ts, event.ts))
    config = StepConfig(score_versions=frozenset({"2"}), explain=True)
    published = [
        orjson.loads(v)
        for _, v in run_step(records, _Nobody(), load_bundle(with_ref), config).scored.records_v2
    ]
    assert len(printed) == len(mine) == len(published) > 5
    for got, want in zip(printed, published, strict=True):
        assert got["event_id"] == want["event_id"]
        assert got["purchase_probability"] == pytest.approx(want["purchase_probability"], abs=1e-6)
        assert [r["code"] for r in got["reasons"]["top"]] == [
            r["code"] for r in want["reasons"]["top"]
        ]
        np.testing.assert_allclose(
            [r["impact"] for r in got["reasons"]["top"]],
            [r["impact"] for r in want["reasons"]["top"]],
            atol=1e-6,
        )
        got_i, want_i = got["reasons"]["interests"], want["reasons"]["interests"]
        assert [i["category_id"] for i in got_i] == [i["category_id"] for i in want_i]
        np.testing.assert_allclose(
            [i["impact"] for i in got_i], [i["impact"] for i in want_i], atol=1e-6
        )


class _Nobody:
    def get(self, partition: int, user_id: str, /) -> None:
        return None


def test_readable_output_and_a_bundle_without_reference(setup: tuple[Path, Path, Path]) -> None:
    log, plain, with_ref = setup
    runner = CliRunner()
    out = runner.invoke(
        main, ["explain", "--model", str(with_ref), "--events", str(log), "--user", "u3"]
    )
    assert out.exit_code == 0, out.output
    head, *rest = out.output.splitlines()
    assert head.startswith("user u3: ") and "training average scores" in head
    assert "why: " in rest[0] and "p=" in rest[0]
    assert "reason codes:" in out.output
    old = runner.invoke(
        main, ["explain", "--model", str(plain), "--events", str(log), "--user", "u3"]
    )
    assert old.exit_code == 0 and "no reasons: the model has no training reference" in old.output
    missing = runner.invoke(
        main, ["explain", "--model", str(plain), "--events", str(log), "--user", "nobody"]
    )
    assert missing.exit_code == 2 and "no valid event of user 'nobody'" in missing.output
