"""Profile bytes per user with exploration on and off (issue 11: at most 1 KB mean).

The same simulated histories as the state scenario (``bench.state.long_histories``, the
default shoppers) replayed through the worker's computation: ``features.update``, then, with
exploration on, ``Explorer.apply`` with arms fitted on those histories exactly as training
fits them (``model_export.explore_prior``). Sizes are the stored envelopes
(``bench.state.envelope``), with the mean bytes of each section of the profile format
(``encoding.section_sizes``; the envelope's header is ``envelope``). Run:
``python -m bench.explore_profile [users] [days]``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bench.state import envelope, long_histories, size_stats
from model_export.embeddings import learn_embeddings
from model_export.explore_prior import fit_arms
from streams import features
from streams.contracts.events import ClickEvent, decode_event
from streams.features.encoding import section_sizes
from streams.features.explore import ExploreConfig, Explorer

RESULTS = Path(__file__).parent / "results" / "explore-profile-bytes.json"


def section_means(profiles: list[features.Profile]) -> dict[str, float]:
    """Mean bytes per section of the stored envelope, in the order they are written."""
    totals: dict[str, int] = {}
    for p in profiles:
        sizes = section_sizes(p)
        totals["envelope"] = totals.get("envelope", 0) + len(envelope(p)) - sum(sizes.values())
        for name, size in sizes.items():
            totals[name] = totals.get(name, 0) + size
    return {name: round(total / len(profiles), 1) for name, total in totals.items()}


def measure(users: int, days: float) -> dict[str, object]:
    payloads, _ = long_histories(users, days)
    events = [e for e in (decode_event(p) for p in payloads) if isinstance(e, ClickEvent)]
    embeddings = learn_embeddings(events)
    explorer = Explorer(fit_arms(events, embeddings), embeddings, ExploreConfig())
    off: dict[str, features.Profile] = {}
    on: dict[str, features.Profile] = {}
    for e in events:
        off[e.user_id] = features.update(off.get(e.user_id), e)
        profile = features.update(on.get(e.user_id), e)
        profile.explore, _ = explorer.apply(
            profile.explore, event_id=e.event_id, ts=e.ts, event_type=e.event_type,
            category_id=e.category_id, weights=profile.weights,
        )  # fmt: skip
        on[e.user_id] = profile
    return {
        "users": users,
        "days": days,
        "events": len(events),
        "exploration_off": size_stats([len(envelope(p)) for p in off.values()]),
        "exploration_on": size_stats([len(envelope(p)) for p in on.values()]),
        "profile_format": features.PROFILE_FORMAT_VERSION,
        "sections_mean_off": section_means(list(off.values())),
        "sections_mean_on": section_means(list(on.values())),
        "note": "encode_stored envelope bytes per user; default shoppers; arms fitted on the "
        "same histories; ExploreConfig() defaults",
    }


def main() -> None:
    users = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    days = float(sys.argv[2]) if len(sys.argv) > 2 else 2.0
    result = measure(users, days)
    print(json.dumps(result, indent=2))
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
