"""The work items of the size × precision study, run in worker processes (local or Dask).

Each function takes a :class:`Task` (picklable: plain strings and numbers) and returns a typed record of the
design it made (:class:`FloatRecord`, :class:`QATRecord`, :class:`PTQRecord` or :class:`FirmwareRecord`);
:func:`run_task` wraps it in a :class:`TaskRecord`, whose :meth:`~TaskRecord.to_json` is the line the study stores.
Outputs go to the task's folder, replaced whole when the task runs (a task only runs when its folder is missing or
was made from other inputs).
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from calohls.scan.designs import DesignCost, DesignTiming, ResolutionSummary

__all__ = [
    "FirmwareRecord",
    "FloatRecord",
    "PTQRecord",
    "QATRecord",
    "RunSummary",
    "Task",
    "TaskRecord",
    "run_task",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Task:
    """One unit of study work.

    Attributes:
        key: Unique name, e.g. ``float:small``, ``qat:small:b1e-05``, ``ptq:small:ap_fixed<16,10>``,
            ``firmware:small_b1e-05_e31``.
        kind: ``float``, ``qat``, ``ptq`` or ``firmware``.
        digest: Content hash of everything the output depends on (config and inputs).
        out: Output folder (float/QAT runs, firmware) or the float run to quantize (PTQ).
        data: The cluster file.
        config: The stage's resolved options as YAML text.
        eval_clusters: Test clusters the summary numbers are computed on (the first ones of the test set).
        info: Labels carried into the record (preset, beta, precision, run folders, ...).
    """

    key: str
    kind: str
    digest: str
    out: str
    data: str
    config: str
    eval_clusters: int
    info: tuple[tuple[str, Any], ...] = field(default=())

    @property
    def labels(self) -> Mapping[str, Any]:
        return dict(self.info)


# -- records: what a task made --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunSummary:
    """A trained run judged on the study's first test clusters: its folder, its size and its resolution numbers
    (:func:`calohls.scan.designs.resolution_summary`)."""

    run: str
    parameters: int
    resolution: ResolutionSummary

    def to_json(self) -> dict[str, Any]:
        return {"run": self.run, "parameters": self.parameters, **self.resolution.to_json()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunSummary:
        return cls(data["run"], data["parameters"], ResolutionSummary.from_json(data))


@dataclass(frozen=True)
class FloatRecord:
    """A float run: its training and its summary."""

    epochs: int
    val_loss: float
    n_train: int
    converged: bool
    convergence: Mapping[str, Any]
    summary: RunSummary

    def to_json(self) -> dict[str, Any]:
        return {
            "epochs": self.epochs,
            "val_loss": self.val_loss,
            "n_train": self.n_train,
            "converged": self.converged,
            "convergence": self.convergence,
            **self.summary.to_json(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FloatRecord:
        fields = ("epochs", "val_loss", "n_train", "converged", "convergence")
        return cls(*(data[k] for k in fields), summary=RunSummary.from_json(data))


@dataclass(frozen=True)
class QATRecord:
    """A QAT run (its selected checkpoint summarised) and its Pareto checkpoints as design records."""

    epochs: int
    val_loss: float
    ebops: float
    summary: RunSummary
    checkpoints: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {
            "epochs": self.epochs,
            "val_loss": self.val_loss,
            "ebops": self.ebops,
            **self.summary.to_json(),
            "checkpoints": self.checkpoints,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> QATRecord:
        summary = RunSummary.from_json(data)
        return cls(data["epochs"], data["val_loss"], data["ebops"], summary, list(data["checkpoints"]))


@dataclass(frozen=True)
class PTQRecord:
    """A float run at one precision: its error against the float network, its summary and da4ml's cost."""

    summary: RunSummary
    mpe: float
    mean_signed_difference: float
    cost: DesignCost

    def to_json(self) -> dict[str, Any]:
        return {
            "run": self.summary.run,
            "parameters": self.summary.parameters,
            "mpe": self.mpe,
            "mean_signed_difference": self.mean_signed_difference,
            **self.summary.resolution.to_json(),
            "lut_source": "da4ml",
            **self.cost.to_json(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PTQRecord:
        summary = RunSummary.from_json(data)
        return cls(summary, data["mpe"], data["mean_signed_difference"], DesignCost.from_json(data))


@dataclass(frozen=True)
class FirmwareRecord:
    """Built firmware of a QAT design: its checks, its cost (Yosys, or da4ml without synthesis) and its timing."""

    firmware: str
    bit_exact: bool
    clusters_checked: int
    differing: Mapping[str, int]
    ii: int
    lut_source: str
    cost: DesignCost
    timing: DesignTiming

    def to_json(self) -> dict[str, Any]:
        return {
            "firmware": self.firmware,
            "bit_exact": self.bit_exact,
            "clusters_checked": self.clusters_checked,
            "differing": self.differing,
            "ii": self.ii,
            "lut_source": self.lut_source,
            **self.cost.to_json(),
            **self.timing.to_json(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FirmwareRecord:
        fields = ("firmware", "bit_exact", "clusters_checked", "differing", "ii", "lut_source")
        return cls(*(data[k] for k in fields), cost=DesignCost.from_json(data), timing=DesignTiming.from_json(data))


DesignRecord = FloatRecord | QATRecord | PTQRecord | FirmwareRecord

#: The record class of each task kind.
RECORDS: dict[str, type[FloatRecord] | type[QATRecord] | type[PTQRecord] | type[FirmwareRecord]] = {
    "float": FloatRecord,
    "qat": QATRecord,
    "ptq": PTQRecord,
    "firmware": FirmwareRecord,
}

_IDENTITY = ("key", "kind", "digest", "seconds")


@dataclass(frozen=True)
class TaskRecord:
    """What one task made: the task's identity and labels, the design's record, and the seconds it took."""

    key: str
    kind: str
    digest: str
    labels: Mapping[str, Any]
    design: DesignRecord
    seconds: float

    def to_json(self) -> dict[str, Any]:
        """The stored line: ``key``, ``kind``, ``digest``, the labels, the design's fields, ``seconds``."""
        return {
            "key": self.key,
            "kind": self.kind,
            "digest": self.digest,
            **self.labels,
            **self.design.to_json(),
            "seconds": self.seconds,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TaskRecord:
        design = RECORDS[data["kind"]].from_json(data)
        own = set(design.to_json()) | set(_IDENTITY)
        labels = {k: v for k, v in data.items() if k not in own}
        return cls(data["key"], data["kind"], data["digest"], labels, design, data["seconds"])


# -- running a task --------------------------------------------------------------------------------------------


def run_task(task: Task) -> TaskRecord:
    """Do one task; the record of the design it made."""
    start = time.perf_counter()
    design = _RUNNERS[task.kind](task)
    return TaskRecord(task.key, task.kind, task.digest, task.labels, design, time.perf_counter() - start)


def _summary_of_run(run_dir: Path, eval_clusters: int) -> RunSummary:
    """Evaluate a run folder (writes ``eval/``) and the study's summary numbers on its first test clusters."""
    from calohls.scan.designs import resolution_summary
    from calohls.stages.evaluate import evaluate_and_draw

    evaluation = evaluate_and_draw(run_dir, overwrite=True)
    n = eval_clusters
    info = yaml.safe_load((run_dir / "run.json").read_text())
    summary = resolution_summary(evaluation.e_true[:n], evaluation.predictions["deepsets"][:n])
    return RunSummary(str(run_dir), info["model"]["parameters"], summary)


def _float(task: Task) -> FloatRecord:
    from calohls.config import TrainConfig, load_config
    from calohls.model.train import train

    config = load_config(TrainConfig, yaml.safe_load(task.config))
    result = train(task.data, task.out, config, overwrite=True)
    return FloatRecord(
        epochs=result.epochs,
        val_loss=result.best_val_loss,
        n_train=result.n_train,
        converged=result.convergence.converged,
        convergence=result.convergence.to_json(),
        summary=_summary_of_run(Path(task.out), task.eval_clusters),
    )


def _qat(task: Task) -> QATRecord:
    """A QAT run (evaluated with its selected checkpoint), and its Pareto checkpoints as designs."""
    from calohls.config import QATConfig, load_config
    from calohls.model.qat import train_qat
    from calohls.scan.qat_designs import checkpoint_designs

    config = load_config(QATConfig, yaml.safe_load(task.config))
    result = train_qat(task.data, task.out, config, overwrite=True)
    labels = task.labels
    summary = _summary_of_run(Path(task.out), task.eval_clusters)
    checkpoints = checkpoint_designs(
        task.out, task.eval_clusters, clock_period=labels["clock_period"], limit=labels["checkpoints"]
    )
    return QATRecord(result.epochs, result.best_val_loss, result.ebops, summary, checkpoints)


def _ptq(task: Task) -> PTQRecord:
    """A float run at one precision: emulated (bit-exact to hls4ml) on the study's inputs, costed by da4ml."""
    from calohls.data.features import energy_from_target
    from calohls.firmware.hls import Precision, convert
    from calohls.firmware.ptq_rtl import ptq_estimate
    from calohls.model.run_folder import open_run
    from calohls.quant.emulate import Emulator
    from calohls.quant.metrics import mean_percent_error
    from calohls.scan.designs import resolution_summary

    labels = task.labels
    run = open_run(task.out)
    with np.load(labels["inputs"]) as z:
        x, e_true, e_em, y_float = z["x"], z["e_true"], z["e_em"], z["y_float"]
    n = task.eval_clusters
    x, e_true, e_em, y_float = x[:n], e_true[:n], e_em[:n], y_float[:n]
    precision = Precision(default=labels["precision"])
    with tempfile.TemporaryDirectory(prefix="calohls-ptq-") as work:
        y_q = Emulator.from_hls(convert(run.model, precision, Path(work) / "prj")).predict(x)
    e_float = run.correction.apply(energy_from_target(y_float, e_em, run.config.target))
    e_quant = run.correction.apply(energy_from_target(np.asarray(y_q, np.float64), e_em, run.config.target))
    mpe, signed = mean_percent_error(e_quant, e_float)
    summary = RunSummary(task.out, run.info["model"]["parameters"], resolution_summary(e_true, e_quant))
    cost = DesignCost.of(ptq_estimate(run.model, precision, clock_period=labels["clock_period"]).to_json())
    return PTQRecord(summary, mpe, signed, cost)


def _firmware(task: Task) -> FirmwareRecord:
    """Full firmware of a QAT design: hls4ml and Verilator checked bit for bit against Keras, Yosys resources."""
    from calohls.config import FirmwareConfig, load_config
    from calohls.firmware.build import firmware_from_run

    config = load_config(FirmwareConfig, yaml.safe_load(task.config))
    if config.lut_budget is None and task.labels.get("l0_lut_budget"):
        config = config.model_copy(update={"lut_budget": task.labels["l0_lut_budget"]})
    result = firmware_from_run(task.labels["run"], task.out, config, overwrite=True, epoch=task.labels.get("epoch"))
    latency = {"latency_cycles": result.latency_cycles, "latency_ns": result.latency_estimate_ns}
    return FirmwareRecord(
        firmware=task.out,
        bit_exact=result.bit_exact,
        clusters_checked=result.clusters_checked,
        differing=result.differing,
        ii=result.ii,
        lut_source="yosys" if result.resources else "da4ml",
        cost=DesignCost.of({**(result.resources or result.estimate), **latency}),
        timing=DesignTiming.of(result),
    )


_RUNNERS = {"float": _float, "qat": _qat, "ptq": _ptq, "firmware": _firmware}
