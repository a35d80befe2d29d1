"""Fixtures shared by the worker's integration tests."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import WorkerProcess
from tests.integration.test_worker import Stack, make_stack


@pytest.fixture
def stack(bootstrap: str, tmp_path: Path, unique: str) -> Stack:
    """The default stack: its own topics, group and model under ``tmp_path``."""
    return make_stack(bootstrap, tmp_path, unique)


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    """Workers a test starts; each is stopped afterwards (a frozen one is resumed first)."""
    started: list[WorkerProcess] = []
    yield started
    for w in started:
        if w.proc is not None and w.proc.poll() is None:
            os.killpg(w.proc.pid, signal.SIGCONT)  # a frozen worker cannot stop
        w.stop()
