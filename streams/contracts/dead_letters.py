"""clickstream.dlq: the dead-letter record (agrees with ``schemas/clickstream-dlq.v1.json``) and
its encoding. Every rejected event lands there with its bytes kept exactly and its reason."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Annotated, Final, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from streams.contracts.events import ErrorClass, Rejection

DLQ_SCHEMA_VERSION: Final = "1"


class DeadLetter(BaseModel):
    """One clickstream.dlq record: the raw payload kept exactly, and why it was rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal["1"] = DLQ_SCHEMA_VERSION
    payload: str
    payload_encoding: Literal["utf-8", "base64"]
    source_topic: Annotated[str, Field(min_length=1)]
    source_partition: Annotated[int, Field(ge=0)]
    source_offset: Annotated[int, Field(ge=0)]
    error_class: ErrorClass
    reason: Annotated[str, Field(min_length=1)]
    received_at: AwareDatetime

    def raw_payload(self) -> bytes:
        """The original bytes, exactly as they arrived."""
        if self.payload_encoding == "base64":
            return base64.b64decode(self.payload)
        return self.payload.encode("utf-8")


def dead_letter(
    raw: bytes,
    rejection: Rejection,
    *,
    topic: str,
    partition: int,
    offset: int,
    received_at: datetime | None = None,
) -> DeadLetter:
    """The DLQ record for a rejected payload, keeping its bytes exactly."""
    encoding: Literal["utf-8", "base64"]
    try:
        payload, encoding = raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        payload, encoding = base64.b64encode(raw).decode("ascii"), "base64"
    return DeadLetter(
        payload=payload,
        payload_encoding=encoding,
        source_topic=topic,
        source_partition=partition,
        source_offset=offset,
        error_class=rejection.error_class,
        reason=rejection.reason,
        received_at=received_at or datetime.now(UTC),
    )


def encode_dead_letter(letter: DeadLetter) -> bytes:
    """The DLQ record's wire form."""
    return letter.model_dump_json().encode()
