"""Processes under test: launch each in its own session, watch it, stop it, and account its CPU."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psutil

REPO_ROOT = Path(__file__).resolve().parent.parent


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def module_command(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


# How to reach the benchmark's broker (bench.run sets them to match it): the one part of the
# INTENTFLOW_* settings that children inherit.
CONNECTION_VARIABLES = (
    "INTENTFLOW_KAFKA_SECURITY_PROTOCOL", "INTENTFLOW_KAFKA_SASL_", "INTENTFLOW_KAFKA_SSL_",
)  # fmt: skip


def connection_env() -> dict[str, str]:
    """The ``CONNECTION_VARIABLES`` of this process (what a child needs to reach the broker)."""
    return {k: v for k, v in os.environ.items() if k.startswith(CONNECTION_VARIABLES)}


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child: no INTENTFLOW_* leaking in but the connection's security
    (``CONNECTION_VARIABLES``), the repo on the path."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("INTENTFLOW_") or k.startswith(CONNECTION_VARIABLES)
    }
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.update(extra or {})
    return env


@dataclass
class Proc:
    """A child process in its own session, with its output in a log file."""

    cmd: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=child_env)
    popen: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0

    def start(self) -> Proc:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.started_at = time.time()
            self.popen = subprocess.Popen(
                self.cmd,
                env=self.env,
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        stop_process(self.popen, timeout)

    def log(self, tail: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-tail:])
        except FileNotFoundError:
            return "(no log)"


def stop_process(popen: subprocess.Popen[bytes] | None, timeout: float = 30.0) -> None:
    """SIGTERM the child's process group, SIGKILL it after ``timeout``."""
    if popen is None or popen.poll() is not None:
        return
    try:
        os.killpg(popen.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        popen.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(popen.pid, signal.SIGKILL)
        popen.wait(10)


class CpuMeter:
    """CPU seconds (user + system) a process and its children spent between two readings."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.base = self._read()

    def _read(self) -> float:
        try:
            t = self.process.cpu_times()
            return t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            return 0.0

    def seconds(self) -> float:
        return self._read() - self.base

    def rss_mb(self) -> float:
        try:
            return self.process.memory_info().rss / 1_048_576
        except psutil.Error:
            return float("nan")


def dir_size_mb(path: Path) -> float:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):  # a file RocksDB just deleted
                total += os.path.getsize(os.path.join(root, name))
    return total / 1_048_576
