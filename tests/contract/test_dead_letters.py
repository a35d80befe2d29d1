"""Every dead letter fits the producer's request limit and the DLQ schema, whatever the input:
the largest payload a producer can send, of the characters JSON escapes the most."""

from __future__ import annotations

import hashlib
import json

import orjson
import pytest
from jsonschema import Draft202012Validator, FormatChecker

from streams.contracts.dead_letters import MAX_DLQ_PAYLOAD_BYTES, dead_letter, encode_dead_letter
from streams.contracts.events import ErrorClass, Rejection
from tests.conftest import SCHEMAS

PRODUCER_LIMIT = 1_000_000  # Kafka's default max.request.size (and the worker's producer's)
VALIDATOR = Draft202012Validator(
    json.loads((SCHEMAS / "clickstream-dlq.v2.json").read_text()), format_checker=FormatChecker()
)
REASON = Rejection(ErrorClass.OVERSIZED, "x" * 10_000)  # longer than any real reason


@pytest.mark.parametrize(
    "payload",
    [
        b"\x01" * 1_048_576,  # control characters: six characters each in JSON
        b'"' * 1_048_576,  # quotes: two each
        b"\xff" * 1_048_576,  # not UTF-8: base64
        ("é" * 500_000).encode(),  # multi-byte UTF-8, cut in the middle of a character
        None,  # a tombstone
    ],
    ids=["control", "quotes", "binary", "utf8-cut", "null"],
)
def test_the_dead_letter_of_the_largest_input_fits_and_validates(payload: bytes | None) -> None:
    letter = dead_letter(payload, REASON, topic="clickstream.v1", partition=3, offset=7)
    wire = encode_dead_letter(letter)
    assert len(wire) < PRODUCER_LIMIT - 4_096  # room for the key and the record overhead
    VALIDATOR.validate(orjson.loads(wire))
    assert len(letter.reason) <= 2_048
    if payload is None:
        assert letter.raw_payload() is None and letter.payload_encoding == "null"
        return
    assert letter.payload_truncated and letter.payload_bytes == len(payload)
    assert letter.payload_sha256 == hashlib.sha256(payload).hexdigest()
    kept = letter.raw_payload()
    assert kept is not None and payload.startswith(kept)
    assert MAX_DLQ_PAYLOAD_BYTES - 3 <= len(kept) <= MAX_DLQ_PAYLOAD_BYTES
