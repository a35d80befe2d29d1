"""Per-user profile state and its pure update, in event time. Standard library only.

All decayed quantities in a ``Profile`` are stored *as of* ``profile.clock`` (the newest event
time seen). Decay is applied lazily: only when the user is next touched, by the time that has
passed since ``clock``. An event older than ``clock`` (out of order) never decays the state
backwards; its own contribution is decayed to the clock instead.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass, field
from typing import Protocol

from streams.errors import ProfileDecodeError

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

PROFILE_FORMAT_VERSION = 2  # 2: cart entries carry their time; last cart and purchase times
_MAGIC = b"ip"


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
    weights: dict[str, float] = field(default_factory=dict)  # category -> decayed interest
    short_counts: tuple[float, ...] = (0.0,) * N_TYPES  # per EVENT_TYPES, SHORT_HALF_LIFE_S
    long_counts: tuple[float, ...] = (0.0,) * N_TYPES  # per EVENT_TYPES, LONG_HALF_LIFE_S
    price_sum: float = 0.0  # decayed (long) sum of prices seen
    price_n: float = 0.0  # decayed (long) number of priced events
    items: dict[int, float] = field(default_factory=dict)  # item hash -> decayed interactions
    cart: tuple[tuple[int, float], ...] = ()  # (item hash, added at): not removed/bought/expired
    last_cart_ts: float = -1.0  # newest add_to_cart time; -1: never
    last_purchase_ts: float = -1.0  # newest purchase time; -1: never
    session_start: float = 0.0
    session_last: float = 0.0
    session_events: int = 0
    session_carts: int = 0
    session_categories: tuple[int, ...] = ()  # crc32 of distinct categories, bounded


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


def _decay(age_s: float, half_life_s: float) -> float:
    return 0.5 ** (age_s / half_life_s) if age_s > 0 else 1.0


def _top_k(weights: dict, k: int) -> None:
    """Drop negligible entries, then evict the weakest until at most ``k`` remain (in place)."""
    for key in [key for key, w in weights.items() if w < MIN_WEIGHT]:
        del weights[key]
    while len(weights) > k:
        # Weakest first; ties broken by key so eviction is deterministic.
        weakest = min(weights.items(), key=lambda kv: (kv[1], str(kv[0])))[0]
        del weights[weakest]


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
            weights = {c: w * f_int for c, w in p.weights.items()}
            items = {i: w * f_long for i, w in p.items.items()}
            short = [c * f_short for c in p.short_counts]
            long_ = [c * f_long for c in p.long_counts]
            price_sum, price_n = p.price_sum * f_long, p.price_n * f_long
            age = 0.0
            last_gap = dt
        else:  # out of order: keep the clock, decay this event's contribution to it
            weights, items = dict(p.weights), dict(p.items)
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
        weights[category] = weights.get(category, 0.0) + interest * _decay(
            age, INTEREST_HALF_LIFE_S
        )
    _top_k(weights, TOP_K_CATEGORIES)

    short[k] += _decay(age, SHORT_HALF_LIFE_S)
    long_[k] += f_long_event
    if event.price is not None:
        price_sum += float(event.price) * f_long_event
        price_n += f_long_event
        if not math.isfinite(price_sum):  # never store a value that poisons every later score
            raise ValueError(f"event {event.event_id}: price {event.price} overflows the price sum")

    cart = tuple(entry for entry in p.cart if entry[1] >= clock - CART_TTL_S)
    if event.item_id is not None:
        item = stable_hash(event.item_id)
        items[item] = items.get(item, 0.0) + f_long_event
        if etype == "add_to_cart" and ts >= clock - CART_TTL_S:
            added = max([ts, *(t for i, t in cart if i == item)])
            cart = (*(e for e in cart if e[0] != item), (item, added))[-CART_MAX:]
        elif etype in ("remove_from_cart", "purchase"):
            cart = tuple(e for e in cart if e[0] != item)
    _top_k(items, TOP_K_ITEMS)
    last_cart_ts = max(p.last_cart_ts, ts) if etype == "add_to_cart" else p.last_cart_ts
    last_purchase = max(p.last_purchase_ts, ts) if etype == "purchase" else p.last_purchase_ts

    cat_hash = stable_hash(category) if category is not None else None
    carted = 1 if etype == "add_to_cart" else 0
    if new_session:
        s_start, s_last, s_events, s_carts = ts, ts, 1, carted
        s_cats: tuple[int, ...] = (cat_hash,) if cat_hash is not None else ()
    elif ts >= p.session_start - SESSION_GAP_S:  # in (or just before) the current session
        s_start, s_last = min(p.session_start, ts), max(p.session_last, ts)
        s_events, s_carts = p.session_events + 1, p.session_carts + carted
        s_cats = p.session_categories
        if cat_hash is not None and cat_hash not in s_cats and len(s_cats) < SESSION_CATEGORIES_MAX:
            s_cats = (*s_cats, cat_hash)
    else:  # a late event from an earlier session: the current session is unchanged
        s_start, s_last = p.session_start, p.session_last
        s_events, s_carts, s_cats = p.session_events, p.session_carts, p.session_categories

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
    )


def top_categories(profile: Profile, k: int) -> list[tuple[str, float]]:
    """The ``k`` strongest interests, strongest first, each with its share of the total (0..1).

    All weights are decayed to the same clock, so shares do not depend on when this is called.
    """
    total = sum(profile.weights.values())
    if k <= 0 or total <= 0:
        return []
    ranked = sorted(profile.weights.items(), key=lambda cw: (-cw[1], cw[0]))[:k]
    return [(c, min(1.0, w / total)) for c, w in ranked]


# Binary layout, little endian. Floats are float64 so the round trip is exact, and dict order is
# kept, so a decoded profile computes bit-identical features.
_HEAD = struct.Struct("<2sB")
_FIXED = struct.Struct(f"<dQdddddIIdd{N_TYPES}d{N_TYPES}d")
_U16 = struct.Struct("<H")
_U8 = struct.Struct("<B")
_F64 = struct.Struct("<d")
_ITEM = struct.Struct("<Id")


def encode_profile(profile: Profile) -> bytes:
    """Compact, versioned bytes for a profile (about 1 KB for a busy user)."""
    out = bytearray(_HEAD.pack(_MAGIC, PROFILE_FORMAT_VERSION))
    out += _FIXED.pack(
        profile.clock,
        profile.n_events,
        profile.last_gap_s,
        profile.price_sum,
        profile.price_n,
        profile.session_start,
        profile.session_last,
        profile.session_events,
        profile.session_carts,
        profile.last_cart_ts,
        profile.last_purchase_ts,
        *profile.short_counts,
        *profile.long_counts,
    )
    out += _U16.pack(len(profile.weights))
    for category, weight in profile.weights.items():
        raw = category.encode("utf-8")
        out += _U16.pack(len(raw)) + raw + _F64.pack(weight)
    out += _U16.pack(len(profile.items))
    for item, weight in profile.items.items():
        out += _ITEM.pack(item, weight)
    out += _U8.pack(len(profile.cart))
    for item, added in profile.cart:
        out += _ITEM.pack(item, added)
    cats = profile.session_categories
    out += _U8.pack(len(cats)) + struct.pack(f"<{len(cats)}I", *cats)
    return bytes(out)


def profile_clock(data: bytes) -> float:
    """The clock (newest event time) of an encoded profile, without decoding the rest (the
    retention sweep reads it for every stored profile); ProfileDecodeError if not a profile."""
    try:
        magic, version = _HEAD.unpack_from(data, 0)
        (clock,) = _F64.unpack_from(data, _HEAD.size)
    except struct.error:
        raise ProfileDecodeError(f"profile bytes too short ({len(data)} bytes)") from None
    if magic != _MAGIC or version != PROFILE_FORMAT_VERSION:
        raise ProfileDecodeError(f"not a profile of format version {PROFILE_FORMAT_VERSION}")
    return float(clock)


def decode_profile(data: bytes) -> Profile:
    """The exact profile ``encode_profile`` wrote; ProfileDecodeError if the bytes are not one."""
    try:
        magic, version = _HEAD.unpack_from(data, 0)
    except struct.error:
        raise ProfileDecodeError(
            f"profile bytes too short ({len(data)} bytes) for the {_HEAD.size}-byte header"
        ) from None
    if magic != _MAGIC:
        raise ProfileDecodeError(f"not a profile: header starts {magic!r}, expected {_MAGIC!r}")
    if version != PROFILE_FORMAT_VERSION:
        raise ProfileDecodeError(
            f"profile format version {version} is unknown; this worker reads version "
            f"{PROFILE_FORMAT_VERSION}"
        )
    try:
        pos = _HEAD.size
        fixed = _FIXED.unpack_from(data, pos)
        pos += _FIXED.size
        (n,) = _U16.unpack_from(data, pos)
        pos += _U16.size
        weights: dict[str, float] = {}
        for _ in range(n):
            (length,) = _U16.unpack_from(data, pos)
            pos += _U16.size
            category = data[pos : pos + length].decode("utf-8")
            pos += length
            (weights[category],) = _F64.unpack_from(data, pos)
            pos += _F64.size
        (n,) = _U16.unpack_from(data, pos)
        pos += _U16.size
        items: dict[int, float] = {}
        for _ in range(n):
            item, weight = _ITEM.unpack_from(data, pos)
            items[item] = weight
            pos += _ITEM.size
        (n,) = _U8.unpack_from(data, pos)
        pos += _U8.size
        cart: list[tuple[int, float]] = []
        for _ in range(n):
            cart.append(_ITEM.unpack_from(data, pos))
            pos += _ITEM.size
        (n,) = _U8.unpack_from(data, pos)
        pos += _U8.size
        session_categories = struct.unpack_from(f"<{n}I", data, pos)
        pos += 4 * n
    except (struct.error, UnicodeDecodeError) as exc:
        raise ProfileDecodeError(f"profile bytes are truncated or corrupt: {exc}") from None
    if pos != len(data):
        raise ProfileDecodeError(f"profile has {len(data) - pos} trailing bytes after field end")
    return Profile(
        clock=fixed[0],
        n_events=fixed[1],
        last_gap_s=fixed[2],
        price_sum=fixed[3],
        price_n=fixed[4],
        session_start=fixed[5],
        session_last=fixed[6],
        session_events=fixed[7],
        session_carts=fixed[8],
        last_cart_ts=fixed[9],
        last_purchase_ts=fixed[10],
        short_counts=tuple(fixed[11 : 11 + N_TYPES]),
        long_counts=tuple(fixed[11 + N_TYPES : 11 + 2 * N_TYPES]),
        weights=weights,
        items=items,
        cart=tuple(cart),
        session_categories=session_categories,
    )
