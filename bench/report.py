"""The targets check and ``summary.md``, both derived from the results document only."""

from __future__ import annotations

from typing import Any

from bench import profiling


def _get(doc: dict[str, Any], *path: str) -> Any:
    cur: Any = doc
    for key in path:
        if not isinstance(cur, dict) or key not in cur:
            return None
        cur = cur[key]
    return cur


def targets(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 10's targets, each with the measured value and whether it is met (None: not
    measured; a row with no goal is reported only)."""
    fixed = _fixed_rate_row(doc, "worker")
    old = _get(doc, "old_worker", "system")
    scoring = doc.get("scoring_us_per_event") or {}
    speedup = None
    if scoring.get("onnx_batch_256") and scoring.get("keras_call"):
        speedup = round(scoring["keras_call"] / scoring["onnx_batch_256"], 1)
    agree = doc.get("agreement") or {}
    mismatches = agree.get("mismatches") if agree.get("systems") else None

    def at_least(v: float) -> Any:
        return lambda x: x >= v

    def at_most(v: float) -> Any:
        return lambda x: x <= v

    rows: list[tuple[str, str, Any, Any, str, Any]] = [
        (
            "worker / Quix Streams (steady drain rate)",
            ">= 1.0",
            _get(doc, "ratios", "worker_vs_quix"),
            at_least(1.0),
            ">= 1.5",
            at_least(1.5),
        ),
        (
            "worker / raw passthrough (steady drain rate)",
            ">= 0.25",
            _get(doc, "ratios", "worker_vs_passthrough"),
            at_least(0.25),
            ">= 0.5",
            at_least(0.5),
        ),
        (
            f"worker / old worker {old or ''} (steady drain rate)".replace("  ", " "),
            "",
            _get(doc, "ratios", f"worker_vs_{old}") if old else None,
            None,
            "",
            None,
        ),
        (
            "p99 produce-to-score latency at 1,000 events/s (ms)",
            "<= 50",
            fixed["p99"] if fixed else None,
            at_most(50),
            "",
            None,
        ),
        (
            "worker CPU per event at 1,000 events/s (µs)",
            "",
            fixed.get("cpu_us_per_event") if fixed else None,
            None,
            "",
            None,
        ),
        (
            "recovery of 200k users, restart to ready (s)",
            "<= 30",
            _get(doc, "state", "recovery_seconds_200k"),
            at_most(30),
            "",
            None,
        ),
        (
            "profile bytes per user (mean)",
            "<= 1024",
            _get(doc, "state", "bytes_per_user"),
            at_most(1024),
            "",
            None,
        ),
        (
            "purchase_probability mismatches across systems (per event_id, > 1e-6)",
            "== 0",
            mismatches,
            lambda v: v == 0,
            "",
            None,
        ),
        (
            "ONNX batch 256 speed-up per event vs Keras model(x)",
            ">= 100x",
            speedup,
            at_least(100),
            "",
            None,
        ),
    ]
    out = []
    for name, goal, value, ok, stretch, stretch_ok in rows:
        out.append(
            {
                "name": name,
                "target": goal,
                "value": value,
                "met": None if value is None or ok is None else bool(ok(value)),
                "stretch": stretch,
                "stretch_met": None
                if value is None or stretch_ok is None
                else bool(stretch_ok(value)),
            }
        )
    return out


def _fixed_rate_row(doc: dict[str, Any], system: str) -> dict[str, Any] | None:
    rows = _get(doc, "latency_by_system", system)
    if rows is None and system == "worker":
        rows = doc.get("latency_ms")
    return next((r for r in rows or [] if "fixed" in str(r.get("label"))), None)


def _fmt(v: Any, digits: int = 0) -> str:
    if v is None:
        return "-"
    if isinstance(v, float | int):
        return f"{v:,.{digits}f}"
    return str(v)


def _paired(s: dict[str, float] | None) -> str:
    if not s:
        return "-"
    return f"{s['median']:.3f} ({s['min']:.3f}-{s['max']:.3f}, {s['n']})"


def summary(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    lines = [
        "# intentflow benchmarks: latest run",
        "",
        f"Command: `{doc.get('command')}` (knobs: {_knobs(doc)}); started "
        f"{doc.get('started_at')}, took {_fmt(doc.get('elapsed_seconds'))} s.",
        "",
        f"Machine: {m.get('cpus')} CPUs ({m.get('cpu_model') or 'unknown model'}), Python "
        f"{m.get('python')}. **Load average** (1, 5, 15 min) at start {m.get('load_avg_start')}, "
        f"at end {m.get('load_avg_end')}; by section: {doc.get('load_avg_by_section')}. "
        "The machine is shared, so CPU time per event is reported beside the rates.",
        "",
        f"Code measured: {_source(doc)}. Broker: one local Apache Kafka (KRaft) started by "
        f"the run (`LocalKafka`). Model: {_get(doc, 'bundle', 'kind')}.",
    ]
    ds = doc.get("dataset")
    if ds:
        lines += [
            "",
            f"Input: {ds['events']:,} events from the {ds['source']} "
            f"({ds['population']:,} simulated shoppers, the first {ds['events']:,} events "
            f"in event time: {ds['active_users']:,} distinct users); types "
            f"{ds['event_types']}.",
        ]

    lines += [
        "",
        "## Targets",
        "",
        "| target | goal | measured | met | stretch |",
        "|---|---|---|---|---|",
    ]
    for t in doc.get("targets", []):
        value = t["value"]
        if value is None:
            met = "not measured"
        elif not t["target"]:
            met = "reported"
        else:
            met = "yes" if t["met"] else "**no**"
        stretch = ""
        if t.get("stretch"):
            done = {True: "met", False: "not met", None: ""}[t.get("stretch_met")]
            stretch = f"{t['stretch']} {done}".strip()
        digits = 3 if isinstance(value, float) and value < 10 else 1
        lines.append(
            f"| {t['name']} | {t['target'] or '-'} | {_fmt(value, digits)} | {met} | {stretch} |"
        )

    detail = doc.get("drain_detail")
    if detail:
        lines += [
            "",
            "## 1. Drain throughput",
            "",
            f"{doc['events']:,} preloaded events (4 partitions), each system in its own process "
            "and consumer group; batch sizes: "
            f"{_batches(doc)}. Steady state = events / (broker append time of "
            "the last output - of the first output); total = events / (launch of the process to "
            "the last output counted in the output topic's end offsets). Median (min-max) of "
            f"{doc['config'].get('repeats')} runs; CPU = user+system seconds of the process per "
            "event.",
            "",
            "| system | steady events/s | total incl. start-up | CPU µs/event | RSS MiB | "
            "outputs checked |",
            "|---|---|---|---|---|---|",
        ]
        for system, d in detail.items():
            s, t, c = d["steady_per_s"], d["total_per_s"], d["cpu_us_per_event"]
            first = d["runs"][0]
            checked = (
                f"{first['distinct_event_ids']:,} distinct ids"
                if first.get("distinct_event_ids")
                else "-"
            )
            lines.append(
                f"| {system} | **{_fmt(s['median'])}** ({_fmt(s['min'])}-{_fmt(s['max'])}) | "
                f"{_fmt(t['median'])} | {_fmt(c['median'])} | {_fmt(d['rss_mb']['median'])} | "
                f"{checked} |"
            )
        for system, d in detail.items():
            if "start_to_ready_s" in d:
                lines += [
                    "",
                    f"{system}: start to /readyz 200 {_fmt(d['start_to_ready_s']['median'], 1)} "
                    f"s (median); events/s from ready to the last score: "
                    f"{_fmt(d['from_ready_per_s']['median'])}.",
                ]
        old = doc.get("old_worker")
        if old:
            lines += [
                "",
                f"`{old['system']}` is the worker of commit `{old['commit'][:12]}` (the last "
                "per-message Faust worker), exported with `git archive` and run with the same "
                "INTENTFLOW_* settings.",
            ]
        r, rc = doc.get("ratios", {}), doc.get("ratios_by_cpu", {})
        paired = doc.get("ratios_paired", {})
        lines += [
            "",
            "| ratio | by steady rate | by CPU per event (other's µs / worker's) "
            "| per repetition, by rate: median (min-max, pairs) | ... by CPU |",
            "|---|---|---|---|---|",
        ]
        for k in r:
            lines.append(
                f"| {k} | {_fmt(r.get(k), 3)} | {_fmt(rc.get(k), 3)} "
                f"| {_paired(paired.get(k, {}).get('by_rate'))} "
                f"| {_paired(paired.get(k, {}).get('by_cpu'))} |"
            )
        lines += [
            "",
            "The first two columns divide the medians of all runs; the last two pair the "
            "worker's drain with the other system's drain of the same repetition (the order of "
            "the systems rotates from one repetition to the next).",
        ]

    agree = doc.get("agreement")
    if agree and agree.get("systems"):
        lines += [
            "",
            "### Same purchase_probability per event_id",
            "",
            f"Reference: {agree['reference']}; tolerance {agree['tolerance']:g} (absolute); "
            f"{agree['basis']}.",
            "",
            "| system | event ids compared | mismatches | missing | extra | max abs diff |",
            "|---|---|---|---|---|---|",
        ]
        for system, c in agree["systems"].items():
            lines.append(
                f"| {system} | {c['compared']:,} | {c['mismatches']:,} | {c['missing']:,} | "
                f"{c['extra']:,} | {c['max_abs_diff']:.1e} |"
            )
        dup = agree.get("duplicates", {})
        if dup:
            lines += [
                "",
                "Duplicate scores (at-least-once) and duplicates that disagree: "
                + ", ".join(f"{s} {d['duplicates']:,} / {d['conflicts']:,}" for s, d in dup.items())
                + ".",
            ]
    elif agree and agree.get("error"):
        lines += ["", f"Agreement not checked: {agree['error']}."]

    prof = doc.get("profile")
    if prof:
        lines += [
            "",
            "### Where the worker spends its time (py-spy)",
            "",
            f"{prof.get('samples')} samples over {prof.get('seconds')} s of a separate, "
            "untimed drain. Full text: [worker-profile.txt](worker-profile.txt); flame "
            "graph: [worker-profile.svg](worker-profile.svg).",
            "",
            *_profile_tables(prof, _get(doc, "drain_cpu_us_per_event", "worker")),
        ]

    lat = doc.get("latency_ms")
    if lat:
        lines += [
            "",
            "## 2. Latency under load",
            "",
            doc.get("latency_basis", ""),
            "",
            "| system | offered | achieved | p50 ms | p95 ms | p99 ms | max ms | scored/sent "
            "| CPU % of a core | CPU µs/event | batches (events each) |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        by_system = doc.get("latency_by_system") or {"worker": lat}
        for system, rows in by_system.items():
            for row in rows:
                lines.append(
                    f"| {system} | {_fmt(row['offered_per_s'])}/s ({row.get('label')}) | "
                    f"{_fmt(row.get('achieved_per_s'))}/s | {row['p50']} | {row['p95']} | "
                    f"{row['p99']} | {row['max']} | {row.get('scored'):,}/{row.get('sent'):,} | "
                    f"{_fmt(row.get('cpu_percent'))}% | {_fmt(row.get('cpu_us_per_event'))} | "
                    f"{_batches_of(row.get('worker_metrics'))} |"
                )
        lines += [
            "",
            "![latency vs offered load](latency.png)",
            "",
            "Every event's latency against its send time ([latency-timeline.png]"
            "(latency-timeline.png)): a flat band is queueing, spikes are stalls.",
            "",
            "![latency over time](latency-timeline.png)",
        ]

    live = doc.get("profile_live")
    if live:
        fixed = _fixed_rate_row(doc, "worker") or {}
        lines += [
            "",
            f"### Where the worker spends its time at {_fmt(live.get('rate'))} events/s (py-spy)",
            "",
            f"{live.get('samples')} samples over {live.get('seconds')} s of an extra, unmeasured "
            "phase at the fixed rate. Full text: "
            "[worker-profile-live.txt](worker-profile-live.txt).",
            "",
            *_profile_tables(live, fixed.get("cpu_us_per_event")),
        ]

    sc = doc.get("scoring_us_per_event")
    if sc:
        sd = doc.get("scoring_detail", {})
        lines += [
            "",
            "## 3. Scoring cost",
            "",
            f"Model: {_get(sd, 'model', 'layers')}, {_get(sd, 'model', 'features')} "
            f"features, trained by the bench through `model_export` on "
            f"{_fmt(_get(sd, 'model', 'train_rows'))} simulated snapshots and exported "
            f"with `export_onnx`; Keras and onnxruntime agree to "
            f"{_get(sd, 'parity_max_abs_diff'):.2e} (limit 1e-5) on "
            f"{_get(sd, 'parity_rows')} rows. One intra-op thread on both sides. "
            "`serving_*` is the bundle the worker served in this run.",
            "",
            "| path | µs per event | speed-up vs Keras model(x) |",
            "|---|---|---|",
        ]
        keras = sc.get("keras_call")
        for k, v in sc.items():
            speed = ""
            if keras and v and not k.startswith("feature"):
                ratio = keras / v
                speed = f"{ratio:,.0f}x" if ratio >= 10 else f"{ratio:.2g}x"
            lines.append(f"| {k} | {v:,.3f} | {speed} |")
        lines.append("")
        lines.append(
            "`feature_matrix_*` is the feature computation that precedes every "
            "onnxruntime call in the worker (for scale, not a scoring path)."
        )

    st = doc.get("state")
    if st:
        pb = st.get("profile_bytes", {})
        lines += ["", "## 4. State and scale", ""]
        if pb:
            lh, dd = pb.get("long_history", {}), pb.get("drain_dataset", {})
            lines += [
                f"Profile bytes per user ({pb.get('note')}): long histories "
                f"({lh.get('users')} users, {lh.get('days')} days, {lh.get('events'):,} "
                f"events): mean {lh.get('mean')}, p50 {lh.get('p50')}, p99 "
                f"{lh.get('p99')}, max {lh.get('max')}; the drain's users (short "
                f"histories): mean {dd.get('mean')}, p99 {dd.get('p99')}, max "
                f"{dd.get('max')}."
            ]
        scales = st.get("scales", [])
        if scales:
            lines += [
                "",
                "Each scale: S profiles (sampled from the long histories) written to the "
                "worker's changelog topic, the worker started on an empty data directory "
                "(it rebuilds RocksDB from the changelog), then a burst of events spread "
                "over the S users drained. Users counted exactly in RocksDB after stop.",
                "",
                "| users | rebuild to ready s | burst events/s | CPU µs/event | RSS MiB "
                "| RocksDB MiB (running / stopped) | users in table |",
                "|---|---|---|---|---|---|---|",
            ]
            for p in scales:
                lines.append(
                    f"| {p['users']:,} | {p['recovery_seconds']} | {_fmt(p['throughput_per_s'])}"
                    f" | {_fmt(p['cpu_us_per_event'])} | {p['rss_mb']} | {p['rocksdb_mb']} / "
                    f"{p['rocksdb_mb_after_stop']} | {p['table_users']:,} |"
                )
            lines += ["", "![state and scale](state-scale.png)"]
        rec = st.get("recovery")
        if rec:
            lines += [
                "",
                f"Recovery: with {rec['changelog_records']:,} changelog records "
                f"({rec['users']:,} users), the worker was stopped, its data directory "
                f"deleted, and restarted: **{rec['restart_to_ready_seconds']} s** to "
                f"/readyz 200 ({rec['table_users_after_restart']:,} users in RocksDB "
                "after it).",
            ]

    sim = doc.get("simulator")
    if sim and "produce_events_per_s" in sim:
        p, g = sim["produce_events_per_s"], sim["generation_events_per_s"]
        lines += [
            "",
            "## 5. Simulator produce rate",
            "",
            f"{sim['method']}; {sim['events']:,} events per run, median (min-max) of {p['n']}: "
            f"produce **{_fmt(p['median'])}** ({_fmt(p['min'])}-{_fmt(p['max'])}) events/s, "
            f"generation alone {_fmt(g['median'])} ({_fmt(g['min'])}-{_fmt(g['max'])}) "
            f"events/s; {sim['delivery_failures']} delivery failures.",
        ]

    if doc.get("failed"):
        lines += ["", "## Failed in this run", ""]
        for f in doc["failed"]:
            lines.append(f"- {f['section']}: `{f['error']}` (see the run's output)")
    if doc.get("skipped"):
        lines += ["", "## Not measured in this run", ""]
        for s in doc["skipped"]:
            lines.append(f"- {s['what']}: {s['why']}")
    lines.append("")
    return "\n".join(lines)


def _profile_tables(prof: dict[str, Any], cpu_us_per_event: float | None) -> list[str]:
    """Layers and hottest functions; with the CPU per event of the same kind of run, each
    share as µs per event too: the CPU per event spread over the samples that are not the
    event loop waiting in epoll (samples are of busy threads, so this is an estimate)."""
    waiting = float(prof.get("waiting_percent") or 0.0)
    busy = max(100.0 - waiting, 1e-9)
    head = "| share | µs/event (est.) |" if cpu_us_per_event else "| share |"
    rule = "|---|---|---|" if cpu_us_per_event else "|---|---|"

    def cells(name: str, pct: float) -> str:
        if not cpu_us_per_event:
            return f"{pct}% |"
        if profiling._waiting(name):
            return f"{pct}% | (waiting) |"
        return f"{pct}% | {pct / busy * cpu_us_per_event:.1f} |"

    lines = []
    if cpu_us_per_event:
        lines += [
            f"µs/event = share / {busy:.1f}% x {cpu_us_per_event:,.0f} µs of CPU per event: "
            f"{waiting}% of the samples are the event loop waiting in epoll, which py-spy "
            "counts as active here; they are left out of the estimate.",
            "",
        ]
    lines += [f"| layer (self time) {head}", rule]
    for layer, pct in list(prof.get("layers", {}).items())[:12]:
        lines.append(f"| {layer} | {cells(layer, pct)}")
    lines += ["", f"| hottest functions (self) {head}", rule]
    for row in prof.get("top_self", [])[:15]:
        lines.append(f"| `{row['function']}` | {cells(row['function'], row['percent'])}")
    lines += ["", f"| hottest call trees (inclusive) {head}", rule]
    for row in prof.get("top_inclusive", [])[:15]:
        lines.append(f"| `{row['function']}` | {cells(row['function'], row['percent'])}")
    return lines


def _batches_of(worker: dict[str, Any] | None) -> str:
    if not worker or not worker.get("batches"):
        return "-"
    return f"{worker['batches']:,.0f} ({worker['events_per_batch']})"


def _batches(doc: dict[str, Any]) -> str:
    b = doc.get("batch_max") or {}
    workers = b.get("workers")
    workers = f"at most {workers}" if isinstance(workers, int) else "their own default"
    return f"the baselines at most {b.get('baselines')} records, the workers {workers}"


def _source(doc: dict[str, Any]) -> str:
    src = doc.get("source") or {}
    commit = f"`{str(src.get('commit'))[:12]}`"
    how = src.get("snapshot")
    if how == "working tree":
        n = len(src.get("changed_files") or [])
        return (
            f"the working tree on commit {commit} with {n} changed files (content digest "
            f"`{src.get('changes_sha256')}`), copied at the start so edits to the shared "
            "checkout during the run do not count"
        )
    if how in {"HEAD export", True}:
        return (
            f"commit {commit}, an export of it (edits to the checkout during the run do not count)"
        )
    return f"the checkout as it was during the run (HEAD {commit})"


def _knobs(doc: dict[str, Any]) -> str:
    c = doc.get("config", {})
    return (
        f"BENCH_EVENTS={c.get('events')}, BENCH_REPEATS={c.get('repeats')}, "
        f"BENCH_LATENCY_SECONDS={c.get('latency_seconds')}, BENCH_SCALES="
        f"{','.join(str(s) for s in c.get('scales', []))}"
    )
