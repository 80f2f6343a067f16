"""Figures of the study: pure drawing functions that take ``ax`` and return their artists.

Typical use::

    from calohls import plots

    plots.use_style()
    fig, ax = plots.new_figure()
    plots.resolution_comparison(ax, {"EM scale": em, "LCW-like": lcw, "DeepSets": ds})
    plots.experiment_label(ax)
    plots.save(fig, "out/resolution.png")  # writes atomically and closes the figure

Needs the ``plot`` extra (matplotlib, mplhep, hist).
"""

from __future__ import annotations

from calohls.plots.response import (
    E_TRUE_LABEL,
    MEDIAN_LABEL,
    RESPONSE_LABEL,
    ComparisonArtists,
    Response2DArtists,
    median_comparison,
    quantile_label,
    resolution_comparison,
    response_2d,
)
from calohls.plots.style import DEFAULT_EXTRA, FORMATS, experiment_label, new_figure, save, style_context, use_style

__all__ = [
    "DEFAULT_EXTRA",
    "E_TRUE_LABEL",
    "FORMATS",
    "MEDIAN_LABEL",
    "RESPONSE_LABEL",
    "ComparisonArtists",
    "Response2DArtists",
    "experiment_label",
    "median_comparison",
    "new_figure",
    "quantile_label",
    "resolution_comparison",
    "response_2d",
    "save",
    "style_context",
    "use_style",
]
