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

The layer kinds are declared once, in :data:`LAYER_KINDS` (hls4ml class, builder from the converted graph, runner,
and the da4ml tracer that costs the PTQ design); everything else looks them up there.

Exactness and limits. Mantissas are held in float64 where every value that can occur (by bounds derived from the
formats and the actual input maximum) stays below 2^52, which makes every product, sum, shift and cast exact, and in
int64 otherwise, where every intermediate value must stay below 2^62. Types of up to 62 bits always fit; wider ones
(``auto`` accumulators of 32-bit data and weights reach ~70 bits) work while the values that occur fit, which the
emulator checks per chunk from bounds (tightened by the actual maximum when needed); when they do not it raises
:class:`~calohls.errors.ConversionError` rather than return an inexact result. Refused when the emulator is built,
with :class:`~calohls.errors.ConversionError` naming the layer: layer kinds other than those of
:data:`LAYER_KINDS`, activations other than relu and linear, the Resource strategy, ``io_stream``, other backends,
binary (xnor) and power-of-two weights, unsigned types wider than 62 bits. ``ap_int<2>`` weights are the ternary
product hls4ml selects (0 → 0, −1 → −x, any other → x).

Speed. Inputs go in chunks of about 32k cells, on as many threads as numba may use (``NUMBA_NUM_THREADS``: one in
the PTQ pool workers), every kernel serial and releasing the GIL. float32 inputs (the project's features) are read
as they are, each as the double it equals. The input conversion is one pass that also drops the all-zero (padded)
cells, when the leading per-cell layers keep them zero (bias-free Φ layers and activations: every cast maps 0 to
0) and a pooling layer follows, which takes the real cells as they are (adding 0 to an ``accum_t`` sum changes
nothing); mantissas that fit 24 bits are held in float32, which halves the memory traffic and feeds float32 BLAS
without a copy. In the float64 form exact matrix products are one single-threaded BLAS call per chunk — in float32
when every partial sum stays below 2^24 — followed by one pass that adds the bias and applies the accumulator,
result and activation casts (skipping casts proven to change nothing): one loop with no branch on the values when
a single cast of a common mode (TRN or RND; WRAP, SAT or SAT_SYM) is all that remains (in float32 arithmetic, twice
the vector width, where every value stays below 2^23), else blocks of 64 rows that
stay in the first-level cache through a loop per cast, each vectorised with its mode chosen outside. Products
rounded into ``accum_t`` are rounded and summed in one pass when ``accum_t`` wraps (modular) or provably cannot
overflow. Sequential saturating sums, and values beyond 2^52, take the int64 kernels. :meth:`Emulator.from_hls`
prints and parses a weight's decimal text only where it can round differently from the weight itself. Compiled
kernels are cached on disk by numba (the first call on a machine compiles them, a few seconds).
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from typing import Any, NamedTuple

import numba
import numpy as np

from calohls.errors import ConversionError, DataError, NonFiniteError, PrecisionError
from calohls.quant import _kernels as kernels
from calohls.quant._kernels import FLOAT_LIMIT as _FLOAT
from calohls.quant._kernels import LIMIT as _LIMIT
from calohls.quant._kernels import _cast
from calohls.quant._kernels import cast_kernel as _cast_kernel
from calohls.quant.fixed import FixedType, quantize_int

__all__ = ["KINDS", "LAYER_KINDS", "SUPPORTED", "EmulatedLayer", "Emulator", "LayerKind"]

_ROUNDING = {"TRN": 0, "TRN_ZERO": 1, "RND": 2, "RND_ZERO": 3, "RND_INF": 4, "RND_MIN_INF": 5, "RND_CONV": 6}
_OVERFLOW = {"WRAP": 0, "SAT": 1, "SAT_ZERO": 2, "SAT_SYM": 3}
#: Float32 matrix products of integers are exact while every partial sum stays below this magnitude.
_SINGLE = 1 << 24
#: Float32 casts are exact for values below this magnitude (``y + 0.5`` included), shifts up to _SINGLE_SHIFT and
#: types whose mantissas fit 24 bits.
_HALF_SINGLE = 1 << 23
_SINGLE_SHIFT = 100
#: Largest right shift the float64 kernels take (keeps every scaled mantissa a normal double).
_FLOAT_SHIFT = 960


# -- fixed-point formats -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Format:
    """A fixed-point type with the numbers the kernels need: mantissa range and mode codes."""

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
    def inner(self) -> int:
        """Largest magnitude every value up to which lies in the type's range (no overflow possible)."""
        return min(self.hi, -self.lo)

    @property
    def wraps(self) -> bool:
        """Overflow wraps (modulo 2**width), so a sum may wrap once at its end instead of after every term."""
        return self.type.overflow == "WRAP"

    def params(self) -> np.ndarray:
        """int64 kernel parameters ``[lo, hi, width, rounding, overflow]``, the range clipped to the int64 window.

        Clipping is harmless: kernels only see values below ``2**62``, for which the clipped range decides
        overflow exactly as the full one (and a type wider than 62 bits never wraps them).
        """
        return self._params

    @cached_property
    def _params(self) -> np.ndarray:
        lo, hi = max(self.lo, -_LIMIT), min(self.hi, _LIMIT)
        return np.array([lo, hi, self.type.width, self.rounding, self.overflow], np.int64)

    def fparams(self) -> np.ndarray:
        """float64 kernel parameters ``[lo, hi, 2**width, 2**-width, rounding, overflow]``.

        The range and modulus are clipped to 2**60: float kernels see values below 2**52, which a type that wide
        never overflows.
        """
        return self._fparams

    @cached_property
    def _fparams(self) -> np.ndarray:
        width = min(self.type.width, 60)
        lo, hi = float(max(self.lo, -(1 << 60))), float(min(self.hi, 1 << 60))
        return np.array([lo, hi, 2.0**width, 2.0**-width, self.rounding, self.overflow], np.float64)

    def cast_exact(self, mantissa: int, frac: int) -> int:
        """Assign the value ``mantissa * 2**-frac`` to this type (Python integers of any size)."""
        s = frac - self.frac
        return _cast.py_func(mantissa, s, self.lo, self.hi, self.type.width, self.rounding, self.overflow)

    def __str__(self) -> str:
        return str(self.type)


# -- layers --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class EmulatedLayer:
    """One hls4ml layer as the emulator runs it.

    Attributes:
        name: hls4ml layer name (the key of :meth:`Emulator.trace`).
        kind: One of :data:`KINDS` (a key of :data:`LAYER_KINDS`).
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
    if not fmt.type.signed and fmt.wraps:
        return fmt.magnitude  # a negative v wraps to the top of the range
    shifted = (bound >> s) + 1 if s > 0 else bound << -s
    return min(shifted, fmt.magnitude)


def _left_shift_ok(bound: int, s: int) -> None:
    """Raise :class:`_Overflow` unless a cast with shift ``s`` keeps values up to ``bound`` in the int64 window."""
    if s < 0 and bound << -s >= _LIMIT:
        raise _Overflow


def _float_ok(bound: int, s: int = 0) -> bool:
    """Whether a cast with shift ``s`` of values up to ``bound`` stays exact in float64 (below 2**52)."""
    return bound < _FLOAT and s <= _FLOAT_SHIFT and (s >= 0 or bound << -s < _FLOAT)


def _scale(s: int) -> float:
    """``2**-s``: the factor of a cast with shift ``s``."""
    return math.ldexp(1.0, -s)


def _as(x: np.ndarray, dtype: type) -> np.ndarray:
    """``x`` as a C-contiguous array of ``dtype`` (no copy when it is one)."""
    return np.ascontiguousarray(x, dtype)


class _Cells(NamedTuple):
    """Per-cell values of a chunk as rows: sample b's cells are ``rows[offsets[b]:offsets[b + 1]]``; all-zero cells
    may be left out (then a sample has fewer than ``cells`` rows)."""

    rows: np.ndarray
    offsets: np.ndarray
    cells: int

    @classmethod
    def of(cls, x: np.ndarray | _Cells) -> _Cells:
        if isinstance(x, _Cells):
            return x
        batch, cells, chans = x.shape
        return cls(x.reshape(batch * cells, chans), np.arange(batch + 1, dtype=np.int64) * cells, cells)

    def full(self) -> np.ndarray:
        """``[samples, cells, C]``, the left-out cells zero."""
        batch = len(self.offsets) - 1
        if len(self.rows) == batch * self.cells:
            return self.rows.reshape(batch, self.cells, -1)
        full = np.zeros((batch, self.cells, self.rows.shape[-1]), self.rows.dtype)
        for b in range(batch):  # only the rare int64 path comes here
            first, last = self.offsets[b], self.offsets[b + 1]
            full[b, : last - first] = self.rows[first:last]  # the order of the cells is kept, the zeros follow
        return full


def _floats(x: np.ndarray) -> np.ndarray:
    """``x`` as a C-contiguous float32 or float64 array (float32 kept as it is)."""
    return np.ascontiguousarray(x, np.float32 if x.dtype == np.float32 else np.float64)


def _actual(x: np.ndarray | _Cells) -> int:
    """The largest magnitude in ``x``."""
    return int(np.abs(x.rows if isinstance(x, _Cells) else x).max(initial=0))


class _Step:
    """A layer ready to run: its kind, formats, shifts and the constants of its kernels."""

    def __init__(self, layer: EmulatedLayer, src: _Format) -> None:
        self.layer = layer
        self.kind = LAYER_KINDS[layer.kind]
        self.where = f"layer {layer.name!r} ({layer.kind})"
        self.src = src
        self.res = _Format.of(layer.result, f"{self.where} result_t")
        self.acc = _Format.of(layer.accum, f"{self.where} accum_t") if layer.accum is not None else None
        self.s_act = src.frac - self.res.frac  # activations: input to result
        if self.acc is not None:
            self.s_res = self.acc.frac - self.res.frac  # accumulator to result
        if self.kind.prepare is not None:
            self.kind.prepare(self)

    def run(self, x: np.ndarray, bound: int, act: _Step | None = None, keep: bool = True) -> tuple[list, int]:
        """Outputs for input mantissas ``x`` with ``|x| <= bound``, and a bound of the last output.

        ``act``: an activation step run fused after this product step; its output comes last. ``keep``: also
        return this step's own output when fused (else only the activation's).
        """
        try:
            return self.kind.run(self, x, bound, act, keep)
        except _Overflow:
            actual = _actual(x)
            if actual < bound:
                try:
                    return self.kind.run(self, x, actual, act, keep)
                except _Overflow:
                    pass
        raise ConversionError(
            f"{self.where}: intermediate values exceed the int64 emulation (2**62 in magnitude); use narrower "
            "fixed-point types (or smaller inputs)"
        )


# -- running the kinds ---------------------------------------------------------------------------------------


def _run_activation(step: _Step, x: np.ndarray, bound: int, act: _Step | None, keep: bool) -> tuple[list, int]:
    """``relu``: ``x > 0 ? (result_t) x : 0``; ``linear``: ``(result_t) x``."""
    s, relu = step.s_act, step.kind.activation == 1
    if _float_ok(bound, s):
        x = _as(x, np.float64)
        out = np.empty_like(x)
        kernels.fcast_kernel(x.reshape(-1), _scale(s), step.res.fparams(), relu, out.reshape(-1))
    else:
        _left_shift_ok(bound, s)
        x = _as(x, np.int64)
        out = np.empty_like(x)
        _cast_kernel(x.reshape(-1), s, step.res.params(), relu, out.reshape(-1))
    return [out], _shifted_bound(bound, s, step.res)


def _prepare_product(step: _Step) -> None:
    layer = step.layer
    wfmt = _Format.of(layer.weight, f"{step.where} weight_t")
    bfmt = _Format.of(layer.bias, f"{step.where} bias_t")
    w = np.asarray(layer.weights, np.int64)
    if layer.product == "weight_ternary":
        w = np.where(w == 0, 0, np.where(w == -1, -1, 1)).astype(np.int64)
        frac_product = step.src.frac
    else:
        frac_product = step.src.frac + wfmt.frac
    step.w = np.ascontiguousarray(w)
    step.w_max = _actual(w)
    if step.w_max >= _LIMIT:
        raise ConversionError(f"{step.where}: weights exceed the int64 emulation (2**62)")
    if step.w_max * max(1, w.shape[0]) < _LIMIT:  # the column sums fit int64
        step.w_colsum = int(np.abs(w).sum(axis=0).max(initial=0))
    else:
        step.w_colsum = max((sum(abs(int(v)) for v in col) for col in w.T), default=0)
    step.w_float = step.w.astype(np.float64) if step.w_max < _FLOAT else None
    step.w_single = step.w.astype(np.float32) if step.w_max < _SINGLE else None
    step.s_prod = frac_product - step.acc.frac  # product to accumulator
    bias = [step.acc.cast_exact(int(b), bfmt.frac) for b in np.asarray(layer.biases).reshape(-1)]
    step.b_max = max(map(abs, bias), default=0)
    if step.b_max >= _LIMIT:
        raise ConversionError(f"{step.where}: biases in {step.acc} exceed the int64 emulation (2**62)")
    step.bias = np.array(bias, np.int64)
    step.bias_float = step.bias.astype(np.float64)
    # Products that need no rounding into accum_t: one matrix product, then one cast, if accum_t wraps (the
    # wraps of the sequential sum add up to one wrap at the end) or no partial sum can leave its range.
    step.exact_products = step.s_prod <= 0


def _run_product(step: _Step, x: np.ndarray, bound: int, act: _Step | None, keep: bool) -> tuple[list, int]:
    """Dense / pointwise layers on the last axis, fused with the activation ``act`` after them."""
    rows = x.reshape(-1, x.shape[-1])
    outs, bound = _product(step, rows, bound, act, keep)
    return [o.reshape((*x.shape[:-1], o.shape[-1])) for o in outs], bound


class _Sums(NamedTuple):
    """Bounds of a product layer's sum for one chunk."""

    bound: int  # of the inputs (tightened to their actual maximum where that helps)
    sums: int  # of the exact sum of products, |x| |w| summed
    acc: int  # of the accumulator before its final cast: the exact (or rounded-product) sum plus the bias
    acc_free: bool  # no partial sum can leave accum_t's range


def _sum_bounds(step: _Step, x: np.ndarray, bound: int) -> _Sums:
    k = -step.s_prod  # bits a product gains on its way into accum_t (negative: it is rounded)
    if step.exact_products and not step.acc.wraps and (bound * step.w_colsum << k) + step.b_max > step.acc.hi:
        bound = min(bound, _actual(x))  # the actual inputs may prove no overflow
    sums = bound * step.w_colsum
    # a rounded product loses -k bits, and its rounding adds at most 1
    acc = (sums << k) + step.b_max if step.exact_products else step.b_max + (sums >> -k) + x.shape[1]
    return _Sums(bound, sums, acc, acc <= step.acc.inner)


def _product(step: _Step, x: np.ndarray, bound: int, act: _Step | None, keep: bool) -> tuple[list, int]:
    b = _sum_bounds(step, x, bound)
    one_cast = step.acc.wraps or b.acc_free  # the sum may be cast once, at its end
    acc_bound = min(b.acc, step.acc.magnitude)
    res_bound = _shifted_bound(acc_bound, step.s_res, step.res)
    floats = one_cast and b.acc < _FLOAT and _float_ok(acc_bound, step.s_res) and step.w_float is not None
    if not step.exact_products:
        floats = floats and b.bound * step.w_max < _FLOAT and step.s_prod <= _FLOAT_SHIFT
    if floats and act is not None:
        floats = _float_ok(res_bound, act.s_act)
    if floats:
        last_bound = res_bound if act is None else _shifted_bound(res_bound, act.s_act, act.res)
        outs = _float_product(step, x, b, act, keep, acc_bound, last_bound < _SINGLE)
    elif step.exact_products and one_cast and b.acc < _LIMIT:
        outs = _int_affine(step, x, b, act, keep, acc_bound)
    else:
        outs = _int_dense(step, x, b, acc_bound)
        if act is not None:
            post, _ = act.run(outs[0], res_bound)
            outs = [outs[0], post[0]] if keep else post
    if act is None:
        return outs, res_bound
    return outs, _shifted_bound(res_bound, act.s_act, act.res)


def _fused(step: _Step, act: _Step | None, acc_bound: int) -> tuple[bool, int, int, Any]:
    """``res_free``, the activation code, its shift and its result format (or that of ``result_t``)."""
    res_free = step.s_res == 0 and acc_bound <= step.res.inner
    if act is None:
        return res_free, 0, 0, step.res
    return res_free, act.kind.activation, act.s_act, act.res


def _float_product(
    step: _Step, x: np.ndarray, b: _Sums, act: _Step | None, keep: bool, acc_bound: int, single: bool
) -> list:
    """The float form of a product layer; ``single``: its last output fits float32 exactly (below 2**24)."""
    if step.exact_products and b.sums < _SINGLE and step.w_single is not None:
        sums = _as(x, np.float32) @ step.w_single  # BLAS in float32: every partial sum an integer below 2**24
    elif step.exact_products:
        sums = _as(x, np.float64) @ step.w_float  # BLAS, exact below 2**53
    else:
        sums = np.empty((x.shape[0], step.w.shape[1]))
        kernels.frounded_sums_kernel(_as(x, np.float64), step.w_float, _scale(step.s_prod), step.acc.rounding, sums)
    scale_k = math.ldexp(1.0, -step.s_prod) if step.exact_products else 1.0
    res_free, code, s_act, q = _fused(step, act, acc_bound)
    separate = act is not None and keep
    last = np.empty(sums.shape, np.float32 if single else np.float64)
    one_cast = _one_cast(step, act, b.acc_free, res_free, separate)
    if one_cast is not None:  # one loop: bias, relu and the one cast that changes anything
        floor_at, s, fmt = one_cast
        fp = fmt.fparams()
        c = np.array([scale_k, floor_at, _scale(s), 0.5 if fmt.type.rounding == "RND" else 0.0, *fp[:4]])
        bias = step.bias_float
        if (
            sums.dtype == np.float32
            and max(acc_bound, fmt.magnitude) < _SINGLE
            and acc_bound < _HALF_SINGLE
            and (0 <= s <= _SINGLE_SHIFT)
            and scale_k <= 2.0**_SINGLE_SHIFT  # a finite float32 (all-zero sums of a huge shift: 0 * inf is NaN)
        ):
            c, bias = c.astype(np.float32), bias.astype(np.float32)  # every value exact in float32
        kernels.fpost_simple_kernel(sums, bias, c, fmt.type.overflow == "WRAP", last)
        return [last]
    out = np.empty(sums.shape) if separate else last
    how = np.array([b.acc_free, res_free, code, separate], np.int64)
    scales = (scale_k, _scale(step.s_res), _scale(s_act))
    f = (step.acc.fparams(), step.res.fparams(), q.fparams())
    kernels.fpost_rows_kernel(sums, scales[0], step.bias_float, how, f[0], scales[1], f[1], scales[2], f[2], out, last)
    if act is None:
        return [out]
    return [out, last] if keep else [last]


def _one_cast(
    step: _Step, act: _Step | None, acc_free: bool, res_free: bool, separate: bool
) -> tuple[float, int, _Format] | None:
    """``(floor_at, shift, format)`` of a product layer's output when a single cast of a common mode (TRN or RND,
    WRAP, SAT or SAT_SYM) is all it needs after its exact sum and bias, with relu (``floor_at`` 0) or not; else
    None."""
    if not acc_free or separate:
        return None
    if act is None:
        cast = (-math.inf, step.s_res if not res_free else 0, step.res)
    elif res_free:
        cast = (0.0 if act.kind.activation == 1 else -math.inf, act.s_act, act.res)
    else:
        return None
    fmt = cast[2]
    simple = fmt.type.rounding in ("TRN", "RND") and fmt.type.overflow in ("WRAP", "SAT", "SAT_SYM")
    return cast if simple else None


def _int_affine(step: _Step, x: np.ndarray, b: _Sums, act: _Step | None, keep: bool, acc_bound: int) -> list:
    _left_shift_ok(acc_bound, step.s_res)
    res_free, code, s_act, q = _fused(step, act, acc_bound)
    if act is not None:
        _left_shift_ok(_shifted_bound(acc_bound, step.s_res, step.res), s_act)
    out = np.empty((x.shape[0], step.w.shape[1]), np.int64)
    out_act = np.empty_like(out) if (act is not None and keep) else out
    how = np.array([-step.s_prod, b.acc_free, step.s_res, res_free, code, s_act], np.int64)
    kernels.affine_kernel(_as(x, np.int64), step.w, step.bias, how, step.acc.params(), step.res.params(), q.params(),
                          out, out_act)  # fmt: skip
    if act is None:
        return [out]
    return [out, out_act] if keep else [out_act]


def _int_dense(step: _Step, x: np.ndarray, b: _Sums, acc_bound: int) -> list:
    """Products cast one by one into ``accum_t`` and summed in order, in int64."""
    gain = max(-step.s_prod, 0)
    if (b.bound * step.w_max) << gain >= _LIMIT:
        raise _Overflow
    sum_cast = b.acc if not step.exact_products else b.acc + x.shape[1]
    free_sum = sum_cast < _LIMIT and (step.acc.wraps or sum_cast <= step.acc.inner)
    if not free_sum and step.acc.type.width > 61:  # narrower ones keep the sum of two values below 2**61
        raise _Overflow
    _left_shift_ok(acc_bound, step.s_res)
    out = np.empty((x.shape[0], step.w.shape[1]), np.int64)
    pa, pr = step.acc.params(), step.res.params()
    kernels.dense_kernel(_as(x, np.int64), step.w, step.bias, step.s_prod, pa, step.s_res, pr, free_sum, out)
    return [out]


def _run_average(step: _Step, x: Any, bound: int, act: _Step | None, keep: bool) -> tuple[list, int]:
    """Average pooling over the cells (axis 1), in ``accum_t``, then the truncating division by their number."""
    x = _Cells.of(x)
    acc, cells, batch = step.acc, x.cells, len(x.offsets) - 1
    frac = max(acc.frac, step.src.frac)  # the exact sum y + x[i] has the finer of the two
    sx, sy = frac - step.src.frac, frac - acc.frac
    y_bound = min(acc.magnitude, cells * (((bound << sx) >> sy) + 2))
    step_bound = (y_bound << sy) + (bound << sx)  # of y + x[i], in the finer units
    total = cells * (bound << sx)  # of the exact sum
    out = np.empty((batch, x.rows.shape[-1]))
    if step_bound < _FLOAT and _float_ok(y_bound, step.s_res):
        free = sy == 0 and total < _FLOAT and (acc.wraps or total <= acc.inner)
        scales = math.ldexp(1.0, acc.frac - step.src.frac), _scale(step.s_res)
        kernels.faverage_kernel(_floats(x.rows), x.offsets, scales[0], acc.fparams(), free, float(cells),
                                scales[1], step.res.fparams(), out)  # fmt: skip
    else:
        if step_bound >= _LIMIT:
            raise _Overflow
        _left_shift_ok(y_bound, step.s_res)
        out = out.astype(np.int64)
        x_full = _as(x.full(), np.int64)
        kernels.average_kernel(x_full, sx, sy, acc.params(), cells, step.s_res, step.res.params(), out)
    return [out], _shifted_bound(y_bound, step.s_res, step.res)


def _run_max(step: _Step, x: Any, bound: int, act: _Step | None, keep: bool) -> tuple[list, int]:
    """Max pooling over the cells (axis 1): ``(result_t)(accum_t) max_i x[i]``."""
    x = _Cells.of(x)
    s_acc = step.src.frac - step.acc.frac
    acc_bound = _shifted_bound(bound, s_acc, step.acc)
    shape = (len(x.offsets) - 1, x.rows.shape[-1])
    if _float_ok(bound, s_acc) and _float_ok(acc_bound, step.s_res):
        out = np.empty(shape)
        fa, fr = step.acc.fparams(), step.res.fparams()
        kernels.fmax_kernel(_floats(x.rows), x.offsets, x.cells, _scale(s_acc), fa, _scale(step.s_res), fr, out)
    else:
        _left_shift_ok(bound, s_acc)
        _left_shift_ok(acc_bound, step.s_res)
        out = np.empty(shape, np.int64)
        x_full = _as(x.full(), np.int64)
        kernels.max_kernel(x_full, s_acc, step.acc.params(), step.s_res, step.res.params(), out)
    return [out], _shifted_bound(acc_bound, step.s_res, step.res)


# -- reading a converted hls4ml model ------------------------------------------------------------------------


class _Source(NamedTuple):
    """An hls4ml layer being read, with what every builder needs."""

    layer: Any
    previous: Any
    where: str
    shape: tuple[int, ...]
    result: FixedType


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
        values = _as_written(var, t)
    except (TypeError, ValueError) as err:
        raise ConversionError(f"{where}: cannot read the weights as written ({err})") from None
    return _int64(quantize_int(values, t), where).reshape(np.shape(var.data))


def _as_written(var: Any, t: FixedType) -> np.ndarray:
    """The doubles the C++ parses from the writer's text of ``var`` (``'{:.Nf}'`` of each weight), flat.

    Printing with N decimals moves a weight by at most half a unit of the N-th decimal; a weight whose every
    such neighbour lies within one half-step of its type (the type's step is ``2**-F``; every rounding decision
    depends only on which half-step a value lies in) converts as its text does, so only the others are printed
    and parsed. The margins are widened far beyond the rounding of these float checks."""
    fmt = getattr(var, "precision_fmt", None)
    digits = re.fullmatch(r"\{:\.(\d+)f\}", fmt) if isinstance(fmt, str) else None
    data = np.asarray(var.data)
    if digits is None or data.dtype.kind != "f" or data.dtype.itemsize > 8:
        return np.array([float(s) for s in var], np.float64)
    frac = t.fractional
    values = np.ascontiguousarray(data, np.float64).reshape(-1)
    if not np.isfinite(values).all() or abs(frac) > 900:
        return np.array([float(s) for s in var], np.float64)
    halves = np.ldexp(values, frac + 1)  # the value in half-steps of the type
    margin = 2.0 * (math.ldexp(10.0 ** -int(digits.group(1)), frac) + np.abs(halves) * 2.0**-45) + 1e-6
    printed = np.floor(halves - margin) != np.floor(halves + margin)
    for i in np.flatnonzero(printed):
        values[i] = float(fmt.format(data.reshape(-1)[i]))
    return values


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


def _build_plain(src: _Source, kind: LayerKind) -> EmulatedLayer:
    """The input and activations: a result type and nothing else."""
    return EmulatedLayer(src.layer.name, kind.key, src.shape, src.result)


_UNIT_KERNEL = {"filt_width": 1, "stride_width": 1, "pad_left": 0, "pad_right": 0}


def _build_product(src: _Source, kind: LayerKind) -> EmulatedLayer:
    """``Dense`` and ``PointwiseConv1D``: types, and the weights as the C++ loads them."""
    layer, where = src.layer, src.where
    strategy = str(layer.get_attr("strategy", "latency")).lower()
    if strategy != "latency":
        raise ConversionError(f"{where}: strategy {strategy} is not emulated; use the Latency strategy")
    if kind.key == "pointwise_conv1d" and (
        {a: layer.get_attr(a, d) for a, d in _UNIT_KERNEL.items()} != _UNIT_KERNEL
        or layer.get_attr("data_format", "channels_last") != "channels_last"
    ):
        raise ConversionError(f"{where}: only width-1, stride-1, unpadded channels-last kernels are emulated")
    weight_var, bias_var = layer.weights["weight"], layer.weights["bias"]
    weight_t, bias_t = weight_var.type.precision, bias_var.type.precision
    product = _product_kind(where, src.previous.get_output_variable().type.precision, weight_t)
    config = layer.get_attr("config_cpp", None)
    if isinstance(config, str) and (f"nnet::product::{product}<" not in config or "Latency<" not in config):
        raise ConversionError(f"{where}: its C++ configuration uses a product or kernel the emulator lacks")
    weight, bias = _fixed(weight_t, f"{where}: weight_t"), _fixed(bias_t, f"{where}: bias_t")
    return EmulatedLayer(
        layer.name,
        kind.key,
        src.shape,
        src.result,
        accum=_fixed(layer.types["accum_t"].precision, f"{where}: accum_t"),
        weight=weight,
        bias=bias,
        weights=_written(weight_var, weight, f"{where}: weights").reshape(-1, src.shape[-1]),
        biases=_written(bias_var, bias, f"{where}: biases").reshape(-1),
        product=product,
    )


def _build_pool(src: _Source, kind: LayerKind) -> EmulatedLayer:
    """``GlobalPooling1D``: channels-last, with its accumulator."""
    if src.layer.get_attr("data_format", "channels_last") != "channels_last":
        raise ConversionError(f"{src.where}: only channels-last average and max pooling are emulated")
    accum = _fixed(src.layer.types["accum_t"].precision, f"{src.where}: accum_t")
    return EmulatedLayer(src.layer.name, kind.key, src.shape, src.result, accum=accum)


# -- input shapes each kind takes ------------------------------------------------------------------------------


def _takes_same(layer: EmulatedLayer, shape: tuple[int, ...]) -> bool:
    return layer.shape == shape


def _takes_cells(layer: EmulatedLayer, shape: tuple[int, ...]) -> bool:
    return len(shape) == 2 and layer.shape == shape[1:]


def _takes_product(layer: EmulatedLayer, shape: tuple[int, ...], per_cell: bool) -> bool:
    if layer.weights is None or layer.biases is None or np.ndim(layer.weights) != 2:
        return False
    n_in, n_out = np.shape(layer.weights)
    ok = shape[-1:] == (n_in,) and layer.shape[-1:] == (n_out,) and np.size(layer.biases) == n_out
    if per_cell:
        return ok and len(shape) == 2 and layer.shape == (shape[0], n_out)
    return ok and len(shape) == 1


# -- the layer kinds -------------------------------------------------------------------------------------------

_Runner = Callable[[_Step, np.ndarray, int, "_Step | None", bool], tuple[list, int]]


@dataclass(frozen=True)
class LayerKind:
    """One kind of layer the emulator reproduces, declared once in :data:`LAYER_KINDS`.

    Attributes:
        key: The kind's name (:attr:`EmulatedLayer.kind`).
        hls_class: The hls4ml layer class it is read from.
        variant: ``(attribute, value)`` telling apart kinds of one class (``("activation", "relu")``), else None.
        function: The C++ call (a prefix of the layer's ``function_cpp``) it reproduces; None for the input.
        build: Reads a converted hls4ml layer into an :class:`EmulatedLayer` (the ``from_hls`` builder).
        run: Runs the layer on a chunk of mantissas: ``run(step, x, bound, act, keep) -> (outputs, bound)``.
        takes: Whether a layer of this kind can take an input of the given per-sample shape.
        cost: How the PTQ design of the layer is costed: ``"module:function"`` of its da4ml tracer
            (``tracer(x, layer)``, see :mod:`calohls.firmware.ptq_rtl`); None for the input.
        prepare: Sets the constants of a :class:`_Step` of this kind, if it needs any.
        activation: 1 for relu, 2 for linear (an activation that a product layer before it runs fused), else 0.
        fuses: Whether the activation after a layer of this kind runs fused with it.
        pools: Whether the layer pools the cells of a sample (and so takes the real cells alone, in order).
        per_cell: Whether the layer works cell by cell and maps an all-zero cell to an all-zero cell (a product
            layer only when its biases are zero): leading such layers run on the real (non-zero) cells alone.
    """

    key: str
    hls_class: str
    variant: tuple[str, str] | None
    function: str | None
    build: Callable[[_Source, LayerKind], EmulatedLayer]
    run: _Runner | None
    takes: Callable[[EmulatedLayer, tuple[int, ...]], bool] | None
    cost: str | None
    prepare: Callable[[_Step], None] | None = None
    activation: int = 0
    fuses: bool = False
    per_cell: bool = False
    pools: bool = False

    def tracer(self) -> Callable[[Any, EmulatedLayer], Any]:
        """The da4ml tracer named by :attr:`cost` (imported on first use)."""
        if self.cost is None:
            raise ConversionError(f"layer kind {self.key!r} has no cost tracer")
        import importlib

        module, name = self.cost.split(":")
        return getattr(importlib.import_module(module), name)


_RTL = "calohls.firmware.ptq_rtl"

#: Every layer kind the emulator reproduces, by key, in the order hls4ml lists a DeepSets network's layers.
LAYER_KINDS: dict[str, LayerKind] = {
    kind.key: kind
    for kind in (
        LayerKind("input", "Input", None, None, _build_plain, None, None, None),
        LayerKind("pointwise_conv1d", "PointwiseConv1D", None, "nnet::pointwise_conv_1d_cl<", _build_product,
                  _run_product, functools.partial(_takes_product, per_cell=True), f"{_RTL}:trace_product",
                  prepare=_prepare_product, fuses=True, per_cell=True),
        LayerKind("dense", "Dense", None, "nnet::dense<", _build_product, _run_product,
                  functools.partial(_takes_product, per_cell=False), f"{_RTL}:trace_product",
                  prepare=_prepare_product, fuses=True),
        LayerKind("relu", "Activation", ("activation", "relu"), "nnet::relu<", _build_plain, _run_activation,
                  _takes_same, f"{_RTL}:trace_relu", activation=1, per_cell=True),
        LayerKind("linear", "Activation", ("activation", "linear"), "nnet::linear<", _build_plain,
                  _run_activation, _takes_same, f"{_RTL}:trace_linear", activation=2, per_cell=True),
        LayerKind("average_pool", "GlobalPooling1D", ("pool_op", "average"), "nnet::global_pooling1d_cl<",
                  _build_pool, _run_average, _takes_cells, f"{_RTL}:trace_average_pool", pools=True),
        LayerKind("max_pool", "GlobalPooling1D", ("pool_op", "max"), "nnet::global_pooling1d_cl<", _build_pool,
                  _run_max, _takes_cells, f"{_RTL}:trace_max_pool", pools=True),
    )
}  # fmt: skip

#: Layer kinds of :class:`EmulatedLayer`.
KINDS = tuple(LAYER_KINDS)


def _supported() -> tuple[str, ...]:
    """The hls4ml classes read, with their variants: ``("Input", ..., "Activation (relu, linear)", ...)``."""
    variants: dict[str, list[str]] = {}
    for kind in LAYER_KINDS.values():
        variants.setdefault(kind.hls_class, []).extend([kind.variant[1]] if kind.variant else [])
    return tuple(f"{c} ({', '.join(v)})" if v else c for c, v in variants.items())


#: hls4ml layer classes the emulator reads.
SUPPORTED = _supported()


def _kind_of(layer: Any, where: str) -> LayerKind:
    """The kind of a converted hls4ml layer."""
    candidates = [kind for kind in LAYER_KINDS.values() if kind.hls_class == layer.class_name]
    if not candidates:
        raise ConversionError(f"{where} is not supported by the emulator; supported kinds: {', '.join(SUPPORTED)}")
    if candidates[0].variant is None:
        return candidates[0]
    attribute = candidates[0].variant[0]
    value = str(layer.get_attr(attribute, "")).lower()
    for kind in candidates:
        if kind.variant[1] == value:
            return kind
    names = ", ".join(kind.variant[1] for kind in candidates)
    raise ConversionError(f"{where}: {attribute} {value!r} is not emulated; supported: {names}")


def _from_hls_layer(layer: Any, previous: Any | None) -> EmulatedLayer:
    where = f"layer {layer.name!r} of kind {layer.class_name}"
    if previous is not None and list(layer.inputs) != list(previous.outputs):
        raise ConversionError(f"{where} does not take the output of {previous.name!r}; only chains are emulated")
    kind = _kind_of(layer, where)
    out = layer.get_output_variable()
    shape = tuple(int(d) for d in out.shape)
    result = _fixed(out.type.precision, f"{where}: result_t")
    layer_def = kind.build(_Source(layer, previous, where, shape, result), kind)
    function = layer.get_attr("function_cpp", None)
    if kind.function is not None and isinstance(function, str) and kind.function not in function:
        raise ConversionError(f"{where}: its C++ call {function!r} is not the one the emulator reproduces")
    return layer_def


# -- the emulator --------------------------------------------------------------------------------------------

#: Rows (cells) per chunk: the Python work of a chunk stays small next to its kernels', its arrays in the L3 cache.
_CHUNK_ROWS = 32768


@functools.cache
def _blas_controller() -> Any:
    """threadpoolctl's controller of the loaded BLAS, where threadpoolctl is installed (else None)."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - installed with the ml extra
        return None
    return ThreadpoolController()


@contextlib.contextmanager
def _one_blas_thread() -> Iterator[None]:
    """BLAS single-threaded: the emulator runs chunks on its own threads, and BLAS thread teams on small matrices
    cost more than they gain (much more on a loaded machine)."""
    controller = _blas_controller()
    if controller is None:  # pragma: no cover
        yield
        return
    with controller.limit(limits=1, user_api="blas"):
        yield


def _threads() -> int:
    """Threads to run chunks on: numba's thread count (``NUMBA_NUM_THREADS``), at most the usable cores."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(int(numba.config.NUMBA_NUM_THREADS), usable))


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
            kind = LAYER_KINDS.get(layer.kind)
            if kind is None or kind.run is None:
                raise ConversionError(f"layer {layer.name!r}: kind {layer.kind!r} is not one of {KINDS[1:]}")
            if not kind.takes(layer, shape):
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
            if step.kind.activation and previous is not None and previous[1] is None and previous[0].kind.fuses:
                self._ops[-1] = (previous[0], step)
            else:
                self._ops.append((step, None))
        self._cell_ops = 0  # leading ops that keep zero cells zero: they run on the non-zero cells alone
        for op in self._ops:
            if not all(_keeps_zero_cells(step) for step in op if step is not None):
                break
            self._cell_ops += 1
        if self._cell_ops == len(self._ops) or not self._ops[self._cell_ops][0].kind.pools:
            self._cell_ops = 0  # the real cells go on to a pooling layer, which takes them as they are

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
            batch_size: Samples per chunk; by default chunks of about 32k cells.

        Returns:
            float64 ``[n]`` for a single output (``[n, *output_shape]`` otherwise), equal bit for bit to the
            compiled model's ``hls_model.predict(x)`` for float64 ``x``.
        """
        return self.predict_and_trace(x, 0, batch_size)[0]

    def trace(self, x: np.ndarray, batch_size: int | None = None) -> dict[str, np.ndarray]:
        """Every layer's output after the input layer: layer name -> float64 ``[n, *shape]``.

        The names and shapes are those of ``hls_model.trace(x)`` with tracing enabled for every layer.
        """
        return self.predict_and_trace(x, len(x), batch_size)[1]

    def predict_and_trace(
        self, x: np.ndarray, trace_samples: int, batch_size: int | None = None
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """:meth:`predict` of all of ``x`` and :meth:`trace` of its first ``trace_samples`` samples, in one pass."""
        x = self._check_input(x)
        n = len(x)
        k = min(max(int(trace_samples), 0), n)
        out = np.empty((n, *self.output_shape), np.float64)
        traced = {s.layer.name: np.empty((k, *s.layer.shape), np.float64) for s in self._steps}
        frac = self._steps[-1].res.frac if self._steps else self._input.frac
        per_chunk = self._batch_size(batch_size)

        def work(span: tuple[int, int]) -> None:
            start, stop = span
            last, values = self._run_chunk(x[start:stop], every_layer=stop <= k)
            out[start:stop] = np.ldexp(_as(last, np.float64), -frac)
            for step, m in zip(self._steps, values, strict=False):
                traced[step.layer.name][start:stop] = np.ldexp(_as(m, np.float64), -step.res.frac)

        spans = [*_spans(0, k, per_chunk), *_spans(k, n, per_chunk)]
        threads = min(_threads(), len(spans))
        with _one_blas_thread():
            if threads <= 1:
                for span in spans:
                    work(span)
            else:
                with ThreadPoolExecutor(threads, thread_name_prefix="calohls-emulate") as pool:
                    for _ in pool.map(work, spans):
                        pass
        return (out.reshape(n) if int(np.prod(self.output_shape)) == 1 else out), traced

    def _batch_size(self, batch_size: int | None) -> int:
        if batch_size is None:
            return max(1, _CHUNK_ROWS // max(1, int(np.prod(self.input_shape[:-1]))))
        if batch_size < 1:
            raise DataError(f"batch_size={batch_size} must be at least 1")
        return int(batch_size)

    def _check_input(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype.kind not in "fiu":
            raise DataError(f"inputs must be real numbers; got dtype {x.dtype}")
        if x.shape[1:] != self.input_shape:
            raise DataError(f"inputs of shape {x.shape} do not match the network input; pass [n, *{self.input_shape}]")
        return np.ascontiguousarray(x, np.float32 if x.dtype == np.float32 else np.float64)

    def _converted_input(self, x: np.ndarray, compact: bool) -> tuple[np.ndarray, int, _Cells | None, Any]:
        """``x`` converted to the input type, in one pass: mantissas as rows ``[samples * cells, F]`` (float32 when
        the type fits 24 bits), their largest magnitude, and, when ``compact``, the non-zero rows alone as
        :class:`_Cells` with the mask of the rows kept. ``None`` where the fast path does not apply (mantissas of
        2**52 or more, NaN, inf, subnormal doubles): the caller takes the exact path."""
        fmt = self._input
        if fmt.magnitude >= _FLOAT:
            return None
        rows = x.reshape(-1, x.shape[-1])
        cells = max(1, len(rows) // max(1, len(x)))
        out = np.empty(rows.shape, np.float32 if fmt.magnitude < _SINGLE else np.float64)
        offsets = np.empty(len(x) + 1, np.int64)
        keep = np.empty(len(rows), np.bool_)
        scale = math.ldexp(1.0, min(fmt.frac, 1100))
        count, top, flagged = kernels.finput_rows_kernel(rows, scale, fmt.fparams(), cells, compact, out, offsets, keep)
        if flagged:
            return None
        if compact and count > _COMPACT_SHARE * len(rows):  # too few padded cells to be worth skipping
            compact = False
            kernels.finput_rows_kernel(rows, scale, fmt.fparams(), cells, compact, out, offsets, keep)
        if compact:
            return out[:count], int(top), _Cells(out[:count], offsets, cells), keep
        return out.reshape(x.shape), int(top), None, None

    def _quantized_input(self, x: np.ndarray) -> tuple[np.ndarray, int]:
        """``x`` (contiguous float64) converted to the input type: mantissas, and their largest magnitude."""
        fmt, flat = self._input, _as(x, np.float64).reshape(-1)
        flags = np.zeros(flat.shape, np.uint8)
        if fmt.magnitude < _FLOAT:
            out = np.empty(flat.shape, np.float64)
            top, flagged = kernels.finput_kernel(flat, math.ldexp(1.0, min(fmt.frac, 1100)), fmt.fparams(), out, flags)
        else:
            out = np.empty(flat.shape, np.int64)
            top, flagged = kernels.input_kernel(flat.view(np.int64), fmt.frac, fmt.params(), out, flags)
        top = int(top)
        if flagged:
            if (flags == 2).any():
                raise NonFiniteError("inputs hold NaN or inf; the fixed-point network needs finite inputs")
            rest = np.flatnonzero(flags)  # left to the reference conversion
            exact = _int64(quantize_int(flat[rest], fmt.type), f"inputs in {fmt}")
            out[rest] = exact
            top = max(top, _actual(exact))
        return out.reshape(x.shape), top

    def _run_chunk(self, x: np.ndarray, every_layer: bool) -> tuple[np.ndarray, list[np.ndarray]]:
        """The last output of a chunk, and every step's output when ``every_layer``."""
        values: list[np.ndarray] = []
        ops = self._ops
        fast = self._converted_input(x, compact=self._cell_ops > 0)
        if fast is not None:
            m, bound, cells, keep = fast
            if cells is not None:  # the leading per-cell layers take the real cells alone
                m, bound = self._run_ops(ops[: self._cell_ops], cells.rows, bound, every_layer, values)
                m = cells._replace(rows=m)
                values[:] = [_in_place(v, keep, x.shape[:-1]) for v in values]
                ops = ops[self._cell_ops :]
            m, _ = self._run_ops(ops, m, bound, every_layer, values)
            return m, values
        m, bound = self._quantized_input(x)
        if self._cell_ops:
            compact, offsets, real = kernels.compact_kernel(m.reshape(-1, m.shape[-1]), m.shape[1])
            if len(compact) <= _COMPACT_SHARE * len(x) * m.shape[1]:  # padding worth skipping
                m, bound = self._run_ops(ops[: self._cell_ops], compact, bound, every_layer, values)
                m = _Cells(m, offsets, x.shape[1])  # the pooling takes the real cells alone
                values[:] = [_in_place(v, real, x.shape[:-1]) for v in values]
                ops = ops[self._cell_ops :]
        m, _ = self._run_ops(ops, m, bound, every_layer, values)
        return m, values

    @staticmethod
    def _run_ops(ops: list, m: np.ndarray, bound: int, every_layer: bool, values: list) -> tuple[np.ndarray, int]:
        for step, act in ops:
            outs, bound = step.run(m, bound, act, keep=every_layer)
            m = outs[-1]
            if every_layer:
                values.extend(outs)
        return m, bound


def _in_place(values: np.ndarray, real: np.ndarray, cells_shape: tuple[int, ...]) -> np.ndarray:
    """Per-cell ``values`` of the non-zero cells (mask ``real``) back in their places among all cells."""
    full = np.zeros((len(real), values.shape[-1]), values.dtype)
    full[real] = values
    return full.reshape((*cells_shape, values.shape[-1]))


#: Leading per-cell layers run on the non-zero cells alone when at most this share of the cells is non-zero (1:
#: always, as the one-pass input conversion drops the padded cells at no extra cost).
_COMPACT_SHARE = 1.0


def _keeps_zero_cells(step: _Step) -> bool:
    """Whether ``step`` maps an all-zero cell to an all-zero cell, cell by cell."""
    return step.kind.per_cell and len(step.layer.shape) == 2 and getattr(step, "b_max", 0) == 0


def _spans(start: int, stop: int, size: int) -> list[tuple[int, int]]:
    """``[start, stop)`` in pieces of ``size``."""
    return [(i, min(i + size, stop)) for i in range(start, stop, size)]
