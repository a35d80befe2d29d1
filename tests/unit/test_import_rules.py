"""The layering of the code is a test, not a hope: the import rules hold on the tree, and the
checker itself catches each rule broken once in a small synthetic tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.import_rules import import_graph, violations

REPO = Path(__file__).resolve().parents[2]


def test_the_tree_keeps_every_import_rule() -> None:
    graph = import_graph(REPO)
    assert "streams.worker.app" in graph and "model_export.train" in graph  # it read the tree
    assert violations(graph) == []


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


# A clean skeleton of the real layout; each case below adds one broken import to it.
SKELETON = {
    "streams/__init__.py": "",
    "streams/errors.py": "",
    "streams/settings.py": "from streams.errors import ConfigError\n",
    "streams/contracts/__init__.py": "",
    "streams/contracts/events.py": "from streams.errors import DataError\n",
    "streams/features/__init__.py": "",
    "streams/features/profile.py": "from streams.errors import ProfileDecodeError\n",
    "streams/model/__init__.py": "",
    "streams/model/bundle.py": "from streams.features import profile\n",
    "streams/processing/__init__.py": "",
    "streams/processing/step.py": (
        "from streams.contracts import events\nfrom streams.model.bundle import load_bundle\n"
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
        "    from streams.processing.throttle import Throttle\n"
    ),
    "streams/processing/throttle.py": "from streams.processing.step import Row\n",
    "streams/worker/__init__.py": "",
    "streams/worker/app.py": "import faust\nfrom streams.worker import agents\n",
    "streams/worker/agents.py": "from aiokafka import AIOKafkaConsumer\n",
    "streams/privacy/__init__.py": "",
    "streams/privacy/redact.py": "",
    "streams/sources/__init__.py": "",
    "streams/sources/taobao.py": "from streams.contracts.events import ClickEvent\n",
    "streams/devtools/__init__.py": "",
    "streams/devtools/demo.py": "from streams.settings import load_settings\n",
    "model_export/__init__.py": "",
    "model_export/train.py": "from streams.model.bundle import BundleWriter\n",
}

BREAKS = [
    ("streams/errors.py", "from streams.settings import Settings\n",
     "streams.errors imports streams.settings (line 1): streams.errors imports nothing of ours"),
    ("streams/contracts/events.py", "from streams.settings import Settings\n",
     "streams.contracts.events imports streams.settings (line 2): streams.contracts imports only"),
    ("streams/features/profile.py", "from streams.model import bundle\n",
     "streams.features.profile imports streams.model.bundle (line 2): streams.features imports"),
    ("streams/processing/step.py", "from streams.settings import Settings\n",
     "streams.processing.step imports streams.settings (line 6): streams.processing imports only"),
    ("streams/privacy/redact.py", "import kafka\n",
     "streams.privacy.redact imports kafka (line 1): the pure privacy modules import no client"),
    ("streams/processing/step.py", "def f():\n    import prometheus_client\n",
     "streams.processing.step imports prometheus_client (line 7): streams.processing never"),
    ("streams/sources/taobao.py", "import faust\n",
     "streams.sources.taobao imports faust (line 2): only streams.worker imports faust"),
    ("streams/worker/agents.py", "from streams.worker.app import create_app\n",
     "streams.worker.agents imports streams.worker.app (line 2): streams.worker.app imports"),
    ("streams/model/bundle.py", "from streams.devtools import demo\n",
     "streams.model.bundle imports streams.devtools.demo (line 2): worker, processing and model"),
    ("model_export/train.py", "from streams.worker import app\n",
     "model_export.train imports streams.worker.app (line 2): model_export never imports"),
    ("streams/processing/step.py", "from streams.processing.throttle import Throttle\n",
     "import cycle: streams.processing.step -> streams.processing.throttle -> "),
]  # fmt: skip


def test_the_skeleton_is_clean(tmp_path: Path) -> None:
    _write(tmp_path, SKELETON)
    assert violations(import_graph(tmp_path)) == []


@pytest.mark.parametrize(("path", "extra", "expected"), BREAKS, ids=[b[2][:40] for b in BREAKS])
def test_each_broken_rule_is_reported_with_module_and_import(
    tmp_path: Path, path: str, extra: str, expected: str
) -> None:
    _write(tmp_path, SKELETON)
    target = tmp_path / path
    target.write_text(target.read_text() + extra)
    found = violations(import_graph(tmp_path))
    assert len(found) >= 1
    assert any(line.startswith(expected) for line in found), found
