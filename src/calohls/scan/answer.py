"""The study's findings: design points, the Pareto front, and the answer to "the bigger, the better?" in words."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

from calohls.config import StudyConfig
from calohls.files import write_text_atomic
from calohls.scan.designs import TIMING_KEYS, pareto_front

__all__ = ["design_points", "summarize_study"]


def _variants(record: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The design points of one record, each with the record its numbers come from: one point, or for a QAT run
    with Pareto checkpoints one point per checkpoint (key ``<run key>:e<epoch>``)."""
    base = {k: v for k, v in record.items() if k not in ("bins", "checkpoints")}
    base["key"] = record["key"].split("@")[0]
    checkpoints = record.get("checkpoints")
    if not checkpoints:
        return [(base, record)]
    return [
        (
            {
                **base,
                **{k: v for k, v in c.items() if k not in ("bins", "beta")},  # beta: the run's, after the ramp
                "beta_epoch": c.get("beta"),
                "key": f"{base['key']}:e{c['epoch']}",
            },
            c,
        )
        for c in checkpoints
    ]


def design_points(records: dict[str, list[dict[str, Any] | None]]) -> list[dict[str, Any]]:
    """Float, PTQ and QAT records as design points (every Pareto checkpoint of a QAT run is one); QAT points take
    the Yosys numbers of their firmware."""
    firmware = {r["design"]: r for r in records.get("firmware", []) if r}
    points = []
    for kind in ("float", "ptq", "qat"):
        for p, source in (v for r in records.get(kind, []) if r is not None for v in _variants(r)):
            p["resolution_bins"] = (source.get("bins") or {}).get("resolution")
            fw = firmware.get(p["key"])
            if fw:
                for k in (
                    "lut",
                    "ff",
                    "dsp",
                    "latency_cycles",
                    "latency_ns",
                    "lut_source",
                    "bit_exact",
                    "ii",
                    *TIMING_KEYS,
                ):
                    p[k] = fw.get(k)
                p["firmware"] = fw["firmware"]
                p["clusters_checked"] = fw.get("clusters_checked")
            points.append(p)
    quantized = [p for p in points if p["kind"] != "float"]
    for i in pareto_front(quantized):
        quantized[i]["pareto"] = True
    for p in points:
        p.setdefault("pareto", False)
    return points


def _fits(p: dict[str, Any], config: StudyConfig) -> bool:
    lat = p.get("latency_ns")
    return (
        p["kind"] != "float"
        and p.get("lut") is not None
        and p.get("resolution") is not None
        and p["lut"] <= config.lut_budget
        and (lat is None or lat <= config.latency_budget_ns)
    )


def _fmt(p: dict[str, Any]) -> str:
    epoch = f", epoch {p['epoch']}" if p.get("epoch") is not None else ""
    qat = f"β={p.get('beta'):g}{epoch}"
    what = p.get("precision") if p["kind"] == "ptq" else qat if p["kind"] == "qat" else "float"
    estimate = "" if p.get("lut_source") == "yosys" else " (da4ml estimate)"
    lut = f", {p['lut']:,.0f} LUT{estimate}" if p.get("lut") is not None else ""
    kind = "" if p["kind"] == "float" else p["kind"].upper() + " "
    return f"{p['preset']} {kind}{what} (resolution {p['resolution']:.3f}{lut})"


def _target(points: list[dict[str, Any]], config: StudyConfig) -> dict[str, Any]:
    """The issue's design target: a QAT design within tolerance of its float model, in budget, 0 DSP, II 1."""
    float_res = {p["preset"]: p["resolution"] for p in points if p["kind"] == "float" and p.get("resolution")}

    def misses(p: dict[str, Any]) -> list[str]:
        out = []
        ref = float_res.get(p["preset"])
        if ref is None or p.get("resolution") is None:
            return ["no resolution"]
        if p["resolution"] > ref * (1 + config.resolution_tolerance):
            out.append(
                f"resolution {p['resolution'] / ref - 1:+.1%} vs float (limit {config.resolution_tolerance:+.0%})"
            )
        if p.get("lut") is None or p["lut"] > config.lut_budget:
            out.append(f"LUT {p.get('lut')} > {config.lut_budget}")
        if p.get("dsp") not in (0, None):
            out.append(f"DSP {p['dsp']}")
        if p.get("latency_ns") is not None and p["latency_ns"] > config.latency_budget_ns:
            out.append(f"latency {p['latency_ns']:.1f} ns > {config.latency_budget_ns:g} ns")
        if p.get("ii") not in (1, None):
            out.append(f"II {p['ii']}")
        if p.get("lut_source") != "yosys":
            out.append("not synthesised (estimate only)")
        return out

    qat = [p for p in points if p["kind"] == "qat"]
    if not qat:
        return {"met": False, "design": None, "misses": ["no QAT design"]}
    scored = sorted(qat, key=lambda p: (len(misses(p)), p.get("resolution") or math.inf))
    best = scored[0]
    return {
        "met": not misses(best),
        "design": best["key"],
        "max_cells": config.max_cells,
        "resolution": best.get("resolution"),
        "float_resolution": float_res.get(best["preset"]),
        "lut": best.get("lut"),
        "dsp": best.get("dsp"),
        "latency_ns": best.get("latency_ns"),
        "ii": best.get("ii"),
        "misses": misses(best),
    }


def _qat_vs_ptq(points: list[dict[str, Any]]) -> dict[str, Any]:
    """How often a QAT design is at least as good as a PTQ design for no more LUTs."""
    qat = [p for p in points if p["kind"] == "qat" and p.get("lut") is not None and p.get("resolution") is not None]
    ptq = [p for p in points if p["kind"] == "ptq" and p.get("lut") is not None and p.get("resolution") is not None]
    beaten = [p for p in ptq if any(q["lut"] <= p["lut"] and q["resolution"] <= p["resolution"] for q in qat)]
    front = [p for p in points if p.get("pareto")]
    return {
        "ptq_points": len(ptq),
        "ptq_beaten_by_qat": len(beaten),
        "front_qat": sum(p["kind"] == "qat" for p in front),
        "front_ptq": sum(p["kind"] == "ptq" for p in front),
        "qat_beats_ptq": bool(ptq)
        and bool(qat)
        and len(beaten) * 2 >= len(ptq)
        and any(p["kind"] == "qat" for p in front),
    }


def answer(points: list[dict[str, Any]], config: StudyConfig) -> dict[str, Any]:
    """The findings in words, with the numbers behind them."""
    floats = sorted((p for p in points if p["kind"] == "float" and p.get("resolution")), key=lambda p: p["parameters"])
    details = []
    bigger_float = len(floats) > 1 and all(a["resolution"] > b["resolution"] for a, b in itertools.pairwise(floats))
    if floats:
        chain = " → ".join(f"{p['preset']} {p['resolution']:.3f}" for p in floats)
        details.append(
            f"In float, resolution by size: {chain} ({'bigger is better' if bigger_float else 'not monotonic'})."
        )
    fitting = [p for p in points if _fits(p, config)]
    best = min(fitting, key=lambda p: p["resolution"]) if fitting else None
    per_preset = {}
    for p in fitting:
        if p["preset"] not in per_preset or p["resolution"] < per_preset[p["preset"]]["resolution"]:
            per_preset[p["preset"]] = p
    budget = f"≤ {config.lut_budget:,} LUT and ≤ {config.latency_budget_ns:g} ns"
    if best:
        details.append(f"Best design within {budget}: {_fmt(best)}.")
        for preset in config.presets:
            if preset in per_preset:
                details.append(f"Best {preset} design within budget: {_fmt(per_preset[preset])}.")
            else:
                details.append(f"No {preset} design fits within {budget}.")
    else:
        details.append(f"No design fits within {budget}.")
    versus = _qat_vs_ptq(points)
    details.append(
        f"QAT vs PTQ: {versus['ptq_beaten_by_qat']} of {versus['ptq_points']} PTQ designs are matched or beaten by "
        f"a QAT design with no more LUTs; the Pareto front holds {versus['front_qat']} QAT and "
        f"{versus['front_ptq']} PTQ designs — QAT {'beats' if versus['qat_beats_ptq'] else 'does not beat'} PTQ "
        "at equal LUT cost."
    )
    target = _target(points, config)
    largest = floats[-1]["preset"] if floats else None
    if best is None:
        text = (
            "Not within this budget: no quantized design fits, so the question is settled by resources, not accuracy."
        )
    elif best["preset"] == largest and bigger_float:
        text = (
            f"Yes, within the range studied: the largest model ({largest}) also gives the best design that fits the "
            f"L0 budget ({_fmt(best)})."
        )
    else:
        text = (
            f"No: bigger is better in float{'' if bigger_float else ' only partly'}, but once the network must fit "
            f"the L0 budget ({budget}) the best design is {_fmt(best)}; larger models need more integer bits and "
            f"more LUTs for the same precision."
        )
    return {"answer": text, "details": details, "qat_vs_ptq": versus, "target": target, "best": best}


def summarize_study(
    records: dict[str, list[dict[str, Any] | None]], config: StudyConfig, scan_dir: Path
) -> dict[str, Any]:
    """Write ``points.jsonl``, ``pareto.json``, ``answer.json`` and the figures; return the answer."""
    scan_dir.mkdir(parents=True, exist_ok=True)
    points = design_points(records)
    write_text_atomic(scan_dir / "points.jsonl", "".join(json.dumps(p, allow_nan=False) + "\n" for p in points))
    front = [p for p in points if p["pareto"]]
    write_text_atomic(scan_dir / "pareto.json", json.dumps(front, indent=1, allow_nan=False))
    result = answer(points, config)
    write_text_atomic(scan_dir / "answer.json", json.dumps(result, indent=1, allow_nan=False))
    from calohls.plots.study import draw_study

    draw_study(points, config, scan_dir)
    return result
