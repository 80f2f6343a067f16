"""da4ml designs of float DeepSets networks at a PTQ precision, so that PTQ and QAT designs are costed alike.

hls4ml quantizes a float network by a :class:`~calohls.firmware.hls.Precision` (post-training quantization, PTQ);
:mod:`calohls.firmware.rtl` costs quantization-aware (HGQ2) networks with da4ml. :func:`ptq_trace` writes the
hls4ml computation of a float network at a precision as da4ml logic, operation by operation, so that
:func:`ptq_estimate` gives da4ml's LUT/FF estimate and latency of the PTQ design, and
:func:`calohls.firmware.rtl.write_logic` its Verilog.

What is traced is what the C simulation computes, read from the converted hls4ml graph through
:class:`~calohls.quant.emulate.Emulator` (resolved types, weights as the C++ loads them) — see that module for
the C++ semantics:

* the input arrives in the input layer's type (the conversion of a float into it happens before the design);
* Dense / pointwise layers: exact products ``x · w``, each cast to ``accum_t``, summed from ``(accum_t) bias`` with
  each addition overflowing in ``accum_t``, then cast to ``result_t``. When no product rounds, an accumulator that
  wraps (or provably never overflows) gives the same result as one exact sum cast once, which da4ml builds as an
  optimised adder tree (CMVM); otherwise the products and sums are cast one by one, as in the C++;
* ReLU ``x > 0 ? (result_t) x : 0`` and linear ``(result_t) x``;
* average pooling: the sum over the cells in ``accum_t`` (cast after each addition unless that provably changes
  nothing), the mantissa divided by N truncating towards zero (a multiplication by ``ceil(2^s/N)/2^s`` then
  truncation, exact over the accumulator's range; a shift for N a power of two), then ``(result_t)``; max pooling.

Each layer is traced by the tracer that its kind names (``cost`` in :data:`calohls.quant.emulate.LAYER_KINDS`).
Casts with rounding modes other than TRN and RND (where something actually rounds) and ``SAT_ZERO`` overflow are
not supported by da4ml's quantizer and raise :class:`~calohls.errors.ConversionError` (hls4ml's defaults are TRN and
WRAP). ``PTQTrace.predict`` runs da4ml's bit-exact interpreter of the logic; it equals
:meth:`~calohls.quant.emulate.Emulator.predict` (and so the C simulation) bit for bit.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from calohls.errors import ConversionError
from calohls.firmware.rtl import DEFAULT_CLOCK_PERIOD, RTLEstimate, estimate, solving_each_matrix_once
from calohls.quant.fixed import FixedType, quantize

if TYPE_CHECKING:
    import keras

    from calohls.firmware.hls import Precision
    from calohls.quant.emulate import EmulatedLayer

__all__ = ["PTQTrace", "ptq_estimate", "ptq_trace"]


@dataclass(frozen=True)
class PTQTrace:
    """da4ml logic of a float network at a PTQ precision.

    Attributes:
        comb: da4ml combinational logic (``CombLogic``): input ``N·F`` values, output the network output.
        input_type: The input layer's type: inputs are converted to it before the design.
        output_shape: Shape of one output sample.
    """

    comb: Any
    input_type: FixedType
    output_shape: tuple[int, ...]

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Outputs of the logic (da4ml's bit-exact interpreter) for float inputs ``x`` ``[n, N, F]``.

        Returns:
            float64 ``[n]`` for a single output (as :meth:`calohls.quant.emulate.Emulator.predict`).
        """
        x = np.asarray(x, np.float64)
        q = quantize(x.reshape(len(x), -1), self.input_type)
        y = np.asarray(self.comb.predict(q), np.float64)
        return y.reshape(len(x)) if int(np.prod(self.output_shape)) == 1 else y.reshape(len(x), *self.output_shape)


# -- fixed-point casts on traced arrays ------------------------------------------------------------------------


def _kif(t: FixedType) -> tuple[int, int, int]:
    """da4ml's (sign bit, integer bits without sign, fractional bits) of an ``ap_fixed`` type."""
    return int(t.signed), t.integer - int(t.signed), t.fractional


def _frac(v: Any) -> int:
    """Finest fractional bits among the elements of a traced array."""
    return int(np.max(v.kif[2]))


def _magnitude(v: Any) -> float:
    """A bound of ``|v|`` over the elements of a traced array (from their integer bits)."""
    return float(np.max(2.0 ** v.kif[1].astype(np.float64)))


def _cast(v: Any, t: FixedType, where: str) -> Any:
    """``(t) v``: ``v`` assigned to type ``t`` with its rounding and overflow modes."""
    k, i, f = _kif(t)
    rounds = _frac(v) > f
    rounding = t.rounding
    if rounds and rounding == "TRN_ZERO":
        return _cast(_trunc_zero(v, f), t.with_(rounding="TRN"), where)
    if rounds and rounding not in ("TRN", "RND"):
        raise ConversionError(
            f"{where}: rounding mode {rounding} of {t} is not supported by da4ml; use TRN or RND (or ap_int types)"
        )
    if t.overflow == "SAT_ZERO":
        raise ConversionError(f"{where}: overflow mode SAT_ZERO of {t} is not supported by da4ml; use WRAP or SAT")
    return v.quantize(k, i, f, t.overflow, rounding if rounds else "TRN")


def _trunc_zero(v: Any, f: int) -> Any:
    """``v`` truncated towards zero to ``f`` fractional bits (floor for v ≥ 0, ceiling below)."""
    k, i, _ = (int(np.max(a)) for a in v.kif)
    down = v.quantize(k, i + 1, f, "WRAP", "TRN")
    if k == 0:
        return down
    up = -((-v).quantize(1, i + 1, f, "WRAP", "TRN"))
    return np.where(v < 0, up, down)


def _fits(bound: float, t: FixedType) -> bool:
    """Whether every value of magnitude up to ``bound`` lies in the range of ``t`` (no overflow possible)."""
    return bound <= min(-t.min, t.max) if t.signed else False


# -- layers ------------------------------------------------------------------------------------------------------


def trace_product(x: Any, layer: EmulatedLayer) -> Any:
    """Dense / pointwise layer: ``(result_t)(accum_t)(bias + Σ (accum_t)(x·w))`` as the C++ computes it."""
    acc_t, where = layer.accum, f"layer {layer.name!r}"
    w = np.ldexp(layer.weights.astype(np.float64), -layer.weight.fractional)
    if layer.product == "weight_ternary":  # nnet::product::weight_ternary: 0 → 0, -1 → -x, any other → x
        w = np.where(w == 0, 0.0, np.where(w == -1, -1.0, 1.0))
    bias = quantize(np.ldexp(layer.biases.astype(np.float64), -layer.bias.fractional), acc_t)
    products_exact = _frac(x) + layer.weight.fractional <= acc_t.fractional
    bound = _magnitude(x) * np.abs(w).sum(axis=0).max(initial=0.0) + np.abs(bias).max(initial=0.0)
    if products_exact and (acc_t.overflow == "WRAP" or _fits(bound, acc_t)):
        acc = _cast((x @ w) + bias, acc_t, where)  # one exact sum, wrapped once: the same as wrapping each step
    else:
        products = _cast(x[..., :, None] * w, acc_t, where)  # [..., n_in, n_out]
        acc = bias  # (accum_t) bias, a constant
        for i in range(w.shape[0]):
            acc = _cast(acc + products[..., i, :], acc_t, where)
    return _cast(acc, layer.result, where)


def trace_relu(x: Any, layer: EmulatedLayer) -> Any:
    """ReLU: ``x > 0 ? (result_t) x : 0``."""
    return _cast(x.relu(), layer.result, f"layer {layer.name!r}")


def trace_linear(x: Any, layer: EmulatedLayer) -> Any:
    """Linear activation: ``(result_t) x``."""
    return _cast(x, layer.result, f"layer {layer.name!r}")


def trace_max_pool(x: Any, layer: EmulatedLayer) -> Any:
    """Global max pooling over the cells (axis 0): ``(result_t)(accum_t) max_i x[i]``."""
    acc_t, where = layer.accum, f"layer {layer.name!r}"
    return _cast(_cast(np.amax(x, axis=0), acc_t, where), layer.result, where)


def trace_average_pool(x: Any, layer: EmulatedLayer) -> Any:
    """Global average pooling over the cells (axis 0): the sum in ``accum_t``, divided by their number."""
    acc_t, where = layer.accum, f"layer {layer.name!r}"
    n = x.shape[0]
    exact = _frac(x) <= acc_t.fractional
    if exact and (acc_t.overflow == "WRAP" or _fits(n * _magnitude(x), acc_t)):
        acc = _cast(np.sum(x, axis=0), acc_t, where)
    else:
        acc = _cast(x[0], acc_t, where)
        for i in range(1, n):
            acc = _cast(acc + x[i], acc_t, where)
    return _cast(_divide(acc, n, acc_t), layer.result, where)


def _divide(acc: Any, n: int, acc_t: FixedType) -> Any:
    """``acc /= n`` on an ``accum_t`` value: its mantissa divided by ``n``, truncated towards zero.

    ``floor(m / n) = floor(m · c / 2^s)`` with ``c = ceil(2^s / n)`` for ``0 ≤ m ≤ M`` when ``2^s ≥ M · n``
    (Granlund–Montgomery); for n = 2^s, c = 1. Negative sums are divided as ``-floor(-m / n)``.
    """
    f = acc_t.fractional
    if n & (n - 1) == 0:
        shift, c = n.bit_length() - 1, 1
    else:
        largest = max(1, math.ceil(_magnitude(acc) * 2.0**f)) + 1  # bound of |mantissa|
        shift = math.ceil(math.log2(largest * n)) + 1
        c = -(-(1 << shift) // n)
    scale = math.ldexp(c, -shift)
    k, i, _ = (int(np.max(a)) for a in acc.kif)
    down = (acc * scale).quantize(k, i, f, "WRAP", "TRN")
    if k == 0:
        return down
    up = -(((-acc) * scale).quantize(1, i + 1, f, "WRAP", "TRN"))
    return np.where(acc < 0, up, down)


def _layer(x: Any, layer: EmulatedLayer) -> Any:
    """The layer traced by the tracer its kind names (:data:`calohls.quant.emulate.LAYER_KINDS`)."""
    from calohls.quant.emulate import LAYER_KINDS

    kind = LAYER_KINDS.get(layer.kind)
    if kind is None or kind.cost is None:
        raise ConversionError(f"layer {layer.name!r}: kind {layer.kind!r} cannot be traced; DeepSets layers only")
    return kind.tracer()(x, layer)


# -- public API --------------------------------------------------------------------------------------------------


def ptq_trace(model: keras.Model, precision: Precision | str | None) -> PTQTrace:
    """da4ml logic of the float ``model`` converted by hls4ml at ``precision`` (bit-exact to its C simulation).

    Args:
        model: A float DeepSets (:func:`calohls.model.deepsets.build_deepsets`).
        precision: The PTQ precision (:class:`~calohls.firmware.hls.Precision`; a string is the default type).

    Raises:
        ConversionError: hls4ml cannot convert the model at this precision, or a type uses a mode da4ml lacks.
    """
    from da4ml.trace import FixedVariableArray, comb_trace

    from calohls.firmware.hls import convert
    from calohls.quant.emulate import Emulator

    with tempfile.TemporaryDirectory(prefix="calohls-ptq-rtl-") as work:
        emulator = Emulator.from_hls(convert(model, precision, Path(work) / "prj"))
    first = emulator.layers[0]
    shape = first.shape
    k, i, f = (np.full(shape, v) for v in _kif(first.result))
    inp = FixedVariableArray.from_kif(k, i, f)
    x = inp
    with solving_each_matrix_once():
        for layer in emulator.layers[1:]:
            x = _layer(x, layer)
    return PTQTrace(comb_trace(inp, x), first.result, emulator.output_shape)


def ptq_estimate(
    model: keras.Model,
    precision: Precision | str | None,
    *,
    clock_period: float = DEFAULT_CLOCK_PERIOD,
    latency_cutoff: float | None = None,
) -> RTLEstimate:
    """da4ml's LUT/FF estimate and latency of the PTQ design of ``model`` at ``precision`` (nothing written).

    The :class:`~calohls.firmware.rtl.RTLEstimate` of :func:`calohls.firmware.rtl.estimate`, with its ``precision``
    (:meth:`~calohls.firmware.hls.Precision.as_dict`).
    """
    from calohls.firmware.hls import Precision

    if not isinstance(precision, Precision):
        precision = Precision() if precision is None else Precision(default=precision)
    trace = ptq_trace(model, precision)
    out = estimate(trace.comb, clock_period=clock_period, latency_cutoff=latency_cutoff)
    return out.with_precision(precision.as_dict())
