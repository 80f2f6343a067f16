"""The findings of the PTQ sweeps, in numbers and in words: do larger models deviate more at low precision, and does
the sum over cells need more integer bits than the other layers?"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from calohls.config import PTQConfig
from calohls.quant.sweeps import SWEEPS
from calohls.scan.ptq import PTQPoint

__all__ = ["MPE_TOLERANCE", "PTQSummary", "SweepCurve", "group_records", "summarize_ptq"]

#: An MPE below this (percent) counts as "as good as float".
MPE_TOLERANCE = 1.0
#: A layer "has enough bits" from the first point whose relative error (mean |hls4ml − Keras| / mean |Keras|) is
#: within this factor of the best it reaches in the sweep: in an integer-bits sweep at fixed total width the error
#: first falls (no more overflow) then rises (fewer fractional bits), so the cliff, not a fixed level, tells the need.
LAYER_BEST_FACTOR = 2.0


def group_records(records: Iterable[PTQPoint]) -> dict[str, dict[str, list[PTQPoint]]]:
    """Records by sweep, then by run, each list sorted by the swept value."""
    out: dict[str, dict[str, list[PTQPoint]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        out[r.sweep][r.run].append(r)
    for runs in out.values():
        for rows in runs.values():
            rows.sort(key=lambda r: r.value)
    return out


def _needed(rows: list[PTQPoint], ok) -> int | None:
    """Smallest swept value from which every larger one is ok (None if even the largest is not)."""
    needed = None
    for r in reversed(rows):
        if not ok(r):
            break
        needed = r.value
    return needed


def _relative(r: PTQPoint, layer: str) -> float:
    d = r.layers[layer]
    return d["mean_abs"] / max(d["reference_mean_abs"], 1e-12)


def _layer_need(rows: list[PTQPoint], layer: str) -> int:
    """First swept value whose relative error of ``layer`` is within LAYER_BEST_FACTOR of its best."""
    best = min(_relative(r, layer) for r in rows)
    return next(r.value for r in rows if _relative(r, layer) <= LAYER_BEST_FACTOR * best + 1e-12)


class BestPoint(NamedTuple):
    """The swept value with the smallest MPE, and that MPE (percent)."""

    value: int
    mpe: float


@dataclass(frozen=True)
class SweepCurve:
    """One run along one sweep: the swept values, the MPE and resolution at each, and what the curve says.

    Attributes:
        parameters: The run's parameters (None where its inputs do not say).
        values: The swept values, ascending.
        mpe: MPE (percent) at each value.
        resolution: Resolution at each value.
        bits_for_mpe_below_1pct: Smallest value from which every larger one has MPE below :data:`MPE_TOLERANCE`.
        best: The point with the smallest MPE.
        layer_bits_needed: Layer → first value whose error is within :data:`LAYER_BEST_FACTOR` of its best.
    """

    parameters: int | None
    values: list[int]
    mpe: list[float]
    resolution: list[float]
    bits_for_mpe_below_1pct: int | None
    best: BestPoint
    layer_bits_needed: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        return {
            "parameters": self.parameters,
            "values": self.values,
            "mpe": self.mpe,
            "resolution": self.resolution,
            "bits_for_mpe_below_1pct": self.bits_for_mpe_below_1pct,
            "best": self.best._asdict(),
            "layer_bits_needed": self.layer_bits_needed,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SweepCurve:
        best = BestPoint(**data["best"])
        return cls(*(data[k] for k in ("parameters", "values", "mpe", "resolution", "bits_for_mpe_below_1pct")),
                   best, dict(data["layer_bits_needed"]))  # fmt: skip


@dataclass(frozen=True)
class PTQSummary:
    """The findings of the PTQ sweeps (``summary.json``): per sweep and run its :class:`SweepCurve`, the runs by
    size, the findings in words and the sweep's options."""

    mpe_tolerance_percent: float
    layer_best_factor: float
    runs_by_size: list[str]
    sweeps: dict[str, dict[str, SweepCurve]]
    findings: list[str]
    config: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """The content of ``summary.json``."""
        return {
            "mpe_tolerance_percent": self.mpe_tolerance_percent,
            "layer_best_factor": self.layer_best_factor,
            "runs_by_size": self.runs_by_size,
            "sweeps": {s: {run: c.to_json() for run, c in by.items()} for s, by in self.sweeps.items()},
            "findings": self.findings,
            "config": self.config,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PTQSummary:
        """The summary stored in ``summary.json`` (``data``)."""
        sweeps = {s: {run: SweepCurve.from_json(c) for run, c in by.items()} for s, by in data["sweeps"].items()}
        return cls(
            data["mpe_tolerance_percent"],
            data["layer_best_factor"],
            list(data["runs_by_size"]),
            sweeps,
            list(data["findings"]),
            dict(data["config"]),
        )


def _curve(rows: list[PTQPoint], parameters: int | None) -> SweepCurve:
    """One run's points along one sweep (sorted by value) as its curve."""
    return SweepCurve(
        parameters=parameters,
        values=[r.value for r in rows],
        mpe=[r.mpe for r in rows],
        resolution=[r.resolution for r in rows],
        bits_for_mpe_below_1pct=_needed(rows, lambda r: r.mpe < MPE_TOLERANCE),
        best=min((BestPoint(r.value, r.mpe) for r in rows), key=lambda b: b.mpe),
        layer_bits_needed={layer: _layer_need(rows, layer) for layer in rows[-1].layers},
    )


def summarize_ptq(records: Iterable[PTQPoint], runs: dict[str, dict[str, Any]], config: PTQConfig) -> PTQSummary:
    """Per sweep and run: MPE curve, its best point, the bits needed for MPE < 1 %, per-layer needs; and the two
    findings."""
    order = sorted(runs, key=lambda name: runs[name].get("parameters", 0))
    sweeps: dict[str, dict[str, SweepCurve]] = {}
    findings: list[str] = []
    for sweep, by_run in group_records(records).items():
        entry = {name: _curve(by_run[name], runs[name].get("parameters")) for name in order if by_run.get(name)}
        sweeps[sweep] = entry
        findings += _size_finding(sweep, entry)
        if SWEEPS[sweep].integer_bits:
            findings += _sum_finding(sweep, entry)
    return PTQSummary(MPE_TOLERANCE, LAYER_BEST_FACTOR, order, sweeps, findings, config.model_dump(mode="json"))


def _low_precision_mpe(e: SweepCurve) -> float:
    """Geometric mean of the MPE (capped at 1e4 %) over the lower half of the swept values."""
    mpe = np.minimum(np.asarray(e.mpe[: max(1, len(e.mpe) // 2)], np.float64), 1e4)
    return float(np.exp(np.mean(np.log(np.maximum(mpe, 1e-6)))))


def _size_finding(sweep: str, entry: dict[str, SweepCurve]) -> list[str]:
    """Do larger models deviate more at low precision? Compare the MPE over the low half of the sweep."""
    names = list(entry)
    if len(names) < 2:
        return [f"{sweep}: one model size only; nothing to compare"]
    low = [_low_precision_mpe(entry[n]) for n in names]
    values = entry[names[0]].values
    span = f"{values[0]}–{values[max(0, len(values) // 2 - 1)]}"
    rising = all(b >= a for a, b in itertools.pairwise(low))
    numbers = ", ".join(f"{n} {m:.3g} %" for n, m in zip(names, low, strict=True))
    best_mpe = [entry[n].best.mpe for n in names]
    best = ", ".join(f"{n} {entry[n].best.mpe:.3g} % at {entry[n].best.value}" for n in names)
    verdict = "holds" if rising else "does not hold"
    best_verdict = "larger" if all(b >= a for a, b in itertools.pairwise(best_mpe)) else "not always larger"
    return [
        f"{sweep}: 'larger models deviate more at low precision' {verdict} here: mean MPE over {span} by increasing "
        f"size: {numbers}; at each model's best point the deviation is {best_verdict} for larger models: {best}"
    ]


def _sum_finding(sweep: str, entry: dict[str, SweepCurve]) -> list[str]:
    """Does the sum over cells (ksum) need more integer bits than the other layers?"""
    out = []
    for name, e in entry.items():
        need = e.layer_bits_needed
        ksum = need.get("ksum")
        # compare with the per-cell layers before the sum: the layers after it inherit its errors
        others = [v for k, v in need.items() if k.startswith("phi")]
        verdict = "holds" if not others or ksum > max(others) else "does not hold"
        out.append(
            f"{sweep}, {name}: 'the sum needs more integer bits' {verdict} here: ksum needs {ksum} integer bits, "
            f"the per-cell Φ layers at most {max(others) if others else '–'}"
        )
    return out
