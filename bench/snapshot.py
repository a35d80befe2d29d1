"""Frozen copies of the code under test: an export of a commit, or a copy of the working tree.

Others edit the shared checkout during a 15-minute run, so the benchmark measures a copy made
at its start. A commit is exported with ``git archive`` (also how the old worker is run, from
the last commit before the batch runner); the working tree is copied file by file (tracked and
untracked, minus what ``.gitignore`` ignores), with a digest of its difference to HEAD so a
result names exactly the code it measured.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path


def git(origin: Path, *args: str) -> bytes:
    return subprocess.run(["git", *args], cwd=origin, capture_output=True, check=True).stdout


def resolve(origin: Path, rev: str) -> str:
    """The full commit id of ``rev``."""
    return git(origin, "rev-parse", "--verify", f"{rev}^{{commit}}").decode().strip()


def export_commit(origin: Path, rev: str, dest: Path) -> str:
    """Write the tree of ``rev`` into ``dest`` (created); returns the full commit id."""
    commit = resolve(origin, rev)
    dest.mkdir(parents=True, exist_ok=True)
    archive = git(origin, "archive", "--format=tar", commit)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return commit


def working_files(origin: Path) -> list[str]:
    """Tracked and untracked files of the working tree that exist (not ignored ones)."""
    out = git(origin, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    names = sorted({n for n in out.decode().split("\0") if n})
    return [n for n in names if (origin / n).is_file()]


def copy_working_tree(origin: Path, dest: Path) -> dict[str, object]:
    """Copy the working tree into ``dest``; returns what was copied: HEAD, the changed files
    and a sha256 over the content of every copied file that differs from HEAD (or is new)."""
    head = resolve(origin, "HEAD")
    status = git(origin, "status", "--porcelain", "--untracked-files=all").decode()
    changed = sorted(line[3:] for line in status.splitlines() if line[3:])
    digest = hashlib.sha256()
    for name in working_files(origin):
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(origin / name, target)
        if name in changed:
            digest.update(name.encode() + b"\0" + target.read_bytes() + b"\0")
    return {"head": head, "changed_files": changed, "changes_sha256": digest.hexdigest()[:16]}
