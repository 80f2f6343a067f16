"""Bit-exact emulation of the hls4ml C simulation of DeepSets networks, vectorised over clusters.

:class:`Emulator` reproduces, bit for bit, what the C++ that hls4ml 1.3 generates (Vivado/Vitis backend,
``io_parallel``, Latency strategy) computes for every layer, without writing or compiling any C++: build it with
:meth:`Emulator.from_hls` from a converted hls4ml model, then call :meth:`Emulator.predict` or
:meth:`Emulator.trace`. Every value is held as the integer mantissa of its ``ap_fixed`` type (value = mantissa ·
2^−F), so products and sums are exact; the only roundings are those of the C++, with the quantisation (``AP_TRN``
… ``AP_RND_CONV``) and overflow (``AP_WRAP``, ``AP_SAT``, ``AP_SAT_ZERO``, ``AP_SAT_SYM``) rules of an
``ap_fixed`` assignment (checked against the real headers in all 28 combinations).

What the C simulation computes (``nnet_utils`` headers), and so the emulator:

* Input: each float or double is converted to the input layer's ``result_t`` (``ap_fixed(double)``).
* Weights: the writer prints each weight as a decimal with as many digits after the point as ``weight_t``
  (``bias_t``) has fractional bits (``'{:.Nf}'`` of the float, ties to even); the C simulation parses the text
  to a double and converts that to the type. The emulator quantises the same text, so a weight within half a
  decimal digit of a type step lands where the C++ puts it.
* ``PointwiseConv1D`` (hls4ml's form of a Keras ``Dense`` on ``[N, F]`` cells; weights ``[1, n_chan, n_filt]``,
  index ``chan * n_filt + filt``, not transposed) and ``Dense`` (``[n_in, n_out]``): each product
  ``data_T * weight_t`` is exact (``ap_fixed<Wd+Ww, Id+Iw>``) and is assigned to ``accum_t`` on its own (its
  rounding and overflow per product); the accumulator starts at ``(accum_t) bias`` and adds the products in input
  order, each ``+=`` exact and then overflowing as ``accum_t`` does (no rounding: the fractional bits match); the
  output is ``(result_t) acc``. hls4ml's ``auto`` types make ``accum_t`` wide enough for every product and sum
  (``result_t`` = ``accum_t``), so nothing rounds or overflows until the activation.
* ``Activation``: relu ``res = data > 0 ? (result_t) data : 0``; linear ``res = (result_t) data``.
* ``GlobalPooling1D`` average: per channel ``accum_t y = 0; y += x[i]`` over the N cells in order (each ``+=``
  rounds and overflows into ``accum_t``), then ``y /= N`` with N an ``unsigned``: integer division of the mantissa
  truncating towards zero, whatever N and the rounding mode (no reciprocal, no shift), then ``(result_t) y``. Max
  pooling: ``(result_t)(accum_t) max_i x[i]``.
* Outputs and traces: converted to double with round-to-nearest-even (``ap_fixed::to_double``), exact up to 53
  bits. With float32 inputs the C simulation returns float32, ``to_float`` rounding likewise: equal to
  ``predict(x).astype(np.float32)`` for outputs of up to 53 bits.

Exactness and limits. Mantissas are int64 and every intermediate value must stay below 2^62 in magnitude. Types of
up to 62 bits always fit; wider ones (``auto`` accumulators of 32-bit data and weights reach ~70 bits) work while
the values that occur fit, which the emulator checks per batch from bounds (tightened by the actual maximum when
needed); when they do not it raises :class:`~calohls.errors.ConversionError` rather than return an inexact result.
Refused when the emulator is built, with :class:`~calohls.errors.ConversionError` naming the layer: layer kinds
other than the five above, activations other than relu and linear, the Resource strategy, ``io_stream``, other
backends, binary (xnor) and power-of-two weights, unsigned types wider than 62 bits. ``ap_int<2>`` weights are the
ternary product hls4ml selects (0 → 0, −1 → −x, any other → x).

Speed. Inputs go in chunks of about 8k cells, which keep every array in the caches. Products with exact
accumulation (the ``auto`` case) run as one numba pass per layer that sums in float64 (exact while every partial
sum is an integer below 2^53, else in int64), then applies the accumulator, result and activation casts, skipping
casts proven to change nothing. Products rounded into ``accum_t`` sum rounded products freely when ``accum_t``
wraps (modular) or provably cannot overflow, and otherwise follow the sequential C++ loop. Compiled kernels are
cached on disk by numba (the first call on a machine compiles them, a few seconds).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numba
import numpy as np

from calohls.errors import ConversionError, DataError, NonFiniteError, PrecisionError
from calohls.quant.fixed import FixedType, quantize_int

__all__ = ["EmulatedLayer", "Emulator"]

#: Every int64 intermediate value must stay strictly below this magnitude.
_LIMIT = 1 << 62
#: Float64 matrix products of integers are exact while every partial sum stays below this magnitude.
_FLOAT_EXACT = 1 << 53

_ROUNDING = {"TRN": 0, "TRN_ZERO": 1, "RND": 2, "RND_ZERO": 3, "RND_INF": 4, "RND_MIN_INF": 5, "RND_CONV": 6}
_OVERFLOW = {"WRAP": 0, "SAT": 1, "SAT_ZERO": 2, "SAT_SYM": 3}

#: Layer kinds the emulator supports, by hls4ml class name.
SUPPORTED = ("Input", "PointwiseConv1D", "Dense", "Activation (relu, linear)", "GlobalPooling1D (average, max)")


# -- fixed-point formats -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Format:
    """A fixed-point type with the integers the kernels need: mantissa range and mode codes."""

    type: FixedType
    frac: int
    lo: int  # smallest mantissa an assignment gives (-max with SAT_SYM), exact
    hi: int  # largest mantissa, exact
    rounding: int
    overflow: int

    @classmethod
    def of(cls, t: FixedType, where: str) -> _Format:
        if not t.signed and t.width > 62:
            raise ConversionError(f"{where}: unsigned type {t} is wider than 62 bits; the emulator holds int64")
        return cls(t, t.fractional, t.min_int, t.max_int, _ROUNDING[t.rounding], _OVERFLOW[t.overflow])

    @property
    def magnitude(self) -> int:
        """Largest mantissa magnitude the type can hold."""
        return max(-self.lo, self.hi)

    @property
    def wraps(self) -> bool:
        """Overflow wraps (modulo 2**width), so a sum may wrap once at its end instead of after every term."""
        return self.type.overflow == "WRAP"

    def params(self) -> np.ndarray:
        """Kernel parameters ``[lo, hi, width, rounding, overflow]``, the range clipped to the int64 window.

        Clipping is harmless: kernels only see values below ``2**62``, for which the clipped range decides
        overflow exactly as the full one (and a type wider than 62 bits never wraps them).
        """
        lo, hi = max(self.lo, -_LIMIT), min(self.hi, _LIMIT)
        return np.array([lo, hi, self.type.width, self.rounding, self.overflow], np.int64)

    def cast_exact(self, mantissa: int, frac: int) -> int:
        """Assign the value ``mantissa * 2**-frac`` to this type (Python integers of any size)."""
        s = frac - self.frac
        return _cast.py_func(mantissa, s, self.lo, self.hi, self.type.width, self.rounding, self.overflow)

    def __str__(self) -> str:
        return str(self.type)


# -- kernels -------------------------------------------------------------------------------------------------
# Compiled with numba. They work on int64 mantissas below 2**62 in magnitude; the Python side checks the bounds
# that guarantee it before every call.


@numba.njit(cache=True)
def _cast(m, s, lo, hi, width, rounding, overflow):  # pragma: no cover - compiled
    """``ap_fixed`` assignment of mantissa ``m`` with ``s`` more fractional bits than the target (fewer if s < 0).

    ``lo``/``hi``: the target's mantissa range (``lo`` is -max for SAT_SYM); ``width``: its bits, for wrapping.
    The same code runs compiled on int64 (``|m| < 2**62``) and, through ``py_func``, on Python integers.
    """
    if s > 0:
        far = s >= 63 and -_LIMIT < m < _LIMIT  # a shift past every bit of m (undefined on int64)
        q = (-1 if m < 0 else 0) if far else m >> s  # floor
        if rounding != 0:
            if far:  # the first dropped bit is the sign, the later ones are not all zero unless m is
                qb = m < 0
                r = m != 0
            else:
                rem = m - (q << s)
                half = 1 << (s - 1)
                qb = rem >= half  # the first dropped bit
                r = (rem & (half - 1)) != 0  # any later dropped bit
            neg = m < 0
            if rounding == 2:  # RND: ties up
                inc = qb
            elif rounding == 3:  # RND_ZERO: ties towards zero
                inc = qb and (neg or r)
            elif rounding == 4:  # RND_INF: ties away from zero
                inc = qb and ((not neg) or r)
            elif rounding == 5:  # RND_MIN_INF: ties down
                inc = qb and r
            elif rounding == 6:  # RND_CONV: ties to even
                inc = qb and ((q & 1) != 0 or r)
            else:  # TRN_ZERO: towards zero
                inc = neg and (qb or r)
            if inc:
                q += 1
    elif s < 0:
        q = m << -s if m != 0 else m  # the caller guarantees |m << -s| < 2**62
    else:
        q = m
    if lo <= q <= hi:
        return q
    if overflow == 0:  # WRAP; only reachable for widths up to 62 bits
        return lo + (q - lo) % (1 << width)
    if overflow == 2:  # SAT_ZERO
        return 0
    return hi if q > hi else lo  # SAT, SAT_SYM


@numba.njit(cache=True, parallel=True)
def _input_kernel(bits, frac, p, out, flags):  # pragma: no cover - compiled
    """``out = (T) x`` for doubles given by their IEEE-754 bits, as ``ap_fixed(double)``.

    A normal double is ``±(2**52 + f) * 2**(e - 1075)`` exactly; its integer significand goes through :func:`_cast`.
    ``flags``: 2 for inf and NaN, 1 for what is left to the exact reference (subnormals, whose header reading
    differs from their value, and doubles too large for the int64 window), 0 when done.
    """
    for i in numba.prange(bits.size):
        b = bits[i]
        e = (b >> 52) & 0x7FF
        f = b & 0xFFFFFFFFFFFFF
        out[i] = 0
        if e == 0x7FF:
            flags[i] = 2
        elif e == 0:
            if f != 0:
                flags[i] = 1
        else:
            significand = f | 0x10000000000000
            s = 1075 - e - frac
            if s < 0:
                flags[i] = 1
            else:
                out[i] = _cast(-significand if b < 0 else significand, s, p[0], p[1], p[2], p[3], p[4])


@numba.njit(cache=True, parallel=True)
def _cast_kernel(x, s, p, relu, out):  # pragma: no cover - compiled
    """``out = (T) x`` element-wise, or ``x > 0 ? (T) x : 0`` when ``relu``."""
    for i in numba.prange(x.size):
        v = x[i]
        if relu and v <= 0:
            out[i] = 0
        else:
            out[i] = _cast(v, s, p[0], p[1], p[2], p[3], p[4])


@numba.njit(cache=True, parallel=True)
def _affine_kernel(x, w, w_float, bias, how, pa, pr, pq, out, out_act):  # pragma: no cover - compiled
    """A product layer that needs a single cast of the exact sum, and the activation after it.

    ``out = (result_t)(accum_t)(bias + (x @ w) << k)``. ``how`` = ``[exact_float, k, acc_free, s_res, res_free,
    act, s_act]``: sums accumulate in float64 when ``exact_float`` (the caller proved every partial sum an integer
    below 2**53), else in int64; ``acc_free``/``res_free``: the caller proved that cast leaves every value unchanged;
    ``act`` 1 (relu) or 2 (linear) writes the activation of ``out`` (shift ``s_act``, type ``pq``) to ``out_act``,
    which may be ``out`` itself when ``out`` is not wanted.
    """
    exact_float, k, acc_free, s_res, res_free, act, s_act = how[0], how[1], how[2], how[3], how[4], how[5], how[6]
    rows, n_in = x.shape
    n_out = w.shape[1]
    for block in numba.prange((rows + 63) // 64):
        sums = np.empty(n_out, np.int64)
        sums_float = np.empty(n_out, np.float64)
        for i in range(block * 64, min(block * 64 + 64, rows)):
            if exact_float:
                sums_float[:] = 0.0
                for c in range(n_in):
                    xv = np.float64(x[i, c])
                    if xv != 0.0:
                        for j in range(n_out):
                            sums_float[j] += xv * w_float[c, j]
                for j in range(n_out):
                    sums[j] = np.int64(sums_float[j])
            else:
                sums[:] = 0
                for c in range(n_in):
                    xi = x[i, c]
                    if xi != 0:
                        for j in range(n_out):
                            sums[j] += xi * w[c, j]
            for j in range(n_out):
                v = (sums[j] << k) + bias[j]
                if not acc_free:
                    v = _cast(v, 0, pa[0], pa[1], pa[2], pa[3], pa[4])
                if not res_free:
                    v = _cast(v, s_res, pr[0], pr[1], pr[2], pr[3], pr[4])
                out[i, j] = v
                if act == 1:
                    out_act[i, j] = 0 if v <= 0 else _cast(v, s_act, pq[0], pq[1], pq[2], pq[3], pq[4])
                elif act == 2:
                    out_act[i, j] = _cast(v, s_act, pq[0], pq[1], pq[2], pq[3], pq[4])


@numba.njit(cache=True, parallel=True)
def _dense_kernel(x, w, bias, s_prod, pa, s_res, pr, free_sum, out):  # pragma: no cover - compiled
    """A product layer that casts every product to ``accum_t``, then adds them in input order in ``accum_t``.

    ``free_sum``: the caller proved the sum needs no overflow handling on the way (``accum_t`` wraps, which is
    modular, or no partial sum can leave its range), so the cast products are summed in int64 and cast once.
    Otherwise TRN and RND products into a SAT or SAT_SYM accumulator take a branch-free loop, and any other
    combination the reference loop of :func:`_cast` calls.
    """
    rows, n_in = x.shape
    n_out = w.shape[1]
    lo, hi, rounding, overflow = pa[0], pa[1], pa[3], pa[4]
    shift_only = s_prod <= 0 or rounding == 0 or rounding == 2  # TRN and RND are a shift after adding `half`
    half = (1 << (s_prod - 1)) if s_prod > 0 and rounding == 2 else 0
    fast_saturate = shift_only and (overflow == 1 or overflow == 3)
    for block in numba.prange((rows + 63) // 64):
        acc = np.empty(n_out, np.int64)
        for i in range(block * 64, min(block * 64 + 64, rows)):
            if free_sum:
                acc[:] = 0
            else:
                acc[:] = bias
            for c in range(n_in):
                xi = x[i, c]
                if free_sum and shift_only:
                    if s_prod > 0:
                        for j in range(n_out):
                            acc[j] += (xi * w[c, j] + half) >> s_prod
                    else:
                        for j in range(n_out):
                            acc[j] += (xi * w[c, j]) << -s_prod
                elif free_sum:
                    for j in range(n_out):
                        acc[j] += _cast(xi * w[c, j], s_prod, pa[0], pa[1], pa[2], pa[3], pa[4])
                elif fast_saturate:
                    for j in range(n_out):
                        p = (xi * w[c, j] + half) >> s_prod if s_prod > 0 else (xi * w[c, j]) << -s_prod
                        p = min(max(p, lo), hi)
                        acc[j] = min(max(acc[j] + p, lo), hi)
                else:
                    for j in range(n_out):
                        p = _cast(xi * w[c, j], s_prod, pa[0], pa[1], pa[2], pa[3], pa[4])
                        acc[j] = _cast(acc[j] + p, 0, pa[0], pa[1], pa[2], pa[3], pa[4])
            for j in range(n_out):
                v = acc[j]
                if free_sum:
                    v = _cast(v + bias[j], 0, pa[0], pa[1], pa[2], pa[3], pa[4])
                out[i, j] = _cast(v, s_res, pr[0], pr[1], pr[2], pr[3], pr[4])


@numba.njit(cache=True, parallel=True)
def _average_kernel(x, sx, sy, pa, divisor, s_res, pr, out):  # pragma: no cover - compiled
    """``y = 0; y += x[i] (accum_t); y /= divisor (truncating); out = (result_t) y`` per sample and channel."""
    batch, cells, chans = x.shape
    for b in numba.prange(batch):
        for c in range(chans):
            y = np.int64(0)
            for n in range(cells):
                y = _cast((y << sy) + (x[b, n, c] << sx), sy, pa[0], pa[1], pa[2], pa[3], pa[4])
            y = y // divisor if y >= 0 else -((-y) // divisor)
            out[b, c] = _cast(y, s_res, pr[0], pr[1], pr[2], pr[3], pr[4])


@numba.njit(cache=True, parallel=True)
def _max_kernel(x, s_acc, pa, s_res, pr, out):  # pragma: no cover - compiled
    """``out = (result_t)(accum_t) max_i x[i]`` per sample and channel."""
    batch, cells, chans = x.shape
    for b in numba.prange(batch):
        for c in range(chans):
            y = x[b, 0, c]
            for n in range(1, cells):
                y = max(y, x[b, n, c])
            a = _cast(y, s_acc, pa[0], pa[1], pa[2], pa[3], pa[4])
            out[b, c] = _cast(a, s_res, pr[0], pr[1], pr[2], pr[3], pr[4])


# -- layers --------------------------------------------------------------------------------------------------

#: Layer kinds of :class:`EmulatedLayer`.
KINDS = ("input", "pointwise_conv1d", "dense", "relu", "linear", "average_pool", "max_pool")


@dataclass(frozen=True, eq=False)
class EmulatedLayer:
    """One hls4ml layer as the emulator runs it.

    Attributes:
        name: hls4ml layer name (the key of :meth:`Emulator.trace`).
        kind: One of :data:`KINDS`.
        shape: Output shape of one sample, as hls4ml's output variable.
        result: ``result_t``.
        accum: ``accum_t`` of matrix products and pooling, else ``None``.
        weight: ``weight_t`` of matrix products, else ``None``.
        bias: ``bias_t`` of matrix products, else ``None``.
        weights: Weight mantissas ``[n_in, n_out]`` in ``weight_t`` (matrix products), else ``None``.
        biases: Bias mantissas ``[n_out]`` in ``bias_t`` (matrix products), else ``None``.
        product: ``mult`` (``data * weight``) or ``weight_ternary`` (2-bit signed integer weights: 0 gives 0, -1
            gives ``-data``, any other weight ``data``), as ``nnet::product`` in the C++.
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    result: FixedType
    accum: FixedType | None = None
    weight: FixedType | None = None
    bias: FixedType | None = None
    weights: np.ndarray | None = None
    biases: np.ndarray | None = None
    product: str = "mult"


class _Overflow(Exception):
    """A bound check failed (raised inside a step, which retries with the input's actual maximum)."""


def _shifted_bound(bound: int, s: int, fmt: _Format) -> int:
    """A bound of ``|(fmt) v|`` for ``|v| <= bound`` with ``s`` more fractional bits than ``fmt``."""
    shifted = (bound >> s) + 1 if s > 0 else bound << -s
    return min(shifted, fmt.magnitude)


def _left_shift_ok(bound: int, s: int) -> None:
    """Raise :class:`_Overflow` unless a cast with shift ``s`` keeps values up to ``bound`` in the int64 window."""
    if s < 0 and bound << -s >= _LIMIT:
        raise _Overflow


class _Step:
    """A layer ready to run: its formats, shifts and the int64 constants of its kernels."""

    def __init__(self, layer: EmulatedLayer, src: _Format) -> None:
        self.layer = layer
        self.where = f"layer {layer.name!r} ({layer.kind})"
        self.src = src
        self.res = _Format.of(layer.result, f"{self.where} result_t")
        self.acc = _Format.of(layer.accum, f"{self.where} accum_t") if layer.accum is not None else None
        self.s_act = src.frac - self.res.frac  # activations: input to result
        if self.acc is not None:
            self.s_res = self.acc.frac - self.res.frac  # accumulator to result
        if layer.kind in ("pointwise_conv1d", "dense"):
            self._prepare_product()

    def _prepare_product(self) -> None:
        layer = self.layer
        wfmt = _Format.of(layer.weight, f"{self.where} weight_t")
        bfmt = _Format.of(layer.bias, f"{self.where} bias_t")
        w = np.asarray(layer.weights, np.int64)
        if layer.product == "weight_ternary":
            w = np.where(w == 0, 0, np.where(w == -1, -1, 1)).astype(np.int64)
            frac_product = self.src.frac
        else:
            frac_product = self.src.frac + wfmt.frac
        self.w = np.ascontiguousarray(w)
        self.w_float = self.w.astype(np.float64)
        self.w_max = int(np.abs(w).max(initial=0))
        self.w_colsum = max((sum(abs(int(v)) for v in col) for col in w.T), default=0)
        if self.w_max >= _LIMIT:
            raise ConversionError(f"{self.where}: weights exceed the int64 emulation (2**62)")
        self.s_prod = frac_product - self.acc.frac  # product to accumulator
        bias = [self.acc.cast_exact(int(b), bfmt.frac) for b in np.asarray(layer.biases).reshape(-1)]
        self.b_max = max(map(abs, bias), default=0)
        if self.b_max >= _LIMIT:
            raise ConversionError(f"{self.where}: biases in {self.acc} exceed the int64 emulation (2**62)")
        self.bias = np.array(bias, np.int64)
        # Products that need no rounding into accum_t: one matrix product, then one cast, if accum_t wraps (the
        # wraps of the sequential sum add up to one wrap at the end) or no partial sum can leave its range.
        self.exact_products = self.s_prod <= 0

    def run(self, x: np.ndarray, bound: int, act: _Step | None = None, keep: bool = True) -> tuple[list, int]:
        """Outputs for input mantissas ``x`` with ``|x| <= bound``, and a bound of the last output.

        ``act``: an activation step run fused after this product step; its output comes last. ``keep``: also
        return this step's own output when fused (else only the activation's).
        """
        try:
            return self._run(x, bound, act, keep)
        except _Overflow:
            actual = int(np.abs(x).max(initial=0))
            if actual < bound:
                try:
                    return self._run(x, actual, act, keep)
                except _Overflow:
                    pass
        raise ConversionError(
            f"{self.where}: intermediate values exceed the int64 emulation (2**62 in magnitude); use narrower "
            "fixed-point types (or smaller inputs)"
        )

    def _run(self, x: np.ndarray, bound: int, act: _Step | None, keep: bool) -> tuple[list, int]:
        kind = self.layer.kind
        if kind in ("relu", "linear"):
            out, bound = self._activation(x, bound)
            return [out], bound
        if kind in ("pointwise_conv1d", "dense"):
            outs, bound = self._product(x.reshape(-1, x.shape[-1]), bound, act, keep)
            return [o.reshape((*x.shape[:-1], o.shape[-1])) for o in outs], bound
        if kind == "average_pool":
            out, bound = self._average(x, bound)
        else:
            out, bound = self._max(x, bound)
        return [out], bound

    def _activation(self, x: np.ndarray, bound: int) -> tuple[np.ndarray, int]:
        _left_shift_ok(bound, self.s_act)
        flat = np.ascontiguousarray(x).reshape(-1)
        out = np.empty_like(flat)
        _cast_kernel(flat, self.s_act, self.res.params(), self.layer.kind == "relu", out)
        return out.reshape(x.shape), _shifted_bound(bound, self.s_act, self.res)

    def _product(self, x: np.ndarray, bound: int, act: _Step | None, keep: bool) -> tuple[list, int]:
        out = np.empty((x.shape[0], self.w.shape[1]), np.int64)
        k = -self.s_prod  # bits a product gains on its way into accum_t (negative: it is rounded)
        if self.exact_products and not self.acc.wraps and (bound * self.w_colsum << k) + self.b_max > self.acc.hi:
            bound = min(bound, int(np.abs(x).max(initial=0)))  # the actual inputs may prove no overflow
        sum_bound = bound * self.w_colsum
        acc_bound = ((sum_bound << k) + self.b_max) if self.exact_products else _LIMIT
        acc_free = acc_bound <= min(self.acc.hi, -self.acc.lo)  # no partial sum can overflow
        if acc_bound < _LIMIT and (self.acc.wraps or acc_free):
            acc_bound = min(acc_bound, self.acc.magnitude)
            _left_shift_ok(acc_bound, self.s_res)
            res_free = self.s_res == 0 and acc_bound <= min(self.res.hi, -self.res.lo)
            res_bound = _shifted_bound(acc_bound, self.s_res, self.res)
            code, s_act, pq, bound_out = 0, 0, self.res.params(), res_bound
            out_act = out
            if act is not None:
                _left_shift_ok(res_bound, act.s_act)
                code, s_act, pq = (1 if act.layer.kind == "relu" else 2), act.s_act, act.res.params()
                bound_out = _shifted_bound(res_bound, act.s_act, act.res)
                out_act = np.empty_like(out) if keep else out
            how = np.array([sum_bound < _FLOAT_EXACT, k, acc_free, self.s_res, res_free, code, s_act], np.int64)
            x = np.ascontiguousarray(x)
            _affine_kernel(
                x, self.w, self.w_float, self.bias, how, self.acc.params(), self.res.params(), pq, out, out_act
            )
            if act is None:
                return [out], bound_out
            return ([out, out_act] if keep else [out_act]), bound_out
        gain = max(k, 0)
        if (bound * self.w_max) << gain >= _LIMIT:
            raise _Overflow
        # |sum of the cast products and the bias|: each product loses -k bits (k < 0), rounding adds at most 1.
        sum_cast = self.b_max + (((sum_bound << gain) >> max(-k, 0)) + x.shape[1])
        free_sum = sum_cast < _LIMIT and (self.acc.wraps or sum_cast <= min(self.acc.hi, -self.acc.lo))
        acc_bound = min(self.acc.magnitude, sum_cast)
        if not free_sum and self.acc.type.width > 61:  # narrower ones keep the sum of two values below 2**61
            raise _Overflow
        _left_shift_ok(acc_bound, self.s_res)
        pa, pr = self.acc.params(), self.res.params()
        _dense_kernel(np.ascontiguousarray(x), self.w, self.bias, self.s_prod, pa, self.s_res, pr, free_sum, out)
        res_bound = _shifted_bound(acc_bound, self.s_res, self.res)
        if act is None:
            return [out], res_bound
        post, bound_out = act._activation(out, res_bound)
        return ([out, post] if keep else [post]), bound_out

    def _average(self, x: np.ndarray, bound: int) -> tuple[np.ndarray, int]:
        cells = x.shape[1]
        frac = max(self.acc.frac, self.src.frac)  # the exact sum y + x[i] has the finer of the two
        sx, sy = frac - self.src.frac, frac - self.acc.frac
        y_bound = min(self.acc.magnitude, cells * (((bound << sx) >> sy) + 2))
        if (y_bound << sy) + (bound << sx) >= _LIMIT:
            raise _Overflow
        _left_shift_ok(y_bound, self.s_res)
        out = np.empty((x.shape[0], x.shape[2]), np.int64)
        x = np.ascontiguousarray(x)
        _average_kernel(x, sx, sy, self.acc.params(), cells, self.s_res, self.res.params(), out)
        return out, _shifted_bound(y_bound, self.s_res, self.res)

    def _max(self, x: np.ndarray, bound: int) -> tuple[np.ndarray, int]:
        s_acc = self.src.frac - self.acc.frac
        _left_shift_ok(bound, s_acc)
        acc_bound = _shifted_bound(bound, s_acc, self.acc)
        _left_shift_ok(acc_bound, self.s_res)
        out = np.empty((x.shape[0], x.shape[2]), np.int64)
        _max_kernel(np.ascontiguousarray(x), s_acc, self.acc.params(), self.s_res, self.res.params(), out)
        return out, _shifted_bound(acc_bound, self.s_res, self.res)


# -- the emulator --------------------------------------------------------------------------------------------

#: Rows (cells) per chunk: chunks this size keep every intermediate array in the caches.
_CHUNK_ROWS = 8192


def _expected_input_shape(layer: EmulatedLayer, shape: tuple[int, ...]) -> bool:
    """Whether ``layer`` can take an input of per-sample ``shape``."""
    kind = layer.kind
    if kind in ("relu", "linear"):
        return layer.shape == shape
    if kind in ("average_pool", "max_pool"):
        return len(shape) == 2 and layer.shape == shape[1:]
    if layer.weights is None or layer.biases is None or np.ndim(layer.weights) != 2:
        return False
    n_in, n_out = np.shape(layer.weights)
    ok = shape[-1:] == (n_in,) and layer.shape[-1:] == (n_out,) and np.size(layer.biases) == n_out
    if kind == "dense":
        return ok and len(shape) == 1
    return ok and len(shape) == 2 and layer.shape == (shape[0], n_out)


class Emulator:
    """The C simulation of a converted hls4ml DeepSets network, in vectorised exact integer arithmetic.

    Build it with :meth:`from_hls` from a converted (not necessarily compiled) hls4ml ``ModelGraph``, then call
    :meth:`predict` or :meth:`trace` as on the compiled model; the results agree bit for bit.

    Args:
        layers: The layers in order, the first of kind ``input``.
    """

    def __init__(self, layers: Iterable[EmulatedLayer]) -> None:
        self.layers: tuple[EmulatedLayer, ...] = tuple(layers)
        if not self.layers or self.layers[0].kind != "input":
            raise ConversionError("an emulated network starts with its input layer; got none")
        self._input = _Format.of(self.layers[0].result, f"input layer {self.layers[0].name!r} result_t")
        steps: list[_Step] = []
        src, shape = self._input, self.layers[0].shape
        for layer in self.layers[1:]:
            if layer.kind not in KINDS[1:]:
                raise ConversionError(f"layer {layer.name!r}: kind {layer.kind!r} is not one of {KINDS[1:]}")
            if not _expected_input_shape(layer, shape):
                raise ConversionError(
                    f"layer {layer.name!r} ({layer.kind}, output {layer.shape}) cannot take an input of shape {shape}"
                )
            steps.append(_Step(layer, src))
            src, shape = steps[-1].res, layer.shape
        self._steps = steps
        # Product layers run fused with the activation that follows them.
        self._ops: list[tuple[_Step, _Step | None]] = []
        for step in steps:
            previous = self._ops[-1] if self._ops else None
            fuse = step.layer.kind in ("relu", "linear") and previous is not None and previous[1] is None
            if fuse and previous[0].layer.kind in ("pointwise_conv1d", "dense"):
                self._ops[-1] = (previous[0], step)
            else:
                self._ops.append((step, None))

    @classmethod
    def from_hls(cls, hls_model: object) -> Emulator:
        """The emulator of a converted hls4ml ``ModelGraph`` (Vivado or Vitis backend, ``io_parallel``).

        Reads every layer's resolved types and its weights exactly as the writer prints them for the C++.

        Raises:
            ConversionError: A layer kind, activation, type or option the emulator does not reproduce.
        """
        config = hls_model.config
        backend = getattr(config.backend, "name", str(config.backend))
        if backend not in ("Vivado", "Vitis"):
            raise ConversionError(f"backend {backend} is not emulated; convert with backend='Vitis' or 'Vivado'")
        io_type = config.get_config_value("IOType")
        if io_type != "io_parallel":
            raise ConversionError(f"io_type {io_type} is not emulated; convert with io_type='io_parallel'")
        layers, previous = [], None
        for layer in hls_model.get_layers():
            layers.append(_from_hls_layer(layer, previous))
            previous = layer
        return cls(layers)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input sample, e.g. ``(max_cells, n_features)``."""
        return self.layers[0].shape

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Shape of one output sample."""
        return self.layers[-1].shape

    @property
    def input_type(self) -> FixedType:
        """The input layer's ``result_t``: every input is first converted to it."""
        return self._input.type

    def predict(self, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """The network output for inputs ``x`` of shape ``[n, *input_shape]`` (float32 or float64).

        Args:
            x: The inputs.
            batch_size: Samples per chunk; by default chunks of about 8k cells, which keep the work in the caches.

        Returns:
            float64 ``[n]`` for a single output (``[n, *output_shape]`` otherwise), equal bit for bit to the
            compiled model's ``hls_model.predict(x)`` for float64 ``x``.
        """
        x = self._check_input(x)
        out = np.empty((len(x), *self.output_shape), np.float64)
        frac = self._steps[-1].res.frac if self._steps else self._input.frac
        for start, values in self._run(x, batch_size, every_layer=False):
            out[start : start + len(values[-1])] = np.ldexp(values[-1].astype(np.float64), -frac)
        return out.reshape(len(x)) if int(np.prod(self.output_shape)) == 1 else out

    def trace(self, x: np.ndarray, batch_size: int | None = None) -> dict[str, np.ndarray]:
        """Every layer's output after the input layer: layer name -> float64 ``[n, *shape]``.

        The names and shapes are those of ``hls_model.trace(x)`` with tracing enabled for every layer.
        """
        x = self._check_input(x)
        out = {s.layer.name: np.empty((len(x), *s.layer.shape), np.float64) for s in self._steps}
        for start, values in self._run(x, batch_size, every_layer=True):
            for step, m in zip(self._steps, values, strict=True):
                out[step.layer.name][start : start + len(m)] = np.ldexp(m.astype(np.float64), -step.res.frac)
        return out

    def _check_input(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype.kind not in "fiu":
            raise DataError(f"inputs must be real numbers; got dtype {x.dtype}")
        if x.shape[1:] != self.input_shape:
            raise DataError(f"inputs of shape {x.shape} do not match the network input; pass [n, *{self.input_shape}]")
        return np.ascontiguousarray(x, np.float64)

    def _quantized_input(self, x: np.ndarray) -> np.ndarray:
        """``x`` (contiguous float64) converted to the input type: mantissas, int64."""
        flat = x.reshape(-1)
        out = np.empty(flat.shape, np.int64)
        flags = np.zeros(flat.shape, np.uint8)
        _input_kernel(flat.view(np.int64), self._input.frac, self._input.params(), out, flags)
        if flags.any():
            if (flags == 2).any():
                raise NonFiniteError("inputs hold NaN or inf; the fixed-point network needs finite inputs")
            rest = np.flatnonzero(flags)  # left to the reference conversion
            out[rest] = _int64(quantize_int(flat[rest], self._input.type), f"inputs in {self._input}")
        return out.reshape(x.shape)

    def _run(self, x: np.ndarray, batch_size: int | None, every_layer: bool):
        if batch_size is None:
            batch_size = max(1, _CHUNK_ROWS // max(1, int(np.prod(self.input_shape[:-1]))))
        if batch_size < 1:
            raise DataError(f"batch_size={batch_size} must be at least 1")
        for start in range(0, len(x), batch_size):
            m = self._quantized_input(x[start : start + batch_size])
            bound = int(np.abs(m).max(initial=0))
            values = []
            for step, act in self._ops:
                outs, bound = step.run(m, bound, act, keep=every_layer)
                m = outs[-1]
                values.extend(outs)
            yield start, values if every_layer else [m]


# -- reading a converted hls4ml model ------------------------------------------------------------------------

_FUNCTIONS = {
    "pointwise_conv1d": "nnet::pointwise_conv_1d_cl<",
    "dense": "nnet::dense<",
    "relu": "nnet::relu<",
    "linear": "nnet::linear<",
    "average_pool": "nnet::global_pooling1d_cl<",
    "max_pool": "nnet::global_pooling1d_cl<",
}


def _int64(mantissas: np.ndarray, what: str) -> np.ndarray:
    """Mantissas as a contiguous int64 array, checked to stay below 2**62 in magnitude."""
    m = np.asarray(mantissas)
    if m.size and max(int(m.max()), -int(m.min())) >= _LIMIT:
        raise ConversionError(f"{what}: mantissas exceed the int64 emulation (2**62); use narrower types")
    return np.ascontiguousarray(m, np.int64)


def _fixed(precision: object, where: str) -> FixedType:
    try:
        return FixedType.from_hls4ml(precision)
    except PrecisionError as err:
        raise ConversionError(f"{where}: {err}") from None


def _written(var: object, t: FixedType, where: str) -> np.ndarray:
    """Mantissas of a weight variable as the C++ loads it: the writer's decimal text, parsed, then converted."""
    try:
        text = list(var)  # the strings the writer prints into weights/*.txt and weights/*.h
        values = np.array([float(s) for s in text], np.float64)
    except (TypeError, ValueError) as err:
        raise ConversionError(f"{where}: cannot read the weights as written ({err})") from None
    return _int64(quantize_int(values, t), where).reshape(np.shape(var.data))


def _product_kind(where: str, data_precision: object, weight_precision: object) -> str:
    """``nnet::product`` the backend picks for these types (FPGABackend.product_type), if emulated."""
    from hls4ml.model.types import ExponentPrecisionType, IntegerPrecisionType, XnorPrecisionType

    if isinstance(weight_precision, ExponentPrecisionType | XnorPrecisionType) or isinstance(
        data_precision, XnorPrecisionType
    ):
        raise ConversionError(f"{where}: binary and power-of-two weights or data are not emulated")
    if isinstance(weight_precision, IntegerPrecisionType):
        if weight_precision.width == 2 and weight_precision.signed:
            return "weight_ternary"
        one_bit = weight_precision.width == 1 and not weight_precision.signed
        if one_bit and isinstance(data_precision, IntegerPrecisionType) and data_precision.width == 1:
            raise ConversionError(f"{where}: 1-bit unsigned data with 1-bit unsigned weights are not emulated")
    return "mult"


def _from_hls_layer(layer: object, previous: object | None) -> EmulatedLayer:
    name, class_name = layer.name, layer.class_name
    where = f"layer {name!r} of kind {class_name}"
    if previous is not None and list(layer.inputs) != list(previous.outputs):
        raise ConversionError(f"{where} does not take the output of {previous.name!r}; only chains are emulated")
    out = layer.get_output_variable()
    shape = tuple(int(d) for d in out.shape)
    result = _fixed(out.type.precision, f"{where}: result_t")
    function = layer.get_attr("function_cpp", None)
    if class_name == "Input":
        return EmulatedLayer(name, "input", shape, result)

    if class_name in ("PointwiseConv1D", "Dense"):
        kind = "pointwise_conv1d" if class_name == "PointwiseConv1D" else "dense"
        strategy = str(layer.get_attr("strategy", "latency")).lower()
        if strategy != "latency":
            raise ConversionError(f"{where}: strategy {strategy} is not emulated; use the Latency strategy")
        if kind == "pointwise_conv1d":
            geometry = {
                a: layer.get_attr(a, d)
                for a, d in (("filt_width", 1), ("stride_width", 1), ("pad_left", 0), ("pad_right", 0))
            }
            if (
                geometry != {"filt_width": 1, "stride_width": 1, "pad_left": 0, "pad_right": 0}
                or layer.get_attr("data_format", "channels_last") != "channels_last"
            ):
                raise ConversionError(f"{where}: only width-1, stride-1, unpadded channels-last kernels are emulated")
        weight_var, bias_var = layer.weights["weight"], layer.weights["bias"]
        weight_t, bias_t = weight_var.type.precision, bias_var.type.precision
        product = _product_kind(where, previous.get_output_variable().type.precision, weight_t)
        config = layer.get_attr("config_cpp", None)
        if isinstance(config, str) and (f"nnet::product::{product}<" not in config or "Latency<" not in config):
            raise ConversionError(f"{where}: its C++ configuration uses a product or kernel the emulator lacks")
        weight, bias = _fixed(weight_t, f"{where}: weight_t"), _fixed(bias_t, f"{where}: bias_t")
        weights = _written(weight_var, weight, f"{where}: weights")
        weights = weights.reshape(-1, shape[-1])
        layer_def = EmulatedLayer(
            name,
            kind,
            shape,
            result,
            accum=_fixed(layer.types["accum_t"].precision, f"{where}: accum_t"),
            weight=weight,
            bias=bias,
            weights=weights,
            biases=_written(bias_var, bias, f"{where}: biases").reshape(-1),
            product=product,
        )
    elif class_name == "Activation":
        activation = str(layer.get_attr("activation", "")).lower()
        if activation not in ("relu", "linear"):
            raise ConversionError(f"{where}: activation {activation!r} is not emulated; supported: relu, linear")
        layer_def = EmulatedLayer(name, activation, shape, result)
    elif class_name == "GlobalPooling1D":
        op = str(layer.get_attr("pool_op", "")).lower()
        if op not in ("average", "max") or layer.get_attr("data_format", "channels_last") != "channels_last":
            raise ConversionError(f"{where}: only channels-last average and max pooling are emulated; got {op!r}")
        accum = _fixed(layer.types["accum_t"].precision, f"{where}: accum_t")
        layer_def = EmulatedLayer(name, f"{op}_pool", shape, result, accum=accum)
    else:
        raise ConversionError(f"{where} is not supported by the emulator; supported kinds: {', '.join(SUPPORTED)}")
    if isinstance(function, str) and _FUNCTIONS[layer_def.kind] not in function:
        raise ConversionError(f"{where}: its C++ call {function!r} is not the one the emulator reproduces")
    return layer_def
