from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from calohls.config import PTQConfig
from calohls.errors import FileExistsRefusedError, InputFileError
from calohls.scan import ptq
from calohls.scan.store import ResultStore
from calohls.stages import ptq as ptq_stage

SMALL = {"sweeps": ("int-bits",), "total_bits": 12, "int_bits": (4, 6), "clusters": 300, "trace_clusters": 60,
         "workers": 1}  # fmt: skip


@pytest.fixture(scope="module")
def swept(trained_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("ptq") / "out"
    summary = ptq_stage.run_ptq([trained_run], out, PTQConfig.model_validate(SMALL))
    return out, summary


def test_outputs(swept, trained_run):
    out, summary = swept
    records = list(ResultStore(out / "results.jsonl"))
    assert [r["value"] for r in records] == [4, 5, 6]
    r = records[0]
    assert r["key"] == f"{trained_run.name}|int-bits|4"
    assert r["label"] == "ap_fixed<12,4>"
    assert r["mpe"] >= 0
    assert set(r["layers"]) >= {"phi_1", "phi_1_relu", "ksum", "output"}
    assert r["types"]["ksum"]["accum_t"].startswith("fixed<12,4")
    assert {"mpe_int-bits.png", "resolution_int-bits.png", f"layers_int-bits_{trained_run.name}.png"} <= {
        p.name for p in out.iterdir()
    }
    assert json.loads((out / "summary.json").read_text())["findings"] == summary.findings
    assert summary.sweeps["int-bits"][trained_run.name].values == [4, 5, 6]


def test_rerun_computes_nothing_finished(swept, trained_run, monkeypatch):
    out, _ = swept
    calls = []
    monkeypatch.setattr(ptq, "evaluate_point", lambda p: calls.append(p) or pytest.fail("recomputed"))
    ptq_stage.run_ptq([trained_run], out, PTQConfig.model_validate(SMALL))
    assert calls == []


def test_other_options_are_refused_without_overwrite(swept, trained_run):
    out, _ = swept
    with pytest.raises(FileExistsRefusedError, match="--overwrite"):
        ptq_stage.run_ptq([trained_run], out, PTQConfig.model_validate({**SMALL, "total_bits": 14}))


def test_not_a_run(tmp_path):
    with pytest.raises(InputFileError, match="not a calohls run folder"):
        ptq_stage.run_ptq([tmp_path], tmp_path / "out", PTQConfig.model_validate(SMALL))


def test_emulator_and_csim_give_the_same_records(trained_run, tmp_path):
    """Through the whole pipeline, the emulator's numbers equal hls4ml's C-simulation's, bit for bit."""
    config = {**SMALL, "int_bits": (5, 5), "clusters": 200}
    records = {}
    for engine in ("emulate", "csim"):
        ptq_stage.run_ptq([trained_run], tmp_path / engine, PTQConfig.model_validate({**config, "engine": engine}))
        records[engine] = next(iter(ResultStore(tmp_path / engine / "results.jsonl")))
    for key in ("mpe", "mean_signed_difference", "identical_fraction", "median_response", "resolution", "layers"):
        assert records["emulate"][key] == records["csim"][key], key


def test_killed_sweep_resumes_without_losing_or_repeating(trained_run, tmp_path):
    out = tmp_path / "out"
    args = [sys.executable, "-m", "calohls", "ptq", str(trained_run), "-o", str(out), "--sweep", "int-bits",
            "--total-bits", "16", "--clusters", "300", "--workers", "1", "--hide-progress"]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = out / "results.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if results.exists() and results.read_text().count("\n") >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {r["key"]: r for r in ResultStore(results)}
    assert proc.returncode == -signal.SIGKILL
    assert 2 <= len(before) < 15  # killed part-way through the 15 points (I = 2..16)
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    after = list(ResultStore(results))
    assert [r["value"] for r in after if r["key"] in before] == [r["value"] for r in before.values()]
    assert sorted(r["value"] for r in after) == list(range(2, 17))
    assert all(after[i] == before[r["key"]] for i, r in enumerate(after) if r["key"] in before)
