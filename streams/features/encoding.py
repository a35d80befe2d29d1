"""The compact, versioned bytes of a ``Profile`` (what the worker stores). Standard library only.

Layout, little endian: a 3-byte header (magic ``ip``, format version), then the profile's
*sections* in a fixed order:

    version 2: fixed scalars, category weights, items, cart, session categories
    version 3: + item memory (aligned with items), + counters (item gap, session repeats and
               purchases, lifetime carts, favourites and purchases), + the recent sequence
               (count, then 4 bytes per event: category bucket, code, gap code)
    version 4: + exploration (a byte: 0 none, 1 the state of ``streams.features.explore``:
               clock, decayed counts per arm, open exposures)
    version 5: the same fields, narrower: category weights float32, their names joined by
               NUL; items with their memory in one section of columns (hash, float32
               weight, first and last touch ages, carts, favourites, touches); the recent
               sequence in 3 bytes per event; exploration's times as microseconds before the
               profile clock, and its zero counts left out
    version 6: exploration's exposures keep what their decision saw (the posterior mean and
               strength drawn from, the top interest the arm was similar to)

A new section (for example exposures) is a new ``_Section`` appended to ``_SECTIONS`` with the
version that introduced it, and ``PROFILE_FORMAT_VERSION`` bumped: older profiles still decode,
their new fields taking the ``Profile`` defaults (or the section's ``upgrade``). A section
whose bytes change is retired (its ``until``, the last version that wrote it; its code moves to
``encoding_legacy``) and the new one follows it, with an ``upgrade`` that brings what the old
one decoded to what the new one would (floats rounded to float32). Floats are float64 unless
the ``Profile`` holds them narrower (weights, exploration counts and propensities are float32 in
memory too), times of the item memory whole seconds, and dict order is kept, so a decoded
profile computes bit-identical features.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

from streams.errors import ProfileDecodeError
from streams.features import encoding_legacy as legacy
from streams.features.encoding_explore import decode_state, encode_state
from streams.features.profile import (
    N_TYPES,
    SEQ_CATEGORY_BUCKETS,
    TOP_K_CATEGORIES,
    TOP_K_ITEMS,
    Profile,
    float32_values,
)

PROFILE_FORMAT_VERSION = 6
READABLE_VERSIONS = tuple(range(2, PROFILE_FORMAT_VERSION + 1))  # every version since 2
# The versions a worker may be told to write (``INTENTFLOW_PROFILE_FORMAT``): the current one,
# and the one before it while an upgrade may still be rolled back to a worker that reads only
# that. Format 5 loses only what each open suggestion's decision saw (computed when read).
WRITABLE_VERSIONS = (5, PROFILE_FORMAT_VERSION)
_MAGIC = b"ip"

_HEAD = struct.Struct("<2sB")
_FIXED = struct.Struct(f"<dQdddddIIdd{N_TYPES}d{N_TYPES}d")
_U8 = struct.Struct("<B")
_F64 = struct.Struct("<d")
_ITEM = struct.Struct("<Id")
_COUNTERS = struct.Struct("<iHHIII")
_AGE_MAX = 0xFFFFFFFF
_WIDE = 0x80  # in a weights count: each name has its length (u16), no separator
_NAMES = struct.Struct("<BH")  # weights: count, the names' total bytes
_F32_MAX = 3.4028234663852886e38

# The counts of format 5 are one byte, and a step of the recent sequence packs a 12-bit bucket
# with a 4-bit code (1 + type index, + 8 for a repeat).
if TOP_K_CATEGORIES >= _WIDE or TOP_K_ITEMS > 0xFF or SEQ_CATEGORY_BUCKETS > 0xFFF or N_TYPES > 7:
    raise RuntimeError("profile format 5 cannot hold these top-K, bucket or event type counts")

Fields = dict[str, Any]


@cache
def _columns(fmt: str, n: int) -> struct.Struct:
    """The struct of ``n`` rows of ``fmt`` stored column by column (``"If"``: n u32, n f32)."""
    return struct.Struct("<" + "".join(f"{n}{c}" for c in fmt))


def _saturated(values: Iterable[float]) -> list[float]:
    """Finite values clamped to float32's range (a weight out of it is never made by
    ``update``; packing one would raise)."""
    return [max(-_F32_MAX, min(v, _F32_MAX)) for v in values]


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
    """Count (u8), the names' total bytes (u16), the names (UTF-8) joined by NUL, the weights
    (f32). If a name holds a NUL (or the names pass 64 KB): count + _WIDE, each name's length
    (u16), the names, the weights."""
    weights = p.weights
    n = len(weights)
    if n >= _WIDE:
        raise ValueError(f"profile has {n} category weights; format 5 holds fewer than {_WIDE}")
    text = "\0".join(weights)
    raw = text.encode("utf-8")
    if text.count("\0") == max(n - 1, 0) and len(raw) <= 0xFFFF:
        out += _NAMES.pack(n, len(raw)) + raw
    else:
        names = [category.encode("utf-8") for category in weights]
        out += _U8.pack(n | _WIDE) + _columns("H", n).pack(*map(len, names)) + b"".join(names)
    try:
        out += _columns("f", n).pack(*weights.values())
    except OverflowError:
        out += _columns("f", n).pack(*_saturated(weights.values()))


def _dec_weights(data: bytes, pos: int, f: Fields) -> int:
    (head,) = _U8.unpack_from(data, pos)
    if head & _WIDE:
        n = head & ~_WIDE
        pos += _U8.size
        lengths = _columns("H", n).unpack_from(data, pos)
        pos += 2 * n
        names = []
        for length in lengths:
            names.append(data[pos : pos + length].decode("utf-8"))
            pos += length
    else:
        n, size = _NAMES.unpack_from(data, pos)
        pos += _NAMES.size
        names = data[pos : pos + size].decode("utf-8").split("\0") if n else []
        pos += size
    if pos > len(data):
        raise struct.error("category names run past the end")
    f["weights"] = dict(zip(names, _columns("f", n).unpack_from(data, pos), strict=True))
    return pos + 4 * n


def _upgrade_weights(f: Fields) -> None:
    """Formats 2-4 stored float64 weights: round them as format 5's profiles hold them."""
    f["weights"] = float32_values(f["weights"])


def _enc_items(p: Profile, out: bytearray) -> None:
    """Count (u8), then columns: item hash (u32), weight (f32), first and last touch as ages in
    whole seconds before floor(clock) (u32, saturating), carts, favourites, touches this
    session (u8)."""
    items, info = p.items, p.item_info
    if info.keys() != items.keys():
        raise ValueError("profile item memory is out of step with its items")
    n = len(items)
    rows: list[float] = [*items, *items.values()]
    if n:
        now = max(math.floor(p.clock), 0)
        first, last, carts, favs, touches = zip(*map(info.__getitem__, items), strict=True)
        rows += [now - t for t in first]
        rows += [now - t for t in last]
        rows += carts + favs + touches
    pack = _columns("IfIIBBB", n).pack
    try:
        packed = pack(*rows)
    except (OverflowError, struct.error):  # a weight or an age out of range: saturate
        rows[n : 2 * n] = _saturated(rows[n : 2 * n])
        rows[2 * n : 4 * n] = [min(max(age, 0), _AGE_MAX) for age in rows[2 * n : 4 * n]]
        packed = pack(*rows)
    out += _U8.pack(n) + packed


def _dec_items(data: bytes, pos: int, f: Fields) -> int:
    (n,) = _U8.unpack_from(data, pos)
    pos += _U8.size
    columns = _columns("IfIIBBB", n)
    v = columns.unpack_from(data, pos)
    hashes = v[:n]
    f["items"] = dict(zip(hashes, v[n : 2 * n], strict=True))
    since = max(math.floor(f["clock"]), 0).__sub__  # an age -> its time
    first, last = map(since, v[2 * n : 3 * n]), map(since, v[3 * n : 4 * n])
    memory = zip(first, last, v[4 * n : 5 * n], v[5 * n : 6 * n], v[6 * n :], strict=True)
    f["item_info"] = dict(zip(hashes, memory, strict=True))
    return pos + columns.size


def _upgrade_items(f: Fields) -> None:
    """Formats 2-4 stored float64 item weights: round them as format 5's profiles hold them."""
    f["items"] = float32_values(f["items"])


def _enc_cart(p: Profile, out: bytearray) -> None:
    out += _U8.pack(len(p.cart))
    for item, added in p.cart:
        out += _ITEM.pack(item, added)


def _dec_cart(data: bytes, pos: int, f: Fields) -> int:
    f["cart"], pos = legacy.unpack_counted(data, pos, _ITEM)
    return pos


def _enc_session_categories(p: Profile, out: bytearray) -> None:
    cats = p.session_categories
    out += _U8.pack(len(cats)) + struct.pack(f"<{len(cats)}I", *cats)


def _dec_session_categories(data: bytes, pos: int, f: Fields) -> int:
    (n,) = _U8.unpack_from(data, pos)
    pos += _U8.size
    f["session_categories"] = struct.unpack_from(f"<{n}I", data, pos)
    return pos + 4 * n


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
    """Count (u8), then columns: bucket << 4 | code (u16), gap code (u8)."""
    recent = p.recent
    out += _U8.pack(len(recent))
    out += _columns("HB", len(recent)).pack(
        *[bucket << 4 | code for bucket, code, _ in recent], *[gap for _, _, gap in recent]
    )


def _dec_recent(data: bytes, pos: int, f: Fields) -> int:
    (n,) = _U8.unpack_from(data, pos)
    pos += _U8.size
    columns = _columns("HB", n)
    v = columns.unpack_from(data, pos)
    f["recent"] = tuple(
        [(packed >> 4, packed & 0xF, gap) for packed, gap in zip(v[:n], v[n:], strict=True)]
    )
    return pos + columns.size


def _enc_explore(p: Profile, out: bytearray, *, decisions: bool = True) -> None:
    if p.explore is None:
        out += _U8.pack(0)
    else:
        out += _U8.pack(1)
        encode_state(p.explore, p.clock, out, decisions=decisions)


def _dec_explore(data: bytes, pos: int, f: Fields, *, decisions: bool = True) -> int:
    (present,) = _U8.unpack_from(data, pos)
    pos += _U8.size
    if present == 1:
        f["explore"], pos = decode_state(data, pos, f["clock"], decisions=decisions)
    elif present != 0:
        raise struct.error(f"exploration marker {present} is neither 0 nor 1")
    return pos


def _enc_explore_5(p: Profile, out: bytearray) -> None:
    _enc_explore(p, out, decisions=False)


def _dec_explore_5(data: bytes, pos: int, f: Fields) -> int:
    return _dec_explore(data, pos, f, decisions=False)


@dataclass(frozen=True)
class _Section:
    name: str
    since: int  # the format version that introduced it
    encode: Callable[[Profile, bytearray], None]
    decode: Callable[[bytes, int, Fields], int]  # (data, position, fields so far) -> position
    upgrade: Callable[[Fields], None] | None = None  # fills its fields for older versions
    until: int | None = None  # the last format version that has it; None: the current one too

    def written_in(self, version: int) -> bool:
        return self.since <= version and (self.until is None or version <= self.until)


_SECTIONS: tuple[_Section, ...] = (
    _Section("fixed", 2, _enc_fixed, _dec_fixed),
    _Section("weights", 2, legacy.enc_weights, legacy.dec_weights, until=4),
    _Section("weights", 5, _enc_weights, _dec_weights, _upgrade_weights),
    _Section("items", 2, legacy.enc_items, legacy.dec_items, until=4),
    _Section("items", 5, _enc_items, _dec_items, _upgrade_items),  # with their memory
    _Section("cart", 2, _enc_cart, _dec_cart),
    _Section("session categories", 2, _enc_session_categories, _dec_session_categories),
    _Section(
        "item memory",
        3,
        legacy.enc_item_info,
        legacy.dec_item_info,
        legacy.upgrade_item_info,
        until=4,
    ),
    _Section("counters", 3, _enc_counters, _dec_counters),
    _Section("recent", 3, legacy.enc_recent, legacy.dec_recent, until=4),
    _Section("recent", 5, _enc_recent, _dec_recent),
    _Section("exploration", 4, legacy.enc_explore, legacy.dec_explore, until=4),
    _Section("exploration", 5, _enc_explore_5, _dec_explore_5, until=5),
    _Section("exploration", 6, _enc_explore, _dec_explore),  # with each decision's posterior
)
# Per readable version: the sections its bytes hold, in order, and the upgrades that bring
# what they decode to the current format, run after them in order.
_WRITTEN = {v: tuple(s for s in _SECTIONS if s.written_in(v)) for v in READABLE_VERSIONS}
_UPGRADES = {
    v: tuple(s.upgrade for s in _SECTIONS if v < s.since and s.upgrade is not None)
    for v in READABLE_VERSIONS
}


def encode_profile(profile: Profile, version: int = PROFILE_FORMAT_VERSION) -> bytes:
    """Compact, versioned bytes for a profile (under 1 KB for a busy user), in the current
    format or another of ``WRITABLE_VERSIONS``."""
    if version not in WRITABLE_VERSIONS:
        raise ValueError(
            f"profile format {version} cannot be written; this worker writes "
            f"{' or '.join(map(str, WRITABLE_VERSIONS))}"
        )
    return _encode(profile, version)


def _encode(profile: Profile, version: int) -> bytes:
    """The profile in format ``version`` (an older one only for tests: it loses the fields
    that version lacks)."""
    out = bytearray(_HEAD.pack(_MAGIC, version))
    for section in _WRITTEN[version]:
        section.encode(profile, out)
    return bytes(out)


def section_sizes(profile: Profile) -> dict[str, int]:
    """Bytes per section of the profile's encoding (what the profile benchmark reports)."""
    sizes = {"header": _HEAD.size}
    for section in _WRITTEN[PROFILE_FORMAT_VERSION]:
        out = bytearray()
        section.encode(profile, out)
        sizes[section.name] = len(out)
    return sizes


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
        for section in _WRITTEN[version]:
            pos = section.decode(data, pos, f)
        for upgrade in _UPGRADES[version]:
            upgrade(f)
    except (struct.error, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise ProfileDecodeError(f"profile bytes are truncated or corrupt: {exc}") from None
    if pos != len(data):
        raise ProfileDecodeError(f"profile has {len(data) - pos} trailing bytes after field end")
    return Profile(**f)
