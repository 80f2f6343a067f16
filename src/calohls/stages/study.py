"""``calohls scan``: the size × precision study — is a bigger calibration network better once it must fit the trigger?

For every model size (preset) the study trains a float model, quantizes it after training at several precisions
(PTQ, emulated bit-exactly), trains it quantization-aware at several EBOPs strengths β (QAT), builds and checks the
firmware of the best QAT designs, and puts every design on one plane: resolution against LUTs. Outputs, all in one
folder::

    study.json          what the folder is, the resolved options, the digests of finished work
    config.yaml         the resolved StudyConfig
    data/clusters.h5    the simulated clusters (unless the config names a data file)
    runs/<preset>/      float runs (with eval/)
    qat/<preset>_b<β>/  QAT runs (with eval/ and the Pareto checkpoints, each of them a design)
    ptq/                the PTQ sweeps of the float runs (``calohls ptq``)
    firmware/<preset>_b<β>_e<epoch>/  firmware of the chosen QAT designs (firmware.json)
    tasks.jsonl         one record per finished task, appended at once (the scan resumes from it)
    scan/               points.jsonl, pareto.json, answer.json and the figures

Every task has a content digest of its options and inputs. A task whose record with that digest exists is not run
again; change an option and exactly the tasks that depend on it run again. A killed scan resumes where it stopped:
finished tasks are kept once, the PTQ sweep continues point by point.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from calohls import __version__
from calohls.config import StudyConfig, dump_config
from calohls.errors import BusyError, ConfigError, DataError, FileExistsRefusedError, InputFileError
from calohls.files import check_parent, why_not_a_file, write_text_atomic, writing
from calohls.scan.answer import StudyAnswer, StudyFindings, study_findings
from calohls.scan.executors import run_points
from calohls.scan.store import ResultStore
from calohls.stages.study_tasks import Task, run_task
from calohls.versions import versions

__all__ = ["STUDY_KIND", "run_study", "study_lock", "write_findings"]

log = logging.getLogger(__name__)

STUDY_KIND = "calohls-study"

#: ``progress(stage, done, total)``.
Progress = Callable[[str, int, int], None]


def digest(*parts: Any) -> str:
    """A short content hash of JSON-able parts."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_digest(path: Path) -> str:
    """Content hash of a file (read in 4 MiB blocks)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(4 << 20):
            h.update(block)
    return h.hexdigest()[:16]


def _check_inputs(config: StudyConfig) -> None:
    """Refuse, before the study folder is touched, what would fail only after hours of work: a firmware clock or
    pipeline that cannot be met, and a data file that is missing, unreadable, of another layout or without clusters.
    (The cells themselves are checked when the first model reads them.)"""
    from calohls.firmware.rtl import pipeline_options

    pipeline_options(config.firmware.clock_period, config.firmware.latency_cutoff)
    if config.data is None:
        return
    path = Path(config.data)
    problem = why_not_a_file(path)
    if problem is not None:
        raise InputFileError(f"data file {path} {problem}; fix `data:` in the study config or leave it out")
    from calohls.data.hdf5 import open_clusters

    with open_clusters(path) as f:
        if f.n_clusters == 0:
            raise DataError(f"data file {path} holds no cluster; give a file with clusters or leave `data:` out")


#: Study folders this process holds the lock of, with the open lock files (the lock is taken once per process).
_HELD: dict[Path, Any] = {}


@contextlib.contextmanager
def study_lock(out_dir: Path) -> Iterator[None]:
    """Hold the lock of the study folder ``out_dir`` while the block runs: a second scan or run of the same folder
    is refused at once, with the process that holds it.

    The lock is ``.<name>.lock`` beside the folder (it exists before the folder and outlives a replaced one), locked
    with ``flock``: the kernel frees it when its holder ends, however it ends, so the lock of a killed process is
    taken over. The file holds the holder's PID for the message and is removed on release.

    Raises:
        BusyError: another process holds the lock.
    """
    out_dir = Path(out_dir).absolute()
    if out_dir in _HELD:  # the pipeline holds it around run_study, which takes it again
        yield
        return
    path = out_dir.parent / f".{out_dir.name}.lock"
    check_parent(out_dir)
    with writing(out_dir):
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        handle = _take_lock(path, out_dir)
    _HELD[out_dir] = handle
    try:
        yield
    finally:
        del _HELD[out_dir]
        with contextlib.suppress(OSError):
            path.unlink()
        handle.close()


def _take_lock(path: Path, out_dir: Path) -> Any:
    """The open, locked lock file ``path`` (retried if its holder removed it between our open and lock)."""
    for _ in range(10):
        handle = path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip()
            handle.close()
            raise BusyError(
                f"study folder {out_dir} is in use by process {holder or '?'} (another calohls scan or run); wait "
                "for it to finish or stop it, or choose another -o",
                pid=int(holder) if holder.isdigit() else None,
            ) from None
        if path.exists() and os.path.samestat(os.fstat(handle.fileno()), path.stat()):
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            return handle
        handle.close()  # we locked a file its holder had just removed: take the new one
    raise BusyError(f"cannot take the lock {path} of study folder {out_dir}; try again")


def _open_folder(out_dir: Path, config: StudyConfig, overwrite: bool) -> None:
    """Create the study folder or reopen one made by an earlier (maybe interrupted) scan.

    A folder this call creates is removed again if it cannot be set up (no half-made study is left behind).
    """
    info_path = out_dir / "study.json"
    check_parent(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"output {out_dir} is a file; give the path of a folder")
    if out_dir.exists():
        if info_path.exists():
            try:
                info = json.loads(info_path.read_text())
            except ValueError:
                raise InputFileError(f"{info_path} is corrupt; move {out_dir} away to start afresh") from None
            if not isinstance(info, dict) or info.get("kind") != STUDY_KIND:
                raise InputFileError(f"{out_dir} is not a calohls study folder; choose another -o")
        elif any(out_dir.iterdir()):
            if not overwrite:
                raise FileExistsRefusedError(out_dir)
            shutil.rmtree(out_dir)
    info = {
        "kind": STUDY_KIND,
        "calohls": __version__,
        "versions": versions(),
        "config": yaml.safe_load(dump_config(config)),
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    fresh = not out_dir.exists()
    try:
        with writing(out_dir):
            out_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(info_path, json.dumps(info, indent=1))
        write_text_atomic(out_dir / "config.yaml", dump_config(config))
    except BaseException:
        if fresh:
            shutil.rmtree(out_dir, ignore_errors=True)
        raise


def _data(config: StudyConfig, out_dir: Path, store: ResultStore, progress: Progress | None) -> tuple[Path, str]:
    """The cluster file and its digest: the configured file, or the simulation (run once per sim config)."""
    if config.data is not None:
        path = Path(config.data).absolute()
        if not path.is_file():
            raise InputFileError(f"data file {path} not found; fix `data:` in the study config or leave it out")
        return path, file_digest(path)
    from calohls.sim.generate import simulate_to_file

    path = out_dir / "data" / "clusters.h5"
    key = f"data@{digest(config.sim.model_dump(mode='json'))}"
    if key not in store or not path.exists():
        if progress:
            progress("simulate", 0, 1)
        path.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        simulate_to_file(config.sim, path, overwrite=True)
        if key not in store:  # a file deleted by hand is simulated again, its record stays the first one
            store.append({"key": key, "kind": "data", "path": str(path), "seconds": time.perf_counter() - start})
    if progress:
        progress("simulate", 1, 1)
    return path, _content_digest(path)


def _content_digest(path: Path) -> str:
    """The digest that identifies the study's simulated data in its tasks: of the clusters in the file, not of the
    options that made it, so that results are never filed under data they were not computed on (a study of other
    options that wrote the same file), while the same clusters simulated again are the same data."""
    from calohls.data.fingerprint import clusters_digest

    return clusters_digest(path)


def _run(tasks: list[Task], store: ResultStore, config: StudyConfig, stage: str, progress: Progress | None) -> None:
    """Run the tasks not yet in the store (in parallel), appending each record as it finishes."""
    todo = [t for t in tasks if _stored(store, t) is None]
    done = len(tasks) - len(todo)
    if progress:
        progress(stage, done, len(tasks))
    workers = 1 if len(todo) == 1 else config.workers
    for _, record in run_points(run_task, todo, workers=workers, scheduler=config.scheduler):
        store.append({**record.to_json(), "key": f"{record.key}@{record.digest}"})
        done += 1
        if progress:
            progress(stage, done, len(tasks))


def _stored(store: ResultStore, task: Task) -> dict[str, Any] | None:
    return store.get(f"{task.key}@{task.digest}")


def _with(config: Any, **changes: Any) -> Any:
    """A copy of a stage config with some options (and model options) changed, validated again."""
    data = config.model_dump(mode="json")
    for key, value in changes.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) else value
    return type(config).model_validate(data)


def _float_task(
    config: StudyConfig, out_dir: Path, data: Path, data_digest: str, preset: str, k: int, fraction: float = 1.0
) -> Task:
    """The float run of one size with its k-th seed (k = 0: the run that PTQ and QAT start from), on a share of
    the training clusters (the learning curve) or all of them."""
    model = {"preset": preset, "max_cells": config.max_cells}
    options = {"seed": config.train.seed + k} | ({"train_fraction": fraction} if fraction < 1 else {})
    text = dump_config(_with(config.train, model=model, **options))
    suffix = (f":s{k}" if k else "") + (f":f{fraction:g}" if fraction < 1 else "")
    folder = preset + (f"_s{k}" if k else "") + (f"_f{fraction:g}" if fraction < 1 else "")
    labels = (("preset", preset), ("seed_index", k)) + ((("train_fraction", fraction),) if fraction < 1 else ())
    return Task(
        f"float:{preset}{suffix}",
        "float",
        digest(data_digest, text, config.eval_clusters),
        str(out_dir / "runs" / folder),
        str(data),
        text,
        config.eval_clusters,
        labels,
    )


def _curve_tasks(config: StudyConfig, out_dir: Path, data: Path, data_digest: str) -> list[Task]:
    """The learning curve: the smallest and the largest size on shares of the training clusters."""
    sizes = dict.fromkeys((config.presets[0], config.presets[-1]))
    return [
        _float_task(config, out_dir, data, data_digest, preset, 0, fraction)
        for preset in sizes
        for fraction in config.learning_curve
    ]


def _model_tasks(
    config: StudyConfig, out_dir: Path, data: Path, data_digest: str
) -> tuple[list[Task], list[Task], list[Task]]:
    """The float runs of every size (the first seed), their other seeds, and the QAT runs."""
    float_tasks, seed_tasks, qat_tasks = [], [], []
    for preset in config.presets:
        model = {"preset": preset, "max_cells": config.max_cells}
        float_tasks.append(_float_task(config, out_dir, data, data_digest, preset, 0))
        seed_tasks += [_float_task(config, out_dir, data, data_digest, preset, k) for k in range(1, config.float_seeds)]
        # a QAT run that starts from the float run depends on it (and on everything the float run depends on)
        init = {"init_from": float_tasks[-1].out} if config.qat_from_float else {}
        parent = float_tasks[-1].digest if config.qat_from_float else data_digest
        for beta in config.betas:
            start = min(config.qat.beta_start, beta)
            options = _with(config.qat, model=model, beta_end=beta, beta_start=start)
            text = dump_config(_with(options, **init))
            qat_tasks.append(
                Task(
                    f"qat:{preset}:b{beta:g}",
                    "qat",
                    # the float run enters by its digest, not its path: a study moved or copied elsewhere is the same
                    digest(parent, dump_config(options), config.eval_clusters, config.qat_checkpoints),
                    str(out_dir / "qat" / f"{preset}_b{beta:g}"),
                    str(data),
                    text,
                    config.eval_clusters,
                    (
                        ("preset", preset),
                        ("beta", beta),
                        ("clock_period", config.firmware.clock_period),
                        ("checkpoints", config.qat_checkpoints),
                    ),
                )
            )
    return float_tasks, seed_tasks, qat_tasks


def _ptq_sweep(config: StudyConfig, out_dir: Path, float_tasks: list[Task], progress: Progress | None) -> str:
    """The PTQ sweeps of the float runs (resumable point by point); the digest of their inputs."""
    from calohls.stages.ptq import run_ptq

    ptq_dir = out_dir / "ptq"
    sweep_digest = digest(dump_config(config.ptq), [t.digest for t in float_tasks])
    stamp = out_dir / "ptq.digest"  # beside the sweep folder, which `calohls ptq` keeps to itself
    stale = ptq_dir.exists() and (not stamp.exists() or stamp.read_text().strip() != sweep_digest)
    if stale:
        log.warning("the float runs or PTQ options changed since %s was made: sweeping again", ptq_dir)
        shutil.rmtree(ptq_dir)
    write_text_atomic(stamp, sweep_digest + "\n")
    # the study's executor runs the sweep too, unless the PTQ section names its own
    executor = {"workers": config.ptq.workers or config.workers, "scheduler": config.ptq.scheduler or config.scheduler}
    run_ptq(
        [Path(t.out) for t in float_tasks],
        ptq_dir,
        config.ptq.model_copy(update=executor),
        progress=(lambda d, t: progress("ptq sweep", d, t)) if progress else None,
    )
    return sweep_digest


def _ptq_tasks(config: StudyConfig, out_dir: Path, float_tasks: list[Task], sweep_digest: str) -> list[Task]:
    tasks = []
    for ft in float_tasks:
        preset = ft.labels["preset"]
        inputs = out_dir / "ptq" / "inputs" / f"{Path(ft.out).name}.npz"
        for bits in config.ptq_designs:
            precision = f"ap_fixed<{bits},{config.ptq.integer_bits}>"
            tasks.append(
                Task(
                    f"ptq:{preset}:{precision}",
                    "ptq",
                    digest(ft.digest, sweep_digest, precision, config.eval_clusters),
                    ft.out,
                    ft.data,
                    "",
                    config.eval_clusters,
                    (
                        ("preset", preset),
                        ("precision", precision),
                        ("bits", bits),
                        ("inputs", str(inputs)),
                        ("clock_period", config.firmware.clock_period),
                    ),
                )
            )
    return tasks


#: Firmware is built for designs whose da4ml LUT estimate is within the budget by this factor: Yosys's count can
#: come out a few per cent above the estimate (README, "How designs are judged"), so a design at the edge could
#: come out over the budget.
ESTIMATE_MARGIN = 1.1


def _firmware_candidates(qat_tasks: list[Task], store: ResultStore) -> list[tuple[Task, dict[str, Any]]]:
    """Every Pareto checkpoint design of the finished QAT runs, with its run's task."""
    return [(t, c) for t in qat_tasks if (r := _stored(store, t)) is not None for c in r.get("checkpoints") or []]


def _firmware_task(config: StudyConfig, out_dir: Path, task: Task, checkpoint: dict[str, Any]) -> Task:
    """The firmware of one Pareto checkpoint of a QAT run."""
    name = f"{Path(task.out).name}_e{checkpoint['epoch']}"
    text = dump_config(config.firmware)
    labels = {"preset": task.labels["preset"], "beta": task.labels["beta"], "run": task.out}
    # the L0 system view replicates the design within the study's budget; a label, not part of the digest: another
    # budget needs no new firmware
    labels["l0_lut_budget"] = config.firmware.lut_budget or config.lut_budget
    return Task(
        f"firmware:{name}",
        "firmware",
        digest(task.digest, text, checkpoint["file"]),
        str(out_dir / "firmware" / name),
        task.data,
        text,
        config.eval_clusters,
        (*labels.items(), ("epoch", checkpoint["epoch"]), ("design", f"{task.key}:e{checkpoint['epoch']}")),
    )


def _firmware_tasks(config: StudyConfig, out_dir: Path, qat_tasks: list[Task], store: ResultStore) -> list[Task]:
    """Firmware for the best QAT designs (Pareto checkpoints of the QAT runs): on the resolution-vs-LUT front, the
    best within the LUT budget (with :data:`ESTIMATE_MARGIN`) first."""
    from calohls.scan.designs import pareto_front

    candidates = _firmware_candidates(qat_tasks, store)
    front = [candidates[i] for i in pareto_front([c for _, c in candidates])]
    within = [tc for tc in front if tc[1]["lut"] * ESTIMATE_MARGIN <= config.lut_budget]
    chosen = sorted(within, key=lambda tc: tc[1]["resolution"])[: config.firmware_designs]
    if len(chosen) < config.firmware_designs:
        # nothing (or too little) fits: the smallest designs up to twice the budget (Yosys's time grows with the LUTs;
        # README, Benchmarks: yosys)
        rest = [tc for tc in front if tc not in chosen and tc[1]["lut"] <= 2 * config.lut_budget]
        chosen += sorted(rest, key=lambda tc: tc[1]["lut"])[: config.firmware_designs - len(chosen)]
    return [_firmware_task(config, out_dir, t, c) for t, c in chosen]


def _built_firmware(config: StudyConfig, out_dir: Path, qat_tasks: list[Task], store: ResultStore) -> list[dict]:
    """The firmware records of every current QAT design built so far: those chosen now, and those chosen by an
    earlier scan of the same runs and firmware options (their Yosys counts still hold)."""
    tasks = (_firmware_task(config, out_dir, t, c) for t, c in _firmware_candidates(qat_tasks, store))
    return [r for t in tasks if (r := _stored(store, t)) is not None]


def run_study(
    config: StudyConfig, out_dir: str | Path, *, overwrite: bool = False, progress: Progress | None = None
) -> StudyAnswer:
    """Run (or resume) the study of ``config`` in ``out_dir``; returns the answer (also in ``scan/answer.json``).

    Raises:
        ConfigError: a firmware clock or pipeline that cannot be met, or an output that is a file (before any work).
        InputFileError, DataError: the data file is missing, unreadable or without clusters (before any work).
        FileExistsRefusedError: ``out_dir`` holds something that is not a study and ``overwrite`` is False.
        OutputError: ``out_dir`` cannot be written (a parent that is a file, a full or read-only file system).
    """
    out_dir = Path(out_dir).absolute()  # workers on other machines share the folder, not our cwd
    _check_inputs(config)
    with study_lock(out_dir):
        return _run_study(config, out_dir, overwrite, progress)


def _run_study(config: StudyConfig, out_dir: Path, overwrite: bool, progress: Progress | None) -> StudyAnswer:
    """:func:`run_study`, once the inputs are checked and the folder is locked."""
    _open_folder(out_dir, config, overwrite)
    store = ResultStore(out_dir / "tasks.jsonl")
    data, data_digest = _data(config, out_dir, store, progress)

    float_tasks, seed_tasks, qat_tasks = _model_tasks(config, out_dir, data, data_digest)
    curve_tasks = _curve_tasks(config, out_dir, data, data_digest)
    if config.qat_from_float:  # QAT starts from the float runs: train those first
        _run(float_tasks + seed_tasks + curve_tasks, store, config, "float training", progress)
        _run(qat_tasks, store, config, "QAT", progress)
    else:
        _run(float_tasks + seed_tasks + curve_tasks + qat_tasks, store, config, "train", progress)
    sweep_digest = _ptq_sweep(config, out_dir, float_tasks, progress)
    ptq_tasks = _ptq_tasks(config, out_dir, float_tasks, sweep_digest)
    _run(ptq_tasks, store, config, "ptq designs", progress)
    firmware_tasks = _firmware_tasks(config, out_dir, qat_tasks, store)
    _run(firmware_tasks, store, config, "firmware", progress)

    records = {
        "float": [_stored(store, t) for t in float_tasks + seed_tasks],
        "learning_curve": [_stored(store, t) for t in curve_tasks + float_tasks],
        "ptq": [_stored(store, t) for t in ptq_tasks],
        "qat": [_stored(store, t) for t in qat_tasks],
        "firmware": _built_firmware(config, out_dir, qat_tasks, store),
    }
    summary_path = out_dir / "ptq" / "summary.json"
    ptq_summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
    findings = study_findings(records, config, ptq_summary)
    write_findings(findings, config, out_dir / "scan")
    return findings.answer


def write_findings(findings: StudyFindings, config: StudyConfig, scan_dir: Path) -> None:
    """Write ``points.jsonl``, ``pareto.json`` and ``answer.json`` into ``scan_dir``, then draw the figures."""
    from calohls.plots.study import draw_learning_curve, draw_study

    scan_dir.mkdir(parents=True, exist_ok=True)
    points = findings.points
    write_text_atomic(scan_dir / "points.jsonl", "".join(json.dumps(p, allow_nan=False) + "\n" for p in points))
    write_text_atomic(scan_dir / "pareto.json", json.dumps(findings.front, indent=1, allow_nan=False))
    answer = findings.answer.to_json()
    write_text_atomic(scan_dir / "answer.json", json.dumps(answer, indent=1, allow_nan=False))
    draw_study(points, config, scan_dir, answer["float_references"])
    if findings.curves:
        draw_learning_curve(findings.curves, scan_dir / "learning_curve.png")
