"""Generalisation to shoppers the model never saw: train on one half of the Taobao users,
evaluate on the other half, through the real commands (``split-users``, ``train``,
``evaluate``). The model and every baseline are fitted on the first half only; the second
half's table is computed from the bundle (onnxruntime and the stored baseline parameters)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from streams.cli import main
from tests.conftest import TAOBAO_CSV

pytestmark = [pytest.mark.train, pytest.mark.slow]


def _users(path: Path) -> set[str]:
    with path.open("rb") as fh:
        return {json.loads(line)["user_id"] for line in fh if line.strip()}


def test_train_on_half_the_taobao_users_and_evaluate_on_the_other_half(tmp_path: Path) -> None:
    if not TAOBAO_CSV.exists():
        pytest.skip(f"the Taobao sample is not at {TAOBAO_CSV} (it ships in data/taobao)")
    runner = CliRunner()
    log, a, b = tmp_path / "taobao.jsonl", tmp_path / "a.jsonl", tmp_path / "b.jsonl"

    def run(*args: str) -> str:
        result = runner.invoke(main, list(args))
        assert result.exit_code == 0, result.output
        return result.output

    run("import-taobao", str(TAOBAO_CSV), "--out", str(log), "--quiet")
    run("split-users", "--events", str(log), "--out-a", str(a), "--out-b", str(b))
    seen, unseen = _users(a), _users(b)
    assert not seen & unseen and len(seen | unseen) == 815
    assert 300 < len(seen) < 515  # about half each

    bundle = tmp_path / "bundle"
    run("train", "--events", str(a), "--out", str(bundle), "--threads", "1", "--quiet")
    out = run("evaluate", "--model", str(bundle), "--events", str(b), "--json",
              str(tmp_path / "b.json"), "--quiet")  # fmt: skip
    result = json.loads((tmp_path / "b.json").read_text())
    for row in ("model", "logistic_regression", "gradient_boosting", "heuristic"):
        assert row in out
    assert set(result["baselines"]) == {"logistic_regression", "gradient_boosting", "heuristic"}
    model = result["model"]
    assert model["rows"] > 30_000 and 0.05 < model["base_rate"] < 0.15
    # Measured on this split (intentflow train, default threads): model 0.6336, logistic
    # regression 0.6214, trees 0.6106, heuristic 0.5489; model ECE 0.0131. The target
    # of 0.70 is NOT met. The floor catches a broken pipeline (a model that does not transfer
    # to new shoppers scores near 0.5); it is not the target.
    assert model["roc_auc"] > 0.60
    assert model["roc_auc"] > result["baselines"]["heuristic"]["roc_auc"]
    assert model["ece"] < 0.03
    for name, baseline in result["baselines"].items():
        assert 0.5 <= baseline["roc_auc"] <= 0.75, name
