"""What the profile table stores per user: the profile and the input position it has seen.

Delivery is at-least-once, so after a crash the worker re-reads events it had already applied.
Remembering the position (topic identity, partition, offset) of the last applied event makes
the update idempotent: a replayed event (same topic and partition, offset <= the stored one)
is not applied twice, so a profile rebuilt from the changelog equals the profile of an
uninterrupted run. The topic identity and partition make sure an event from another partition
(a producer with another partitioner) or from a re-created topic (offsets start again at 0) is
never taken for a replay and silently skipped.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from streams import features
from streams.errors import ProfileDecodeError

# version 1: (version, offset); version 2: (version, topic identity, partition, offset)
_V1 = struct.Struct(">Bq")
_V2 = struct.Struct(">BIiq")
_ENVELOPE_VERSION = 2
UNKNOWN_PARTITION = -1  # a version 1 envelope did not record its partition


def topic_identity(name: str, topic_id: str | None = None) -> int:
    """A 32-bit identity of a topic: its Kafka topic id (a UUID that changes when the topic is
    re-created) when known, else its name."""
    return zlib.crc32((topic_id or name).encode("utf-8"))


@dataclass(frozen=True, slots=True)
class StoredProfile:
    offset: int
    profile: features.Profile
    partition: int = UNKNOWN_PARTITION
    topic: int = 0  # topic_identity of the input topic

    def has_applied(self, topic: int, partition: int, offset: int) -> bool:
        """Whether the event at (topic, partition, offset) is already in this profile."""
        if self.partition == UNKNOWN_PARTITION:  # written by a version 1 worker
            return offset <= self.offset
        return topic == self.topic and partition == self.partition and offset <= self.offset


def encode_stored(stored: StoredProfile, profile_format: int | None = None) -> bytes:
    """Table value: a small header, then the versioned profile encoding (the current format,
    or ``profile_format``, one of ``features.encoding.WRITABLE_VERSIONS``)."""
    header = _V2.pack(_ENVELOPE_VERSION, stored.topic, stored.partition, stored.offset)
    if profile_format is None:
        return header + features.encode_profile(stored.profile)
    return header + features.encode_profile(stored.profile, profile_format)


def stored_clock(data: bytes) -> float:
    """The profile clock (newest event time) of a table value, read without decoding it."""
    if data[:1] == b"\x01":
        return features.profile_clock(data[_V1.size :])
    return features.profile_clock(data[_V2.size :])


def decode_stored(data: bytes) -> StoredProfile:
    """Inverse of ``encode_stored`` (and reads version 1); ProfileDecodeError otherwise."""
    if not data:
        raise ProfileDecodeError("stored profile is empty")
    version = data[0]
    try:
        if version == 1:
            _, offset = _V1.unpack_from(data)
            return StoredProfile(offset, features.decode_profile(data[_V1.size :]))
        if version == _ENVELOPE_VERSION:
            _, topic, partition, offset = _V2.unpack_from(data)
            profile = features.decode_profile(data[_V2.size :])
            return StoredProfile(offset, profile, partition, topic)
    except struct.error:
        raise ProfileDecodeError(f"stored profile is truncated ({len(data)} bytes)") from None
    raise ProfileDecodeError(
        f"profile envelope version {version} is unknown (this worker reads 1 and "
        f"{_ENVELOPE_VERSION}); run the worker version that wrote it"
    )
