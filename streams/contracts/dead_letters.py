"""clickstream.dlq.v2: the dead-letter record (agrees with ``schemas/clickstream-dlq.v2.json``;
v1 is frozen) and its encoding. Every rejected record lands there with its payload and reason,
and no raw identifier: the worker pseudonymises the payload (``streams.privacy.redact``) and
the key before it builds the record.

A dead letter always fits the producer's request limit: the payload kept is at most the first
``MAX_DLQ_PAYLOAD_BYTES`` bytes (with the whole payload's size and sha256, so a cut payload can
still be matched to its source record), and the reason at most ``MAX_REASON_CHARS`` characters.
The worst case, 64 KiB of control characters JSON-escaped to six characters each, is about
390 KB, well under Kafka's default 1 MB (a contract test encodes it).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Final, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from streams.contracts.events import ErrorClass, Rejection

DLQ_SCHEMA_VERSION: Final = "2"
MAX_DLQ_PAYLOAD_BYTES: Final = 65_536
MAX_REASON_CHARS: Final = 2_048

PayloadEncoding = Literal["utf-8", "base64", "null"]


class DeadLetter(BaseModel):
    """One clickstream.dlq record: the raw payload (or its first 64 KiB), and why it was
    rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal["2"] = DLQ_SCHEMA_VERSION
    payload: str
    payload_encoding: PayloadEncoding
    payload_bytes: Annotated[int, Field(ge=0)] | None = None
    payload_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    payload_truncated: bool = False
    payload_pseudonymised: bool = False
    source_topic: Annotated[str, Field(min_length=1)]
    source_partition: Annotated[int, Field(ge=0)]
    source_offset: Annotated[int, Field(ge=0)]
    error_class: ErrorClass
    reason: Annotated[str, Field(min_length=1, max_length=MAX_REASON_CHARS)]
    received_at: AwareDatetime

    def raw_payload(self) -> bytes | None:
        """The bytes kept (the original, unless ``payload_truncated``); None for no value."""
        if self.payload_encoding == "null":
            return None
        if self.payload_encoding == "base64":
            return base64.b64decode(self.payload)
        return self.payload.encode("utf-8")


def _text(raw: bytes, *, cut: bool) -> tuple[str, PayloadEncoding]:
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError as exc:
        if cut and exc.reason == "unexpected end of data":
            # The cut split the last character: keep the text before it.
            return raw[: exc.start].decode("utf-8"), "utf-8"
        return base64.b64encode(raw).decode("ascii"), "base64"


def dead_letter(
    raw: bytes | None,
    rejection: Rejection,
    *,
    topic: str,
    partition: int,
    offset: int,
    received_at: datetime | None = None,
    stored: bytes | None = None,
) -> DeadLetter:
    """The DLQ record for a rejected record: its bytes (cut at 64 KiB) and its reason.

    ``stored``: the payload to keep instead of ``raw`` (its pseudonymised form); the size and
    sha256 are still those of ``raw``."""
    reason = rejection.reason
    if len(reason) > MAX_REASON_CHARS:
        reason = reason[: MAX_REASON_CHARS - 3] + "..."
    common = {
        "source_topic": topic,
        "source_partition": partition,
        "source_offset": offset,
        "error_class": rejection.error_class,
        "reason": reason,
        "received_at": received_at or datetime.now(UTC),
    }
    if raw is None:
        return DeadLetter(payload="", payload_encoding="null", payload_bytes=0, **common)
    body = raw if stored is None else stored
    kept = body[:MAX_DLQ_PAYLOAD_BYTES]
    text, encoding = _text(kept, cut=len(kept) < len(body))
    return DeadLetter(
        payload=text,
        payload_encoding=encoding,
        payload_bytes=len(raw),
        payload_sha256=hashlib.sha256(raw).hexdigest(),
        payload_truncated=len(kept) < len(body),
        payload_pseudonymised=stored is not None and stored != raw,
        **common,
    )


def dead_letter_key(key: bytes | None, pseudonym: Callable[[str], str]) -> bytes | None:
    """The DLQ record's key: the pseudonym of the source key (an operator with the keys can
    find a shopper's dead letters; nobody else learns the id)."""
    if key is None:
        return None
    return pseudonym(key.decode("utf-8", errors="surrogateescape")).encode()


def encode_dead_letter(letter: DeadLetter) -> bytes:
    """The DLQ record's wire form (``None`` fields left out)."""
    return letter.model_dump_json(exclude_none=True).encode()
