"""Evaluation as a stage: evaluate a run (:func:`calohls.physics.evaluate.evaluate_run` computes an
:class:`~calohls.physics.evaluate.Evaluation`), write it to ``eval/`` in the run folder (``metrics.json`` and each
fitted calibration's file) and draw its figures into the same folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from calohls.errors import FileExistsRefusedError
from calohls.files import atomic_folder
from calohls.physics.evaluate import Evaluation, evaluate_run

__all__ = ["evaluate_and_draw", "evaluate_and_write", "write_evaluation"]


def write_evaluation(result: Evaluation, out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``result`` to ``out_dir`` as a whole: ``metrics.json`` and the file of every fitted calibration."""
    out_dir = Path(out_dir)
    with atomic_folder(out_dir, overwrite=overwrite) as staging:
        (staging / "metrics.json").write_text(json.dumps(result.to_json(), indent=1, allow_nan=False))
        for calibration in result.calibrations.values():
            calibration.save(staging)
    return out_dir


def evaluate_and_write(run_dir: str | Path, *, overwrite: bool = False, **options: Any) -> Evaluation:
    """:func:`~calohls.physics.evaluate.evaluate_run` with ``options``, written to ``run_dir/eval`` (no figures).

    An earlier ``eval/`` is refused before anything is computed unless ``overwrite`` (then replaced as a whole).
    """
    out_dir = Path(run_dir) / "eval"
    if out_dir.exists() and not overwrite:
        raise FileExistsRefusedError(out_dir)
    result = evaluate_run(run_dir, **options)
    write_evaluation(result, out_dir, overwrite=overwrite)
    return result


def evaluate_and_draw(run_dir: str | Path, *, overwrite: bool = False, **options: Any) -> Evaluation:
    """:func:`evaluate_and_write`, then the figures in ``run_dir/eval``."""
    from calohls.plots.evaluation import draw_evaluation

    result = evaluate_and_write(run_dir, overwrite=overwrite, **options)
    draw_evaluation(result, Path(run_dir) / "eval")
    return result
