"""Energy response and resolution in bins of true energy.

The response of a cluster is ``R = E_pred / E_true``. In each bin of ``E_true`` (logarithmic bins, see
:func:`log_bins`) :func:`binned_response` gives the median of ``R`` and a pair of quantiles, by default the
16 % and 84 % ones, and the resolution ``(q_hi - q_lo) / median``, written ``IQR(16–84%)/median`` in
labels. The 25–75 % pair (the interquartile range proper) is available as ``QUANTILE_PAIRS["25-75"]``; the
pair used is stored in every :class:`ResponseTable` so that plots and tables can say which one they show.

Quantiles follow :func:`numpy.quantile` with its default (linear interpolation) method.

Uncertainties: with ``bootstrap=B`` (default 200) the clusters of each bin are resampled with replacement ``B``
times (a stratified bootstrap: each bin keeps its count), the median and the resolution are recomputed on every
resample, and the 16 % and 84 % quantiles of those ``B`` values give the 68 % interval (``median_lo``,
``median_hi``, ``resolution_lo``, ``resolution_hi``; ``median_err`` and ``resolution_err`` are the half-widths).
The resamples are drawn from ``numpy.random.default_rng(seed)``, so the same inputs and seed give the same
intervals. ``bootstrap=0`` turns this off (the interval fields hold NaN). The cost does not grow with the number of
clusters (see ``_bootstrap``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from calohls.errors import ConfigError, DataError, NonFiniteError

__all__ = [
    "DEFAULT_BOOTSTRAP",
    "DEFAULT_QUANTILES",
    "INTERVAL",
    "QUANTILE_PAIRS",
    "ResponseTable",
    "binned_response",
    "log_bins",
    "resolution_label",
    "summarize_response",
]

#: Named quantile pairs of the resolution: ``"16-84"`` (±1σ of a Gaussian), ``"25-75"`` (interquartile range).
QUANTILE_PAIRS: dict[str, tuple[float, float]] = {"16-84": (0.16, 0.84), "25-75": (0.25, 0.75)}

#: The quantile pair used unless another is asked for.
DEFAULT_QUANTILES: tuple[float, float] = QUANTILE_PAIRS["16-84"]

#: Bootstrap resamples per bin unless another number is asked for (0: no uncertainties).
DEFAULT_BOOTSTRAP = 200

#: Quantiles of the bootstrap replicas that bound the 68 % interval.
INTERVAL: tuple[float, float] = (0.16, 0.84)


def log_bins(lo: float, hi: float, per_decade: int = 5) -> np.ndarray:
    """Bin edges equally spaced in ``log10`` from ``lo`` to ``hi``.

    Args:
        lo: Lower edge of the first bin (> 0).
        hi: Upper edge of the last bin (> lo).
        per_decade: Bins per factor of ten. When ``hi / lo`` is not a whole number of decades the bins are
            made slightly narrower so that the edges still start at ``lo`` and end at ``hi``.

    Returns:
        The ``n + 1`` edges of ``n = ceil(per_decade * log10(hi / lo))`` bins, as float64.

    Raises:
        ConfigError: a bound is not positive and finite, ``lo >= hi`` or ``per_decade < 1``.
    """
    if not (math.isfinite(lo) and math.isfinite(hi) and lo > 0 and hi > 0):
        raise ConfigError(f"bin range {lo}..{hi} must be positive and finite; choose energies in GeV above 0")
    if lo >= hi:
        raise ConfigError(f"bin range {lo}..{hi} is empty; the lower edge must be below the upper edge")
    if isinstance(per_decade, bool) or not isinstance(per_decade, int | np.integer) or per_decade < 1:
        raise ConfigError(f"per_decade={per_decade!r} must be a whole number of at least 1")
    # The tolerance keeps an exact number of decades (0.5..500 → 3) from gaining a bin to rounding.
    n = max(1, math.ceil(per_decade * math.log10(hi / lo) - 1e-9))
    return np.geomspace(lo, hi, n + 1)


def resolution_label(quantiles: Sequence[float] = DEFAULT_QUANTILES) -> str:
    """The label of the resolution for a quantile pair, e.g. ``"IQR(16–84%)/median"``."""
    lo, hi = quantiles
    return f"IQR({round(lo * 100, 6):g}–{round(hi * 100, 6):g}%)/median"


@dataclass(frozen=True, eq=False)
class ResponseTable:
    """Response ``R = E_pred / E_true`` per bin of ``E_true``; arrays have one entry per bin except ``edges``.

    Bins with fewer than ``min_count`` clusters hold NaN in ``median``, ``q_lo``, ``q_hi`` and ``resolution``
    (and their intervals); ``resolution`` is also NaN where the median is not positive.

    Attributes:
        edges: ``n + 1`` bin edges in ``E_true`` (GeV).
        centres: Geometric bin centres ``sqrt(lo * hi)``.
        counts: Clusters per bin (int64).
        median: Median response.
        q_lo: Lower quantile of the response (``quantiles[0]``).
        q_hi: Upper quantile of the response (``quantiles[1]``).
        resolution: ``(q_hi - q_lo) / median``.
        quantiles: The quantile pair used, e.g. ``(0.16, 0.84)``.
        min_count: Fewest clusters for a bin to get values.
        median_lo: Lower end of the 68 % bootstrap interval of the median (NaN without bootstrap).
        median_hi: Upper end of that interval.
        resolution_lo: Lower end of the 68 % bootstrap interval of the resolution.
        resolution_hi: Upper end of that interval.
        bootstrap: Resamples the intervals were computed from (0: none).
        resolution_replicas: ``[bootstrap, n]`` resolution of every resample and bin (NaN where a bin has no
            value), for statistics over bins such as the study's geometric mean; ``None`` without bootstrap.
            Not written by :meth:`to_dict`.
    """

    edges: np.ndarray
    centres: np.ndarray
    counts: np.ndarray
    median: np.ndarray
    q_lo: np.ndarray
    q_hi: np.ndarray
    resolution: np.ndarray
    quantiles: tuple[float, float] = DEFAULT_QUANTILES
    min_count: int = 10
    median_lo: np.ndarray | None = None
    median_hi: np.ndarray | None = None
    resolution_lo: np.ndarray | None = None
    resolution_hi: np.ndarray | None = None
    bootstrap: int = 0
    resolution_replicas: np.ndarray | None = None

    def __post_init__(self) -> None:
        for name in _INTERVAL_FIELDS:
            if getattr(self, name) is None:
                object.__setattr__(self, name, np.full(self.counts.shape[0], np.nan))
        for name in ("edges", "centres", "counts", "median", "q_lo", "q_hi", "resolution", *_INTERVAL_FIELDS):
            getattr(self, name).setflags(write=False)
        if self.resolution_replicas is not None:
            self.resolution_replicas.setflags(write=False)

    @property
    def median_err(self) -> np.ndarray:
        """Half-width of the 68 % bootstrap interval of the median (NaN without bootstrap)."""
        return 0.5 * (self.median_hi - self.median_lo)

    @property
    def resolution_err(self) -> np.ndarray:
        """Half-width of the 68 % bootstrap interval of the resolution (NaN without bootstrap)."""
        return 0.5 * (self.resolution_hi - self.resolution_lo)

    @property
    def n_bins(self) -> int:
        """Number of bins."""
        return int(self.counts.shape[0])

    @property
    def resolution_label(self) -> str:
        """Label naming the quantile pair, e.g. ``"IQR(16–84%)/median"``."""
        return resolution_label(self.quantiles)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: lists of numbers, NaN written as ``None``."""

        def floats(a: np.ndarray) -> list[float | None]:
            return [float(x) if np.isfinite(x) else None for x in a]

        return {
            "quantiles": [float(q) for q in self.quantiles],
            "resolution_label": self.resolution_label,
            "min_count": int(self.min_count),
            "edges": floats(self.edges),
            "centres": floats(self.centres),
            "counts": [int(c) for c in self.counts],
            "median": floats(self.median),
            "q_lo": floats(self.q_lo),
            "q_hi": floats(self.q_hi),
            "resolution": floats(self.resolution),
            "bootstrap": int(self.bootstrap),
            "interval": list(INTERVAL),
            "median_lo": floats(self.median_lo),
            "median_hi": floats(self.median_hi),
            "median_err": floats(self.median_err),
            "resolution_lo": floats(self.resolution_lo),
            "resolution_hi": floats(self.resolution_hi),
            "resolution_err": floats(self.resolution_err),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ResponseTable:
        """The table :meth:`to_dict` wrote (``None`` read as NaN; no bootstrap replicas)."""

        def array(key: str) -> np.ndarray:
            return np.array([np.nan if x is None else x for x in data[key]], dtype=np.float64)

        return cls(
            edges=array("edges"),
            centres=array("centres"),
            counts=np.asarray(data["counts"], dtype=np.int64),
            median=array("median"),
            q_lo=array("q_lo"),
            q_hi=array("q_hi"),
            resolution=array("resolution"),
            quantiles=(float(data["quantiles"][0]), float(data["quantiles"][1])),
            min_count=int(data["min_count"]),
            median_lo=array("median_lo"),
            median_hi=array("median_hi"),
            resolution_lo=array("resolution_lo"),
            resolution_hi=array("resolution_hi"),
            bootstrap=int(data["bootstrap"]),
        )


_INTERVAL_FIELDS = ("median_lo", "median_hi", "resolution_lo", "resolution_hi")


def _as_values(e_true: Any, e_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    """Both energy arrays as 1-D float64 of equal length, all finite."""
    arrays = []
    for name, a in (("e_true", e_true), ("e_pred", e_pred)):
        a = np.asarray(a, dtype=np.float64)
        if a.ndim != 1:
            raise DataError(f"{name} has shape {a.shape}; pass one value per cluster as a 1-D array")
        bad = ~np.isfinite(a)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise NonFiniteError(
                f"non-finite {name}={a[i]} at cluster {i} ({int(bad.sum())} in all); "
                "remove or fix these clusters before computing the response"
            )
        arrays.append(a)
    if arrays[0].shape != arrays[1].shape:
        raise DataError(
            f"e_true has {arrays[0].shape[0]} values but e_pred has {arrays[1].shape[0]}; pass one of each per cluster"
        )
    return arrays[0], arrays[1]


def _check_options(bins: Any, quantiles: Sequence[float], min_count: int) -> tuple[np.ndarray, tuple[float, float]]:
    edges = np.asarray(bins, dtype=np.float64)
    if edges.ndim != 1 or edges.shape[0] < 2:
        raise ConfigError(f"bins has shape {edges.shape}; pass at least two bin edges as a 1-D array")
    if not (np.isfinite(edges).all() and (edges > 0).all() and (np.diff(edges) > 0).all()):
        raise ConfigError(
            f"bin edges {edges.tolist()} must be positive, finite and increasing; make them with log_bins()"
        )
    try:
        q_lo, q_hi = (float(q) for q in quantiles)
    except (TypeError, ValueError):
        raise ConfigError(f"quantiles={quantiles!r} must be a pair of numbers such as (0.16, 0.84)") from None
    if not 0.0 <= q_lo < q_hi <= 1.0:
        raise ConfigError(f"quantiles={quantiles!r} must satisfy 0 <= low < high <= 1, e.g. (0.16, 0.84)")
    if isinstance(min_count, bool) or not isinstance(min_count, int | np.integer) or min_count < 1:
        raise ConfigError(f"min_count={min_count!r} must be a whole number of at least 1")
    return edges, (q_lo, q_hi)


def _grouped_quantile(values: np.ndarray, starts: np.ndarray, counts: np.ndarray, q: float) -> np.ndarray:
    """Quantile ``q`` of each group of ``values`` (ascending within groups); every ``counts`` must be > 0.

    The same linear interpolation as :func:`numpy.quantile`'s default method, for all groups at once.
    """
    h = q * (counts - 1)
    below = np.floor(h).astype(np.intp)
    above = np.minimum(below + 1, counts - 1)
    a = values[starts + below]
    b = values[starts + above]
    return a + (b - a) * (h - below)


def _grouped_by_bin(
    e_true: np.ndarray, e_pred: np.ndarray, edges: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The responses inside the edges, sorted by bin and then by value; the count and the first index of each bin."""
    n_bins = edges.shape[0] - 1
    index = np.searchsorted(edges, e_true, side="right") - 1
    index[e_true == edges[-1]] = n_bins - 1
    inside = (index >= 0) & (index < n_bins)
    index = index[inside]
    response = e_pred[inside] / e_true[inside]

    order = np.lexsort((response, index))
    response = response[order]
    counts = np.bincount(index, minlength=n_bins).astype(np.int64)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    return response, counts, starts


def binned_response(
    e_true: Any,
    e_pred: Any,
    bins: Any,
    *,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
    min_count: int = 10,
    bootstrap: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
) -> ResponseTable:
    """Median response ``E_pred / E_true``, its quantiles and the resolution in bins of ``E_true``.

    Bins are ``[lo, hi)`` except the last, which also holds ``E_true == edges[-1]`` (as in
    :func:`numpy.histogram`); clusters outside the edges are not counted.

    Args:
        e_true: True energy per cluster (GeV), 1-D.
        e_pred: Predicted (calibrated) energy per cluster, same length.
        bins: Positive, increasing bin edges in ``E_true``, e.g. from :func:`log_bins`.
        quantiles: The low and high quantile of the resolution, e.g. :data:`QUANTILE_PAIRS` ``["25-75"]``.
        min_count: Bins with fewer clusters get NaN.
        bootstrap: Resamples of the 68 % intervals (see the module docstring); 0 computes none.
        seed: Seed of the resampling.

    Returns:
        The :class:`ResponseTable`.

    Raises:
        NonFiniteError: an input holds NaN or inf.
        DataError: the inputs are not 1-D arrays of equal length.
        ConfigError: the bins, quantiles, ``min_count``, ``bootstrap`` or ``seed`` are invalid.
    """
    e_true, e_pred = _as_values(e_true, e_pred)
    edges, pair = _check_options(bins, quantiles, min_count)
    _check_whole("bootstrap", bootstrap, 0)
    _check_whole("seed", seed, 0)
    n_bins = edges.shape[0] - 1
    response, counts, starts = _grouped_by_bin(e_true, e_pred, edges)

    filled = counts >= min_count
    stats = {}
    for name, q in (("q_lo", pair[0]), ("median", 0.5), ("q_hi", pair[1])):
        values = np.full(n_bins, np.nan)
        values[filled] = _grouped_quantile(response, starts[filled], counts[filled], q)
        stats[name] = values

    median = stats["median"]
    resolution = np.full(n_bins, np.nan)
    positive = median > 0  # False for NaN too
    resolution[positive] = (stats["q_hi"][positive] - stats["q_lo"][positive]) / median[positive]

    intervals: dict[str, Any] = {}
    if bootstrap:
        replicas = _bootstrap(response, starts, counts, filled, pair, int(bootstrap), int(seed))
        intervals = {
            "median_lo": _interval(replicas["median"])[0],
            "median_hi": _interval(replicas["median"])[1],
            "resolution_lo": _interval(replicas["resolution"])[0],
            "resolution_hi": _interval(replicas["resolution"])[1],
            "resolution_replicas": replicas["resolution"],
        }
    return ResponseTable(
        edges=edges,
        centres=np.sqrt(edges[:-1] * edges[1:]),
        counts=counts,
        median=median,
        q_lo=stats["q_lo"],
        q_hi=stats["q_hi"],
        resolution=resolution,
        quantiles=pair,
        min_count=int(min_count),
        bootstrap=int(bootstrap),
        **intervals,
    )


def _check_whole(name: str, value: Any, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < least:
        raise ConfigError(f"{name}={value!r} must be a whole number of at least {least}")


def _interval(replicas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The :data:`INTERVAL` quantiles over the replicas (axis 0) of each bin; NaN where a bin has no replica."""
    lo = np.full(replicas.shape[1], np.nan)
    hi = np.full(replicas.shape[1], np.nan)
    ok = np.isfinite(replicas).all(axis=0)
    if ok.any():
        lo[ok], hi[ok] = np.quantile(replicas[:, ok], INTERVAL, axis=0)
    return lo, hi


def _order_statistic_indices(rng: np.random.Generator, n: int, ranks: Sequence[int], size: int) -> list[np.ndarray]:
    """For ``size`` resamples of ``n`` indices drawn uniformly from ``0..n-1``: the index at each 0-based sorted
    position of ``ranks`` (ascending, distinct).

    The order statistics of ``n`` uniforms are drawn one after the other: ``U_(r)`` is ``Beta(r, n - r + 1)``, and
    given ``U_(r)`` the next one wanted, ``U_(s)``, is ``U_(r) + (1 − U_(r)) · Beta(s − r, n − s + 1)``.
    """
    u = np.zeros(size)
    previous = 0
    indices = []
    for k in ranks:
        r = k + 1  # 1-based rank
        u = u + (1.0 - u) * rng.beta(r - previous, n - r + 1, size=size)
        previous = r
        indices.append(np.minimum((u * n).astype(np.intp), n - 1))
    return indices


def _bootstrap(
    response: np.ndarray,
    starts: np.ndarray,
    counts: np.ndarray,
    filled: np.ndarray,
    pair: tuple[float, float],
    n_boot: int,
    seed: int,
) -> dict[str, np.ndarray]:
    """``[n_boot, n_bins]`` median and resolution of resamples of each filled bin (NaN elsewhere).

    A resample of ``n`` clusters draws ``n`` indices ``floor(n · U)`` with ``U`` uniform; as ``response`` is sorted
    within each bin, the k-th smallest value of the resample is ``values[floor(n · U_(k))]``, with ``U_(k)`` the
    k-th order statistic of ``n`` uniforms. Only the few order statistics the quantiles read (two per quantile,
    for :func:`numpy.quantile`'s interpolation) are drawn, jointly and exactly, from Beta distributions: the cost
    does not grow with ``n``.
    """
    rng = np.random.default_rng(seed)
    out = {name: np.full((n_boot, counts.size), np.nan) for name in ("median", "q_lo", "q_hi")}
    for b in np.flatnonzero(filled):
        n = int(counts[b])
        values = response[starts[b] : starts[b] + n]
        reads = {}
        for name, q in (("q_lo", pair[0]), ("median", 0.5), ("q_hi", pair[1])):
            h = q * (n - 1)
            below = math.floor(h)
            reads[name] = (below, min(below + 1, n - 1), h - below)
        ranks = sorted({k for below, above, _ in reads.values() for k in (below, above)})
        index = dict(zip(ranks, _order_statistic_indices(rng, n, ranks, n_boot), strict=True))
        for name, (below, above, t) in reads.items():
            lo, hi = values[index[below]], values[index[above]]
            out[name][:, b] = lo + (hi - lo) * t
    median = out["median"]
    resolution = np.full_like(median, np.nan)
    positive = median > 0
    resolution[positive] = (out["q_hi"][positive] - out["q_lo"][positive]) / median[positive]
    return {"median": median, "resolution": resolution}


def summarize_response(
    e_true: Any,
    e_pred: Any,
    bins: Any,
    groups: Mapping[str, Any],
    *,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
    min_count: int = 10,
    bootstrap: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
) -> dict[str, ResponseTable]:
    """:func:`binned_response` for each named group of clusters (e.g. one per particle type).

    Args:
        e_true: True energy per cluster (GeV), 1-D.
        e_pred: Predicted energy per cluster, same length.
        bins: Bin edges in ``E_true``.
        groups: Group name → boolean mask over the clusters (same length as ``e_true``).
        quantiles: The quantile pair of the resolution.
        min_count: Bins with fewer clusters get NaN.
        bootstrap: Resamples of the 68 % intervals; 0 computes none.
        seed: Seed of the resampling (the same for every group).

    Returns:
        Group name → :class:`ResponseTable`, in the order of ``groups``.

    Raises:
        DataError: a mask is not boolean or has the wrong length (and the errors of :func:`binned_response`).
    """
    e_true, e_pred = _as_values(e_true, e_pred)
    tables = {}
    for name, mask in groups.items():
        mask = np.asarray(mask)
        if mask.dtype != np.bool_ or mask.shape != e_true.shape:
            raise DataError(
                f"group {name!r} has a {mask.dtype} mask of shape {mask.shape}; "
                f"pass a boolean mask of shape {e_true.shape}, one entry per cluster"
            )
        tables[name] = binned_response(
            e_true[mask], e_pred[mask], bins, quantiles=quantiles, min_count=min_count, bootstrap=bootstrap, seed=seed
        )
    return tables
