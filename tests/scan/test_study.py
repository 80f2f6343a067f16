"""The size × precision study end to end on a tiny configuration: float, PTQ, QAT, firmware, answer, resumption."""

from __future__ import annotations

import json

import pytest
import yaml

from calohls.config import StudyConfig
from calohls.errors import FileExistsRefusedError
from calohls.scan.study import run_study

#: A study small enough for CI: one tiny size, 8 cells, a few epochs, a few hundred clusters everywhere.
TINY_STUDY = {
    "presets": ["tiny"],
    "max_cells": 8,
    "train": {"epochs": 3, "batch_size": 256, "seed": 1},
    "qat": {"epochs": 4, "batch_size": 256, "seed": 1},
    "betas": [1e-7],
    "ptq": {"sweeps": ["total-bits"], "total_bits_range": [12, 14], "clusters": 400, "trace_clusters": 50},
    "ptq_designs": [12, 16],
    "firmware": {"clusters": 400, "synth": True},
    "firmware_designs": 1,
    "eval_clusters": 400,
    "workers": 1,
}


def _tiny(sim_file, **changes) -> StudyConfig:
    return StudyConfig.model_validate({**TINY_STUDY, "data": str(sim_file), **changes})


@pytest.fixture(scope="module")
def study(sim_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "s"
    answer = run_study(_tiny(sim_file), out)
    return out, answer


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_study_folder_holds_every_stage(study):
    out, _answer = study
    info = json.loads((out / "study.json").read_text())
    assert info["kind"] == "calohls-study"
    assert info["config"]["presets"] == ["tiny"]
    assert yaml.safe_load((out / "config.yaml").read_text())["max_cells"] == 8
    assert (out / "runs" / "tiny" / "eval" / "metrics.json").exists()
    assert (out / "qat" / "tiny_b1e-07" / "eval" / "metrics.json").exists()
    assert (out / "ptq" / "summary.json").exists()
    firmware = json.loads((out / "firmware" / "tiny_b1e-07" / "firmware.json").read_text())
    assert firmware["bit_exact"]
    assert firmware["differing"] == {"hls": 0, "rtl": 0}
    assert firmware["resources"]["LUT"] > 0
    for name in ("points.jsonl", "pareto.json", "answer.json", "pareto_lut.png", "resolution_vs_size.png"):
        assert (out / "scan" / name).exists(), name


def test_points_cover_every_design_with_its_numbers(study):
    out, _ = study
    points = {p["key"]: p for p in _records(out / "scan" / "points.jsonl")}
    assert set(points) == {"float:tiny", "ptq:tiny:ap_fixed<12,10>", "ptq:tiny:ap_fixed<16,10>", "qat:tiny:b1e-07"}
    for key, p in points.items():
        assert 0 < p["resolution"] < 5, key
    qat = points["qat:tiny:b1e-07"]
    assert qat["lut_source"] == "yosys"
    assert qat["bit_exact"]
    assert qat["ebops"] > 0
    assert qat["dsp"] == 0
    assert qat["latency_ns"] > 0
    assert qat["ii"] == 1
    for key in ("ptq:tiny:ap_fixed<12,10>", "ptq:tiny:ap_fixed<16,10>"):
        assert points[key]["lut"] > 0
        assert points[key]["mpe"] >= 0
        assert points[key]["lut_source"] == "da4ml"
    # fewer bits cannot be closer to float
    assert points["ptq:tiny:ap_fixed<12,10>"]["mpe"] >= points["ptq:tiny:ap_fixed<16,10>"]["mpe"]
    assert any(p["pareto"] for p in points.values())


def test_answer_is_in_words_with_its_numbers(study):
    out, answer = study
    assert answer == json.loads((out / "scan" / "answer.json").read_text())
    assert answer["answer"].split()[0] in ("Yes,", "No:", "Not")
    assert any("QAT vs PTQ" in line for line in answer["details"])
    assert answer["target"]["design"] == "qat:tiny:b1e-07"


def test_rerun_does_nothing_and_a_changed_option_redoes_only_its_tasks(study, sim_file):
    out, _ = study
    tasks = out / "tasks.jsonl"
    before = tasks.read_text()
    run_study(_tiny(sim_file), out)
    assert tasks.read_text() == before  # everything up to date: nothing ran
    run_study(_tiny(sim_file, ptq_designs=[12, 16, 18]), out)
    new = _records(tasks)[len(before.splitlines()) :]
    assert [r["key"].split("@")[0] for r in new] == ["ptq:tiny:ap_fixed<18,10>"]


def test_a_folder_of_something_else_is_refused(sim_file, tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsRefusedError):
        run_study(_tiny(sim_file), tmp_path / "x")
