"""End-to-end benchmark: ``calohls run`` (simulate → train → PTQ → QAT → firmware → report) and its re-run."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks import Options, benchmark

#: The study of ``--quick``: one tiny size on 8 cells, a few epochs, a few thousand clusters (a few minutes).
QUICK_STUDY: dict[str, Any] = {
    "sim": {"events": 6000, "seed": 3},
    "presets": ["tiny"],
    "max_cells": 8,
    "train": {"epochs": 3, "batch_size": 256, "seed": 1},
    "qat": {"epochs": 4, "batch_size": 256, "seed": 1},
    "betas": [1e-7],
    "ptq": {"sweeps": ["total-bits"], "total_bits_range": [12, 16], "clusters": 1000, "trace_clusters": 100},
    "ptq_designs": [12, 16],
    "firmware": {"clusters": 1000, "synth": True},
    "firmware_designs": 1,
    "eval_clusters": 1000,
}

#: Task kinds of a study's ``tasks.jsonl``, in the order the study runs them.
KINDS = ("data", "float", "qat", "ptq", "firmware")


def _calohls_run(study: Path, config: Path | None, log: Path) -> float:
    """Run ``python -m calohls run`` into ``study``; its wall seconds.

    Raises:
        RuntimeError: the command failed (with the end of its output).
    """
    command = [sys.executable, "-m", "calohls", "run", "-o", str(study), "--hide-progress"]
    if config is not None:
        command += ["--config", str(config)]
    start = time.perf_counter()
    with log.open("w") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"`{' '.join(command)}` failed with exit status {done.returncode}:\n{tail}")
    return wall


def _stages(study: Path) -> dict[str, Any]:
    """Seconds of every task recorded in ``tasks.jsonl``, grouped by kind (tasks of a kind may run in parallel, so
    their sum can exceed the wall time of the stage)."""
    records = [json.loads(line) for line in (study / "tasks.jsonl").read_text().splitlines() if line.strip()]
    stages: dict[str, Any] = {}
    for kind in [*KINDS, *sorted({r["kind"] for r in records} - set(KINDS))]:
        tasks = {r["key"].split("@")[0]: r["seconds"] for r in records if r["kind"] == kind}
        if tasks:
            stages[kind] = {"tasks": len(tasks), "seconds": sum(tasks.values()), "per_task": tasks}
    return stages


def _firmware_timings(study: Path) -> dict[str, Any]:
    """``timings`` of every firmware folder's ``firmware.json`` (hls4ml, Verilator, Yosys seconds)."""
    return {
        path.parent.name: json.loads(path.read_text()).get("timings")
        for path in sorted((study / "firmware").glob("*/firmware.json"))
    }


@benchmark()
def run_end_to_end(opts: Options) -> dict[str, Any]:
    """Wall time of ``calohls run`` with the built-in default study (about 7 minutes; --quick: a tiny study),
    the seconds of its tasks by stage, its answer, and the time of a second run on the same folder (all up to date).
    """
    config = None
    if opts.quick:
        config = opts.scratch / "study.yaml"
        config.write_text(yaml.safe_dump(QUICK_STUDY, sort_keys=False))
    study = opts.scratch / "study"
    wall = _calohls_run(study, config, opts.scratch / "run1.log")
    n_tasks = len((study / "tasks.jsonl").read_text().splitlines())
    again = _calohls_run(study, config, opts.scratch / "run2.log")
    new_tasks = len((study / "tasks.jsonl").read_text().splitlines()) - n_tasks
    stages = _stages(study)
    answer = json.loads((study / "scan" / "answer.json").read_text())
    report = study / "report.html"

    summary = [f"calohls run ({'quick study' if opts.quick else 'built-in default'}): {wall:.0f} s"]
    summary += [
        f"    {kind:9s} {s['tasks']:3d} tasks, {s['seconds']:7.1f} s of task time" for kind, s in stages.items()
    ]
    summary.append(f"second run on the same folder: {again:.1f} s, {new_tasks} tasks redone")
    summary.append(f"report.html {'written' if report.is_file() else 'MISSING'}; answer: {answer['answer']}")
    return {
        "study": "quick" if opts.quick else "default",
        "config": QUICK_STUDY if opts.quick else None,
        "run_wall_s": wall,  # (the entry's own wall_s, set by run.py, also counts the second run)
        "stages": stages,
        "firmware_timings": _firmware_timings(study),
        "answer": answer["answer"],
        "answer_details": answer.get("details"),
        "report_exists": report.is_file(),
        "report_bytes": report.stat().st_size if report.is_file() else None,
        "second_run_s": again,
        "second_run_new_tasks": new_tasks,
        "summary": summary,
    }
