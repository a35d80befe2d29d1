"""The benchmark's own arithmetic, without a broker: profiles, targets, the summary, knobs."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import profiling, report
from bench.config import Config


def test_profile_summary_counts_self_and_inclusive_time(tmp_path: Path) -> None:
    folded = tmp_path / "raw.txt"
    folded.write_text(
        "main (/work/main/streams/cli.py:1);handle_batch (/work/main/streams/agents.py:9);"
        "update (/work/main/streams/features/profile.py:5) 30\n"
        "main (/work/main/streams/cli.py:1);select (/x/lib/python3.11/selectors.py:468) 10\n"
    )
    text, summary = profiling.summarize(folded)
    assert summary["samples"] == 40
    assert summary["layers"]["intentflow features (pure)"] == 75.0
    assert summary["top_self"][0] == {
        "function": "update (streams/features/profile.py)",
        "percent": 75.0,
    }
    inclusive = {row["function"]: row["percent"] for row in summary["top_inclusive"]}
    assert inclusive["main (streams/cli.py)"] == 100.0
    assert "Hottest functions, self time" in text


def test_targets_judge_the_measured_values() -> None:
    doc = {
        "ratios": {"worker_vs_passthrough": 0.1, "worker_vs_quix": 1.2},
        "latency_ms": [{"label": "1,000/s fixed", "p99": 80.0}],
        "scoring_us_per_event": {"onnx_batch_256": 0.2, "keras_call": 1000.0},
        "state": {"bytes_per_user": 700.0, "bytes_per_user_p99": 990.0},
    }
    got = {t["name"]: t for t in report.targets(doc)}
    assert got["worker_vs_passthrough"]["met"] is False
    assert got["worker_vs_quix"]["met"] is True
    assert got["p99 latency at 1,000 events/s (ms)"]["met"] is True
    assert got["ONNX batch 256 speed-up per event vs Keras model(x)"]["value"] == 5000.0
    assert got["recovery of 200k users, restart to ready (s)"]["met"] is None


def test_summary_renders_a_partial_document() -> None:
    doc = {
        "machine": {"cpus": 2, "load_avg_start": [0.5, 0.4, 0.3]},
        "events": 10,
        "config": {"events": 10, "repeats": 1, "scales": [10]},
        "state": {},
        "latency_ms": [],
    }
    doc["targets"] = report.targets(doc)
    text = report.summary(doc)
    assert text.startswith("# intentflow benchmarks")
    assert "[0.5, 0.4, 0.3]" in text
    assert "not measured" in text


def test_config_reads_the_knobs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_EVENTS", "20000")
    monkeypatch.setenv("BENCH_REPEATS", "1")
    monkeypatch.setenv("BENCH_SCALES", "10000,100000")
    cfg = Config.from_env()
    assert (cfg.events, cfg.repeats, cfg.scales) == (20_000, 1, (10_000, 100_000))
    monkeypatch.setenv("BENCH_SECTIONS", "drain,nope")
    with pytest.raises(SystemExit, match="nope"):
        Config.from_env()
