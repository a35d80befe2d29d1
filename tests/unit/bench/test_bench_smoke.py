"""The benchmark's own arithmetic, without a broker: profiles, targets, the summary, knobs."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import explore_profile, profiling, report
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
    assert summary["waiting_percent"] == 25.0  # the event loop in select: idle, not work
    assert summary["top_self"][0] == {
        "function": "update (streams/features/profile.py)",
        "percent": 75.0,
    }
    inclusive = {row["function"]: row["percent"] for row in summary["top_inclusive"]}
    assert inclusive["main (streams/cli.py)"] == 100.0
    assert "Hottest functions, self time" in text


def test_targets_judge_the_measured_values() -> None:
    doc = {
        "ratios": {
            "worker_vs_passthrough": 0.3,
            "worker_vs_quix": 1.2,
            "worker_vs_worker_f87345e": 2.5,
        },
        "old_worker": {"system": "worker_f87345e", "commit": "f87345e" + "0" * 33},
        "latency_by_system": {
            "worker": [{"label": "1,000/s fixed", "p99": 80.0, "cpu_us_per_event": 120.0}]
        },
        "scoring_us_per_event": {"onnx_batch_256": 0.2, "keras_call": 1000.0},
        "state": {"bytes_per_user": 700.0, "recovery_seconds_200k": 31.0},
        "agreement": {"systems": {"quix": {}}, "mismatches": 0},
    }
    got = {t["name"]: t for t in report.targets(doc)}
    passthrough = got["worker / raw passthrough (steady drain rate)"]
    assert (passthrough["met"], passthrough["stretch_met"]) == (True, False)
    quix = got["worker / Quix Streams (steady drain rate)"]
    assert (quix["met"], quix["stretch_met"]) == (True, False)
    old = got["worker / old worker worker_f87345e (steady drain rate)"]
    assert (old["value"], old["met"]) == (2.5, None)  # reported, no goal
    assert got["p99 produce-to-score latency at 1,000 events/s (ms)"]["met"] is False
    assert got["worker CPU per event at 1,000 events/s (µs)"]["value"] == 120.0
    assert got["recovery of 200k users, restart to ready (s)"]["met"] is False
    assert got["profile bytes per user (mean)"]["met"] is True
    name = "purchase_probability mismatches across systems (per event_id, > 1e-6)"
    assert got[name]["met"] is True
    assert got["ONNX batch 256 speed-up per event vs Keras model(x)"]["value"] == 5000.0


def test_targets_are_not_measured_without_figures() -> None:
    got = report.targets({})
    assert {t["met"] for t in got} == {None}
    assert {t["value"] for t in got} == {None}


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


def test_profile_paths_are_shortened_for_snapshots_and_old_exports() -> None:
    folded_frames = {
        "run_step (/tmp/intentflow-bench-src-ab12/streams/processing/step.py:300)": (
            "run_step (streams/processing/step.py)",
            "intentflow step (processing/)",
        ),
        "update (/tmp/intentflow-bench-x/src-f87345ee60f7/streams/features/profile.py:5)": (
            "update (streams/features/profile.py)",
            "intentflow features (pure)",
        ),
        "decode (/work/main/streams/contracts/events.py:210)": (
            "decode (streams/contracts/events.py)",
            "decode + validate event (msgspec, pydantic)",
        ),
        "run (/w/.venv/lib/python3.11/site-packages/onnxruntime/capi/x.py:2)": (
            "run (onnxruntime/capi/x.py)",
            "onnxruntime (bundle.predict)",
        ),
    }
    for frame, (short, layer) in folded_frames.items():
        assert profiling._short(frame) == short
        assert profiling._bucket(profiling._short(frame)) == layer


def test_config_reads_the_knobs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_EVENTS", "20000")
    monkeypatch.setenv("BENCH_REPEATS", "1")
    monkeypatch.setenv("BENCH_SCALES", "10000,100000")
    cfg = Config.from_env()
    assert (cfg.events, cfg.repeats, cfg.scales) == (20_000, 1, (10_000, 100_000))
    monkeypatch.setenv("BENCH_SECTIONS", "drain,nope")
    with pytest.raises(SystemExit, match="nope"):
        Config.from_env()


def test_batch_figures_of_a_phase_come_from_two_scrapes() -> None:
    from bench.latency import WORKER_SERIES, batch_figures

    before = dict.fromkeys(WORKER_SERIES, 0.0)
    after = before | {
        "intentflow_inference_batch_events_count": 50.0,
        "intentflow_inference_batch_events_sum": 1000.0,
        "intentflow_inference_duration_seconds_sum": 0.05,
        "intentflow_checkpoint_duration_seconds_count": 4.0,
        "intentflow_checkpoint_duration_seconds_sum": 0.02,
    }
    got = batch_figures(before, after)
    assert got["batches"] == 50.0
    assert got["events_per_batch"] == 20.0
    assert got["inference_ms_per_batch"] == 1.0
    assert (got["checkpoints"], got["checkpoint_ms_mean"]) == (4.0, 5.0)
    assert batch_figures({}, after) == {}  # not a worker: nothing to report


def test_partition_of_is_kafkas_default_partitioner() -> None:
    from aiokafka.partitioner import DefaultPartitioner

    from bench.kafkautil import partition_of

    default = DefaultPartitioner()
    for key in (b"u1", b"s10000-u0000042", b"shopper-\xc3\xa9", b""):
        assert partition_of(key) == default(key, [0, 1, 2, 3], [0, 1, 2, 3])


def test_explore_profile_sections_add_up_to_the_stored_bytes() -> None:
    result = explore_profile.measure(20, 0.25)
    for side in ("off", "on"):
        sizes, sections = result[f"exploration_{side}"], result[f"sections_mean_{side}"]
        assert isinstance(sizes, dict) and isinstance(sections, dict)
        assert sum(sections.values()) == pytest.approx(sizes["mean"], abs=0.6)  # rounded means
        assert sections["envelope"] == 17.0 and sections["header"] == 3.0
    on, off = result["sections_mean_on"], result["sections_mean_off"]
    assert isinstance(on, dict) and isinstance(off, dict)
    assert off["exploration"] == 1.0 < on["exploration"]


def test_paired_ratios_pair_the_drains_of_one_repetition() -> None:
    from bench.drain import DrainRun
    from bench.run import paired_ratios

    def run(system: str, rep: int, seconds: float, cpu_s: float) -> DrainRun:
        return DrainRun(system, rep, 1000, 1000, 0.0, seconds, 0.0, seconds, cpu_seconds=cpu_s)

    runs = {
        # the machine slows down in repetition 1: both systems are twice as slow there
        "worker": [run("worker", 0, 1.0, 0.10), run("worker", 1, 2.0, 0.10)],
        "variant": [run("variant", 0, 0.8, 0.08), run("variant", 1, 1.6, 0.08)],
        "lost": [run("lost", 3, 1.0, 0.1)],  # no worker drain in its repetition: no pair
    }
    got = paired_ratios(runs, ["variant", "lost"])
    assert set(got) == {"worker_vs_variant"}
    assert got["worker_vs_variant"]["by_rate"] == {"median": 0.8, "min": 0.8, "max": 0.8, "n": 2}
    assert got["worker_vs_variant"]["by_cpu"]["median"] == 0.8
    assert report._paired(got["worker_vs_variant"]["by_rate"]) == "0.800 (0.800-0.800, 2)"
    assert report._paired(None) == "-"
