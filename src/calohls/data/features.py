"""Per-cell network inputs: the N most energetic cells of each cluster, padded, normalised, with padding kept at zero.

Features of a real cell (in this order, see :data:`FEATURES`):

* ``real``: 1 for a real cell. The Φ network has no biases, so padding (all zeros) maps to exactly zero through every
  Φ layer and adds nothing to the sum over cells; this constant input gives real cells the bias they need.
* ``asinh_e``: asinh(E / 0.1 GeV): logarithmic for large |E|, linear around zero, defined for the negative energies
  that noise produces.
* ``e_100``: the EM-scale energy itself in units of 100 GeV (left unstandardised: its spread is dominated by rare hot
  cells, so standardising it would blow up the first layers), so the sum over cells can carry the energy scale.
* ``deta``, ``dphi``: cell position relative to the cluster barycentre, in units of 0.1.
* ``abs_eta``: |η| of the cell (the path length through the material grows as cosh η).
* ``r``: cell radius (depth), m.
* ``log_deta_cell``, ``log_dphi_cell``: log of the cell size (granularity).
* ``asinh_rho``: the cell's energy density asinh(ρ / 10 GeV m⁻²), ρ = E / (Δη Δφ r²) (what LCW classifies on).
* ``asinh_sig``: the cell's significance asinh(E / σ), σ its total (electronic ⊕ pile-up) noise: what topo-clustering
  and the ATLAS cluster moments judge a cell by, which the network would otherwise have to learn per layer.
* ``frac``: the cell's share of the cluster's EM-scale energy; ``log_e_cluster``, ``log_n_cells``: the cluster's
  log10 E_EM and log of its cell count, the same on every cell.
* ``s_<sampling>``: one-hot layer (the seven barrel samplings, and ``s_other`` for any other ATLAS sampling).

Continuous features are standardised with a mean and spread fitted on the real cells of the training clusters
(:class:`FeatureScaler`, saved with the model); padding stays exactly zero after scaling.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from calohls.data.schema import PARTICLES, SAMPLINGS, ClusterBatch
from calohls.errors import DataError, InputFileError
from calohls.files import write_text_atomic

__all__ = ["FEATURES", "FeatureScaler", "cell_features", "em_label", "energy_from_target", "target"]

_BARREL = tuple(SAMPLINGS.values())
FEATURES: tuple[str, ...] = (
    "real",
    "asinh_e",
    "e_100",
    "deta",
    "dphi",
    "abs_eta",
    "r",
    "log_deta_cell",
    "log_dphi_cell",
    "asinh_rho",
    "asinh_sig",
    "frac",
    "log_e_cluster",
    "log_n_cells",
    *(f"s_{name}" for name in SAMPLINGS),
    "s_other",
)
#: Features left unscaled: the constant, the linear energy and the one-hot layer.
_UNSCALED = np.array([f in ("real", "e_100") or f.startswith("s_") for f in FEATURES])
E_SCALE = 0.1  # GeV, the energy where asinh turns from linear to logarithmic
RHO_SCALE = 10.0  # GeV/m², the cell energy density where asinh turns from linear to logarithmic
SIGMA_FLOOR = 0.01  # GeV: a cell noise σ below this (none stored, or a noiseless simulation) counts as this


def _cell_area(cell: dict[str, np.ndarray]) -> np.ndarray:
    """Transverse area Δη · Δφ · r² of each cell (m², floored so that padding stays finite)."""
    return np.maximum(cell["deta"] * cell["dphi"] * cell["r"] ** 2, 1e-9)


def cell_features(batch: ClusterBatch, max_cells: int) -> np.ndarray:
    """Raw (unscaled) features ``[n, max_cells, len(FEATURES)]`` float32 of the ``max_cells`` most energetic cells.

    Cells of the record are sorted by descending energy, so these are its first ``max_cells`` cells; clusters with
    fewer cells are padded with zeros.
    """
    if max_cells < 1:
        raise DataError(f"max_cells={max_cells} must be at least 1")
    n, k = len(batch), min(max_cells, batch.max_cells)
    mask = batch.mask[:, :k]
    cell = {name: batch.cell(name)[:, :k] for name in ("e", "eta", "phi", "sampling", "r", "deta", "dphi", "sigma")}
    out = np.zeros((n, max_cells, len(FEATURES)), np.float32)
    dphi = (cell["phi"] - batch["phi"][:, None] + np.pi) % (2 * np.pi) - np.pi
    e_ref = _reference(batch["e_em"])
    cols = {
        "real": np.ones_like(cell["e"]),
        "asinh_e": np.arcsinh(cell["e"] / E_SCALE),
        "e_100": cell["e"] / 100.0,
        "deta": (cell["eta"] - batch["eta"][:, None]) * 10.0,
        "dphi": dphi * 10.0,
        "abs_eta": np.abs(cell["eta"]),
        "r": cell["r"],
        "log_deta_cell": np.log(np.maximum(cell["deta"], 1e-6)),
        "log_dphi_cell": np.log(np.maximum(cell["dphi"], 1e-6)),
        "asinh_rho": np.arcsinh(cell["e"] / _cell_area(cell) / RHO_SCALE),
        "asinh_sig": np.arcsinh(cell["e"] / np.maximum(cell["sigma"], SIGMA_FLOOR)),
        "frac": cell["e"] / e_ref[:, None],
        "log_e_cluster": np.broadcast_to(np.log10(e_ref)[:, None], cell["e"].shape),
        "log_n_cells": np.broadcast_to(np.log(np.maximum(batch["n_cells_total"], 1))[:, None], cell["e"].shape),
    }
    for j, name in enumerate(FEATURES):
        if name in cols:
            out[:, :k, j] = cols[name]
    sampling = cell["sampling"].astype(np.int64)
    for name, number in SAMPLINGS.items():
        out[:, :k, FEATURES.index(f"s_{name}")] = sampling == number
    out[:, :k, FEATURES.index("s_other")] = ~np.isin(sampling, _BARREL)
    out[:, :k] *= mask[:, :, None]
    return out


#: Regression targets: ``log_e`` = log10(E_true); ``log_ratio`` = log10(E_true / E_ref), the log of the calibration
#: factor, with E_ref = max(E_EM, :data:`E_REF_FLOOR`) (noise can make E_EM tiny or negative).
TARGETS = ("log_e", "log_ratio")
E_REF_FLOOR = 0.1  # GeV


def _reference(e_em: np.ndarray) -> np.ndarray:
    return np.maximum(np.asarray(e_em, np.float64), E_REF_FLOOR)


def target(e_true: np.ndarray, e_em: np.ndarray, kind: str = "log_e") -> np.ndarray:
    """Regression target of the clusters (see :data:`TARGETS`)."""
    e_true = np.asarray(e_true, np.float64)
    if np.any(e_true <= 0):
        raise DataError(f"e_true must be positive to take its log; found {e_true.min():.4g} GeV; drop such clusters")
    if kind == "log_e":
        return np.log10(e_true).astype(np.float32)
    if kind == "log_ratio":
        return np.log10(e_true / _reference(e_em)).astype(np.float32)
    raise DataError(f"unknown target {kind!r}; choose from {', '.join(TARGETS)}")


def em_label(particle: np.ndarray) -> np.ndarray:
    """The label of the auxiliary classification: 1 for electromagnetic particles (π0, γ), 0 for charged pions,
    0.5 (no information) for anything else."""
    particle = np.abs(np.asarray(particle))
    label = np.full(particle.shape, 0.5, np.float32)
    label[np.isin(particle, (PARTICLES["pi0"], PARTICLES["gamma"]))] = 1.0
    label[particle == PARTICLES["pi+"]] = 0.0
    return label


def check_em_scale(path: object, e_em: np.ndarray) -> None:
    """Refuse clusters whose EM-scale energies are mostly zero or negative: cell energies of the wrong sign (or
    pure noise) would train and evaluate into meaningless numbers (a median response below zero).

    Raises:
        DataError: fewer than half of the clusters have a positive ``e_em``.
    """
    e_em = np.asarray(e_em)
    if e_em.size and np.count_nonzero(e_em > 0) * 2 < e_em.size:
        share = 100 * np.count_nonzero(e_em <= 0) / e_em.size
        raise DataError(
            f"{path}: {share:.0f} % of the clusters have a zero or negative EM-scale energy e_em (median "
            f"{np.median(e_em):.3g} GeV); are the cell energies of the wrong sign or unit? fix the file (e.g. the "
            "scales of `calohls convert --branch-map`)"
        )


def energy_from_target(y: np.ndarray, e_em: np.ndarray, kind: str = "log_e") -> np.ndarray:
    """Energy (GeV) from a predicted target."""
    y = np.asarray(y, np.float64).reshape(-1)
    if kind == "log_e":
        return np.power(10.0, y)
    if kind == "log_ratio":
        return _reference(e_em) * np.power(10.0, y)
    raise DataError(f"unknown target {kind!r}; choose from {', '.join(TARGETS)}")


@dataclass(frozen=True)
class FeatureScaler:
    """Standardisation of the continuous features, fitted on training cells; padding stays zero."""

    max_cells: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    features: tuple[str, ...] = FEATURES
    source: str | None = field(default=None, compare=False)  # the features.json it was loaded from

    @classmethod
    def fit(cls, x: np.ndarray) -> FeatureScaler:
        """Mean and spread of each feature over the real cells (``real == 1``) of raw features ``x``."""
        real = x[..., 0] > 0
        if not real.any():
            raise DataError("no real cells to fit the feature scaling on; the training set is empty")
        cells = x[real].astype(np.float64)
        mean, std = cells.mean(0), cells.std(0)
        mean[_UNSCALED], std[_UNSCALED] = 0.0, 1.0
        std = np.where(std > 1e-6, std, 1.0)
        return cls(int(x.shape[1]), tuple(map(float, mean)), tuple(map(float, std)))

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Scaled features (a new array); padding rows stay zero."""
        if x.shape[1:] != (self.max_cells, len(self.features)):
            made = f"the feature scaling {self.source}" if self.source else "this feature scaling"
            raise DataError(
                f"features have shape {x.shape[1:]} (cells, features) and do not fit {made}, made for "
                f"{self.max_cells} cells × {len(self.features)} features; the run folder is "
                "inconsistent (an edited features.json or config.yaml?): re-run the training"
            )
        mean, std = np.asarray(self.mean, np.float32), np.asarray(self.std, np.float32)
        return ((x - mean) / std * (x[..., :1] > 0)).astype(np.float32)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the scaling as JSON (atomically)."""
        fields = {"max_cells": self.max_cells, "features": self.features, "mean": self.mean, "std": self.std}
        write_text_atomic(path, json.dumps(fields, indent=1))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FeatureScaler:
        try:
            d = json.loads(Path(path).read_text())
            scaler = cls(int(d["max_cells"]), tuple(d["mean"]), tuple(d["std"]), tuple(d["features"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputFileError(f"cannot read the feature scaling {path} ({exc}); re-run `calohls train`") from None
        if scaler.features != FEATURES:
            raise InputFileError(
                f"{path} was made for features {scaler.features}; this calohls uses {FEATURES}: re-run `calohls train`"
            )
        return replace(scaler, source=str(path))
