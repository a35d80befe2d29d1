"""Profile format 6: exact on simulated shoppers with exploration on (a profile that goes
through its bytes after every event stays equal to one that never does, features, suggestions
and dict order included), format 4 and 5 profiles decode into it (their exposures without
their decision's posterior, which suggestions then compute), and the narrowed fields saturate
or fall back to their full width instead of raising."""

from __future__ import annotations

import dataclasses
import math
from array import array

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model_export.embeddings import learn_embeddings
from model_export.explore_prior import fit_arms
from streams.contracts.events import ClickEvent, decode_event
from streams.features import (
    CategoryEmbeddings,
    Profile,
    decode_profile,
    encode_profile,
    feature_vector,
    stable_hash,
    update,
)
from streams.features.encoding import _encode, section_sizes
from streams.features.encoding_explore import encode_state
from streams.features.explore import ExploreConfig, Explorer, ExploreState, Exposure
from streams.sources.simulate import Behaviour, generate
from tests.model_fixtures import T0, ev
from tests.model_fixtures import replay as run

EMB = CategoryEmbeddings.empty()
F32_MAX = 3.4028234663852886e38


def f32(x: float) -> float:
    return array("f", [x])[0]


def same(a: Profile, b: Profile) -> None:
    """Equal, and in the same dict order (feature sums run in that order)."""
    assert a == b
    assert list(a.weights) == list(b.weights) and list(a.items) == list(b.items)
    assert list(a.item_info) == list(b.item_info)
    if a.explore is not None and b.explore is not None:
        assert list(a.explore.counts) == list(b.explore.counts)


@pytest.fixture(scope="module")
def shoppers() -> tuple[list[ClickEvent], CategoryEmbeddings, Explorer]:
    behaviour = Behaviour(interest_rank=4, dormant=2)
    decoded = [decode_event(s.payload) for s in generate(40, 86_400.0, 3, behaviour=behaviour)]
    events = [e for e in decoded if isinstance(e, ClickEvent)]
    embeddings = learn_embeddings(events)
    return events, embeddings, Explorer(fit_arms(events, embeddings), embeddings, ExploreConfig())


def test_shoppers_through_their_bytes_stay_bit_identical_with_exploration_on(
    shoppers: tuple[list[ClickEvent], CategoryEmbeddings, Explorer],
) -> None:
    """Two replays of the same events: one keeps profiles in memory, the other stores each
    profile's bytes after every event and decodes them for the next, as the worker does."""
    events, embeddings, explorer = shoppers
    memory: dict[str, Profile] = {}
    stored: dict[str, bytes] = {}
    for e in events:
        raw = stored.get(e.user_id)
        chains = []
        for before in (memory.get(e.user_id), decode_profile(raw) if raw else None):
            profile = update(before, e)
            profile.explore, _ = explorer.apply(
                profile.explore, event_id=e.event_id, ts=e.ts, event_type=e.event_type,
                category_id=e.category_id, weights=profile.weights,
            )  # fmt: skip
            chains.append(profile)
        kept, through_bytes = chains
        same(through_bytes, kept)
        x = feature_vector(kept, e, embeddings)
        assert feature_vector(through_bytes, e, embeddings).tobytes() == x.tobytes()
        assert explorer.suggestions(
            through_bytes.explore, through_bytes.weights, through_bytes.clock
        ) == explorer.suggestions(kept.explore, kept.weights, kept.clock)
        data = encode_profile(through_bytes)
        assert encode_profile(decode_profile(data)) == data
        memory[e.user_id], stored[e.user_id] = kept, data
    states = [p.explore for p in memory.values() if p.explore is not None]
    counts = [c for state in states for c in state.counts.values()]
    # The run covers every kind of count (the encoding leaves zeros out) and open exposures.
    assert {(s > 0, n > 0) for s, n in counts} == {(True, False), (False, True), (True, True)}
    assert sum(len(state.open) for state in states) > len(states)


# Written by format 4's code (commit 93951ef) from these events and this exploration state.
V4_EVENTS = [
    ev("view", T0 + 0.125, category="shoes", item="a"),
    ev("add_to_cart", T0 + 61.5, category="shoes", item="a", price=49.9),
    ev("search", T0 + 75.0),
    ev("view", T0 + 3600.25, category="hats", item="b", price=12.0),
    ev("view", T0 + 3000.0, category="socks", item="c"),  # out of order
]
V4_STATE = ExploreState(
    T0 + 61.5,
    {3: (f32(1.3), f32(0.7)), 7: (0.0, f32(2.9))},
    (Exposure(5, T0 + 61.5, f32(0.41), 1), Exposure(9, T0 + 3600.25, f32(0.05), 2)),
)
V4 = bytes.fromhex(
    "697004000010c4ff54d941050000000000000000000000000000001c219f9a0ab74e40eaf4c4dd6bd9ff3f"
    "0000002eff54d941000010c4ff54d94102000000000000000000604ffc54d941000000000000f0bfa01921"
    "4b515900400000000000000000f33fe5b89d77d03fd4b45ff5c161d03f0000000000000000000000000000"
    "000000000000000000008bbe0fcd17e90740000000000000000094b122bb22b3ef3fd3e989bbd7b2ef3f00"
    "00000000000000000000000000000000000000000000000300050073686f6573c273a46930790940040068"
    "617473000000000000f03f0500736f636b73811e344469caee3f030043beb7e87e4161442db2ff3ff9efbe"
    "71000000000000f03f6fdfb90603610667dcf2ef3f0143beb7e80000604ffc54d94102933d9c14c46d811e"
    "100e0000d30d000001000200000000000000000000015802000058020000000001ffffffff000000000100"
    "00000000000000000000053a0901003a090c470000032e970b018d1b070100010000604ffc54d94102036666"
    "a63f3333333f07000000009a99394002050000604ffc54d94185ebd13e0109000010c4ff54d941cdcc4c3d02"
)


def test_a_format_4_profile_decodes_into_the_current_format() -> None:
    old = decode_profile(V4)
    # Format 4 stored float64 weights: decoded, they are float32, as format 5's profiles hold
    # them (a replay today rounds at every event, so it may differ in the last bit).
    assert old.weights == {
        "shoes": f32(3.184174371081526), "hats": 1.0, "socks": f32(0.9622083980656982)
    }  # fmt: skip
    assert list(old.items.values()) == [f32(1.9810002013292372), 1.0, f32(0.998396111698668)]
    assert list(old.items) == [stable_hash(i) for i in ("a", "b", "c")]
    assert old.explore == V4_STATE
    replay = run(V4_EVENTS)
    for field in dataclasses.fields(Profile):
        if field.name not in {"weights", "items", "explore"}:
            assert getattr(old, field.name) == getattr(replay, field.name), field.name
    data = encode_profile(old)
    assert data[2] == 6 and len(data) < len(V4)
    same(decode_profile(data), old)
    x = feature_vector(old, V4_EVENTS[-1], EMB)
    assert feature_vector(decode_profile(data), V4_EVENTS[-1], EMB).tobytes() == x.tobytes()
    # The layout: weights are a count, the names' bytes and the names, then float32s; items
    # 4 + 4 + 4 + 4 + 3 bytes each; the recent sequence 3 bytes an event; exploration: a byte,
    # the clock (4), 2 counts (2 arms, 1 byte of kinds, 3 float32s), 2 exposures of 19 bytes
    # (10 as in format 5, the posterior's 8, unknown here: NaN, and no interest: 1).
    sizes = section_sizes(old)
    assert sizes["weights"] == 1 + 2 + len("shoes hats socks") + 4 * 3
    assert sizes["items"] == 1 + 19 * 3 and sizes["recent"] == 1 + 3 * 5
    assert sizes["exploration"] == 1 + 4 + (1 + 2 + 1 + 4 * 3) + (1 + 2 * 19)
    assert sum(sizes.values()) == len(data)


def test_format_4_written_by_its_own_sections_decodes_exactly() -> None:
    p = run(
        [
            ev(kind, T0 + 97.125 * i, category=f"cat-{i % 40}", item=f"i{i % 25}")
            for i, kind in enumerate(["view", "add_to_cart", "favorite", "view", "purchase"] * 60)
        ]
    )
    p.explore = dataclasses.replace(V4_STATE, clock=p.clock - 10)
    v4 = _encode(p, 4)
    assert v4[2] == 4 and len(encode_profile(p)) < len(v4) - 200
    same(decode_profile(v4), p)  # its floats are float32 in memory already: nothing to round


def test_exposures_keep_their_decision_and_older_ones_get_it_computed(
    shoppers: tuple[list[ClickEvent], CategoryEmbeddings, Explorer],
) -> None:
    """A decided exposure keeps the posterior it was drawn from and the interest it was
    similar to: its suggestion is what a computation at its draw gives. A format 5 profile
    (exposures without them) decodes, and its suggestions are computed as format 5 did."""
    events, _, explorer = shoppers
    profiles: dict[str, Profile] = {}
    decided = 0
    for e in events:
        p = profiles[e.user_id] = update(profiles.get(e.user_id), e)
        before = p.explore
        p.explore, decision = explorer.apply(
            before, event_id=e.event_id, ts=e.ts, event_type=e.event_type,
            category_id=e.category_id, weights=p.weights,
        )  # fmt: skip
        if not decision.opened or decided >= 200:
            continue
        decided += 1
        got = explorer.suggestions(p.explore, p.weights, p.clock)
        # The same state with the exposures stripped of their decision: computed now, at the
        # draw's time and weights, as format 5 did for every score.
        bare = dataclasses.replace(
            p.explore, open=tuple(Exposure(x.arm, x.opened_at, x.propensity, x.draw)
                                  for x in p.explore.open),
        )  # fmt: skip
        live = explorer.suggestions(bare, p.weights, e.ts)
        opened = {x.arm for x in decision.opened}
        for x, g, w in zip(p.explore.open, got, live, strict=True):
            if x.arm not in opened:
                continue
            assert g["posterior_mean"] == pytest.approx(w["posterior_mean"], abs=1e-6)
            assert g["posterior_strength"] == pytest.approx(w["posterior_strength"], rel=1e-6)
            assert (g["why"], g["similar_to"]) == (w["why"], w["similar_to"])
        # Format 5's bytes lose the decisions; decoded, suggestions compute them.
        old = decode_profile(_encode(p, 5))
        assert old.explore is not None
        assert all(x.mean is None and x.similar is None for x in old.explore.open)
        assert explorer.suggestions(old.explore, old.weights, old.clock) == (
            explorer.suggestions(bare, p.weights, p.clock)
        )
        again = decode_profile(encode_profile(old))  # stored again as format 6: still None
        assert again.explore == old.explore
    assert decided > 50  # 91 on these shoppers


def test_an_exposure_keeps_an_interest_of_any_length() -> None:
    p = run([ev("view", T0, category="c1", item="a")])
    for similar in (None, "c1", "é" * 128):  # 256 bytes: its length takes 3 bytes
        state = ExploreState(
            p.clock, {}, (Exposure(2, p.clock, f32(0.5), 1, f32(0.25), f32(2.5), similar),)
        )
        q = dataclasses.replace(p, explore=state)
        same(decode_profile(encode_profile(q)), q)
        extra = 0 if similar is None else len(similar.encode()) + (2 if len(similar) > 100 else 0)
        assert section_sizes(q)["exploration"] == 1 + 4 + 1 + 1 + 19 + extra


def test_narrowed_fields_saturate_or_keep_their_full_width() -> None:
    p = run([ev("view", T0, category="c1", item="a"), ev("view", T0 + 30, category="é" * 200)])
    assert section_sizes(p)["weights"] == 1 + 2 + len("c1 ") + 400 + 4 * 2
    same(decode_profile(encode_profile(p)), p)
    # A name with a NUL (the separator) makes every name carry its length (2 bytes) instead.
    nul = run([ev("view", T0, category="c\0"), ev("view", T0 + 30, category="")])
    assert section_sizes(nul)["weights"] == 1 + 2 * 2 + len("c\0") + 4 * 2
    same(decode_profile(encode_profile(nul)), nul)

    # Exploration times: 4 bytes within 71 minutes before the clock in whole microseconds;
    # anything else (after the clock, older, finer than a microsecond) its full 8 more.
    near = ExploreState(p.clock - 0.000001, {1: (0.0, 0.0)}, (Exposure(2, p.clock, 0.5, 0),))
    far = ExploreState(
        p.clock - 4295.0,  # past the 4 bytes (4294.967295 s)
        {1: (0.0, 0.0)},
        (Exposure(2, p.clock + 5.0, 0.5, 0),),  # after the clock
    )
    fine = ExploreState(p.clock - 4294.967294, {1: (0.0, 0.0)}, (Exposure(2, T0 + 2**-22, 1, 0),))
    sizes = {}
    for name, state in (("near", near), ("far", far), ("fine", fine)):
        q = dataclasses.replace(p, explore=state)
        same(decode_profile(encode_profile(q)), q)
        sizes[name] = section_sizes(q)["exploration"]
    assert sizes["far"] == sizes["near"] + 16 and sizes["fine"] == sizes["near"] + 8
    # A clock that is not a whole number of microseconds still works as the reference.
    odd = dataclasses.replace(p, clock=p.clock + 2**-22, explore=near)
    assert odd.clock != p.clock
    same(decode_profile(encode_profile(odd)), odd)

    # Weights beyond float32 (no event makes one: each adds at most 3) saturate, not raise.
    item = next(iter(p.items))
    huge = dataclasses.replace(p, weights={**p.weights, "c1": 1e39}, items={**p.items, item: 1e39})
    back = decode_profile(encode_profile(huge))
    assert back.weights["c1"] == F32_MAX and back.items[item] == F32_MAX
    # Item times after the clock (not made by an event either) saturate at age 0.
    ahead = dataclasses.replace(
        p, item_info={**p.item_info, item: (int(p.clock) + 99, int(p.clock) + 99, 1, 0, 1)}
    )
    assert decode_profile(encode_profile(ahead)).item_info[item][:2] == (int(p.clock),) * 2
    assert np.isfinite(feature_vector(back, ev("view", p.clock, category="c1"), EMB)).all()


def test_only_the_current_format_and_the_one_before_are_written() -> None:
    p = run([ev("view", T0, category="c1", item="a")])
    assert encode_profile(p, 5) == _encode(p, 5) and encode_profile(p) == _encode(p, 6)
    for version in (4, 7):
        with pytest.raises(ValueError, match=f"profile format {version} cannot be written"):
            encode_profile(p, version)


_f32s = st.floats(min_value=0.0, max_value=1e6, allow_nan=False, width=32)
_exposures = st.builds(
    Exposure,
    arm=st.integers(0, 254),
    opened_at=st.floats(T0 - 10_000.0, T0 + 10_000.0, allow_nan=False),
    propensity=st.floats(0.0, 1.0, width=32),
    draw=st.integers(0, 2),
    mean=st.none() | st.floats(0.0, 1.0, width=32),
    strength=st.none() | _f32s,
    similar=st.none() | st.text(min_size=1, max_size=128),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    opened=st.lists(_exposures, max_size=8),
    counts=st.dictionaries(st.integers(0, 254), st.tuples(_f32s, _f32s), max_size=32),
)
def test_any_exploration_state_round_trips_in_format_6_and_loses_only_decisions_in_5(
    opened: list[Exposure], counts: dict[int, tuple[float, float]]
) -> None:
    p = run([ev("view", T0, category="c1", item="a")])
    state = ExploreState(p.clock - 30.0, counts, tuple(opened))
    q = dataclasses.replace(p, explore=state)
    back = decode_profile(encode_profile(q))
    assert back.explore is not None
    # An exposure without both figures is stored without them (an older format's exposure).
    whole = tuple(
        x if x.mean is not None and x.strength is not None
        else dataclasses.replace(x, mean=None, strength=None)
        for x in opened
    )  # fmt: skip
    assert back.explore == dataclasses.replace(state, open=whole)
    old = decode_profile(encode_profile(q, 5)).explore
    assert old is not None
    assert old.open == tuple(Exposure(x.arm, x.opened_at, x.propensity, x.draw) for x in opened)
    assert old.counts == state.counts


_T = 1_767_225_600.0  # a profile clock (2026-01-01)
_STATES = [
    ExploreState(_T - 30.0),
    ExploreState(_T - 30.0, {}, (
        Exposure(3, _T - 12.5, 0.5, 1, 0.25, 8.0),
        Exposure(7, _T - 1.0, 0.125, 2, 0.5, 4.0, "c0001"),
    )),
    ExploreState(
        _T - 30.0, {4: (1.0, 0.0), 9: (0.0, 2.5), 200: (0.5, 0.25)},
        (Exposure(4, _T - 86_400.0, 0.75, 0),),  # a time too far for a u32, no posterior
    ),
    ExploreState(_T - 30.0, {}, (Exposure(1, _T - 5.0, 0.5, 1, None, None, "x" * 300),)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "clock", "decisions", "expected"),
    [
        (0, _T, True, bytes.fromhex("80c3c9010000")),
        (0, _T, False, bytes.fromhex("80c3c9010000")),
        (0, math.nan, True, bytes.fromhex("ffffffff000080386e55da410000")),
        (1, _T, True, bytes.fromhex(
            "80c3c901000203010000003f0000803e0000004120bcbe000007020000003e0000003f00"
            "00804040420f00056330303031"
        )),
        (1, _T, False, bytes.fromhex("80c3c901000203010000003f20bcbe0007020000003e40420f00")),
        (1, math.nan, True, bytes.fromhex(
            "ffffffff000080386e55da41000203010000003f0000803e00000041ffffffff0000e03c"
            "6e55da410007020000003e0000003f00008040ffffffff0000c03f6e55da410563303030"
            "31"
        )),
        (2, _T, True, bytes.fromhex(
            "80c3c901030409c8390000803f000020400000003f0000803e0104000000403f0000c07f"
            "0000c07fffffffff000000e01955da4100"
        )),
        (2, _T, False, bytes.fromhex(
            "80c3c901030409c8390000803f000020400000003f0000803e0104000000403fffffffff"
            "000000e01955da41"
        )),
        (2, math.nan, True, bytes.fromhex(
            "ffffffff000080386e55da41030409c8390000803f000020400000003f0000803e010400"
            "0000403f0000c07f0000c07fffffffff000000e01955da4100"
        )),
        (3, _T, True, bytes.fromhex(
            "80c3c901000101010000003f0000c07f0000c07f404b4c00ff2c01"
        ) + b"x" * 300),
        (3, _T, False, bytes.fromhex("80c3c901000101010000003f404b4c00")),
        (3, math.nan, True, bytes.fromhex(
            "ffffffff000080386e55da41000101010000003f0000c07f0000c07fffffffff0000c03e"
            "6e55da41ff2c01"
        ) + b"x" * 300),
    ],
)  # fmt: skip
def test_exploration_state_bytes_are_those_formats_5_and_6_always_wrote(
    case: int, clock: float, decisions: bool, expected: bytes
) -> None:
    """Bytes written before ``encode_state``'s shortcuts (no counts, no similar interest,
    ``_micros`` inlined): no counts, a name, a far time, a long name, a clock that is not
    finite."""
    out = bytearray()
    encode_state(_STATES[case], clock, out, decisions=decisions)
    assert bytes(out) == expected
