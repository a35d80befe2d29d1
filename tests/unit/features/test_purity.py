"""The feature code is pure: importing it pulls in no streaming, metrics, validation or ML
framework (STYLE.md, habit 1). Checked in a fresh interpreter, so other tests' imports don't
hide a leak."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = ("faust", "aiokafka", "kafka", "prometheus_client", "pydantic", "tensorflow", "keras")


def test_importing_features_loads_no_framework() -> None:
    code = (
        "import json, sys\n"
        "import streams.features\n"
        "from streams.features import update, feature_matrix\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
        "print(json.dumps(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(out.stdout) == []


def test_the_check_would_catch_a_leak() -> None:
    code = (
        "import json, sys\n"
        "import streams.contracts.events\n"
        "print(json.dumps('pydantic' in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(out.stdout) is True
