"""Evaluation as a stage: evaluate a run (:func:`calohls.physics.evaluate.evaluate_run` writes ``eval/``
metrics) and draw its figures into the same folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from calohls.physics.evaluate import Evaluation, evaluate_run

__all__ = ["evaluate_and_draw"]


def evaluate_and_draw(run_dir: str | Path, **options: Any) -> Evaluation:
    """:func:`~calohls.physics.evaluate.evaluate_run` with ``options``, then the figures in ``run_dir/eval``."""
    from calohls.plots.evaluation import draw_evaluation

    result = evaluate_run(run_dir, **options)
    draw_evaluation(result, Path(run_dir) / "eval")
    return result
