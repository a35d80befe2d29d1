"""`intentflow kafka start/status/stop` as a person runs them, and a clear, quick failure when
no broker answers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.devtools.localkafka import free_port

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "streams.cli"]


def _run(
    args: list[str], env: dict[str, str], timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _kafka_pids(home: Path) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"kafka.Kafka" in cmdline and str(home).encode() in cmdline:
            pids.append(int(proc.name))
    return pids


@pytest.fixture
def broker_env(tmp_path: Path) -> Iterator[tuple[dict[str, str], list[str], Path]]:
    port, cport = free_port(), free_port()
    home = tmp_path / "kafka-home"
    env = {**os.environ, "INTENTFLOW_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}"}
    args = ["--home", str(home), "--controller-port", str(cport)]
    yield env, args, home
    _run(["kafka", "stop", *args], env, timeout=60)  # never leave a broker behind


def test_start_status_stop(broker_env: tuple[dict[str, str], list[str], Path]) -> None:
    env, args, home = broker_env
    port = env["INTENTFLOW_KAFKA_BOOTSTRAP"].rpartition(":")[2]

    down = _run(["kafka", "status", *args], env)
    assert down.returncode == 1 and "not running" in down.stdout

    started = _run(["kafka", "start", *args], env)
    assert started.returncode == 0, started.stdout + started.stderr
    assert f"kafka ready at 127.0.0.1:{port}" in started.stdout
    pids = _kafka_pids(home)
    assert len(pids) == 1

    status = _run(["kafka", "status", *args], env)
    assert (
        status.returncode == 0
        and f"healthy at 127.0.0.1:{port} (pid {pids[0]}, security none)" in status.stdout
    )

    again = _run(["kafka", "start", *args], env)  # a no-op: same process, still healthy
    assert again.returncode == 0, again.stdout + again.stderr
    assert _kafka_pids(home) == pids

    stopped = _run(["kafka", "stop", *args], env)
    assert stopped.returncode == 0 and "kafka stopped" in stopped.stdout
    assert _kafka_pids(home) == []
    after = _run(["kafka", "status", *args], env)
    assert after.returncode == 1 and "not running" in after.stdout
    assert "was not running" in _run(["kafka", "stop", *args], env).stdout


def test_unreachable_bootstrap_fails_fast_and_names_the_address() -> None:
    address = f"127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "INTENTFLOW_KAFKA_BOOTSTRAP": address,
        "INTENTFLOW_KAFKA_CONNECT_TIMEOUT_SECONDS": "3",
    }
    began = time.monotonic()
    result = _run(["topics", "create"], env, timeout=60)
    elapsed = time.monotonic() - began
    assert result.returncode != 0
    assert elapsed < 20, f"took {elapsed:.1f}s"
    assert address in result.stderr
    assert "Traceback" not in result.stderr
