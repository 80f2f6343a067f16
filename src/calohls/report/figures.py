"""Figures the report draws itself (the training history), as PNG bytes to embed; nothing is written to disk."""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Sequence
from typing import Any

__all__ = ["history_png"]

log = logging.getLogger(__name__)

#: Loss curves drawn, by ``history.json`` key → legend label.
CURVES = {"loss": "training", "val_loss": "validation"}


def _series(history: Sequence[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for i, row in enumerate(history, 1):
        y, x = row.get(key), row.get("epoch", i)
        if isinstance(y, int | float) and isinstance(x, int | float) and math.isfinite(y):
            xs.append(float(x))
            ys.append(float(y))
    return xs, ys


def history_png(history: Sequence[dict[str, Any]], best_epoch: int | None = None, *, dpi: float = 100) -> bytes | None:
    """The training and validation loss per epoch as a PNG, or None without loss values or the plot stack.

    Args:
        history: The rows of ``history.json`` (``epoch``, ``loss``, ``val_loss``, ...).
        best_epoch: Epoch to mark (the checkpoint kept), if known.
        dpi: Resolution of the image.
    """
    curves = {label: _series(history, key) for key, label in CURVES.items()}
    curves = {label: xy for label, xy in curves.items() if xy[0]}
    if not curves:
        return None
    try:
        from calohls.plots.style import experiment_label, new_figure, style_context
    except ImportError as err:
        log.warning("no training-history figure: %s", err)
        return None
    with style_context():
        fig, ax = new_figure(figsize=(8, 5))
        for label, (xs, ys) in curves.items():
            ax.plot(xs, ys, marker="o", markersize=3, label=label)
        if best_epoch is not None:
            ax.axvline(best_epoch, color="grey", linestyle="--", linewidth=1, label=f"best epoch ({best_epoch})")
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss (MSE)")
        ax.legend(loc="upper right")
        experiment_label(ax, extra="training history")
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()
