"""The compact, versioned bytes of a ``Profile`` (what the worker stores). Standard library only.

Layout, little endian: a 3-byte header (magic ``ip``, format version), then the profile's
*sections* in a fixed order. Each format version is the previous one plus sections at the end:

    version 2: fixed scalars, category weights, items, cart, session categories
    version 3: + item memory (aligned with items), + counters (item gap, session repeats and
               purchases, lifetime carts, favourites and purchases), + the recent sequence
               (count, then 4 bytes per event: category bucket, code, gap code)
    version 4: + exploration (a byte: 0 none, 1 the state of ``streams.features.explore``:
               clock, decayed counts per arm, open exposures)

A new section (for example exposures) is a new ``_Section`` appended to ``_SECTIONS`` with the
version that introduced it, and ``PROFILE_FORMAT_VERSION`` bumped: older profiles still decode,
their new fields taking the ``Profile`` defaults (or the section's ``upgrade``). Floats are
float64 and times of the item memory whole seconds, and dict order is kept, so a decoded
profile computes bit-identical features.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from streams.errors import ProfileDecodeError
from streams.features.explore import decode_state, encode_state
from streams.features.profile import N_TYPES, Profile

PROFILE_FORMAT_VERSION = 4
READABLE_VERSIONS = tuple(range(2, PROFILE_FORMAT_VERSION + 1))  # every version since 2
_MAGIC = b"ip"

_HEAD = struct.Struct("<2sB")
_FIXED = struct.Struct(f"<dQdddddIIdd{N_TYPES}d{N_TYPES}d")
_U16 = struct.Struct("<H")
_U8 = struct.Struct("<B")
_F64 = struct.Struct("<d")
_ITEM = struct.Struct("<Id")
# Item memory: first and last touch as ages in whole seconds before floor(clock), so 4 bytes
# each; carts, favourites, touches this session.
_ITEM_INFO = struct.Struct("<IIBBB")
_COUNTERS = struct.Struct("<iHHIII")
_STEP = struct.Struct("<HBB")
_AGE_MAX = 0xFFFFFFFF

Fields = dict[str, Any]


def _enc_fixed(p: Profile, out: bytearray) -> None:
    out += _FIXED.pack(
        p.clock,
        p.n_events,
        p.last_gap_s,
        p.price_sum,
        p.price_n,
        p.session_start,
        p.session_last,
        p.session_events,
        p.session_carts,
        p.last_cart_ts,
        p.last_purchase_ts,
        *p.short_counts,
        *p.long_counts,
    )


def _dec_fixed(data: bytes, pos: int, f: Fields) -> int:
    v = _FIXED.unpack_from(data, pos)
    f.update(
        clock=v[0],
        n_events=v[1],
        last_gap_s=v[2],
        price_sum=v[3],
        price_n=v[4],
        session_start=v[5],
        session_last=v[6],
        session_events=v[7],
        session_carts=v[8],
        last_cart_ts=v[9],
        last_purchase_ts=v[10],
        short_counts=tuple(v[11 : 11 + N_TYPES]),
        long_counts=tuple(v[11 + N_TYPES : 11 + 2 * N_TYPES]),
    )
    return pos + _FIXED.size


def _enc_weights(p: Profile, out: bytearray) -> None:
    out += _U16.pack(len(p.weights))
    for category, weight in p.weights.items():
        raw = category.encode("utf-8")
        out += _U16.pack(len(raw)) + raw + _F64.pack(weight)


def _dec_weights(data: bytes, pos: int, f: Fields) -> int:
    (n,) = _U16.unpack_from(data, pos)
    pos += _U16.size
    weights: dict[str, float] = {}
    for _ in range(n):
        (length,) = _U16.unpack_from(data, pos)
        pos += _U16.size
        if pos + length > len(data):
            raise struct.error("category name runs past the end")
        category = data[pos : pos + length].decode("utf-8")
        pos += length
        (weights[category],) = _F64.unpack_from(data, pos)
        pos += _F64.size
    f["weights"] = weights
    return pos


def _enc_items(p: Profile, out: bytearray) -> None:
    out += _U16.pack(len(p.items))
    for item, weight in p.items.items():
        out += _ITEM.pack(item, weight)


def _dec_items(data: bytes, pos: int, f: Fields) -> int:
    (n,) = _U16.unpack_from(data, pos)
    pos += _U16.size
    items: dict[int, float] = {}
    for _ in range(n):
        item, weight = _ITEM.unpack_from(data, pos)
        items[item] = weight
        pos += _ITEM.size
    f["items"] = items
    return pos


def _enc_cart(p: Profile, out: bytearray) -> None:
    out += _U8.pack(len(p.cart))
    for item, added in p.cart:
        out += _ITEM.pack(item, added)


def _dec_cart(data: bytes, pos: int, f: Fields) -> int:
    (n,) = _U8.unpack_from(data, pos)
    pos += _U8.size
    cart = []
    for _ in range(n):
        cart.append(_ITEM.unpack_from(data, pos))
        pos += _ITEM.size
    f["cart"] = tuple(cart)
    return pos


def _enc_session_categories(p: Profile, out: bytearray) -> None:
    cats = p.session_categories
    out += _U8.pack(len(cats)) + struct.pack(f"<{len(cats)}I", *cats)


def _dec_session_categories(data: bytes, pos: int, f: Fields) -> int:
    (n,) = _U8.unpack_from(data, pos)
    pos += _U8.size
    f["session_categories"] = struct.unpack_from(f"<{n}I", data, pos)
    return pos + 4 * n


def _enc_item_info(p: Profile, out: bytearray) -> None:
    """One entry per item, in the order of ``items`` (so no count and no key)."""
    now = max(math.floor(p.clock), 0)
    if p.item_info.keys() != p.items.keys():
        raise ValueError("profile item memory is out of step with its items")
    for item in p.items:
        first, last, carts, favs, touches = p.item_info[item]
        out += _ITEM_INFO.pack(
            min(now - first, _AGE_MAX), min(now - last, _AGE_MAX), carts, favs, touches
        )


def _dec_item_info(data: bytes, pos: int, f: Fields) -> int:
    now = max(math.floor(f["clock"]), 0)
    info: dict[int, tuple[int, int, int, int, int]] = {}
    for item in f["items"]:
        first_age, last_age, carts, favs, touches = _ITEM_INFO.unpack_from(data, pos)
        info[item] = (now - first_age, now - last_age, carts, favs, touches)
        pos += _ITEM_INFO.size
    f["item_info"] = info
    return pos


def _upgrade_item_info(f: Fields) -> None:
    """A version 2 profile knew its items but not when: say they were touched at its clock."""
    now = max(math.floor(f["clock"]), 0)
    f["item_info"] = {item: (now, now, 0, 0, 0) for item in f["items"]}


def _enc_counters(p: Profile, out: bytearray) -> None:
    out += _COUNTERS.pack(
        p.item_gap_s,
        p.session_repeats,
        p.session_purchases,
        p.total_carts,
        p.total_favorites,
        p.total_purchases,
    )


def _dec_counters(data: bytes, pos: int, f: Fields) -> int:
    v = _COUNTERS.unpack_from(data, pos)
    f.update(
        item_gap_s=v[0],
        session_repeats=v[1],
        session_purchases=v[2],
        total_carts=v[3],
        total_favorites=v[4],
        total_purchases=v[5],
    )
    return pos + _COUNTERS.size


def _enc_recent(p: Profile, out: bytearray) -> None:
    out += _U8.pack(len(p.recent))
    for step in p.recent:
        out += _STEP.pack(*step)


def _dec_recent(data: bytes, pos: int, f: Fields) -> int:
    (n,) = _U8.unpack_from(data, pos)
    pos += _U8.size
    steps = []
    for _ in range(n):
        steps.append(_STEP.unpack_from(data, pos))
        pos += _STEP.size
    f["recent"] = tuple(steps)
    return pos


def _enc_explore(p: Profile, out: bytearray) -> None:
    if p.explore is None:
        out += _U8.pack(0)
    else:
        out += _U8.pack(1) + encode_state(p.explore)


def _dec_explore(data: bytes, pos: int, f: Fields) -> int:
    (present,) = _U8.unpack_from(data, pos)
    pos += _U8.size
    if present == 1:
        f["explore"], pos = decode_state(data, pos)
    elif present != 0:
        raise struct.error(f"exploration marker {present} is neither 0 nor 1")
    return pos


@dataclass(frozen=True)
class _Section:
    since: int  # the format version that introduced it
    encode: Callable[[Profile, bytearray], None]
    decode: Callable[[bytes, int, Fields], int]  # (data, position, fields so far) -> position
    upgrade: Callable[[Fields], None] | None = None  # fills its fields for older versions


_SECTIONS: tuple[_Section, ...] = (
    _Section(2, _enc_fixed, _dec_fixed),
    _Section(2, _enc_weights, _dec_weights),
    _Section(2, _enc_items, _dec_items),
    _Section(2, _enc_cart, _dec_cart),
    _Section(2, _enc_session_categories, _dec_session_categories),
    _Section(3, _enc_item_info, _dec_item_info, _upgrade_item_info),
    _Section(3, _enc_counters, _dec_counters),
    _Section(3, _enc_recent, _dec_recent),
    _Section(4, _enc_explore, _dec_explore),
)


def encode_profile(profile: Profile) -> bytes:
    """Compact, versioned bytes for a profile (under 1 KB for a busy user)."""
    out = bytearray(_HEAD.pack(_MAGIC, PROFILE_FORMAT_VERSION))
    for section in _SECTIONS:
        section.encode(profile, out)
    return bytes(out)


def _version(data: bytes) -> int:
    try:
        magic, version = _HEAD.unpack_from(data, 0)
    except struct.error:
        raise ProfileDecodeError(
            f"profile bytes too short ({len(data)} bytes) for the {_HEAD.size}-byte header"
        ) from None
    if magic != _MAGIC:
        raise ProfileDecodeError(f"not a profile: header starts {magic!r}, expected {_MAGIC!r}")
    if version not in READABLE_VERSIONS:
        raise ProfileDecodeError(
            f"profile format version {version} is unknown; this worker reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))} (run the worker version that wrote it)"
        )
    return int(version)


def profile_clock(data: bytes) -> float:
    """The clock (newest event time) of an encoded profile, without decoding the rest (the
    retention sweep reads it for every stored profile); ProfileDecodeError if not a profile."""
    _version(data)
    try:
        (clock,) = _F64.unpack_from(data, _HEAD.size)
    except struct.error:
        raise ProfileDecodeError(f"profile bytes too short ({len(data)} bytes)") from None
    return float(clock)


def decode_profile(data: bytes) -> Profile:
    """The exact profile ``encode_profile`` wrote (or an older version's, upgraded);
    ProfileDecodeError if the bytes are not one."""
    version = _version(data)
    f: Fields = {}
    pos = _HEAD.size
    try:
        for section in _SECTIONS:
            if section.since <= version:
                pos = section.decode(data, pos, f)
            elif section.upgrade is not None:
                section.upgrade(f)
    except (struct.error, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise ProfileDecodeError(f"profile bytes are truncated or corrupt: {exc}") from None
    if pos != len(data):
        raise ProfileDecodeError(f"profile has {len(data) - pos} trailing bytes after field end")
    return Profile(**f)
