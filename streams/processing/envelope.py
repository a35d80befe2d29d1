"""What the profile table stores per user: the profile and the input offset it has seen.

Delivery is at-least-once, so after a crash the worker re-reads events it had already applied.
Remembering the input offset of the last applied event makes the update idempotent: a replayed
event (offset <= stored offset; a user always maps to one input partition) is not applied
twice, so a profile rebuilt from the changelog equals the profile of an uninterrupted run.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from streams import features

_HEADER = struct.Struct(">Bq")  # envelope version, input offset of the last applied event
_ENVELOPE_VERSION = 1


@dataclass(frozen=True, slots=True)
class StoredProfile:
    offset: int
    profile: features.Profile


def encode_stored(stored: StoredProfile) -> bytes:
    """Table value: a small header, then the versioned profile encoding."""
    return _HEADER.pack(_ENVELOPE_VERSION, stored.offset) + features.encode_profile(stored.profile)


def decode_stored(data: bytes) -> StoredProfile:
    """Inverse of ``encode_stored``; ValueError on an unknown envelope version."""
    version, offset = _HEADER.unpack_from(data)
    if version != _ENVELOPE_VERSION:
        raise ValueError(
            f"profile envelope version {version} is unknown (this worker reads "
            f"{_ENVELOPE_VERSION}); run the worker version that wrote it"
        )
    return StoredProfile(offset, features.decode_profile(data[_HEADER.size :]))
