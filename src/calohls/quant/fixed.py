"""Xilinx arbitrary-precision fixed-point types in numpy, bit-exact to the C++ ``ap_fixed`` headers.

A :class:`FixedType` is ``ap_fixed<W,I,Q,O,N>`` (``ap_ufixed`` when unsigned): W total bits, of which I are integer
bits (the sign bit included for signed types) and F = W − I fractional bits. A variable of the type holds an integer
*mantissa* q in ``min_int..max_int`` and stands for the value q·2^−F. :func:`quantize` gives the value such a variable
holds after assignment from a double, :func:`quantize_int` its mantissa. Both follow the double constructor of
``ap_fixed_base.h`` (the headers ship with hls4ml) to the bit:

* Quantization, on the bits below the LSB: ``TRN`` rounds towards −∞, ``TRN_ZERO`` towards zero, ``RND`` to nearest
  with ties towards +∞, ``RND_ZERO`` ties towards zero, ``RND_INF`` ties away from zero, ``RND_MIN_INF`` ties towards
  −∞ and ``RND_CONV`` ties to even.
* Overflow, on the rounded mantissa: ``WRAP`` keeps its low W bits (two's complement), ``SAT`` clamps it to
  ``[min_int, max_int]``, ``SAT_ZERO`` sets an out-of-range mantissa to 0 and ``SAT_SYM`` clamps a signed type to the
  symmetric range ``[−max_int, max_int]``, so −2^(W−1) becomes −2^(W−1)+1 (except for W = 1, where the header keeps
  −1; unsigned types saturate as with ``SAT``). ``WRAP`` with N > 0 saturation bits is not modelled and rejected.
* Non-finite and subnormal doubles are read as the header reads them: ±inf and NaN as ±(1.m)·2^1024 (m their stored
  fraction bits, the sign from the sign bit), so saturating modes clamp them by sign and ``WRAP`` gives 0 for up to
  972 integer bits; a subnormal ±m·2^−1074 as ±(2^52 + m)·2^−1075, which shows only with more than ~1020 fractional
  bits.

Integer types. ``ap_int<N>``/``ap_uint<N>`` are types with I = W that truncate towards zero (C semantics) when assigned
a fixed-point or floating value, then wrap: they are ``FixedType(N, N, rounding="TRN_ZERO")`` (see :func:`int_type`),
and that type is spelled ``ap_int<N>``/``int<N>`` (hls4ml's ``IntegerPrecisionType`` claims TRN, but the C++ type it
writes is ``ap_int``). ``ap_fixed<N,N>`` itself keeps TRN (towards −∞). One header defect is not reproduced: the
double constructor of ``ap_int`` gives 1 for doubles in (−0.5, 0); calohls gives 0, as ``ap_int`` does when assigned
the same value from any ``ap_fixed``.

Exactness and speed. :func:`quantize_int` is exact for every type (W ≤ 1024) and every double: vectorised float64
arithmetic for W ≤ 53 (every step is exact there), vectorised int64 arithmetic for mantissas that fit in int64
(signed W ≤ 64, unsigned W ≤ 63), exact Python integers for wider types (slow: about a microsecond per element;
the result then has dtype object). :func:`quantize` returns float64 and is exact, the returned double being the held
value, whenever that value is representable, which is always the case for W ≤ 53; for wider types it returns the
double nearest to the held value (compare the mantissas from :func:`quantize_int` to check bits).
"""

from __future__ import annotations

import dataclasses
import math
import operator
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from calohls.errors import PrecisionError

__all__ = [
    "MAX_FRACTIONAL",
    "MAX_WIDTH",
    "OVERFLOW_MODES",
    "ROUNDING_MODES",
    "FixedType",
    "int_type",
    "parse_fixed",
    "quantize",
    "quantize_int",
]

#: Quantization (rounding) modes, in the order of hls4ml's ``RoundingMode``; the first is the default.
ROUNDING_MODES = ("TRN", "TRN_ZERO", "RND", "RND_ZERO", "RND_INF", "RND_MIN_INF", "RND_CONV")
#: Overflow modes implemented (``AP_WRAP_SM`` is not), in the order of hls4ml's ``SaturationMode``.
OVERFLOW_MODES = ("WRAP", "SAT", "SAT_ZERO", "SAT_SYM")
#: Widest type: the default ``AP_INT_MAX_W`` of the headers.
MAX_WIDTH = 1024
#: Most fractional bits W − I a type may have (keeps the LSB a representable double).
MAX_FRACTIONAL = 1024

# Widest type the float64 path handles exactly: mantissas up to 2^53 are exact doubles.
_FLOAT_EXACT_WIDTH = 53
# Stand-in for the doubles that overflow when scaled by 2^F (and for inf/NaN): a multiple of 2^64, so it wraps to 0
# and saturates by sign like the true value, in every type the vectorised paths handle (W <= 64).
_HUGE = 2.0**1000
_MIN_NORMAL = np.finfo(np.float64).tiny
_ABS_BITS = (1 << 63) - 1
_FRAC_BITS = (1 << 52) - 1
_HIDDEN_BIT = 1 << 52


def _index(value: Any, what: str, name: str) -> int:
    """``value`` as a Python int; bools and non-integers are refused."""
    if isinstance(value, bool | np.bool_):
        raise PrecisionError(f"{what} {value!r} in {name} is not an integer; give a whole number")
    try:
        return operator.index(value)
    except TypeError:
        raise PrecisionError(f"{what} {value!r} in {name} is not an integer; give a whole number") from None


def _mode(value: Any, what: str, allowed: tuple[str, ...], name: str) -> str:
    """A mode name normalised to its bare upper-case spelling (``AP_RND`` and ``rnd`` give ``RND``)."""
    text = getattr(value, "name", value)  # hls4ml's RoundingMode/SaturationMode enums
    if isinstance(text, str):
        key = text.strip().upper()
        key = key.removeprefix("AP_")
        if key in allowed:
            return key
    raise PrecisionError(f"unknown {what} mode {value!r} in {name}; use one of {', '.join(allowed)}")


@dataclass(frozen=True)
class FixedType:
    """An ``ap_fixed``/``ap_ufixed`` type: ``FixedType(16, 6)`` is ``ap_fixed<16,6>``.

    Args:
        width: W, total bits, 1 to :data:`MAX_WIDTH`.
        integer: I, integer bits including the sign bit of signed types; at most W, at least W − 1024. I ≤ 0 gives
            a purely fractional type (``ap_fixed<8,-2>`` holds multiples of 2^−10 in [−2^−3, 2^−3)).
        signed: ``ap_fixed`` (True) or ``ap_ufixed`` (False).
        rounding: Quantization mode, one of :data:`ROUNDING_MODES` (an ``AP_`` prefix, lower case and hls4ml's
            ``RoundingMode`` are accepted and normalised).
        overflow: Overflow mode, one of :data:`OVERFLOW_MODES` (normalised likewise).
        sat_bits: N, the saturation bits of ``AP_WRAP``; only 0 is supported.

    Instances are immutable, hashable and compare equal when all fields are equal.
    """

    width: int
    integer: int
    signed: bool = True
    rounding: str = "TRN"
    overflow: str = "WRAP"
    sat_bits: int = 0

    def __post_init__(self) -> None:
        sign = "" if self.signed else "u"
        name = f"ap_{sign}fixed<{self.width},{self.integer}>"
        width = _index(self.width, "total bits", name)
        integer = _index(self.integer, "integer bits", name)
        sat_bits = _index(self.sat_bits, "saturation bits", name)
        if not isinstance(self.signed, bool | np.bool_):
            raise PrecisionError(f"signed={self.signed!r} in {name} is not a bool; give True or False")
        rounding = _mode(self.rounding, "rounding", ROUNDING_MODES, name)
        overflow = _mode(self.overflow, "overflow", OVERFLOW_MODES, name)
        for field, value in (
            ("width", width),
            ("integer", integer),
            ("signed", bool(self.signed)),
            ("rounding", rounding),
            ("overflow", overflow),
            ("sat_bits", sat_bits),
        ):
            object.__setattr__(self, field, value)
        name = self.ap()  # the full spelling, modes included, for the messages below
        if not 1 <= width <= MAX_WIDTH:
            raise PrecisionError(f"total bits {width} out of range in {name}; use 1 to {MAX_WIDTH} total bits")
        if integer > width:
            raise PrecisionError(
                f"integer bits {integer} exceed total bits {width} in {name}; use at most {width} integer bits"
            )
        if width - integer > MAX_FRACTIONAL:
            raise PrecisionError(
                f"fractional bits {width - integer} exceed {MAX_FRACTIONAL} in {name}; "
                f"use at least {width - MAX_FRACTIONAL} integer bits"
            )
        if sat_bits != 0:
            raise PrecisionError(
                f"saturation bits {sat_bits} in {name} are not supported; use 0 (WRAP with saturation bits is not "
                "modelled)"
            )

    # -- derived quantities ---------------------------------------------------------------------------------------

    @property
    def fractional(self) -> int:
        """F = W − I, the number of fractional bits (more than W when I < 0)."""
        return self.width - self.integer

    @property
    def lsb(self) -> float:
        """The value of one mantissa step, 2^−F."""
        return math.ldexp(1.0, -self.fractional)

    @property
    def min_int(self) -> int:
        """The smallest mantissa :func:`quantize_int` returns (−2^(W−1), or −2^(W−1)+1 with SAT_SYM; 0 unsigned)."""
        if not self.signed:
            return 0
        lowest = -(1 << (self.width - 1))
        # The header's symmetric saturation sets the LSB of the most negative pattern: a no-op for W = 1.
        return lowest + 1 if self.overflow == "SAT_SYM" and self.width > 1 else lowest

    @property
    def max_int(self) -> int:
        """The largest mantissa: 2^(W−1) − 1 signed, 2^W − 1 unsigned."""
        return (1 << (self.width - self.signed)) - 1

    @property
    def min(self) -> float:
        """The smallest value :func:`quantize` returns, ``min_int``·2^−F (the nearest double for W > 53)."""
        return _to_float(self.min_int, self.fractional)

    @property
    def max(self) -> float:
        """The largest value, ``max_int``·2^−F (the nearest double for W > 53)."""
        return _to_float(self.max_int, self.fractional)

    @property
    def is_int(self) -> bool:
        """Whether this is an ``ap_int``/``ap_uint``: I = W, TRN_ZERO, WRAP."""
        return self.integer == self.width and self.rounding == "TRN_ZERO" and self.overflow == "WRAP"

    # -- spellings ------------------------------------------------------------------------------------------------

    def ap(self) -> str:
        """The C++ spelling, default modes left out (``str(t)`` gives the same).

        Examples: ``ap_fixed<16,6,AP_RND,AP_SAT>``, ``ap_ufixed<8,3>``, ``ap_int<8>``.
        """
        sign = "" if self.signed else "u"
        if self.is_int:
            return f"ap_{sign}int<{self.width}>"
        args = [str(self.width), str(self.integer)]
        if self.rounding != "TRN" or self.overflow != "WRAP":
            args.append(f"AP_{self.rounding}")
        if self.overflow != "WRAP":
            args.append(f"AP_{self.overflow}")
        return f"ap_{sign}fixed<{','.join(args)}>"

    def hls4ml(self) -> str:
        """The hls4ml spelling, as its precision types print: ``fixed<16,6,RND,SAT,0>``, ``ufixed<...>``, ``int<8>``."""
        sign = "" if self.signed else "u"
        if self.is_int:
            return f"{sign}int<{self.width}>"
        return f"{sign}fixed<{self.width},{self.integer},{self.rounding},{self.overflow},{self.sat_bits}>"

    def __str__(self) -> str:
        return self.ap()

    def with_(self, **changes: Any) -> FixedType:
        """A copy with some fields changed (validated again): ``t.with_(width=18, integer=8)``."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_hls4ml(cls, precision: Any) -> FixedType:
        """The type of an hls4ml precision object (``FixedPrecisionType``, ``IntegerPrecisionType``, ``uint<1>``).

        Integer precisions become :func:`int_type` (the ``ap_int`` they are written as in C++). Float and exponent
        precisions have no fixed-point equivalent and raise :class:`~calohls.errors.PrecisionError`.
        """
        kinds = {klass.__name__ for klass in type(precision).__mro__}
        if "FixedPrecisionType" in kinds:
            rounding = getattr(precision, "rounding_mode", None)
            overflow = getattr(precision, "saturation_mode", None)
            return cls(
                width=precision.width,
                integer=precision.integer,
                signed=bool(precision.signed),
                rounding="TRN" if rounding is None else rounding,
                overflow="WRAP" if overflow is None else overflow,
                sat_bits=getattr(precision, "saturation_bits", None) or 0,
            )
        if kinds & {"IntegerPrecisionType", "XnorPrecisionType"}:
            return int_type(precision.width, bool(precision.signed))
        raise PrecisionError(
            f"hls4ml precision {precision} ({type(precision).__name__}) has no fixed-point equivalent; "
            "use a fixed or integer precision such as fixed<16,6,RND,SAT,0>"
        )


def int_type(width: int, signed: bool = True) -> FixedType:
    """``ap_int<width>`` (``ap_uint`` when unsigned): I = W, truncation towards zero, wrap."""
    return FixedType(width, width, signed, rounding="TRN_ZERO", overflow="WRAP")


_TYPE_RE = re.compile(r"\s*(ap_)?(u?)(fixed|int)\s*<([^<>]*)>\s*")
_NUMBER_RE = re.compile(r"[+-]?\d+")


def parse_fixed(text: str) -> FixedType:
    """Read a precision in C++ or hls4ml spelling.

    Accepts ``ap_fixed<W,I>``, ``ap_fixed<W,I,Q>``, ``ap_fixed<W,I,Q,O>``, ``ap_fixed<W,I,Q,O,N>``, the same with
    ``ap_ufixed``, ``fixed`` and ``ufixed``, and ``ap_int<W>``, ``ap_uint<W>``, ``int<W>``, ``uint<W>``. Modes are
    written with or without the ``AP_`` prefix, in any case; spaces are allowed.

    Raises:
        PrecisionError: ``text`` is not such a spelling, or names an impossible or unsupported type.
    """
    hint = "write it as ap_fixed<W,I> or fixed<W,I,RND,SAT>"
    match = _TYPE_RE.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise PrecisionError(f"cannot parse precision {text!r}; {hint}")
    _, unsigned, kind, body = match.groups()
    args = [arg.strip() for arg in body.split(",")]
    n_numbers, n_max = (2, 5) if kind == "fixed" else (1, 1)
    numbers = args[:n_numbers] + args[4:]  # W, I and N are integers, Q and O names
    if not n_numbers <= len(args) <= n_max or not all(args) or not all(_NUMBER_RE.fullmatch(a) for a in numbers):
        raise PrecisionError(f"cannot parse precision {text!r}; {hint}")
    signed = not unsigned
    if kind == "int":
        return int_type(int(args[0]), signed)
    modes = dict(zip(("rounding", "overflow"), args[2:4], strict=False))
    sat_bits = int(args[4]) if len(args) == 5 else 0
    return FixedType(int(args[0]), int(args[1]), signed, sat_bits=sat_bits, **modes)


# -- quantization -------------------------------------------------------------------------------------------------


def _as_type(t: FixedType | str) -> FixedType:
    if isinstance(t, FixedType):
        return t
    if isinstance(t, str):
        return parse_fixed(t)
    raise PrecisionError(
        f"precision {t!r} is neither a FixedType nor a spelling; pass e.g. parse_fixed('ap_fixed<16,6>')"
    )


def _round_up(rounding: str, above: Any, tie: Any, inexact: Any, neg: Any, odd: Any) -> Any:
    """Whether the quantization mode adds one LSB to the floor; works on bools and on numpy bool arrays.

    ``above``: the dropped bits exceed half an LSB; ``tie``: they are exactly half; ``inexact``: they are not all
    zero; ``neg``: the source is negative; ``odd``: the floor is odd (consulted by RND_CONV only).
    """
    if rounding == "TRN":
        return False
    if rounding == "TRN_ZERO":
        return neg & inexact
    if rounding == "RND":
        return above | tie
    if rounding == "RND_ZERO":
        return above | (tie & neg)
    if rounding == "RND_INF":
        return above | (tie & (neg ^ True))
    if rounding == "RND_MIN_INF":
        return above
    return above | (tie & odd)  # RND_CONV


def _rounded(x: np.ndarray, t: FixedType) -> np.ndarray:
    """The rounded, not yet overflow-handled, mantissa of 1-D float64 ``x`` as integer-valued float64.

    Exact for every type: scaling by 2^F is exact unless it overflows (then the stand-in ±2^1000 is used, which every
    type of W ≤ 64 treats like the true value), and the floor, the dropped fraction and the increment are exact.
    """
    f = t.fractional
    with np.errstate(over="ignore"):
        y = np.ldexp(x, f)
        subnormal = (x != 0) & (np.abs(x) < _MIN_NORMAL)
        if subnormal.any():  # the header reads ±m·2^-1074 as ±(2^52 + m)·2^-1075
            xs = x[subnormal]
            y[subnormal] = np.copysign(np.ldexp(1.0, f - 1023) + np.ldexp(np.abs(xs), f - 1), xs)
    huge = ~np.isfinite(y)
    if huge.any():
        y[huge] = np.copysign(_HUGE, y[huge])
    floor = np.floor(y)
    if t.rounding == "TRN":
        return floor
    frac = y - floor
    odd = np.fmod(floor, 2.0) != 0 if t.rounding == "RND_CONV" else None
    up = _round_up(t.rounding, frac > 0.5, frac == 0.5, frac > 0, np.signbit(x), odd)
    return floor + up


def _mantissa_float(x: np.ndarray, t: FixedType) -> np.ndarray:
    """The mantissa as integer-valued float64, for W <= 53 (where every step is exact)."""
    q = _rounded(x, t)
    if t.overflow == "WRAP":
        modulus = 2.0**t.width
        q = np.fmod(q, modulus)
        q = np.where(q < 0, q + modulus, q)
        if t.signed:
            q = np.where(q >= modulus / 2, q - modulus, q)
    else:
        lo = -(2.0 ** (t.width - 1)) if t.signed else 0.0
        hi = float(t.max_int)
        # SAT_ZERO zeroes what is out of range; SAT and SAT_SYM clamp.
        q = np.where((q < lo) | (q > hi), 0.0, q) if t.overflow == "SAT_ZERO" else np.clip(q, float(t.min_int), hi)
    return q + 0.0  # no negative zeros


def _wrap_int64(q: np.ndarray, t: FixedType) -> np.ndarray:
    """Integer-valued float64 ``q`` (finite) wrapped to the W <= 64 bits of ``t``, as int64."""
    m, e = np.frexp(q)
    man = np.ldexp(m, 53).astype(np.int64)  # q = man·2^shift exactly
    shift = e.astype(np.int64) - 53
    right = np.right_shift(man, np.clip(-shift, 0, 63)).view(np.uint64)  # exact: q is an integer
    left = np.left_shift(man.view(np.uint64), np.clip(shift, 0, 63).astype(np.uint64))  # modulo 2^64
    bits = np.where(shift < 0, right, np.where(shift < 64, left, np.uint64(0)))
    width = t.width
    if width < 64:
        bits = bits & np.uint64((1 << width) - 1)
    if not t.signed:
        return bits.astype(np.int64)  # W <= 63 here
    if width == 64:
        return bits.view(np.int64)
    out = bits.astype(np.int64)
    negative = bits >= np.uint64(1 << (width - 1))
    out[negative] -= 1 << (width - 1)
    out[negative] -= 1 << (width - 1)
    return out


def _mantissa_int64(x: np.ndarray, t: FixedType) -> np.ndarray:
    """The mantissa as int64, for every type whose mantissa fits in int64."""
    q = _rounded(x, t)
    top = 2.0 ** (t.width - 1) if t.signed else 2.0**t.width  # max_int + 1, exact
    lo = -top if t.signed else 0.0
    over, under = q >= top, q < lo
    inside = ~(over | under)
    out = np.zeros(q.shape, np.int64)
    out[inside] = q[inside].astype(np.int64)
    if t.overflow == "WRAP":
        out[~inside] = _wrap_int64(q[~inside], t)
    elif t.overflow in ("SAT", "SAT_SYM"):
        out[over] = t.max_int
        out[under] = t.min_int
        if t.overflow == "SAT_SYM" and t.signed:
            out[out < t.min_int] = t.min_int
    return out


def _mantissa_scalar(bits: int, t: FixedType) -> int:
    """The mantissa for one double given by its IEEE-754 bits, in exact integer arithmetic (the reference path)."""
    if not bits & _ABS_BITS:
        return 0
    neg = bool(bits >> 63)
    man = (bits & _FRAC_BITS) | _HIDDEN_BIT  # the header sets the hidden bit for subnormals, inf and NaN too
    if neg:
        man = -man
    shift = ((bits >> 52) & 0x7FF) - 1075 + t.fractional  # value·2^F = man·2^shift
    if shift >= 0:
        q = man << shift
    else:
        drop = -shift
        q = man >> drop  # floor
        rest = man - (q << drop)  # the dropped bits, 0 <= rest < 2^drop
        half = 1 << (drop - 1)
        q += bool(_round_up(t.rounding, rest > half, rest == half, rest > 0, neg, bool(q & 1)))
    lo = -(1 << (t.width - 1)) if t.signed else 0
    if lo <= q <= t.max_int:
        return max(q, t.min_int)  # SAT_SYM lifts the most negative pattern
    if t.overflow == "WRAP":
        q &= (1 << t.width) - 1
        return q - (1 << t.width) if t.signed and q >> (t.width - 1) else q
    if t.overflow == "SAT_ZERO":
        return 0
    return t.max_int if q > 0 else t.min_int


def _mantissa_exact(x: np.ndarray, t: FixedType) -> np.ndarray:
    """The mantissas of 1-D float64 ``x`` as an object array of Python ints (any width)."""
    bits = np.ascontiguousarray(x, dtype=np.float64).view(np.uint64).tolist()
    out = np.empty(len(bits), dtype=object)
    out[:] = [_mantissa_scalar(b, t) for b in bits]
    return out


def _to_float(q: int, fractional: int) -> float:
    """q·2^−F rounded to the nearest double (±inf beyond the double range)."""
    try:
        return float(Fraction(q, 1 << fractional))
    except OverflowError:
        return math.inf if q > 0 else -math.inf


def _flat(x: Any) -> tuple[np.ndarray, tuple[int, ...]]:
    arr = np.asarray(x, dtype=np.float64)
    return arr.reshape(-1), arr.shape


def quantize_int(x: Any, t: FixedType | str) -> np.ndarray:
    """The mantissa q (value·2^F) an ``ap_fixed`` of type ``t`` holds after assignment from each double in ``x``.

    Args:
        x: Array-like, read as float64 (float32 converts exactly, as the C++ float constructor does).
        t: The type, or its spelling (see :func:`parse_fixed`).

    Returns:
        An array of the shape of ``x``: int64 when the mantissa fits (signed W ≤ 64, unsigned W ≤ 63), else dtype
        object holding Python ints. Exact for every type and input (see the module notes).
    """
    t = _as_type(t)
    flat, shape = _flat(x)
    if t.width <= _FLOAT_EXACT_WIDTH:
        out = _mantissa_float(flat, t).astype(np.int64)
    elif t.width <= (64 if t.signed else 63):
        out = _mantissa_int64(flat, t)
    else:
        out = _mantissa_exact(flat, t)
    return out.reshape(shape)


def quantize(x: Any, t: FixedType | str) -> np.ndarray:
    """The value an ``ap_fixed`` of type ``t`` holds after assignment from each double in ``x``, as float64.

    Bit-exact to the C++ headers for every rounding and overflow mode; the returned double is the held value itself
    for W ≤ 53 (and wherever the held value is a double), the nearest double otherwise.

    Args:
        x: Array-like, read as float64.
        t: The type, or its spelling (see :func:`parse_fixed`).

    Returns:
        A float64 array of the shape of ``x``.
    """
    t = _as_type(t)
    flat, shape = _flat(x)
    if t.width <= _FLOAT_EXACT_WIDTH:
        return np.ldexp(_mantissa_float(flat, t), -t.fractional).reshape(shape)
    mantissa = quantize_int(flat, t)
    if mantissa.dtype == object:
        values = np.array([_to_float(int(q), t.fractional) for q in mantissa], dtype=np.float64)
    else:
        values = np.ldexp(mantissa.astype(np.float64), -t.fractional)
    return values.reshape(shape)
