"""``intentflow evaluate-explore``: the exploration policies in the simulator's closed loop.

Per seed, the arms and their population prior are fitted as at train time
(``model_export.explore_prior``) on an organic log of other shoppers of the same simulated
world (3 days, 500 users, indices from 1,000,000). Then each policy runs the closed loop: every
event goes through the worker's own code (``features.update``, then ``Explorer.apply``); each
suggestion opened is shown to the shopper, who may respond (common random numbers: every
policy faces the same coin flips), and the response's events join the stream.

Metrics, per policy (users pooled over seeds): the expected regret of each suggestion against
the oracle's best eligible arms (``P(engage)`` of the best minus that of the chosen, in the
shopper's true affinities), per decision (the gates' measure: a policy whose suggestions are
answered gets its next decision sooner, so it makes more decisions in the same days) and per
shopper over the whole run, the share of dormant interests discovered (awakened), the
decisions until discovery, the engagement rate, and purchases in awakened categories.
Confidence intervals: bootstrap over users (paired across policies: same users, same coins).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import IO, Any

import click
import numpy as np

from model_export.embeddings import learn_embeddings
from model_export.explore_prior import fit_arms, fit_prior_from_exposures
from model_export.explore_report import pooled, write_report
from streams import features
from streams.features.arms import Arms
from streams.features.embeddings import CategoryEmbeddings
from streams.features.explore import POLICIES, ExploreConfig, Explorer
from streams.sources.simulate.latent import top_of
from streams.sources.simulate.loop import ClosedLoop
from streams.sources.simulate.shoppers import Behaviour

DAY_S = 86_400.0
# The simulated world of the evaluation: correlated interests (rank 4), two dormant per user.
EXPLORE_BEHAVIOUR = Behaviour(interest_rank=4, dormant=2)
WARMUP_USERS, WARMUP_DAYS, WARMUP_FIRST_INDEX = 500, 3, 1_000_000
BOOTSTRAP = 300


@dataclass
class Run:
    """One (seed, policy, rate) closed-loop run, per user."""

    seed: int
    policy: str
    rate: float
    regret: np.ndarray  # (users, days): expected regret of the day's decisions
    discovered: np.ndarray  # (users, days): dormant interests awakened that day
    decisions: np.ndarray  # (users,)
    engagements: np.ndarray  # (users,): responses to suggestions
    dormant: np.ndarray  # (users,): dormant interests
    until_discovery: list[int]  # decisions of the user up to each awakening
    sequence: list[np.ndarray]  # per user, the regret of each decision in order
    purchases_awakened: int
    purchases: int
    events: int
    seconds: float


def world(seed: int) -> tuple[Arms, CategoryEmbeddings]:
    """Embeddings and arms fitted as at train time on warm-up shoppers (other users of the
    same world): first on their organic log, then the prior refitted on the exposures a
    uniform policy logged for them (what the uniform floor collects in production)."""
    warm = list(
        ClosedLoop(WARMUP_USERS, WARMUP_DAYS * DAY_S, seed, EXPLORE_BEHAVIOUR,
                   first_index=WARMUP_FIRST_INDEX)
    )  # fmt: skip
    embeddings = learn_embeddings(warm, seed=seed)
    arms = fit_arms(warm, embeddings, seed=seed)
    uniform = Explorer(arms, embeddings, ExploreConfig(policy="random", rate=1.0, floor=1.0))
    loop = ClosedLoop(WARMUP_USERS, WARMUP_DAYS * DAY_S, seed, EXPLORE_BEHAVIOUR,
                      first_index=WARMUP_FIRST_INDEX)  # fmt: skip
    profiles: dict[int, features.Profile] = {}
    states: dict[int, Any] = {}
    at_open: dict[tuple[int, int], np.ndarray] = {}
    logged: list[tuple[np.ndarray, int, bool]] = []
    for ev in loop:
        i = ev.user_index
        profile = profiles[i] = features.update(profiles.get(i), ev)
        states[i], decision = uniform.apply(
            states.get(i), event_id=ev.event_id, ts=ev.ts, event_type=ev.event_type,
            category_id=ev.category_id, weights=profile.weights,
        )  # fmt: skip
        for arm, success in decision.closed:
            shares = at_open.pop((i, arm), None)
            if shares is not None:
                logged.append((shares, arm, success))
        if decision.opened:
            shares = arms.shares(profile.weights, embeddings)
            for exposure in decision.opened:
                at_open[(i, exposure.arm)] = shares
                loop.show(i, Arms.label(exposure.arm), arms.categories[exposure.arm], ev.ts)
    return fit_prior_from_exposures(arms, logged), embeddings


def run_policy(  # noqa: PLR0917 - the run's coordinates, in the task tuple's order
    seed: int,
    policy: str,
    rate: float,
    users: int,
    duration_s: float,
    config: ExploreConfig,
    decisions_path: Path | None = None,
) -> Run:
    """One closed-loop run of a policy at a rate; ``decisions_path``: a JSON line per decision
    (its propensity, the chosen and the oracle's expected reward, and the mean expected reward
    of the arms it was drawn from: what a uniform choice would have earned)."""
    t0 = time.perf_counter()
    decisions_out: IO[str] | None = None
    if decisions_path is not None:
        decisions_out = decisions_path.open("w", encoding="utf-8")
    arms, embeddings = world(seed)
    # The baselines are pure: exploit without the uniform floor, random at rate 1 (every
    # suggestion uniform). greedy and ts run at the rate asked for.
    floor = 0.0 if policy == "exploit" else config.floor
    rate = 1.0 if policy == "random" else 0.0 if policy == "exploit" else rate
    explorer = Explorer(arms, embeddings, replace(config, policy=policy, rate=rate, floor=floor))
    loop = ClosedLoop(users, duration_s, seed, EXPLORE_BEHAVIOUR)
    days = max(1, math.ceil(duration_s / DAY_S))
    start = loop.start_ms / 1000.0
    profiles: list[features.Profile | None] = [None] * users
    states: list[Any] = [None] * users
    regret = np.zeros((users, days))
    discovered = np.zeros((users, days))
    decisions = np.zeros(users, dtype=np.int64)
    engagements = np.zeros(users, dtype=np.int64)
    until: list[int] = []
    sequence: list[list[float]] = [[] for _ in range(users)]
    purchases = purchases_awakened = events = 0
    labels = [Arms.label(a) for a in range(len(arms))]
    for ev in loop:
        events += 1
        i = ev.user_index
        shopper = loop.shoppers[i]
        profile = features.update(profiles[i], ev)
        state, decision = explorer.apply(
            states[i], event_id=ev.event_id, ts=ev.ts, event_type=ev.event_type,
            category_id=ev.category_id, weights=profile.weights,
        )  # fmt: skip
        profiles[i], states[i] = profile, state
        day = min(int((ev.ts - start) // DAY_S), days - 1)
        if ev.event_type == "purchase" and not ev.injected and ev.category_id:
            purchases += 1
            if shopper.latent is not None and top_of(ev.category_id) in shopper.latent.awake:
                purchases_awakened += 1
        if not decision.opened:
            continue
        probs = shopper.response_probabilities(list(arms.categories))
        best = np.sort(probs[list(decision.eligible)])[::-1]
        live = list(decision.eligible)  # the arms this slot was drawn from
        for slot, exposure in enumerate(decision.opened):
            chosen, oracle = float(probs[exposure.arm]), float(best[slot])
            # what a uniform choice among them would have earned: offline evaluation's truth
            uniform, choices = float(probs[live].mean()), len(live)
            live.remove(exposure.arm)
            regret[i, day] += oracle - chosen
            sequence[i].append(oracle - chosen)
            decisions[i] += 1
            latent = shopper.latent
            awake_before = len(latent.awake) if latent is not None else 0
            responses_before = shopper.responses
            loop.show(i, labels[exposure.arm], arms.categories[exposure.arm], ev.ts)
            engagements[i] += shopper.responses - responses_before
            latent = shopper.latent
            if latent is not None and len(latent.awake) > awake_before:
                discovered[i, day] += 1
                until.append(int(decisions[i]))
            if decisions_out is not None:
                decisions_out.write(json.dumps({
                    "seed": seed, "policy": policy, "rate": rate, "user": shopper.user_id,
                    "event_id": ev.event_id, "ts": ev.ts, "cluster": labels[exposure.arm],
                    "propensity": exposure.propensity, "chosen_expected": round(chosen, 6),
                    "oracle_expected": round(oracle, 6), "draw": exposure.draw,
                    "choices": choices, "uniform_expected": round(uniform, 6),
                }) + "\n")  # fmt: skip
    if decisions_out is not None:
        decisions_out.close()
    dormant = np.array([len(s.latent.dormant) if s.latent else 0 for s in loop.shoppers])
    return Run(
        seed, policy, rate, regret, discovered, decisions, engagements, dormant, until,
        [np.asarray(q) for q in sequence], purchases_awakened, purchases, events,
        time.perf_counter() - t0,
    )  # fmt: skip


def latent_rows(seed: int, users: int, arms: Arms, behaviour: Behaviour) -> list[dict[str, Any]]:
    """Per user: the dormant set and P(engage) per arm at the start (the ``--latent-out``
    sidecar of the evaluation)."""
    loop = ClosedLoop(users, DAY_S, seed, behaviour)
    return [
        {
            "user": s.user_id,
            "dormant": [f"{t:02d}" for t in (s.latent.dormant if s.latent else ())],
            "response_probabilities": {
                Arms.label(a): round(float(p), 6)
                for a, p in enumerate(s.response_probabilities(list(arms.categories)))
            },
        }
        for s in loop.shoppers
    ]


def _boot_mean(values: np.ndarray, rng: np.random.Generator) -> tuple[float, float, float]:
    """Mean of per-user values (axis 0) and its 95% bootstrap interval over users."""
    n = len(values)
    idx = rng.integers(0, n, size=(BOOTSTRAP, n))
    means = values[idx].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5], axis=0)
    return values.mean(axis=0), lo, hi


def summarise(runs: Sequence[Run], seed: int = 0) -> dict[str, Any]:
    """One policy's figures over its seeds."""
    rng = np.random.default_rng(seed)
    p = pooled(runs)
    per_user = p["regret"].sum(axis=1)
    mean, lo, hi = _boot_mean(per_user, rng)
    idx = rng.integers(0, len(per_user), size=(BOOTSTRAP, len(per_user)))
    rates = per_user[idx].sum(axis=1) / np.maximum(p["decisions"][idx].sum(axis=1), 1)
    dormant = int(p["dormant"].sum())
    found = int(p["discovered"].sum())
    until = [u for r in runs for u in r.until_discovery]
    decisions = int(p["decisions"].sum())
    users = len(per_user)
    return {
        "policy": runs[0].policy,
        "rate": runs[0].rate,
        "seeds": [r.seed for r in runs],
        "users": users,
        "events": sum(r.events for r in runs),
        "decisions": decisions,
        "regret_per_user": float(mean),
        "regret_per_user_ci95": [float(lo), float(hi)],
        "regret_per_decision": float(per_user.sum() / max(decisions, 1)),
        "regret_per_decision_ci95": [float(x) for x in np.percentile(rates, [2.5, 97.5])],
        "discovery": found / dormant if dormant else 0.0,
        "dormant_interests": dormant,
        "discovered": found,
        "decisions_until_discovery_median": float(np.median(until)) if until else None,
        "engagement_rate": float(p["engagements"].sum() / max(decisions, 1)),
        "purchases_in_awakened_per_1000_users": 1000.0
        * sum(r.purchases_awakened for r in runs)
        / users,
        "purchases_per_1000_users": 1000.0 * sum(r.purchases for r in runs) / users,
        "seconds": round(sum(r.seconds for r in runs), 1),
    }


def paired_ratio(a: Sequence[Run], b: Sequence[Run], seed: int = 1) -> dict[str, float]:
    """Regret per decision of ``a`` over that of ``b``, with a paired bootstrap over users (the
    same shoppers facing the same coins), and the same ratio of regret per shopper."""
    pa, pb = pooled(a), pooled(b)
    ra, rb = pa["regret"].sum(axis=1), pb["regret"].sum(axis=1)
    da, db = pa["decisions"], pb["decisions"]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(ra), size=(BOOTSTRAP, len(ra)))
    ratios = (ra[idx].sum(axis=1) / da[idx].sum(axis=1)) / (
        rb[idx].sum(axis=1) / db[idx].sum(axis=1)
    )
    lo, hi = np.percentile(ratios, [2.5, 97.5])
    return {
        "ratio": float((ra.sum() / da.sum()) / (rb.sum() / db.sum())),
        "ci95": [float(lo), float(hi)],  # type: ignore[dict-item]
        "ratio_per_shopper": float(ra.sum() / rb.sum()),
    }


def _task(args: tuple[int, str, float, int, float, ExploreConfig, Path | None]) -> Run:
    seed, policy, rate, users, duration_s, config, folder = args
    path = folder / f"decisions-{policy}-rate{rate:g}-seed{seed}.jsonl" if folder else None
    return run_policy(seed, policy, rate, users, duration_s, config, path)


def run_all(  # noqa: PLR0917
    tasks: Sequence[tuple[int, str, float]],
    users: int,
    duration_s: float,
    config: ExploreConfig,
    jobs: int,
    decisions: Path | None = None,
) -> list[Run]:
    """Every (seed, policy, rate) run, ``jobs`` at a time."""
    full = [(s, p, r, users, duration_s, config, decisions) for s, p, r in tasks]
    if jobs <= 1:
        return [_task(t) for t in full]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(_task, full))


def gates(summary: dict[str, Any]) -> dict[str, Any]:
    """The issue's gates, measured."""
    pol = summary["policies"]
    out: dict[str, Any] = {}
    if {"ts", "exploit", "random", "greedy"} <= set(pol):
        ts = pol["ts"]
        out["ts_regret_vs_exploit"] = summary["ratios"]["ts/exploit"]
        out["ts_regret_vs_random"] = summary["ratios"]["ts/random"]
        out["ts_discovery"] = ts["discovery"]
        out["ts_discovery_vs_greedy"] = ts["discovery"] / max(pol["greedy"]["discovery"], 1e-12)
        out["pass"] = {
            "regret <= 0.8x exploit": out["ts_regret_vs_exploit"]["ratio"] <= 0.8,
            "regret <= 0.6x random": out["ts_regret_vs_random"]["ratio"] <= 0.6,
            "discovery >= 0.55": ts["discovery"] >= 0.55,
            "discovery >= 1.1x greedy": out["ts_discovery_vs_greedy"] >= 1.1,
        }
    sweep = summary.get("sweep")
    if sweep:
        regrets = [s["regret_per_decision"] for s in sweep]
        disc = [s["discovery"] for s in sweep]
        out.setdefault("pass", {})["sweep monotonic"] = bool(
            (all(np.diff(regrets) <= 0) or all(np.diff(regrets) >= 0))
            and (all(np.diff(disc) >= 0) or all(np.diff(disc) <= 0))
        )
    return out


@click.command("evaluate-explore")
@click.option("--users", type=click.IntRange(min=10), default=2000, show_default=True)
@click.option("--duration", default="14d", show_default=True, help="Event time, e.g. 14d, 36h.")
@click.option("--seeds", default="7,11,13", show_default=True, help="Comma separated.")
@click.option(
    "--policies", default="exploit,random,greedy,ts", show_default=True,
    help=f"Comma separated, of {', '.join(POLICIES)}.",
)  # fmt: skip
@click.option("--rate", type=click.FloatRange(0, 1), default=None,
              help="Exploration rate (default: the worker's default).")  # fmt: skip
@click.option("--sweep", default="0,0.1,0.25,0.5,1", show_default=True,
              help="Rates of a Thompson sampling sweep (empty: none).")  # fmt: skip
@click.option("--sweep-seeds", default=None, help="Seeds of the sweep (default: --seeds).")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Runs in parallel processes.")  # fmt: skip
@click.option("--latent-out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="JSON lines: each user's dormant set and P(engage) per arm (first seed).",
)  # fmt: skip
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
def evaluate_explore_command(  # noqa: PLR0917 - one parameter per click option
    users: int, duration: str, seeds: str, policies: str, rate: float | None, sweep: str,
    sweep_seeds: str | None, jobs: int, latent_out: Path | None, out: Path,
) -> None:  # fmt: skip
    """Run the exploration policies in the simulator's closed loop; write a report."""
    from model_export.cli import parse_duration

    duration_s = parse_duration(duration)
    seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    names = [p.strip() for p in policies.split(",") if p.strip()]
    bad = [p for p in names if p not in POLICIES]
    if bad or not seed_list:
        raise click.BadParameter(f"policies must be among {', '.join(POLICIES)}; seeds non-empty")
    config = ExploreConfig()
    default_rate = config.rate if rate is None else rate
    rates = [float(r) for r in sweep.split(",") if r.strip()]
    sweep_seed_list = [int(s) for s in (sweep_seeds or seeds).split(",") if s.strip()]
    tasks = [(s, p, default_rate) for p in names for s in seed_list]
    tasks += [(s, "ts", r) for r in rates for s in sweep_seed_list
              if not ("ts" in names and r == default_rate and s in seed_list)]  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    click.echo(f"{len(tasks)} closed-loop runs of {users:,} users x {duration} ({jobs} at a time)")
    (out / "decisions").mkdir(exist_ok=True)
    runs = run_all(tasks, users, duration_s, config, jobs, out / "decisions")
    by_policy = {p: [r for r in runs if r.policy == p and r.seed in seed_list
                     and (r.rate == default_rate or p in ("random", "exploit"))]
                  for p in names}  # fmt: skip
    summary: dict[str, Any] = {
        "users": users, "duration": duration, "seeds": seed_list, "rate": default_rate,
        "config": asdict(config), "behaviour": asdict(EXPLORE_BEHAVIOUR),
        "policies": {p: summarise(rs) for p, rs in by_policy.items()},
        "ratios": {},
    }  # fmt: skip
    for other in ("exploit", "random", "greedy"):
        if "ts" in by_policy and other in by_policy:
            summary["ratios"][f"ts/{other}"] = paired_ratio(by_policy["ts"], by_policy[other])
    if rates:
        summary["sweep_seeds"] = sweep_seed_list
        summary["sweep"] = [
            summarise([r for r in runs if r.policy == "ts" and r.rate == rate_
                       and r.seed in sweep_seed_list]) for rate_ in rates
        ]  # fmt: skip
    summary["gates"] = gates(summary)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    write_report(out, summary, by_policy, rates, runs, sweep_seed_list)
    if latent_out is not None:
        arms, _ = world(seed_list[0])
        with latent_out.open("w", encoding="utf-8") as fh:
            for row in latent_rows(seed_list[0], users, arms, EXPLORE_BEHAVIOUR):
                fh.write(json.dumps(row) + "\n")
    for p, s in summary["policies"].items():
        click.echo(
            f"{p:8s} regret/decision {s['regret_per_decision']:.4f}  regret/user "
            f"{s['regret_per_user']:.3f}  discovery {s['discovery']:.3f}  "
            f"engagement {s['engagement_rate']:.3f}  ({s['seconds']:.0f} s)"
        )
    for name, ok in summary["gates"].get("pass", {}).items():
        click.echo(f"gate {name}: {'pass' if ok else 'FAIL'}")
    click.echo(f"report: {out / 'report.md'}")
