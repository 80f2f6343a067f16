"""Design points of the size × precision study: one summary number per design, and the Pareto front.

A *design* is a network that could go on the FPGA (a post-training-quantized float model at one precision, or a
quantization-aware-trained model) or the float reference of a size. Every design is judged on the same test
clusters by the same numbers:

* ``resolution``: the geometric mean, over log-spaced bins of E_true (0.5–500 GeV, 3 per decade), of the
  resolution IQR(16–84 %)/median of the response E_pred/E_true, after the response correction of the design's
  float run (PTQ) or its own (float, QAT). A geometric mean weighs a 10 % loss in any bin equally, so neither the
  wide low-energy bins nor the narrow high-energy ones dominate;
* ``resolution_lo``, ``resolution_hi``, ``resolution_err``: the 68 % bootstrap interval of that geometric mean and
  its half-width (the clusters of each bin resampled 200 times, the geometric mean recomputed on every resample);
* ``median_worst``: the largest |median − 1| over those bins (closure);
* ``bins``: per bin ``edges`` (n + 1), ``centres``, ``median``, ``median_err``, ``resolution``, ``resolution_err``
  (68 % bootstrap half-widths; None where a bin has no value), for closure and significance per bin;
* ``lut``, ``ff``, ``dsp``, ``latency_ns``: from Yosys when the design was synthesised, else da4ml's estimate
  (``lut_source`` says which); for firmware, ``latency_ns`` is the stages × the target period, or × the estimated
  period where that is longer (:mod:`calohls.firmware.timing`);
* :data:`TIMING_KEYS` (firmware only): the timing estimate (``period_estimate_ns``, ``fmax_estimate_mhz``,
  ``timing_met``, ``latency_target_ns``) and the L0 system view (``clusters_per_bx_per_instance``, ``instances``
  within the LUT budget, ``clusters_per_bx``; :mod:`calohls.firmware.l0`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from calohls.physics.response import INTERVAL, binned_response, log_bins

if TYPE_CHECKING:
    from calohls.firmware.build import FirmwareResult

__all__ = [
    "BINS",
    "SUMMARY_KEYS",
    "TIMING_KEYS",
    "DesignCost",
    "DesignTiming",
    "ResolutionSummary",
    "pareto_front",
    "resolution_summary",
]

#: Energy bins of the study's summary numbers (GeV).
BINS = log_bins(0.5, 500.0, 3)

#: The keys of :func:`resolution_summary`, in its order.
SUMMARY_KEYS = ("resolution", "resolution_lo", "resolution_hi", "resolution_err", "median_worst", "bins")


class ResolutionSummary(NamedTuple):
    """The study's summary of a design's calibrated energies (see the module docstring): the geometric-mean
    resolution over the bins with its 68 % bootstrap interval (None without bootstrap), the worst median and the
    bins (their edges, medians and resolutions)."""

    resolution: float | None
    resolution_lo: float | None
    resolution_hi: float | None
    resolution_err: float | None
    median_worst: float | None
    bins: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        return self._asdict()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ResolutionSummary:
        return cls(*(data[k] for k in SUMMARY_KEYS))


def resolution_summary(
    e_true: np.ndarray, e_pred: np.ndarray, *, bootstrap: int = 200, seed: int = 0
) -> ResolutionSummary:
    """The study's summary of a design's calibrated energies (see the module docstring)."""
    table = binned_response(
        np.asarray(e_true, np.float64), np.asarray(e_pred, np.float64), BINS, bootstrap=bootstrap, seed=seed
    )
    res = np.asarray(table.resolution, np.float64)
    med = np.asarray(table.median, np.float64)
    good = np.isfinite(res) & (res > 0)
    if not good.any():
        return ResolutionSummary(None, None, None, None, None, table.to_dict())
    bins = {
        "edges": [float(e) for e in table.edges],
        "centres": [float(c) for c in table.centres],
        "median": [_num(m) for m in med],
        "median_err": [_num(m) for m in table.median_err],
        "resolution": [_num(r) for r in res],
        "resolution_err": [_num(r) for r in table.resolution_err],
    }
    mean = float(np.exp(np.mean(np.log(res[good]))))
    return ResolutionSummary(mean, *_geometric_interval(table, good), float(np.max(np.abs(med[good] - 1.0))), bins)


def _geometric_interval(table: Any, good: np.ndarray) -> tuple[float | None, float | None, float | None]:
    """68 % bootstrap interval (low, high, half-width) of the geometric-mean resolution over the ``good`` bins
    (None without bootstrap)."""
    replicas = table.resolution_replicas
    if replicas is None:
        return None, None, None
    sample = replicas[:, good]
    usable = np.all(np.isfinite(sample) & (sample > 0), axis=1)
    if not usable.any():
        return None, None, None
    geo = np.exp(np.mean(np.log(sample[usable]), axis=1))
    lo, hi = (float(v) for v in np.quantile(geo, INTERVAL))
    return lo, hi, 0.5 * (hi - lo)


#: Design cost field → its key in a Yosys count or a da4ml estimate.
_COST_KEYS = {"lut": "LUT", "ff": "FF", "dsp": "DSP", "latency_cycles": "latency_cycles", "latency_ns": "latency_ns"}


class DesignCost(NamedTuple):
    """``lut``, ``ff``, ``dsp`` and the latency of a design, from a Yosys count or a da4ml estimate (an estimate has
    no DSP count: None)."""

    lut: Any
    ff: Any
    dsp: Any
    latency_cycles: Any
    latency_ns: Any

    @classmethod
    def of(cls, info: Mapping[str, Any]) -> DesignCost:
        """The cost of a Yosys count or a da4ml estimate (keys ``LUT``, ``FF``, ``DSP`` and the latency)."""
        return cls(*(info.get(name) for name in _COST_KEYS.values()))

    def to_json(self) -> dict[str, Any]:
        return self._asdict()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DesignCost:
        return cls(*(data.get(k) for k in cls._fields))


class DesignTiming(NamedTuple):
    """The timing estimate and the L0 system view of a firmware design (``latency_target_ns``: the latency at the
    target clock; the design's ``latency_ns`` is at the estimated period where that is longer). The estimates are
    None where timing was not estimated (no synthesis)."""

    latency_target_ns: float
    period_estimate_ns: float | None
    fmax_estimate_mhz: float | None
    timing_met: bool | None
    clusters_per_bx_per_instance: int
    instances: int
    clusters_per_bx: int

    @classmethod
    def of(cls, result: FirmwareResult) -> DesignTiming:
        """The fields of a built firmware (:class:`calohls.firmware.build.FirmwareResult`)."""
        timing = result.timing
        return cls(
            latency_target_ns=result.latency_ns,
            period_estimate_ns=None if timing is None else round(timing.period_ns, 3),
            fmax_estimate_mhz=None if timing is None else round(timing.fmax_mhz, 1),
            timing_met=None if timing is None else timing.met,
            clusters_per_bx_per_instance=result.l0.clusters_per_bx_per_instance,
            instances=result.l0.instances,
            clusters_per_bx=result.l0.clusters_per_bx,
        )

    def to_json(self) -> dict[str, Any]:
        return self._asdict()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DesignTiming:
        return cls(*(data[k] for k in cls._fields))


#: The fields of a firmware record a design point takes besides its costs: timing estimate and L0 system view.
TIMING_KEYS = DesignTiming._fields


def _num(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def pareto_front(points: Sequence[dict[str, Any]], x: str = "lut", y: str = "resolution") -> list[int]:
    """Indices of the points not dominated in (``x``, ``y``), both minimised; points missing either are left out.

    A point is dominated when another is no worse in both and better in at least one. Ties keep both.
    """
    usable = [i for i, p in enumerate(points) if _finite(p.get(x)) and _finite(p.get(y))]
    front = []
    for i in usable:
        xi, yi = points[i][x], points[i][y]
        dominated = any(
            points[j][x] <= xi and points[j][y] <= yi and (points[j][x] < xi or points[j][y] < yi)
            for j in usable
            if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][x])


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)
