"""A gradient-boosted-tree calibration on cluster moments: the reference analysers try first.

:class:`GBDTCalibration` regresses ``log10(E_true / E_EM)`` of a cluster from a few of its moments with
scikit-learn's :class:`~sklearn.ensemble.HistGradientBoostingRegressor` and predicts ``E_EM · 10^ŷ``. The
moments (:func:`gbdt_features`, one row per cluster) are those of the ATLAS cluster-moment calibrations:

* ``log_e_em`` (log10 of the EM-scale energy, floored at 1 MeV), ``abs_eta``, ``log_n_cells`` (log10 of all cells,
  stored or not), ``n_positive`` (stored cells with ``E > 0``);
* ``frac_<sampling>``: the share of the positive stored energy in each calorimeter sampling seen in training;
* ``depth``, ``depth_spread``: the energy-weighted mean and spread of the cell radius (m);
* ``width_eta``, ``width_phi``: the energy-weighted spread of the cells in η and φ about the cluster;
* ``log_rho``, ``mean_log_rho``, ``spread_log_rho``: log10 of the energy-weighted mean cell density
  ``ρ = E / (Δη · Δφ · r²)`` (GeV/m², as in :mod:`calohls.physics.baselines`), and the energy-weighted mean and
  spread of ``log10 ρ``;
* ``lead_fraction``: the share of the positive stored energy in the leading cell;
* ``core_fraction``: the share in cells above four times their noise σ (pile-up makes it small);
* ``positive_fraction``, ``negative_fraction``: positive and negative stored energy over ``E_EM``.

Only positive-energy stored cells enter the shape moments; the cells beyond ``N`` of a truncated cluster count
through ``e_em`` and ``n_cells_total`` alone. The regression is direct: it needs no response correction
(the evaluation applies none, as for the LCW-like weighting).

Why this library: histogram gradient boosting is the standard strong tabular baseline; scikit-learn's
implementation is well maintained, multi-threaded, needs no system libraries (unlike XGBoost's or LightGBM's
OpenMP builds) and fits 100k clusters in about 7 s on two busy cores.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from calohls.data.schema import SAMPLINGS, ClusterBatch, cell_field_index
from calohls.errors import DataError

__all__ = ["GBDTCalibration", "gbdt_feature_names", "gbdt_features"]

log = logging.getLogger(__name__)

#: Floor of the EM-scale energy in the target and the log feature (GeV).
_E_FLOOR = 1e-3
#: Clusters per block of the moment computation; bounds the temporary arrays.
_BLOCK = 8192
#: Cell noise multiple above which a cell counts as shower core.
_CORE_SIGMA = 4.0
_COL = {name: cell_field_index(name) for name in ("e", "eta", "phi", "sampling", "r", "deta", "dphi", "sigma")}
_SCALAR_NAMES = (
    "log_e_em",
    "abs_eta",
    "log_n_cells",
    "n_positive",
    "depth",
    "depth_spread",
    "width_eta",
    "width_phi",
    "log_rho",
    "mean_log_rho",
    "spread_log_rho",
    "lead_fraction",
    "core_fraction",
    "positive_fraction",
    "negative_fraction",
)
_SAMPLING_NAMES = {number: name for name, number in SAMPLINGS.items()}


def _one_thread() -> Any:
    """Run scikit-learn's OpenMP loops on one thread: on a shared, loaded machine its spinning threads are far
    slower than one, and one thread is fast enough (figures in docs/physics.md, GBDT)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1)


def gbdt_feature_names(samplings: Sequence[int]) -> list[str]:
    """The names of the columns of :func:`gbdt_features` for these sampling numbers."""
    return [*_SCALAR_NAMES, *(f"frac_{_SAMPLING_NAMES.get(int(s), f'sampling{int(s)}')}" for s in samplings)]


def _block_features(batch: ClusterBatch, start: int, stop: int, samplings: Sequence[int]) -> np.ndarray:
    """The features of clusters ``start:stop``, from their positive stored cells gathered into flat arrays."""
    n = stop - start
    width = max(int(batch.n_cells[start:stop].max(initial=0)), 1)
    mask = np.arange(width)[None, :] < batch.n_cells[start:stop, None]
    e_all = np.where(mask, batch.cells[start:stop, :width, _COL["e"]], np.float32(0.0))
    cluster, slot = np.nonzero(e_all > 0)
    cells = batch.cells[start + cluster, slot]  # [P, F]

    def col(name: str) -> np.ndarray:
        return cells[:, _COL[name]].astype(np.float64)

    def per_cluster(x: np.ndarray) -> np.ndarray:
        return np.bincount(cluster, weights=x, minlength=n)

    e = col("e")
    total = per_cluster(e)
    some = total > 0
    safe_total = np.where(some, total, 1.0)

    def mean_spread(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean = per_cluster(e * x) / safe_total
        return mean, np.sqrt(np.maximum(per_cluster(e * x * x) / safe_total - mean * mean, 0.0))

    r = col("r")
    area = col("deta") * col("dphi") * r * r
    good = area > 0
    rho = np.divide(e, area, out=np.zeros_like(e), where=good)
    log_rho_cell = np.log10(rho, out=np.zeros_like(e), where=good)
    dphi = col("phi") - np.asarray(batch["phi"][start:stop], np.float64)[cluster]
    dphi = (dphi + np.pi) % (2 * np.pi) - np.pi
    depth, depth_spread = mean_spread(r)
    mean_log_rho, spread_log_rho = mean_spread(log_rho_cell)
    e_ref = np.maximum(np.asarray(batch["e_em"][start:stop], np.float64), _E_FLOOR)
    sampling = np.rint(col("sampling"))
    columns = [
        np.log10(e_ref),
        np.abs(np.asarray(batch["eta"][start:stop], np.float64)),
        np.log10(np.maximum(np.asarray(batch["n_cells_total"][start:stop], np.float64), 1.0)),
        np.bincount(cluster, weights=good.astype(np.float64), minlength=n),
        depth,
        depth_spread,
        mean_spread(col("eta"))[1],
        mean_spread(dphi)[1],
        np.log10(np.maximum(per_cluster(e * rho) / safe_total, 1e-12)),
        mean_log_rho,
        spread_log_rho,
        e_all.max(axis=1, initial=0.0).astype(np.float64) / safe_total,
        per_cluster(e * (e > _CORE_SIGMA * col("sigma"))) / safe_total,
        total / e_ref,
        (e_all.sum(axis=1, dtype=np.float64) - total) / e_ref,
    ]
    columns += [per_cluster(e * (sampling == s)) / safe_total for s in samplings]
    out = np.stack(columns, axis=1)
    out[~some, 4:13] = np.nan  # no positive cell: no shape (the trees route NaN on their own)
    return out


def gbdt_features(batch: ClusterBatch, samplings: Sequence[int]) -> np.ndarray:
    """The moments of the module docstring, ``[n_clusters, n_features]`` float64 (columns:
    :func:`gbdt_feature_names`); shape moments are NaN for a cluster without a positive stored cell."""
    parts = [_block_features(batch, s, min(s + _BLOCK, len(batch)), samplings) for s in range(0, len(batch), _BLOCK)]
    if not parts:
        return np.zeros((0, len(gbdt_feature_names(samplings))))
    return np.concatenate(parts)


@dataclass(frozen=True, eq=False)
class GBDTCalibration:
    """A fitted tree regression of ``log10(E_true / E_EM)``; build with :meth:`fit`, apply with :meth:`predict`.

    Attributes:
        samplings: Sampling numbers of the ``frac_*`` features (those seen in training).
        model: The fitted :class:`~sklearn.ensemble.HistGradientBoostingRegressor`.
        training: What it was fitted on and how, for the record (JSON-ready).
    """

    samplings: tuple[int, ...]
    model: Any
    training: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def fit(
        cls, batch: ClusterBatch, *, seed: int = 0, max_iter: int = 300, learning_rate: float = 0.1
    ) -> GBDTCalibration:
        """Fit on training clusters (each with ``e_true > 0``; others are left out).

        Early stopping holds out a tenth of the clusters and stops after ten rounds without improvement.

        Raises:
            DataError: fewer than 50 usable clusters.
        """
        from sklearn.ensemble import HistGradientBoostingRegressor

        begin = time.perf_counter()
        e_true = np.asarray(batch["e_true"], np.float64)
        use = e_true > 0
        if use.sum() < 50:
            raise DataError(
                f"only {int(use.sum())} clusters with e_true > 0 to fit the tree calibration; give it at least 50"
            )
        valid = batch.mask & use[:, None]
        samplings = tuple(int(s) for s in np.unique(np.rint(batch.cells[:, :, _COL["sampling"]][valid])))
        x = gbdt_features(batch, samplings)[use]
        e_ref = np.maximum(np.asarray(batch["e_em"], np.float64)[use], _E_FLOOR)
        y = np.log10(e_true[use] / e_ref)
        model = HistGradientBoostingRegressor(
            max_iter=max_iter,
            learning_rate=learning_rate,
            max_leaf_nodes=31,
            min_samples_leaf=40,
            early_stopping=True,
            validation_fraction=0.1,
            n_iter_no_change=10,
            random_state=seed,
        )
        with _one_thread():
            model.fit(x, y)
        training = {
            "clusters": int(use.sum()),
            "features": gbdt_feature_names(samplings),
            "iterations": int(model.n_iter_),
            "target": "log10(e_true / e_em)",
            "seconds": round(time.perf_counter() - begin, 2),
        }
        log.info("tree calibration: %d iterations on %d clusters", model.n_iter_, use.sum())
        return cls(samplings=samplings, model=model, training=training)

    def predict(self, batch: ClusterBatch) -> np.ndarray:
        """The calibrated energy of each cluster (GeV, float64): ``max(e_em, 1 MeV) · 10^ŷ``."""
        if len(batch) == 0:
            return np.zeros(0)
        e_ref = np.maximum(np.asarray(batch["e_em"], np.float64), _E_FLOOR)
        x = gbdt_features(batch, self.samplings)
        with _one_thread():
            y = self.model.predict(x)
        return e_ref * np.power(10.0, y)

    def to_json(self) -> dict[str, Any]:
        """What the calibration was fitted on (for ``metrics.json``)."""
        return dict(self.training)

    def save(self, folder: Path) -> None:
        """Nothing: the trees are refitted by every evaluation (seconds); their record is in ``metrics.json``."""
