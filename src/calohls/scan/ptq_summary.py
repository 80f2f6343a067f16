"""The findings of the PTQ sweeps, in numbers and in words: do larger models deviate more at low precision, and does
the sum over cells need more integer bits than the other layers?"""

from __future__ import annotations

import itertools
from collections import defaultdict
from typing import Any

from calohls.config import PTQConfig

__all__ = ["MPE_TOLERANCE", "summarize_ptq"]

#: An MPE below this (percent) counts as "as good as float".
MPE_TOLERANCE = 1.0
#: A layer is "resolved" at a precision when its mean |hls4ml − Keras| is below this share of its mean |Keras|.
LAYER_TOLERANCE = 0.01


def _by_sweep(records: list[dict[str, Any]]) -> dict[str, dict[str, list[dict[str, Any]]]]:
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


def summarize_ptq(records: list[dict[str, Any]], runs: dict[str, dict[str, Any]], config: PTQConfig) -> dict:
    """Per sweep and run: MPE curve, the bits needed for MPE < 1 %, per-layer needs; and the two findings."""
    order = sorted(runs, key=lambda name: runs[name].get("parameters", 0))
    sweeps: dict[str, Any] = {}
    findings: list[str] = []
    for sweep, by_run in _by_sweep(records).items():
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
                "layer_bits_needed": {
                    layer: _needed(
                        rows,
                        lambda r, layer=layer: (
                            r["layers"][layer]["mean_abs"]
                            <= LAYER_TOLERANCE * max(r["layers"][layer]["reference_mean_abs"], 1e-12)
                        ),
                    )
                    for layer in layers
                },
            }
        sweeps[sweep] = entry
        findings += _size_finding(sweep, entry)
        if sweep == "int-bits":
            findings += _sum_finding(entry)
    return {
        "mpe_tolerance_percent": MPE_TOLERANCE,
        "layer_tolerance": LAYER_TOLERANCE,
        "runs_by_size": order,
        "sweeps": sweeps,
        "findings": findings,
        "config": config.model_dump(mode="json"),
    }


def _size_finding(sweep: str, entry: dict[str, Any]) -> list[str]:
    """Do larger models deviate more at low precision? Compare the MPE at the lowest precision point."""
    names = list(entry)
    if len(names) < 2:
        return [f"{sweep}: one model size only; nothing to compare"]
    low = [entry[n]["mpe"][0] for n in names]
    where = entry[names[0]]["values"][0]
    rising = all(b >= a for a, b in itertools.pairwise(low))
    numbers = ", ".join(f"{n} {m:.3g} %" for n, m in zip(names, low, strict=True))
    needed = ", ".join(f"{n} {entry[n]['bits_for_mpe_below_1pct']}" for n in names)
    verdict = "holds" if rising else "does not hold"
    return [
        f"{sweep}: 'larger models deviate more at low precision' {verdict} here: MPE at the lowest point "
        f"({where}) by increasing size: {numbers}; bits needed for MPE < {MPE_TOLERANCE:g} %: {needed}"
    ]


def _sum_finding(entry: dict[str, Any]) -> list[str]:
    """Does the sum over cells (ksum) need more integer bits than the other layers?"""
    out = []
    for name, e in entry.items():
        need = e["layer_bits_needed"]
        ksum = need.get("ksum")
        others = [v for k, v in need.items() if k != "ksum" and v is not None]
        if ksum is None:
            out.append(f"int-bits, {name}: the sum (ksum) never reaches 1 % agreement in the swept range")
            continue
        verdict = "holds" if not others or ksum >= max(others) else "does not hold"
        out.append(
            f"int-bits, {name}: 'the sum needs more integer bits' {verdict} here: ksum needs {ksum} integer bits, "
            f"the other layers at most {max(others) if others else '–'}"
        )
    return out
