"""``make bench``: every scenario in one invocation, on one real broker, results side by side.

Starts a ``LocalKafka`` on free ports in a scratch directory, generates the input, runs the
scenarios (drain, latency, scoring, simulator, state), and writes ``bench/results/latest.json``
and ``bench/results/summary.md`` (with plots and the worker's profile) after each scenario, so
a failure late in the run keeps what was measured. The broker is stopped at the end, whatever
happens. Knobs: ``bench.config`` (``BENCH_EVENTS``, ``BENCH_REPEATS``, ...).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from bench import (
    agreement,
    data,
    drain,
    kafkautil,
    latency,
    profiling,
    report,
    snapshot,
    state,
)
from bench.config import Config
from bench.procs import REPO_ROOT, child_env, module_command
from model_export.explore_prior import DEFAULT_ARMS
from streams.devtools.kafka_security import settings_env
from streams.devtools.localkafka import LocalKafka, free_port

T0 = time.monotonic()


def log(message: str) -> None:
    print(f"[bench {time.monotonic() - T0:6.0f}s] {message}", flush=True)


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_avg_start": load_avg(),
    }


class Results:
    """The results document, written to disk after every scenario."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.doc: dict[str, Any] = {
            "machine": machine(),
            "events": cfg.events,
            "drain_events_per_s": {},
            "ratios": {},
            "latency_ms": [],
            "scoring_us_per_event": {},
            "state": {},
            "simulator_events_per_s": None,
            "load_avg_by_section": {},
            "skipped": [],
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in cfg.__dict__.items()},
            "command": "make bench",
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }

    def section(self, name: str) -> None:
        """Note the load average as a section starts (the first step of it: the drain's
        profile is a second step of the drain section)."""
        self.doc["load_avg_by_section"].setdefault(name, load_avg())

    def skip(self, what: str, why: str) -> None:
        log(f"SKIPPED {what}: {why}")
        self.doc["skipped"].append({"what": what, "why": why})

    def save(self) -> None:
        out = self.cfg.out_dir
        out.mkdir(parents=True, exist_ok=True)
        self.doc["machine"]["load_avg_end"] = load_avg()
        self.doc["elapsed_seconds"] = round(time.monotonic() - T0, 1)
        self.doc["targets"] = report.targets(self.doc)
        tmp = out / "latest.json.tmp"
        tmp.write_text(json.dumps(self.doc, indent=2) + "\n")
        tmp.replace(out / "latest.json")
        (out / "summary.md").write_text(report.summary(self.doc))


def pick_bundle(home: Path) -> tuple[Path, str]:
    current = REPO_ROOT / "models" / "current"
    if current.exists():
        # A copy: another process may roll models/current during the run (hot reload).
        snapshot = home / "bundle"
        shutil.copytree(current.resolve(), snapshot)
        return snapshot, f"trained bundle models/current -> {current.resolve().name} (a copy)"
    from tests.bundles import make_explained_bundle

    # Exploration arms: as many as training fits (the worker explores by default); 0: none.
    arms = int(os.environ.get("BENCH_ARMS", str(DEFAULT_ARMS)))
    path = make_explained_bundle(
        home / "bundle", "bench-logistic", seed=0, arms=arms, fitted_prior=True
    )
    return path, (
        "tests/bundles.make_explained_bundle (no models/current): logistic regression, ONNX, "
        "with a training reference (so purchase-scores.v2 carries reasons and drift is measured)"
        + (f" and {arms} exploration arms, their prior fitted as training fits it" if arms else "")
    )


def stats(values: list[float], digits: int = 1) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
        "n": len(values),
    }


def run_drain(cfg: Config, setup: drain.Setup, res: Results) -> None:
    systems = [
        s
        for s in [*drain.SYSTEMS, *setup.sources]
        if not cfg.systems or s in cfg.systems or (s in setup.sources and "old" in cfg.systems)
    ] + list(cfg.variants)
    runs: dict[str, list[drain.DrainRun]] = {s: [] for s in systems}
    for rep in range(cfg.repeats):
        order = systems[rep % len(systems) :] + systems[: rep % len(systems)]
        for system in order:
            log(f"drain rep {rep + 1}/{cfg.repeats}: {system} ({cfg.events:,} events)")
            try:
                r = drain.drain_once(setup, system, rep, verify=rep == 0)
            except RuntimeError as exc:  # one system failing must not lose the others
                log(f"  FAILED {system}: {str(exc)[:2000]}")
                res.doc.setdefault("failed", []).append(
                    {"section": f"drain {system} rep {rep + 1}", "error": str(exc)[:500]}
                )
                continue
            runs[system].append(r)
            log(
                f"  {system}: steady {r.steady_per_s:,.0f}/s, total {r.total_per_s:,.0f}/s, "
                f"CPU {r.cpu_us_per_event:.0f} µs/event"
                + (f", {r.distinct_event_ids:,} distinct ids" if r.distinct_event_ids else "")
            )
    if cfg.quix_per_message:
        log("drain (once): quix_per_message")
        runs["quix_per_message"] = [drain.drain_once(setup, "quix_per_message", 0, verify=True)]
    runs = {s: rs for s, rs in runs.items() if rs}
    detail = {}
    for system, rs in runs.items():
        detail[system] = {
            "steady_per_s": stats([r.steady_per_s for r in rs]),
            "total_per_s": stats([r.total_per_s for r in rs]),
            "cpu_us_per_event": stats([r.cpu_us_per_event for r in rs]),
            "rss_mb": stats([r.rss_mb for r in rs]),
            "runs": [r.to_dict() for r in rs],
        }
        ready = [r.from_ready_per_s for r in rs if r.from_ready_per_s is not None]
        if ready:
            detail[system]["from_ready_per_s"] = stats(ready)
            detail[system]["start_to_ready_s"] = stats(
                [r.ready_at - r.launched_at for r in rs if r.ready_at is not None]
            )
    res.doc["drain_detail"] = detail
    med = {s: detail[s]["steady_per_s"]["median"] for s in detail}
    res.doc["drain_events_per_s"] = med
    res.doc["drain_total_events_per_s"] = {s: detail[s]["total_per_s"]["median"] for s in detail}
    cpu = {s: detail[s]["cpu_us_per_event"]["median"] for s in detail}
    res.doc["drain_cpu_us_per_event"] = cpu
    others = [
        s for s in ("passthrough", "plain_loop", "quix", *setup.sources, *cfg.variants) if s in med
    ]
    if "worker" in med:
        res.doc["ratios"] = {f"worker_vs_{s}": round(med["worker"] / med[s], 3) for s in others}
        res.doc["ratios_by_cpu"] = {  # CPU per event is less sensitive to a busy machine
            f"worker_vs_{s}": round(cpu[s] / cpu["worker"], 3) for s in others
        }
        res.doc["ratios_paired"] = paired_ratios(runs, others)
    res.doc["agreement"] = check_agreement(runs)


def paired_ratios(
    runs: dict[str, list[drain.DrainRun]], others: list[str]
) -> dict[str, dict[str, Any]]:
    """The worker's rate over each other system's, per repetition: the two drains of a
    repetition run minutes apart at most, so a ratio of the pair is less exposed to the shared
    machine's load drifting over the whole run than the ratio of the two medians. Median, range
    and count of the pairs, by steady rate and by CPU per event."""
    worker = {r.rep: r for r in runs.get("worker", [])}
    out: dict[str, dict[str, Any]] = {}
    for other in others:
        pairs = [(worker[r.rep], r) for r in runs.get(other, []) if r.rep in worker]
        if not pairs:
            continue
        out[f"worker_vs_{other}"] = {
            "by_rate": stats([w.steady_per_s / o.steady_per_s for w, o in pairs], digits=3),
            "by_cpu": stats([o.cpu_us_per_event / w.cpu_us_per_event for w, o in pairs], digits=3),
        }
    return out


def check_agreement(runs: dict[str, list[drain.DrainRun]]) -> dict[str, Any]:
    """purchase_probability per event_id of every scoring system against the worker's."""
    read = {
        system: rs[0].probabilities
        for system, rs in runs.items()
        if rs and rs[0].probabilities is not None
    }
    out: dict[str, Any] = {
        "reference": "worker",
        "tolerance": agreement.TOLERANCE,
        "basis": "the first drain of each system read back in full; the passthrough is "
        "excluded (it does not score); a duplicate score of an event must agree too",
        "duplicates": {
            s: {"duplicates": p.duplicates, "conflicts": p.duplicate_conflicts}
            for s, p in read.items()
        },
    }
    if "worker" not in read:
        out["systems"] = {}
        out["error"] = "the worker's scores were not read back (its drain failed)"
        return out
    by_system = {s: p.by_event for s, p in read.items()}
    out["systems"] = {s: c.to_dict() for s, c in agreement.compare_all(by_system, "worker").items()}
    out["mismatches"] = sum(c["mismatches"] for c in out["systems"].values())
    for system, c in out["systems"].items():
        log(
            f"  agreement {system} vs worker: {c['compared']:,} compared, {c['mismatches']} "
            f"mismatches (> {agreement.TOLERANCE:g}), {c['missing']} missing, {c['extra']} "
            f"extra, max |diff| {c['max_abs_diff']:.2e}"
        )
    return out


def run_profile(cfg: Config, setup: drain.Setup, res: Results) -> None:
    """A separate, untimed worker drain with py-spy attached for ``profile_seconds``."""
    if profiling.py_spy() is None:
        res.skip("worker profile", "py-spy is not installed (pip install py-spy)")
        return
    out = cfg.out_dir
    raw = setup.home / "worker-profile.folded"
    svg = out / "worker-profile.svg"
    seconds = cfg.profile_seconds

    def attach(running: drain.Launched) -> None:
        while running.ready_at is None and running.alive():
            running.poll_ready()
            time.sleep(0.1)
        time.sleep(1.0)
        log = setup.home / "logs" / "py-spy.log"
        samplers = [
            profiling.start_record(running.pid, raw, seconds, "raw", log=log),
            profiling.start_record(running.pid, svg, seconds, "flamegraph", log=log),
        ]
        for p in samplers:
            p.wait()
        running.stop()

    original = drain.wait_for_outputs

    def watched(setup_: drain.Setup, running: drain.Launched, *args: Any, **kw: Any) -> float:
        threading.Thread(target=attach, args=(running,), daemon=True).start()
        try:
            return original(setup_, running, *args, **kw)
        except RuntimeError:
            return time.time()  # stopped by the profiler on purpose

    log(f"profiling the worker with py-spy for {seconds:.0f}s of a drain (not timed)")
    drain.wait_for_outputs = watched  # type: ignore[assignment]
    try:
        try:
            drain.drain_once(setup, "worker", 99, verify=False)
        except RuntimeError as exc:  # the output is incomplete: the profiler stopped it
            log(f"  profiled run stopped early, as intended ({str(exc)[:60]})")
    finally:
        drain.wait_for_outputs = original  # type: ignore[assignment]
    if not raw.exists():
        res.skip("worker profile", "py-spy wrote no samples (ptrace not permitted?)")
        return
    text, summary = profiling.summarize(raw)
    header = (
        f"# intentflow worker, py-spy {seconds:.0f} s at 67 Hz during a drain of "
        f"{cfg.events:,} preloaded events (batch_max {cfg.batch_max or 'the default'})\n"
        f"# load average at the time: {load_avg()}\n\n"
    )
    (out / "worker-profile.txt").write_text(header + text)
    shutil.copy(raw, out / "worker-profile.folded.txt")
    res.doc["profile"] = summary | {
        "seconds": seconds,
        "files": ["worker-profile.txt", "worker-profile.svg", "worker-profile.folded.txt"],
    }


def run_latency(cfg: Config, setup: drain.Setup, ds: data.Dataset, res: Results) -> None:
    drain_rate = res.doc.get("drain_events_per_s", {}).get("worker")
    fixed = (cfg.latency_fixed_rate, f"{cfg.latency_fixed_rate:,.0f}/s fixed")
    rates = [fixed]
    if drain_rate:
        rates += [
            (round(f * drain_rate), f"{int(f * 100)}% of drain") for f in cfg.latency_fractions
        ]
    else:
        res.skip("latency at fractions of the drain rate", "no drain rate measured in this run")
    log(f"latency: the worker at {', '.join(label for _, label in rates)}")
    live = setup.home / "worker-profile-live.folded"
    seconds = min(cfg.profile_seconds, cfg.latency_seconds)

    def profile(pid: int) -> list[subprocess.Popen[bytes]]:
        log(f"  profiling the worker with py-spy for {seconds:.0f} s at {fixed[1]} (not timed)")
        return [profiling.start_record(pid, live, seconds, "raw", log=setup.home / "py-spy.log")]

    with_profile = seconds > 0 and profiling.py_spy() is not None
    phases = latency.run(
        setup, ds.records, rates, cfg.latency_seconds, profile=profile if with_profile else None
    )
    if with_profile and live.exists():
        text, summary = profiling.summarize(live)
        header = (
            f"# intentflow worker, py-spy {seconds:.0f} s at 67 Hz while it scores a paced "
            f"{fixed[1]} (an extra, unmeasured phase)\n# load average at the time: "
            f"{load_avg()}\n\n"
        )
        (cfg.out_dir / "worker-profile-live.txt").write_text(header + text)
        shutil.copy(live, cfg.out_dir / "worker-profile-live.folded.txt")
        res.doc["profile_live"] = summary | {
            "seconds": seconds,
            "rate": cfg.latency_fixed_rate,
            "files": ["worker-profile-live.txt", "worker-profile-live.folded.txt"],
        }
    res.doc["latency_ms"] = [p.to_row() for p in phases]
    res.doc["latency_by_system"] = {"worker": res.doc["latency_ms"]}
    res.doc["latency_basis"] = (
        "score arrival at a consumer of the scores topic minus the producer's send time, joined "
        "on event_id; occurred_at is stamped with the send time, so occurred_at_based agrees. "
        "CPU: user+system seconds of the process under test over the phase (idle timers "
        "included), per event sent"
    )
    latency.plot_timeline(phases, cfg.out_dir / "latency-timeline.png")
    latency.plot(
        phases,
        cfg.out_dir / "latency.png",
        f"worker event-to-score latency ({cfg.latency_seconds:.0f} s per rate)",
    )
    res.save()
    if cfg.latency_quix:
        log(f"latency: the Quix job at {fixed[1]}")
        quix = latency.run(setup, ds.records, [fixed], cfg.latency_seconds, system="quix")
        res.doc["latency_by_system"]["quix"] = [p.to_row() for p in quix]


def run_scoring(cfg: Config, setup: drain.Setup, ds: data.Dataset, res: Results) -> None:
    if len(ds) < 10_000:
        res.skip("scoring", f"{len(ds):,} events are too few to train the Keras model (10,000+)")
        return
    log("scoring cost: training a small Keras model (model_export) and timing it")
    events_file = setup.home / "scoring-events.jsonl"
    with events_file.open("wb") as fh:
        for _, payload in ds.records[:60_000]:
            fh.write(payload + b"\n")
    out = setup.home / "scoring.json"
    cmd = module_command(
        "bench.scoring",
        "--events",
        str(events_file),
        "--bundle-out",
        str(setup.home / "keras-bundle"),
        "--serving-bundle",
        str(setup.bundle),
        "--out",
        str(out),
    )
    result = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        log(result.stderr[-4000:])
        last = result.stderr.strip().splitlines()[-1:] or ["(no output)"]
        raise RuntimeError(f"bench.scoring failed: {last[0]}")
    scoring = json.loads(out.read_text())
    if "skipped" in scoring:
        res.skip("scoring", f"too little training data: {scoring['skipped']} (raise BENCH_EVENTS)")
        return
    res.doc["scoring_us_per_event"] = scoring["us_per_event"]
    res.doc["scoring_detail"] = {k: v for k, v in scoring.items() if k != "us_per_event"}


def run_simulator(cfg: Config, bootstrap: str, res: Results) -> None:
    """The simulator's own benchmark, ``bench/bench_simulator.py``."""
    from bench import bench_simulator

    n, reps = cfg.simulator_events, min(cfg.repeats, 3)
    log(f"simulator: bench/bench_simulator.py, {n:,} events x {reps} (generate, produce)")
    gen = [bench_simulator.generation_rate(n, seed) for seed in range(reps)]
    runs = [bench_simulator.produce_rate(bootstrap, n, seed, "auto") for seed in range(reps)]
    produce = [rate for rate, _ in runs]
    res.doc["simulator"] = {
        "method": "bench/bench_simulator.py (the simulator's sink: kafka-python, acks=all, "
        "1% malformed), generation included in the produce rate",
        "events": n,
        "generation_events_per_s": stats(gen),
        "produce_events_per_s": stats(produce),
        "delivery_failures": sum(f for _, f in runs),
    }
    res.doc["simulator_events_per_s"] = round(statistics.median(produce), 1)
    log(
        f"  produce {statistics.median(produce):,.0f}/s, generation {statistics.median(gen):,.0f}/s"
    )


def run_state(
    cfg: Config, setup: drain.Setup, ds: data.Dataset, res: Results, deadline: float
) -> None:
    log(
        f"profile sizes: the drain's {len(ds):,} events, and {cfg.history_users:,} users over "
        f"{cfg.history_days:g} days"
    )
    short = state.profile_sizes([p for _, p in ds.records])
    payloads, _ = state.long_histories(cfg.history_users, cfg.history_days)
    profiles = state.replay_profiles(payloads)
    samples = [state.envelope(p) for p in profiles.values()]
    long_ = state.size_stats([len(s) for s in samples])
    st: dict[str, Any] = res.doc["state"]
    st["bytes_per_user"] = long_["mean"]
    st["bytes_per_user_p99"] = long_["p99"]
    st["profile_bytes"] = {
        "long_history": long_ | {"events": len(payloads), "days": cfg.history_days},
        "drain_dataset": short,
        "note": "encode_stored envelope (17-byte header + profile), as the worker stores it",
    }
    st["rss_mb"], st["rocksdb_mb"], st["throughput_per_s"], st["scales"] = {}, {}, {}, []
    res.save()

    def record(point: dict[str, Any]) -> None:
        key = str(point["users"])
        st["rss_mb"][key] = point["rss_mb"]
        st["rocksdb_mb"][key] = point["rocksdb_mb"]
        st["throughput_per_s"][key] = point["throughput_per_s"]
        st["scales"].append(point)
        st["scales"].sort(key=lambda p: p["users"])
        state.plot(st["scales"], cfg.out_dir / "state-scale.png")
        res.save()

    rate = None  # changelog records per second rebuilt, measured at the smaller scales
    points = sorted(set(cfg.scales) | {cfg.recovery_users})
    for users in points:
        is_recovery = users == cfg.recovery_users
        remaining = deadline - time.monotonic()
        if rate and not is_recovery:
            # rebuild + seeding + burst + counting keys + start and stop
            estimate = users / rate + users / 100_000 + cfg.scale_events / 1500 + 25
            if estimate > remaining:
                res.skip(
                    f"scale {users:,} users",
                    f"the table rebuild alone would take ~{users / rate:.0f} s at the "
                    f"measured {rate:,.0f} changelog records/s; past the "
                    f"{cfg.budget_seconds:.0f} s budget",
                )
                continue
        log(f"state: {users:,} users" + (" (with the recovery restart)" if is_recovery else ""))
        try:
            point = state.scale_run(
                setup,
                users,
                samples,
                ds.records,
                cfg.scale_events,
                restart=is_recovery,
                ready_timeout=900.0 if is_recovery else max(60.0, remaining - 30),
            )
        except state.NotReadyError as exc:
            res.skip(f"scale {users:,} users", f"{exc}: the rebuild did not fit the budget")
            continue
        log(
            f"  {users:,} users: rebuild {point['recovery_seconds']} s, "
            f"{point['throughput_per_s']:,.0f} events/s, RSS {point['rss_mb']} MiB, "
            f"RocksDB {point['rocksdb_mb']} MiB, {point['table_users']:,} users in the table"
        )
        if is_recovery:
            st["recovery_seconds_200k" if users == 200_000 else f"recovery_seconds_{users}"] = (
                point["restart_to_ready_seconds"]
            )
            st["recovery"] = {
                k: point[k]
                for k in (
                    "users",
                    "restart_to_ready_seconds",
                    "recovery_seconds",
                    "table_users_after_restart",
                    "changelog_records",
                )
            }
            log(f"  restart to ready with an empty data dir: {point['restart_to_ready_seconds']} s")
        if users in cfg.scales or is_recovery:
            record(point)
        rate = users / max(point["recovery_seconds"] - 4.0, 1.0)


def worker_default_batch_max() -> int:
    """INTENTFLOW_BATCH_MAX's default in the code measured (the baselines' batch size)."""
    from streams.settings import Settings

    return int(Settings.model_fields["batch_max"].default)


def old_worker_sources(cfg: Config, home: Path, res: Results) -> dict[str, Path]:
    """The old worker (``BENCH_OLD_WORKER``, a commit), exported to run beside the current one."""
    if not cfg.old_worker:
        return {}
    try:
        commit = snapshot.resolve(origin_checkout(), cfg.old_worker)
        dest = home / f"src-{commit[:12]}"
        snapshot.export_commit(origin_checkout(), commit, dest)
    except (OSError, subprocess.CalledProcessError) as exc:
        res.skip(f"old worker {cfg.old_worker}", f"cannot export it from git: {exc}")
        return {}
    name = drain.old_worker_name(commit)
    res.doc["old_worker"] = {"system": name, "commit": commit, "export": str(dest)}
    log(f"old worker: {name} = an export of commit {commit[:12]} (git archive)")
    return {name: dest}


def compiled_sources(cfg: Config, home: Path, res: Results) -> dict[str, Path]:
    """``worker_compiled`` (in BENCH_SYSTEMS): the worker of the code measured, on its core
    compiled with mypyc (``streams.devtools.compile``), run from that copy."""
    if "worker_compiled" not in cfg.systems:
        return {}
    from streams.devtools.compile import MODULES, build

    dest = home / "compiled"
    try:
        seconds = build(REPO_ROOT, dest)
    except (RuntimeError, OSError) as exc:
        res.skip("worker_compiled", f"mypyc could not compile the core: {exc}")
        return {}
    res.doc["worker_compiled"] = {"modules": list(MODULES), "build_s": round(seconds, 1)}
    log(f"worker_compiled: {len(MODULES)} modules compiled with mypyc in {seconds:.0f} s")
    return {"worker_compiled": dest}


def source_identity() -> dict[str, Any]:
    """The code measured: the commit, and how it was frozen (see ``run_in_snapshot``)."""
    if os.environ.get("BENCH_SOURCE"):
        return dict(json.loads(os.environ["BENCH_SOURCE"]))
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                          text=True, check=False).stdout.strip()  # fmt: skip
    return {"commit": head, "snapshot": "none", "checkout": str(REPO_ROOT)}


def origin_checkout() -> Path:
    """The git checkout the benchmark was started from (a snapshot has no .git)."""
    return Path(os.environ.get("BENCH_ORIGIN", REPO_ROOT))


def run_in_snapshot() -> int | None:
    """Re-run this benchmark in a frozen copy of the code, so edits others make to the shared
    checkout during the run cannot change the code under test. ``BENCH_SNAPSHOT``: ``head``
    (or 1, the default) an export of HEAD; ``tree`` a copy of the working tree as it is now
    (uncommitted changes included, named by a digest); ``0`` no copy. None: already inside a
    copy, or no copy wanted."""
    mode = os.environ.get("BENCH_SNAPSHOT", "head")
    if os.environ.get("BENCH_IN_SNAPSHOT") == "1" or mode == "0":
        return None
    if mode not in {"1", "head", "tree"}:
        raise SystemExit(f"BENCH_SNAPSHOT={mode!r}: choose head, tree or 0")
    dest = Path(tempfile.mkdtemp(prefix="intentflow-bench-src-"))
    if mode == "tree":
        copied = snapshot.copy_working_tree(REPO_ROOT, dest)
        source = {"commit": copied["head"], "snapshot": "working tree", **copied}
        n = len(copied["changed_files"])  # type: ignore[arg-type]
        what = f"the working tree (HEAD {str(copied['head'])[:12]} and {n} changed files)"
    else:
        commit = snapshot.export_commit(REPO_ROOT, "HEAD", dest)
        source = {"commit": commit, "snapshot": "HEAD export"}
        what = f"commit {commit[:12]}"
    source["checkout"] = str(REPO_ROOT)
    for shared in ("models",):  # the served model (not in git); jars live in ~/.cache
        if (REPO_ROOT / shared).exists() and not (dest / shared).exists():
            (dest / shared).symlink_to(REPO_ROOT / shared)
    out = Config.from_env().out_dir
    env = dict(os.environ, BENCH_IN_SNAPSHOT="1", BENCH_SOURCE=json.dumps(source),
               BENCH_ORIGIN=str(REPO_ROOT),
               BENCH_OUT=str(out if out.is_absolute() else REPO_ROOT / out))  # fmt: skip
    print(f"[bench] measuring {what}, copied to {dest}", flush=True)
    try:
        run = subprocess.run([sys.executable, "-m", "bench.run"], cwd=dest, env=env, check=False)
        return run.returncode
    finally:
        shutil.rmtree(dest, ignore_errors=True)


def connect_as_admin(broker: LocalKafka) -> None:
    """Point every client of the run (this process and the ones it starts) at ``broker`` the
    way operators configure intentflow: the INTENTFLOW_KAFKA_* variables. A plaintext broker
    clears any security settings the calling shell had."""
    for name in [n for n in os.environ if n.startswith(("INTENTFLOW_KAFKA_SASL_",
                                                        "INTENTFLOW_KAFKA_SSL_"))]:  # fmt: skip
        del os.environ[name]
    os.environ.pop("INTENTFLOW_KAFKA_SECURITY_PROTOCOL", None)
    conn = broker.connection()  # the admin user: a super user on a secured broker
    if conn is not None:
        os.environ.update(settings_env(conn))


def main() -> int:
    code = run_in_snapshot()
    if code is not None:
        return code
    cfg = Config.from_env()
    res = Results(cfg)
    res.doc["source"] = source_identity()
    deadline = T0 + cfg.budget_seconds
    log(f"load average {load_avg()} on {os.cpu_count()} CPUs; config {res.doc['config']}")
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="intentflow-bench-"))
    broker = LocalKafka(
        home=home / "kafka", port=free_port(), controller_port=free_port(), security=cfg.security
    )
    try:
        log(f"starting Kafka ({cfg.security}) in {home}")
        broker.start(timeout=180)
        connect_as_admin(broker)
        bundle, kind = pick_bundle(home)
        res.doc["bundle"] = {"path": str(bundle), "kind": kind}
        log(f"model bundle: {kind}")

        log(f"generating {cfg.events:,} events from {cfg.users:,} simulated shoppers")
        ds = data.generate(cfg.events, cfg.users)
        res.doc["dataset"] = {
            "source": ds.source,
            "events": len(ds),
            "population": ds.users,
            "active_users": ds.active_users,
            "event_types": ds.event_types,
            "generate_seconds": round(ds.seconds, 1),
            "generate_events_per_s": round(ds.events_per_s, 1),
        }
        log(
            f"  {ds.source}: {len(ds):,} events, {ds.active_users:,} distinct users, "
            f"{ds.seconds:.1f}s ({ds.events_per_s:,.0f}/s)"
        )
        input_topic = f"bench-input-{int(time.time())}"
        kafkautil.create_topics(broker.bootstrap, [input_topic])
        t = time.perf_counter()
        kafkautil.produce_all(broker.bootstrap, input_topic, ds.records)
        log(f"preloaded {input_topic} (4 partitions) in {time.perf_counter() - t:.1f}s")
        setup = drain.Setup(
            broker.bootstrap,
            home,
            input_topic,
            len(ds),
            bundle,
            kind,
            batch_max=cfg.batch_max or worker_default_batch_max(),
            worker_batch_max=cfg.batch_max,
            sources={**old_worker_sources(cfg, home, res), **compiled_sources(cfg, home, res)},
            log=log,
        )
        res.doc["batch_max"] = {
            "baselines": setup.batch_max,
            "workers": setup.worker_batch_max or "each worker's own default",
        }

        def profile() -> None:
            if cfg.profile_seconds > 0:
                run_profile(cfg, setup, res)

        steps = [
            ("drain", lambda: run_drain(cfg, setup, res)),
            ("drain", profile),
            ("latency", lambda: run_latency(cfg, setup, ds, res)),
            ("scoring", lambda: run_scoring(cfg, setup, ds, res)),
            ("simulator", lambda: run_simulator(cfg, broker.bootstrap, res)),
            ("state", lambda: run_state(cfg, setup, ds, res, deadline)),
        ]
        for name, step in steps:
            if name not in cfg.sections:
                continue
            res.section(name)
            try:
                step()
            except Exception as exc:  # one scenario failing must not lose the others
                log(f"FAILED {name}: {exc!r}\n{traceback.format_exc()}")
                failed = {"section": name, "error": repr(exc)[:500]}
                res.doc.setdefault("failed", []).append(failed)
            res.save()
    finally:
        log("stopping Kafka")
        broker.stop()
        if cfg.keep:
            log(f"kept {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)
        res.save()
    log(
        f"done in {time.monotonic() - T0:.0f}s; load average {load_avg()}; "
        f"results in {cfg.out_dir}/latest.json and summary.md"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
