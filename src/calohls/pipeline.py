"""The whole study in one call: the size × precision scan (data to firmware), then the HTML report."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calohls.config import StudyConfig
from calohls.scan.answer import StudyAnswer
from calohls.stages.study import Progress, run_study, study_lock

__all__ = ["PipelineResult", "run_pipeline"]


@dataclass(frozen=True)
class PipelineResult:
    """What :func:`run_pipeline` made: the study's answer, the report's path and the wall time in seconds."""

    answer: StudyAnswer
    report: Path
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"answer": self.answer.to_json(), "report": str(self.report), "seconds": self.seconds}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PipelineResult:
        return cls(StudyAnswer.from_json(data["answer"]), Path(data["report"]), float(data["seconds"]))


def run_pipeline(
    config: StudyConfig, out_dir: str | Path, *, overwrite: bool = False, progress: Progress | None = None
) -> PipelineResult:
    """Run (or resume) the study in ``out_dir`` and write ``out_dir/report.html``.

    ``overwrite`` replaces an ``out_dir`` that holds something other than a study (see
    :func:`~calohls.stages.study.run_study`).
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
    return PipelineResult(answer, Path(report), time.perf_counter() - start)
