"""Baseline calibrations to compare the networks with: the EM scale and an LCW-like cell weighting.

:func:`em_scale` is the default calibration: the sum of the cells' EM-scale energies, ``e_em``.

:class:`LCWCalibration` is modelled on the ATLAS local hadronic cell weighting (LCW) of topo-clusters:

1. *Classification.* Electromagnetic showers are dense and shallow, hadronic ones diluted and deep. Each cluster
   gets a probability ``p_EM`` of being electromagnetic from two cluster moments: the log of its energy density
   ``⟨ρ⟩`` (the energy-weighted mean, over its positive-energy cells, of the cell density
   ``ρ = E / (Δη · Δφ · r²)``, in GeV/m²) and its shower depth (the energy-weighted mean radius ``r`` of the same
   cells, m), binned in 2D, with the log of the cluster's EM-scale energy as a third axis. ``p_EM`` in a bin is the
   fraction of π0 clusters among the π0 and π± training clusters in it, the two classes weighted to equal totals
   (equal priors). As in ATLAS the table is filled from single π0 and single π± samples.
2. *Hadronic weights.* A positive-energy cell of a hadronic cluster gets the weight
   ``w(sampling, log ρ_cell, log E_cluster)``: the ratio ``Σ e_true / Σ e`` of true (calibration-hit) to EM-scale
   energy over the positive-energy cells of the π± training clusters in its bin. As in ATLAS, dense cells
   (EM-like sub-showers) get weights near one and diluted ones larger weights; at μ = 200 the most diluted cells
   are mostly pile-up and get weights below one.
3. *Prediction.* Every positive-energy cell gets ``p_EM · 1 + (1 − p_EM) · w_had``, cells with ``E ≤ 0`` keep
   weight one, and the calibrated energy is the weighted sum of the stored cells plus the EM-scale energy of the
   cells that were not stored (``e_em − Σ stored e``, when positive) times the cluster's mean applied weight.

Differences from ATLAS LCW:

* The target is the calibration-hit energy inside the cluster (``e_true``): there are no out-of-cluster or
  dead-material corrections.
* Cells with ``E ≤ 0`` keep weight one, so their share of the cluster's true energy, and their negative pile-up
  noise, would otherwise stay uncorrected while the weights remove the positive noise of the positive cells: at
  μ = 200 this pulls the response of low-energy π± clusters below even the EM scale. By default
  (``absorb_negative=True`` in :meth:`LCWCalibration.fit`) the hadronic weights therefore also absorb that deficit:
  in each training cluster, ``Σ (e_true − e)`` over its stored ``E ≤ 0`` cells is shared among its positive cells in
  proportion to their energy and added to their true energy before the ratio is taken.
* The tables are not binned in |η| (the barrel samples used here span |η| < 0.8); the depth is the mean cell
  radius rather than the distance of the shower centre from the calorimeter front along the shower axis; the
  density is per transverse area rather than per volume; sparse bins are smoothed by shrinking them towards
  coarser tables (see :meth:`LCWCalibration.fit`), and the tables are interpolated linearly in log energy between
  bin centres (the other axes are looked up bin by bin).

Only stored cells enter the moments and the weights: the cells beyond ``N`` of a truncated cluster are the least
energetic ones and are counted through ``e_em`` alone.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from calohls.config import LCWConfig, validation_message
from calohls.data.schema import PARTICLES, ClusterBatch, cell_field_index
from calohls.errors import ConfigError, DataError, InputFileError, SchemaError
from calohls.files import write_text_atomic

__all__ = ["LCW_FORMAT", "LCW_FORMAT_VERSION", "LCWCalibration", "cluster_moments", "em_scale"]

log = logging.getLogger(__name__)

#: ``format`` key of a saved :class:`LCWCalibration` and its version; bump the version on incompatible changes.
LCW_FORMAT = "calohls.lcw"
LCW_FORMAT_VERSION = 1

#: PDG ids of the electromagnetic (π0) and hadronic (π±) training classes.
_EM_PDG = (PARTICLES["pi0"],)
_HAD_PDG = (PARTICLES["pi+"], PARTICLES["pi-"])

#: Clusters per block of the vectorised passes; bounds the temporary arrays.
_BLOCK = 16384

#: Quantiles of the training values that the bin edges span; values beyond fall in the outer bins.
_EDGE_QUANTILES = (0.005, 0.995)

#: Floor of the cluster energies whose log is taken (GeV); lower or negative energies count as this.
_E_FLOOR = 1e-3

#: π± training clusters whose cells set the ρ_cell bin edges (a spread-out subsample of larger training sets).
_EDGE_SAMPLE = 20000
_LOG_E_FLOOR = math.log10(_E_FLOOR)

#: Largest ATLAS sampling number a weight table may hold (CaloSampling numbers are far below this).
_MAX_SAMPLING = 1023

_COL = {name: cell_field_index(name) for name in ("e", "e_true", "sampling", "r", "deta", "dphi")}


def em_scale(batch: ClusterBatch) -> np.ndarray:
    """The default calibration: the EM-scale cluster energy ``e_em`` (GeV), as float64."""
    return np.asarray(batch["e_em"], dtype=np.float64)


# -- cells and cluster moments -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Cells:
    """The positive-energy stored cells of a block of clusters, flattened.

    ``cluster`` is the index of each cell's cluster within the block; ``stored_e`` the sum of the EM-scale energy
    over all stored cells of each cluster (positive or not).
    """

    start: int
    size: int
    cluster: np.ndarray
    e: np.ndarray
    rho: np.ndarray
    log_rho: np.ndarray
    r: np.ndarray
    sampling: np.ndarray
    e_true: np.ndarray | None
    stored_e: np.ndarray
    negative_deficit: np.ndarray | None


def _cell_blocks(batch: ClusterBatch, *, keep: np.ndarray | None = None, truth: bool = False) -> Iterator[_Cells]:
    """The positive-energy cells of ``batch`` in blocks of clusters; with ``truth`` also their ``e_true``.

    With ``keep`` (boolean, one per cluster) only the cells of the kept clusters are returned.
    """
    n_slots, n_fields = batch.cells.shape[1:]
    rows = batch.cells.reshape(-1, n_fields)  # a view for the usual contiguous cells
    for start in range(0, len(batch), _BLOCK):
        stop = min(start + _BLOCK, len(batch))
        n_cells = batch.n_cells[start:stop]
        width = int(n_cells.max())
        cells = batch.cells[start:stop, :width]
        mask = np.arange(width)[None, :] < n_cells[:, None]
        e_all = np.where(mask, cells[:, :, _COL["e"]], np.float32(0.0))
        positive = e_all > 0
        pos = positive if keep is None else positive & keep[start:stop, None]
        cluster, slot = np.nonzero(pos)
        sub = np.take(rows, (start + cluster) * n_slots + slot, axis=0)  # [P, F] float32
        e = sub[:, _COL["e"]].astype(np.float64)
        r = sub[:, _COL["r"]]
        area = (sub[:, _COL["deta"]] * sub[:, _COL["dphi"]] * r * r).astype(np.float64)
        bad = ~(area > 0)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{int(bad.sum())} positive-energy cells have Δη·Δφ·r² <= 0 (first: cluster "
                f"{start + int(cluster[first])}, cell {int(slot[first])}); the cell density needs positive "
                "cell sizes deta, dphi and radius r"
            )
        rho = e / area
        e_true = deficit = None
        if truth:
            e_true = sub[:, _COL["e_true"]].astype(np.float64)
            t_all = cells[:, :, _COL["e_true"]].astype(np.float64)
            deficit = np.where(mask & ~positive, t_all - e_all, 0.0).sum(axis=1)
        yield _Cells(
            start=start,
            size=stop - start,
            cluster=cluster,
            e=e,
            rho=rho,
            log_rho=np.log10(rho),
            r=r.astype(np.float64),
            sampling=np.rint(sub[:, _COL["sampling"]]).astype(np.int64),
            e_true=e_true,
            stored_e=e_all.sum(axis=1, dtype=np.float64),
            negative_deficit=deficit,
        )


def _moments(c: _Cells) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """log10 ⟨ρ⟩, depth and the positive energy of each cluster of a block (NaN moments without positive cells)."""
    total = np.bincount(c.cluster, weights=c.e, minlength=c.size)
    rho_sum = np.bincount(c.cluster, weights=c.e * c.rho, minlength=c.size)
    r_sum = np.bincount(c.cluster, weights=c.e * c.r, minlength=c.size)
    some = total > 0
    log_rho = np.full(c.size, np.nan)
    depth = np.full(c.size, np.nan)
    log_rho[some] = np.log10(rho_sum[some] / total[some])
    depth[some] = r_sum[some] / total[some]
    return log_rho, depth, total


def _log_energy(e: np.ndarray) -> np.ndarray:
    return np.log10(np.maximum(np.asarray(e, dtype=np.float64), _E_FLOOR))


def cluster_moments(batch: ClusterBatch) -> dict[str, np.ndarray]:
    """The cluster moments of the classification, one float64 value per cluster.

    Returns:
        ``log_rho``: log10 of the energy-weighted mean cell density ``⟨ρ⟩`` (GeV/m²) over the positive-energy
        stored cells; ``depth``: their energy-weighted mean radius (m); ``log_e``: log10 of ``e_em`` (GeV),
        floored at 1 MeV. ``log_rho`` and ``depth`` are NaN for a cluster without a positive stored cell.

    Raises:
        DataError: a positive-energy cell has a non-positive ``Δη · Δφ · r²``.
    """
    n = len(batch)
    log_rho = np.full(n, np.nan)
    depth = np.full(n, np.nan)
    for c in _cell_blocks(batch):
        stop = c.start + c.size
        log_rho[c.start : stop], depth[c.start : stop], _ = _moments(c)
    return {"log_rho": log_rho, "depth": depth, "log_e": _log_energy(batch["e_em"])}


# -- binning -------------------------------------------------------------------------------------------------


def _axis(edges: np.ndarray) -> tuple[float, float, int]:
    n = edges.size - 1
    return float(edges[0]), float(edges[-1] - edges[0]) / n, n


def _bin_index(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin of each value on equally spaced ``edges``; values beyond the edges and NaN go to the outer bins."""
    lo, width, n = _axis(edges)
    # fmax/fmin drop NaN in favour of the other operand: NaN and -inf go to bin 0, +inf to the last bin.
    return np.fmin(np.fmax((x - lo) / width, 0.0), n - 1.0).astype(np.intp)


def _centre_weights(x: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Neighbouring bins ``k0``, ``k1`` and the fraction ``t`` of ``k1`` for linear interpolation between centres.

    Flat beyond the first and last bin centres.
    """
    lo, width, n = _axis(edges)
    f = np.fmin(np.fmax((x - lo) / width - 0.5, 0.0), n - 1.0)
    k0 = np.minimum(f.astype(np.intp), max(n - 2, 0))
    k1 = np.minimum(k0 + 1, n - 1)
    return k0, k1, f - k0


def _edges(values: np.ndarray, n: int) -> np.ndarray:
    """``n + 1`` equally spaced edges spanning the central quantiles of the finite ``values``."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        return np.linspace(0.0, 1.0, n + 1)
    lo, hi = (float(v) for v in np.quantile(values, _EDGE_QUANTILES))
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, n + 1)


def _shrink(num: np.ndarray, den: np.ndarray, count: np.ndarray, parent: np.ndarray, k: float) -> np.ndarray:
    """``num / den`` blended with ``parent`` as ``(count · num/den + k · parent) / (count + k)``; parent if empty."""
    filled = den > 0
    ratio = np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=filled)
    count = np.where(filled, count, 0.0)
    total = count + k
    blended = np.divide(
        count * ratio + k * parent, total, out=np.zeros(np.broadcast(total, parent).shape), where=total > 0
    )
    return np.where(total > 0, blended, parent)


# -- the calibration -----------------------------------------------------------------------------------------


def _read_only(a: Any) -> np.ndarray:
    a = np.array(a, dtype=np.float64)
    a.setflags(write=False)
    return a


def _lcw_config(config: LCWConfig | None, options: Mapping[str, Any]) -> LCWConfig:
    """``config`` (default: the defaults) with ``options`` over it; ConfigError with one line if invalid."""
    base = config.model_dump() if config is not None else {}
    try:
        return LCWConfig.model_validate({**base, **options})
    except ValidationError as err:
        raise ConfigError(validation_message(err, LCWConfig)) from None


def _training_classes(batch: ClusterBatch) -> tuple[np.ndarray, np.ndarray]:
    """Which clusters of ``batch`` are π0 and which π±; DataError unless there are both."""
    if len(batch) == 0:
        raise DataError("cannot fit the LCW calibration on an empty batch; give it π0 and π± training clusters")
    particle = batch["particle"]
    is_em = np.isin(particle, _EM_PDG)
    is_had = np.isin(particle, _HAD_PDG)
    n_em, n_had = int(is_em.sum()), int(is_had.sum())
    if n_em == 0 or n_had == 0:
        missing = " and ".join(name for name, c in (("π0 (PDG 111)", n_em), ("π± (PDG ±211)", n_had)) if not c)
        raise DataError(
            f"the LCW calibration needs both π0 and π± training clusters; found {n_em} π0 and {n_had} π± "
            f"among {len(batch)} clusters, so no {missing}; simulate or select both particle types"
        )
    if len(batch) > n_em + n_had:
        log.info("LCW fit ignores %d clusters of particles other than π0 and π±", len(batch) - n_em - n_had)
    return is_em, is_had


_EDGE_NAMES = ("rho_edges", "depth_edges", "energy_edges", "cell_rho_edges", "weight_energy_edges")


@dataclass(frozen=True, eq=False)
class LCWCalibration:
    """An LCW-like calibration: a π0/π± classification table and hadronic cell weights (see the module docstring).

    Build it with :meth:`fit`, apply it with :meth:`predict`, store it with :meth:`save` / :meth:`load`. All bin
    edges are equally spaced; values beyond them fall in the outer bins. Arrays are read-only float64.

    Attributes:
        rho_edges: Edges in log10 ⟨ρ⟩ (GeV/m²) of the classification.
        depth_edges: Edges in cluster depth (energy-weighted mean cell radius, m) of the classification.
        energy_edges: Edges in log10 ``e_em`` (GeV) of the classification.
        p_em: ``[rho, depth, energy]`` probability that a cluster is electromagnetic.
        samplings: ATLAS sampling numbers of the rows of ``weights`` (those seen in training), ascending.
        cell_rho_edges: Edges in log10 ρ_cell (GeV/m²) of the hadronic weights.
        weight_energy_edges: Edges in log10 ``e_em`` of the cluster (GeV) of the hadronic weights.
        weights: ``[sampling, rho, energy]`` hadronic cell weights, within ``weight_range``.
        weight_range: Lowest and highest hadronic weight.
        training: What the calibration was fitted on and how (counts and options), for the record.
    """

    rho_edges: np.ndarray
    depth_edges: np.ndarray
    energy_edges: np.ndarray
    p_em: np.ndarray
    samplings: tuple[int, ...]
    cell_rho_edges: np.ndarray
    weight_energy_edges: np.ndarray
    weights: np.ndarray
    weight_range: tuple[float, float] = (0.5, 3.0)
    training: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        for name in _EDGE_NAMES:
            edges = _read_only(getattr(self, name))
            ok = edges.ndim == 1 and edges.shape[0] >= 2 and np.isfinite(edges).all()
            step = np.diff(edges) if ok else np.zeros(0)
            if not ok or (step <= 0).any() or not np.allclose(step, step.mean(), rtol=1e-6, atol=0.0):
                raise DataError(f"{name} must hold at least two finite, equally spaced, increasing edges")
            object.__setattr__(self, name, edges)
        samplings = tuple(int(s) for s in self.samplings)
        ordered = bool(samplings) and list(samplings) == sorted(set(samplings))
        if not ordered or samplings[0] < 0 or samplings[-1] > _MAX_SAMPLING:
            raise DataError(f"samplings must be distinct, ascending, in 0..{_MAX_SAMPLING}; got {list(samplings)}")
        object.__setattr__(self, "samplings", samplings)
        lo, hi = (float(x) for x in self.weight_range)
        if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
            raise DataError(f"weight_range={self.weight_range!r} must be two positive numbers, low <= high")
        object.__setattr__(self, "weight_range", (lo, hi))
        shapes = {
            "p_em": (self.rho_edges.size - 1, self.depth_edges.size - 1, self.energy_edges.size - 1),
            "weights": (len(samplings), self.cell_rho_edges.size - 1, self.weight_energy_edges.size - 1),
        }
        for name, shape in shapes.items():
            table = _read_only(getattr(self, name))
            if table.shape != shape:
                raise DataError(f"{name} has shape {table.shape}; its bin edges need {shape}")
            if not np.isfinite(table).all():
                raise DataError(f"{name} holds non-finite values; refit the calibration")
            object.__setattr__(self, name, table)
        if ((self.p_em < 0) | (self.p_em > 1)).any():
            raise DataError("p_em must lie in [0, 1]; refit the calibration")
        if ((self.weights < lo) | (self.weights > hi)).any():
            raise DataError(f"weights must lie in weight_range [{lo}, {hi}]; refit the calibration")
        object.__setattr__(self, "training", dict(self.training or {}))
        # Sampling number → row of `weights` (-1: not seen in training).
        row = np.full(samplings[-1] + 1, -1, np.intp)
        row[list(samplings)] = np.arange(len(samplings))
        object.__setattr__(self, "_row", row)

    # -- fitting ----------------------------------------------------------------------------------------------
    @classmethod
    def fit(cls, batch: ClusterBatch, config: LCWConfig | None = None, **options: Any) -> LCWCalibration:
        """Fit the classification and the hadronic weights on π0 and π± training clusters.

        Clusters of other particles in ``batch`` are ignored. Bin edges are equally spaced between the 0.5 % and
        99.5 % quantiles of the training values. Sparse bins are smoothed by shrinking them towards a coarser
        table: a bin with ``n`` entries and value ``v`` becomes ``(n · v + k · parent) / (n + k)``. For ``p_EM``
        the parent of a (ρ, depth, energy) bin is the (ρ, depth) bin over all energies, whose parent is 0.5, with
        ``k = prior_clusters`` (counted in equal-prior weighted clusters). For the hadronic weights the parent of
        a (sampling, ρ_cell, energy) bin is the (sampling, ρ_cell) bin over all energies, whose parent is the
        sampling's mean weight, whose parent is 1, with ``k = prior_cells`` cells. Weights are then clipped to
        ``weight_range``.

        Args:
            batch: Training clusters; needs π0 (PDG 111) and π± (PDG ±211) clusters.
            config: The options (:class:`~calohls.config.LCWConfig`: bins, weight range, priors,
                ``absorb_negative``); default: its defaults.
            **options: Options of :class:`~calohls.config.LCWConfig` given one by one, over ``config``.

        Returns:
            The fitted calibration.

        Raises:
            DataError: the batch is empty, lacks π0 or π± clusters, or has positive-energy cells without a
                positive size.
            ConfigError: an option is unknown or out of range.
        """
        opts = _lcw_config(config, options)
        is_em, is_had = _training_classes(batch)
        moments = cluster_moments(batch)
        use = (is_em | is_had) & np.isfinite(moments["log_rho"])
        rho_edges = _edges(moments["log_rho"][use], opts.rho_bins)
        depth_edges = _edges(moments["depth"][use], opts.depth_bins)
        energy_edges = _edges(moments["log_e"][use & (moments["log_e"] > _LOG_E_FLOOR)], opts.energy_bins)
        p_em = _fit_p_em(
            {k: v[use] for k, v in moments.items()},
            is_em[use],
            rho_edges,
            depth_edges,
            energy_edges,
            opts.prior_clusters,
        )

        samplings = _samplings(batch, is_em | is_had)
        sums = _weight_sums(batch, is_had, samplings, opts.cell_rho_bins, opts.weight_energy_bins, opts.absorb_negative)
        weights = _fit_weights(sums, opts.prior_cells, opts.weight_range)
        return cls(
            rho_edges=rho_edges,
            depth_edges=depth_edges,
            energy_edges=energy_edges,
            p_em=p_em,
            samplings=samplings,
            cell_rho_edges=sums["cell_rho_edges"],
            weight_energy_edges=sums["weight_energy_edges"],
            weights=weights,
            weight_range=opts.weight_range,
            training={
                "pi0_clusters": int(is_em.sum()),
                "pipm_clusters": int(is_had.sum()),
                "pipm_cells": int(sums["count"].sum()),
                "absorb_negative": opts.absorb_negative,
                "prior_clusters": opts.prior_clusters,
                "prior_cells": opts.prior_cells,
            },
        )

    # -- applying ---------------------------------------------------------------------------------------------
    def classify(self, batch: ClusterBatch) -> np.ndarray:
        """``p_EM`` of each cluster (float64); 0.5 for a cluster without a positive stored cell."""
        return self._p_em(cluster_moments(batch))

    def _p_em(self, moments: Mapping[str, np.ndarray]) -> np.ndarray:
        i = _bin_index(moments["log_rho"], self.rho_edges)
        j = _bin_index(moments["depth"], self.depth_edges)
        k0, k1, t = _centre_weights(moments["log_e"], self.energy_edges)
        p = (1.0 - t) * self.p_em[i, j, k0] + t * self.p_em[i, j, k1]
        return np.where(np.isfinite(moments["log_rho"]), p, 0.5)

    def _sampling_rows(self, sampling: np.ndarray) -> np.ndarray:
        """Row of ``weights`` of each sampling number; -1 where not seen in training."""
        row: np.ndarray = self._row  # type: ignore[attr-defined]
        inside = (sampling >= 0) & (sampling < row.size)
        return np.where(inside, row[np.where(inside, sampling, 0)], -1)

    def predict(self, batch: ClusterBatch) -> np.ndarray:
        """The LCW-calibrated energy of each cluster (GeV, float64).

        Positive-energy cells of samplings not seen in training get hadronic weight 1; a warning is logged with
        their counts.

        Raises:
            DataError: a positive-energy cell has a non-positive ``Δη · Δφ · r²``.
        """
        n = len(batch)
        out = np.empty(n)
        e_em = np.asarray(batch["e_em"], dtype=np.float64)
        log_e = _log_energy(e_em)
        n_rho = self.cell_rho_edges.size - 1
        n_energy = self.weight_energy_edges.size - 1
        flat_weights = self.weights.reshape(-1)
        unknown: dict[int, int] = {}
        for c in _cell_blocks(batch):
            stop = c.start + c.size
            log_rho, depth, pos_sum = _moments(c)
            p = self._p_em({"log_rho": log_rho, "depth": depth, "log_e": log_e[c.start : stop]})

            row = self._sampling_rows(c.sampling)
            known = row >= 0
            if not known.all():
                values, counts = np.unique(c.sampling[~known], return_counts=True)
                for v, k in zip(values.tolist(), counts.tolist(), strict=True):
                    unknown[v] = unknown.get(v, 0) + k
            k0, k1, t = _centre_weights(log_e[c.start : stop], self.weight_energy_edges)
            base = (np.maximum(row, 0) * n_rho + _bin_index(c.log_rho, self.cell_rho_edges)) * n_energy
            t_cell = t[c.cluster]
            w_had = (1.0 - t_cell) * flat_weights[base + k0[c.cluster]] + t_cell * flat_weights[base + k1[c.cluster]]
            w_had = np.where(known, w_had, 1.0)
            p_cell = p[c.cluster]
            applied = p_cell + (1.0 - p_cell) * w_had

            weighted_pos = np.bincount(c.cluster, weights=applied * c.e, minlength=c.size)
            mean_w = np.divide(weighted_pos, pos_sum, out=np.ones(c.size), where=pos_sum > 0)
            # Non-positive stored cells keep weight 1; unstored energy takes the mean weight when positive.
            rest = e_em[c.start : stop] - c.stored_e
            out[c.start : stop] = weighted_pos + (c.stored_e - pos_sum) + np.where(rest > 0, mean_w, 1.0) * rest
        if unknown:
            listing = ", ".join(f"{s} ({k} cells)" for s, k in sorted(unknown.items()))
            log.warning(
                "positive-energy cells of samplings not seen in training get hadronic weight 1: %s; fit the "
                "calibration on data that covers them",
                listing,
            )
        return out

    # -- persistence ------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the calibration (plain lists and numbers); :meth:`from_dict` reads it back."""
        return {
            "format": LCW_FORMAT,
            "version": LCW_FORMAT_VERSION,
            "classification": {
                "rho_edges": self.rho_edges.tolist(),
                "depth_edges": self.depth_edges.tolist(),
                "energy_edges": self.energy_edges.tolist(),
                "p_em": self.p_em.tolist(),
            },
            "hadronic_weights": {
                "samplings": list(self.samplings),
                "cell_rho_edges": self.cell_rho_edges.tolist(),
                "energy_edges": self.weight_energy_edges.tolist(),
                "weights": self.weights.tolist(),
                "weight_range": list(self.weight_range),
            },
            "training": dict(self.training or {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LCWCalibration:
        """The calibration from :meth:`to_dict` output.

        Raises:
            DataError: the dict is not a saved LCW calibration of a readable version, or its tables are invalid.
        """
        if not isinstance(data, Mapping) or data.get("format") != LCW_FORMAT:
            found = data.get("format") if isinstance(data, Mapping) else type(data).__name__
            raise DataError(f"not an LCW calibration: format {found!r}, expected {LCW_FORMAT!r}")
        if data.get("version") != LCW_FORMAT_VERSION:
            raise DataError(
                f"LCW calibration version {data.get('version')!r} is not readable (this calohls reads version "
                f"{LCW_FORMAT_VERSION}); refit it"
            )
        try:
            c = data["classification"]
            h = data["hadronic_weights"]
            return cls(
                rho_edges=c["rho_edges"],
                depth_edges=c["depth_edges"],
                energy_edges=c["energy_edges"],
                p_em=c["p_em"],
                samplings=tuple(h["samplings"]),
                cell_rho_edges=h["cell_rho_edges"],
                weight_energy_edges=h["energy_edges"],
                weights=h["weights"],
                weight_range=tuple(h["weight_range"]),
                training=data.get("training") or {},
            )
        except DataError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"LCW calibration lacks or mangles a field ({exc.__class__.__name__}: {exc})") from None

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the calibration as JSON, atomically: to a temporary sibling first, renamed onto ``path``.

        An existing file at ``path`` is replaced; the parent folder is created.

        Raises:
            ConfigError: ``path`` is a directory.
        """
        return write_text_atomic(path, json.dumps(self.to_dict(), indent=1), overwrite=True)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LCWCalibration:
        """Read a calibration written by :meth:`save`.

        Raises:
            InputFileError: the file is missing, unreadable or not JSON.
            SchemaError: the JSON is not a valid LCW calibration.
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputFileError(f"cannot read the LCW calibration {path} ({exc}); write it with save()") from None
        try:
            return cls.from_dict(data)
        except DataError as exc:
            raise SchemaError(f"{path}: {exc}") from None


# -- fitting helpers -----------------------------------------------------------------------------------------


def _fit_p_em(
    moments: Mapping[str, np.ndarray],
    is_em: np.ndarray,
    rho_edges: np.ndarray,
    depth_edges: np.ndarray,
    energy_edges: np.ndarray,
    k: float,
) -> np.ndarray:
    """π0 fraction per (ρ, depth, energy) bin with equal priors, shrunk towards the (ρ, depth) table and 0.5."""
    shape = (rho_edges.size - 1, depth_edges.size - 1, energy_edges.size - 1)
    flat = np.ravel_multi_index(
        (
            _bin_index(moments["log_rho"], rho_edges),
            _bin_index(moments["depth"], depth_edges),
            _bin_index(moments["log_e"], energy_edges),
        ),
        shape,
    )
    em = is_em
    n_em = int(em.sum())
    n_had = em.size - n_em
    # Equal priors: each class weighs half of the clusters in all.
    weight = np.where(em, 0.5 * em.size / max(n_em, 1), 0.5 * em.size / max(n_had, 1))
    size = math.prod(shape)
    w_em = np.bincount(flat, weights=weight * em, minlength=size).reshape(shape)
    w_all = np.bincount(flat, weights=weight, minlength=size).reshape(shape)
    p2 = _shrink(w_em.sum(axis=2), w_all.sum(axis=2), w_all.sum(axis=2), np.full(shape[:2], 0.5), k)
    p3 = _shrink(w_em, w_all, w_all, p2[:, :, None], k)
    return np.clip(p3, 0.0, 1.0)


def _samplings(batch: ClusterBatch, keep: np.ndarray) -> tuple[int, ...]:
    """The sampling numbers of the stored cells of the kept clusters of ``batch``."""
    values = np.rint(batch.cells[:, :, _COL["sampling"]][batch.mask & keep[:, None]]).astype(np.int64)
    found = np.unique(values)
    bad = found[(found < 0) | (found > _MAX_SAMPLING)]
    if bad.size:
        raise DataError(f"cell sampling numbers {bad.tolist()} are not ATLAS samplings (0..{_MAX_SAMPLING})")
    return tuple(int(s) for s in found)


def _weight_sums(
    batch: ClusterBatch,
    is_had: np.ndarray,
    samplings: tuple[int, ...],
    cell_rho_bins: int,
    energy_bins: int,
    absorb_negative: bool,
) -> dict[str, np.ndarray]:
    """Σ e, Σ target energy and cell counts of the positive π± cells per (sampling, ρ_cell, energy) bin."""
    row = np.full(samplings[-1] + 1, -1, np.intp)
    row[list(samplings)] = np.arange(len(samplings))
    log_e = _log_energy(batch["e_em"])
    energy_edges = _edges(log_e[is_had & (log_e > _LOG_E_FLOOR)], energy_bins)
    # The ρ_cell edges from the cells of at most about _EDGE_SAMPLE evenly spread π± clusters.
    stride = max(1, int(is_had.sum()) // _EDGE_SAMPLE)
    sample = is_had & (np.cumsum(is_had) % stride == 0)
    sample_rho = [c.log_rho for c in _cell_blocks(batch, keep=sample)]
    cell_rho_edges = _edges(np.concatenate(sample_rho), cell_rho_bins)
    blocks = _cell_blocks(batch, keep=is_had, truth=True)
    shape = (len(samplings), cell_rho_bins, energy_bins)
    size = math.prod(shape)
    sum_e, sum_t, count = np.zeros(size), np.zeros(size), np.zeros(size)
    for c in blocks:
        cluster_e = log_e[c.start : c.start + c.size]
        flat = np.ravel_multi_index(
            (
                row[c.sampling],
                _bin_index(c.log_rho, cell_rho_edges),
                _bin_index(cluster_e, energy_edges)[c.cluster],
            ),
            shape,
        )
        target = c.e_true
        if absorb_negative:
            pos_sum = np.bincount(c.cluster, weights=c.e, minlength=c.size)
            share = np.divide(c.negative_deficit, pos_sum, out=np.zeros(c.size), where=pos_sum > 0)
            target = target + c.e * share[c.cluster]
        sum_e += np.bincount(flat, weights=c.e, minlength=size)
        sum_t += np.bincount(flat, weights=target, minlength=size)
        count += np.bincount(flat, minlength=size)
    return {
        "sum_e": sum_e.reshape(shape),
        "sum_t": sum_t.reshape(shape),
        "count": count.reshape(shape),
        "cell_rho_edges": cell_rho_edges,
        "weight_energy_edges": energy_edges,
    }


def _fit_weights(sums: Mapping[str, np.ndarray], k: float, weight_range: tuple[float, float]) -> np.ndarray:
    """Σ target / Σ e per bin, shrunk towards the (sampling, ρ_cell) table, the sampling mean and 1; clipped."""
    e, t, n = sums["sum_e"], sums["sum_t"], sums["count"]
    layer = _shrink(t.sum(axis=(1, 2)), e.sum(axis=(1, 2)), n.sum(axis=(1, 2)), np.ones(e.shape[0]), k)
    layer_rho = _shrink(t.sum(axis=2), e.sum(axis=2), n.sum(axis=2), layer[:, None], k)
    full = _shrink(t, e, n, layer_rho[:, :, None], k)
    return np.clip(full, *weight_range)
