"""Item memory (format 3): per-item history, the open cart, repeats in the session, the user's
propensity, the recent sequence; the feature values they give; and the encoding's trailing
sections (a format 2 profile still decodes)."""

from __future__ import annotations

import dataclasses
import math
import statistics

import numpy as np
import pytest

from streams.errors import ProfileDecodeError
from streams.features import (
    PROFILE_FORMAT_VERSION,
    CategoryEmbeddings,
    Profile,
    decode_profile,
    encode_profile,
    feature_vector,
    stable_hash,
    update,
)
from streams.features.encoding import _encode
from streams.features.profile import (
    CART_TTL_S,
    COUNT_MAX,
    GAP_MAX,
    SEQ_CATEGORY_BUCKETS,
    SEQ_GAP_SCALE_S,
    SEQ_LEN,
    SESSION_GAP_S,
    TOP_K_ITEMS,
    TYPE_INDEX,
)
from streams.features.vector import (
    FEATURE_NAMES,
    N_DENSE_FEATURES,
    RECENCY_CAP_S,
    SEQUENCE_SCALES,
)
from streams.sources.taobao import read_rows, to_events
from tests.conftest import TAOBAO_CSV
from tests.model_fixtures import T0, Ev, ev
from tests.model_fixtures import replay as run

COL = {name: i for i, name in enumerate(FEATURE_NAMES)}
EMB = CategoryEmbeddings.empty()


def features(events: list[Ev]) -> dict[str, float]:
    x = feature_vector(run(events), events[-1], EMB)
    return {name: float(x[i]) for i, name in enumerate(FEATURE_NAMES)}


def test_item_memory_records_first_and_last_touch_carts_and_favourites() -> None:
    events = [
        ev("view", T0, item="a"),
        ev("favorite", T0 + 60.7, item="a"),
        ev("view", T0 + 100, item="b"),
        ev("add_to_cart", T0 + 7200, item="a"),  # a new session
    ]
    p = run(events)
    a = stable_hash("a")
    assert p.item_info[a] == (math.floor(T0), math.floor(T0 + 7200), 1, 1, 1)
    assert p.item_info.keys() == p.items.keys()
    assert p.item_gap_s == 7200 - 60  # whole seconds since the favourite
    x = features(events)
    assert x["item_new"] == 0.0
    assert x["item_gap_log"] == pytest.approx(math.log1p(7140), rel=1e-6)
    assert x["item_first_age_log"] == pytest.approx(math.log1p(7200), rel=1e-6)
    assert x["item_carts_log"] == pytest.approx(math.log1p(1), rel=1e-6)
    assert x["item_favorites_log"] == pytest.approx(math.log1p(1), rel=1e-6)
    assert x["item_session_touches_log"] == pytest.approx(math.log1p(1), rel=1e-6)
    first = features(events[:1])
    assert first["item_new"] == 1.0
    assert first["item_gap_log"] == pytest.approx(math.log1p(RECENCY_CAP_S), rel=1e-6)
    assert first["item_first_age_log"] == 0.0


def test_repeats_in_a_session_are_counted_and_reset_by_a_new_session() -> None:
    events = [
        ev("view", T0, item="a"),
        ev("view", T0 + 10, item="b"),
        ev("view", T0 + 20, item="a"),
        ev("view", T0 + 30, item="a"),
    ]
    p = run(events)
    assert p.session_repeats == 2
    assert p.item_info[stable_hash("a")][4] == 3
    x = features(events)
    assert x["session_repeat_share"] == pytest.approx(2 / 4, rel=1e-6)
    assert x["item_session_touches_log"] == pytest.approx(math.log1p(3), rel=1e-6)
    later = [*events, ev("view", T0 + 30 + SESSION_GAP_S + 1, item="a")]
    q = run(later)
    assert q.session_repeats == 0 and q.item_info[stable_hash("a")][4] == 1
    # An item last touched in an earlier session counts no touches in this one.
    other = [*events, ev("view", T0 + 40 + SESSION_GAP_S, item="b")]
    y = feature_vector(run(other), ev("view", T0 + 40 + SESSION_GAP_S, item="a"), EMB)
    assert y[COL["item_session_touches_log"]] == 0.0


def test_counters_saturate_and_item_memory_follows_eviction() -> None:
    p = run([ev("add_to_cart", T0 + i, item="a") for i in range(COUNT_MAX + 20)])
    assert p.item_info[stable_hash("a")][2:] == (COUNT_MAX, 0, COUNT_MAX)
    assert p.total_carts == COUNT_MAX + 20  # lifetime counters do not saturate at 255
    q = run([ev("view", T0 + i, item=f"i{i}") for i in range(3 * TOP_K_ITEMS)])
    assert len(q.items) == TOP_K_ITEMS and q.item_info.keys() == q.items.keys()


def test_open_cart_ages_and_the_current_items_cart_age() -> None:
    events = [
        ev("add_to_cart", T0, item="a"),
        ev("add_to_cart", T0 + 600, item="b"),
        ev("purchase", T0 + 700, item="b"),
        ev("add_to_cart", T0 + 1000, item="c"),
        ev("view", T0 + 1600, item="a"),
    ]
    x = features(events)
    assert x["cart_open_log"] == pytest.approx(math.log1p(2), rel=1e-6)  # a and c
    assert x["cart_newest_age_log"] == pytest.approx(math.log1p(600), rel=1e-6)
    assert x["cart_oldest_age_log"] == pytest.approx(math.log1p(1600), rel=1e-6)
    assert x["item_cart_age_log"] == pytest.approx(math.log1p(1600), rel=1e-6)
    assert x["session_purchases_log"] == pytest.approx(math.log1p(1), rel=1e-6)
    empty = features([ev("view", T0, item="z")])
    assert empty["cart_open_log"] == 0.0
    assert empty["cart_newest_age_log"] == pytest.approx(math.log1p(CART_TTL_S), rel=1e-6)
    assert empty["item_cart_age_log"] == pytest.approx(math.log1p(CART_TTL_S), rel=1e-6)


def test_propensity_is_purchases_against_carts_and_favourites() -> None:
    events = [
        ev("add_to_cart", T0, item="a"),
        ev("favorite", T0 + 5, item="b"),
        ev("purchase", T0 + 10, item="a"),
        ev("view", T0 + 20, item="c"),
    ]
    p = run(events)
    assert (p.total_purchases, p.total_carts, p.total_favorites) == (1, 1, 1)
    x = features(events)
    assert x["conversion_rate"] == pytest.approx(1 / 3, rel=1e-6)
    # The decayed counts: the purchase is the newest, so it has decayed least.
    assert 1 / 3 < x["conversion_rate_long"] < 1 / 3 + 1e-4


def test_an_out_of_order_touch_widens_the_items_times() -> None:
    p = run([ev("view", T0 + 100, item="a"), ev("view", T0 + 50, item="a")])
    first, last, *_ = p.item_info[stable_hash("a")]
    assert (first, last) == (math.floor(T0 + 50), math.floor(T0 + 100))
    assert p.item_gap_s == 0


def _busy_profile() -> Profile:
    kinds = ("view", "view", "view", "favorite", "add_to_cart", "view", "purchase")
    return run(
        [
            ev(kinds[i % 7], T0 + 97.5 * i, category=f"cat-{i % 40}", item=f"i{i % 25}")
            for i in range(500)
        ]
    )


def test_the_current_format_round_trip_is_exact() -> None:
    p = _busy_profile()
    data = encode_profile(p)
    assert data[2] == PROFILE_FORMAT_VERSION == 6
    assert decode_profile(data) == p
    for field in dataclasses.fields(Profile):  # every field is encoded by some section
        assert getattr(decode_profile(data), field.name) == getattr(p, field.name)


def test_absurd_item_times_saturate_and_still_round_trip_exactly() -> None:
    """Valid inputs with absurd dates (year 1, 1900, 2100): item times are kept from 1970 on and
    the gap saturates at its 32 bits, so the profile encodes, and decodes to itself, instead of
    overflowing the encoder at the next checkpoint."""
    ancient = run([ev("view", -62_135_596_800.0), ev("view", -2_208_988_800.0), ev("view", T0)])
    assert ancient.item_info[stable_hash("i1")][0] == 0  # first touch: 1970
    assert ancient.item_gap_s == math.floor(T0)
    assert decode_profile(encode_profile(ancient)) == ancient
    only_ancient = run([ev("view", -62_135_596_800.0)])  # the clock itself is in year 1
    assert decode_profile(encode_profile(only_ancient)) == only_ancient
    future = run([ev("view", 0.0), ev("view", 4_102_444_800.0)])  # 1970, then 2100
    assert future.item_gap_s == GAP_MAX
    assert decode_profile(encode_profile(future)) == future


def test_a_format_2_profile_decodes_with_its_items_touched_at_its_clock() -> None:
    p = _busy_profile()
    v2, v3 = _encode(p, 2), _encode(p, 3)
    assert v2[:2] + v3[2:3] + v2[3:] == v3[: len(v2)]  # format 3 appended sections to 2
    old = decode_profile(v2)
    now = math.floor(p.clock)
    assert old.item_info == {item: (now, now, 0, 0, 0) for item in p.items}
    assert (old.total_carts, old.item_gap_s, old.session_repeats) == (0, -1, 0)
    same = {"item_info", "item_gap_s", "session_repeats", "session_purchases", "recent"}
    same |= {"total_carts", "total_favorites", "total_purchases"}
    for field in dataclasses.fields(Profile):
        if field.name not in same:
            assert getattr(old, field.name) == getattr(p, field.name), field.name
    # An upgraded profile keeps working: the next event updates it and it encodes as format 6.
    nxt = update(old, ev("view", p.clock + 5, item="i3"))
    assert decode_profile(encode_profile(nxt)) == nxt
    with pytest.raises(ProfileDecodeError, match="trailing"):
        decode_profile(v3[:2] + b"\x02" + v3[3:])


def test_a_full_profile_is_bounded_and_real_shoppers_average_under_a_kilobyte() -> None:
    p = _busy_profile()  # every top-K structure full: the worst case
    assert len(p.items) == TOP_K_ITEMS and len(p.weights) == 32 and len(p.cart) >= 12
    assert len(encode_profile(p)) <= 1200  # formats 5 and 6: 1,151 bytes (format 4: 1,392)
    if not TAOBAO_CSV.exists():
        pytest.skip(f"the Taobao sample is not at {TAOBAO_CSV} (it ships in data/taobao)")
    profiles: dict[str, Profile] = {}
    for event in to_events(read_rows(TAOBAO_CSV)):
        profiles[event.user_id] = update(profiles.get(event.user_id), event)
    sizes = [len(encode_profile(q)) for q in profiles.values()]
    assert len(sizes) == 815
    assert statistics.mean(sizes) <= 768  # formats 5 and 6: 695 bytes (format 4: 820)


def test_the_recent_sequence_keeps_the_last_events_as_small_integers() -> None:
    events = [
        ev("view", T0, item="a", category="c1"),
        ev("view", T0 + 60, item="a", category="c1"),
        ev("search", T0 + 90),
        ev("add_to_cart", T0 + 90 + SEQ_GAP_SCALE_S * 2, item="b", category="c2"),
    ]
    p = run(events)
    bucket = 1 + stable_hash("c1") % SEQ_CATEGORY_BUCKETS
    view, search, cart = (1 + TYPE_INDEX[t] for t in ("view", "search", "add_to_cart"))
    gap60 = round(255 * math.log1p(60) / math.log1p(SEQ_GAP_SCALE_S))
    assert p.recent == (
        (bucket, view, 0),  # the first event: no gap
        (bucket, view + 8, gap60),  # the same item again: the repeat flag
        (0, search, round(255 * math.log1p(30) / math.log1p(SEQ_GAP_SCALE_S))),
        (1 + stable_hash("c2") % SEQ_CATEGORY_BUCKETS, cart, 255),  # gaps saturate
    )
    x = feature_vector(p, events[-1], EMB)
    seq = x[N_DENSE_FEATURES:].reshape(SEQ_LEN, 3)
    assert (seq[: SEQ_LEN - 4] == 0).all()  # left-padded with zero rows
    scaled = np.asarray(p.recent) / np.asarray(SEQUENCE_SCALES)  # every column in [0, 1]
    np.testing.assert_array_equal(seq[SEQ_LEN - 4 :], scaled.astype(np.float32))
    restored = np.round(seq[SEQ_LEN - 4 :].astype(np.float32) * np.float32(SEQUENCE_SCALES))
    np.testing.assert_array_equal(restored, np.asarray(p.recent))  # what the encoder reads
    long = run([ev("view", T0 + i, item=f"i{i}") for i in range(3 * SEQ_LEN)])
    assert len(long.recent) == SEQ_LEN
    assert decode_profile(encode_profile(long)) == long


def test_a_format_3_profile_decodes_without_exploration() -> None:
    p = _busy_profile()
    v3, v4 = _encode(p, 3), _encode(p, 4)
    assert p.explore is None and v4[:2] + v4[3:-1] == v3[:2] + v3[3:]  # 4 appended a 0 byte
    assert decode_profile(v3) == p
