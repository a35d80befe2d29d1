"""Benchmark knobs, read once from ``BENCH_*`` environment variables (defaults: the issue's)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

SECTIONS = ("drain", "latency", "scoring", "simulator", "state")


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def _list(name: str, default: str) -> list[str]:
    return [s.strip() for s in os.environ.get(name, default).split(",") if s.strip()]


@dataclass(frozen=True)
class Config:
    events: int = 200_000  # BENCH_EVENTS: preloaded events for the drain
    users: int = 50_000  # BENCH_USERS: simulated shoppers
    repeats: int = 3  # BENCH_REPEATS: timed drains per system
    # BENCH_BATCH_MAX: batch size of the baselines, and of the workers if set; unset, each
    # worker runs at its own default and the baselines at the current worker's default
    batch_max: int | None = None
    latency_seconds: float = 20.0  # BENCH_LATENCY_SECONDS: per offered rate
    latency_fixed_rate: float = 1000.0  # BENCH_LATENCY_RATE
    latency_fractions: tuple[float, ...] = (0.25, 0.5, 0.75)  # of the worker's drain rate
    scales: tuple[int, ...] = (10_000, 100_000, 1_000_000)  # BENCH_SCALES
    scale_events: int = 20_000  # BENCH_SCALE_EVENTS: burst drained at each scale
    recovery_users: int = 200_000  # BENCH_RECOVERY_USERS
    history_users: int = 1_000  # BENCH_HISTORY_USERS: long histories for profile sizes
    history_days: float = 2.0  # BENCH_HISTORY_DAYS
    simulator_events: int = 50_000  # BENCH_SIMULATOR_EVENTS: per run (bench_simulator)
    profile_seconds: float = 15.0  # BENCH_PROFILE_SECONDS: py-spy on a worker drain (0: off)
    quix_per_message: bool = False  # BENCH_QUIX_PER_MESSAGE=1: also time per-message Quix
    budget_seconds: float = 870.0  # BENCH_BUDGET_SECONDS: optional steps are dropped past it
    sections: tuple[str, ...] = SECTIONS  # BENCH_SECTIONS: a subset, comma separated
    out_dir: Path = field(default_factory=lambda: Path("bench/results"))  # BENCH_OUT
    keep: bool = False  # BENCH_KEEP=1: keep the scratch directory (logs, data)
    # BENCH_OLD_WORKER: a commit whose worker is drained too, as system worker_<commit>
    # (f87345e: the last per-message Faust worker, before the batch runner); empty: none
    old_worker: str = "f87345e"
    # BENCH_SYSTEMS: a subset of passthrough,worker,plain_loop,quix,old to drain (empty: all)
    systems: tuple[str, ...] = ()
    # BENCH_VARIANTS: worker variants drained too, e.g. worker@INTENTFLOW_PUBLISH_SCORES_V2=false
    variants: tuple[str, ...] = ()
    # BENCH_LATENCY_QUIX=1: also offer the fixed rate to the Quix job (latency and CPU)
    latency_quix: bool = True
    # BENCH_SECURITY: the benchmark broker's client listener (none, sasl_ssl, ssl,
    # sasl_plaintext); every client connects through the matching INTENTFLOW_KAFKA_* settings
    security: str = "none"

    @classmethod
    def from_env(cls) -> Config:
        sections = tuple(_list("BENCH_SECTIONS", ",".join(SECTIONS)))
        unknown = set(sections) - set(SECTIONS)
        if unknown:
            raise SystemExit(f"BENCH_SECTIONS: unknown {sorted(unknown)}; choose from {SECTIONS}")
        return cls(
            events=_int("BENCH_EVENTS", cls.events),
            users=_int("BENCH_USERS", cls.users),
            repeats=max(1, _int("BENCH_REPEATS", cls.repeats)),
            batch_max=int(os.environ["BENCH_BATCH_MAX"])
            if os.environ.get("BENCH_BATCH_MAX")
            else None,
            latency_seconds=_float("BENCH_LATENCY_SECONDS", cls.latency_seconds),
            latency_fixed_rate=_float("BENCH_LATENCY_RATE", cls.latency_fixed_rate),
            scales=tuple(int(s) for s in _list("BENCH_SCALES", "10000,100000,1000000")),
            scale_events=_int("BENCH_SCALE_EVENTS", cls.scale_events),
            recovery_users=_int("BENCH_RECOVERY_USERS", cls.recovery_users),
            history_users=_int("BENCH_HISTORY_USERS", cls.history_users),
            history_days=_float("BENCH_HISTORY_DAYS", cls.history_days),
            simulator_events=_int("BENCH_SIMULATOR_EVENTS", cls.simulator_events),
            profile_seconds=_float("BENCH_PROFILE_SECONDS", cls.profile_seconds),
            quix_per_message=os.environ.get("BENCH_QUIX_PER_MESSAGE", "0") == "1",
            budget_seconds=_float("BENCH_BUDGET_SECONDS", cls.budget_seconds),
            sections=sections,
            out_dir=Path(os.environ.get("BENCH_OUT", "bench/results")),
            keep=os.environ.get("BENCH_KEEP", "0") == "1",
            old_worker=os.environ.get("BENCH_OLD_WORKER", cls.old_worker).strip(),
            systems=tuple(_list("BENCH_SYSTEMS", "")),
            variants=tuple(_list("BENCH_VARIANTS", "")),
            latency_quix=os.environ.get("BENCH_LATENCY_QUIX", "1") == "1",
            security=_security(os.environ.get("BENCH_SECURITY", "none")),
        )


def _security(value: str) -> str:
    from streams.devtools.kafka_security import Security

    choices = [s.value for s in Security]
    if value not in choices:
        raise SystemExit(f"BENCH_SECURITY: {value!r} is not one of {', '.join(choices)}")
    return value
