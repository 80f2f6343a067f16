"""``calohls evaluate``: judge a trained calibration the way physicists do.

On the run's test clusters (never seen in training), in log bins of E_true: the median response E_pred/E_true and
the resolution IQR/median, for the DeepSets prediction, the EM scale (default calibration) and an LCW-like cell
weighting fitted on the run's training clusters — for all clusters, π0 and π± separately. Writes ``eval/`` in the run
folder: ``metrics.json`` and the figures (response vs E_true before and after, resolution and median compared).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from calohls.data.features import check_em_scale
from calohls.data.hdf5 import open_clusters
from calohls.data.schema import PARTICLES, ClusterBatch
from calohls.errors import DataError, FileExistsRefusedError, InputFileError
from calohls.files import atomic_folder
from calohls.physics.response import DEFAULT_QUANTILES, ResponseTable, binned_response, log_bins

__all__ = ["GROUPS", "METHODS", "Evaluation", "evaluate_run", "group_mask", "read_clusters_at"]

log = logging.getLogger(__name__)

#: Particle groups evaluated: key → (label, PDG ids); "all" takes every cluster.
GROUPS: dict[str, tuple[str, tuple[int, ...]]] = {
    "all": ("all clusters", ()),
    "pi0": ("π0", (PARTICLES["pi0"],)),
    "pi+-": ("π±", (PARTICLES["pi+"], PARTICLES["pi-"])),
}
#: Calibrations compared: key → label. DeepSets includes its response correction (``model/correction.py``); the
#: metrics also list it without (``deepsets_uncorrected``).
METHODS: dict[str, str] = {"em": "EM scale", "lcw": "LCW-like", "deepsets": "DeepSets"}
#: Clusters of the training split used to fit the LCW-like weights (more add little).
LCW_FIT_CLUSTERS = 100_000


@dataclass(frozen=True)
class Evaluation:
    """Per-cluster predictions on the test set and the binned tables."""

    e_true: np.ndarray
    particle: np.ndarray
    predictions: dict[str, np.ndarray]  # method → E_pred
    tables: dict[str, dict[str, ResponseTable]]  # group → method → table
    checks: dict[str, Any]


def read_clusters_at(path: str | Path, index: np.ndarray, *, max_cells: int | None = None) -> ClusterBatch:
    """The clusters at file positions ``index`` (any order; returned in that order), streamed chunk by chunk."""
    index = np.asarray(index, np.int64)
    order = np.argsort(index, kind="stable")
    sorted_index = index[order]
    parts = []
    with open_clusters(path) as f:
        if index.size and (sorted_index[0] < 0 or sorted_index[-1] >= f.n_clusters):
            raise InputFileError(
                f"{path} has {f.n_clusters} clusters but the run refers to cluster {int(sorted_index[-1])}; "
                "evaluate with the data file the run was trained on"
            )
        step = 32768
        for start in range(0, f.n_clusters, step):
            lo, hi = np.searchsorted(sorted_index, [start, start + step])
            if hi > lo:
                parts.append(f.read(start, start + step, max_cells=max_cells).select(sorted_index[lo:hi] - start))
    if not parts:
        raise DataError(f"no clusters selected from {path}")
    batch = ClusterBatch.concatenate(parts)
    return batch.select(np.argsort(order, kind="stable"))


def group_mask(particle: np.ndarray, pdgs: tuple[int, ...]) -> np.ndarray:
    return np.ones(particle.size, bool) if not pdgs else np.isin(particle, pdgs)


def _checks(tables: dict[str, dict[str, ResponseTable]]) -> dict[str, Any]:
    """The figures of merit the study quotes, per group."""
    out: dict[str, Any] = {}
    for group, by_method in tables.items():
        dnn, em, lcw = by_method["deepsets"], by_method["em"], by_method["lcw"]
        filled = np.isfinite(dnn.median)
        above_1 = filled & (dnn.edges[:-1] >= 1.0)
        out[group] = {
            "median_within_2pct_above_1gev": bool(np.all(np.abs(dnn.median[above_1] - 1) <= 0.02)),
            "worst_median_deviation_above_1gev": float(np.max(np.abs(dnn.median[above_1] - 1), initial=0.0)),
            "bins_better_than_em": int(np.sum(dnn.resolution[filled] < em.resolution[filled])),
            "bins_better_than_lcw": int(np.sum(dnn.resolution[filled] < lcw.resolution[filled])),
            "bins": int(filled.sum()),
        }
    return out


def evaluate_run(
    run_dir: str | Path,
    *,
    data: str | Path | None = None,
    per_decade: int = 3,
    quantiles: tuple[float, float] = DEFAULT_QUANTILES,
    overwrite: bool = False,
    figures: bool = True,
) -> Evaluation:
    """Evaluate the run in ``run_dir`` on its test clusters and write ``run_dir/eval``.

    The run folder, the output and the data file are checked before the model is loaded.
    """
    from calohls.data.fingerprint import check_data
    from calohls.model.train import RUN_STAGES, load_run, open_run
    from calohls.physics.baselines import LCWCalibration

    run_dir = Path(run_dir)
    info = load_run(run_dir, RUN_STAGES)
    out_dir = run_dir / "eval"
    if out_dir.exists() and not overwrite:
        raise FileExistsRefusedError(out_dir)
    data_path = Path(data) if data else _data_path(run_dir, info)
    open_clusters(data_path).close()  # a missing, corrupt or foreign file fails here, before the model loads
    run = open_run(run_dir)
    test, train = run.file_index("test"), run.file_index("train")
    if test.size == 0:
        raise DataError(f"{run_dir} has no test clusters; train with a larger data set")

    test_batch = read_clusters_at(data_path, test)
    check_em_scale(data_path, test_batch["e_em"])
    rng = np.random.default_rng(0)
    fit_index = train if train.size <= LCW_FIT_CLUSTERS else rng.choice(train, LCW_FIT_CLUSTERS, replace=False)
    lcw = LCWCalibration.fit(read_clusters_at(data_path, np.sort(fit_index)))
    check_data(run_dir, info, data_path)  # readable, but is it the run's file (not replaced, not a wrong --data)?
    raw = run.predict(test_batch, corrected=False)
    predictions = {
        "em": test_batch["e_em"].astype(np.float64),
        "lcw": lcw.predict(test_batch),
        "deepsets": run.correction.apply(raw),
    }
    e_true, particle = test_batch["e_true"].astype(np.float64), test_batch["particle"]
    bins = log_bins(0.5, 500.0, per_decade)
    masks = {group: m for group, (_, pdgs) in GROUPS.items() if (m := group_mask(particle, pdgs)).any()}
    tables = {
        group: {
            method: binned_response(e_true[m], predictions[method][m], bins, quantiles=quantiles) for method in METHODS
        }
        for group, m in masks.items()
    }
    uncorrected = {group: binned_response(e_true[m], raw[m], bins, quantiles=quantiles) for group, m in masks.items()}
    result = Evaluation(e_true, particle, predictions, tables, _checks(tables))

    with atomic_folder(out_dir, overwrite=overwrite) as staging:
        metrics = {
            "run": str(run_dir),
            "data": str(data_path),
            "test_clusters": int(e_true.size),
            "response": "e_pred / e_true",
            "methods": METHODS,
            "groups": {g: GROUPS[g][0] for g in tables},
            "checks": result.checks,
            "tables": {g: {m: t.to_dict() for m, t in by.items()} for g, by in tables.items()},
            "deepsets_uncorrected": {g: t.to_dict() for g, t in uncorrected.items()},
        }
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=1, allow_nan=False))
        lcw.save(staging / "lcw.json")
        if figures:
            from calohls.plots.evaluation import draw_evaluation

            draw_evaluation(result, staging, extra=_sample_text(data_path))
    return result


def _data_path(run_dir: Path, info: dict[str, Any]) -> Path:
    """The cluster file a run was trained on, as its ``run.json`` says; it must still be there."""
    try:
        path = Path(info["data"]["path"])
    except (KeyError, TypeError):
        raise InputFileError(
            f"{run_dir / 'run.json'} names no data file; pass the run's cluster file with --data"
        ) from None
    if not path.exists():
        raise InputFileError(
            f"the cluster file {path} that {run_dir} was trained on is gone; pass its new path with --data"
        )
    return path


def _sample_text(data_path: Path) -> str:
    """The second line of the figures' label: what the clusters are, from the file's generating config."""
    with open_clusters(data_path) as f:
        config = f.config or {}
    if "mu" not in config:
        return "test clusters"
    particles = ", ".join(config.get("particles", ()))
    return f"single {particles}; μ = {config['mu']:g}"
