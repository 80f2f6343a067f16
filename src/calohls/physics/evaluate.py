"""``calohls evaluate``: judge a trained calibration the way physicists do.

On the run's test clusters (never seen in training), in log bins of E_true: the median response E_pred/E_true and
the resolution IQR/median, each with its 68 % bootstrap interval, for every method of
:data:`~calohls.physics.methods.METHODS` — the EM scale (default calibration), the LCW-like cell weighting, a
gradient-boosted-tree regression on cluster moments and the particle-type oracle, all fitted on the run's training
clusters, and the DeepSets prediction — for all clusters, π0 and π± separately. :func:`evaluate_run` computes and
returns the :class:`Evaluation` (its :meth:`Evaluation.to_json` is ``eval/metrics.json``); the stage above writes
``eval/`` and draws the figures from it (:func:`calohls.stages.evaluate.evaluate_and_draw`).

The checks (:func:`evaluation_checks`) are the conditions a calibration must meet to improve on the default
(issue 10): per group, DeepSets better than LCW-like in every bin above 1 GeV; medians within ±2 % above 2 GeV;
for π0 above 50 GeV, a resolution within 15 % of the EM scale's. Each condition records the bins that fail with
both numbers and their uncertainties, and a one-line verdict.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from calohls.data.features import check_em_scale
from calohls.data.hdf5 import open_clusters
from calohls.data.schema import ClusterBatch
from calohls.errors import DataError, InputFileError
from calohls.physics.methods import GROUPS, METHODS, Calibration, group_mask, method_labels, resolution_better_than
from calohls.physics.response import (
    DEFAULT_BOOTSTRAP,
    DEFAULT_QUANTILES,
    ResponseTable,
    binned_response,
    log_bins,
)

if TYPE_CHECKING:
    from calohls.model.run_folder import RunInfo

__all__ = [
    "FIT_CLUSTERS",
    "GROUPS",
    "METHODS",
    "Condition",
    "Evaluation",
    "GroupChecks",
    "evaluate_run",
    "evaluation_checks",
    "group_mask",
    "read_clusters_at",
]

log = logging.getLogger(__name__)

#: Clusters of the training split that the reference methods are fitted on (more add little).
FIT_CLUSTERS = 100_000


@dataclass(frozen=True)
class Condition:
    """One condition of a good calibration (issue 10), judged bin by bin.

    Attributes:
        passed: Whether every judged bin meets it.
        bins: Bins judged.
        failing: One entry per failing bin: its range (``bin``, ``lo``, ``hi``), both values with their 68 %
            uncertainties and ``significant`` (the shortfall exceeds its combined uncertainty).
        verdict: One line for people.
        worst: The bin furthest from the target (closure conditions only; ``None`` for comparisons).
        closure: Whether it is a closure condition (median within a tolerance) rather than a comparison.
    """

    passed: bool
    bins: int
    failing: tuple[Mapping[str, Any], ...]
    verdict: str
    worst: Mapping[str, Any] | None = None
    closure: bool = False

    def to_json(self) -> dict[str, Any]:
        """The condition as in ``metrics.json``."""
        head: dict[str, Any] = {"passed": self.passed, "bins": self.bins}
        if self.closure:
            head["worst"] = None if self.worst is None else dict(self.worst)
        return {**head, "failing": [dict(f) for f in self.failing], "verdict": self.verdict}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Condition:
        """The condition from its ``metrics.json`` entry."""
        failing = tuple(dict(f) for f in data["failing"])
        closure = "worst" in data
        return cls(bool(data["passed"]), int(data["bins"]), failing, data["verdict"], data.get("worst"), closure)


@dataclass(frozen=True)
class GroupChecks:
    """The figures of merit the study quotes and the conditions of issue 10, for one particle group.

    Attributes:
        median_within_2pct_above_1gev: DeepSets' median within ±2 % in every filled bin above 1 GeV.
        worst_median_deviation_above_1gev: The largest ``|median - 1|`` there.
        bins_better_than: Method key → bins where DeepSets' resolution is below that method's.
        bins: Bins with values.
        conditions: Name → :class:`Condition`.
    """

    median_within_2pct_above_1gev: bool
    worst_median_deviation_above_1gev: float
    bins_better_than: dict[str, int]
    bins: int
    conditions: dict[str, Condition]

    def to_json(self) -> dict[str, Any]:
        """The group's checks as in ``metrics.json``."""
        return {
            "median_within_2pct_above_1gev": self.median_within_2pct_above_1gev,
            "worst_median_deviation_above_1gev": self.worst_median_deviation_above_1gev,
            **{f"bins_better_than_{key}": n for key, n in self.bins_better_than.items()},
            "bins": self.bins,
            "conditions": {name: c.to_json() for name, c in self.conditions.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GroupChecks:
        """The group's checks from their ``metrics.json`` entry."""
        prefix = "bins_better_than_"
        return cls(
            bool(data["median_within_2pct_above_1gev"]),
            float(data["worst_median_deviation_above_1gev"]),
            {k.removeprefix(prefix): int(v) for k, v in data.items() if k.startswith(prefix)},
            int(data["bins"]),
            {name: Condition.from_json(c) for name, c in data["conditions"].items()},
        )


@dataclass(frozen=True)
class Evaluation:
    """Per-cluster predictions on the test set, the binned tables and the checks.

    :meth:`to_json` is ``eval/metrics.json``; :meth:`from_json` reads it back (without the per-cluster arrays,
    which are not stored: ``e_true``, ``particle`` and ``predictions`` come back empty).

    Attributes:
        e_true: True energy of each test cluster (GeV).
        particle: PDG id of each test cluster.
        predictions: Method key → E_pred per test cluster.
        tables: Group → method → :class:`ResponseTable` (with bootstrap intervals).
        checks: Group → the figures of merit and conditions of :func:`evaluation_checks`.
        sample: What the clusters are, for the figures' label (e.g. "single pi+, pi-, pi0; μ = 200").
        fits: Method key → the record of its fit (clusters, seconds, ...).
        run: The run folder.
        data: The cluster file.
        test_clusters: Test clusters evaluated.
        fit_clusters: Training clusters the reference methods were fitted on.
        bootstrap: Bootstrap resamples of the 68 % intervals.
        uncorrected: Group → the DeepSets table before the response correction.
        seconds: Wall time of the evaluation.
        calibrations: Method key → the fitted :class:`Calibration` (each saves its own file); not in ``to_json``.
    """

    e_true: np.ndarray
    particle: np.ndarray
    predictions: dict[str, np.ndarray]
    tables: dict[str, dict[str, ResponseTable]]
    checks: dict[str, GroupChecks]
    sample: str = "test clusters"
    fits: dict[str, Any] = field(default_factory=dict)
    run: str = ""
    data: str = ""
    test_clusters: int = 0
    fit_clusters: int = 0
    bootstrap: int = 0
    uncorrected: dict[str, ResponseTable] = field(default_factory=dict)
    seconds: float = 0.0
    calibrations: dict[str, Calibration] = field(default_factory=dict, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        """The content of ``eval/metrics.json``."""
        return {
            "run": self.run,
            "data": self.data,
            "test_clusters": self.test_clusters,
            "fit_clusters": self.fit_clusters,
            "response": "e_pred / e_true",
            "bootstrap": self.bootstrap,
            "methods": method_labels(),
            "fits": self.fits,
            "groups": {g: GROUPS[g][0] for g in self.tables},
            "checks": {g: c.to_json() for g, c in self.checks.items()},
            "tables": {g: {m: t.to_dict() for m, t in by.items()} for g, by in self.tables.items()},
            "deepsets_uncorrected": {g: t.to_dict() for g, t in self.uncorrected.items()},
            "seconds": self.seconds,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Evaluation:
        """The evaluation stored in ``metrics.json`` (``data``), without its per-cluster arrays."""
        tables = {g: {m: ResponseTable.from_dict(t) for m, t in by.items()} for g, by in data["tables"].items()}
        return cls(
            e_true=np.zeros(0),
            particle=np.zeros(0, np.int64),
            predictions={},
            tables=tables,
            checks={g: GroupChecks.from_json(c) for g, c in data["checks"].items()},
            fits=dict(data["fits"]),
            run=data["run"],
            data=data["data"],
            test_clusters=int(data["test_clusters"]),
            fit_clusters=int(data["fit_clusters"]),
            bootstrap=int(data["bootstrap"]),
            uncorrected={g: ResponseTable.from_dict(t) for g, t in data["deepsets_uncorrected"].items()},
            seconds=data["seconds"],
        )


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


# -- the checks ------------------------------------------------------------------------------------------------

#: Bins count as "above X GeV" when their lower edge is at least X (less this relative tolerance for rounding).
_EDGE_TOLERANCE = 1e-9


def _bin_text(t: ResponseTable, i: int) -> str:
    return f"{t.edges[i]:.3g}–{t.edges[i + 1]:.3g} GeV"


def _value(t: ResponseTable, field_name: str, i: int) -> tuple[float | None, float | None]:
    """The value of ``field_name`` in bin ``i`` and its uncertainty (``None`` where not finite)."""
    value, err = float(getattr(t, field_name)[i]), float(getattr(t, f"{field_name}_err")[i])
    return (value if np.isfinite(value) else None), (err if np.isfinite(err) else None)


def _pm(value: float | None, err: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.3f}" if err is None else f"{value:.3f} ± {err:.3f}"


def _above(t: ResponseTable, gev: float) -> np.ndarray:
    """Bins with values whose lower edge is at least ``gev``."""
    return np.flatnonzero(np.isfinite(t.median) & (t.edges[:-1] >= gev * (1 - _EDGE_TOLERANCE)))


def _beats(
    dnn: ResponseTable, ref: ResponseTable, ref_key: str, gev: float, what: str, factor: float = 1.0
) -> Condition:
    """DeepSets resolution below ``factor`` × the reference's in every bin above ``gev`` (failing bins listed)."""
    failing = []
    bins = [i for i in _above(dnn, gev) if np.isfinite(ref.resolution[i]) and np.isfinite(dnn.resolution[i])]
    for i in bins:
        if not dnn.resolution[i] < factor * ref.resolution[i]:
            d, r = _value(dnn, "resolution", i), _value(ref, "resolution", i)
            excess = dnn.resolution[i] - factor * ref.resolution[i]
            combined = math.hypot(dnn.resolution_err[i], factor * ref.resolution_err[i])
            failing.append({"bin": _bin_text(dnn, i), "lo": float(dnn.edges[i]), "hi": float(dnn.edges[i + 1]),
                            "deepsets": d[0], "deepsets_err": d[1], ref_key: r[0], f"{ref_key}_err": r[1],
                            "significant": bool(excess > combined)})  # fmt: skip
    passed = bool(bins) and not failing
    return Condition(passed, len(bins), tuple(failing), _verdict_beats(passed, len(bins), failing, what, ref_key))


def _verdict_beats(passed: bool, bins: int, failing: list[dict[str, Any]], what: str, ref_key: str) -> str:
    head = f"{what}: {'yes' if passed else 'no'} ({bins - len(failing)}/{bins} bins)"
    fails = [f"{f['bin']} {_pm(f['deepsets'], f['deepsets_err'])} vs {_pm(f[ref_key], f[f'{ref_key}_err'])}"
             + (" (significant)" if f["significant"] else "") for f in failing]  # fmt: skip
    return head + (f"; fails at {'; '.join(fails)}" if fails else "")


def _closure(t: ResponseTable, gev: float, tolerance: float) -> Condition:
    """Median within ``1 ± tolerance`` in every bin above ``gev``; the worst bin named."""
    bins = _above(t, gev)
    if bins.size == 0:
        return Condition(False, 0, (), f"no bins above {gev:g} GeV", None, closure=True)
    off = np.abs(t.median[bins] - 1.0)
    entry = [{"bin": _bin_text(t, i), "lo": float(t.edges[i]), "hi": float(t.edges[i + 1]),
              **dict(zip(("median", "median_err"), _value(t, "median", i), strict=True))}
             for i in bins]  # fmt: skip
    worst = entry[int(np.argmax(off))]
    for e, o in zip(entry, off, strict=True):
        e["significant"] = bool(e["median_err"] is not None and o - tolerance > e["median_err"])
    failing = [e for e, o in zip(entry, off, strict=True) if o > tolerance]
    verdict = (
        f"median within ±{tolerance:.0%} above {gev:g} GeV: {'yes' if not failing else 'no'} "
        f"(worst {worst['bin']}: {_pm(worst['median'], worst['median_err'])})"
    )
    return Condition(not failing, int(bins.size), tuple(failing), verdict, worst, closure=True)


def _conditions(group: str, by_method: dict[str, ResponseTable]) -> dict[str, Condition]:
    """The conditions of issue 10 for one group (the π0 one only for π0)."""
    dnn = by_method["deepsets"]
    what = f"{resolution_better_than(METHODS['lcw'].label)} above 1 GeV"
    out = {
        "better_than_lcw_above_1gev": _beats(dnn, by_method["lcw"], "lcw", 1.0, what),
        "median_within_2pct_above_2gev": _closure(dnn, 2.0, 0.02),
    }
    if group == "pi0":
        what = "resolution within 15 % of the EM scale above 50 GeV"
        out["within_15pct_of_em_above_50gev"] = _beats(dnn, by_method["em"], "em", 50.0, what, factor=1.15)
    return out


def evaluation_checks(tables: dict[str, dict[str, ResponseTable]]) -> dict[str, GroupChecks]:
    """The figures of merit the study quotes and the conditions of issue 10, per group.

    Returns:
        Group → :class:`GroupChecks`: ``median_within_2pct_above_1gev``, ``worst_median_deviation_above_1gev``,
        ``bins`` (with values), ``bins_better_than`` every other method, and ``conditions``: name →
        :class:`Condition` (``passed``, ``bins`` judged, ``failing``: one entry per failing bin with its range,
        both values with their uncertainties, and ``significant``: whether the shortfall exceeds its combined 68 %
        uncertainty; NaN uncertainties, as without bootstrap, never count as significant; and ``verdict``).
    """
    out = {}
    for group, by_method in tables.items():
        dnn = by_method["deepsets"]
        filled = np.isfinite(dnn.median)
        above_1 = filled & (dnn.edges[:-1] >= 1.0)
        better = {
            key: int(np.sum(dnn.resolution[filled] < table.resolution[filled]))
            for key, table in by_method.items()
            if key != "deepsets"
        }
        out[group] = GroupChecks(
            bool(np.all(np.abs(dnn.median[above_1] - 1) <= 0.02)),
            float(np.max(np.abs(dnn.median[above_1] - 1), initial=0.0)),
            better,
            int(filled.sum()),
            _conditions(group, by_method),
        )
    return out


# -- the evaluation --------------------------------------------------------------------------------------------


def _fit_methods(batch: ClusterBatch, seed: int) -> tuple[dict[str, Calibration], dict[str, Any]]:
    """Every method of the registry that is fitted (all but DeepSets), on the training clusters ``batch``."""
    calibrations, fits = {}, {}
    for key, method in METHODS.items():
        if method.fit is None:
            continue
        begin = time.perf_counter()
        calibrations[key] = method.fit(batch, seed)
        fits[key] = {"seconds": round(time.perf_counter() - begin, 2), **calibrations[key].to_json()}
    return calibrations, fits


def _binned(
    e_true: np.ndarray,
    predictions: dict[str, np.ndarray],
    masks: dict[str, np.ndarray],
    options: dict[str, Any],
) -> dict[str, dict[str, ResponseTable]]:
    return {
        group: {key: binned_response(e_true[m], pred[m], **options) for key, pred in predictions.items()}
        for group, m in masks.items()
    }


def evaluate_run(
    run_dir: str | Path,
    *,
    data: str | Path | None = None,
    per_decade: int = 3,
    quantiles: tuple[float, float] = DEFAULT_QUANTILES,
    bootstrap: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
) -> Evaluation:
    """Evaluate the run in ``run_dir`` on its test clusters (writes nothing).

    The run folder and the data file are checked before the model is loaded. The reference methods
    are fitted on at most :data:`FIT_CLUSTERS` of the run's training clusters (drawn with ``seed``).

    Args:
        run_dir: The run folder (``calohls train``).
        data: The cluster file, if it has moved since training.
        per_decade: E_true bins per decade (from 0.5 to 500 GeV).
        quantiles: The quantile pair of the resolution.
        bootstrap: Bootstrap resamples of the 68 % intervals (0: none).
        seed: Seed of the fit subsample, the tree regression and the bootstrap.

    Returns:
        The :class:`Evaluation`; :func:`calohls.stages.evaluate.evaluate_and_draw` writes it to ``run_dir/eval``
        and draws its figures.
    """
    from calohls.data.fingerprint import check_data
    from calohls.model.run_folder import RUN_STAGES, load_run, open_run

    begin = time.perf_counter()
    run_dir = Path(run_dir)
    info = load_run(run_dir, RUN_STAGES)
    data_path = Path(data) if data else _data_path(run_dir, info)
    open_clusters(data_path).close()  # a missing, corrupt or foreign file fails here, before the model loads
    run = open_run(run_dir)
    test, train = run.file_index("test"), run.file_index("train")
    if test.size == 0:
        raise DataError(f"{run_dir} has no test clusters; train with a larger data set")

    test_batch = read_clusters_at(data_path, test)
    check_em_scale(data_path, test_batch["e_em"])
    # readable, but is it the run's file (not replaced, not a wrong --data)?
    check_data(run_dir, info.record, data_path)
    rng = np.random.default_rng(seed)
    fit_index = train if train.size <= FIT_CLUSTERS else rng.choice(train, FIT_CLUSTERS, replace=False)
    calibrations, fits = _fit_methods(read_clusters_at(data_path, np.sort(fit_index)), seed)
    raw = run.predict(test_batch, corrected=False)
    predictions = {key: calibrations[key].predict(test_batch) for key in calibrations}
    predictions["deepsets"] = run.correction.apply(raw)
    predictions = {key: predictions[key] for key in METHODS}
    e_true, particle = test_batch["e_true"].astype(np.float64), test_batch["particle"]
    options = {"bins": log_bins(0.5, 500.0, per_decade), "quantiles": quantiles, "bootstrap": bootstrap, "seed": seed}
    masks = {group: m for group, (_, pdgs) in GROUPS.items() if (m := group_mask(particle, pdgs)).any()}
    tables = _binned(e_true, predictions, masks, options)
    uncorrected = {g: by["deepsets"] for g, by in _binned(e_true, {"deepsets": raw}, masks, options).items()}
    return Evaluation(
        e_true,
        particle,
        predictions,
        tables,
        evaluation_checks(tables),
        _sample_text(data_path),
        fits,
        run=str(run_dir),
        data=str(data_path),
        test_clusters=int(e_true.size),
        fit_clusters=int(fit_index.size),
        bootstrap=int(bootstrap),
        uncorrected=uncorrected,
        seconds=round(time.perf_counter() - begin, 2),
        calibrations=calibrations,
    )


def _data_path(run_dir: Path, info: RunInfo) -> Path:
    """The cluster file a run was trained on, as its ``run.json`` says; it must still be there."""
    if info.data_path is None:
        raise InputFileError(f"{run_dir / 'run.json'} names no data file; pass the run's cluster file with --data")
    path = Path(info.data_path)
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
