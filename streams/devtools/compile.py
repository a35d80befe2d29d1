"""An opt-in accelerator: the pure per-event core compiled with mypyc, in a copy of the package.

``python -m streams.devtools.compile [OUT]`` (``make compile``) copies ``streams/`` to
``OUT/streams`` (default ``build/compiled``) and compiles ``MODULES`` there with mypyc (part of
mypy, a dev dependency; it needs a C compiler and Python's headers). The sources stay the
reference: nothing in the checkout changes, so an edited source can never be shadowed by a stale
extension module. A process runs the compiled core when ``OUT`` comes first on its path::

    PYTHONPATH=build/compiled intentflow worker

The copy is a snapshot: build it again after changing the sources. ``MANIFEST`` in the copy
records each compiled module's source hash, and ``stale`` compares them with a checkout.
The compiled modules compute bit-identical features, profiles and scores
(``tests/unit/devtools/test_compile.py`` checks it on simulated shoppers).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import click

# The per-event core: profile updates, features, exploration, and the profile bytes.
MODULES: tuple[str, ...] = tuple(
    f"streams/features/{name}.py"
    for name in (
        "profile", "vector", "embeddings", "explore", "arms", "encoding", "encoding_explore",
        "encoding_legacy",
    )
)  # fmt: skip
MANIFEST = "streams/_compiled.json"
DEFAULT_OUT = Path("build/compiled")


def source_hashes(root: Path) -> dict[str, str]:
    """sha256 of each of ``MODULES`` under ``root``."""
    return {m: hashlib.sha256((root / m).read_bytes()).hexdigest() for m in MODULES}


def build(root: Path, out: Path) -> float:
    """Copy ``root/streams`` to ``out/streams`` and compile ``MODULES`` there; the seconds it
    took. RuntimeError with mypyc's output if it fails (the copy is then removed)."""
    started = time.perf_counter()
    if out.exists():
        if any(out.iterdir()) and not (out / MANIFEST).exists():
            raise RuntimeError(
                f"{out} exists and is not a compiled copy (no {MANIFEST}); choose a new or "
                "empty directory"
            )
        shutil.rmtree(out)
    shutil.copytree(
        root / "streams", out / "streams", ignore=shutil.ignore_patterns("__pycache__", "*.so")
    )
    done = subprocess.run(
        [sys.executable, "-m", "mypyc", "--ignore-missing-imports", *MODULES],
        cwd=out, capture_output=True, text=True, check=False,
        env={**os.environ, "MYPY_CACHE_DIR": str(out / ".mypy_cache")},
    )  # fmt: skip
    if done.returncode != 0:
        shutil.rmtree(out, ignore_errors=True)
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-20:])
        raise RuntimeError(f"mypyc failed (exit {done.returncode}):\n{tail}")
    shutil.rmtree(out / "build", ignore_errors=True)  # mypyc's intermediate C and objects
    (out / MANIFEST).write_text(json.dumps(source_hashes(out), indent=1, sort_keys=True) + "\n")
    return time.perf_counter() - started


def stale(out: Path, root: Path) -> list[str]:
    """The compiled modules in ``out`` whose source in ``root`` has changed since (all of them
    if ``out`` has no manifest)."""
    try:
        built = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return list(MODULES)
    now = source_hashes(root)
    return [m for m in MODULES if built.get(m) != now[m]]


@click.command()
@click.argument("out", type=click.Path(path_type=Path), default=DEFAULT_OUT)
def main(out: Path) -> None:
    """Compile the per-event core with mypyc into OUT (default build/compiled)."""
    root = Path(__file__).resolve().parents[2]
    try:
        seconds = build(root, out.resolve())
    except (RuntimeError, OSError) as exc:
        raise click.ClickException(
            f"{exc}\nmypyc needs mypy (pip install -e '.[dev]'), a C compiler and Python's "
            "headers; the worker runs the sources without it"
        ) from None
    click.echo(
        f"compiled {len(MODULES)} modules into {out}/streams in {seconds:.0f} s; run a process "
        f"on them with PYTHONPATH={out}"
    )


if __name__ == "__main__":
    main()
