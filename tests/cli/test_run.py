"""``calohls run`` end to end on a tiny study, and killed during the PTQ sweep: the resumed run must finish with the
same results as an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

#: A tiny study (simulated here): one size, 8 cells, a few epochs, a PTQ sweep long enough to be killed in.
TINY_RUN = {
    "sim": {"events": 1500, "seed": 5},
    "presets": ["tiny"],
    "max_cells": 8,
    "train": {"epochs": 3, "batch_size": 128, "seed": 2},
    "qat": {"epochs": 3, "batch_size": 128, "seed": 2},
    "betas": [1e-7],
    "ptq": {"sweeps": ["total-bits"], "total_bits_range": [10, 32], "clusters": 200, "trace_clusters": 50},
    "ptq_designs": [14],
    "firmware_designs": 0,
    "eval_clusters": 200,
    "float_seeds": 1,
    "learning_curve": [],
    "workers": 1,
}

#: Fields that differ between two runs of the same work (timings, folders).
_VOLATILE = {"seconds", "run", "run_dir", "inputs", "firmware"}


def _command(config, out):
    return [sys.executable, "-m", "calohls", "run", "--config", str(config), "-o", str(out), "--hide-progress"]


def _records(path):
    out = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        out[record["key"]] = {k: v for k, v in record.items() if k not in _VOLATILE}
    return out


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "study.yaml"
    path.write_text(yaml.safe_dump(TINY_RUN))
    return path


@pytest.fixture(scope="module")
def uninterrupted(config, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "whole"
    result = subprocess.run(_command(config, out), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    return out, result


def test_run_writes_the_report_and_the_answer(uninterrupted):
    out, result = uninterrupted
    html = (out / "report.html").read_text()
    answer = json.loads((out / "scan" / "answer.json").read_text())
    assert answer["answer"] in result.stdout
    assert "<img" in html
    assert answer["answer"].split(":")[0] in html
    assert (out / "data" / "clusters.h5").exists()


def test_second_run_skips_everything(uninterrupted, config):
    out, _ = uninterrupted
    tasks = (out / "tasks.jsonl").read_text()
    start = time.perf_counter()
    result = subprocess.run(_command(config, out), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (out / "tasks.jsonl").read_text() == tasks
    assert time.perf_counter() - start < 120  # nothing trained again (a training alone takes longer cold)


def test_killed_during_the_ptq_sweep_resumes_to_the_same_results(uninterrupted, config, tmp_path):
    whole, _ = uninterrupted
    out = tmp_path / "killed"
    results = out / "ptq" / "results.jsonl"
    process = subprocess.Popen(_command(config, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if results.exists() and len(results.read_text().splitlines()) >= 3:
                break
            time.sleep(0.02)
        assert process.poll() is None, "the run ended before the PTQ sweep could be interrupted"
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    done_before = len(results.read_text().splitlines())
    assert 3 <= done_before < 23
    assert not (out / "scan").exists()

    result = subprocess.run(_command(config, out), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    assert _records(results) == _records(whole / "ptq" / "results.jsonl")  # every point once, equal values
    assert len(results.read_text().splitlines()) == 23
    assert _records(out / "scan" / "points.jsonl") == _records(whole / "scan" / "points.jsonl")
    assert (
        json.loads((out / "scan" / "answer.json").read_text())["answer"]
        == json.loads((whole / "scan" / "answer.json").read_text())["answer"]
    )
