"""``calohls ptq``: post-training quantization sweeps of trained DeepSets runs (the poster's Fig 3, and more).

For every run and every sweep point, the float model is converted with hls4ml at that precision and evaluated on the
run's test clusters — by the bit-exact numpy emulator (default) or by hls4ml's C-simulation — against the float
Keras model: MPE of the output in energy units, the mean signed difference, the physics resolution after
quantization, and per-layer differences between the hls4ml and Keras outputs. The sweeps (``int-bits``,
``total-bits``, ``weights``) are declared in :data:`calohls.quant.sweeps.SWEEPS`.

Outputs in the output folder: ``results.jsonl`` (one line per finished point, appended at once; a killed sweep
resumes and recomputes nothing finished), ``ptq.yaml`` (the resolved options and runs), ``inputs/`` (the test inputs
and float outputs of each run); :mod:`calohls.stages.ptq` adds ``summary.json`` (the findings) and the figures.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import yaml

from calohls.config import PTQConfig, dump_config
from calohls.errors import ConfigError, FileExistsRefusedError
from calohls.files import atomic_output, check_parent, write_text_atomic, writing
from calohls.quant.metrics import layer_differences, mean_percent_error
from calohls.quant.sweeps import SWEEPS
from calohls.scan.executors import run_points
from calohls.scan.store import ResultStore

__all__ = ["PTQPoint", "PTQSweep", "Point", "RunInputs", "evaluate_point", "prepare_inputs", "run_ptq", "sweep_points"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Point:
    """One configuration of one run (picklable: it travels to worker processes)."""

    key: str
    run: str
    run_dir: str
    inputs: str
    sweep: str
    value: int
    default: str
    layers: tuple[tuple[str, tuple[tuple[str, str], ...]], ...]  # per-layer overrides, hashable
    label: str
    engine: str
    trace_clusters: int


@dataclass(frozen=True)
class PTQPoint:
    """What one point measured (:func:`evaluate_point`); its ``to_json`` is its line of ``results.jsonl``.

    Attributes:
        key, run, sweep, value, default, label, engine, trace_clusters: The :class:`Point` it measured.
        mpe: MPE (percent) of the quantized output against the float Keras output, in energy units.
        mean_signed_difference: Mean signed relative difference (percent) of the same.
        identical_fraction: Share of clusters whose quantized output equals the float one.
        median_response: Median of ``E_quant / E_true``.
        resolution: IQR(16–84 %)/median of ``E_quant / E_true``.
        layers: Layer → differences of its outputs from Keras (:func:`calohls.quant.metrics.layer_differences`).
        types: Layer → variable → the type hls4ml resolved (:func:`calohls.firmware.hls.layer_types`).
        seconds: Time the point took.
    """

    key: str
    run: str
    sweep: str
    value: int
    default: str
    label: str
    engine: str
    trace_clusters: int
    mpe: float
    mean_signed_difference: float
    identical_fraction: float
    median_response: float
    resolution: float
    layers: dict[str, dict[str, float]]
    types: dict[str, dict[str, str]]
    seconds: float

    def to_json(self) -> dict[str, Any]:
        """Its line of ``results.jsonl``."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PTQPoint:
        """The point stored as ``data`` (a line of ``results.jsonl``)."""
        return cls(**{f.name: data[f.name] for f in fields(cls)})


class RunInputs(NamedTuple):
    """The metadata of a run's sweep inputs (:func:`prepare_inputs`; ``inputs/<run>.yaml``)."""

    float_resolution: float
    clusters: int
    target: str
    parameters: int
    model: str
    weighted_layers: list[str]

    def to_json(self) -> dict[str, Any]:
        return self._asdict()


@dataclass(frozen=True)
class PTQSweep:
    """The finished sweep: one record per point (as in ``results.jsonl``) and, per run name, its folder and the
    metadata of its inputs (parameters, float resolution, weighted layers)."""

    records: list[PTQPoint]
    runs: dict[str, dict[str, Any]]


def sweep_points(config: PTQConfig, runs: dict[str, tuple[Path, Path, list[str]]]) -> list[Point]:
    """Every point of every sweep for every run (``runs``: name → (run folder, inputs file, weighted layers))."""
    points = []
    for name, (run_dir, inputs, layer_names) in runs.items():
        for sweep in config.sweeps:
            for value, default, layers, label in SWEEPS[sweep].points(config, layer_names):
                frozen = tuple((k, tuple(sorted(v.items()))) for k, v in sorted(layers.items()))
                points.append(
                    Point(
                        f"{name}|{sweep}|{value}",
                        name,
                        str(run_dir),
                        str(inputs),
                        sweep,
                        value,
                        default,
                        frozen,
                        label,
                        config.engine,
                        config.trace_clusters,
                    )
                )
    return points


def prepare_inputs(run_dir: Path, clusters: int, path: Path) -> RunInputs:
    """Scaled inputs, truth and float outputs of (up to) ``clusters`` test clusters of a run, saved to ``path``."""
    from calohls.data.features import cell_features
    from calohls.model.run_folder import open_run
    from calohls.physics.evaluate import read_clusters_at

    run = open_run(run_dir)
    index = run.file_index("test")[:clusters]
    batch = read_clusters_at(run.data_path, index, max_cells=run.scaler.max_cells)
    x = run.scaler.transform(cell_features(batch, run.scaler.max_cells))
    y_float = np.asarray(run.model.predict(x, batch_size=4096, verbose=0), np.float64).reshape(-1)
    arrays = {
        "x": x,
        "y_float": y_float,
        "e_true": batch["e_true"],
        "e_em": batch["e_em"],
        "particle": batch["particle"],
    }
    with atomic_output(path, overwrite=True) as partial, partial.open("wb") as out:
        np.savez(out, **arrays)
    from calohls.data.features import energy_from_target
    from calohls.model.deepsets import layer_names

    e_float = energy_from_target(y_float, batch["e_em"], run.config.target)
    return RunInputs(
        float_resolution=_resolution(e_float, batch["e_true"])[1],
        clusters=int(index.size),
        target=run.config.target,
        parameters=run.info["model"]["parameters"],
        model=run.info["model"]["name"],
        weighted_layers=[name for name in layer_names(run.model) if run.model.get_layer(name).weights],
    )


class _Resources(NamedTuple):
    """A run's model, its sweep inputs and float references (:func:`_resources`)."""

    model: Any
    target: str
    x: np.ndarray
    y_float: np.ndarray
    e_true: np.ndarray
    e_em: np.ndarray
    e_float: np.ndarray
    keras_trace: dict[str, np.ndarray]
    trace_k: int


@functools.lru_cache(maxsize=4)
def _resources(run_dir: str, inputs: str, trace_clusters: int) -> _Resources:
    """Model, inputs and float references of a run, loaded once per worker process."""
    from calohls.data.features import energy_from_target
    from calohls.firmware.hls import keras_trace
    from calohls.model.run_folder import open_run

    run = open_run(run_dir)
    with np.load(inputs) as z:
        data = {k: z[k] for k in z.files}
    k = min(trace_clusters, data["x"].shape[0])
    return _Resources(
        model=run.model,
        target=run.config.target,
        x=data["x"],
        y_float=data["y_float"],
        e_true=data["e_true"],
        e_em=data["e_em"],
        e_float=energy_from_target(data["y_float"], data["e_em"], run.config.target),
        keras_trace=keras_trace(run.model, data["x"][:k]),
        trace_k=k,
    )


def _resolution(e_pred: np.ndarray, e_true: np.ndarray) -> tuple[float, float]:
    q16, q50, q84 = np.percentile(e_pred / e_true, [16, 50, 84])
    return float(q50), float((q84 - q16) / q50)


def evaluate_point(point: Point) -> PTQPoint:
    """Convert, run (emulated or C-simulated) and measure one point."""
    from calohls.data.features import energy_from_target
    from calohls.firmware.hls import Precision, compile_model, convert, csim_predict, layer_types, trace

    start = time.perf_counter()
    res = _resources(point.run_dir, point.inputs, point.trace_clusters)
    precision = Precision(default=point.default, layers={k: dict(v) for k, v in point.layers})
    work = Path(tempfile.mkdtemp(prefix="calohls-ptq-"))
    try:
        hls_model = convert(res.model, precision, work / "prj")
        x, k = res.x, res.trace_k
        if point.engine == "emulate":
            from calohls.quant.emulate import Emulator

            # one pass: the traced first k clusters give their outputs too
            y_q, layer_out = Emulator.from_hls(hls_model).predict_and_trace(x, k)
        else:
            compile_model(hls_model)
            y_q, layer_out = csim_predict(hls_model, x), trace(hls_model, x[:k])
        types = layer_types(hls_model)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    e_quant = energy_from_target(y_q, res.e_em, res.target)
    mpe, signed = mean_percent_error(e_quant, res.e_float)
    median, resolution = _resolution(e_quant, res.e_true)
    return PTQPoint(
        **{k: v for k, v in asdict(point).items() if k not in ("layers", "run_dir", "inputs")},
        mpe=mpe,
        mean_signed_difference=signed,
        identical_fraction=float(np.mean(np.asarray(y_q, np.float64) == res.y_float)),
        median_response=median,
        resolution=resolution,
        layers=layer_differences(layer_out, res.keras_trace, real=x[:k, :, 0] > 0),
        types=types,
        seconds=time.perf_counter() - start,
    )


def _run_name(run_dir: Path, taken: set[str]) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", run_dir.name) or "run"
    if name in taken:
        raise ConfigError(f"two runs are named {name!r}; give run folders with distinct names")
    return name


def run_ptq(
    run_dirs: list[Path],
    out_dir: Path,
    config: PTQConfig,
    *,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> PTQSweep:
    """Run (or resume) the sweeps of ``config`` for every run; returns every point's record and the runs.
    :func:`calohls.stages.ptq.run_ptq` also writes the findings (``summary.json``) and draws the figures.

    ``progress(done, total)`` is called as points finish.
    """
    from calohls.model.run_folder import check_run_data, load_run

    out_dir = Path(out_dir)
    runs_info: dict[str, dict[str, Any]] = {}
    for run_dir in run_dirs:
        info = load_run(run_dir, "train")  # fails early, with one line, for anything that is not a training run
        check_run_data(Path(run_dir), info)
        runs_info[_run_name(Path(run_dir), set(runs_info))] = {"path": str(Path(run_dir).resolve())}
    # the runs by their path relative to the output: a study (or any folder holding runs and sweep) copied or moved
    # elsewhere is the same sweep and resumes
    runs = {k: os.path.relpath(v["path"], out_dir.resolve()) for k, v in runs_info.items()}
    stamp = {"config": yaml.safe_load(dump_config(config)), "runs": runs}
    _check_output(out_dir, stamp, overwrite)
    if out_dir.exists() and overwrite:
        shutil.rmtree(out_dir)
    fresh = not out_dir.exists()
    try:
        with writing(out_dir):
            out_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out_dir / "ptq.yaml", yaml.safe_dump(stamp, sort_keys=False))
        runs = _prepare_runs(runs_info, out_dir, config)
    except BaseException:
        if fresh:  # failed before any point: leave no half-made output folder behind
            shutil.rmtree(out_dir, ignore_errors=True)
        raise

    store = ResultStore(out_dir / "results.jsonl")
    points = sweep_points(config, runs)
    todo = [p for p in points if p.key not in store]
    log.info("%d points, %d already done", len(points), len(points) - len(todo))
    done = len(points) - len(todo)
    if progress:
        progress(done, len(points))
    for _, record in run_points(evaluate_point, todo, workers=config.workers, scheduler=config.scheduler):
        store.append(record.to_json())
        done += 1
        if progress:
            progress(done, len(points))

    return PTQSweep([PTQPoint.from_json(r) for r in store], runs_info)


def _check_output(out_dir: Path, stamp: dict[str, Any], overwrite: bool) -> None:
    """Refuse, before any work, an output that is not a folder, or a folder made otherwise (without ``overwrite``).

    A folder made by ``calohls ptq`` with the same options and runs is resumed; an empty folder is used.
    """
    check_parent(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"output {out_dir} is a file; give the path of a folder")
    if overwrite or not out_dir.exists():
        return
    settings = out_dir / "ptq.yaml"
    if settings.exists():
        try:
            previous = yaml.safe_load(settings.read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            previous = None
        if previous != stamp:
            raise FileExistsRefusedError(out_dir)  # made with other options: resuming would mix them
    elif any(out_dir.iterdir()):
        raise FileExistsRefusedError(out_dir)  # not a ptq output: never write into someone else's folder


def _prepare_runs(
    runs_info: dict[str, dict[str, Any]], out_dir: Path, config: PTQConfig
) -> dict[str, tuple[Path, Path, list[str]]]:
    """The inputs of every run (made once, kept in ``out_dir/inputs``); fills ``runs_info`` with their metadata."""
    runs = {}
    for name, info in runs_info.items():
        inputs = out_dir / "inputs" / f"{name}.npz"
        meta_path = out_dir / "inputs" / f"{name}.yaml"
        if not (inputs.exists() and meta_path.exists()):
            meta = prepare_inputs(Path(info["path"]), config.clusters, inputs)
            write_text_atomic(meta_path, yaml.safe_dump(meta.to_json()))
        info.update(yaml.safe_load(meta_path.read_text()))
        runs[name] = (Path(info["path"]), inputs, info["weighted_layers"])
    return runs
