"""Energy response figures: response against true energy, and resolution and median response per calibration.

Every function draws on the ``ax`` it is given and returns its artists; bins of a
:class:`~calohls.physics.response.ResponseTable` without values (NaN, too few clusters) are left out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
from matplotlib.axes import Axes
from matplotlib.collections import QuadMesh
from matplotlib.colorbar import Colorbar
from matplotlib.colors import LogNorm, Normalize
from matplotlib.container import ErrorbarContainer
from matplotlib.legend import Legend
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from calohls.errors import ConfigError, DataError
from calohls.physics.response import ResponseTable

__all__ = [
    "E_TRUE_LABEL",
    "MEDIAN_LABEL",
    "RESPONSE_LABEL",
    "ComparisonArtists",
    "Response2DArtists",
    "median_comparison",
    "quantile_label",
    "resolution_comparison",
    "response_2d",
]

#: Axis label of the true cluster energy.
E_TRUE_LABEL = r"True cluster energy $E_{\mathrm{true}}$ [GeV]"
#: Axis label of the response.
RESPONSE_LABEL = r"Response $E_{\mathrm{pred}}\,/\,E_{\mathrm{true}}$"
#: Axis label of the median response.
MEDIAN_LABEL = r"Median response $E_{\mathrm{pred}}\,/\,E_{\mathrm{true}}$"
#: Marker of each calibration in comparisons, in order.
MARKERS = ("o", "s", "^", "v", "D", "P", "X", "<", ">")


class Response2DArtists(NamedTuple):
    """What :func:`response_2d` drew."""

    mesh: QuadMesh
    median: Line2D
    quantiles: tuple[Line2D, Line2D]
    unity: Line2D
    legend: Legend
    colorbar: Colorbar | None


class ComparisonArtists(NamedTuple):
    """What :func:`resolution_comparison` and :func:`median_comparison` drew.

    ``series`` maps each calibration to its error-bar container; ``series[name].lines[0]`` is the marker line,
    whose data are the marker positions (the bin centres, dodged side by side) and values of the bins that have
    values.
    """

    series: dict[str, ErrorbarContainer]
    legend: Legend
    band: Rectangle | None = None
    unity: Line2D | None = None


def quantile_label(quantiles: Sequence[float]) -> str:
    """Legend text of a quantile pair, e.g. ``"16% and 84% quantiles"``."""
    lo, hi = (round(float(q) * 100, 6) for q in quantiles)
    return f"{lo:g}% and {hi:g}% quantiles"


def response_2d(
    ax: Axes,
    e_true: Any,
    response: Any,
    table: ResponseTable,
    *,
    label: str,
    bins_y: tuple[float, float, int] | Any = (0.0, 2.0, 100),
    bins_x: Any = None,
    log_x: bool = True,
    log_counts: bool = True,
    colorbar: bool = False,
    cmap: str = "Blues",
    color: str = "#d55e00",
    legend_loc: str = "upper right",
) -> Response2DArtists:
    """Clusters in response against true energy, with the median and quantiles of ``table`` on top.

    Args:
        ax: Axes to draw on.
        e_true: True energy per cluster (GeV), 1-D.
        response: Response ``E_pred / E_true`` per cluster, same length. Pairs with a non-finite value are left
            out, as are clusters outside the histogram range.
        table: Binned response of the same clusters (:func:`~calohls.physics.response.binned_response`).
        label: Name of the calibration, shown as the legend title (e.g. ``"DeepSets"``).
        bins_y: Response bins: ``(low, high, n)`` for ``n`` equal bins, or an array of edges.
        bins_x: Edges in ``E_true``; by default each bin of ``table`` split in four (in ``log E`` when
            ``log_x``).
        log_x: Logarithmic energy axis.
        log_counts: Logarithmic colour scale of the counts.
        colorbar: Add a colour bar of the counts beside the axes.
        cmap: Colour map of the counts; empty cells stay blank.
        color: Colour of the median and quantile lines.
        legend_loc: Legend position, as in :meth:`~matplotlib.axes.Axes.legend`.

    Returns:
        The artists drawn.

    Raises:
        DataError: ``e_true`` and ``response`` are not 1-D arrays of equal length.
        ConfigError: the bins are invalid.
    """
    e, r = _pairs(e_true, response)
    x_edges = _subdivide(table.edges, 4, log=log_x) if bins_x is None else _edges(bins_x, "bins_x")
    y_edges = _response_edges(bins_y)

    counts, _, _ = np.histogram2d(e, r, bins=(x_edges, y_edges))
    peak = counts.max(initial=0.0)
    norm = LogNorm(vmin=1.0, vmax=max(peak, 1.0)) if log_counts and peak > 0 else Normalize(0.0, max(peak, 1.0))
    mesh = ax.pcolormesh(
        x_edges, y_edges, np.ma.masked_less_equal(counts.T, 0.0), cmap=cmap, norm=norm, rasterized=True
    )

    unity = ax.axhline(1.0, color="0.4", linestyle=":", linewidth=1, zorder=2)
    ok = np.isfinite(table.median)
    (median,) = ax.plot(table.centres[ok], table.median[ok], "-o", color=color, markersize=5, label="median", zorder=4)
    quantile_lines = []
    for i, values in enumerate((table.q_lo, table.q_hi)):
        ok = np.isfinite(values)
        text = quantile_label(table.quantiles) if i == 0 else "_" + quantile_label(table.quantiles)
        (line,) = ax.plot(table.centres[ok], values[ok], "--", color=color, label=text, zorder=4)
        quantile_lines.append(line)

    if log_x:
        ax.set_xscale("log")
    ax.set_xlim(x_edges[0], x_edges[-1])
    ax.set_ylim(y_edges[0], y_edges[-1])
    ax.set_xlabel(E_TRUE_LABEL)
    ax.set_ylabel(RESPONSE_LABEL)
    legend = ax.legend(
        handles=[median, quantile_lines[0]],
        labels=["median", quantile_label(table.quantiles)],
        title=label,
        loc=legend_loc,
    )
    bar = ax.figure.colorbar(mesh, ax=ax, label="Clusters", pad=0.01) if colorbar else None
    return Response2DArtists(mesh, median, (quantile_lines[0], quantile_lines[1]), unity, legend, bar)


def resolution_comparison(
    ax: Axes,
    tables: Mapping[str, ResponseTable],
    *,
    log_x: bool = True,
    markers: Sequence[str] = MARKERS,
    legend_loc: str = "upper right",
    headroom: float = 0.35,
    dodge: float = 0.3,
) -> ComparisonArtists:
    """Resolution against true energy for several calibrations, one marker series each.

    The horizontal error bars span the bins, the vertical ones the 68 % bootstrap interval of each resolution (when
    the table has one). All tables must use the same quantile pair, whose name labels the
    y axis (e.g. ``"IQR(16–84%)/median"``).

    Args:
        ax: Axes to draw on.
        tables: Calibration name → its binned response, e.g. ``{"EM scale": ..., "LCW-like": ..., "DeepSets": ...}``.
        log_x: Logarithmic energy axis.
        markers: Marker styles, used in turn.
        legend_loc: Legend position.
        headroom: Fraction of the axes height kept free above the data, for the legend and the experiment label.
        dodge: Fraction of each bin's width (in log E when ``log_x``) over which the markers of the calibrations
            are spread side by side, so that their error bars do not hide one another; 0 puts all at the centre.

    Returns:
        The artists drawn.

    Raises:
        DataError: ``tables`` is empty or holds something other than response tables.
        ConfigError: the tables use different quantile pairs, or ``headroom`` is not in ``[0, 1)``.
    """
    items = _tables(tables)
    pairs = {t.quantiles for _, t in items}
    if len(pairs) > 1:
        raise ConfigError(
            f"the tables use different quantile pairs {sorted(pairs)}; compute them all with the same quantiles"
        )
    series = _series(ax, items, "resolution", markers, dodge, log_x)
    _finish(ax, items, log_x)
    ax.set_ylabel(items[0][1].resolution_label)
    values = np.concatenate([t.resolution for _, t in items])
    _set_headroom(ax, values, headroom, floor=0.0)
    legend = ax.legend(loc=legend_loc)
    return ComparisonArtists(series, legend)


def median_comparison(
    ax: Axes,
    tables: Mapping[str, ResponseTable],
    *,
    band: float | None = 0.02,
    log_x: bool = True,
    markers: Sequence[str] = MARKERS,
    legend_loc: str = "upper right",
    headroom: float = 0.35,
    dodge: float = 0.3,
) -> ComparisonArtists:
    """Median response against true energy for several calibrations, with a shaded band of ``1 ± band``.

    Vertical error bars show the 68 % bootstrap interval of each median (when the table has one).

    Args:
        ax: Axes to draw on.
        tables: Calibration name → its binned response.
        band: Half-width of the shaded band around a response of one; ``None`` or 0 for no band (a dashed line
            at one is drawn either way).
        log_x: Logarithmic energy axis.
        markers: Marker styles, used in turn.
        legend_loc: Legend position.
        headroom: Fraction of the axes height kept free above the data, for the legend and the experiment label.
        dodge: Fraction of each bin's width (in log E when ``log_x``) over which the markers of the calibrations
            are spread side by side, so that their error bars do not hide one another; 0 puts all at the centre.

    Returns:
        The artists drawn.

    Raises:
        DataError: ``tables`` is empty or holds something other than response tables.
        ConfigError: ``band`` is negative or ``headroom`` is not in ``[0, 1)``.
    """
    items = _tables(tables)
    if band is not None and not (np.isfinite(band) and band >= 0):
        raise ConfigError(f"band={band!r} must be a non-negative number such as 0.02, or None")
    span = None
    if band:
        span = ax.axhspan(1.0 - band, 1.0 + band, color="0.88", linewidth=0, zorder=0, label=f"±{band * 100:g}%")
    unity = ax.axhline(1.0, color="0.4", linestyle="--", linewidth=1, zorder=1)
    series = _series(ax, items, "median", markers, dodge, log_x)
    _finish(ax, items, log_x)
    ax.set_ylabel(MEDIAN_LABEL)
    values = np.concatenate([t.median for _, t in items] + [[1.0 - (band or 0.0), 1.0 + (band or 0.0)]])
    _set_headroom(ax, values, headroom)
    legend = ax.legend(loc=legend_loc)
    return ComparisonArtists(series, legend, span, unity)


# -- helpers ----------------------------------------------------------------------------------------------------


def _pairs(e_true: Any, response: Any) -> tuple[np.ndarray, np.ndarray]:
    """Both arrays as 1-D float64 of equal length, with pairs holding a non-finite value removed."""
    e = np.asarray(e_true, dtype=np.float64)
    r = np.asarray(response, dtype=np.float64)
    if e.ndim != 1 or r.shape != e.shape:
        raise DataError(
            f"e_true has shape {e.shape} and response {r.shape}; pass two 1-D arrays with one value per cluster"
        )
    keep = np.isfinite(e) & np.isfinite(r)
    return e[keep], r[keep]


def _edges(bins: Any, name: str) -> np.ndarray:
    edges = np.asarray(bins, dtype=np.float64)
    if edges.ndim != 1 or edges.shape[0] < 2 or not np.isfinite(edges).all() or not (np.diff(edges) > 0).all():
        raise ConfigError(f"{name} must be at least two finite, increasing bin edges; received {bins!r}")
    return edges


def _response_edges(bins: Any) -> np.ndarray:
    """Edges from ``(low, high, n)`` (``n`` a whole number: ``n`` equal bins) or from an array of edges."""
    if isinstance(bins, tuple) and len(bins) == 3 and isinstance(bins[2], int | np.integer):
        lo, hi, n = bins
        if isinstance(n, bool) or n < 1 or not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
            raise ConfigError(f"bins_y={bins!r} must be (low, high, n) with low < high and n >= 1, e.g. (0, 2, 100)")
        return np.linspace(float(lo), float(hi), int(n) + 1)
    return _edges(bins, "bins_y")


def _subdivide(edges: np.ndarray, k: int, *, log: bool) -> np.ndarray:
    """Each bin of ``edges`` split into ``k`` equal parts (equal in ``log`` when ``log``)."""
    lo, hi = edges[:-1, None], edges[1:, None]
    t = np.arange(k) / k
    inner = lo * (hi / lo) ** t if log else lo + (hi - lo) * t
    return np.append(inner.ravel(), edges[-1])


def _tables(tables: Mapping[str, ResponseTable]) -> list[tuple[str, ResponseTable]]:
    items = list(tables.items())
    if not items:
        raise DataError("no response tables to draw; pass a dict of calibration name → ResponseTable")
    for name, table in items:
        if not isinstance(table, ResponseTable):
            raise DataError(f"tables[{name!r}] is a {type(table).__name__}; pass a ResponseTable from binned_response")
    return items


def _series(
    ax: Axes,
    items: list[tuple[str, ResponseTable]],
    field: str,
    markers: Sequence[str],
    dodge: float = 0.0,
    log_x: bool = True,
) -> dict[str, ErrorbarContainer]:
    """One marker series per table of ``table.<field>``, x error bars spanning the bins and y error bars the 68 %
    bootstrap interval (``<field>_lo`` to ``<field>_hi``) where the table has one.

    The markers sit at the bin centres, moved side by side by up to ``dodge / 2`` of the bin width when there are
    several series.
    """
    if not 0.0 <= dodge < 1.0:
        raise ConfigError(f"dodge={dodge!r} must be a fraction of the bin width in [0, 1), e.g. 0.3")
    series = {}
    shifts = np.linspace(-dodge / 2, dodge / 2, len(items)) if len(items) > 1 else np.zeros(1)
    for i, (name, table) in enumerate(items):
        values = getattr(table, field)
        ok = np.isfinite(values)
        lo, hi = table.edges[:-1][ok], table.edges[1:][ok]
        x = table.centres[ok] * (hi / lo) ** shifts[i] if log_x else table.centres[ok] + (hi - lo) * shifts[i]
        xerr = np.vstack((x - lo, hi - x))
        series[name] = ax.errorbar(
            x,
            values[ok],
            xerr=xerr,
            yerr=_interval_err(table, field, ok),
            marker=markers[i % len(markers)],
            markersize=6,
            linestyle="none",
            capsize=2,
            label=name,
        )
    return series


def _interval_err(table: ResponseTable, field: str, ok: np.ndarray) -> np.ndarray | None:
    """``[2, n]`` distances from the values to the ends of their bootstrap interval (0 where a bin has none);
    None when the table has no interval at all."""
    lo, hi = getattr(table, f"{field}_lo")[ok], getattr(table, f"{field}_hi")[ok]
    if not (np.isfinite(lo).any() or np.isfinite(hi).any()):
        return None
    values = getattr(table, field)[ok]
    return np.vstack((np.nan_to_num(values - lo, nan=0.0), np.nan_to_num(hi - values, nan=0.0))).clip(min=0.0)


def _finish(ax: Axes, items: list[tuple[str, ResponseTable]], log_x: bool) -> None:
    """Energy axis of a comparison: scale, label and the full range of the bins."""
    if log_x:
        ax.set_xscale("log")
    ax.set_xlim(min(t.edges[0] for _, t in items), max(t.edges[-1] for _, t in items))
    ax.set_xlabel(E_TRUE_LABEL)


def _set_headroom(ax: Axes, values: np.ndarray, headroom: float, *, floor: float | None = None) -> None:
    """y limits around the finite ``values`` with ``headroom`` of the axes height free above them."""
    if not 0.0 <= headroom < 1.0:
        raise ConfigError(f"headroom={headroom!r} must be a fraction of the axes height in [0, 1), e.g. 0.35")
    values = values[np.isfinite(values)]
    if values.size == 0:
        return
    lo, hi = float(values.min()), float(values.max())
    pad = 0.05 * (hi - lo) if hi > lo else 0.05 * max(abs(hi), 1.0)
    bottom = floor if floor is not None else lo - pad
    top_of_data = hi + pad
    top = top_of_data + (top_of_data - bottom) * headroom / (1.0 - headroom)
    ax.set_ylim(bottom, top)
