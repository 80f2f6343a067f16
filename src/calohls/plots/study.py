"""Figures of the size × precision study: resolution against LUTs (the Pareto front, QAT vs PTQ), and resolution
against model size (float, and the best design that fits the trigger).

Resolutions carry vertical error bars from the points' ``resolution_err`` (the 68 % bootstrap half-width of
:func:`calohls.scan.designs.resolution_summary`) where the points have one.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from calohls.plots.style import experiment_label, new_figure, save, style_context

if TYPE_CHECKING:
    from calohls.scan.answer import CurvePoint

__all__ = ["draw_learning_curve", "draw_study"]

_KIND_MARKER = {"ptq": "s", "qat": "o"}
_RES_LABEL = "resolution (geometric mean over E bins of IQR$_{68}$/median)"


def _err(points: list[dict[str, Any]]) -> list[float] | None:
    """The points' ``resolution_err`` (0 where missing), or None when no point has one."""
    errs = [p.get("resolution_err") for p in points]
    if not any(isinstance(e, int | float) for e in errs):
        return None
    return [float(e) if isinstance(e, int | float) and np.isfinite(e) else 0.0 for e in errs]


def _colours(presets: list[str]) -> dict[str, str]:
    import matplotlib as mpl

    cycle = mpl.rcParams["axes.prop_cycle"].by_key()["color"]
    return {p: cycle[i % len(cycle)] for i, p in enumerate(presets)}


def _pareto(points: list[dict[str, Any]], presets: list[str], config: Any, path: Path) -> Path:
    colour = _colours(presets)
    fig, ax = new_figure()
    for kind, marker in _KIND_MARKER.items():
        for preset in presets:
            sel = [
                p
                for p in points
                if p["kind"] == kind and p["preset"] == preset and p.get("lut") and p.get("resolution")
            ]
            if not sel:
                continue
            ax.errorbar(
                [p["lut"] for p in sel],
                [p["resolution"] for p in sel],
                yerr=_err(sel),
                marker=marker,
                markerfacecolor=colour[preset] if kind == "qat" else "none",
                markeredgecolor=colour[preset],
                ecolor=colour[preset],
                linestyle="none",
                markersize=6,
                elinewidth=0.8,
                label=f"{preset} {kind.upper()}",
            )
    front = sorted((p for p in points if p.get("pareto")), key=lambda p: p["lut"])
    if front:
        ax.step([p["lut"] for p in front], [p["resolution"] for p in front], where="post", color="0.3", lw=1,
                label="Pareto front")  # fmt: skip
    for p in points:
        if p["kind"] == "float" and p.get("resolution"):
            ax.axhline(p["resolution"], color=colour[p["preset"]], ls=":", lw=1)
    ax.axvline(config.lut_budget, color="tab:red", ls="--", lw=1, label=f"budget {config.lut_budget:,} LUT")
    ax.set_xscale("log")
    ax.set_xlabel("LUTs (Yosys where synthesised, else da4ml estimate)")
    ax.set_ylabel(_RES_LABEL)
    ax.legend(fontsize="x-small", ncols=2, loc="upper right")
    experiment_label(ax, extra="dotted: float models", loc=3)
    return save(fig, path)


def _size(
    points: list[dict[str, Any]], presets: list[str], config: Any, path: Path, references: list[dict[str, Any]]
) -> Path:
    fig, ax = new_figure()
    floats = sorted((p for p in points if p["kind"] == "float" and p.get("resolution")), key=lambda p: p["parameters"])
    floats = list({p["preset"]: p for p in reversed(floats)}.values())[::-1]  # one point per size: its first seed
    if references:  # the float reference of each size: mean over its seeds ± bootstrap and seed spread
        ax.errorbar([r["parameters"] for r in references], [r["resolution"] for r in references],
                    yerr=[r["uncertainty"] for r in references], fmt="k-o", capsize=2,
                    label=f"float (mean of {min(r['seeds'] for r in references)}+ seeds)")  # fmt: skip
        floats = [
            {**f, "resolution": r["resolution"]} for f in floats for r in references if r["preset"] == f["preset"]
        ]
    elif floats:
        ax.errorbar([p["parameters"] for p in floats], [p["resolution"] for p in floats], yerr=_err(floats), fmt="k-o",
                    capsize=2, label="float")  # fmt: skip
    for kind, marker in _KIND_MARKER.items():
        xs, best = [], []
        for f in floats:
            fits = [
                p
                for p in points
                if p["kind"] == kind
                and p["preset"] == f["preset"]
                and p.get("lut") is not None
                and p["lut"] <= config.lut_budget
                and p.get("resolution")
            ]
            if fits:
                xs.append(f["parameters"])
                best.append(min(fits, key=lambda p: p["resolution"]))
        if xs:
            ax.errorbar(xs, [p["resolution"] for p in best], yerr=_err(best), marker=marker, ls="--", capsize=2,
                        label=f"best {kind.upper()} within {config.lut_budget:,} LUT")  # fmt: skip
    for f in floats:
        ax.annotate(f["preset"], (f["parameters"], f["resolution"]), textcoords="offset points", xytext=(4, 4),
                    fontsize="x-small")  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters")
    ax.set_ylabel(_RES_LABEL)
    ax.legend(fontsize="x-small")
    experiment_label(ax, extra="the bigger, the better?", loc=3)
    return save(fig, path)


def _ebops(points: list[dict[str, Any]], presets: list[str], path: Path) -> Path | None:
    qat = [p for p in points if p["kind"] == "qat" and p.get("ebops") and p.get("lut")]
    if not qat:
        return None
    colour = _colours(presets)
    fig, ax = new_figure()
    for preset in presets:
        sel = [p for p in qat if p["preset"] == preset]
        if sel:
            ax.scatter([p["ebops"] for p in sel], [p["lut"] for p in sel], color=colour[preset], label=preset)
    lim = np.array([min(p["ebops"] for p in qat), max(p["ebops"] for p in qat)])
    ax.plot(lim, lim, color="0.5", ls=":", lw=1, label="LUT = EBOPs")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("EBOPs (HGQ2 resource estimate)")
    ax.set_ylabel("LUTs")
    ax.legend(fontsize="x-small")
    experiment_label(ax, extra="QAT designs", loc=4)
    return save(fig, path)


def _l0(points: list[dict[str, Any]], presets: list[str], config: Any, path: Path) -> Path | None:
    """The L0 system view of the designs built into firmware: clusters per bunch crossing within the LUT budget
    against resolution (open markers: the estimated clock misses the target, the count is at the estimated fmax)."""
    built = [p for p in points if p.get("clusters_per_bx") is not None and p.get("resolution")]
    if not built:
        return None
    colour = _colours(presets)
    fig, ax = new_figure()
    for p in built:
        c = colour.get(p["preset"], "k")
        face = c if p.get("timing_met") is not False else "none"
        marker = _KIND_MARKER.get(p["kind"], "o")
        ax.scatter(p["resolution"], p["clusters_per_bx"], marker=marker, s=40, facecolors=face, edgecolors=c)
        fmax = p.get("fmax_estimate_mhz")
        note = f"{p['preset']}, {p.get('clusters_per_bx_per_instance')}/inst." + (f", {fmax:.0f} MHz" if fmax else "")
        ax.annotate(note, (p["resolution"], p["clusters_per_bx"]), textcoords="offset points", xytext=(4, 4),
                    fontsize="x-small")  # fmt: skip
    ax.set_xlabel(_RES_LABEL)
    ax.set_ylabel(f"clusters per bunch crossing within {config.lut_budget:,} LUT")
    ax.set_ylim(bottom=0)
    experiment_label(ax, extra="firmware designs; open: estimated clock below target", loc=4)
    return save(fig, path)


def draw_study(
    points: list[dict[str, Any]], config: Any, out_dir: str | Path, references: list[dict[str, Any]] | None = None
) -> list[Path]:
    """Draw and save the study's figures into ``out_dir``; returns the files written."""
    out_dir = Path(out_dir)
    presets = list(config.presets)
    with style_context():
        written = [
            _pareto(points, presets, config, out_dir / "pareto_lut.png"),
            _size(points, presets, config, out_dir / "resolution_vs_size.png", references or []),
        ]
        optional = [
            _ebops(points, presets, out_dir / "ebops_vs_lut.png"),
            _l0(points, presets, config, out_dir / "l0_clusters_per_bx.png"),
        ]
    return written + [path for path in optional if path]


def draw_learning_curve(curves: dict[str, list[CurvePoint]], path: Path) -> Path:
    """Float resolution against the number of training clusters, one line per size, with 68 % error bars."""
    colour = _colours(list(curves))
    with style_context():
        fig, ax = new_figure()
        for preset, points in curves.items():
            ax.errorbar(
                [p.n_train for p in points],
                [p.resolution for p in points],
                yerr=[p.resolution_err or 0.0 for p in points],
                marker="o",
                capsize=3,
                color=colour[preset],
                label=f"{preset} (float)",
            )
        ax.set_xscale("log")
        ax.set_xlabel("training clusters")
        ax.set_ylabel(_RES_LABEL)
        ax.legend(fontsize="small")
        experiment_label(ax, extra="learning curve", loc=1)
        return save(fig, path)
