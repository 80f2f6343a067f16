"""The precision sweeps of post-training quantization: one registry, :data:`SWEEPS`, declares every sweep axis once.

Each :class:`Sweep` says what it varies (its points, from the PTQ options), how its figures label the axis and
what stays fixed. The options (:class:`calohls.config.PTQConfig`), the sweep itself (:mod:`calohls.scan.ptq`), its
findings (:mod:`calohls.scan.ptq_summary`) and its figures (:mod:`calohls.plots.ptq`) look sweeps up here.

"Everywhere" below is hls4ml's default precision: weights, biases, activation outputs and the pooling accumulator
take it, while hls4ml keeps its lossless 'auto' types for the Dense/pointwise accumulators and pre-activation results.
This module sits below the configuration, so it takes the PTQ options without importing their class.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

__all__ = ["SWEEPS", "SWEEP_NAMES", "Sweep", "SweepName", "SweepPoint"]


class SweepPoint(NamedTuple):
    """One precision of a sweep: the swept value, hls4ml's default precision, per-layer overrides (layer → field
    → type) and the label of the point."""

    value: int
    default: str
    layers: dict[str, dict[str, str]]
    label: str


@dataclass(frozen=True)
class Sweep:
    """A sweep axis.

    Attributes:
        key: Its name on the command line and in the records (``--sweep int-bits``).
        axis: The x-axis label of its figures.
        points: The points of the sweep, from the PTQ options and the run's weighted layers.
        fixed: What stays fixed along it, from the PTQ options (the title of its figures' legends).
        integer_bits: Whether it sweeps integer bits (the per-layer integer-bit findings apply).
    """

    key: str
    axis: str
    points: Callable[[Any, Sequence[str]], list[SweepPoint]]
    fixed: Callable[[Any], str]
    integer_bits: bool = False


def _int_bits(config: Any, layer_names: Sequence[str]) -> list[SweepPoint]:
    """``ap_fixed<W,I>`` everywhere, I swept at fixed W."""
    w = config.total_bits
    lo, hi = config.int_bits
    return [SweepPoint(i, f"ap_fixed<{w},{i}>", {}, f"ap_fixed<{w},{i}>") for i in range(lo, hi + 1)]


def _total_bits(config: Any, layer_names: Sequence[str]) -> list[SweepPoint]:
    """``ap_fixed<W,I>`` everywhere, W swept at fixed I."""
    i = config.integer_bits
    lo, hi = config.total_bits_range
    return [SweepPoint(w, f"ap_fixed<{w},{i}>", {}, f"ap_fixed<{w},{i}>") for w in range(lo, hi + 1)]


def _weights(config: Any, layer_names: Sequence[str]) -> list[SweepPoint]:
    """Weights and biases at ``ap_fixed<W,I_w>``, W swept, while every result and accumulator is
    ``data_precision``."""
    data = config.data_precision
    out = []
    for w in range(config.weight_bits[0], config.weight_bits[1] + 1):
        wt = f"ap_fixed<{w},{config.weight_integer_bits}>"
        layers = {name: {"weight": wt, "bias": wt, "result": data, "accum": data} for name in layer_names}
        out.append(SweepPoint(w, data, layers, f"weights {wt}, data {data}"))
    return out


#: Every sweep axis, by key, in the order they run.
SWEEPS: dict[str, Sweep] = {
    s.key: s
    for s in (
        Sweep(
            "int-bits",
            "integer bits I of ap_fixed<W,I>",
            _int_bits,
            lambda c: f"ap_fixed<{c.total_bits},I>",
            integer_bits=True,
        ),
        Sweep("total-bits", "total bits W of ap_fixed<W,I>", _total_bits, lambda c: f"ap_fixed<W,{c.integer_bits}>"),
        Sweep("weights", "total bits of the weights and biases", _weights, lambda c: f"data {c.data_precision}"),
    )
}
#: The sweep keys, in order.
SWEEP_NAMES: tuple[str, ...] = tuple(SWEEPS)
#: The type of a sweep key in the options (a literal of :data:`SWEEP_NAMES`).
SweepName = Literal[SWEEP_NAMES]  # type: ignore[valid-type]
