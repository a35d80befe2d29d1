"""Dead letters keep no raw identifier: the payload's identifier fields, and every occurrence of
the source key or of those identifiers anywhere, become pseudonyms."""

from __future__ import annotations

import orjson

from streams.privacy.redact import redact_payload


def fake(value: str) -> str:
    return f"p1.k.{len(value):032d}"


def test_identifier_fields_and_every_other_occurrence_are_pseudonymised() -> None:
    raw = orjson.dumps(
        {
            "schema_version": "1",
            "event_id": "canary-e-0042",
            "user_id": "canary-u-0042",
            "session_id": "canary-u-0042-s1",
            "item_id": "canary-u-0042",  # an identifier where it does not belong
            "price": "bought by canary-u-0042",
            "event_type": "view",
        }
    )
    out, replaced = redact_payload(raw, b"canary-u-0042", fake)
    assert replaced and b"canary" not in out
    doc = orjson.loads(out)
    assert doc["user_id"] == fake("canary-u-0042") and doc["event_type"] == "view"
    assert doc["session_id"] == fake("canary-u-0042-s1")


def test_a_payload_that_is_not_json_has_the_key_replaced() -> None:
    raw = b"\xff\xfe garbage around canary-u-7 and canary-u-7 again"
    out, replaced = redact_payload(raw, b"canary-u-7", fake)
    assert replaced and b"canary-u-7" not in out and out.startswith(b"\xff\xfe garbage")


def test_short_values_are_left_alone_and_nothing_to_hide_changes_nothing() -> None:
    raw = b'{"schema_version":"1","user_id":"u1"}'
    out, replaced = redact_payload(raw, b"u1", fake)
    assert replaced
    assert orjson.loads(out)["user_id"] == fake("u1") and orjson.loads(out)["schema_version"] == "1"
    assert redact_payload(b"[1, 2, 3]", None, fake) == (b"[1, 2, 3]", False)
