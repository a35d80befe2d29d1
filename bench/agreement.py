"""Do the benchmarked systems compute the same thing? ``purchase_probability`` per ``event_id``.

Every scoring system runs the worker's step, so for the same input each must publish the same
probability for each event. Delivery is at-least-once, so an event may be scored twice (a
replay after a restart): both copies must then agree too. Pure functions over the score
records each drain already reads back; ``bench.drain`` feeds them, ``bench.run`` reports them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

TOLERANCE = 1e-6


@dataclass
class Probabilities:
    """One system's ``purchase_probability`` per ``event_id``, read from its output."""

    by_event: dict[str, float] = field(default_factory=dict)
    records: int = 0
    duplicates: int = 0  # records of an event_id already seen
    duplicate_conflicts: int = 0  # ... whose probability differed from the first one
    unreadable: int = 0  # not a score record (a dead letter, say)


def read_probabilities(values: Iterable[bytes | None], tol: float = TOLERANCE) -> Probabilities:
    """Probabilities per event id from purchase-scores.v1 record values (first copy kept)."""
    out = Probabilities()
    for value in values:
        out.records += 1
        try:
            doc = orjson.loads(value or b"")
            event_id, p = doc["event_id"], float(doc["purchase_probability"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            out.unreadable += 1
            continue
        first = out.by_event.get(event_id)
        if first is None:
            out.by_event[event_id] = p
            continue
        out.duplicates += 1
        if abs(first - p) > tol:
            out.duplicate_conflicts += 1
    return out


@dataclass
class Comparison:
    """One system's probabilities against the reference system's."""

    system: str
    reference: str
    compared: int = 0  # event ids scored by both
    mismatches: int = 0  # of those, |difference| > tolerance
    missing: int = 0  # scored by the reference, not by this system
    extra: int = 0  # scored by this system, not by the reference
    max_abs_diff: float = 0.0
    examples: list[dict[str, Any]] = field(default_factory=list)  # first few mismatches

    @property
    def agrees(self) -> bool:
        return self.mismatches == 0 and self.missing == 0 and self.extra == 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"agrees": self.agrees}


def compare(
    system: str,
    got: Mapping[str, float],
    reference: str,
    expected: Mapping[str, float],
    *,
    tol: float = TOLERANCE,
    examples: int = 5,
) -> Comparison:
    """Compare ``got`` to ``expected`` per event id, within ``tol`` (absolute)."""
    out = Comparison(system, reference)
    for event_id, want in expected.items():
        have = got.get(event_id)
        if have is None:
            out.missing += 1
            continue
        out.compared += 1
        diff = abs(have - want)
        out.max_abs_diff = max(out.max_abs_diff, diff)
        if diff > tol:
            out.mismatches += 1
            if len(out.examples) < examples:
                out.examples.append({"event_id": event_id, system: have, reference: want})
    out.extra = sum(1 for event_id in got if event_id not in expected)
    return out


def compare_all(
    by_system: Mapping[str, Mapping[str, float]], reference: str, *, tol: float = TOLERANCE
) -> dict[str, Comparison]:
    """Every system but ``reference`` against it."""
    expected = by_system[reference]
    return {
        system: compare(system, got, reference, expected, tol=tol)
        for system, got in by_system.items()
        if system != reference
    }
