"""Figures of the PTQ sweeps (the poster's Fig 3): MPE and resolution vs precision per model size, and per-layer
differences between the hls4ml and the Keras model."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from calohls.config import PTQConfig
from calohls.plots.style import experiment_label, new_figure, save, style_context
from calohls.quant.sweeps import SWEEPS
from calohls.scan.ptq_summary import group_records

if TYPE_CHECKING:
    from calohls.scan.ptq import PTQPoint

__all__ = ["draw_ptq"]


_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*", "<", ">", "h")


def draw_ptq(
    records: Iterable[PTQPoint], runs: dict[str, dict[str, Any]], out_dir: str | Path, config: PTQConfig
) -> list[Path]:
    """Draw and save the sweep figures of ``config``'s sweeps into ``out_dir``; returns the files written."""
    out_dir = Path(out_dir)
    order = sorted(runs, key=lambda name: runs[name].get("parameters", 0))
    written = []
    with style_context():
        for sweep, by_run in group_records(records).items():
            axis, fixed = SWEEPS[sweep].axis, SWEEPS[sweep].fixed(config)
            for quantity, ylabel, log in (
                ("mpe", "MPE of the output vs Keras [%]", True),
                ("resolution", "resolution IQR(16–84%)/median", False),
            ):
                fig, ax = new_figure()
                for name in order:
                    rows = by_run.get(name)
                    if not rows:
                        continue
                    x = [r.value for r in rows]
                    y = np.array([getattr(r, quantity) for r in rows])
                    label = f"{name} ({runs[name].get('parameters', 0):,} par.)"
                    line = ax.plot(x, np.maximum(y, 1e-4) if log else y, marker="o", label=label)[0]
                    if quantity == "resolution" and "float_resolution" in runs[name]:
                        ax.axhline(runs[name]["float_resolution"], color=line.get_color(), ls=":", lw=1)
                ax.set_xlabel(axis)
                ax.set_ylabel(ylabel)
                if log:
                    ax.set_yscale("log")
                    ax.axhline(1.0, color="grey", ls="--", lw=1)
                ax.legend(loc="upper right", title=fixed)
                experiment_label(ax, extra="post-training quantization" + (", float: dotted" * (not log)))
                written.append(save(fig, out_dir / f"{quantity}_{sweep}.png"))
            for name in order:
                rows = by_run.get(name)
                if not rows:
                    continue
                fig, ax = new_figure()
                x = [r.value for r in rows]
                for i, layer in enumerate(rows[0].layers):
                    rel = [
                        r.layers[layer]["mean_abs"] / max(r.layers[layer]["reference_mean_abs"], 1e-12) for r in rows
                    ]
                    style = "-" if layer.startswith(("phi", "ksum")) else "--"  # Φ and the sum solid, F dashed
                    ax.plot(x, np.maximum(rel, 1e-6), ls=style, marker=_MARKERS[i % len(_MARKERS)], label=layer)
                ax.set_yscale("log")
                ax.set_xlabel(axis)
                ax.set_ylabel("mean |hls4ml − Keras| / mean |Keras|")
                ax.axhline(0.01, color="grey", ls="--", lw=1)
                ax.legend(loc="upper right", ncol=2, fontsize="small", title=name)
                experiment_label(ax, extra="per-layer output difference")
                written.append(save(fig, out_dir / f"layers_{sweep}_{name}.png"))
    return written
