"""Per-user profile state and its pure update, in event time. Standard library only.

All decayed quantities in a ``Profile`` are stored *as of* ``profile.clock`` (the newest event
time seen). Decay is applied lazily: only when the user is next touched, by the time that has
passed since ``clock``. An event older than ``clock`` (out of order) never decays the state
backwards; its own contribution is decayed to the clock instead.
"""

from __future__ import annotations

import math
import zlib
from array import array
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from streams.features.explore import ExploreState, f32, strongest

EVENT_TYPES: tuple[str, ...] = (
    "view",
    "click",
    "search",
    "add_to_cart",
    "remove_from_cart",
    "favorite",
    "purchase",
)
TYPE_INDEX: dict[str, int] = {name: i for i, name in enumerate(EVENT_TYPES)}
N_TYPES = len(EVENT_TYPES)

INTEREST_HALF_LIFE_S = 3 * 3600.0  # category interest: the current shopping mission
SHORT_HALF_LIFE_S = 30 * 60.0  # event-type counts, short horizon
LONG_HALF_LIFE_S = 3 * 86400.0  # event-type counts, items and price mean: habits
SESSION_GAP_S = 30 * 60.0  # inactivity that ends a session
TOP_K_CATEGORIES = 32  # interest weights kept per user (weakest evicted)
TOP_K_ITEMS = 16  # item interaction weights kept per user
CART_MAX = 16  # items remembered as "in cart"
CART_TTL_S = 24 * 3600.0  # a cart entry older than this is forgotten (abandoned carts)
SESSION_CATEGORIES_MAX = 16  # distinct categories counted per session (saturates)
MIN_WEIGHT = 1e-4  # decayed weights below this are dropped (about 13 half-lives of a view)

# How much one event of each type adds to its category's interest.
INTEREST_WEIGHTS: dict[str, float] = {
    "view": 1.0,
    "click": 1.0,
    "search": 0.5,
    "add_to_cart": 3.0,
    "remove_from_cart": 0.0,
    "favorite": 2.0,
    "purchase": 2.0,
}

COUNT_MAX = 255  # per-item counters (carts, favourites, touches this session) saturate here
GAP_MAX = 2**31 - 1  # seconds since an item's last touch, as stored (about 68 years)
SEQ_LEN = 16  # events kept in the recent sequence (the sequence encoder's input)
SEQ_CATEGORY_BUCKETS = 4093  # categories hashed into 1..4093; 0 means no category
SEQ_GAP_SCALE_S = 30 * 86400.0  # a gap of this long or more is code 255 (log scale)


class EventLike(Protocol):
    """What the feature code reads from an event (``streams.contracts.events.ClickEvent`` fits)."""

    @property
    def event_id(self) -> str: ...
    @property
    def user_id(self) -> str: ...
    @property
    def session_id(self) -> str | None: ...
    @property
    def event_type(self) -> str: ...
    @property
    def item_id(self) -> str | None: ...
    @property
    def category_id(self) -> str | None: ...
    @property
    def price(self) -> float | None: ...
    @property
    def quantity(self) -> int | None: ...
    @property
    def ts(self) -> float: ...


@dataclass(slots=True)
class Profile:
    """One user's state. Treat as immutable: ``update`` returns a new one."""

    clock: float  # newest event time seen, unix seconds; decayed values are as of this time
    n_events: int = 0
    last_gap_s: float = -1.0  # seconds from the previous event to the latest one; -1: first
    # Category -> decayed interest. Weights here and in ``items`` are float32 values, the
    # precision the profile is stored in, so that a decoded profile equals the one in memory.
    weights: dict[str, float] = field(default_factory=dict)
    short_counts: tuple[float, ...] = (0.0,) * N_TYPES  # per EVENT_TYPES, SHORT_HALF_LIFE_S
    long_counts: tuple[float, ...] = (0.0,) * N_TYPES  # per EVENT_TYPES, LONG_HALF_LIFE_S
    price_sum: float = 0.0  # decayed (long) sum of prices seen
    price_n: float = 0.0  # decayed (long) number of priced events
    items: dict[int, float] = field(default_factory=dict)  # item hash -> decayed touches
    cart: tuple[tuple[int, float], ...] = ()  # (item hash, added at): not removed/bought/expired
    last_cart_ts: float = -1.0  # newest add_to_cart time; -1: never
    last_purchase_ts: float = -1.0  # newest purchase time; -1: never
    session_start: float = 0.0
    session_last: float = 0.0
    session_events: int = 0
    session_carts: int = 0
    session_categories: tuple[int, ...] = ()  # crc32 of distinct categories, bounded
    # Item memory, one entry per key of ``items`` (same keys): (first touch, last touch, in
    # whole unix seconds; carts, favourites, touches this session, each saturating at
    # COUNT_MAX). Whole seconds so that the compact encoding round-trips exactly.
    item_info: dict[int, tuple[int, int, int, int, int]] = field(default_factory=dict)
    item_gap_s: int = -1  # seconds since this event's item was last touched; -1: new or none
    session_repeats: int = 0  # events this session on an item already touched this session
    session_purchases: int = 0
    total_carts: int = 0  # lifetime counts, not decayed: the user's conversion propensity
    total_favorites: int = 0
    total_purchases: int = 0
    # The last SEQ_LEN events in arrival order, oldest first, each (category bucket, code, gap
    # code): code = 1 + type index + 8 if the item was touched before (0 is never used, so a
    # zero row is padding); gap code = log-scaled seconds since the user's previous event.
    recent: tuple[tuple[int, int, int], ...] = ()
    # Exploration (streams.features.explore): counts and open suggestions; None when off.
    explore: ExploreState | None = None


def stable_hash(value: str) -> int:
    """A 32-bit hash that is the same in every process (unlike ``hash``)."""
    return zlib.crc32(value.encode("utf-8"))


def type_index(event_type: str) -> int:
    """Index of an event type in ``EVENT_TYPES`` (accepts a StrEnum or its value)."""
    try:
        return TYPE_INDEX[str(event_type)]
    except KeyError:
        raise ValueError(
            f"unknown event_type {str(event_type)!r}; expected one of {', '.join(EVENT_TYPES)}"
        ) from None


_K = TypeVar("_K", str, int)


def float32_values(values: dict[_K, float], factor: float = 1.0) -> dict[_K, float]:
    """A new mapping, in the same order, of each value times ``factor`` rounded to float32
    (the precision of the stored weights; no weight comes near its range, as each event adds
    at most 3)."""
    rounded = array("f", [v * factor for v in values.values()]).tolist()
    return dict(zip(values, rounded, strict=False))  # one value per key


def _decay(age_s: float, half_life_s: float) -> float:
    return 0.5 ** (age_s / half_life_s) if age_s > 0 else 1.0


def _top_k(weights: dict, k: int) -> None:
    """Drop negligible entries, then evict the weakest until at most ``k`` remain (in place)."""
    if weights and min(weights.values()) < MIN_WEIGHT:
        for key in [key for key, w in weights.items() if w < MIN_WEIGHT]:
            del weights[key]
    while len(weights) > k:
        # Weakest first; ties broken by key (as text) so eviction is deterministic.
        low = min(weights.values())
        del weights[min((key for key, w in weights.items() if w == low), key=str)]


def update(profile: Profile | None, event: EventLike) -> Profile:
    """The profile after ``event``. Pure: ``profile`` is never mutated."""
    ts = float(event.ts)
    if not math.isfinite(ts):
        raise ValueError(f"event {event.event_id}: time is not finite ({ts})")
    etype = str(event.event_type)
    k = type_index(etype)

    if profile is None:
        p = Profile(clock=ts, session_start=ts, session_last=ts)
        weights: dict[str, float] = {}
        items: dict[int, float] = {}
        short, long_ = [0.0] * N_TYPES, [0.0] * N_TYPES
        price_sum = price_n = 0.0
        age = 0.0
        last_gap = -1.0
        new_session = True
    else:
        p = profile
        if ts >= p.clock:
            dt = ts - p.clock
            f_int = _decay(dt, INTEREST_HALF_LIFE_S)
            f_short = _decay(dt, SHORT_HALF_LIFE_S)
            f_long = _decay(dt, LONG_HALF_LIFE_S)
            weights = float32_values(p.weights, f_int)
            items = float32_values(p.items, f_long)
            short = [c * f_short for c in p.short_counts]
            long_ = [c * f_long for c in p.long_counts]
            price_sum, price_n = p.price_sum * f_long, p.price_n * f_long
            age = 0.0
            last_gap = dt
        else:  # out of order: keep the clock, decay this event's contribution to it
            weights, items = float32_values(p.weights), float32_values(p.items)
            short, long_ = list(p.short_counts), list(p.long_counts)
            price_sum, price_n = p.price_sum, p.price_n
            age = p.clock - ts
            last_gap = 0.0
        new_session = ts > p.session_last + SESSION_GAP_S

    clock = max(ts, p.clock)
    f_long_event = _decay(age, LONG_HALF_LIFE_S)

    category = event.category_id
    interest = INTEREST_WEIGHTS[etype]
    if category is not None and interest > 0:
        weights[category] = f32(
            weights.get(category, 0.0) + interest * _decay(age, INTEREST_HALF_LIFE_S)
        )
    _top_k(weights, TOP_K_CATEGORIES)

    short[k] += _decay(age, SHORT_HALF_LIFE_S)
    long_[k] += f_long_event
    if event.price is not None:
        price_sum += float(event.price) * f_long_event
        price_n += f_long_event
        if not math.isfinite(price_sum):  # never store a value that poisons every later score
            raise ValueError(f"event {event.event_id}: price {event.price} overflows the price sum")

    cat_hash = stable_hash(category) if category is not None else None
    carted = 1 if etype == "add_to_cart" else 0
    bought = 1 if etype == "purchase" else 0
    in_session = True  # whether this event belongs to the (possibly new) current session
    if new_session:
        s_start, s_last, s_events, s_carts, s_bought = ts, ts, 1, carted, bought
        s_cats: tuple[int, ...] = (cat_hash,) if cat_hash is not None else ()
        s_repeats = 0
    elif ts >= p.session_start - SESSION_GAP_S:  # in (or just before) the current session
        s_start, s_last = min(p.session_start, ts), max(p.session_last, ts)
        s_events, s_carts = p.session_events + 1, p.session_carts + carted
        s_bought, s_repeats = p.session_purchases + bought, p.session_repeats
        s_cats = p.session_categories
        if cat_hash is not None and cat_hash not in s_cats and len(s_cats) < SESSION_CATEGORIES_MAX:
            s_cats = (*s_cats, cat_hash)
    else:  # a late event from an earlier session: the current session is unchanged
        in_session = False
        s_start, s_last = p.session_start, p.session_last
        s_events, s_carts, s_cats = p.session_events, p.session_carts, p.session_categories
        s_bought, s_repeats = p.session_purchases, p.session_repeats

    cart = tuple(entry for entry in p.cart if entry[1] >= clock - CART_TTL_S)
    item_info = p.item_info if event.item_id is None else dict(p.item_info)
    item_gap = -1
    if event.item_id is not None:
        item = stable_hash(event.item_id)
        items[item] = f32(items.get(item, 0.0) + f_long_event)
        info, item_gap, repeat = _touch_item(p.item_info.get(item), ts, etype, s_start, in_session)
        item_info[item] = info
        s_repeats = min(s_repeats + repeat, 0xFFFF)
        if etype == "add_to_cart" and ts >= clock - CART_TTL_S:
            added = max([ts, *(t for i, t in cart if i == item)])
            cart = (*(e for e in cart if e[0] != item), (item, added))[-CART_MAX:]
        elif etype in ("remove_from_cart", "purchase"):
            cart = tuple(e for e in cart if e[0] != item)
    _top_k(items, TOP_K_ITEMS)  # also drops items decayed below MIN_WEIGHT
    if len(item_info) != len(items):  # an item was dropped: forget its memory too
        if item_info is p.item_info:
            item_info = dict(item_info)
        for gone in item_info.keys() - items.keys():
            del item_info[gone]
    last_cart_ts = max(p.last_cart_ts, ts) if etype == "add_to_cart" else p.last_cart_ts
    last_purchase = max(p.last_purchase_ts, ts) if etype == "purchase" else p.last_purchase_ts

    return Profile(
        clock=clock,
        n_events=p.n_events + 1,
        last_gap_s=last_gap,
        weights=weights,
        short_counts=tuple(short),
        long_counts=tuple(long_),
        price_sum=price_sum,
        price_n=price_n,
        items=items,
        cart=cart,
        last_cart_ts=last_cart_ts,
        last_purchase_ts=last_purchase,
        session_start=s_start,
        session_last=s_last,
        session_events=s_events,
        session_carts=s_carts,
        session_categories=s_cats,
        item_info=item_info,
        item_gap_s=item_gap,
        session_repeats=s_repeats,
        session_purchases=min(s_bought, 0xFFFF),
        total_carts=p.total_carts + carted,
        total_favorites=p.total_favorites + (1 if etype == "favorite" else 0),
        total_purchases=p.total_purchases + bought,
        recent=(*p.recent, _step(cat_hash, k, item_gap >= 0, last_gap))[-SEQ_LEN:],
        explore=p.explore,
    )


_GAP_CODE_SCALE = 255 / math.log1p(SEQ_GAP_SCALE_S)


def _step(cat_hash: int | None, k: int, repeat: bool, gap_s: float) -> tuple[int, int, int]:
    """One event of the recent sequence, as small integers (so the encoding is exact)."""
    bucket = 0 if cat_hash is None else 1 + cat_hash % SEQ_CATEGORY_BUCKETS
    gap = 0.0 if gap_s < 0 else min(gap_s, SEQ_GAP_SCALE_S)
    gap_code = round(_GAP_CODE_SCALE * math.log1p(gap))
    return bucket, 1 + k + (8 if repeat else 0), gap_code


def _touch_item(
    info: tuple[int, int, int, int, int] | None,
    ts: float,
    etype: str,
    session_start: float,
    in_session: bool,
) -> tuple[tuple[int, int, int, int, int], int, int]:
    """(the item's new memory, seconds since its previous touch or -1, 1 if a repeat this session).

    Times are whole seconds since 1970, at least 0, so that the stored ages (32 bits, from the
    profile's clock) hold them exactly until 2106. An out-of-order touch widens [first, last]
    and reports a gap of 0.
    """
    now = max(math.floor(ts), 0)  # an item touched before 1970 counts as touched then
    carts = 1 if etype == "add_to_cart" else 0
    favs = 1 if etype == "favorite" else 0
    since = math.floor(session_start)
    if info is None:
        return (now, now, carts, favs, 1 if in_session else 0), -1, 0
    first, last, n_carts, n_favs, touches = info
    gap = min(max(now - last, 0), GAP_MAX)  # saturates: the stored gap is 32 bits
    touched_this_session = last >= since
    if in_session:
        touches = min(touches + 1, COUNT_MAX) if touched_this_session else 1
    return (
        (
            min(first, now),
            max(last, now),
            min(n_carts + carts, COUNT_MAX),
            min(n_favs + favs, COUNT_MAX),
            touches,
        ),
        gap,
        1 if in_session and touched_this_session else 0,
    )


def top_categories(profile: Profile, k: int) -> list[tuple[str, float]]:
    """The ``k`` strongest interests, strongest first, each with its share of the total (0..1).

    All weights are decayed to the same clock, so shares do not depend on when this is called.
    """
    total = sum(profile.weights.values())
    if k <= 0 or total <= 0:
        return []
    return [(c, min(1.0, w / total)) for c, w in strongest(profile.weights, k)]
