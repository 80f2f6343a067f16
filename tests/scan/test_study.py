"""The size × precision study end to end on a tiny configuration: float, PTQ, QAT, firmware, answer, resumption."""

from __future__ import annotations

import json

import pytest
import yaml

from calohls.config import StudyConfig
from calohls.errors import FileExistsRefusedError
from calohls.scan.qat_designs import thin_front
from calohls.scan.store import ResultStore
from calohls.stages.study import _built_firmware, _firmware_tasks, _model_tasks, run_study

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
    "learning_curve": [0.5],
    "workers": 1,
}


def _tiny(sim_file, **changes) -> StudyConfig:
    return StudyConfig.model_validate({**TINY_STUDY, "data": str(sim_file), **changes})


@pytest.fixture(scope="module")
def study(sim_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "s"
    answer = run_study(_tiny(sim_file), out).to_json()
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
    # QAT started from the float run of its size
    assert yaml.safe_load((out / "qat" / "tiny_b1e-07" / "config.yaml").read_text())["init_from"] == str(
        out / "runs" / "tiny"
    )
    assert (out / "ptq" / "summary.json").exists()
    [built] = (out / "firmware").iterdir()  # the best Pareto checkpoint of the QAT run
    assert built.name.startswith("tiny_b1e-07_e")
    firmware = json.loads((built / "firmware.json").read_text())
    assert firmware["bit_exact"]
    assert firmware["differing"] == {"hls": 0, "rtl": 0}
    assert firmware["resources"]["LUT"] > 0
    for name in ("points.jsonl", "pareto.json", "answer.json", "pareto_lut.png", "resolution_vs_size.png"):
        assert (out / "scan" / name).exists(), name


def test_points_cover_every_design_with_its_numbers(study):
    out, _ = study
    points = {p["key"]: p for p in _records(out / "scan" / "points.jsonl")}
    assert {k for k, p in points.items() if p["kind"] != "qat"} == {
        "float:tiny",
        "float:tiny:s1",  # the second seed of the float reference
        "ptq:tiny:ap_fixed<12,10>",
        "ptq:tiny:ap_fixed<16,10>",
    }
    for key, p in points.items():
        assert 0 < p["resolution"] < 5, key
    # every kept Pareto checkpoint of the QAT run is a design, costed by da4ml, the selected one among them
    front = json.loads((out / "qat" / "tiny_b1e-07" / "pareto.json").read_text())
    qat = [p for p in points.values() if p["kind"] == "qat"]
    assert sorted(p["key"] for p in qat) == sorted(f"qat:tiny:b1e-07:e{c['epoch']}" for c in thin_front(front, 6))
    assert all(p["ebops"] > 0 and p["lut"] > 0 for p in qat)
    [selected] = [p for p in qat if p["selected"]]
    [run] = [r for r in _records(out / "tasks.jsonl") if r["kind"] == "qat"]
    assert selected["ebops"] == run["ebops"]
    assert selected["resolution"] == pytest.approx(run["resolution"], rel=1e-3)  # its own correction, refitted
    # the best checkpoint within the budget went into firmware and carries the Yosys numbers
    [built] = [p for p in qat if p.get("firmware")]
    assert built["lut_source"] == "yosys"
    assert built["bit_exact"]
    assert built["dsp"] == 0
    assert built["latency_ns"] > 0
    assert built["ii"] == 1
    # the timing estimate sets the latency where it misses the clock, and the L0 view is in the study's budget
    period = max(2.5, built["period_estimate_ns"])
    assert built["latency_ns"] == pytest.approx(built["latency_cycles"] * period, abs=1e-3)
    assert built["latency_target_ns"] == built["latency_cycles"] * 2.5
    assert built["timing_met"] is (built["period_estimate_ns"] <= 2.5)
    assert built["instances"] == 34_560 // built["lut"]
    assert built["clusters_per_bx"] == built["instances"] * built["clusters_per_bx_per_instance"] > 0
    assert (out / "scan" / "l0_clusters_per_bx.png").is_file()
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
    assert answer["target"]["design"].startswith("qat:tiny:b1e-07:e")
    # the float reference is the mean of two seeds, with its spread; the learning curve has the half-set run
    [ref] = answer["float_references"]
    assert ref["seeds"] == 2
    assert ref["seed_spread"] is not None
    assert ref["uncertainty"] >= ref["seed_spread"]
    claims = {c["claim"]: c for c in answer["clauses"]}
    assert "the float references have enough data" in claims
    curve = claims["the float references have enough data"]["numbers"]["curves"]["tiny"]
    assert [p["fraction"] for p in curve] == [0.5, 1.0]
    assert curve[0]["n_train"] < curve[1]["n_train"]
    assert (out / "scan" / "learning_curve.png").exists()
    assert (out / "runs" / "tiny_f0.5" / "run.json").exists()
    assert json.loads((out / "runs" / "tiny_s1" / "run.json").read_text())["convergence"]["epoch_cap"] == 3


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


def test_qat_tasks_depend_on_the_float_run_they_start_from(sim_file, tmp_path):
    def tasks(**changes):
        floats, _, qats = _model_tasks(_tiny(sim_file, **changes), tmp_path, sim_file, "data-digest")
        return floats[0], qats[0]

    longer = {"train": {**TINY_STUDY["train"], "epochs": 4}}
    (f, q), (f2, q2) = tasks(), tasks(**longer)
    assert yaml.safe_load(q.config)["init_from"] == f.out
    # the same study in another folder: the same work
    f3, _, q3 = _model_tasks(_tiny(sim_file), tmp_path / "elsewhere", sim_file, "data-digest")
    assert (f3[0].digest, q3[0].digest) == (f.digest, q.digest)
    assert f2.digest != f.digest
    assert q2.digest != q.digest  # new float weights: QAT again
    (_, cold), (_, cold2) = tasks(qat_from_float=False), tasks(qat_from_float=False, **longer)
    assert yaml.safe_load(cold.config)["init_from"] is None
    assert cold2.digest == cold.digest  # random initial weights: independent of the float run


def test_thin_front_spreads_in_log_ebops_and_keeps_the_ends_and_the_selected():
    front = [{"ebops": e, "selected": e == 300} for e in (10, 20, 30, 100, 300, 1000, 3000, 10_000, 100_000)]
    assert thin_front(front, 20) == front
    kept = [p["ebops"] for p in thin_front(front, 3)]
    assert kept == [10, 300, 1000, 100_000]  # ends, the middle in log (≈ 1000), the selected


def test_firmware_built_by_an_earlier_scan_still_counts(sim_file, tmp_path):
    config = _tiny(sim_file, firmware_designs=1, lut_budget=10_000)
    _, _, [qat] = _model_tasks(config, tmp_path, sim_file, "data-digest")
    store = ResultStore(tmp_path / "tasks.jsonl")

    def checkpoint(epoch, lut, resolution):
        return {"epoch": epoch, "file": f"pareto/epoch_{epoch:04d}.keras", "lut": lut, "resolution": resolution}

    store.append(
        {"key": f"{qat.key}@{qat.digest}", "checkpoints": [checkpoint(3, 8000, 0.3), checkpoint(2, 12_000, 0.2)]}
    )
    # within the budget (with the estimate's margin) only epoch 3: that one is built
    [task] = _firmware_tasks(config, tmp_path, [qat], store)
    assert task.labels["design"] == f"{qat.key}:e3"
    assert task.out == str(tmp_path / "firmware" / "tiny_b1e-07_e3")
    # a design an earlier scan built (epoch 2, say with a larger budget) keeps its record among the built ones
    earlier = _tiny(sim_file, firmware_designs=1, lut_budget=20_000)
    [old] = _firmware_tasks(earlier, tmp_path, [qat], store)
    assert old.labels["design"] == f"{qat.key}:e2"
    store.append({"key": f"{old.key}@{old.digest}", "design": old.labels["design"], "lut": 12_500})
    assert [r["design"] for r in _built_firmware(config, tmp_path, [qat], store)] == [f"{qat.key}:e2"]
    # other firmware options: that record no longer holds
    slower = _tiny(sim_file, firmware_designs=1, lut_budget=10_000, firmware={"clusters": 400, "clock_period": 5.0})
    assert _built_firmware(slower, tmp_path, [qat], store) == []
