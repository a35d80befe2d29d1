"""Differential fuzzing: the fast clickstream.v1 decoder (msgspec, the common shape) and the
reference (pydantic alone) accept and reject the same inputs, and agree on the event, the
error class and the reason, whatever the bytes."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.contracts.events import ClickEvent, decode_event, decode_event_strict
from tests.contract.test_decoder_fuzz import json_values, valid_instances

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _same(raw: bytes) -> ClickEvent | Any:
    fast, strict = decode_event(raw), decode_event_strict(raw)
    assert fast == strict, raw[:300]
    if isinstance(fast, ClickEvent):  # the same values, types included
        assert msgspec.structs.asdict(fast) == msgspec.structs.asdict(strict)  # type: ignore[arg-type]
        assert type(fast.event_type) is type(strict.event_type)  # type: ignore[union-attr]
        assert fast.occurred_at.utcoffset() == strict.occurred_at.utcoffset()  # type: ignore[union-attr]
    return fast


@FUZZ
@given(valid_instances)
def test_schema_valid_events_decode_the_same(instance: dict[str, Any]) -> None:
    assert isinstance(_same(orjson.dumps(instance)), ClickEvent)


@FUZZ
@given(valid_instances, st.sampled_from(
    ["schema_version", "event_id", "user_id", "session_id", "event_type", "item_id",
     "category_id", "price", "quantity", "occurred_at", "extra"]
), json_values)  # fmt: skip
def test_one_field_replaced_by_anything_decodes_the_same(
    instance: dict[str, Any], field: str, value: Any
) -> None:
    _same(json.dumps({**instance, field: value}).encode())  # json: integers of any size


@FUZZ
@given(valid_instances, st.data())
def test_corrupted_bytes_decode_the_same(instance: dict[str, Any], data: st.DataObject) -> None:
    raw = bytearray(orjson.dumps(instance))
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    _same(bytes(raw))


@FUZZ
@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_the_same(raw: bytes) -> None:
    _same(raw)


BASE = (
    b'"schema_version":"1","event_id":"e","user_id":"u","event_type":"view",'
    b'"item_id":"i","category_id":"c","occurred_at":"2025-01-06T09:30:00Z"'
)


@pytest.mark.parametrize(
    "raw",
    [
        b"{" + BASE + b"}",
        b"{" + BASE + b',"user_id":"v"}',  # a duplicate key: the last one counts
        b"\xef\xbb\xbf{" + BASE + b"}",  # a byte order mark
        b"{" + BASE.replace(b'"e"', b'"e\\ud800"') + b"}",  # a lone surrogate escape
        b"{" + BASE.replace(b'"e"', b'"\\u00e9"') + b"}",
        b"{" + BASE + b',"quantity":2.0}',  # integral float: valid
        b"{" + BASE + b',"quantity":true}',
        b"{" + BASE + b',"price":1e400}',
        b"{" + BASE + b',"price":1000000000.0001}',
        b"{" + BASE + b',"price":-0.0}',
        b"{" + BASE.replace(b"09:30:00Z", b"09:30:00.1234567Z") + b"}",  # 7 digits
        b"{" + BASE.replace(b"09:30:00Z", b"09:30:00+23:59") + b"}",
        b"{" + BASE.replace(b"09:30:00Z", b"09:30:00+24:00") + b"}",
        b"{" + BASE.replace(b"09:30:00Z", b"09:30:60Z") + b"}",
        b"{" + BASE.replace(b"09:30:00Z", b"09:30:00z") + b"}",
        b"{" + BASE.replace(b"2025-01-06", b"0000-01-06") + b"}",
        b"{" + BASE.replace(b"2025-01-06", b"2025-02-30") + b"}",
        b"{" + BASE.replace(b'"e"', b'"' + b"x" * 129 + b'"') + b"}",
        b"{" + BASE.replace(b'"e"', b'"' + "é".encode() * 128 + b'"') + b"}",  # 128 characters
        b"{" + BASE.replace(b'"view"', b'"search"').replace(b'"item_id":"i",', b"") + b"}",
        b"{" + BASE.replace(b'"item_id":"i",', b'"item_id":null,') + b"}",
        b"[" + BASE + b"]",
        b"",
        b"null",
    ],
)
def test_edge_cases_decode_the_same(raw: bytes) -> None:
    _same(raw)
