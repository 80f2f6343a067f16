"""The study's summary numbers, Pareto front and answer, on hand-made design points."""

from __future__ import annotations

import json

import numpy as np
import pytest

from calohls.config import StudyConfig
from calohls.scan.answer import StudyAnswer, answer, design_points
from calohls.scan.designs import BINS, pareto_front, resolution_summary


def test_resolution_summary_is_geometric_mean_of_bins():
    rng = np.random.default_rng(0)
    e_true = np.exp(rng.uniform(np.log(0.6), np.log(450.0), 40_000))
    width = 0.5 / np.sqrt(e_true)  # resolution falls with energy
    e_pred = e_true * (1.0 + width * rng.normal(size=e_true.size))
    out = resolution_summary(e_true, e_pred)
    bins = np.array([r for r in out.bins["resolution"] if r is not None])
    assert len(bins) == len(BINS) - 1
    assert out.resolution == pytest.approx(np.exp(np.log(bins).mean()))
    assert np.all(np.diff(bins) < 0)
    assert out.median_worst < 0.05
    worse = resolution_summary(e_true, e_true * (1.0 + 2 * width * rng.normal(size=e_true.size)))
    assert worse.resolution == pytest.approx(2 * out.resolution, rel=0.1)


def test_resolution_summary_carries_bootstrap_intervals_per_bin_and_of_the_mean():
    rng = np.random.default_rng(1)
    e_true = np.exp(rng.uniform(np.log(0.6), np.log(450.0), 20_000))
    e_pred = e_true * 1.01 * (1.0 + 0.3 / np.sqrt(e_true) * rng.normal(size=e_true.size))
    out = resolution_summary(e_true, e_pred)
    assert out.resolution_lo < out.resolution < out.resolution_hi
    assert out.resolution_err == pytest.approx(0.5 * (out.resolution_hi - out.resolution_lo))
    bins = out.bins
    assert len(bins["edges"]) == len(bins["centres"]) + 1 == len(BINS)
    errs = np.array(bins["resolution_err"], float)
    # the mean over 9 bins is known better than any one bin
    assert 0 < out.resolution_err / out.resolution < np.min(errs / np.array(bins["resolution"], float))
    assert np.all(np.abs(np.array(bins["median"], float) - 1.01) < 3 * np.array(bins["median_err"], float) + 0.005)
    assert resolution_summary(e_true, e_pred) == out  # seeded: the same numbers every time
    off = resolution_summary(e_true, e_pred, bootstrap=0)
    assert off.resolution == out.resolution
    assert off.resolution_err is None


def test_pareto_front_keeps_only_undominated_points():
    points = [
        {"lut": 100, "resolution": 0.30},
        {"lut": 200, "resolution": 0.20},
        {"lut": 250, "resolution": 0.25},  # dominated by the second
        {"lut": 400, "resolution": 0.10},
        {"lut": None, "resolution": 0.01},  # no cost: not on any front
        {"lut": 100, "resolution": 0.30},  # a tie keeps both
    ]
    assert pareto_front(points) == [0, 5, 1, 3] or pareto_front(points) == [5, 0, 1, 3]
    assert 2 not in pareto_front(points)
    assert 4 not in pareto_front(points)


def _record(kind, preset, resolution, lut=None, params=100, **extra):
    key = f"{kind}:{preset}:{extra.get('precision', extra.get('beta', ''))}"
    return {"key": f"{key}@abc", "kind": kind, "preset": preset, "resolution": resolution, "lut": lut,
            "parameters": params, "bins": {"resolution": [resolution]}, **extra}  # fmt: skip


def _records():
    return {
        "float": [_record("float", "tiny", 0.30, params=100), _record("float", "medium", 0.20, params=5000)],
        "ptq": [
            _record("ptq", "tiny", 0.33, lut=8000, precision="ap_fixed<14,10>"),
            _record("ptq", "medium", 0.24, lut=90_000, precision="ap_fixed<14,10>"),
        ],
        "qat": [
            _record("qat", "tiny", 0.31, lut=3000, beta=1e-6, dsp=0, latency_ns=15.0),
            _record("qat", "medium", 0.205, lut=30_000, beta=1e-7, dsp=0, latency_ns=20.0),
        ],
        "firmware": [
            {
                "design": "qat:medium:1e-07",
                "firmware": "fw/medium",
                "lut": 31_000,
                "ff": 5000,
                "dsp": 0,
                "latency_ns": 20.0,
                "latency_cycles": 8,
                "lut_source": "yosys",
                "bit_exact": True,
                "ii": 1,
            },
        ],
    }


def test_design_points_merge_firmware_and_flag_the_front():
    points = design_points(_records())
    by_key = {p["key"]: p for p in points}
    medium_qat = by_key["qat:medium:1e-07"]
    assert medium_qat["lut"] == 31_000
    assert medium_qat["lut_source"] == "yosys"
    assert medium_qat["bit_exact"]
    assert [p["key"] for p in points if p["pareto"]] == ["qat:tiny:1e-06", "qat:medium:1e-07"]
    assert not any(p["pareto"] for p in points if p["kind"] == "float")


def test_answer_names_the_best_design_and_qat_vs_ptq():
    config = StudyConfig(presets=("tiny", "medium"))
    result = answer(design_points(_records()), config).to_json()
    assert result["best"]["key"] == "qat:medium:1e-07"
    assert result["answer"].startswith("Yes")
    assert result["qat_vs_ptq"] == {"ptq_points": 2, "ptq_beaten_by_qat": 2, "front_qat": 2, "front_ptq": 0,
                                    "qat_beats_ptq": True}  # fmt: skip
    assert result["target"]["met"]
    assert result["target"]["design"] == "qat:medium:1e-07"
    tight = answer(design_points(_records()), StudyConfig(presets=("tiny", "medium"), lut_budget=10_000)).to_json()
    assert tight["best"]["key"] == "qat:tiny:1e-06"
    assert tight["answer"].startswith("No")
    assert not tight["target"]["met"]
    assert tight["target"]["misses"]


def test_every_pareto_checkpoint_of_a_qat_run_is_a_design():
    def checkpoint(epoch, ebops, lut, resolution, selected=False):
        return {"epoch": epoch, "file": f"pareto/epoch_{epoch:04d}.keras", "val_loss": 0.02, "ebops": ebops,
                "beta": 1e-6 if epoch > 25 else 2e-7, "selected": selected, "resolution": resolution,
                "median_worst": 0.01, "lut": lut, "bins": {"resolution": [resolution]}}  # fmt: skip

    records = _records()
    run = _record("qat", "tiny", 0.31, beta=1e-6)
    run["checkpoints"] = [checkpoint(30, 9000, 2500, 0.34), checkpoint(20, 30_000, 7000, 0.31, selected=True)]
    records["qat"] = [run]
    records["firmware"] = [{**records["firmware"][0], "design": "qat:tiny:1e-06:e30", "lut": 2400}]
    by_key = {p["key"]: p for p in design_points(records)}
    assert {k for k in by_key if k.startswith("qat")} == {"qat:tiny:1e-06:e30", "qat:tiny:1e-06:e20"}
    small, selected = by_key["qat:tiny:1e-06:e30"], by_key["qat:tiny:1e-06:e20"]
    assert (small["ebops"], small["resolution"], small["resolution_bins"]) == (9000, 0.34, [0.34])
    assert (small["lut"], small["lut_source"]) == (2400, "yosys")  # its firmware's count
    assert selected["selected"]
    assert (selected["beta"], selected["beta_epoch"]) == (1e-6, 2e-7)  # the run's beta; the one at that epoch
    assert (selected["lut"], selected.get("lut_source")) == (7000, None)
    assert "checkpoints" not in small
    details = answer(list(by_key.values()), StudyConfig(presets=("tiny", "medium"))).to_json()["details"]
    assert any(line.startswith("Best tiny design") and "tiny QAT β=1e-06, epoch 20" in line for line in details)


def _clause(result, claim):
    return next(c for c in result["clauses"] if c["claim"] == claim)


def test_float_sizes_within_their_uncertainty_are_not_distinguishable():
    records = _records()
    records["float"] = [
        _record("float", "tiny", 0.300, params=100, resolution_err=0.004),
        _record("float", "tiny", 0.306, params=100, resolution_err=0.004, seed_index=1),
        _record("float", "medium", 0.297, params=5000, resolution_err=0.004),
        _record("float", "medium", 0.301, params=5000, resolution_err=0.004, seed_index=1),
    ]
    result = answer(design_points(records), StudyConfig(presets=("tiny", "medium"))).to_json()
    refs = {r["preset"]: r for r in result["float_references"]}
    assert refs["tiny"]["seeds"] == 2
    assert refs["tiny"]["resolution"] == pytest.approx(0.303)
    assert refs["tiny"]["seed_spread"] == pytest.approx(np.std([0.300, 0.306], ddof=1))
    assert refs["tiny"]["uncertainty"] == pytest.approx(np.hypot(0.004, refs["tiny"]["seed_spread"]))
    clause = _clause(result, "bigger is better in float")
    assert clause["holds"] is None
    assert "not distinguishable" in clause["text"]
    assert "bigger is better in float" not in result["answer"]
    # far apart: bigger is better, and the clause says so
    records["float"][2:] = [_record("float", "medium", 0.20, params=5000, resolution_err=0.004)]
    result = answer(design_points(records), StudyConfig(presets=("tiny", "medium"))).to_json()
    assert _clause(result, "bigger is better in float")["holds"] is True
    assert "bigger is better in float" in result["answer"]


def test_integer_bits_and_lut_clauses_follow_the_numbers():
    ptq = {"sweeps": {"int-bits": {
        "tiny": {"bits_for_mpe_below_1pct": 9, "layer_bits_needed": {"ksum": 9}},
        "medium": {"bits_for_mpe_below_1pct": 8, "layer_bits_needed": {"ksum": 8}},
    }}}  # fmt: skip
    result = answer(design_points(_records()), StudyConfig(presets=("tiny", "medium")), ptq).to_json()
    bits = _clause(result, "larger models need more integer bits")
    assert bits["holds"] is False
    assert "do not need more integer bits" in bits["text"]
    assert "tiny 9, medium 8" in bits["text"]
    assert "integer bits" not in result["answer"]  # a clause the data do not support is not in the headline
    luts = _clause(result, "larger models need more LUTs at the same precision")
    assert luts["holds"] is True
    assert "tiny 8,000, medium 90,000" in luts["text"]
    ptq["sweeps"]["int-bits"]["medium"]["bits_for_mpe_below_1pct"] = 11
    result = answer(design_points(_records()), StudyConfig(presets=("tiny", "medium")), ptq).to_json()
    assert _clause(result, "larger models need more integer bits")["holds"] is True
    assert "larger models need more integer bits" in result["answer"]


def test_a_design_that_does_not_close_misses_the_target_and_names_the_bin():
    records = _records()
    bins = {"edges": [1.0, 2.0, 4.0, 8.0], "median": [0.80, 1.01, 0.95], "resolution": [0.3, 0.2, 0.1]}
    records["qat"][1]["bins"] = bins
    result = answer(design_points(records), StudyConfig(presets=("tiny", "medium"))).to_json()
    target = result["target"]
    assert not target["met"]
    assert any("median 0.950 at 4–8 GeV" in m for m in target["misses"])
    assert not any("1–2 GeV" in m for m in target["misses"])  # below closure_min_energy
    loose = answer(design_points(records), StudyConfig(presets=("tiny", "medium"), closure_tolerance=0.06)).to_json()
    assert loose["target"]["met"]


def test_a_float_reference_cut_off_while_improving_is_flagged():
    records = _records()
    records["float"][1]["converged"] = False
    result = answer(design_points(records), StudyConfig(presets=("tiny", "medium"))).to_json()
    assert _clause(result, "float references converged")["holds"] is False
    assert any("medium stopped at its epoch cap" in line for line in result["details"])


def test_the_answer_reads_back_from_its_json():
    config = StudyConfig(presets=("tiny", "medium"))
    for result in (answer(design_points(_records()), config), answer([], config)):
        text = json.dumps(result.to_json(), indent=1, allow_nan=False)
        again = StudyAnswer.from_json(json.loads(text))
        assert again == result
        assert json.dumps(again.to_json(), indent=1, allow_nan=False) == text
    assert StudyAnswer.from_json(answer([], config).to_json()).target.design is None


def test_task_records_round_trip_through_their_stored_line():
    import json

    from calohls.scan.designs import DesignCost
    from calohls.stages.study_tasks import PTQRecord, QATRecord, RunSummary, TaskRecord

    rng = np.random.default_rng(3)
    e_true = rng.uniform(1.0, 300.0, 2000)
    summary = RunSummary("runs/tiny", 1234, resolution_summary(e_true, e_true * rng.normal(1.0, 0.1, e_true.size)))
    cost = DesignCost.of({"LUT": 5000, "FF": 900, "latency_cycles": 4, "latency_ns": 10.0})
    for design in (PTQRecord(summary, 1.5, -0.2, cost), QATRecord(40, 0.02, 3.5e4, summary, [{"epoch": 7}])):
        kind = "ptq" if isinstance(design, PTQRecord) else "qat"
        record = TaskRecord(f"{kind}:tiny", kind, "abc", {"preset": "tiny", "beta": None}, design, 12.5)
        line = json.loads(json.dumps(record.to_json()))
        assert list(line)[:4] == ["key", "kind", "digest", "preset"]
        assert list(line)[-1] == "seconds"
        assert line["resolution"] == summary.resolution.resolution
        again = TaskRecord.from_json(line)
        assert again.to_json() == line
        assert again.labels == {"preset": "tiny", "beta": None}
