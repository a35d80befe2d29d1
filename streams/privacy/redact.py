"""Pseudonymise the identifiers in a rejected payload before it goes to the dead-letter topic.

Pure: orjson and the standard library. A JSON object's identifier fields (``user_id``,
``session_id``, ``event_id``) are replaced by their pseudonyms; then every remaining occurrence
of the source key and of those identifiers, in any field or in a payload that is not JSON at
all, is replaced too. The exact bytes stay readable in the input topic at the dead letter's
source position while the topic retains them.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson

IDENTIFIER_FIELDS = ("user_id", "session_id", "event_id")
MIN_REPLACED_BYTES = 4  # shorter values ("1", "ab") would mangle unrelated text


def redact_payload(
    raw: bytes, key: bytes | None, pseudonym: Callable[[str], str]
) -> tuple[bytes, bool]:
    """The payload with its identifiers pseudonymised, and whether anything was replaced."""
    identifiers: set[bytes] = set()
    if key:
        identifiers.add(key)
    out = raw
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        value = None
    if isinstance(value, dict):
        changed = False
        for name in IDENTIFIER_FIELDS:
            found = value.get(name)
            if isinstance(found, str) and found:
                identifiers.add(found.encode("utf-8"))
                value[name] = pseudonym(found)
                changed = True
        if changed:
            out = orjson.dumps(value)
    replaced = out is not raw
    for identifier in sorted(identifiers, key=len, reverse=True):  # longest first
        if len(identifier) < MIN_REPLACED_BYTES or identifier not in out:
            continue
        text = identifier.decode("utf-8", errors="surrogateescape")
        out = out.replace(identifier, pseudonym(text).encode())
        replaced = True
    return out, replaced
