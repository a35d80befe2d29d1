"""The report of ``intentflow evaluate-explore``: markdown, and PNG curves with bootstrap
confidence intervals over users (matplotlib's object API, no pyplot)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

if TYPE_CHECKING:
    from model_export.explore_eval import Run

COLOURS = {"exploit": "#7f7f7f", "random": "#d62728", "greedy": "#ff7f0e", "ts": "#1f77b4"}
BOOTSTRAP = 300


def pooled(runs: Sequence[Run]) -> dict[str, np.ndarray]:
    """Per-user arrays pooled over seeds (the seeds' users, one after another)."""
    return {
        "regret": np.concatenate([r.regret for r in runs]),
        "discovered": np.concatenate([r.discovered for r in runs]),
        "dormant": np.concatenate([r.dormant for r in runs]),
        "decisions": np.concatenate([r.decisions for r in runs]),
        "engagements": np.concatenate([r.engagements for r in runs]),
    }


def _band(per_user: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean curve over users and its 95% bootstrap band (per_user: users x days)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(per_user), size=(BOOTSTRAP, len(per_user)))
    curves = per_user[idx].mean(axis=1)
    lo, hi = np.percentile(curves, [2.5, 97.5], axis=0)
    return per_user.mean(axis=0), lo, hi


def _save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_curves(by_policy: Mapping[str, Sequence[Run]], out: Path) -> list[str]:
    """Cumulative regret per user and the share of dormant interests discovered, per day."""
    names = []
    for key, title, ylabel in (
        ("regret", "Cumulative expected regret per shopper", "regret (engagements missed)"),
        ("discovered", "Dormant interests discovered", "share of dormant interests"),
    ):
        fig = Figure(figsize=(7, 4.2))
        ax = fig.add_subplot(1, 1, 1)
        for policy, runs in by_policy.items():
            p = pooled(runs)
            per_user = np.cumsum(p[key], axis=1)
            if key == "discovered":
                per_user = per_user / max(p["dormant"].mean(), 1e-12)
            mean, lo, hi = _band(per_user)
            days = np.arange(1, len(mean) + 1)
            colour = COLOURS.get(policy)
            ax.plot(days, mean, label=policy, color=colour)
            ax.fill_between(days, lo, hi, color=colour, alpha=0.2, linewidth=0)
        ax.set_title(title)
        ax.set_xlabel("day")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
        name = f"{key}.png"
        _save(fig, out / name)
        names.append(name)
    return names


def plot_regret_by_decision(by_policy: Mapping[str, Sequence[Run]], out: Path) -> str:
    """Cumulative regret against the shopper's decision number (the bandit view), over the
    shoppers who reached that many decisions, with a bootstrap band."""
    fig = Figure(figsize=(7, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    counts = [len(q) for runs in by_policy.values() for r in runs for q in r.sequence]
    horizon = max(10, int(np.percentile(counts, 50))) if counts else 10
    for policy, runs in by_policy.items():
        seqs = [q for r in runs for q in r.sequence]
        padded = np.full((len(seqs), horizon), np.nan)
        for j, q in enumerate(seqs):
            padded[j, : min(len(q), horizon)] = np.cumsum(q[:horizon])
        rng = np.random.default_rng(0)
        idx = rng.integers(0, len(seqs), size=(BOOTSTRAP, len(seqs)))
        mean = np.nanmean(padded, axis=0)
        boots = np.stack([np.nanmean(padded[i], axis=0) for i in idx])
        lo, hi = np.nanpercentile(boots, [2.5, 97.5], axis=0)
        x = np.arange(1, horizon + 1)
        colour = COLOURS.get(policy)
        ax.plot(x, mean, label=policy, color=colour)
        ax.fill_between(x, lo, hi, color=colour, alpha=0.2, linewidth=0)
    ax.set_title("Cumulative expected regret per shopper, by decision")
    ax.set_xlabel("decision (suggestion) number")
    ax.set_ylabel("regret (engagements missed)")
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, out / "regret_by_decision.png")
    return "regret_by_decision.png"


def plot_sweep(sweep: list[dict[str, Any]], out: Path) -> str:
    """Regret and discovery against the exploration rate (Thompson sampling)."""
    fig = Figure(figsize=(7, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    rates = [s["rate"] for s in sweep]
    regret = [s["regret_per_decision"] for s in sweep]
    lo = [s["regret_per_decision_ci95"][0] for s in sweep]
    hi = [s["regret_per_decision_ci95"][1] for s in sweep]
    ax.errorbar(rates, regret, yerr=[np.subtract(regret, lo), np.subtract(hi, regret)],
                marker="o", color=COLOURS["ts"], label="regret per decision")  # fmt: skip
    ax.set_xlabel("INTENTFLOW_EXPLORE_RATE")
    ax.set_ylabel("regret per decision", color=COLOURS["ts"])
    ax2 = ax.twinx()
    ax2.plot(rates, [s["discovery"] for s in sweep], marker="s", color="#2ca02c")
    ax2.set_ylabel("dormant interests discovered", color="#2ca02c")
    ax.set_title("Exploration rate: regret and discovery")
    ax.grid(alpha=0.3)
    _save(fig, out / "sweep.png")
    return "sweep.png"


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def write_report(  # noqa: PLR0917
    out: Path,
    summary: dict[str, Any],
    by_policy: Mapping[str, Sequence[Run]],
    rates: list[float],
    runs: Sequence[Run],
    sweep_seeds: list[int],
) -> None:
    """``report.md`` and its PNGs in ``out``."""
    images = [plot_regret_by_decision(by_policy, out), *plot_curves(by_policy, out)]
    lines = [
        "# Exploration: closed-loop evaluation",
        "",
        f"{summary['users']:,} simulated shoppers x {summary['duration']} of event time, seeds "
        f"{', '.join(map(str, summary['seeds']))}; rate {summary['rate']} (share of new "
        f"suggestions the policy draws), {summary['config']['slots']} open suggestions per "
        f"shopper, uniform floor {summary['config']['floor']} (off for pure exploit), exposure "
        f"window {summary['config']['window_s'] / 60:.0f} min. Shoppers: correlated interests "
        f"(rank {summary['behaviour']['interest_rank']}), {summary['behaviour']['dormant']} "
        "dormant interests each. Intervals: 95% bootstrap over shoppers.",
        "",
        "| policy | rate | regret per decision (95% CI) | regret per shopper (95% CI) | "
        "decisions per shopper | discovery | decisions until discovery (median) | engagement "
        "rate | purchases in awakened categories per 1,000 shoppers |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p, s in summary["policies"].items():
        ci = s["regret_per_user_ci95"]
        cd = s["regret_per_decision_ci95"]
        lines.append(
            f"| {p} | {s['rate']} | {s['regret_per_decision']:.4f} ({cd[0]:.4f}-{cd[1]:.4f}) | "
            f"{s['regret_per_user']:.2f} ({ci[0]:.2f}-{ci[1]:.2f}) | "
            f"{s['decisions'] / s['users']:.1f} | {s['discovery']:.3f} | "
            f"{_fmt(s['decisions_until_discovery_median'], 1)} | {s['engagement_rate']:.3f} | "
            f"{s['purchases_in_awakened_per_1000_users']:.1f} |"
        )
    lines += ["", "Regret ratios per decision (paired bootstrap over shoppers; per shopper in "
              "brackets):", ""]  # fmt: skip
    for name, r in summary["ratios"].items():
        lines.append(
            f"- {name}: {r['ratio']:.3f} (95% CI {r['ci95'][0]:.3f}-{r['ci95'][1]:.3f}) "
            f"[{r['ratio_per_shopper']:.3f}]"
        )
    lines += ["", *[f"![{i}]({i})" for i in images], ""]
    if rates and summary.get("sweep"):
        lines += [
            f"## Rate sweep (Thompson sampling, seeds {', '.join(map(str, sweep_seeds))})",
            "",
            "| rate | regret per decision (95% CI) | regret per shopper | discovery | "
            "engagement rate |",
            "|---|---|---|---|---|",
        ]
        for s in summary["sweep"]:
            cd = s["regret_per_decision_ci95"]
            lines.append(
                f"| {s['rate']} | {s['regret_per_decision']:.4f} ({cd[0]:.4f}-{cd[1]:.4f}) | "
                f"{s['regret_per_user']:.2f} | {s['discovery']:.3f} | "
                f"{s['engagement_rate']:.3f} |"
            )
        lines += ["", f"![sweep]({plot_sweep(summary['sweep'], out)})", ""]
    lines += ["## Gates", ""]
    for name, ok in summary["gates"].get("pass", {}).items():
        lines.append(f"- {name}: {'pass' if ok else 'FAIL'}")
    lines += [
        "",
        f"Runs: {len(runs)}, {sum(r.events for r in runs):,} events, "
        f"{sum(r.seconds for r in runs):.0f} s of compute.",
    ]
    (out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
