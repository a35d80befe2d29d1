"""Profile sections that a later format re-encoded (``streams.features.encoding``): kept to read
profiles of the formats that wrote them, and for tests to write such profiles. Standard library
only. Each is the same code that wrote its format; do not change their bytes.

Formats 2 to 4: category weights and item weights as float64 (names with a u16 length), the
item memory as its own section (4-byte ages, three counters per item), the recent sequence in
4 bytes per event, exploration with float64 times.
"""

from __future__ import annotations

import math
import struct
from typing import Any

from streams.features.explore import ExploreState, Exposure
from streams.features.profile import Profile

Fields = dict[str, Any]

_U16 = struct.Struct("<H")
_U8 = struct.Struct("<B")
_F64 = struct.Struct("<d")
_ITEM = struct.Struct("<Id")
# Item memory: first and last touch as ages in whole seconds before floor(clock), so 4 bytes
# each; carts, favourites, touches this session.
_ITEM_INFO = struct.Struct("<IIBBB")
_STEP = struct.Struct("<HBB")
_AGE_MAX = 0xFFFFFFFF


def enc_weights(p: Profile, out: bytearray) -> None:
    """Formats 2-4: count (u16), then each name (u16 length, UTF-8) and weight (f64)."""
    out += _U16.pack(len(p.weights))
    for category, weight in p.weights.items():
        raw = category.encode("utf-8")
        out += _U16.pack(len(raw)) + raw + _F64.pack(weight)


def dec_weights(data: bytes, pos: int, f: Fields) -> int:
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


def enc_items(p: Profile, out: bytearray) -> None:
    """Formats 2-4: count (u16), then each item hash (u32) and weight (f64)."""
    out += _U16.pack(len(p.items))
    for item, weight in p.items.items():
        out += _ITEM.pack(item, weight)


def dec_items(data: bytes, pos: int, f: Fields) -> int:
    (n,) = _U16.unpack_from(data, pos)
    pos += _U16.size
    items: dict[int, float] = {}
    for _ in range(n):
        item, weight = _ITEM.unpack_from(data, pos)
        items[item] = weight
        pos += _ITEM.size
    f["items"] = items
    return pos


def enc_item_info(p: Profile, out: bytearray) -> None:
    """Formats 3-4: one entry per item, in the order of ``items`` (so no count and no key)."""
    now = max(math.floor(p.clock), 0)
    if p.item_info.keys() != p.items.keys():
        raise ValueError("profile item memory is out of step with its items")
    for item in p.items:
        first, last, carts, favs, touches = p.item_info[item]
        out += _ITEM_INFO.pack(
            min(now - first, _AGE_MAX), min(now - last, _AGE_MAX), carts, favs, touches
        )


def dec_item_info(data: bytes, pos: int, f: Fields) -> int:
    now = max(math.floor(f["clock"]), 0)
    info: dict[int, tuple[int, int, int, int, int]] = {}
    for item in f["items"]:
        first_age, last_age, carts, favs, touches = _ITEM_INFO.unpack_from(data, pos)
        info[item] = (now - first_age, now - last_age, carts, favs, touches)
        pos += _ITEM_INFO.size
    f["item_info"] = info
    return pos


def upgrade_item_info(f: Fields) -> None:
    """A version 2 profile knew its items but not when: say they were touched at its clock."""
    now = max(math.floor(f["clock"]), 0)
    f["item_info"] = {item: (now, now, 0, 0, 0) for item in f["items"]}


def enc_recent(p: Profile, out: bytearray) -> None:
    """Formats 3-4: count (u8), then 4 bytes per event: bucket (u16), code, gap code."""
    out += _U8.pack(len(p.recent))
    for step in p.recent:
        out += _STEP.pack(*step)


def unpack_counted(data: bytes, pos: int, record: struct.Struct) -> tuple[tuple[Any, ...], int]:
    """A count (u8), then that many ``record`` tuples: (the tuples, the position after)."""
    (n,) = _U8.unpack_from(data, pos)
    pos += _U8.size
    end = pos + n * record.size
    if end > len(data):
        raise struct.error(f"{n} records of {record.size} bytes do not fit in what is left")
    return tuple(record.iter_unpack(data[pos:end])), end


def dec_recent(data: bytes, pos: int, f: Fields) -> int:
    f["recent"], pos = unpack_counted(data, pos, _STEP)
    return pos


# Format 4's exploration state, little endian: clock f64, counts (u8 arm, f32 successes, f32
# failures), open exposures (u8 arm, f64 opened at, f32 propensity, u8 draw).
_STATE_HEAD = struct.Struct("<dB")
_COUNT = struct.Struct("<Bff")
_EXPOSURE = struct.Struct("<BdfB")


def encode_state(state: ExploreState) -> bytes:
    """Format 4's bytes of an exploration state."""
    out = bytearray(_STATE_HEAD.pack(state.clock, len(state.counts)))
    for arm, (s, n) in state.counts.items():
        out += _COUNT.pack(arm, s, n)
    out += _U8.pack(len(state.open))
    for e in state.open:
        out += _EXPOSURE.pack(e.arm, e.opened_at, e.propensity, e.draw)
    return bytes(out)


def decode_state(data: bytes, pos: int) -> tuple[ExploreState, int]:
    """Format 4's state at ``pos`` and the position after it; struct.error if truncated."""
    clock, n = _STATE_HEAD.unpack_from(data, pos)
    pos += _STATE_HEAD.size
    counts: dict[int, tuple[float, float]] = {}
    for _ in range(n):
        arm, s, f = _COUNT.unpack_from(data, pos)
        counts[arm] = (s, f)
        pos += _COUNT.size
    (n,) = _U8.unpack_from(data, pos)
    pos += _U8.size
    exposures = []
    for _ in range(n):
        arm, opened_at, propensity, draw = _EXPOSURE.unpack_from(data, pos)
        exposures.append(Exposure(arm, opened_at, propensity, draw))
        pos += _EXPOSURE.size
    if not math.isfinite(clock):
        raise ValueError("exploration clock is not finite")
    return ExploreState(clock, counts, tuple(exposures)), pos


def enc_explore(p: Profile, out: bytearray) -> None:
    """Format 4: a byte (0 none, 1 the state), then the state."""
    if p.explore is None:
        out += _U8.pack(0)
    else:
        out += _U8.pack(1) + encode_state(p.explore)


def dec_explore(data: bytes, pos: int, f: Fields) -> int:
    (present,) = _U8.unpack_from(data, pos)
    pos += _U8.size
    if present == 1:
        f["explore"], pos = decode_state(data, pos)
    elif present != 0:
        raise struct.error(f"exploration marker {present} is neither 0 nor 1")
    return pos
