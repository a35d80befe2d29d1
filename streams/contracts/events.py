"""clickstream.v1: the typed event, in agreement with ``schemas/clickstream.v1.json`` (a contract
test holds them together), and its decoder.

``decode_event`` is the one place where bytes become a ``ClickEvent``. It never raises: a bad
payload becomes a ``Rejection`` whose ``error_class`` is a low-cardinality label and whose
``reason`` names the field, what was expected and what came.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Final, Literal

import msgspec
from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

SCHEMA_VERSION: Final = "1"
DEFAULT_MAX_EVENT_BYTES = 65_536
MAX_PRICE: Final = 1e9  # the schema's maximum: a larger price is a producer bug, not a sale

Id = Annotated[str, Field(min_length=1, max_length=128)]

# RFC 3339 date-time, the schema's `format: date-time`. The offset is optional here only so
# that a missing one is reported as a naive timestamp by the datetime validator below.
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})?"
)


def _rfc3339_syntax(value: Any) -> Any:
    # pydantic alone also accepts "2025-01-06 10:00Z", "+0000" offsets and comma fractions,
    # which the schema's date-time format rejects; the decoder must not be more lenient.
    # Only text (or, from Python, a datetime) gets through; the lax parser after this check
    # would otherwise take unix numbers too.
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        raise PydanticCustomError("datetime_type", "Input should be an RFC 3339 date-time string")
    if not _RFC3339.fullmatch(value):
        raise PydanticCustomError(
            "rfc3339_syntax",
            "Input should be an RFC 3339 date-time with a timezone, like 2025-01-06T09:30:00Z",
        )
    return value


def _integral_float(value: Any) -> Any:
    # JSON Schema's "integer" accepts 2.0 (a number with zero fraction); so does the decoder.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# Lax after the check: a function validator hands the inner one a Python str, which a strict
# datetime validator would refuse.
Rfc3339Datetime = Annotated[AwareDatetime, BeforeValidator(_rfc3339_syntax), Field(strict=False)]


class EventType(StrEnum):
    VIEW = "view"
    CLICK = "click"
    SEARCH = "search"
    ADD_TO_CART = "add_to_cart"
    REMOVE_FROM_CART = "remove_from_cart"
    FAVORITE = "favorite"
    PURCHASE = "purchase"


class ErrorClass(StrEnum):
    """Why an event was rejected. Also the ``reason`` label of the DLQ metrics."""

    OVERSIZED = "oversized"
    NOT_UTF8 = "not_utf8"
    MALFORMED_JSON = "malformed_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    INVALID_VALUE = "invalid_value"
    NAIVE_TIMESTAMP = "naive_timestamp"
    UNSUPPORTED_VERSION = "unsupported_version"
    # Poison inputs the worker checks beyond the schema, and failures of its own stages:
    NULL_VALUE = "null_value"  # a record with no value (a tombstone)
    KEY_MISMATCH = "key_mismatch"  # the record key is not the payload's user_id
    CLOCK_SKEW = "clock_skew"  # occurred_at too far after the record's Kafka timestamp
    PROCESSING_ERROR = "processing_error"  # a stage failed on this record (the reason says which)


# The classes ``decode_event`` returns (a payload's own problems). The others are found by the
# worker from the record around the payload, or by its stages.
PAYLOAD_ERROR_CLASSES: Final = frozenset(ErrorClass) - {
    ErrorClass.NULL_VALUE,
    ErrorClass.KEY_MISMATCH,
    ErrorClass.CLOCK_SKEW,
    ErrorClass.PROCESSING_ERROR,
}


class ClickEventModel(BaseModel):
    """clickstream.v1 as a pydantic model: the reference validator (the contract test holds it
    to the JSON Schema) and the decoder of every payload the fast path does not take, whose
    errors become the rejection reasons. Unknown extra fields are dropped."""

    model_config = ConfigDict(frozen=True, extra="ignore", strict=True)

    schema_version: Literal["1"]
    event_id: Id
    user_id: Id
    session_id: Id | None = None
    event_type: EventType
    item_id: Id | None = None
    category_id: Id | None = None
    price: Annotated[float, Field(ge=0, le=MAX_PRICE, allow_inf_nan=False)] | None = None
    quantity: Annotated[int, Field(ge=1, le=10_000), BeforeValidator(_integral_float)] | None = None
    occurred_at: Rfc3339Datetime

    @model_validator(mode="after")
    def _item_required_unless_search(self) -> ClickEventModel:
        if self.event_type is not EventType.SEARCH:
            for name in ("item_id", "category_id"):
                if getattr(self, name) is None:
                    raise PydanticCustomError(
                        "required_for_event_type",
                        "field `{field}` is required for event_type '{event_type}'",
                        {"field": name, "event_type": self.event_type.value},
                    )
        return self

    def event(self) -> ClickEvent:
        """The runtime event with these values."""
        return ClickEvent(
            schema_version="1",
            event_id=self.event_id,
            user_id=self.user_id,
            session_id=self.session_id,
            event_type=self.event_type,
            item_id=self.item_id,
            category_id=self.category_id,
            price=self.price,
            quantity=self.quantity,
            occurred_at=self.occurred_at,
        )


_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class ClickEvent(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One clickstream.v1 event, as the worker passes it around (a msgspec struct: ten times
    cheaper to decode than the pydantic model). Only ``decode_event`` makes them from bytes;
    the field order is the wire order of ``to_json``."""

    schema_version: Literal["1"]
    event_id: _Id
    user_id: _Id
    session_id: _Id | None = None
    event_type: EventType
    item_id: _Id | None = None
    category_id: _Id | None = None
    price: Annotated[float, msgspec.Meta(ge=0, le=MAX_PRICE)] | None = None
    quantity: Annotated[int, msgspec.Meta(ge=1, le=10_000)] | None = None
    occurred_at: datetime

    @property
    def ts(self) -> float:
        """Event time as unix seconds (what the feature code works in)."""
        return self.occurred_at.timestamp()

    def to_json(self) -> bytes:
        """The canonical wire form (None fields left out)."""
        return _ENCODER.encode(self)


_ENCODER = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class Rejection:
    """A payload that is not a valid clickstream.v1 event, and why."""

    error_class: ErrorClass
    reason: str


# Pydantic error types -> our error classes. Anything not listed is an invalid value.
_TYPE_ERRORS = frozenset(
    {
        "string_type",
        "int_type",
        "float_type",
        "bool_type",
        "datetime_type",
        "enum_type",
        "none_required",
        "int_from_float",
    }
)


def _classify(err: Any) -> ErrorClass:
    kind = err["type"]
    loc = err["loc"]
    if kind == "json_invalid":
        return ErrorClass.MALFORMED_JSON
    if kind in {"model_type", "model_attributes_type"} and not loc:
        return ErrorClass.NOT_AN_OBJECT
    if kind in {"missing", "required_for_event_type"}:
        return ErrorClass.MISSING_FIELD
    if kind == "timezone_aware":
        return ErrorClass.NAIVE_TIMESTAMP
    if loc and loc[0] == "schema_version":
        return ErrorClass.UNSUPPORTED_VERSION
    if kind in _TYPE_ERRORS:
        return ErrorClass.WRONG_TYPE
    return ErrorClass.INVALID_VALUE


def _describe(err: Any) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    where = f"field `{loc}`: " if loc else ""
    got = err.get("input")
    if err["type"] in {"missing", "json_invalid", "required_for_event_type"} or isinstance(
        got, dict | list
    ):
        return f"{where}{err['msg']}"
    return f"{where}{err['msg']} (got {_kind(got)})"


def _kind(value: Any) -> str:
    """What kind of value came, never the value itself: reasons end up in the dead-letter
    topic, which must hold no identifiers."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return f"a string of {len(value)} characters"
    return type(value).__name__


class _Wire(msgspec.Struct, frozen=True):
    """The common shape of a valid event, for msgspec's decoder: at least as strict as
    ``ClickEventModel`` (anything it lets through, the model accepts too, with the same values;
    a differential fuzz test holds the two together). Whatever it refuses goes to the model,
    which gives the verdict and the reason."""

    schema_version: Literal["1"]
    event_id: _Id
    user_id: _Id
    event_type: EventType
    occurred_at: Annotated[str, msgspec.Meta(max_length=40)]
    session_id: _Id | None = None
    item_id: _Id | None = None
    category_id: _Id | None = None
    price: Annotated[float, msgspec.Meta(ge=0, le=MAX_PRICE)] | None = None
    quantity: Annotated[int, msgspec.Meta(ge=1, le=10_000)] | None = None


_WIRE_DECODER = msgspec.json.Decoder(_Wire)
# The RFC 3339 shape the fast path takes: Z or a +hh:mm offset, at most microseconds.
_FAST_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(Z|[+-][0-9]{2}:[0-9]{2})"
)


def _fast(raw: bytes) -> ClickEvent | None:
    """The event, when the payload has the common valid shape; None sends it the slow way."""
    if not raw.isascii():
        try:  # msgspec does not check the UTF-8 of what it skips (unknown fields)
            raw.decode("utf-8")
        except UnicodeDecodeError:
            return None
    try:
        wire = _WIRE_DECODER.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    if wire.event_type is not EventType.SEARCH and (
        wire.item_id is None or wire.category_id is None
    ):
        return None
    if not _FAST_TIME.fullmatch(wire.occurred_at):
        return None
    try:
        occurred_at = datetime.fromisoformat(wire.occurred_at)
    except ValueError:
        return None
    return ClickEvent(
        schema_version="1",
        event_id=wire.event_id,
        user_id=wire.user_id,
        session_id=wire.session_id,
        event_type=wire.event_type,
        item_id=wire.item_id,
        category_id=wire.category_id,
        price=wire.price,
        quantity=wire.quantity,
        occurred_at=occurred_at,
    )


def decode_event(raw: bytes, max_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> ClickEvent | Rejection:
    """Turn raw bytes into a ``ClickEvent``, or a ``Rejection`` that says exactly what is wrong.

    Never raises. The order of checks matches the cost: size, then msgspec's decoder for the
    common valid shape, and for everything else encoding, JSON and the pydantic model, whose
    verdict and reason stand.
    """
    if len(raw) <= max_bytes:
        event = _fast(raw)
        if event is not None:
            return event
    return decode_event_strict(raw, max_bytes)


def decode_event_strict(
    raw: bytes, max_bytes: int = DEFAULT_MAX_EVENT_BYTES
) -> ClickEvent | Rejection:
    """``decode_event`` through the pydantic model alone (the reference the fast path is held
    to, and the path of every rejection)."""
    if len(raw) > max_bytes:
        return Rejection(
            ErrorClass.OVERSIZED, f"payload is {len(raw)} bytes; the limit is {max_bytes}"
        )
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection(
            ErrorClass.NOT_UTF8,
            f"payload is not UTF-8: byte 0x{raw[exc.start]:02x} at position {exc.start}",
        )
    try:
        return ClickEventModel.model_validate_json(raw).event()
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        return Rejection(_classify(errors[0]), "; ".join(_describe(e) for e in errors))
    except (ValueError, RecursionError) as exc:  # pragma: no cover - defensive: never raise
        return Rejection(ErrorClass.MALFORMED_JSON, f"payload is not valid JSON: {exc}")
