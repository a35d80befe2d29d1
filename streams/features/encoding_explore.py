"""The bytes of an exploration state (``streams.features.explore.ExploreState``) in profile
format 5 (``streams.features.encoding``; format 4's are in ``encoding_legacy``). Standard
library only.

Little endian: the state's clock as a time; counts: n (u8), the n arms (u8), 2 bits per arm,
four to a byte (bit 0: successes stored, bit 1: failures stored; a count not stored is 0.0,
as most arms have only failures), the stored counts (f32) in order; open exposures: m (u8),
then each one's arm (u8), draw (u8), propensity (f32) and opened at (a time). A time is a u32
of microseconds before the profile's clock (rounded to whole microseconds): exact for any event
time (datetime's are whole microseconds) up to 71 minutes before the clock; any other time is
0xFFFFFFFF, then its f64. Counts and propensities are float32 in memory too, so the bytes are
exact.
"""

from __future__ import annotations

import math
import struct
from functools import cache

from streams.features.explore import ExploreState, Exposure

_U8 = struct.Struct("<B")
_U32 = struct.Struct("<I")
_F64 = struct.Struct("<d")
_EXPOSURE = struct.Struct("<BBfI")  # arm, draw, propensity, opened at (a time's u32)
_FAR = 0xFFFFFFFF  # a time stored as its f64


@cache
def _floats(n: int) -> struct.Struct:
    return struct.Struct(f"<{n}f")


def _micros(t: float) -> int | None:
    """``t`` rounded to whole microseconds; None if not finite."""
    us = t * 1e6
    return round(us) if math.isfinite(us) else None


def _offset(t: float, ref: int | None) -> int:
    """The u32 of time ``t`` relative to ``ref``: _FAR if it does not hold ``t`` exactly."""
    us = _micros(t)
    if ref is not None and us is not None and 0 <= ref - us < _FAR and us / 1_000_000 == t:
        return ref - us
    return _FAR


def _enc_time(t: float, ref: int | None, out: bytearray) -> None:
    offset = _offset(t, ref)
    out += _U32.pack(offset) if offset != _FAR else _U32.pack(_FAR) + _F64.pack(t)


def _dec_time(data: bytes, pos: int, ref: int | None) -> tuple[float, int]:
    (code,) = _U32.unpack_from(data, pos)
    pos += _U32.size
    if code == _FAR:
        (t,) = _F64.unpack_from(data, pos)
        return t, pos + _F64.size
    if ref is None:
        raise ValueError("exploration time is relative to a clock that is not finite")
    return (ref - code) / 1_000_000, pos


def encode_state(state: ExploreState, clock: float, out: bytearray) -> None:
    """Append the state's bytes, its times relative to ``clock`` (the profile's)."""
    ref = _micros(clock)
    _enc_time(state.clock, ref, out)
    counts = state.counts
    out += _U8.pack(len(counts)) + bytes(counts)
    kinds, stored = 0, []
    for i, (s, n) in enumerate(counts.values()):
        if s:
            kinds |= 1 << 2 * i
            stored.append(s)
        if n:
            kinds |= 2 << 2 * i
            stored.append(n)
    out += kinds.to_bytes((len(counts) + 3) // 4, "little")
    out += _floats(len(stored)).pack(*stored)
    out += _U8.pack(len(state.open))
    for e in state.open:
        offset = _offset(e.opened_at, ref)
        out += _EXPOSURE.pack(e.arm, e.draw, e.propensity, offset)
        if offset == _FAR:
            out += _F64.pack(e.opened_at)


def decode_state(data: bytes, pos: int, clock: float) -> tuple[ExploreState, int]:
    """The state at ``pos`` (times relative to ``clock``) and the position after it;
    struct.error or ValueError if the bytes are not one."""
    ref = _micros(clock)
    state_clock, pos = _dec_time(data, pos, ref)
    if not math.isfinite(state_clock):
        raise ValueError("exploration clock is not finite")
    (n,) = _U8.unpack_from(data, pos)
    pos += _U8.size
    n_kinds = (n + 3) // 4
    if pos + n + n_kinds > len(data):
        raise struct.error("exploration counts run past the end")
    arms = data[pos : pos + n]
    kinds = int.from_bytes(data[pos + n : pos + n + n_kinds], "little")
    pos += n + n_kinds
    n_stored = kinds.bit_count()
    stored = iter(_floats(n_stored).unpack_from(data, pos))
    pos += 4 * n_stored
    counts: dict[int, tuple[float, float]] = {}
    for i, arm in enumerate(arms):
        kind = kinds >> 2 * i
        counts[arm] = (next(stored) if kind & 1 else 0.0, next(stored) if kind & 2 else 0.0)
    (m,) = _U8.unpack_from(data, pos)
    pos += _U8.size
    exposures = []
    for _ in range(m):
        arm, draw, propensity, offset = _EXPOSURE.unpack_from(data, pos)
        pos += _EXPOSURE.size
        if offset == _FAR:
            (opened_at,) = _F64.unpack_from(data, pos)
            pos += _F64.size
        elif ref is None:
            raise ValueError("exploration time is relative to a clock that is not finite")
        else:
            opened_at = (ref - offset) / 1_000_000
        exposures.append(Exposure(arm, opened_at, propensity, draw))
    return ExploreState(state_clock, counts, tuple(exposures)), pos
