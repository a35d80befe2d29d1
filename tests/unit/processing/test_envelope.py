"""The stored profile envelope: the profile and the input position it has seen."""

from __future__ import annotations

import struct

import pytest

from streams import features
from streams.contracts.events import ClickEvent, decode_event
from streams.errors import ProfileDecodeError
from streams.processing.envelope import (
    UNKNOWN_PARTITION,
    StoredProfile,
    decode_stored,
    encode_stored,
    topic_identity,
)
from tests.integration.harness import click_events

START = 1_760_000_000.0


def _profile() -> features.Profile:
    profile = None
    for _, value in click_events(30, users=1, seed=6, start=START):
        event = decode_event(value)
        assert isinstance(event, ClickEvent)
        profile = features.update(profile, event)
    assert profile is not None
    return profile


def test_stored_profile_round_trips_with_its_position() -> None:
    stored = StoredProfile(12345, _profile(), partition=3, topic=topic_identity("clicks", "id-1"))
    assert decode_stored(encode_stored(stored)) == stored


def test_unknown_or_broken_envelopes_raise_a_profile_decode_error() -> None:
    data = encode_stored(StoredProfile(1, _profile(), 0, 7))
    with pytest.raises(ProfileDecodeError, match="envelope version 9 is unknown"):
        decode_stored(b"\x09" + data[1:])
    with pytest.raises(ProfileDecodeError, match="truncated"):
        decode_stored(data[:5])
    with pytest.raises(ProfileDecodeError, match="empty"):
        decode_stored(b"")


def test_a_version_1_envelope_still_reads_and_guards_replays_by_offset() -> None:
    profile = _profile()
    v1 = struct.pack(">Bq", 1, 41) + features.encode_profile(profile)
    stored = decode_stored(v1)
    assert stored == StoredProfile(41, profile, UNKNOWN_PARTITION, 0)
    assert stored.has_applied(topic_identity("t"), 2, 41)
    assert not stored.has_applied(topic_identity("t"), 2, 42)


def test_has_applied_needs_the_same_topic_and_partition() -> None:
    topic = topic_identity("clicks", "uuid-a")
    stored = StoredProfile(100, _profile(), partition=1, topic=topic)
    assert stored.has_applied(topic, 1, 100) and stored.has_applied(topic, 1, 5)
    assert not stored.has_applied(topic, 1, 101)
    assert not stored.has_applied(topic, 2, 5)  # another partition
    assert not stored.has_applied(topic_identity("clicks", "uuid-b"), 1, 5)  # re-created topic
    assert topic_identity("clicks") != topic_identity("clicks", "uuid-a")
