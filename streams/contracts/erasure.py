"""Erase commands and their receipts (``schemas/intentflow.erasure-*.v1.json``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

Pseudonym = Annotated[str, StringConstraints(pattern=r"^p1\.[A-Za-z0-9]{1,16}\.[0-9a-f]{32}$")]


class EraseCommand(BaseModel):
    """Erase one shopper's profile, named by its pseudonyms (one per configured key)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal["1"] = "1"
    request_id: Annotated[str, Field(min_length=1, max_length=128)]
    pseudonyms: Annotated[list[Pseudonym], Field(min_length=1, max_length=16)]
    requested_at: AwareDatetime


class EraseReceipt(BaseModel):
    """A worker executed an erase command on one partition."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal["1"] = "1"
    request_id: Annotated[str, Field(min_length=1, max_length=128)]
    partition: Annotated[int, Field(ge=0)]
    held: bool
    executed_at: AwareDatetime
