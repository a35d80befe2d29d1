"""The profile-table gauge counts users, not the changelog position Faust keeps beside them."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import rocksdict

from streams.worker.faust_compat import ChangelogRecoveredStore, rocksdb_key_estimate


def test_the_estimate_leaves_out_each_partitions_changelog_position(tmp_path: Path) -> None:
    dbs = {}
    for partition, users in ((0, 5), (1, 3), (2, 0)):
        db = rocksdict.Rdict(str(tmp_path / f"p{partition}"), rocksdict.Options(raw_mode=True))
        for n in range(users):
            db.put(f"p1.dev.{partition}-{n}".encode(), b"profile")
        if users:
            db.put(ChangelogRecoveredStore.offset_key, b"41")
        dbs[partition] = db
    table = SimpleNamespace(
        data=SimpleNamespace(_dbs=dbs, offset_key=ChangelogRecoveredStore.offset_key)
    )
    try:
        assert rocksdb_key_estimate(table) == 8
    finally:
        for db in dbs.values():
            db.close()
