"""The JSON Schemas in schemas/ are the contract; the runtime models must say the same thing.

Field names, required sets, enums and constraints are compared in both directions (schema
file against the model's own generated schema), and example payloads must be accepted or
rejected identically by jsonschema (with date-time format checking) and by decode_event.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import orjson
import pytest
from pydantic import BaseModel

from streams.contracts.dead_letters import DeadLetter
from streams.contracts.events import (
    ClickEvent,
    ClickEventModel,
    ErrorClass,
    EventType,
    Rejection,
    decode_event,
)
from streams.contracts.scores import PurchaseScore, TopCategory
from tests.conftest import SCHEMAS

FILES = {
    "clickstream.v1.json": ClickEventModel,
    "purchase-scores.v1.json": PurchaseScore,
    "clickstream-dlq.v2.json": DeadLetter,
}
CONSTRAINTS = ("minLength", "maxLength", "minimum", "maximum", "maxItems", "const", "enum")


def _schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / name).read_text())


def _validator(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(
        _schema(name), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


def _flatten(prop: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """One property's constraints, with refs resolved and the null branch of anyOf dropped."""
    if "$ref" in prop:
        prop = {
            **defs[prop["$ref"].rsplit("/", 1)[1]],
            **{k: v for k, v in prop.items() if k != "$ref"},
        }
    for branch in prop.get("anyOf", []):
        if branch.get("type") != "null":
            prop = {**prop, **_flatten(branch, defs)}
    return {k: prop[k] for k in CONSTRAINTS if k in prop}


def _types(prop: dict[str, Any], defs: dict[str, Any]) -> set[str]:
    if "$ref" in prop:
        return _types(defs[prop["$ref"].rsplit("/", 1)[1]], defs)
    if "anyOf" in prop:
        return set().union(*(_types(b, defs) for b in prop["anyOf"]))
    kind = prop.get("type")
    if kind is None:
        return {"string"} if "const" in prop or "enum" in prop else set()
    return set(kind) if isinstance(kind, list) else {kind}


@pytest.mark.parametrize("name", sorted(FILES))
def test_schema_files_are_valid_draft_2020_12(name: str) -> None:
    schema = _schema(name)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize(("name", "model"), sorted(FILES.items()))
def test_fields_types_and_constraints_agree(name: str, model: type[BaseModel]) -> None:
    contract = _schema(name)
    runtime = model.model_json_schema()
    defs = runtime.get("$defs", {})
    assert set(contract["properties"]) == set(runtime["properties"]) == set(model.model_fields)
    for field, prop in contract["properties"].items():
        mine = runtime["properties"][field]
        assert _flatten(prop, {}) == _flatten(mine, defs), field
        assert _types(prop, {}) - {"null"} == _types(mine, defs) - {"null"}, field
        assert ("null" in _types(prop, {})) == ("null" in _types(mine, defs)), field
        if prop.get("format") == "date-time":
            assert _flatten(mine, defs) == {} and mine.get("format") == "date-time", field
    forbid = model.model_config.get("extra") == "forbid"
    assert forbid == (contract.get("additionalProperties") is False)


def test_required_sets_agree() -> None:
    # ClickEventModel: what the model cannot default is what the schema requires.
    click = {n for n, f in ClickEventModel.model_fields.items() if f.is_required()}
    assert click | {"schema_version"} == set(_schema("clickstream.v1.json")["required"])
    assert _schema("clickstream.v1.json")["then"]["required"] == ["item_id", "category_id"]
    # Outgoing records always carry every field (schema_version has a default but is written),
    # except the DLQ's payload_* details, which a dead letter carries when it has a payload.
    assert set(_schema("purchase-scores.v1.json")["required"]) == set(PurchaseScore.model_fields)
    optional = {"payload_bytes", "payload_sha256", "payload_truncated", "payload_pseudonymised"}
    assert (
        set(_schema("clickstream-dlq.v2.json")["required"])
        == set(DeadLetter.model_fields) - optional
    )
    item = _schema("purchase-scores.v1.json")["properties"]["top_categories"]["items"]
    assert set(item["required"]) == set(TopCategory.model_fields)
    assert (
        item["additionalProperties"] is False and TopCategory.model_config.get("extra") == "forbid"
    )


def test_enums_agree() -> None:
    click = _schema("clickstream.v1.json")
    assert click["properties"]["event_type"]["enum"] == [t.value for t in EventType]
    assert click["properties"]["schema_version"]["const"] == "1"
    dlq = _schema("clickstream-dlq.v2.json")
    assert dlq["properties"]["error_class"]["enum"] == [c.value for c in ErrorClass]
    assert dlq["properties"]["payload_encoding"]["enum"] == ["utf-8", "base64", "null"]


BASE: dict[str, Any] = {
    "schema_version": "1",
    "event_id": "e-1",
    "user_id": "u-1",
    "event_type": "view",
    "item_id": "i-1",
    "category_id": "c0101",
    "occurred_at": "2025-01-06T09:30:00Z",
}
DROP = object()


def _example(**changes: Any) -> dict[str, Any]:
    merged = {**BASE, **changes}
    return {k: v for k, v in merged.items() if v is not DROP}


EXAMPLES: list[tuple[str, dict[str, Any], bool]] = [
    ("minimal view", _example(), True),
    (
        "every field",
        _example(session_id="s", price=12.5, quantity=2, event_type="add_to_cart"),
        True,
    ),
    ("integer price", _example(price=5), True),
    ("zero price", _example(price=0), True),
    ("integral float quantity", _example(quantity=2.0), True),
    ("null optionals", _example(session_id=None, price=None, quantity=None), True),
    ("unknown extra field", _example(referrer="https://example.com"), True),
    ("search without item", _example(event_type="search", item_id=DROP, category_id=DROP), True),
    ("search with category", _example(event_type="search", item_id=DROP), True),
    ("offset instead of Z", _example(occurred_at="2025-01-06T11:30:00+02:00"), True),
    ("lower-case t and z", _example(occurred_at="2025-01-06t09:30:00z"), True),
    ("fraction of a second", _example(occurred_at="2025-01-06T09:30:00.123456Z"), True),
    ("view without item", _example(item_id=DROP), False),
    ("view with null category", _example(category_id=None), False),
    ("missing event_id", _example(event_id=DROP), False),
    ("missing occurred_at", _example(occurred_at=DROP), False),
    ("unknown event type", _example(event_type="checkout"), False),
    ("negative price", _example(price=-0.01), False),
    ("price as text", _example(price="5"), False),
    ("quantity zero", _example(quantity=0), False),
    ("quantity too large", _example(quantity=10_001), False),
    ("fractional quantity", _example(quantity=1.5), False),
    ("boolean quantity", _example(quantity=True), False),
    ("empty user id", _example(user_id=""), False),
    ("user id too long", _example(user_id="u" * 129), False),
    ("numeric user id", _example(user_id=7), False),
    ("schema version 2", _example(schema_version="2"), False),
    ("schema version as number", _example(schema_version=1), False),
    ("naive timestamp", _example(occurred_at="2025-01-06T09:30:00"), False),
    ("date only", _example(occurred_at="2025-01-06"), False),
    ("space separator", _example(occurred_at="2025-01-06 09:30:00Z"), False),
    ("no seconds", _example(occurred_at="2025-01-06T09:30Z"), False),
    ("offset without colon", _example(occurred_at="2025-01-06T09:30:00+0200"), False),
    ("comma fraction", _example(occurred_at="2025-01-06T09:30:00,5Z"), False),
    ("impossible date", _example(occurred_at="2025-02-30T09:30:00Z"), False),
    ("hour 24", _example(occurred_at="2025-01-06T24:00:00Z"), False),
    ("unix seconds", _example(occurred_at=1_736_155_800), False),
]


@pytest.mark.parametrize(("label", "payload", "valid"), EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_schema_and_decoder_accept_and_reject_the_same_examples(
    label: str, payload: dict[str, Any], valid: bool
) -> None:
    schema_ok = _validator("clickstream.v1.json").is_valid(payload)
    verdict = decode_event(orjson.dumps(payload))
    assert schema_ok is valid, label
    assert isinstance(verdict, ClickEvent) is valid, (label, verdict)
    if not valid:
        assert isinstance(verdict, Rejection) and verdict.reason


def test_outgoing_records_validate_against_their_schemas() -> None:
    score = PurchaseScore(
        user_id="u-1",
        event_id="e-1",
        occurred_at="2025-01-06T09:30:00Z",  # type: ignore[arg-type]
        scored_at="2025-01-06T09:30:00.020Z",  # type: ignore[arg-type]
        purchase_probability=0.42,
        model_version="2025-01-06.1",
        feature_version="1",
        top_categories=[TopCategory(category_id="c0417", weight=0.6)],
    )
    _validator("purchase-scores.v1.json").validate(json.loads(score.model_dump_json()))
    with pytest.raises(ValueError, match="top_categories"):
        PurchaseScore.model_validate(
            {
                **json.loads(score.model_dump_json()),
                "top_categories": [{"category_id": "c", "weight": 0.1}] * 51,
            }
        )
    with pytest.raises(ValueError, match="category_id"):
        TopCategory(category_id="", weight=0.5)


def test_the_runtime_event_carries_the_models_fields_in_wire_order() -> None:
    import msgspec

    assert ClickEvent.__struct_fields__ == tuple(ClickEventModel.model_fields)
    assert [f.name for f in msgspec.structs.fields(ClickEvent)] == list(
        _schema("clickstream.v1.json")["properties"]
    )


def test_frozen_contracts_keep_their_bytes() -> None:
    """clickstream-dlq.v1 and purchase-scores.v1 are frozen (v2 replaced or extends them): a
    consumer that validates against them must never see them change."""
    import hashlib

    frozen = {
        "clickstream-dlq.v1.json": "7f3a606a754958bab19fe596eccb43bb"
        "77c8caddeffc1da106ef2d1e8f11258f",
        "purchase-scores.v1.json": "d1dbe25e63eefb8cbe6cc039d975c9da"
        "40b11a2db21883da343b733beefc81d5",
    }
    for name, digest in frozen.items():
        assert hashlib.sha256((SCHEMAS / name).read_bytes()).hexdigest() == digest, name
