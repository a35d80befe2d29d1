"""The shopper simulator: deterministic, ordered, valid, honest about its malformed payloads,
and its intent sidecar is a calibrated probability of the label it claims to predict."""

from __future__ import annotations

import bisect
import itertools
import json
import random
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from streams.contracts.events import (
    PAYLOAD_ERROR_CLASSES,
    ClickEvent,
    ClickEventModel,
    Rejection,
    decode_event,
)
from streams.devtools.localkafka import free_port
from streams.errors import BrokerUnreachableError
from streams.settings import load_settings
from streams.sources.simulate import EXPECTED_CLASS, BadKind, SimRecord, format_timestamp, generate
from streams.sources.simulate.cli import parse_duration, parse_start, simulate_command
from streams.sources.simulate.shoppers import cart_posterior, remaining_nobuy
from streams.sources.simulate.sinks import produce

DAY = 86_400.0


@pytest.fixture(scope="module")
def run() -> list[SimRecord]:
    """A mid-size run with 8% malformed payloads, shared by the read-only tests."""
    return list(generate(400, 2 * DAY, seed=11, bad_fraction=0.08))


def test_same_seed_same_bytes_and_another_seed_differs() -> None:
    first = [(r.key, r.payload, r.intent) for r in generate(40, DAY, seed=3, bad_fraction=0.05)]
    again = [(r.key, r.payload, r.intent) for r in generate(40, DAY, seed=3, bad_fraction=0.05)]
    other = [(r.key, r.payload, r.intent) for r in generate(40, DAY, seed=4, bad_fraction=0.05)]
    assert len(first) > 500
    assert first == again
    assert first != other
    assert b'"event_id":"sim-3-1"' in first[0][1] or b"sim-3-x1" in first[0][1]


def test_events_come_in_event_time_order(run: list[SimRecord]) -> None:
    ts = [r.ts_ms for r in run]
    assert ts == sorted(ts)
    for rec in run[:: max(1, len(run) // 2000)]:
        if rec.valid:
            event = decode_event(rec.payload)
            assert isinstance(event, ClickEvent)
            assert round(event.ts * 1000) == rec.ts_ms


def test_every_valid_payload_decodes_to_its_canonical_bytes(run: list[SimRecord]) -> None:
    valid = [r for r in run if r.valid]
    assert len(valid) > 10_000
    for rec in valid:
        event = decode_event(rec.payload)
        assert isinstance(event, ClickEvent), (rec.payload, event)
        # The fast orjson path writes exactly what ClickEvent.to_json() writes.
        assert event.to_json() == rec.payload
        assert event.event_id == rec.event_id
        assert event.event_type.value == rec.event_type
        assert event.user_id.encode() == rec.key
        assert 0.0 <= (rec.intent or 0.0) <= 1.0
        if event.event_type.value == "search":
            assert event.item_id is None and event.price is None
        else:
            assert event.item_id and event.category_id and event.price and event.price > 0
    ids = [r.event_id for r in valid]
    assert len(set(ids)) == len(ids)
    assert ids[:3] == ["sim-11-1", "sim-11-2", "sim-11-3"]


def test_malformed_payloads_are_caught_with_their_expected_class(run: list[SimRecord]) -> None:
    bad = [r for r in run if not r.valid]
    kinds = Counter(r.bad_kind for r in bad)
    assert set(kinds) == set(BadKind), "every kind of problem appears in a run this size"
    assert {r.error_class for r in bad} == set(PAYLOAD_ERROR_CLASSES)
    for rec in bad:
        assert b"\n" not in rec.payload
        assert rec.intent is None and rec.event_id is None
        assert rec.error_class is EXPECTED_CLASS[rec.bad_kind]  # type: ignore[index]
        verdict = decode_event(rec.payload)
        assert isinstance(verdict, Rejection), (rec.bad_kind, rec.payload[:200])
        assert verdict.error_class is rec.error_class, (rec.bad_kind, verdict, rec.payload[:200])
        assert verdict.reason
    for rec in bad:
        if rec.bad_kind is BadKind.NOT_UTF8:
            with pytest.raises(UnicodeDecodeError):
                rec.payload.decode("utf-8")


def test_bad_fraction_is_kept_and_never_changes_the_valid_stream() -> None:
    mixed = list(generate(400, DAY, seed=8, bad_fraction=0.1))
    clean = list(generate(400, DAY, seed=8))
    share = sum(not r.valid for r in mixed) / len(mixed)
    assert len(mixed) > 10_000
    assert abs(share - 0.1) < 0.015
    assert [r.payload for r in mixed if r.valid] == [r.payload for r in clean]
    assert all(r.valid for r in clean)


def _labels(valid: list[SimRecord]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(intent, purchased within the next hour, event type) per non-purchase event."""
    purchases: dict[bytes, list[int]] = defaultdict(list)
    for r in valid:
        if r.event_type == "purchase":
            purchases[r.key].append(r.ts_ms)
    intents, labels, types = [], [], []
    for r in valid:
        if r.event_type == "purchase":
            continue
        times = purchases.get(r.key, [])
        j = bisect.bisect_right(times, r.ts_ms)
        labels.append(j < len(times) and times[j] <= r.ts_ms + 3_600_000)
        intents.append(r.intent)
        types.append(r.event_type or "")
    return np.asarray(intents, dtype=float), np.asarray(labels), types


def test_funnel_purchases_follow_carts_far_more_than_views(run: list[SimRecord]) -> None:
    valid = [r for r in run if r.valid]
    types = Counter(r.event_type for r in valid)
    assert set(types) == {
        "view", "click", "search", "add_to_cart", "remove_from_cart", "favorite", "purchase"
    }  # fmt: skip
    assert types["view"] > types["add_to_cart"] > types["purchase"] > 0
    _, labels, kinds = _labels(valid)
    after_cart = labels[[k == "add_to_cart" for k in kinds]].mean()
    after_view = labels[[k == "view" for k in kinds]].mean()
    assert after_cart > 3 * after_view
    # Every purchase buys an item added to the cart earlier in the same session.
    carted: set[tuple[str, str]] = set()
    for r in valid:
        event = decode_event(r.payload)
        assert isinstance(event, ClickEvent)
        if event.event_type.value == "add_to_cart":
            carted.add((event.session_id or "", event.item_id or ""))
        elif event.event_type.value == "purchase":
            assert (event.session_id, event.item_id) in carted


def test_sessions_have_realistic_gaps(run: list[SimRecord]) -> None:
    by_session: dict[str, list[int]] = defaultdict(list)
    user_sessions: dict[bytes, list[str]] = defaultdict(list)
    for r in run:
        if r.valid:
            sid = json.loads(r.payload)["session_id"]
            if sid not in by_session:
                user_sessions[r.key].append(sid)
            by_session[sid].append(r.ts_ms)
    for times in by_session.values():
        assert max(np.diff(times), default=0) < 30 * 60_000  # in-session gaps under 30 min
        assert times[-1] - times[0] < 3_600_000  # a session checks out within the hour
    for sessions in user_sessions.values():
        for a, b in itertools.pairwise(sessions):
            assert by_session[b][0] - by_session[a][-1] >= 3_600_000  # an hour between sessions
    hours = Counter(datetime.fromtimestamp(by_session[s][0] / 1000, UTC).hour for s in by_session)
    assert hours[20] > 3 * hours[4]  # a daily rhythm: evenings busy, small hours quiet


def test_intent_is_a_calibrated_probability_of_buying_within_the_hour() -> None:
    valid = list(generate(1500, 3 * DAY, seed=21))
    intent, label, _ = _labels(valid)
    assert len(label) > 120_000
    assert abs(intent.mean() - label.mean()) < 0.005
    edges = np.quantile(intent, [0, 0.5, 0.8, 0.9, 0.95, 1.0])
    for lo, hi in itertools.pairwise(edges):
        band = (intent >= lo) & (intent <= hi)
        assert abs(intent[band].mean() - label[band].mean()) < 0.02, (lo, hi)
    # And it ranks well: the oracle every observable-feature model is measured against.
    order = np.argsort(intent)
    ranks = np.empty(len(intent))
    ranks[order] = np.arange(1, len(intent) + 1)
    pos = label.sum()
    auc = (ranks[label].sum() - pos * (pos + 1) / 2) / (pos * (len(label) - pos))
    assert 0.85 < auc < 0.99


def test_closed_forms_match_their_processes() -> None:
    rng = random.Random(5)
    # remaining_nobuy: simulate the two-phase step process it solves.
    any_add, g, p0, p1 = 0.2, 0.05, 0.08, 0.25
    trials, no_buy = 60_000, 0
    for _ in range(trials):
        carted, bought = False, False
        while rng.random() >= (p1 if carted else p0):
            u = rng.random()
            if u < g:
                bought = True
                break
            if u < any_add:
                carted = True
        no_buy += not bought
    empty, carted_f = remaining_nobuy(any_add, g, p0, p1)
    assert abs(no_buy / trials - empty) < 0.01
    assert carted_f > empty  # a session that carted ends sooner: fewer chances to add more
    # cart_posterior: Bayes over "converts" given survival of k removal chances.
    q, hazard, k = 0.3, 0.15, 4
    survivors = converting = 0
    for _ in range(trials):
        converts = rng.random() < q
        if converts or all(rng.random() >= hazard for _ in range(k)):
            survivors += 1
            converting += converts
    assert abs(converting / survivors - cart_posterior(q, k, hazard)) < 0.01


def test_timestamps_match_pydantic_formatting() -> None:
    for ms in (0, 1, 999, 1_736_121_600_000, 1_736_121_600_123, 1_736_207_999_999):
        dt = datetime.fromtimestamp(ms / 1000, UTC).replace(microsecond=(ms % 1000) * 1000)
        event = ClickEventModel.model_validate(
            {
                "schema_version": "1",
                "event_id": "e",
                "user_id": "u",
                "event_type": "search",
                "occurred_at": dt,
            },
            strict=False,
        ).event()
        assert f'"occurred_at":"{format_timestamp(ms)}"'.encode() in event.to_json()


def test_durations_and_start_times_parse() -> None:
    assert parse_duration("90s") == 90
    assert parse_duration("30m") == 1800
    assert parse_duration("3d") == 3 * DAY
    assert parse_duration("1d12h") == 1.5 * DAY
    assert parse_duration("0.5h") == 1800
    for text in ("", "3", "3x", "d3", "-1d", "0s", "1d 2"):
        with pytest.raises(ValueError, match="duration"):
            parse_duration(text)
    assert parse_start("2025-03-01T00:00:00Z") == datetime(2025, 3, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="no timezone"):
        parse_start("2025-03-01T00:00:00")


def test_cli_writes_jsonl_truth_and_a_summary(tmp_path: Path) -> None:
    out, truth = tmp_path / "events.jsonl", tmp_path / "truth.jsonl"
    result = CliRunner().invoke(
        simulate_command,
        [
            "--users",
            "60",
            "--duration",
            "1d",
            "--seed",
            "5",
            "--bad-fraction",
            "0.05",
            "--out",
            str(out),
            "--truth-out",
            str(truth),
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    lines = out.read_bytes().split(b"\n")
    assert lines[-1] == b""
    lines = lines[:-1]
    expected = list(generate(60, DAY, seed=5, bad_fraction=0.05))
    assert lines == [r.payload for r in expected]
    truth_rows = [json.loads(line) for line in truth.read_bytes().splitlines()]
    assert [t["event_id"] for t in truth_rows] == [r.event_id for r in expected if r.valid]
    assert all(0.0 <= t["intent"] <= 1.0 for t in truth_rows)
    n_bad = sum(not r.valid for r in expected)
    assert f"events   {len(expected):>12,}" in result.output
    assert f"invalid  {n_bad:>12,}" in result.output
    for cls in {r.error_class for r in expected if not r.valid}:
        assert cls is not None and cls.value in result.output


def test_cli_needs_exactly_one_destination_and_a_valid_duration(tmp_path: Path) -> None:
    runner = CliRunner()
    both = runner.invoke(
        simulate_command,
        ["--users", "2", "--duration", "1h", "--out", str(tmp_path / "x"), "--kafka"],
    )
    assert both.exit_code == 2 and "exactly one of --out" in both.output
    neither = runner.invoke(simulate_command, ["--users", "2", "--duration", "1h"])
    assert neither.exit_code == 2 and "exactly one of --out" in neither.output
    bad = runner.invoke(
        simulate_command, ["--users", "2", "--duration", "soon", "--out", str(tmp_path / "x")]
    )
    assert bad.exit_code == 2 and "not a duration" in bad.output


def test_unreachable_broker_fails_fast_with_the_address() -> None:
    address = f"127.0.0.1:{free_port()}"
    settings = load_settings(kafka_bootstrap=address, kafka_connect_timeout_seconds=2)
    began = time.monotonic()
    with pytest.raises(BrokerUnreachableError, match=address):
        produce(iter(generate(2, 3600.0, seed=1)), settings)
    assert time.monotonic() - began < 15
