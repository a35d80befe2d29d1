"""The stored profile envelope: the profile and the input offset it has seen."""

from __future__ import annotations

import pytest

from streams import features
from streams.contracts.events import ClickEvent, decode_event
from streams.processing.envelope import StoredProfile, decode_stored, encode_stored
from tests.integration.harness import click_events

START = 1_760_000_000.0


def test_stored_profile_round_trips_and_refuses_an_unknown_envelope() -> None:
    payloads = click_events(30, users=1, seed=6, start=START)
    profile = None
    for _, value in payloads:
        event = decode_event(value)
        assert isinstance(event, ClickEvent)
        profile = features.update(profile, event)
    assert profile is not None
    stored = StoredProfile(12345, profile)
    data = encode_stored(stored)
    assert decode_stored(data) == stored
    with pytest.raises(ValueError, match="envelope version 9"):
        decode_stored(b"\x09" + data[1:])
