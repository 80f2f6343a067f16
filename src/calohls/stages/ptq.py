"""The PTQ sweep as a stage: run (or resume) the sweep, write its findings (``summary.json``) and draw it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from calohls.config import PTQConfig
from calohls.files import write_text_atomic
from calohls.scan import ptq as sweep
from calohls.scan.ptq_summary import PTQSummary, summarize_ptq

__all__ = ["run_ptq"]


def run_ptq(
    run_dirs: list[Path],
    out_dir: Path,
    config: PTQConfig,
    *,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> PTQSummary:
    """Run (or resume) the sweeps of ``config`` for every run (:func:`calohls.scan.ptq.run_ptq`), write
    ``summary.json`` and the figures into ``out_dir``; returns the summary."""
    from calohls.plots.ptq import draw_ptq

    out_dir = Path(out_dir)
    result = sweep.run_ptq(run_dirs, out_dir, config, overwrite=overwrite, progress=progress)
    summary = summarize_ptq(result.records, result.runs, config)
    write_text_atomic(out_dir / "summary.json", json.dumps(summary.to_json(), indent=1))
    draw_ptq(result.records, result.runs, out_dir, config)
    return summary
