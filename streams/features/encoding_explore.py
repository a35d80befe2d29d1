"""The bytes of an exploration state (``streams.features.explore.ExploreState``) in profile
formats 5 and 6 (``streams.features.encoding``; format 4's are in ``encoding_legacy``).
Standard library only.

Little endian: the state's clock as a time; counts: n (u8), the n arms (u8), 2 bits per arm,
four to a byte (bit 0: successes stored, bit 1: failures stored; a count not stored is 0.0,
as most arms have only failures), the stored counts (f32) in order; open exposures: m (u8),
then each one's arm (u8), draw (u8), propensity (f32), in format 6 its decision's posterior
mean and strength (f32 each), then its opened at (a time), and in format 6 the interest it
was similar to (a name: u8 length, 0 for none, 255 for a u16 length that follows; then its
UTF-8 bytes). A time is a u32 of microseconds before the profile's clock (rounded to whole
microseconds): exact for any event time (datetime's are whole microseconds) up to 71 minutes
before the clock; any other time is 0xFFFFFFFF, then its f64. Counts, propensities and
posteriors are float32 in memory too, so the bytes are exact.
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
_DECIDED = struct.Struct("<BBfffI")  # format 6: and the posterior mean and strength
_U16 = struct.Struct("<H")
_LONG_NAME = 0xFF  # a name's length byte: a u16 length follows
_FAR = 0xFFFFFFFF  # a time stored as its f64
_NO_COUNTS = _U8.pack(0)  # a state without counts: their number, 0
_NO_NAME = _U8.pack(0)  # an exposure similar to none of the interests: a name's length, 0


@cache
def _floats(n: int) -> struct.Struct:
    return struct.Struct(f"<{n}f")


def _micros(t: float) -> int | None:
    """``t`` rounded to whole microseconds; None if not finite."""
    us = t * 1e6
    return round(us) if math.isfinite(us) else None


def _offset(t: float, ref: int | None) -> int:
    """The u32 of time ``t`` relative to ``ref``: _FAR if it does not hold ``t`` exactly.
    (``_micros`` inlined: this runs for every time of every state encoded.)"""
    scaled = t * 1e6
    if ref is not None and math.isfinite(scaled):
        us = round(scaled)
        if 0 <= ref - us < _FAR and us / 1_000_000 == t:
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


def _enc_name(name: str | None, out: bytearray) -> None:
    if not name:  # most exposures are "new to you"
        out += _NO_NAME
        return
    data = name.encode("utf-8")
    if len(data) < _LONG_NAME:
        out += _U8.pack(len(data)) + data
    else:
        out += _U8.pack(_LONG_NAME) + _U16.pack(len(data)) + data


def _dec_name(data: bytes, pos: int) -> tuple[str | None, int]:
    (n,) = _U8.unpack_from(data, pos)
    pos += _U8.size
    if n == _LONG_NAME:
        (n,) = _U16.unpack_from(data, pos)
        pos += _U16.size
    if pos + n > len(data):
        raise struct.error("an exposure's interest runs past the end")
    return (data[pos : pos + n].decode("utf-8") if n else None), pos + n


def encode_state(
    state: ExploreState, clock: float, out: bytearray, *, decisions: bool = True
) -> None:
    """Append the state's bytes, its times relative to ``clock`` (the profile's): format 6's,
    or with ``decisions=False`` format 5's (without what each exposure's decision saw)."""
    ref = _micros(clock)
    _enc_time(state.clock, ref, out)
    counts = state.counts
    if counts:
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
    else:  # most states (a new shopper's): n = 0, and no arms, kinds or counts follow
        out += _NO_COUNTS
    out += _U8.pack(len(state.open))
    for e in state.open:
        offset = _offset(e.opened_at, ref)
        if decisions:
            mean, strength = _posterior(e)
            out += _DECIDED.pack(e.arm, e.draw, e.propensity, mean, strength, offset)
        else:
            out += _EXPOSURE.pack(e.arm, e.draw, e.propensity, offset)
        if offset == _FAR:
            out += _F64.pack(e.opened_at)
        if decisions:
            _enc_name(e.similar, out)


def _posterior(e: Exposure) -> tuple[float, float]:
    """The posterior mean and strength an exposure keeps; NaN for an exposure decoded from
    format 5 or older, which had none (decoded back to None)."""
    if e.mean is None or e.strength is None:
        return math.nan, math.nan
    return e.mean, e.strength


def decode_state(
    data: bytes, pos: int, clock: float, *, decisions: bool = True
) -> tuple[ExploreState, int]:
    """The state at ``pos`` (times relative to ``clock``) and the position after it, in
    format 6 (or 5, ``decisions=False``); struct.error or ValueError if the bytes are not
    one."""
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
        mean: float | None
        strength: float | None
        if decisions:
            arm, draw, propensity, m_, s_, offset = _DECIDED.unpack_from(data, pos)
            pos += _DECIDED.size
            # NaN: an exposure of format 5 or older, stored again
            mean, strength = (None, None) if math.isnan(m_) or math.isnan(s_) else (m_, s_)
        else:
            arm, draw, propensity, offset = _EXPOSURE.unpack_from(data, pos)
            pos += _EXPOSURE.size
            mean = strength = None
        if offset == _FAR:
            (opened_at,) = _F64.unpack_from(data, pos)
            pos += _F64.size
        elif ref is None:
            raise ValueError("exploration time is relative to a clock that is not finite")
        else:
            opened_at = (ref - offset) / 1_000_000
        similar = None
        if decisions:
            similar, pos = _dec_name(data, pos)
        exposures.append(Exposure(arm, opened_at, propensity, draw, mean, strength, similar))
    return ExploreState(state_clock, counts, tuple(exposures)), pos
