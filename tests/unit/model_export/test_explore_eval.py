"""intentflow evaluate-explore end to end on a tiny closed loop: it writes the report, the
curves, the decisions sidecar and summary.json with figures in range."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from model_export.explore_eval import evaluate_explore_command


def test_evaluate_explore_writes_report_curves_and_summary(tmp_path: Path) -> None:
    out = tmp_path / "ee"
    result = CliRunner().invoke(
        evaluate_explore_command,
        ["--users", "40", "--duration", "2d", "--seeds", "7",
         "--policies", "exploit,random,greedy,ts", "--sweep", "0,1",
         "--latent-out", str(tmp_path / "latent.jsonl"), "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    for name in ("report.md", "summary.json", "regret.png", "discovered.png",
                 "regret_by_decision.png", "sweep.png"):  # fmt: skip
        assert (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["policies"]) == {"exploit", "random", "greedy", "ts"}
    for s in summary["policies"].values():
        assert s["users"] == 40 and s["decisions"] > 0
        assert 0 <= s["discovery"] <= 1 and 0 <= s["engagement_rate"] <= 1
        assert 0 <= s["regret_per_decision"] <= 1
    assert summary["policies"]["exploit"]["rate"] == 0.0  # pure exploit
    assert summary["policies"]["random"]["rate"] == 1.0  # pure uniform
    assert [s["rate"] for s in summary["sweep"]] == [0.0, 1.0]
    assert {"ts/exploit", "ts/random", "ts/greedy"} <= set(summary["ratios"])
    assert set(summary["gates"]["pass"]) >= {"regret <= 0.8x exploit", "sweep monotonic"}
    decisions = (out / "decisions" / "decisions-ts-rate1-seed7.jsonl").read_text().splitlines()
    row = json.loads(decisions[0])
    assert 0 < row["propensity"] <= 1 and row["oracle_expected"] >= row["chosen_expected"]
    latent = [json.loads(line) for line in (tmp_path / "latent.jsonl").read_text().splitlines()]
    assert len(latent) == 40 and all(len(r["dormant"]) == 2 for r in latent)
    assert "## Gates" in (out / "report.md").read_text()
