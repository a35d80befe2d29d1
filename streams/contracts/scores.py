"""purchase-scores.v1: the runtime model (agrees with ``schemas/purchase-scores.v1.json``) and
the encoder the worker publishes with."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Final, Literal

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from streams.contracts.events import ClickEvent, Id

SCORES_SCHEMA_VERSION: Final = "1"


class TopCategory(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    category_id: Annotated[str, Field(min_length=1)]
    weight: Annotated[float, Field(ge=0, le=1)]


class PurchaseScore(BaseModel):
    """One purchase-scores.v1 record."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal["1"] = SCORES_SCHEMA_VERSION
    user_id: Id
    event_id: Id
    occurred_at: AwareDatetime
    scored_at: AwareDatetime
    purchase_probability: Annotated[float, Field(ge=0, le=1)]
    model_version: Annotated[str, Field(min_length=1)]
    feature_version: Annotated[str, Field(min_length=1)]
    top_categories: Annotated[list[TopCategory], Field(max_length=50)]


def score_fields(
    event: ClickEvent,
    probability: float,
    *,
    model_version: str,
    feature_version: str,
    top_categories: Sequence[tuple[str, float]],
    scored_at: str,
) -> dict[str, Any]:
    """The fields every purchase-scores version carries, after ``schema_version`` (``scored_at``
    is formatted once per batch by the caller)."""
    return {
        "user_id": event.user_id,
        "event_id": event.event_id,
        "occurred_at": event.occurred_at.isoformat(),
        "scored_at": scored_at,
        "purchase_probability": min(1.0, max(0.0, probability)),
        "model_version": model_version,
        "feature_version": feature_version,
        "top_categories": [{"category_id": c, "weight": w} for c, w in top_categories],
    }


# A value is ``{"schema_version": ..., <the score_fields members>, ...}``: the members are
# serialised once per score and both versions are built around them.
_V1_HEAD: Final = orjson.dumps({"schema_version": SCORES_SCHEMA_VERSION})[:-1] + b","


def fields_json(fields: dict[str, Any]) -> bytes:
    """``score_fields`` as JSON (an object, never empty), which ``encode_fields`` and
    ``scores_v2.encode_fields_v2`` both take: a score published in v1 and v2 is serialised
    once."""
    return orjson.dumps(fields)


def encode_fields(fields: dict[str, Any], serialized: bytes | None = None) -> bytes:
    """One purchase-scores.v1 value from ``score_fields`` (or its ``fields_json``, when given as
    ``serialized``): the bytes of ``orjson.dumps({"schema_version": "1", **fields})``. Built with
    orjson, not through ``PurchaseScore``: the contract test holds the two together, and this
    runs per score."""
    body = fields_json(fields) if serialized is None else serialized
    return _V1_HEAD + body[1:]


def encode_score(
    event: ClickEvent,
    probability: float,
    *,
    model_version: str,
    feature_version: str,
    top_categories: Sequence[tuple[str, float]],
    scored_at: datetime,
) -> bytes:
    """One purchase-scores.v1 value (the key is the user id)."""
    return encode_fields(
        score_fields(
            event, probability, model_version=model_version, feature_version=feature_version,
            top_categories=top_categories, scored_at=scored_at.isoformat(),
        )
    )  # fmt: skip
