"""``intentflow train`` and ``intentflow evaluate`` through the real CLI entry point."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from model_export.cli import parse_duration
from streams.cli import main
from tests.model_fixtures import TinyBundle, synthetic_log


@pytest.mark.parametrize(
    ("text", "seconds"), [("3600", 3600), ("90s", 90), ("30m", 1800), ("1h", 3600), ("2d", 172800)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.train
@pytest.mark.slow
def test_train_then_evaluate_on_another_log(tmp_path: Path) -> None:
    runner = CliRunner()
    train_log = synthetic_log(tmp_path / "a.jsonl", tmp_path / "a.truth.jsonl", users=60, seed=1)
    out = tmp_path / "bundles" / "b1"
    link = tmp_path / "current"
    result = runner.invoke(
        main,
        [
            "train",
            "--events", str(train_log),
            "--truth", str(tmp_path / "a.truth.jsonl"),
            "--out", str(out),
            "--horizon", "1h",
            "--epochs", "2",
            "--seed", "3",
            "--split", "0.7",
            "--threads", "1",
            "--link", str(link),
        ],
        env={"INTENTFLOW_LOG_LEVEL": "debug"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Epoch 1/2" in result.output  # Keras's own line per epoch, at debug only
    assert "logistic_regression" in result.output and "oracle roc_auc" in result.output
    assert link.is_symlink() and not os.path.isabs(os.readlink(link))
    assert link.resolve() == out.resolve()
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["training"]["seed"] == 3

    other = synthetic_log(tmp_path / "b.jsonl", tmp_path / "b.truth.jsonl", users=40, seed=2)
    json_out = tmp_path / "eval.json"
    result = runner.invoke(
        main,
        [
            "evaluate",
            "--model", str(link),
            "--events", str(other),
            "--truth", str(tmp_path / "b.truth.jsonl"),
            "--json", str(json_out),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert meta["model_version"] in result.output
    for label in ("model", "logistic_regression", "heuristic", "oracle"):
        assert label in result.output
    report = json.loads(json_out.read_text())
    assert report["model_version"] == meta["model_version"]
    assert 0.5 < report["model"]["roc_auc"] <= 1
    assert (
        report["baselines"]["heuristic"]["name"]
        == meta["metrics"]["baselines"]["heuristic"]["name"]
    )
    assert report["oracle_rows"] == report["model"]["rows"]

    # Training again into the same directory replaces the bundle atomically.
    result = runner.invoke(
        main,
        ["train", "--events", str(train_log), "--out", str(out), "--epochs", "1", "--quiet"],
    )
    assert result.exit_code == 0, result.output
    assert "Epoch" not in result.output
    assert json.loads((out / "metadata.json").read_text())["training"]["seed"] == 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["b1"]

    # A versioned directory, with the link switched to it.
    result = runner.invoke(
        main,
        [
            "train", "--events", str(train_log), "--epochs", "1", "--quiet",
            "--out", str(out.parent / "{model_version}"), "--link", str(link),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    version = json.loads((link / "metadata.json").read_text())["model_version"]
    assert link.resolve() == (out.parent / version).resolve()
    assert os.readlink(link) == os.path.join("bundles", version)


@pytest.mark.train
@pytest.mark.slow
def test_train_prints_no_tensorflow_log_lines_by_default(tmp_path: Path) -> None:
    # A fresh process: TensorFlow's start-up lines are written while it is imported.
    log = synthetic_log(tmp_path / "a.jsonl", tmp_path / "a.truth.jsonl", users=60, seed=1)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INTENTFLOW_", "TF_"))}
    run = subprocess.run(
        [sys.executable, "-m", "streams.cli", "train", "--events", str(log),
         "--truth", str(tmp_path / "a.truth.jsonl"), "--out", str(tmp_path / "b"),
         "--epochs", "2", "--threads", "1"],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    # stderr holds nothing but progress lines (written only if a step takes over 5 s).
    progress = re.compile(r"^(read events|features|(train|refit) \w+): \d+% \| .* elapsed$")
    assert [line for line in run.stderr.splitlines() if not progress.match(line)] == []
    assert "Epoch" not in run.stdout
    assert run.stdout.startswith("read ") and "oracle roc_auc" in run.stdout
    # 9 steps (read, dataset, 3 candidates, the choice, networks, baselines, export), a blank
    # line, 11 of results (bundle, rows, the model, 3 candidates, 3 baselines, oracle, timings)
    assert len(run.stdout.splitlines()) == 21, run.stdout
    assert "gradient_boosting" in run.stdout and "wide_and_deep (uncalibrated)" in run.stdout


def test_evaluate_errors_are_messages_not_tracebacks(tmp_path: Path) -> None:
    runner = CliRunner()
    log = synthetic_log(tmp_path / "a.jsonl", users=5, days=0.5)
    result = runner.invoke(
        main, ["evaluate", "--model", str(tmp_path / "none"), "--events", str(log)]
    )
    assert result.exit_code == 2
    assert "no model bundle at" in result.output and "Traceback" not in result.output


@pytest.mark.train
def test_train_reports_bad_logs_and_evaluate_reads_a_trained_bundle(
    tiny_bundle: TinyBundle, tmp_path: Path
) -> None:
    runner = CliRunner()
    empty = tmp_path / "empty.jsonl"
    empty.write_text("{}\n")
    result = runner.invoke(main, ["train", "--events", str(empty), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert "no valid clickstream.v1 events" in result.output
    assert not (tmp_path / "x").exists()
    result = runner.invoke(
        main,
        ["evaluate", "--model", str(tiny_bundle.path), "--events", str(tiny_bundle.events)],
    )
    assert result.exit_code == 0, result.output
    assert "rows" in result.output
