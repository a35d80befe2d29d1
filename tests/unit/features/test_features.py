"""The pure feature code: decay in closed form, event-time order, eviction, sessions, encoding,
the feature vector, and properties over random event sequences."""

from __future__ import annotations

import copy
import math
from array import array
from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.contracts.events import ClickEvent, EventType
from streams.errors import DataError, ProfileDecodeError
from streams.features import (
    EMBEDDING_DIM,
    EVENT_TYPES,
    FEATURE_NAMES,
    FEATURE_SPEC,
    INTEREST_HALF_LIFE_S,
    LONG_HALF_LIFE_S,
    N_FEATURES,
    SESSION_GAP_S,
    SHORT_HALF_LIFE_S,
    TOP_K_CATEGORIES,
    CategoryEmbeddings,
    FeatureSpec,
    Profile,
    decode_profile,
    encode_profile,
    feature_matrix,
    feature_vector,
    hashed_vector,
    top_categories,
    update,
)
from streams.features.profile import CART_TTL_S, INTEREST_WEIGHTS, TYPE_INDEX
from streams.features.vector import RECENCY_CAP_S
from tests.model_fixtures import T0, Ev, ev
from tests.model_fixtures import replay as run

HL = INTEREST_HALF_LIFE_S
VIEW = TYPE_INDEX["view"]
CART = TYPE_INDEX["add_to_cart"]
COL = {name: i for i, name in enumerate(FEATURE_NAMES)}


# --- decay -------------------------------------------------------------------------------


def test_first_event_starts_the_profile() -> None:
    p = update(None, ev("view", T0, category="c1"))
    assert p.clock == T0
    assert p.weights == {"c1": 1.0}
    assert p.short_counts[VIEW] == 1.0 and p.long_counts[VIEW] == 1.0
    assert p.n_events == 1 and p.last_gap_s == -1.0
    assert (p.session_start, p.session_last, p.session_events) == (T0, T0, 1)


def test_interest_decays_by_half_each_half_life() -> None:
    p = run([ev("view", T0, category="c1"), ev("view", T0 + HL, category="c1")])
    assert p.weights["c1"] == pytest.approx(0.5 + 1.0, rel=1e-12)
    p = update(p, ev("add_to_cart", T0 + 3 * HL, category="c2"))
    assert p.weights["c1"] == pytest.approx(1.5 * 0.25, rel=1e-12)
    assert p.weights["c2"] == INTEREST_WEIGHTS["add_to_cart"]
    assert p.clock == T0 + 3 * HL


@pytest.mark.parametrize("dt", [1.0, 600.0, 1800.0, 7200.0, 86_400.0])
def test_counts_decay_at_short_and_long_half_lives(dt: float) -> None:
    p = run([ev("view", T0), ev("view", T0 + dt)])
    assert p.short_counts[VIEW] == pytest.approx(1 + 2 ** (-dt / SHORT_HALF_LIFE_S), rel=1e-12)
    assert p.long_counts[VIEW] == pytest.approx(1 + 2 ** (-dt / LONG_HALF_LIFE_S), rel=1e-12)
    assert p.last_gap_s == dt


def test_lazy_decay_matches_closed_form_over_many_steps() -> None:
    times = [T0 + 137.0 * i**1.5 for i in range(40)]
    p = run([ev("view", t, category="c1") for t in times])
    expected = sum(2 ** (-(times[-1] - t) / HL) for t in times)
    # Weights are float32 (the stored precision), rounded at every event: 40 roundings.
    assert p.weights["c1"] == pytest.approx(expected, rel=40 * 2**-24)


def test_search_without_category_counts_but_adds_no_interest() -> None:
    p = run([ev("view", T0, category="c1"), ev("search", T0 + 10)])
    assert p.weights == {"c1": pytest.approx(2 ** (-10 / HL))}
    assert p.short_counts[TYPE_INDEX["search"]] == 1.0


def test_unknown_event_type_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown event_type 'teleport'"):
        update(None, ev("teleport"))


# --- out of order ------------------------------------------------------------------------


def test_an_older_event_is_decayed_to_the_clock_never_backwards() -> None:
    p = run([ev("view", T0 + HL, category="c1"), ev("view", T0, category="c2")])
    assert p.clock == T0 + HL  # the clock never moves back
    assert p.weights["c1"] == 1.0  # not "un-decayed"
    assert p.weights["c2"] == pytest.approx(0.5, rel=1e-12)
    assert p.last_gap_s == 0.0
    assert p.n_events == 2


def test_additive_state_does_not_depend_on_arrival_order() -> None:
    events = [
        ev("view", T0, category="c1"),
        ev("add_to_cart", T0 + 500, category="c2"),
        ev("view", T0 + 4000, category="c1"),
        ev("favorite", T0 + 9000, category="c3"),
    ]
    in_order = run(events)
    shuffled = run([events[2], events[0], events[3], events[1]])
    assert shuffled.clock == in_order.clock
    assert shuffled.weights == pytest.approx(in_order.weights, rel=1e-12)
    assert shuffled.short_counts == pytest.approx(in_order.short_counts, rel=1e-12)
    assert shuffled.long_counts == pytest.approx(in_order.long_counts, rel=1e-12)


# --- top-K -------------------------------------------------------------------------------


def test_weakest_category_is_evicted_beyond_top_k() -> None:
    events = [ev("view", T0 + 60 * i, category=f"c{i:02d}") for i in range(TOP_K_CATEGORIES)]
    p = run(events)
    assert len(p.weights) == TOP_K_CATEGORIES
    p = update(p, ev("add_to_cart", T0 + 60 * TOP_K_CATEGORIES, category="new"))
    assert len(p.weights) == TOP_K_CATEGORIES
    assert "new" in p.weights
    assert "c00" not in p.weights  # the oldest view is the weakest
    assert "c01" in p.weights


def test_a_strong_old_interest_survives_many_weak_new_ones() -> None:
    p = run([ev("add_to_cart", T0, category="loved") for _ in range(5)])
    p = run([ev("view", T0 + i, category=f"x{i}") for i in range(1, 60)], p)
    assert "loved" in p.weights
    assert top_categories(p, 1)[0][0] == "loved"


def test_top_categories_are_shares_strongest_first() -> None:
    p = run(
        [
            ev("view", T0, category="a"),
            ev("add_to_cart", T0, category="b"),
            ev("view", T0, category="c"),
        ]
    )
    top = top_categories(p, 2)
    assert [c for c, _ in top] == ["b", "a"]  # tie between a and c broken by id
    assert top[0][1] == pytest.approx(3 / 5) and top[1][1] == pytest.approx(1 / 5)
    assert top_categories(p, 0) == []
    assert sum(w for _, w in top_categories(p, 10)) == pytest.approx(1.0)


# --- sessions ----------------------------------------------------------------------------


def test_session_continues_within_the_gap_and_restarts_after_it() -> None:
    p = run(
        [
            ev("view", T0, category="a"),
            ev("add_to_cart", T0 + SESSION_GAP_S, category="b"),  # exactly the gap: same
            ev("view", T0 + SESSION_GAP_S + 60, category="a"),
        ]
    )
    assert (p.session_start, p.session_events, p.session_carts) == (T0, 3, 1)
    assert len(p.session_categories) == 2
    later = T0 + 2 * SESSION_GAP_S + 61  # 30 min + 1 s after the last event
    p = update(p, ev("view", later, category="c"))
    assert (p.session_start, p.session_last, p.session_events, p.session_carts) == (
        later,
        later,
        1,
        0,
    )
    assert len(p.session_categories) == 1


def test_late_events_join_the_current_session_only_if_they_belong_to_it() -> None:
    p = run([ev("view", T0 + 7200), ev("view", T0 + 7300)])
    p2 = update(p, ev("add_to_cart", T0 + 7250))  # late, inside the session
    assert (p2.session_events, p2.session_carts, p2.session_start) == (3, 1, T0 + 7200)
    p3 = update(p, ev("add_to_cart", T0))  # late, from an earlier session
    assert (p3.session_events, p3.session_carts, p3.session_start) == (2, 0, T0 + 7200)
    assert p3.n_events == 3  # but it still counts for the user


def test_distinct_session_categories_are_bounded() -> None:
    p = run([ev("view", T0 + i, category=f"c{i}") for i in range(100)])
    assert len(p.session_categories) == 16
    assert p.session_events == 100


def test_cart_tracks_added_items_until_removed_or_bought() -> None:
    p = run([ev("add_to_cart", T0, item="a"), ev("add_to_cart", T0 + 1, item="b")])
    assert len(p.cart) == 2
    p = update(p, ev("remove_from_cart", T0 + 2, item="a"))
    assert len(p.cart) == 1
    p = update(p, ev("purchase", T0 + 3, item="b"))
    assert p.cart == ()


def test_cart_entries_expire_after_a_day() -> None:
    p = run([ev("add_to_cart", T0, item="old"), ev("add_to_cart", T0 + 3600, item="new")])
    assert len(p.cart) == 2
    p = update(p, ev("view", T0 + CART_TTL_S + 1, item="x"))
    assert [added for _, added in p.cart] == [T0 + 3600]
    late = update(p, ev("add_to_cart", T0, item="ancient"))  # late and already expired
    assert late.cart == p.cart


def test_cart_and_purchase_ages() -> None:
    emb = CategoryEmbeddings.empty()
    events = [ev("add_to_cart", T0), ev("purchase", T0 + 100), ev("view", T0 + 400)]
    p = run(events)
    x = feature_vector(p, events[-1], emb)
    assert x[COL["cart_age_log"]] == pytest.approx(math.log1p(400), rel=1e-6)
    assert x[COL["purchase_age_log"]] == pytest.approx(math.log1p(300), rel=1e-6)
    fresh = update(None, events[-1])
    y = feature_vector(fresh, events[-1], emb)
    assert (
        y[COL["cart_age_log"]]
        == y[COL["purchase_age_log"]]
        == pytest.approx(math.log1p(RECENCY_CAP_S), rel=1e-6)
    )


# --- encoding ----------------------------------------------------------------------------


def test_encode_decode_round_trip_is_exact_and_small() -> None:
    events = [
        ev(EVENT_TYPES[i % 7], T0 + 97.5 * i, category=f"cat-{i % 40}", item=f"i{i % 25}")
        for i in range(500)
    ]
    p = run(events)
    data = encode_profile(p)
    assert len(data) <= 2048
    assert decode_profile(data) == p
    assert encode_profile(decode_profile(data)) == data


def test_decode_rejects_unknown_version_truncation_and_garbage() -> None:
    data = encode_profile(update(None, ev()))
    with pytest.raises(ProfileDecodeError, match="version 9 is unknown"):
        decode_profile(data[:2] + bytes([9]) + data[3:])
    with pytest.raises(ProfileDecodeError, match="truncated"):
        decode_profile(data[:-3])
    with pytest.raises(ProfileDecodeError, match="trailing"):
        decode_profile(data + b"\x00")
    with pytest.raises(ProfileDecodeError, match="not a profile"):
        decode_profile(b"garbage bytes")
    with pytest.raises(ProfileDecodeError, match="too short"):
        decode_profile(b"i")


# --- feature vector ----------------------------------------------------------------------


def test_spec_is_frozen_and_hashed() -> None:
    assert len(FEATURE_SPEC) == N_FEATURES == len(set(FEATURE_NAMES))
    assert FEATURE_SPEC.dtype == "float32"
    assert len(FEATURE_SPEC.hash) == 64
    assert FEATURE_SPEC.hash == FeatureSpec(**vars(FEATURE_SPEC)).hash
    renamed = FeatureSpec(
        FEATURE_SPEC.version, (*FEATURE_SPEC.names[:-1], "x"), "float32", FEATURE_SPEC.params
    )
    assert renamed.hash != FEATURE_SPEC.hash
    with pytest.raises(AttributeError):
        FEATURE_SPEC.version = "2"  # type: ignore[misc]


def test_feature_values_mean_what_their_names_say() -> None:
    emb = CategoryEmbeddings.empty()
    hour = 13
    start = datetime(2024, 3, 1, hour, 0, tzinfo=UTC).timestamp()
    events = [
        ev("view", start - 600, category="a", price=10.0),
        ev("view", start - 300, category="b", price=30.0),
        ev("add_to_cart", start, category="a", price=10.0, item="i9"),
    ]
    p = run(events)
    x = feature_vector(p, events[-1], emb)
    assert x.dtype == np.float32 and x.shape == (N_FEATURES,)
    total = sum(p.weights.values())
    assert x[COL["category_share"]] == pytest.approx(p.weights["a"] / total, rel=1e-6)
    assert x[COL["type_add_to_cart"]] == 1.0 and x[COL["type_view"]] == 0.0
    assert x[COL["recency_log"]] == pytest.approx(math.log1p(300), rel=1e-6)
    assert x[COL["session_events_log"]] == pytest.approx(math.log1p(3), rel=1e-6)
    assert x[COL["session_carts_log"]] == pytest.approx(math.log1p(1), rel=1e-6)
    assert x[COL["session_categories"]] == 2
    assert x[COL["item_in_cart"]] == 1.0
    assert x[COL["price_missing"]] == 0.0
    assert x[COL["price_log"]] == pytest.approx(math.log1p(10.0), rel=1e-6)
    assert x[COL["price_rel_log"]] < 0  # cheaper than this user's mean
    assert x[COL["hour_sin"]] == pytest.approx(math.sin(2 * math.pi * hour / 24), abs=1e-6)
    assert x[COL["hour_cos"]] == pytest.approx(math.cos(2 * math.pi * hour / 24), abs=1e-6)
    assert x[COL["interest_hhi"]] == pytest.approx(
        sum((w / total) ** 2 for w in p.weights.values()), rel=1e-6
    )
    # The interest embedding is the weighted mean of (here hashed) category vectors.
    expected = sum(w * hashed_vector(c).astype(np.float64) for c, w in p.weights.items()) / total
    np.testing.assert_allclose(x[:EMBEDDING_DIM], expected, rtol=1e-6, atol=1e-7)
    first = feature_vector(update(None, events[0]), events[0], emb)
    assert first[COL["first_event"]] == 1.0 and first[COL["price_rel_log"]] == 0.0


def test_learned_vectors_take_precedence_over_the_hashed_fallback() -> None:
    matrix = np.zeros((2, EMBEDDING_DIM), dtype=np.float32)
    matrix[0, 0] = matrix[1, 1] = 1.0
    emb = CategoryEmbeddings(["a", "b"], matrix)
    np.testing.assert_array_equal(emb.vector("a"), matrix[0])
    np.testing.assert_array_equal(emb.vector("zz"), hashed_vector("zz"))
    np.testing.assert_array_equal(emb.vector("zz"), CategoryEmbeddings.empty().vector("zz"))
    assert float(np.linalg.norm(emb.vector("zz"))) == pytest.approx(1.0, rel=1e-6)
    events = [ev("view", T0, category="a"), ev("view", T0 + 1, category="a")]
    x = feature_vector(run(events), events[-1], emb)
    assert x[COL["category_cosine"]] == pytest.approx(1.0, rel=1e-6)
    np.testing.assert_allclose(x[:EMBEDDING_DIM], matrix[0], atol=1e-7)


def test_embeddings_save_and_load(tmp_path) -> None:
    rng = np.random.default_rng(0)
    emb = CategoryEmbeddings(["x", "y", "z"], rng.normal(size=(3, EMBEDDING_DIM)))
    emb.save(tmp_path / "e.npz")
    back = CategoryEmbeddings.load(tmp_path / "e.npz")
    assert back.ids == emb.ids
    np.testing.assert_array_equal(back.matrix, emb.matrix)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"bad\.npz"):
        CategoryEmbeddings.load(tmp_path / "bad.npz")


def test_feature_rows_do_not_depend_on_the_batch() -> None:
    events = [
        ev(EVENT_TYPES[(i * 3) % 7], T0 + 41.0 * i, user=f"u{i % 5}", category=f"c{i % 9}")
        for i in range(300)
    ]
    profiles: dict[str, Profile] = {}
    rows = []
    for e in events:
        profiles[e.user_id] = update(profiles.get(e.user_id), e)
        rows.append((profiles[e.user_id], e))
    emb = CategoryEmbeddings.empty()
    whole = feature_matrix(rows, emb)
    chunked = np.concatenate([feature_matrix(rows[i : i + 7], emb) for i in range(0, 300, 7)])
    single = np.stack([feature_vector(p, e, emb) for p, e in rows])
    np.testing.assert_array_equal(whole, chunked)
    np.testing.assert_array_equal(whole, single)
    assert feature_matrix([], emb).shape == (0, N_FEATURES)


def test_click_events_and_plain_events_give_the_same_features() -> None:
    e = ev("add_to_cart", T0 + 0.25, category="c7", item="i3", price=12.5)
    click = ClickEvent(
        schema_version="1",
        event_id=e.event_id,
        user_id=e.user_id,
        event_type=EventType.ADD_TO_CART,
        item_id="i3",
        category_id="c7",
        price=12.5,
        occurred_at=datetime.fromtimestamp(e.ts, UTC),
    )
    emb = CategoryEmbeddings.empty()
    assert update(None, click) == update(None, e)
    np.testing.assert_array_equal(
        feature_vector(update(None, click), click, emb), feature_vector(update(None, e), e, emb)
    )


# --- properties --------------------------------------------------------------------------

event_strategy = st.builds(
    lambda kind, dt, cat, item, price: (kind, dt, cat, item, price),
    st.sampled_from(EVENT_TYPES),
    st.floats(min_value=-7200, max_value=2 * 86400, allow_nan=False),
    st.sampled_from([f"c{i}" for i in range(45)]),
    st.sampled_from([f"i{i}" for i in range(30)]),
    st.one_of(st.none(), st.floats(min_value=0, max_value=1e6, allow_nan=False)),
)


def _build(spec: list[tuple[str, float, str, str, float | None]]) -> list[Ev]:
    t = T0
    out = []
    for kind, dt, cat, item, price in spec:
        t += dt  # negative steps make out-of-order events
        out.append(ev(kind, t, category=cat, item=item, price=price))
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(event_strategy, min_size=1, max_size=80))
def test_properties_over_random_sequences(spec) -> None:
    events = _build(spec)
    emb = CategoryEmbeddings.empty()
    profile: Profile | None = None
    for e in events:
        before = copy.deepcopy(profile)
        after = update(profile, e)
        assert profile == before  # update is pure: its input is untouched
        profile = after
        weights = list(profile.weights.values())
        assert all(math.isfinite(w) and w >= 0 for w in weights)
        assert len(weights) <= TOP_K_CATEGORIES
        items = list(profile.items.values())  # both float32 in memory, as stored
        assert array("f", weights).tolist() == weights and array("f", items).tolist() == items
        assert all(c >= 0 and math.isfinite(c) for c in profile.short_counts + profile.long_counts)
        assert profile.clock == max(x.ts for x in events[: events.index(e) + 1])
        assert decode_profile(encode_profile(profile)) == profile
        x = feature_vector(profile, e, emb)
        assert np.isfinite(x).all()
        shares = [w for _, w in top_categories(profile, 50)]
        assert all(0 <= s <= 1 for s in shares) and sum(shares) <= 1 + 1e-9
    assert profile is not None and profile.n_events == len(events)
