"""The study's summary numbers, Pareto front and answer, on hand-made design points."""

from __future__ import annotations

import numpy as np
import pytest

from calohls.config import StudyConfig
from calohls.scan.answer import answer, design_points
from calohls.scan.designs import BINS, pareto_front, resolution_summary


def test_resolution_summary_is_geometric_mean_of_bins():
    rng = np.random.default_rng(0)
    e_true = np.exp(rng.uniform(np.log(0.6), np.log(450.0), 40_000))
    width = 0.5 / np.sqrt(e_true)  # resolution falls with energy
    e_pred = e_true * (1.0 + width * rng.normal(size=e_true.size))
    out = resolution_summary(e_true, e_pred)
    bins = np.array([r for r in out["bins"]["resolution"] if r is not None])
    assert len(bins) == len(BINS) - 1
    assert out["resolution"] == pytest.approx(np.exp(np.log(bins).mean()))
    assert np.all(np.diff(bins) < 0)
    assert out["median_worst"] < 0.05
    worse = resolution_summary(e_true, e_true * (1.0 + 2 * width * rng.normal(size=e_true.size)))
    assert worse["resolution"] == pytest.approx(2 * out["resolution"], rel=0.1)


def test_resolution_summary_carries_bootstrap_intervals_per_bin_and_of_the_mean():
    rng = np.random.default_rng(1)
    e_true = np.exp(rng.uniform(np.log(0.6), np.log(450.0), 20_000))
    e_pred = e_true * 1.01 * (1.0 + 0.3 / np.sqrt(e_true) * rng.normal(size=e_true.size))
    out = resolution_summary(e_true, e_pred)
    assert out["resolution_lo"] < out["resolution"] < out["resolution_hi"]
    assert out["resolution_err"] == pytest.approx(0.5 * (out["resolution_hi"] - out["resolution_lo"]))
    bins = out["bins"]
    assert len(bins["edges"]) == len(bins["centres"]) + 1 == len(BINS)
    errs = np.array(bins["resolution_err"], float)
    # the mean over 9 bins is known better than any one bin
    assert 0 < out["resolution_err"] / out["resolution"] < np.min(errs / np.array(bins["resolution"], float))
    assert np.all(np.abs(np.array(bins["median"], float) - 1.01) < 3 * np.array(bins["median_err"], float) + 0.005)
    assert resolution_summary(e_true, e_pred) == out  # seeded: the same numbers every time
    off = resolution_summary(e_true, e_pred, bootstrap=0)
    assert off["resolution"] == out["resolution"]
    assert off["resolution_err"] is None


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
    result = answer(design_points(_records()), config)
    assert result["best"]["key"] == "qat:medium:1e-07"
    assert result["answer"].startswith("Yes")
    assert result["qat_vs_ptq"] == {"ptq_points": 2, "ptq_beaten_by_qat": 2, "front_qat": 2, "front_ptq": 0,
                                    "qat_beats_ptq": True}  # fmt: skip
    assert result["target"]["met"]
    assert result["target"]["design"] == "qat:medium:1e-07"
    tight = answer(design_points(_records()), StudyConfig(presets=("tiny", "medium"), lut_budget=10_000))
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
    assert (
        "tiny QAT β=1e-06, epoch 20"
        in answer(list(by_key.values()), StudyConfig(presets=("tiny", "medium")))["details"][2]
    )
