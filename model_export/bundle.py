"""Writing bundles so that a hot-reloading worker never sees half of one.

A bundle is assembled in a hidden temporary directory next to its destination and renamed into
place. ``models/current`` is switched by renaming a new symlink over the old one; both renames
are atomic on POSIX file systems.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any


def staging_dir(out: Path) -> Path:
    """A fresh hidden directory beside ``out`` (same file system, so the rename is atomic)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    return tmp


def publish(staged: Path, out: Path) -> Path:
    """Move a finished staging directory to ``out``, replacing any previous bundle there."""
    out = Path(out)
    old = None
    if out.exists() or out.is_symlink():
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(out, old)
    os.rename(staged, out)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
    return out


def point_link(link: Path, target: Path) -> None:
    """Make ``link`` a relative symlink to ``target``, switched atomically."""
    link = Path(link)
    link.parent.mkdir(parents=True, exist_ok=True)
    relative = os.path.relpath(Path(target).resolve(), link.parent.resolve())
    tmp = link.parent / f".{link.name}.tmp-{uuid.uuid4().hex[:8]}"
    os.symlink(relative, tmp)
    os.replace(tmp, link)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json(path: Path, data: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
