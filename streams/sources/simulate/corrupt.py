"""Malformed payloads of every kind that ``streams.contracts.events.decode_event`` classifies.

Each bad payload is derived from a real simulated event and has exactly one problem, so its
expected ``ErrorClass`` is known. None contains a newline byte (a JSONL file stays one payload
per line, even for the non-UTF-8 ones).
"""

from __future__ import annotations

import random
from enum import StrEnum
from typing import Any

import orjson

from streams.contracts.events import ErrorClass


class BadKind(StrEnum):
    """What is wrong with an injected payload (finer than ``ErrorClass``)."""

    MALFORMED_JSON = "malformed_json"
    NOT_AN_OBJECT = "not_an_object"
    WRONG_TYPE = "wrong_type"
    MISSING_FIELD = "missing_field"
    UNKNOWN_EVENT_TYPE = "unknown_event_type"
    NEGATIVE_PRICE = "negative_price"
    NAIVE_TIMESTAMP = "naive_timestamp"
    OVERSIZED = "oversized"
    NOT_UTF8 = "not_utf8"
    UNSUPPORTED_VERSION = "unsupported_version"


EXPECTED_CLASS: dict[BadKind, ErrorClass] = {
    BadKind.MALFORMED_JSON: ErrorClass.MALFORMED_JSON,
    BadKind.NOT_AN_OBJECT: ErrorClass.NOT_AN_OBJECT,
    BadKind.WRONG_TYPE: ErrorClass.WRONG_TYPE,
    BadKind.MISSING_FIELD: ErrorClass.MISSING_FIELD,
    BadKind.UNKNOWN_EVENT_TYPE: ErrorClass.INVALID_VALUE,
    BadKind.NEGATIVE_PRICE: ErrorClass.INVALID_VALUE,
    BadKind.NAIVE_TIMESTAMP: ErrorClass.NAIVE_TIMESTAMP,
    BadKind.OVERSIZED: ErrorClass.OVERSIZED,
    BadKind.NOT_UTF8: ErrorClass.NOT_UTF8,
    BadKind.UNSUPPORTED_VERSION: ErrorClass.UNSUPPORTED_VERSION,
}
BAD_KINDS = tuple(BadKind)


def _dump(obj: Any) -> bytes:
    return orjson.dumps(obj)


def corrupt(event: dict[str, Any], kind: BadKind, rng: random.Random, max_bytes: int) -> bytes:
    """A payload with exactly one problem of ``kind``, built from a valid ``event`` dict."""
    ev = dict(event)
    if kind is BadKind.MALFORMED_JSON:
        text = _dump(ev)
        variant = rng.randrange(3)
        if variant == 0:  # cut off mid-stream: every proper prefix of an object is invalid
            return text[: rng.randrange(1, len(text) - 1)]
        if variant == 1:  # trailing comma
            return text[:-1] + b",}"
        return text.replace(b'"event_type"', b"event_type", 1)  # unquoted key
    if kind is BadKind.NOT_AN_OBJECT:
        variant = rng.randrange(3)
        if variant == 0:
            return _dump(list(ev.values()))
        if variant == 1:
            return _dump(_dump(ev).decode())  # the event, double-encoded as a JSON string
        return b"null"
    if kind is BadKind.WRONG_TYPE:
        options = ["user_id", "occurred_at", "event_id"]
        options += [k for k in ("price", "quantity") if k in ev]
        field = rng.choice(options)
        if field == "user_id":
            ev["user_id"] = int("".join(c for c in ev["user_id"] if c.isdigit()) or 0)
        elif field == "occurred_at":
            ev["occurred_at"] = 1_736_121_600
        elif field == "event_id":
            ev["event_id"] = [ev["event_id"]]
        else:
            ev[field] = str(ev[field])
        return _dump(ev)
    if kind is BadKind.MISSING_FIELD:
        options = ["schema_version", "event_id", "user_id", "event_type", "occurred_at"]
        if ev["event_type"] != "search":
            options += ["item_id", "category_id"]
        del ev[rng.choice(options)]
        return _dump(ev)
    if kind is BadKind.UNKNOWN_EVENT_TYPE:
        ev["event_type"] = rng.choice(("checkout", "page_view", "wishlist_add", "VIEW"))
        return _dump(ev)
    if kind is BadKind.NEGATIVE_PRICE:
        ev["price"] = -abs(ev.get("price") or 9.99)
        return _dump(ev)
    if kind is BadKind.NAIVE_TIMESTAMP:
        ev["occurred_at"] = ev["occurred_at"].rstrip("Z")
        return _dump(ev)
    if kind is BadKind.OVERSIZED:
        text = _dump(ev)
        ev["padding"] = "x" * (max_bytes - len(text) + rng.randrange(16, 4096))
        return _dump(ev)
    if kind is BadKind.NOT_UTF8:
        variant = rng.randrange(3)
        if variant == 0:  # a producer that encoded text as Latin-1
            ev["note"] = "café crème"
            return _dump(ev).decode().encode("latin-1")
        text = _dump(ev)
        stray = b"\xff" if variant == 1 else b"\xe2\x82"  # invalid byte / cut multi-byte char
        at = text.index(b'"user_id":"') + len(b'"user_id":"')
        return text[:at] + stray + text[at:]
    if kind is BadKind.UNSUPPORTED_VERSION:
        ev["schema_version"] = rng.choice(("2", "1.1", "v1", 2))
        return _dump(ev)
    raise AssertionError(f"unhandled bad kind {kind!r}")  # pragma: no cover
