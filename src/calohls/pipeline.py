"""The whole study in one call: the size × precision scan (data to firmware), then the HTML report."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from calohls.config import StudyConfig
from calohls.scan.study import Progress, run_study, study_lock

__all__ = ["run_pipeline"]


def run_pipeline(
    config: StudyConfig, out_dir: str | Path, *, overwrite: bool = False, progress: Progress | None = None
) -> dict[str, Any]:
    """Run (or resume) the study in ``out_dir`` and write ``out_dir/report.html``.

    ``overwrite`` replaces an ``out_dir`` that holds something other than a study (see
    :func:`~calohls.scan.study.run_study`). Returns the answer, the report's path and the wall time.
    """
    from calohls.report import write_report

    start = time.perf_counter()
    out_dir = Path(out_dir)
    with study_lock(out_dir):  # held until the report is written
        answer = run_study(config, out_dir, overwrite=overwrite, progress=progress)
        if progress:
            progress("report", 0, 1)
        report = write_report(out_dir, out_dir / "report.html", overwrite=True)
        if progress:
            progress("report", 1, 1)
    return {"answer": answer, "report": report, "seconds": time.perf_counter() - start}
