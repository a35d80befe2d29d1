"""Property tests of decode_event against the clickstream.v1 schema.

- It never raises, whatever the bytes or the JSON.
- It never accepts what the schema rejects (schema-valid instances, then mutated ones).
- Schema-valid instances are accepted (except a lone surrogate, which is not Unicode).
- Valid events round-trip: ``decode_event(e.to_json()) == e``.
"""

from __future__ import annotations

import json
import math
from typing import Any

import jsonschema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

from streams.contracts.events import ClickEvent, ErrorClass, Rejection, decode_event
from tests.conftest import SCHEMAS

SCHEMA = json.loads((SCHEMAS / "clickstream.v1.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(
    SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
)
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


def _property(name: str) -> st.SearchStrategy[Any]:
    # Each property's own schema, with the defs it may use, drives hypothesis-jsonschema.
    return from_schema({"$schema": SCHEMA["$schema"], **SCHEMA["properties"][name]})


@st.composite
def _valid_instances(draw: st.DrawFn) -> dict[str, Any]:
    """Schema-valid objects assembled property by property.

    ``from_schema(SCHEMA)`` itself cannot draw objects with hypothesis >= 6.1xx
    (hypothesis-jsonschema 0.23.1 calls a removed internal), so the object level is built
    here from the schema's own ``required``, ``properties`` and ``if``/``then``; each value
    still comes from ``from_schema`` of its property.
    """
    required = set(SCHEMA["required"])
    instance = {name: draw(_property(name)) for name in sorted(required)}
    if instance["event_type"] != "search":
        required |= set(SCHEMA["then"]["required"])
    for name in sorted(SCHEMA["properties"]):
        if name in instance:
            continue
        if name in required or draw(st.booleans()):
            value = draw(_property(name))
            if name in required and value is None:
                value = draw(
                    from_schema(
                        SCHEMA["then"]["properties"][name] | {"minLength": 1, "maxLength": 128}
                    )
                )
            instance[name] = value
    assert VALIDATOR.is_valid(instance), instance  # the builder itself follows the schema
    return instance


valid_instances = _valid_instances()


def _schema_accepts(raw: bytes) -> bool:
    """What the schema says about these bytes, parsed as strict JSON (no NaN, no Infinity)."""
    try:
        text = raw.decode("utf-8")
        instance = json.loads(text, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError):
        return False
    if _non_finite(instance):
        return False  # 1e400 parses to inf in Python; JSON has no infinity
    return VALIDATOR.is_valid(instance)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_non_finite(v) for v in value.values())
    if isinstance(value, list):
        return any(_non_finite(v) for v in value)
    return False


def _has_lone_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(v) for v in value)
    return False


def _check(raw: bytes) -> ClickEvent | Rejection:
    verdict = decode_event(raw)  # must not raise
    assert isinstance(verdict, ClickEvent | Rejection)
    if isinstance(verdict, Rejection):
        assert isinstance(verdict.error_class, ErrorClass) and verdict.reason
    else:
        assert _schema_accepts(raw), f"decoder accepted what the schema rejects: {raw!r}"
    return verdict


@FUZZ
@given(st.binary(max_size=600))
def test_never_raises_on_arbitrary_bytes(raw: bytes) -> None:
    _check(raw)


@FUZZ
@given(json_values)
def test_never_raises_on_arbitrary_json(value: Any) -> None:
    _check(json.dumps(value).encode())


@FUZZ
@given(valid_instances)
def test_schema_valid_instances_are_accepted_and_round_trip(instance: dict[str, Any]) -> None:
    raw = json.dumps(instance).encode()
    verdict = _check(raw)
    if _has_lone_surrogate(instance):
        assert isinstance(verdict, Rejection)  # not Unicode text, whatever JSON allows
        return
    assert isinstance(verdict, ClickEvent), (instance, verdict)
    assert decode_event(verdict.to_json()) == verdict
    assert verdict.event_type.value == instance["event_type"]
    assert verdict.user_id == instance["user_id"]


FIELDS = sorted(SCHEMA["properties"])


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A schema-valid instance with one to three edits: drop, replace or add a field."""
    instance = dict(draw(valid_instances))
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["drop", "replace", "add", "retype"]))
        field = draw(st.sampled_from(FIELDS))
        if action == "drop":
            instance.pop(field, None)
        elif action == "replace":
            instance[field] = draw(json_values)
        elif action == "retype" and field in instance:
            value = instance[field]
            instance[field] = draw(
                st.sampled_from([str(value), [value], {"v": value}, None, 0, -1, 1.5, True])
            )
        else:
            instance[draw(st.text(max_size=10))] = draw(json_values)
    return json.dumps(instance).encode()


@FUZZ
@given(mutated())
def test_never_accepts_a_mutation_the_schema_rejects(raw: bytes) -> None:
    _check(raw)


@FUZZ
@given(mutated(), st.integers(min_value=0, max_value=200))
def test_cut_or_corrupted_bytes_are_rejected_not_raised(raw: bytes, cut: int) -> None:
    _check(raw[: max(0, len(raw) - cut)])
    _check(raw[:cut] + b"\xff" + raw[cut:])
