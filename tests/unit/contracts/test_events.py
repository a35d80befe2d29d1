"""decode_event: each kind of bad payload gets the right class and a reason that names the
problem; dead letters keep the bytes exactly and match their schema."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import jsonschema
import orjson
import pytest

from streams.contracts.dead_letters import dead_letter
from streams.contracts.events import (
    DEFAULT_MAX_EVENT_BYTES,
    ClickEvent,
    ErrorClass,
    EventType,
    Rejection,
    decode_event,
)
from tests.conftest import SCHEMAS

GOOD: dict[str, Any] = {
    "schema_version": "1",
    "event_id": "e-1",
    "user_id": "u-1",
    "session_id": "s-1",
    "event_type": "add_to_cart",
    "item_id": "i-9",
    "category_id": "c0417",
    "price": 19.99,
    "quantity": 2,
    "occurred_at": "2025-01-06T09:30:00Z",
}


def _raw(**changes: Any) -> bytes:
    event = {**GOOD, **changes}
    return orjson.dumps({k: v for k, v in event.items() if v is not ...})


def _reject(raw: bytes) -> Rejection:
    verdict = decode_event(raw)
    assert isinstance(verdict, Rejection), verdict
    return verdict


def test_a_good_event_decodes_with_its_values() -> None:
    event = decode_event(_raw())
    assert isinstance(event, ClickEvent)
    assert event.event_type is EventType.ADD_TO_CART
    assert (event.price, event.quantity, event.item_id) == (19.99, 2, "i-9")
    assert event.occurred_at == datetime(2025, 1, 6, 9, 30, tzinfo=UTC)
    assert event.ts == 1_736_155_800.0
    assert decode_event(event.to_json()) == event


@pytest.mark.parametrize(
    ("raw", "error_class", "reason_has"),
    [
        (b'{"schema_version": "1", "event_id": ', ErrorClass.MALFORMED_JSON, "EOF"),
        (b"{'schema_version': '1'}", ErrorClass.MALFORMED_JSON, "Invalid JSON"),
        (b"[1, 2, 3]", ErrorClass.NOT_AN_OBJECT, "object"),
        (b'"an event"', ErrorClass.NOT_AN_OBJECT, "object"),
        (b"null", ErrorClass.NOT_AN_OBJECT, "object"),
        (_raw(user_id=42), ErrorClass.WRONG_TYPE, "`user_id`"),
        (_raw(price="19.99"), ErrorClass.WRONG_TYPE, "`price`"),
        (_raw(quantity="2"), ErrorClass.WRONG_TYPE, "`quantity`"),
        (_raw(quantity=True), ErrorClass.WRONG_TYPE, "`quantity`"),
        (_raw(occurred_at=1_736_155_800), ErrorClass.WRONG_TYPE, "`occurred_at`"),
        (_raw(event_id=...), ErrorClass.MISSING_FIELD, "`event_id`: Field required"),
        (_raw(occurred_at=...), ErrorClass.MISSING_FIELD, "`occurred_at`"),
        (_raw(schema_version=...), ErrorClass.MISSING_FIELD, "`schema_version`"),
        (_raw(item_id=...), ErrorClass.MISSING_FIELD, "`item_id` is required for event_type"),
        (_raw(category_id=None), ErrorClass.MISSING_FIELD, "`category_id` is required"),
        (_raw(event_type="checkout"), ErrorClass.INVALID_VALUE, "`event_type`"),
        (_raw(price=-1.5), ErrorClass.INVALID_VALUE, "`price`: Input should be greater than"),
        (_raw(quantity=0), ErrorClass.INVALID_VALUE, "`quantity`"),
        (_raw(user_id=""), ErrorClass.INVALID_VALUE, "`user_id`: String should have at least"),
        (_raw(user_id="u" * 129), ErrorClass.INVALID_VALUE, "`user_id`"),
        (_raw(occurred_at="2025-01-06 09:30Z"), ErrorClass.INVALID_VALUE, "RFC 3339"),
        (_raw(occurred_at="2025-02-30T09:30:00Z"), ErrorClass.INVALID_VALUE, "`occurred_at`"),
        (_raw(occurred_at="2025-01-06T09:30:00"), ErrorClass.NAIVE_TIMESTAMP, "timezone"),
        (_raw(schema_version="2"), ErrorClass.UNSUPPORTED_VERSION, "`schema_version`"),
        (_raw(schema_version=1), ErrorClass.UNSUPPORTED_VERSION, "got a number"),
        (b'{"user_id": "caf\xe9"}', ErrorClass.NOT_UTF8, "byte 0xe9 at position 16"),
        (b"\xff\xfe{}", ErrorClass.NOT_UTF8, "not UTF-8"),
    ],
)
def test_each_malformed_kind_gets_its_class_and_a_reason(
    raw: bytes, error_class: ErrorClass, reason_has: str
) -> None:
    verdict = _reject(raw)
    assert verdict.error_class is error_class, verdict
    assert reason_has in verdict.reason, verdict.reason


def test_oversized_is_checked_first_and_says_the_limit() -> None:
    raw = _raw(padding="x" * DEFAULT_MAX_EVENT_BYTES)
    verdict = _reject(raw)
    assert verdict.error_class is ErrorClass.OVERSIZED
    assert verdict.reason == f"payload is {len(raw)} bytes; the limit is {DEFAULT_MAX_EVENT_BYTES}"
    assert isinstance(decode_event(raw, max_bytes=len(raw)), ClickEvent)


def test_unknown_fields_are_dropped() -> None:
    event = decode_event(_raw(user_agent="Mozilla/5.0", tracking={"a": 1}))
    assert isinstance(event, ClickEvent)
    assert b"user_agent" not in event.to_json() and b"tracking" not in event.to_json()
    assert not hasattr(event, "user_agent")


def test_search_needs_no_item_and_category_is_optional() -> None:
    bare = decode_event(_raw(event_type="search", item_id=..., category_id=..., price=...))
    assert isinstance(bare, ClickEvent)
    assert (bare.item_id, bare.category_id, bare.price) == (None, None, None)
    scoped = decode_event(_raw(event_type="search", item_id=..., category_id="c0101"))
    assert isinstance(scoped, ClickEvent) and scoped.category_id == "c0101"


def test_integral_float_quantity_is_an_integer_like_in_the_schema() -> None:
    event = decode_event(_raw(quantity=3.0))
    assert isinstance(event, ClickEvent) and event.quantity == 3
    half = _reject(_raw(quantity=2.5))
    assert half.error_class is ErrorClass.WRONG_TYPE and "`quantity`" in half.reason


def _dlq_validator() -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / "clickstream-dlq.v2.json").read_text())
    return jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


@pytest.mark.parametrize(
    ("raw", "encoding"),
    [
        (_raw(price=-3.0), "utf-8"),
        (b'{"note": "caf\xe9 cr\xe8me"}', "base64"),
        (b"\x00\xff\x80 binary \n tail", "base64"),
        ('{"naïve": "日本"}'.encode(), "utf-8"),
    ],
)
def test_dead_letter_keeps_the_bytes_exactly_and_matches_its_schema(
    raw: bytes, encoding: str
) -> None:
    rejection = _reject(raw)
    letter = dead_letter(raw, rejection, topic="clickstream.v1", partition=3, offset=1_234)
    assert letter.payload_encoding == encoding
    assert letter.raw_payload() == raw
    if encoding == "base64":
        assert base64.b64decode(letter.payload) == raw
    else:
        assert letter.payload == raw.decode("utf-8")
    assert (letter.error_class, letter.reason) == (rejection.error_class, rejection.reason)
    assert (letter.source_topic, letter.source_partition, letter.source_offset) == (
        "clickstream.v1", 3, 1_234,
    )  # fmt: skip
    wire = json.loads(letter.model_dump_json())
    _dlq_validator().validate(wire)
    assert wire["received_at"].endswith("Z") or "+" in wire["received_at"]
