"""The work items of the size × precision study, run in worker processes (local or Dask).

Each function takes a :class:`Task` (picklable: plain strings and numbers) and returns a JSON-ready record of the
design it made. Outputs go to the task's folder, replaced whole when the task runs (a task only runs when its
folder is missing or was made from other inputs).
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from calohls.scan.designs import cost_fields

__all__ = ["Task", "run_task"]

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
    def labels(self) -> dict[str, Any]:
        return dict(self.info)


def run_task(task: Task) -> dict[str, Any]:
    """Do one task; the record of the design it made (with ``key``, ``kind``, ``digest`` and ``seconds``)."""
    start = time.perf_counter()
    record = _RUNNERS[task.kind](task)
    return {
        "key": task.key,
        "kind": task.kind,
        "digest": task.digest,
        **task.labels,
        **record,
        "seconds": time.perf_counter() - start,
    }


def _summary_of_run(run_dir: Path, eval_clusters: int) -> dict[str, Any]:
    """Evaluate a run folder (writes ``eval/``) and the study's summary numbers on its first test clusters."""
    from calohls.scan.designs import resolution_summary
    from calohls.stages.evaluate import evaluate_and_draw

    evaluation = evaluate_and_draw(run_dir, overwrite=True)
    n = eval_clusters
    info = yaml.safe_load((run_dir / "run.json").read_text())
    return {
        "run": str(run_dir),
        "parameters": info["model"]["parameters"],
        **resolution_summary(evaluation.e_true[:n], evaluation.predictions["deepsets"][:n]),
    }


def _float(task: Task) -> dict[str, Any]:
    from calohls.config import TrainConfig, load_config
    from calohls.model.train import train

    config = load_config(TrainConfig, yaml.safe_load(task.config))
    result = train(task.data, task.out, config, overwrite=True)
    return {
        "epochs": result.epochs,
        "val_loss": result.best_val_loss,
        "n_train": result.n_train,
        "converged": result.convergence.converged,
        "convergence": result.convergence.to_json(),
        **_summary_of_run(Path(task.out), task.eval_clusters),
    }


def _qat(task: Task) -> dict[str, Any]:
    """A QAT run (evaluated with its selected checkpoint), and its Pareto checkpoints as designs."""
    from calohls.config import QATConfig, load_config
    from calohls.model.qat import train_qat
    from calohls.scan.qat_designs import checkpoint_designs

    config = load_config(QATConfig, yaml.safe_load(task.config))
    result = train_qat(task.data, task.out, config, overwrite=True)
    labels = task.labels
    return {
        "epochs": result.epochs,
        "val_loss": result.best_val_loss,
        "ebops": result.ebops,
        **_summary_of_run(Path(task.out), task.eval_clusters),
        "checkpoints": checkpoint_designs(
            task.out, task.eval_clusters, clock_period=labels["clock_period"], limit=labels["checkpoints"]
        ),
    }


def _ptq(task: Task) -> dict[str, Any]:
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
    return {
        "run": task.out,
        "parameters": run.info["model"]["parameters"],
        "mpe": mpe,
        "mean_signed_difference": signed,
        **resolution_summary(e_true, e_quant),
        "lut_source": "da4ml",
        **cost_fields(ptq_estimate(run.model, precision, clock_period=labels["clock_period"])),
    }


def _firmware(task: Task) -> dict[str, Any]:
    """Full firmware of a QAT design: hls4ml and Verilator checked bit for bit against Keras, Yosys resources."""
    from calohls.config import FirmwareConfig, load_config
    from calohls.firmware.build import firmware_from_run

    config = load_config(FirmwareConfig, yaml.safe_load(task.config))
    if config.lut_budget is None and task.labels.get("l0_lut_budget"):
        config = config.model_copy(update={"lut_budget": task.labels["l0_lut_budget"]})
    result = firmware_from_run(task.labels["run"], task.out, config, overwrite=True, epoch=task.labels.get("epoch"))
    return {
        "firmware": task.out,
        "bit_exact": result.bit_exact,
        "clusters_checked": result.clusters_checked,
        "differing": result.differing,
        "ii": result.ii,
        "lut_source": "yosys" if result.resources else "da4ml",
        **cost_fields(
            {
                **(result.resources or result.estimate),
                "latency_cycles": result.latency_cycles,
                "latency_ns": result.latency_estimate_ns,
            }
        ),
        **_timing_fields(result),
    }


def _timing_fields(result: Any) -> dict[str, Any]:
    """The timing estimate and the L0 system view of a firmware design (``latency_ns`` above is the latency at the
    target clock, or at the estimated period where that is longer; ``latency_target_ns`` at the target clock).
    ``timing_met`` is None where timing was not estimated (no synthesis)."""
    timing = result.timing
    return {
        "latency_target_ns": result.latency_ns,
        "period_estimate_ns": None if timing is None else round(timing.period_ns, 3),
        "fmax_estimate_mhz": None if timing is None else round(timing.fmax_mhz, 1),
        "timing_met": None if timing is None else timing.met,
        "clusters_per_bx_per_instance": result.l0.clusters_per_bx_per_instance,
        "instances": result.l0.instances,
        "clusters_per_bx": result.l0.clusters_per_bx,
    }


_RUNNERS = {"float": _float, "qat": _qat, "ptq": _ptq, "firmware": _firmware}
