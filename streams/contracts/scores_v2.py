"""purchase-scores.v2: the runtime model (agrees with ``schemas/purchase-scores.v2.json``) and
the encoder the worker publishes with, on its own topic beside the frozen v1.

A v2 record carries every v1 field (schema_version "2"), plus:

- ``reasons``: why the score is what it is, by occlusion on the served model (an object, or
  null when the model bundle has no training reference or reasons are turned off);
- ``exploration``: bandit suggestions beside the exploit interests (``Exploration``, computed
  by ``streams.features.explore``), or null when exploration is off.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Final, Literal

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from streams.contracts.events import ClickEvent, Id
from streams.contracts.scores import TopCategory, fields_json, score_fields

SCORES_V2_SCHEMA_VERSION: Final = "2"
REASON_CODE_PATTERN: Final = r"^[a-z][a-z0-9_]*$"


class Reason(BaseModel):
    """A feature group's impact: ``p - p`` with the group at its training reference."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    code: Annotated[str, Field(pattern=REASON_CODE_PATTERN, max_length=64)]
    direction: Literal["up", "down"]
    impact: Annotated[float, Field(ge=-1, le=1)]


class InterestImpact(BaseModel):
    """One of the user's top interests: ``p - p`` with it left out of the interest embedding."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    category_id: Annotated[str, Field(min_length=1)]
    impact: Annotated[float, Field(ge=-1, le=1)]


class Reasons(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    reference_probability: Annotated[float, Field(ge=0, le=1)]
    top: Annotated[list[Reason], Field(max_length=3)]
    interests: Annotated[list[InterestImpact], Field(max_length=3)]


class Suggestion(BaseModel):
    """One open exploration suggestion: a cluster of categories, how and why it was chosen."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cluster: Annotated[str, Field(pattern=r"^k[0-9]{2,3}$")]
    categories: Annotated[list[Annotated[str, Field(min_length=1)]], Field(max_length=10)]
    draw: Literal["exploit", "sampled", "mean", "uniform"]
    posterior_mean: Annotated[float, Field(ge=0, le=1)]
    posterior_strength: Annotated[float, Field(ge=0)]
    propensity: Annotated[float, Field(ge=0, le=1)]
    why: Annotated[str, Field(min_length=1)]
    similar_to: Annotated[str, Field(min_length=1)] | None
    opened_at: AwareDatetime


class Exploration(BaseModel):
    """The exploration policy, its knobs, and the shopper's open suggestions."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    policy: Literal["ts", "greedy", "random", "exploit"]
    rate: Annotated[float, Field(ge=0, le=1)]
    floor: Annotated[float, Field(ge=0, le=1)]
    suggestions: Annotated[list[Suggestion], Field(max_length=8)]


class PurchaseScoreV2(BaseModel):
    """One purchase-scores.v2 record."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal["2"] = SCORES_V2_SCHEMA_VERSION
    user_id: Id
    event_id: Id
    occurred_at: AwareDatetime
    scored_at: AwareDatetime
    purchase_probability: Annotated[float, Field(ge=0, le=1)]
    model_version: Annotated[str, Field(min_length=1)]
    feature_version: Annotated[str, Field(min_length=1)]
    top_categories: Annotated[list[TopCategory], Field(max_length=50)]
    reasons: Reasons | None
    exploration: Exploration | None


@dataclass(frozen=True, slots=True)
class ScoreReasons:
    """The reasons of one score, as the step computes them (the encoder adds directions)."""

    reference_probability: float
    top: Sequence[tuple[str, float]]  # (code, impact), largest |impact| first
    interests: Sequence[tuple[str, float]]  # (category_id, impact), strongest interest first

    def to_wire(self) -> dict[str, Any]:
        """The ``reasons`` object. Probabilities are in [0, 1], so impacts are in [-1, 1]."""
        return reasons_wire(self.reference_probability, self.top, self.interests)


def reasons_wire(
    reference_probability: float,
    top: Iterable[tuple[str, float]],
    interests: Iterable[tuple[str, float]],
) -> dict[str, Any]:
    """A v2 score's ``reasons`` object: (code, impact) of its groups, largest |impact| first,
    and (category_id, impact) of its top interests (``ScoreReasons.to_wire``, and the step's
    per-row form, ``streams.processing.reasons.Explained.wire``)."""
    return {
        "reference_probability": reference_probability,
        "top": [
            {"code": code, "direction": "up" if impact > 0 else "down", "impact": impact}
            for code, impact in top
        ],
        "interests": [{"category_id": c, "impact": i} for c, i in interests],
    }


_V2_HEAD: Final = orjson.dumps({"schema_version": SCORES_V2_SCHEMA_VERSION})[:-1] + b","


def encode_fields_v2(
    fields: dict[str, Any],
    reasons: ScoreReasons | dict[str, Any] | None,
    exploration: dict[str, Any] | orjson.Fragment | None = None,
    serialized: bytes | None = None,
) -> bytes:
    """One purchase-scores.v2 value from ``score_fields`` (every v1 field; or its
    ``scores.fields_json``, when given as ``serialized``), the reasons (or their ``to_wire``
    object) and the ``exploration`` object (``streams.processing.step.exploration``: a dict, or
    its JSON as an ``orjson.Fragment``): the bytes of ``orjson.dumps({"schema_version": "2",
    **fields, "reasons": ..., "exploration": ...})``. Built with orjson, not through
    ``PurchaseScoreV2``: the contract test holds the two together, and this runs per score."""
    body = fields_json(fields) if serialized is None else serialized
    tail = orjson.dumps(
        {
            "reasons": reasons.to_wire() if isinstance(reasons, ScoreReasons) else reasons,
            "exploration": exploration,
        }
    )
    return b"".join((_V2_HEAD, body[1:-1], b",", tail[1:]))


def encode_score_v2(
    event: ClickEvent,
    probability: float,
    *,
    model_version: str,
    feature_version: str,
    top_categories: Sequence[tuple[str, float]],
    scored_at: datetime,
    reasons: ScoreReasons | None,
) -> bytes:
    """One purchase-scores.v2 value (the key is the user id)."""
    fields = score_fields(
        event, probability, model_version=model_version, feature_version=feature_version,
        top_categories=top_categories, scored_at=scored_at.isoformat(),
    )  # fmt: skip
    return encode_fields_v2(fields, reasons)
