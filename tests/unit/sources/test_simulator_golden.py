"""The default simulated stream is frozen: opt-in behaviours (issue 11: correlated interests,
dormant interests, closed-loop responses) must leave it byte-identical when they are off."""

from __future__ import annotations

import hashlib

from streams.sources.simulate import generate

DAY = 86_400.0

# sha256 over key NUL payload LF of every record of generate(2000, 3 days, seed=7), computed on
# commit 4805920 before any issue-11 change.
GOLDEN_RECORDS = 176_510
GOLDEN_SHA256 = "5e0dab47255c3bdf881e775918c9368cd077a59627c53a1451004f855c699168"


def test_default_stream_is_byte_identical_to_the_golden_digest() -> None:
    digest = hashlib.sha256()
    n = 0
    for record in generate(2000, 3 * DAY, seed=7):
        digest.update(record.key + b"\0" + record.payload + b"\n")
        n += 1
    assert n == GOLDEN_RECORDS
    assert digest.hexdigest() == GOLDEN_SHA256
