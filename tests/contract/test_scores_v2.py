"""purchase-scores.v2: the schema file and the runtime model say the same thing, field by field
and inside ``reasons``; the worker's records validate; v2 is v1 plus reasons and exploration."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from streams.contracts.scores import encode_fields, fields_json
from streams.contracts.scores_v2 import (
    REASON_CODE_PATTERN,
    Exploration,
    InterestImpact,
    PurchaseScoreV2,
    Reason,
    Reasons,
    Suggestion,
    encode_fields_v2,
)
from streams.features import FEATURE_SPEC
from tests.conftest import SCHEMAS
from tests.contract.test_schemas import _flatten, _types

NAME = "purchase-scores.v2.json"


def _schema(name: str = NAME) -> dict[str, Any]:
    return json.loads((SCHEMAS / name).read_text())


def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(
        _schema(), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


def _agree(contract: dict[str, Any], model: type[BaseModel], defs: dict[str, Any]) -> None:
    runtime = model.model_json_schema()
    defs = {**defs, **runtime.get("$defs", {})}
    assert set(contract["properties"]) == set(runtime["properties"]) == set(model.model_fields)
    assert set(contract["required"]) == set(model.model_fields)
    assert contract.get("additionalProperties") is False
    assert model.model_config.get("extra") == "forbid"
    for field, prop in contract["properties"].items():
        mine = runtime["properties"][field]
        assert _flatten(prop, {}) == _flatten(mine, defs), field
        assert _types(prop, {}) == _types(mine, defs), field
        if "pattern" in prop:
            assert prop["pattern"] == _resolved(mine, defs).get("pattern"), field


def _resolved(prop: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in prop:
        return defs[prop["$ref"].rsplit("/", 1)[1]]
    for branch in prop.get("anyOf", []):
        if branch.get("type") != "null":
            return _resolved(branch, defs)
    return prop


def test_schema_is_valid_draft_2020_12() -> None:
    schema = _schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_top_level_fields_agree_and_are_v1_plus_reasons_and_exploration() -> None:
    contract = _schema()
    _agree(contract, PurchaseScoreV2, {})
    v1 = _schema("purchase-scores.v1.json")
    assert contract["required"] == [*v1["required"], "reasons", "exploration"]
    for field, prop in v1["properties"].items():
        if field != "schema_version":
            assert contract["properties"][field] == prop, field
    assert contract["properties"]["schema_version"] == {"const": "2"}
    # Both new fields are nullable: reasons for older bundles, exploration until it ships.
    assert "null" in contract["properties"]["reasons"]["type"]
    assert contract["properties"]["exploration"]["type"] == ["object", "null"]


def test_reasons_agree_inside() -> None:
    reasons = _schema()["properties"]["reasons"]
    _agree({**reasons, "type": "object"}, Reasons, {})
    props = reasons["properties"]
    _agree(props["top"]["items"], Reason, {})
    _agree(props["interests"]["items"], InterestImpact, {})
    assert props["top"]["items"]["properties"]["direction"]["enum"] == ["up", "down"]
    assert props["top"]["items"]["properties"]["code"]["pattern"] == REASON_CODE_PATTERN


def test_exploration_agrees_inside() -> None:
    exploration = _schema()["properties"]["exploration"]
    _agree({**exploration, "type": "object"}, Exploration, {})
    _agree(exploration["properties"]["suggestions"]["items"], Suggestion, {})


SUGGESTION: dict[str, Any] = {
    "cluster": "k07",
    "categories": ["c0701", "c0702"],
    "draw": "sampled",
    "posterior_mean": 0.31,
    "posterior_strength": 4.5,
    "propensity": 0.12,
    "why": "similar to c0417",
    "similar_to": "c0417",
    "opened_at": "2025-01-06T09:30:00Z",
}
EXPLORATION: dict[str, Any] = {
    "policy": "ts", "rate": 0.5, "floor": 0.05, "suggestions": [SUGGESTION],
}  # fmt: skip


def test_every_reason_code_fits_the_schema() -> None:
    import re

    for code in set(FEATURE_SPEC.groups):
        assert re.fullmatch(REASON_CODE_PATTERN.strip("^$"), code), code


GOOD: dict[str, Any] = {
    "schema_version": "2",
    "user_id": "u-1",
    "event_id": "e-1",
    "occurred_at": "2025-01-06T09:30:00Z",
    "scored_at": "2025-01-06T09:30:00.020Z",
    "purchase_probability": 0.42,
    "model_version": "m",
    "feature_version": "1",
    "top_categories": [{"category_id": "c0417", "weight": 0.6}],
    "reasons": {
        "reference_probability": 0.05,
        "top": [{"code": "session_carts", "direction": "up", "impact": 0.21}],
        "interests": [{"category_id": "c0417", "impact": 0.04}],
    },
    "exploration": None,
}


@pytest.mark.parametrize(
    ("label", "changes", "valid"),
    [
        ("complete", {}, True),
        ("reasons null", {"reasons": None}, True),
        ("exploration", {"exploration": EXPLORATION}, True),
        ("exploration without suggestions", {"exploration": {**EXPLORATION, "suggestions": []}},
         True),
        ("exploration missing fields", {"exploration": {"policy": "ts"}}, False),
        ("unknown policy", {"exploration": {**EXPLORATION, "policy": "ucb"}}, False),
        ("propensity above 1", {"exploration": {**EXPLORATION, "suggestions": [
            {**SUGGESTION, "propensity": 1.2}]}}, False),
        ("bad cluster name", {"exploration": {**EXPLORATION, "suggestions": [
            {**SUGGESTION, "cluster": "07"}]}}, False),
        ("new to you", {"exploration": {**EXPLORATION, "suggestions": [
            {**SUGGESTION, "why": "new to you", "similar_to": None}]}}, True),
        ("no reasons field", {"reasons": "DROP"}, False),
        ("no exploration field", {"exploration": "DROP"}, False),
        ("schema version 1", {"schema_version": "1"}, False),
        ("unknown field", {"extra": 1}, False),
        ("four reasons", {"reasons": {**GOOD["reasons"], "top": GOOD["reasons"]["top"] * 4}},
         False),
        ("sideways", {"reasons": {**GOOD["reasons"], "top": [
            {"code": "cart", "direction": "sideways", "impact": 0.1}]}}, False),
        ("code with a space", {"reasons": {**GOOD["reasons"], "top": [
            {"code": "the cart", "direction": "up", "impact": 0.1}]}}, False),
        ("impact above 1", {"reasons": {**GOOD["reasons"], "interests": [
            {"category_id": "c", "impact": 1.5}]}}, False),
    ],
)  # fmt: skip
def test_schema_and_model_accept_and_reject_the_same_records(
    label: str, changes: dict[str, Any], valid: bool
) -> None:
    record = {k: v for k, v in {**GOOD, **changes}.items() if v != "DROP"}
    assert _validator().is_valid(record) is valid, label
    try:
        PurchaseScoreV2.model_validate(record)
    except ValueError:
        accepted = False
    else:
        accepted = True
    assert accepted is valid, label


_text = st.text(min_size=1, max_size=12)  # any characters, escapes and non-ASCII included
_finite = st.floats(allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None)
@given(
    fields=st.fixed_dictionaries(
        {
            "user_id": _text,
            "event_id": _text,
            "occurred_at": _text,
            "scored_at": _text,
            "purchase_probability": st.floats(0.0, 1.0),
            "model_version": _text,
            "feature_version": _text,
            "top_categories": st.lists(
                st.fixed_dictionaries({"category_id": _text, "weight": _finite}), max_size=5
            ),
        }
    ),
    reasons=st.none()
    | st.fixed_dictionaries(
        {
            "reference_probability": _finite,
            "top": st.lists(st.fixed_dictionaries({"code": _text, "impact": _finite})),
            "interests": st.lists(st.fixed_dictionaries({"category_id": _text, "impact": _finite})),
        }
    ),
    exploration=st.none() | st.dictionaries(_text, _finite | _text, max_size=3),
    fragment=st.booleans(),
)
def test_values_built_around_one_serialisation_are_the_plain_dumps(
    fields: dict[str, Any],
    reasons: dict[str, Any] | None,
    exploration: dict[str, Any] | None,
    fragment: bool,
) -> None:
    """The worker serialises a score's fields once and builds v1 and v2 around them; the bytes
    are those of dumping each whole value, whatever the strings and numbers."""
    body = fields_json(fields)
    assert (
        encode_fields(fields, body)
        == encode_fields(fields)
        == orjson.dumps({"schema_version": "1", **fields})
    )
    given_exploration = (
        orjson.Fragment(orjson.dumps(exploration))
        if fragment and exploration is not None else exploration
    )  # fmt: skip
    expected = orjson.dumps(
        {"schema_version": "2", **fields, "reasons": reasons, "exploration": exploration}
    )
    assert encode_fields_v2(fields, reasons, given_exploration, body) == expected
    assert encode_fields_v2(fields, reasons, given_exploration) == expected
