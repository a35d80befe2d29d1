"""The Quix job in the drain benchmark does the worker's default job, not a lighter one."""

from __future__ import annotations

import os

import pytest

from streams.settings import Settings
from streams.worker.app import step_config

quix_job = pytest.importorskip("bench.systems.quix_job")


def test_the_quix_job_runs_the_worker_default_step(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("INTENTFLOW_")]:
        monkeypatch.delenv(name)
    worker = step_config(Settings())
    job = quix_job.CONFIG
    assert (job.score_versions, job.explain, job.explore, job.top_k) == (
        worker.score_versions,
        worker.explain,
        worker.explore,
        worker.top_k,
    )
    assert job.score_versions == frozenset({"1", "2"}) and job.explain and job.explore
