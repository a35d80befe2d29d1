"""The Taobao importer on the real sample: every row kept, valid, time-ordered, sessionised."""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

from streams.contracts.events import ClickEvent, decode_event
from streams.errors import DataError
from streams.sources.taobao import SESSION_GAP_S, import_taobao, import_taobao_command, read_rows
from tests.conftest import SCHEMAS, TAOBAO_CSV

ROWS = 84_475


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[bytes], str]:
    if not TAOBAO_CSV.exists():
        pytest.skip(f"the Taobao sample is not at {TAOBAO_CSV} (it ships in data/taobao)")
    out = tmp_path_factory.mktemp("taobao") / "taobao.jsonl"
    result = CliRunner().invoke(import_taobao_command, [str(TAOBAO_CSV), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out.read_bytes().splitlines(), result.output


def test_every_row_becomes_one_event(imported: tuple[list[bytes], str]) -> None:
    lines, output = imported
    assert len(lines) == ROWS
    assert "84,475" in output and "sessions" in output
    types = Counter(json.loads(line)["event_type"] for line in lines)
    # The counts the dataset's README gives for pv, cart, fav and buy.
    assert types == {"view": 75_872, "add_to_cart": 4_497, "favorite": 2_356, "purchase": 1_750}
    assert re.search(r"outside +35 ", output)  # the 35 rows outside the official window, kept


def test_events_are_schema_valid_and_decode(imported: tuple[list[bytes], str]) -> None:
    lines, _ = imported
    schema = json.loads((SCHEMAS / "clickstream.v1.json").read_text())
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    for line in lines[::7]:  # a seventh is plenty for the schema; all decode below
        validator.validate(json.loads(line))
    for line in lines:
        event = decode_event(line)
        assert isinstance(event, ClickEvent), (line, event)
        assert event.to_json() == line  # canonical form


def test_time_order_unique_ids_and_sessions(imported: tuple[list[bytes], str]) -> None:
    lines, _ = imported
    events = [decode_event(line) for line in lines]
    assert all(isinstance(e, ClickEvent) for e in events)
    ts = [e.ts for e in events]  # type: ignore[union-attr]
    assert ts == sorted(ts)
    ids = [e.event_id for e in events]  # type: ignore[union-attr]
    assert len(set(ids)) == ROWS
    per_user: dict[str, list[ClickEvent]] = defaultdict(list)
    for e in events:
        per_user[e.user_id].append(e)  # type: ignore[union-attr]
    assert len(per_user) == 815
    splits = 0
    for user_events in per_user.values():
        for prev, cur in itertools.pairwise(user_events):
            gap = cur.ts - prev.ts
            if gap >= SESSION_GAP_S:
                assert cur.session_id != prev.session_id
                splits += 1
            else:
                assert cur.session_id == prev.session_id
    sessions = {e.session_id for e in events}  # type: ignore[union-attr]
    assert len(sessions) == splits + len(per_user)


def test_missing_file_and_bad_rows_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        read_rows(tmp_path / "nope.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "user_id,item_id,category_id,behavior_type,timestamp\n1,2,3,pv,1511544070\n1,2,3,click,1\n"
    )
    with pytest.raises(DataError, match=r"bad\.csv line 3: behavior_type .* got 'click'"):
        read_rows(bad)
    bad.write_text("user_id,item_id,category_id,behavior_type,timestamp\n1,2,3,pv,soon\n")
    with pytest.raises(DataError, match=r"line 2: timestamp must be unix seconds, got 'soon'"):
        read_rows(bad)
    bad.write_text("user_id,item_id,category_id,behavior_type,timestamp\n1,2,pv,1511544070\n")
    with pytest.raises(DataError, match=r"line 2: expected 5 fields"):
        read_rows(bad)
    bad.write_text("uid,item,cat,type,ts\n")
    with pytest.raises(DataError, match=r"line 1: expected the header"):
        read_rows(bad)


def test_repeated_rows_get_distinct_ids_and_ties_keep_file_order(tmp_path: Path) -> None:
    csv_path = tmp_path / "tiny.csv"
    csv_path.write_text(
        "user_id,item_id,category_id,behavior_type,timestamp\n"
        "7,100,9,pv,1511600000\n"
        "7,100,9,pv,1511600000\n"
        "8,200,9,buy,1511500000\n"
        "7,101,9,cart,1511600000\n"
        "7,100,9,fav,1511603600\n"
    )
    summary = import_taobao(csv_path, tmp_path / "tiny.jsonl")
    lines = (tmp_path / "tiny.jsonl").read_bytes().splitlines()
    ids = [json.loads(line)["event_id"] for line in lines]
    assert ids == [
        "tb-8-1511500000-200-buy",
        "tb-7-1511600000-100-pv",
        "tb-7-1511600000-100-pv-2",
        "tb-7-1511600000-101-cart",
        "tb-7-1511603600-100-fav",
    ]
    sessions = [json.loads(line)["session_id"] for line in lines]
    assert sessions == ["tb-8-s1", "tb-7-s1", "tb-7-s1", "tb-7-s1", "tb-7-s2"]
    assert (summary.rows, summary.users, summary.sessions, summary.repeated_rows) == (5, 2, 3, 1)
