"""The findings of the PTQ sweeps, in numbers and in words: do larger models deviate more at low precision, and does
the sum over cells need more integer bits than the other layers?"""

from __future__ import annotations

import itertools
from collections import defaultdict
from typing import Any

import numpy as np

from calohls.config import PTQConfig
from calohls.quant.sweeps import SWEEPS

__all__ = ["MPE_TOLERANCE", "group_records", "summarize_ptq"]

#: An MPE below this (percent) counts as "as good as float".
MPE_TOLERANCE = 1.0
#: A layer "has enough bits" from the first point whose relative error (mean |hls4ml − Keras| / mean |Keras|) is
#: within this factor of the best it reaches in the sweep: in an integer-bits sweep at fixed total width the error
#: first falls (no more overflow) then rises (fewer fractional bits), so the cliff, not a fixed level, tells the need.
LAYER_BEST_FACTOR = 2.0


def group_records(records: list[dict[str, Any]]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Records by sweep, then by run, each list sorted by the swept value."""
    out: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        out[r["sweep"]][r["run"]].append(r)
    for runs in out.values():
        for rows in runs.values():
            rows.sort(key=lambda r: r["value"])
    return out


def _needed(rows: list[dict[str, Any]], ok) -> int | None:
    """Smallest swept value from which every larger one is ok (None if even the largest is not)."""
    needed = None
    for r in reversed(rows):
        if not ok(r):
            break
        needed = r["value"]
    return needed


def _relative(r: dict[str, Any], layer: str) -> float:
    d = r["layers"][layer]
    return d["mean_abs"] / max(d["reference_mean_abs"], 1e-12)


def _layer_need(rows: list[dict[str, Any]], layer: str) -> int:
    """First swept value whose relative error of ``layer`` is within LAYER_BEST_FACTOR of its best."""
    best = min(_relative(r, layer) for r in rows)
    return next(r["value"] for r in rows if _relative(r, layer) <= LAYER_BEST_FACTOR * best + 1e-12)


def summarize_ptq(records: list[dict[str, Any]], runs: dict[str, dict[str, Any]], config: PTQConfig) -> dict:
    """Per sweep and run: MPE curve, its best point, the bits needed for MPE < 1 %, per-layer needs; and the two
    findings."""
    order = sorted(runs, key=lambda name: runs[name].get("parameters", 0))
    sweeps: dict[str, Any] = {}
    findings: list[str] = []
    for sweep, by_run in group_records(records).items():
        entry: dict[str, Any] = {}
        for name in order:
            rows = by_run.get(name, [])
            if not rows:
                continue
            layers = rows[-1]["layers"].keys()
            entry[name] = {
                "parameters": runs[name].get("parameters"),
                "values": [r["value"] for r in rows],
                "mpe": [r["mpe"] for r in rows],
                "resolution": [r["resolution"] for r in rows],
                "bits_for_mpe_below_1pct": _needed(rows, lambda r: r["mpe"] < MPE_TOLERANCE),
                "best": min(({"value": r["value"], "mpe": r["mpe"]} for r in rows), key=lambda b: b["mpe"]),
                "layer_bits_needed": {layer: _layer_need(rows, layer) for layer in layers},
            }
        sweeps[sweep] = entry
        findings += _size_finding(sweep, entry)
        if SWEEPS[sweep].integer_bits:
            findings += _sum_finding(sweep, entry)
    return {
        "mpe_tolerance_percent": MPE_TOLERANCE,
        "layer_best_factor": LAYER_BEST_FACTOR,
        "runs_by_size": order,
        "sweeps": sweeps,
        "findings": findings,
        "config": config.model_dump(mode="json"),
    }


def _low_precision_mpe(e: dict[str, Any]) -> float:
    """Geometric mean of the MPE (capped at 1e4 %) over the lower half of the swept values."""
    mpe = np.minimum(np.asarray(e["mpe"][: max(1, len(e["mpe"]) // 2)], np.float64), 1e4)
    return float(np.exp(np.mean(np.log(np.maximum(mpe, 1e-6)))))


def _size_finding(sweep: str, entry: dict[str, Any]) -> list[str]:
    """Do larger models deviate more at low precision? Compare the MPE over the low half of the sweep."""
    names = list(entry)
    if len(names) < 2:
        return [f"{sweep}: one model size only; nothing to compare"]
    low = [_low_precision_mpe(entry[n]) for n in names]
    values = entry[names[0]]["values"]
    span = f"{values[0]}–{values[max(0, len(values) // 2 - 1)]}"
    rising = all(b >= a for a, b in itertools.pairwise(low))
    numbers = ", ".join(f"{n} {m:.3g} %" for n, m in zip(names, low, strict=True))
    best_mpe = [entry[n]["best"]["mpe"] for n in names]
    best = ", ".join(f"{n} {entry[n]['best']['mpe']:.3g} % at {entry[n]['best']['value']}" for n in names)
    verdict = "holds" if rising else "does not hold"
    best_verdict = "larger" if all(b >= a for a, b in itertools.pairwise(best_mpe)) else "not always larger"
    return [
        f"{sweep}: 'larger models deviate more at low precision' {verdict} here: mean MPE over {span} by increasing "
        f"size: {numbers}; at each model's best point the deviation is {best_verdict} for larger models: {best}"
    ]


def _sum_finding(sweep: str, entry: dict[str, Any]) -> list[str]:
    """Does the sum over cells (ksum) need more integer bits than the other layers?"""
    out = []
    for name, e in entry.items():
        need = e["layer_bits_needed"]
        ksum = need.get("ksum")
        # compare with the per-cell layers before the sum: the layers after it inherit its errors
        others = [v for k, v in need.items() if k.startswith("phi")]
        verdict = "holds" if not others or ksum > max(others) else "does not hold"
        out.append(
            f"{sweep}, {name}: 'the sum needs more integer bits' {verdict} here: ksum needs {ksum} integer bits, "
            f"the per-cell Φ layers at most {max(others) if others else '–'}"
        )
    return out
