"""The opt-in compiled core (``streams.devtools.compile``): mypyc builds it in a copy of the
package, and a process that runs it computes exactly what the sources compute."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from streams.devtools.compile import MODULES, build, stale

REPO = Path(__file__).resolve().parents[3]

# Simulated shoppers through the step, as the worker runs it (reasons and exploration on):
# a digest of every purchase-scores v1 and v2 record, dead letter (offset, class and reason) and
# stored profile.
DIGEST = r"""
import hashlib, sys
from datetime import UTC, datetime
from pathlib import Path
from streams.features import profile
from streams.model.bundle import load_bundle
from streams.processing.envelope import encode_stored
from streams.processing.step import Record, StepConfig, apply_batch, explorer_for, score
from streams.features.explore import ExploreConfig
from streams.sources.simulate import generate
bundle = load_bundle(Path(sys.argv[1]))
records = [Record("events", 0, i, r.key, r.payload, r.ts_ms / 1000, None)
           for i, r in enumerate(generate(150, 86_400.0, 5, bad_fraction=0.01))]
stored = {}
class Lookup:
    def get(self, partition, user):
        return stored.get(user)
config = StepConfig(score_versions=frozenset({"1", "2"}), explain=True, explore=ExploreConfig())
explorer = explorer_for(bundle, config)
digest = hashlib.sha256()
for i in range(0, len(records), 256):
    applied = apply_batch(records[i : i + 256], Lookup(), config, explorer)
    scored = score(applied.rows, bundle, top_k=config.top_k, versions=config.score_versions,
                   explain=True, explorer=explorer, scored_at=datetime(2026, 1, 1, tzinfo=UTC))
    for _, value in scored.records + scored.records_v2:
        digest.update(value)
    for _, letter in applied.dead_letters + scored.dead_letters:  # (not its wall-clock time)
        digest.update(repr((letter.source_offset, letter.error_class, letter.reason)).encode())
    for user, (profile_, _) in applied.profiles.items():
        stored[user] = profile_
        digest.update(encode_stored(profile_))
from streams.features import compiled_core
assert compiled_core() == profile.__file__.endswith(".so")
print(profile.__file__.rsplit("/", 1)[-1], len(records), digest.hexdigest())
"""


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("compiled")
    build(REPO, out)
    return out


def _digest(path: list[Path], bundle: Path) -> tuple[str, int, str]:
    """Run DIGEST with ``path`` as the import path (and no checkout in the working directory,
    which ``python -c`` would put first)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, path))}
    done = subprocess.run(
        [sys.executable, "-c", DIGEST, str(bundle)],
        capture_output=True, text=True, check=True, env=env, cwd=bundle.parent, timeout=300,
    )  # fmt: skip
    module, n, digest = done.stdout.split()
    return module, int(n), digest


def test_the_compiled_core_computes_what_the_sources_compute(
    compiled: Path, tmp_path: Path
) -> None:
    from tests.bundles import make_explained_bundle

    bundle = make_explained_bundle(tmp_path / "bundle", "compile-parity", seed=1, arms=8)
    native = _digest([compiled, REPO], bundle)
    source = _digest([REPO], bundle)
    assert native[0].endswith(".so") and source[0] == "profile.py"  # each ran what it says
    assert native[1] == source[1] > 1000
    assert native[2] == source[2]


def test_every_module_is_compiled_and_a_changed_source_is_reported_stale(
    compiled: Path, tmp_path: Path
) -> None:
    for module in MODULES:
        stem = Path(module).with_suffix("")
        assert list(compiled.glob(f"{stem}.*.so")), module
    assert stale(compiled, REPO) == []
    copy = tmp_path / "checkout"
    (copy / "streams/features").mkdir(parents=True)
    for module in MODULES:
        (copy / module).write_bytes((REPO / module).read_bytes())
    (copy / MODULES[0]).write_text((REPO / MODULES[0]).read_text() + "\n# edited\n")
    assert stale(compiled, copy) == [MODULES[0]]


def test_it_never_replaces_a_directory_that_is_not_a_compiled_copy(tmp_path: Path) -> None:
    keep = tmp_path / "notes.txt"
    keep.write_text("mine")
    with pytest.raises(RuntimeError, match="is not a compiled copy"):
        build(REPO, tmp_path)
    assert keep.read_text() == "mine"
