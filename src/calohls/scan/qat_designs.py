"""Every kept Pareto checkpoint of a QAT run as a design of the size × precision study.

One QAT run with a rising beta passes through a whole range of bit widths: its Pareto checkpoints (validation loss
vs EBOPs, :mod:`calohls.model.qat`) are designs from nearly float-sized to very small. The study judges each of them
like any other design: its own response correction, fitted on the validation clusters as training does for the
selected checkpoint, its resolution on the study's test clusters, and da4ml's cost estimate.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["checkpoint_designs", "thin_front"]


def thin_front(front: Sequence[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """At most ``limit`` points of a Pareto front (sorted by EBOPs), spread evenly in log EBOPs; the ends of the
    front and the selected checkpoint are always among them (so ``limit`` may be exceeded by one)."""
    if len(front) <= limit:
        return list(front)
    logs = np.log(np.maximum([p["ebops"] for p in front], 1.0))
    keep = {int(np.argmin(np.abs(logs - t))) for t in np.linspace(logs[0], logs[-1], limit)}
    keep |= {0, len(front) - 1} | {i for i, p in enumerate(front) if p.get("selected")}
    return [front[i] for i in sorted(keep)]


def checkpoint_designs(
    run_dir: str | Path, eval_clusters: int, *, clock_period: float, limit: int
) -> list[dict[str, Any]]:
    """The Pareto checkpoints of the QAT run ``run_dir`` (at most about ``limit``) as design records.

    Each record has the checkpoint's ``epoch``, ``file``, ``val_loss``, ``ebops``, ``beta`` and ``selected`` (from
    ``pareto.json``), the study's resolution numbers on the first ``eval_clusters`` test clusters
    (:func:`calohls.scan.designs.resolution_summary`) and da4ml's ``lut``/``ff``/latency estimate.
    """
    from calohls.firmware.rtl import estimate
    from calohls.model.correction import ResponseCorrection
    from calohls.model.run_folder import open_run, predict
    from calohls.physics.evaluate import read_clusters_at
    from calohls.scan.designs import DesignCost, resolution_summary

    run_dir = Path(run_dir)
    run = open_run(run_dir, "qat")
    front = thin_front(json.loads((run_dir / "pareto.json").read_text()), limit)
    val = read_clusters_at(run.data_path, run.file_index("val"))
    test = read_clusters_at(run.data_path, run.file_index("test")[:eval_clusters])
    designs = []
    for point in front:
        run.model.load_weights(run_dir / point["file"])
        e_val = predict(run.model, run.scaler, val, target_kind=run.config.target)
        correction = ResponseCorrection.fit(
            val["e_true"].astype(np.float64), e_val, min_energy=run.config.correction_min_energy
        )
        e_test = correction.apply(predict(run.model, run.scaler, test, target_kind=run.config.target))
        designs.append(
            {
                **{k: point[k] for k in ("epoch", "file", "val_loss", "ebops", "beta", "selected")},
                **resolution_summary(test["e_true"].astype(np.float64), e_test).to_json(),
                "lut_source": "da4ml",
                **DesignCost.of(estimate(run.model, clock_period=clock_period).to_json()).to_json(),
            }
        )
    return designs
