"""Frozen copies of the code under test, in a scratch git repository."""

from __future__ import annotations

import subprocess
from pathlib import Path

from bench import snapshot


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, check=True, capture_output=True, text=True
    ).stdout.strip()


def make_repo(tmp_path: Path) -> tuple[Path, str]:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "bench@example.invalid")
    git(repo, "config", "user.name", "bench")
    (repo / ".gitignore").write_text("ignored/\n")
    (repo / "pkg").mkdir()
    (repo / "pkg" / "a.py").write_text("A = 1\n")
    (repo / "gone.py").write_text("G = 1\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "one")
    return repo, git(repo, "rev-parse", "HEAD")


def test_export_commit_writes_that_commit_not_the_working_tree(tmp_path: Path) -> None:
    repo, first = make_repo(tmp_path)
    (repo / "pkg" / "a.py").write_text("A = 2\n")  # uncommitted
    dest = tmp_path / "export"
    assert snapshot.export_commit(repo, first[:7], dest) == first
    assert (dest / "pkg" / "a.py").read_text() == "A = 1\n"


def test_copy_working_tree_takes_changes_and_new_files_not_ignored_ones(tmp_path: Path) -> None:
    repo, head = make_repo(tmp_path)
    (repo / "pkg" / "a.py").write_text("A = 2\n")
    (repo / "pkg" / "new.py").write_text("N = 1\n")
    (repo / "gone.py").unlink()
    (repo / "ignored").mkdir()
    (repo / "ignored" / "big.bin").write_bytes(b"x")
    dest = tmp_path / "copy"
    copied = snapshot.copy_working_tree(repo, dest)
    assert (dest / "pkg" / "a.py").read_text() == "A = 2\n"
    assert (dest / "pkg" / "new.py").exists()
    assert not (dest / "gone.py").exists()
    assert not (dest / "ignored").exists()
    assert copied["head"] == head
    assert copied["changed_files"] == ["gone.py", "pkg/a.py", "pkg/new.py"]
    # the digest names the content: another edit gives another digest
    (repo / "pkg" / "a.py").write_text("A = 3\n")
    again = snapshot.copy_working_tree(repo, tmp_path / "copy2")
    assert again["changes_sha256"] != copied["changes_sha256"]
