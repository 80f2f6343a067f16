"""The study's findings: design points, the Pareto front, and the answer to "the bigger, the better?" in words."""

from __future__ import annotations

import itertools
import math
import statistics
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

from calohls.config import StudyConfig
from calohls.scan.designs import TIMING_KEYS, pareto_front

__all__ = ["CurvePoint", "StudyAnswer", "StudyFindings", "Target", "answer", "design_points", "study_findings"]


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
            p["bins"] = source.get("bins")
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


def _err(p: dict[str, Any]) -> float:
    """The 68 % bootstrap half-width of a design's resolution (0 where the record has none)."""
    err = p.get("resolution_err")
    return float(err) if isinstance(err, int | float) and math.isfinite(err) else 0.0


def _fmt(p: dict[str, Any]) -> str:
    epoch = f", epoch {p['epoch']}" if p.get("epoch") is not None else ""
    qat = f"β={p.get('beta'):g}{epoch}"
    what = p.get("precision") if p["kind"] == "ptq" else qat if p["kind"] == "qat" else "float"
    estimate = "" if p.get("lut_source") == "yosys" else " (da4ml estimate)"
    lut = f", {p['lut']:,.0f} LUT{estimate}" if p.get("lut") is not None else ""
    kind = "" if p["kind"] == "float" else p["kind"].upper() + " "
    err = f" ± {_err(p):.3f}" if _err(p) else ""
    return f"{p['preset']} {kind}{what} (resolution {p['resolution']:.3f}{err}{lut})"


@dataclass(frozen=True)
class FloatReference:
    """The float resolution of one size over its seeds: the mean, the bootstrap half-width (mean over seeds), the
    seed-to-seed spread (sample standard deviation; None for one seed) and their combination in quadrature, which
    is the uncertainty every comparison between sizes uses."""

    preset: str
    parameters: int
    seeds: int
    resolution: float
    bootstrap_err: float
    seed_spread: float | None
    converged: bool
    runs: tuple[str, ...]

    @property
    def uncertainty(self) -> float:
        return math.hypot(self.bootstrap_err, self.seed_spread or 0.0)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "runs": list(self.runs), "uncertainty": self.uncertainty}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FloatReference:
        fields = {k: v for k, v in data.items() if k != "uncertainty"}  # derived
        return cls(**{**fields, "runs": tuple(fields["runs"])})

    def text(self) -> str:
        return f"{self.preset} {self.resolution:.3f} ± {self.uncertainty:.3f}"


def float_references(points: list[dict[str, Any]]) -> list[FloatReference]:
    """The float reference of every size (all its seeds), smallest network first."""
    by_preset: dict[str, list[dict[str, Any]]] = {}
    for p in points:
        if p["kind"] == "float" and p.get("resolution"):
            by_preset.setdefault(p["preset"], []).append(p)
    refs = []
    for preset, runs in by_preset.items():
        res = [r["resolution"] for r in runs]
        refs.append(
            FloatReference(
                preset=preset,
                parameters=int(runs[0].get("parameters") or 0),
                seeds=len(runs),
                resolution=statistics.fmean(res),
                bootstrap_err=statistics.fmean(_err(r) for r in runs),
                seed_spread=statistics.stdev(res) if len(res) > 1 else None,
                converged=all(r.get("converged", True) for r in runs),
                runs=tuple(str(r.get("run") or r["key"]) for r in runs),
            )
        )
    return sorted(refs, key=lambda r: r.parameters)


@dataclass(frozen=True)
class Comparison:
    """Resolution of ``b`` minus that of ``a`` and its combined uncertainty; ``b`` is better (or worse) only when
    the difference exceeds the uncertainty."""

    a: str
    b: str
    difference: float
    uncertainty: float

    @property
    def verdict(self) -> str:
        if abs(self.difference) <= self.uncertainty:
            return "not distinguishable"
        return "better" if self.difference < 0 else "worse"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict}


def compare(a: tuple[str, float, float], b: tuple[str, float, float]) -> Comparison:
    """Compare two (name, resolution, uncertainty) triples."""
    return Comparison(a[0], b[0], b[1] - a[1], math.hypot(a[2], b[2]))


@dataclass(frozen=True)
class Clause:
    """One finding of the study: the claim, whether the study's numbers support it (None: not enough numbers to
    say), the sentence printed, and the numbers behind it."""

    claim: str
    holds: bool | None
    text: str
    numbers: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Clause:
        return cls(**data)


def _float_clause(refs: list[FloatReference]) -> Clause:
    """Is bigger better in float, step by step, beyond the uncertainties?"""
    steps = [compare((a.preset, a.resolution, a.uncertainty), (b.preset, b.resolution, b.uncertainty))
             for a, b in itertools.pairwise(refs)]  # fmt: skip
    numbers = {"references": [r.to_json() for r in refs], "steps": [s.to_json() for s in steps]}
    chain = " → ".join(r.text() for r in refs)
    if not steps:
        return Clause("bigger is better in float", None, f"In float: {chain} (one size only).", numbers)
    verdicts = [s.verdict for s in steps]
    holds = all(v == "better" for v in verdicts)
    worse = any(v == "worse" for v in verdicts)
    said = "; ".join(f"{s.a} → {s.b} {s.verdict}" for s in steps)
    verdict = "bigger is better" if holds else "bigger is not better" if worse else "bigger is not clearly better"
    seeds = min(r.seeds for r in refs)
    text = f"In float, {verdict}: {chain} ({said}; {seeds} seed{'s' if seeds > 1 else ''} per size)."
    return Clause("bigger is better in float", holds if holds or worse else None, text, numbers)


def _convergence_clause(refs: list[FloatReference]) -> Clause | None:
    cut = [r.preset for r in refs if not r.converged]
    if not cut:
        return None
    text = (f"Warning: the float reference of {', '.join(cut)} stopped at its epoch cap while still improving; "
            "raise train.epochs.")  # fmt: skip
    return Clause("float references converged", False, text, {"not_converged": cut})


class CurvePoint(NamedTuple):
    """One float run of a learning curve: its training clusters, their share of the training set, its resolution
    with the 68 % half-width, and whether it converged."""

    n_train: int
    fraction: float
    resolution: float
    resolution_err: float
    converged: bool

    def to_json(self) -> dict[str, Any]:
        return self._asdict()


def learning_curves(records: list[dict[str, Any] | None]) -> dict[str, list[CurvePoint]]:
    """Resolution against the number of training clusters, per size, from the float runs on shares of the training
    set (and the run on all of it), fewest clusters first."""
    curves: dict[str, list[CurvePoint]] = {}
    for r in records:
        if r is None or not r.get("resolution") or r.get("n_train") is None:
            continue
        point = CurvePoint(r["n_train"], r.get("train_fraction", 1.0), r["resolution"], _err(r),
                           r.get("converged", True))  # fmt: skip
        curves.setdefault(r["preset"], []).append(point)
    return {preset: sorted(points, key=lambda p: p.n_train) for preset, points in curves.items()}


def _curve_clause(curves: dict[str, list[CurvePoint]]) -> Clause | None:
    """Has the float resolution stopped improving with more training clusters? The last doubling decides."""
    steps = {}
    for preset, points in curves.items():
        if len(points) > 1:
            a, b = points[-2], points[-1]
            steps[preset] = compare(
                (f"{a.n_train:,}", a.resolution, a.resolution_err),
                (f"{b.n_train:,}", b.resolution, b.resolution_err),
            )
    if not steps:
        return None
    flat = all(c.verdict != "better" for c in steps.values())
    said = "; ".join(
        f"{preset} {c.difference:+.3f} ± {c.uncertainty:.3f} from {c.a} to {c.b} clusters ({c.verdict})"
        for preset, c in steps.items()
    )
    verdict = "has flattened" if flat else "still improves"
    text = f"Learning curve: the float resolution {verdict} at the last doubling of the training set: {said}."
    numbers = {"curves": {preset: [p.to_json() for p in points] for preset, points in curves.items()}}
    return Clause("the float references have enough data", flat, text, numbers)


def _integer_bits_clause(ptq: dict[str, Any] | None) -> Clause | None:
    """Do larger models need more integer bits? From the int-bits sweep: the bits for MPE < 1 % per size."""
    entry = ((ptq or {}).get("sweeps") or {}).get("int-bits") or {}
    needs = {name: e.get("bits_for_mpe_below_1pct") for name, e in entry.items()}
    ksum = {name: (e.get("layer_bits_needed") or {}).get("ksum") for name, e in entry.items()}
    if len(needs) < 2 or any(v is None for v in needs.values()):
        return None
    values = list(needs.values())
    holds = values == sorted(values) and values[0] < values[-1]
    numbers = ", ".join(f"{n} {v}" for n, v in needs.items())
    sums = ", ".join(f"{n} {v}" for n, v in ksum.items() if v is not None)
    verdict = "need more" if holds else "do not need more"
    text = (f"Larger models {verdict} integer bits for MPE < 1 % here: {numbers} (the sum over cells alone: "
            f"{sums}).")  # fmt: skip
    return Clause("larger models need more integer bits", holds, text, {"bits": needs, "ksum_bits": ksum})


def _lut_clause(points: list[dict[str, Any]], presets: tuple[str, ...]) -> Clause | None:
    """Do larger models need more LUTs at the same precision? The PTQ designs of every size at one precision."""
    by_precision: dict[str, dict[str, float]] = {}
    for p in points:
        if p["kind"] == "ptq" and p.get("lut") is not None and p.get("precision"):
            by_precision.setdefault(p["precision"], {})[p["preset"]] = p["lut"]
    common = [prec for prec, luts in by_precision.items() if len(luts) == len(presets) > 1]
    if not common:
        return None
    luts = [[by_precision[prec][preset] for preset in presets] for prec in common]
    holds = all(all(b > a for a, b in itertools.pairwise(row)) for row in luts)
    shown = common[len(common) // 2]
    numbers = ", ".join(f"{preset} {by_precision[shown][preset]:,.0f}" for preset in presets)
    verdict = "need more" if holds else "do not always need more"
    text = (f"Larger models {verdict} LUTs at the same precision (PTQ, da4ml estimates; at {shown}: {numbers}; "
            f"{len(common)} precisions compared).")  # fmt: skip
    return Clause("larger models need more LUTs at the same precision", holds, text,
                  {p: by_precision[p] for p in common})  # fmt: skip


def _closure_misses(p: dict[str, Any], config: StudyConfig) -> list[str]:
    """The bins above ``closure_min_energy`` whose median response is off by more than ``closure_tolerance``."""
    bins = p.get("bins") or {}
    edges, median = bins.get("edges"), bins.get("median")
    if not edges or not median:
        return []
    out = []
    for lo, hi, m in zip(edges[:-1], edges[1:], median, strict=False):
        if m is not None and lo >= config.closure_min_energy * (1 - 1e-9) and abs(m - 1) > config.closure_tolerance:
            out.append(f"median {m:.3f} at {lo:.3g}–{hi:.3g} GeV (closure limit ±{config.closure_tolerance:.0%})")
    return out


@dataclass(frozen=True)
class Target:
    """The design target's verdict on the closest QAT design: ``met``, the design's key (None: no QAT design),
    what it misses, and its numbers (None where not measured)."""

    met: bool
    design: str | None
    misses: tuple[str, ...]
    max_cells: int | None = None
    resolution: float | None = None
    resolution_err: float | None = None
    float_resolution: float | None = None
    median_worst: float | None = None
    lut: float | None = None
    dsp: float | None = None
    latency_ns: float | None = None
    ii: int | None = None
    timing_met: bool | None = None
    period_estimate_ns: float | None = None
    clusters_per_bx: float | None = None

    _ORDER = ("met", "design", "max_cells", "resolution", "resolution_err", "float_resolution", "median_worst", "lut",
              "dsp", "latency_ns", "ii", "misses", "timing_met", "period_estimate_ns", "clusters_per_bx")  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        if self.design is None:  # no QAT design: nothing to measure
            return {"met": self.met, "design": None, "misses": list(self.misses)}
        return {k: list(self.misses) if k == "misses" else getattr(self, k) for k in self._ORDER}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Target:
        return cls(**{**{k: data.get(k) for k in cls._ORDER}, "misses": tuple(data.get("misses") or ())})


def _target(points: list[dict[str, Any]], config: StudyConfig, refs: list[FloatReference]) -> Target:
    """The design target: a QAT design within tolerance of its float model, closing in every bin above
    ``closure_min_energy``, in budget, 0 DSP, II 1, counted by Yosys."""
    float_res = {r.preset: r.resolution for r in refs}
    seed0 = {p["preset"]: p["resolution"] for p in points if p["kind"] == "float" and p.get("resolution")
             and not p.get("seed_index")}  # fmt: skip
    float_res = {**float_res, **seed0}  # the run QAT started from is the design's float model

    def misses(p: dict[str, Any]) -> list[str]:
        out = []
        ref = float_res.get(p["preset"])
        if ref is None or p.get("resolution") is None:
            return ["no resolution"]
        if p["resolution"] > ref * (1 + config.resolution_tolerance):
            out.append(
                f"resolution {p['resolution'] / ref - 1:+.1%} vs float (limit {config.resolution_tolerance:+.0%})"
            )
        out += _closure_misses(p, config)
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
        return Target(met=False, design=None, misses=("no QAT design",))
    scored = sorted(qat, key=lambda p: (len(misses(p)), p.get("resolution") or math.inf))
    best = scored[0]
    return Target(
        met=not misses(best),
        design=best["key"],
        max_cells=config.max_cells,
        resolution=best.get("resolution"),
        resolution_err=_err(best),
        float_resolution=float_res.get(best["preset"]),
        median_worst=best.get("median_worst"),
        lut=best.get("lut"),
        dsp=best.get("dsp"),
        latency_ns=best.get("latency_ns"),
        ii=best.get("ii"),
        misses=tuple(misses(best)),
        timing_met=best.get("timing_met"),
        period_estimate_ns=best.get("period_estimate_ns"),
        clusters_per_bx=best.get("clusters_per_bx"),
    )


@dataclass(frozen=True)
class QATvsPTQ:
    """How the QAT designs compare with the PTQ designs at equal LUT cost."""

    ptq_points: int
    ptq_beaten_by_qat: int
    front_qat: int
    front_ptq: int
    qat_beats_ptq: bool

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> QATvsPTQ:
        return cls(**data)


def _qat_vs_ptq(points: list[dict[str, Any]]) -> QATvsPTQ:
    """How often a QAT design is at least as good as a PTQ design for no more LUTs."""
    qat = [p for p in points if p["kind"] == "qat" and p.get("lut") is not None and p.get("resolution") is not None]
    ptq = [p for p in points if p["kind"] == "ptq" and p.get("lut") is not None and p.get("resolution") is not None]
    beaten = [p for p in ptq if any(q["lut"] <= p["lut"] and q["resolution"] <= p["resolution"] for q in qat)]
    front = [p for p in points if p.get("pareto")]
    return QATvsPTQ(
        ptq_points=len(ptq),
        ptq_beaten_by_qat=len(beaten),
        front_qat=sum(p["kind"] == "qat" for p in front),
        front_ptq=sum(p["kind"] == "ptq" for p in front),
        qat_beats_ptq=bool(ptq)
        and bool(qat)
        and len(beaten) * 2 >= len(ptq)
        and any(p["kind"] == "qat" for p in front),
    )


def _best_by_size(fitting: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    per_preset: dict[str, dict[str, Any]] = {}
    for p in fitting:
        if p["preset"] not in per_preset or p["resolution"] < per_preset[p["preset"]]["resolution"]:
            per_preset[p["preset"]] = p
    return per_preset


def _budget_clause(best: dict[str, Any] | None, per_preset: dict[str, dict[str, Any]], config: StudyConfig) -> Clause:
    """Which size gives the best design within the budget, and is it better than the others' best beyond the
    uncertainties?"""
    budget = f"≤ {config.lut_budget:,} LUT and ≤ {config.latency_budget_ns:g} ns"
    if best is None:
        return Clause("a design fits the budget", False, f"No design fits within {budget}.", {})
    others = {
        preset: compare((best["key"], best["resolution"], _err(best)), (p["key"], p["resolution"], _err(p)))
        for preset, p in per_preset.items()
        if preset != best["preset"]
    }
    said = "; ".join(
        f"the best {preset} design, {per_preset[preset]['resolution']:.3f} ± {_err(per_preset[preset]):.3f}, is "
        + ("worse" if c.verdict == "worse" else "not distinguishable")
        for preset, c in others.items()
    )
    text = f"Best design within {budget}: {_fmt(best)}" + (f"; {said}." if said else ".")
    numbers = {"best": best["key"], "comparisons": [c.to_json() for c in others.values()]}
    return Clause("the best design within the budget", True, text, numbers)


def _headline(
    best: dict[str, Any] | None,
    per_preset: dict[str, dict[str, Any]],
    refs: list[FloatReference],
    clauses: dict[str, Clause | None],
    config: StudyConfig,
) -> str:
    """The answer in one sentence, from the clauses the numbers support."""
    budget = f"≤ {config.lut_budget:,} LUT and ≤ {config.latency_budget_ns:g} ns"
    if best is None:
        return (
            "Not within this budget: no quantized design fits, so the question is settled by resources, not accuracy."
        )
    float_clause = clauses["float"]
    float_words = {True: "bigger is better in float", False: "bigger is not better even in float",
                   None: "in float the sizes are not clearly distinguishable"}[float_clause.holds]  # fmt: skip
    largest = refs[-1].preset if refs else best["preset"]
    tail = [c.text.rstrip(".").replace("Larger models", "larger models")
            for key in ("lut", "bits") if (c := clauses.get(key)) is not None and c.holds]  # fmt: skip
    suffix = ("; " + "; ".join(tail)) if tail else ""
    top = per_preset.get(largest)
    if best["preset"] == largest:
        return (f"Yes, within the range studied: {float_words}, and the largest model ({largest}) also gives the best "
                f"design that fits the L0 budget ({_fmt(best)}){suffix}.")  # fmt: skip
    if top is not None:
        c = compare((best["key"], best["resolution"], _err(best)), (top["key"], top["resolution"], _err(top)))
        if c.verdict == "not distinguishable":
            return (f"Not distinguishable within the L0 budget ({budget}): {float_words}, and the best design "
                    f"{_fmt(best)} and the best {largest} design {_fmt(top)} agree within their uncertainties"
                    f"{suffix}.")  # fmt: skip
    return (f"No: {float_words}, but once the network must fit the L0 budget ({budget}) the best design is "
            f"{_fmt(best)}{suffix}.")  # fmt: skip


@dataclass(frozen=True)
class StudyAnswer:
    """The study's answer (``scan/answer.json``): the headline, the details in words, the clauses with the numbers
    behind them, the float reference of each size, QAT vs PTQ, the design target and the best design in budget."""

    answer: str
    details: tuple[str, ...]
    clauses: tuple[Clause, ...]
    float_references: tuple[FloatReference, ...]
    qat_vs_ptq: QATvsPTQ
    target: Target
    best: dict[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        return {
            "answer": self.answer,
            "details": list(self.details),
            "clauses": [c.to_json() for c in self.clauses],
            "float_references": [r.to_json() for r in self.float_references],
            "qat_vs_ptq": self.qat_vs_ptq.to_json(),
            "target": self.target.to_json(),
            "best": self.best,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StudyAnswer:
        return cls(
            answer=data["answer"],
            details=tuple(data["details"]),
            clauses=tuple(Clause.from_json(c) for c in data["clauses"]),
            float_references=tuple(FloatReference.from_json(r) for r in data["float_references"]),
            qat_vs_ptq=QATvsPTQ.from_json(data["qat_vs_ptq"]),
            target=Target.from_json(data["target"]),
            best=data["best"],
        )


def answer(
    points: list[dict[str, Any]],
    config: StudyConfig,
    ptq_summary: dict[str, Any] | None = None,
    curves: dict[str, list[CurvePoint]] | None = None,
) -> StudyAnswer:
    """The findings in words, each computed from the study's numbers, with the numbers behind them."""
    refs = float_references(points)
    fitting = [p for p in points if _fits(p, config)]
    best = min(fitting, key=lambda p: p["resolution"]) if fitting else None
    per_preset = _best_by_size(fitting)
    clauses: dict[str, Clause | None] = {
        "float": _float_clause(refs),
        "convergence": _convergence_clause(refs),
        "data": _curve_clause(curves or {}),
        "budget": _budget_clause(best, per_preset, config),
        "bits": _integer_bits_clause(ptq_summary),
        "lut": _lut_clause(points, tuple(r.preset for r in refs)),
    }
    details = [c.text for c in clauses.values() if c is not None]
    budget = f"≤ {config.lut_budget:,} LUT and ≤ {config.latency_budget_ns:g} ns"
    for preset in config.presets:
        if best is not None and preset in per_preset:
            details.append(f"Best {preset} design within budget: {_fmt(per_preset[preset])}.")
        elif best is not None:
            details.append(f"No {preset} design fits within {budget}.")
    versus = _qat_vs_ptq(points)
    details.append(
        f"QAT vs PTQ: {versus.ptq_beaten_by_qat} of {versus.ptq_points} PTQ designs are matched or beaten by "
        f"a QAT design with no more LUTs; the Pareto front holds {versus.front_qat} QAT and "
        f"{versus.front_ptq} PTQ designs — QAT {'beats' if versus.qat_beats_ptq else 'does not beat'} PTQ "
        "at equal LUT cost."
    )
    target = _target(points, config, refs)
    if target.period_estimate_ns is not None:
        met = "meets" if target.timing_met else "misses"
        details.append(
            f"Timing of {target.design} (Yosys netlist, UltraScale+ delay model): estimated period "
            f"{target.period_estimate_ns:.2f} ns {met} the {config.firmware.clock_period:g} ns clock; "
            f"{target.clusters_per_bx} clusters per bunch crossing within {config.lut_budget:,} LUT."
        )
    return StudyAnswer(
        answer=_headline(best, per_preset, refs, clauses, config),
        details=tuple(details),
        clauses=tuple(c for c in clauses.values() if c is not None),
        float_references=tuple(refs),
        qat_vs_ptq=versus,
        target=target,
        best=best,
    )


@dataclass(frozen=True)
class StudyFindings:
    """Everything the study's numbers say: the design points (with their Pareto flags), the learning curves and
    the answer. :mod:`calohls.stages.study` writes them to ``scan/`` and draws them."""

    points: list[dict[str, Any]]
    curves: dict[str, list[CurvePoint]]
    answer: StudyAnswer

    @property
    def front(self) -> list[dict[str, Any]]:
        """The design points on the Pareto front."""
        return [p for p in self.points if p["pareto"]]


def study_findings(
    records: dict[str, list[dict[str, Any] | None]],
    config: StudyConfig,
    ptq_summary: dict[str, Any] | None = None,
) -> StudyFindings:
    """The design points, learning curves and answer of the study's task records."""
    points = design_points(records)
    curves = learning_curves(records.get("learning_curve") or [])
    return StudyFindings(points, curves, answer(points, config, ptq_summary, curves))
