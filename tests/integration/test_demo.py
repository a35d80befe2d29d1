"""``intentflow demo`` against the session's real broker: live scores, and a summary whose
counts match what was produced (every valid event scored, every malformed one dead-lettered)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from streams.devtools.localkafka import free_port
from tests.bundles import make_explained_bundle, point

pytestmark = pytest.mark.integration


def test_demo_streams_scores_and_summarises_them(bootstrap: str, tmp_path: Path) -> None:
    current = tmp_path / "current"
    point(current, make_explained_bundle(tmp_path / "bundles" / "v1", "demo-test-v1", seed=5))
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTENTFLOW_")}
    env.update(
        INTENTFLOW_KAFKA_BOOTSTRAP=bootstrap,
        INTENTFLOW_MODEL_PATH=str(current),
        INTENTFLOW_WEB_PORT=str(free_port()),
        INTENTFLOW_APP_ID=f"demo-{tmp_path.name[-8:]}",
    )
    run = subprocess.run(
        [sys.executable, "-m", "streams.cli", "demo", "--seconds", "12", "--rate", "300"],
        env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert "reusing model demo-test-v1" in out
    assert re.search(r"user=\S+ +p=0\.\d{3} +model=demo-test-v1 +top=\[", out), out
    assert re.search(r"top=\[.*\]  why=\[\w+ [+-]0\.\d{3}", out), out  # the reasons (v2)
    produced = re.search(r"events produced +([\d,]+) +\(([\d,]+) valid, ([\d,]+) malformed\)", out)
    scored = re.search(r"scores received +([\d,]+)", out)
    letters = re.search(r"dead letters +([\d,]+)", out)
    assert produced and scored and letters, out
    total, valid, malformed = (int(g.replace(",", "")) for g in produced.groups())
    assert total > 1000 and malformed > 0
    assert int(scored.group(1).replace(",", "")) == valid
    assert int(letters.group(1).replace(",", "")) == malformed
    assert re.search(r"latency produce->score +p50 [\d.]+ ms +p99 [\d.]+ ms", out)
