"""Timing estimate of Yosys netlists (hand-built, so that every delay is known) and the L0 system view."""

from __future__ import annotations

import json

import pytest

from calohls.errors import HLSError
from calohls.firmware.l0 import L0View, l0_view
from calohls.firmware.timing import (
    ULTRASCALE_PLUS,
    DelayModel,
    StageTiming,
    TimingEstimate,
    netlist_timing,
    read_netlist_timing,
)

M = ULTRASCALE_PLUS


def _cell(kind: str, inputs: dict[str, list], outputs: dict[str, list]) -> dict:
    return {
        "type": kind,
        "port_directions": {**dict.fromkeys(inputs, "input"), **dict.fromkeys(outputs, "output")},
        "connections": {**inputs, **outputs},
    }


def _ff(d: int, q: int) -> dict:
    return _cell("FDRE", {"C": [1], "CE": ["1"], "R": ["0"], "D": [d]}, {"Q": [q]})


def netlist() -> dict:
    """Two stages between three registers (bit numbers are nets):

    stage 0: FF(10) → LUT2 → 11 → CARRY4 (S) → 12 → CARRY4 (CI) → 13 → LUT3 → 14 → FF
             and a shorter path FF(10) → INV → 15 → FF
    stage 1: FF(20) → LUT1 → 21 → FF
    """
    cells = {
        "in0": _ff(2, 10),
        "lut_a": _cell("LUT2", {"I0": [10], "I1": [10]}, {"O": [11]}),
        "c0": _cell(
            "CARRY4",
            {"CI": ["0"], "CYINIT": ["0"], "DI": [11, "0", "0", "0"], "S": [11, 11, 11, 11]},
            {"CO": [30, 31, 32, 12], "O": [33, 34, 35, 36]},
        ),
        "c1": _cell(
            "CARRY4",
            {"CI": [12], "CYINIT": ["0"], "DI": ["0"] * 4, "S": [10] * 4},
            {"CO": [37, 38, 39, 40], "O": [13, 41, 42, 43]},
        ),
        "lut_b": _cell("LUT3", {"I0": [13], "I1": [10], "I2": [11]}, {"O": [14]}),
        "inv": _cell("INV", {"I": [10]}, {"O": [15]}),
        "r0": _ff(14, 20),
        "r0b": _ff(15, 22),
        "lut_c": _cell("LUT1", {"I0": [20]}, {"O": [21]}),
        "r1": _ff(21, 23),
    }
    netnames = {
        "stage0.model_out": {"hide_name": 0, "bits": [14, 15]},
        "stage1.model_out": {"hide_name": 0, "bits": [21]},
        "model_inp": {"hide_name": 0, "bits": [2]},
    }
    ports = {"clk": {"direction": "input", "bits": [1]}, "model_inp": {"direction": "input", "bits": [2]}}
    return {"modules": {"top": {"ports": ports, "cells": cells, "netnames": netnames}}}


def test_longest_path_per_stage_adds_the_model_delays():
    est = netlist_timing(netlist(), "top", 2.5)
    lut, net = M.lut, M.net
    stage0 = (
        M.clock_to_q
        + (net + lut)  # LUT2
        + (M.local_net + M.carry_entry)  # into the chain through S
        + (M.carry_cascade + M.carry8_ripple / 2)  # the next CARRY4 through CI
        + (net + lut)  # LUT3
        + (net + M.setup)  # into the register
    )
    stage1 = M.clock_to_q + net + lut + net + M.setup
    assert est.stages == (
        StageTiming(0, round(stage0, 3), lut_levels=2, carry_cells=2, mux_levels=0),
        StageTiming(1, round(stage1, 3), lut_levels=1, carry_cells=0, mux_levels=0),
    )
    assert est.period_ns == pytest.approx(stage0, abs=1e-3)
    assert est.fmax_mhz == pytest.approx(1000 / stage0, rel=1e-3)
    assert est.met == (stage0 <= 2.5)
    assert est.effective_period_ns == max(2.5, est.period_ns)


def test_a_slower_model_and_a_shorter_clock_miss_timing():
    slow = DelayModel(net=1.0, name="slow routing")
    fast = netlist_timing(netlist(), "top", 10.0)
    late = netlist_timing(netlist(), "top", 1.0, slow)
    assert fast.met
    assert not late.met
    assert late.period_ns > fast.period_ns
    assert late.effective_period_ns == late.period_ns > 1.0


def test_estimate_round_trips_through_json():
    est = netlist_timing(netlist(), "top", 2.5)
    data = json.loads(json.dumps(est.to_json()))
    assert TimingEstimate.from_json(data) == est
    assert data["period_estimate_ns"] == round(est.period_ns, 3)
    assert data["fmax_estimate_mhz"] == round(est.fmax_mhz, 1)
    assert data["timing_met"] is est.met
    assert data["model"]["net"] == M.net


def test_bad_netlists_are_one_line_errors(tmp_path):
    with pytest.raises(HLSError, match="holds no module 'other'"):
        netlist_timing(netlist(), "other", 2.5)
    unnamed = netlist()
    unnamed["modules"]["top"]["netnames"] = {}
    with pytest.raises(HLSError, match=r"no registers fed by stage<i>.model_out"):
        netlist_timing(unnamed, "top", 2.5)
    loop = netlist()
    loop["modules"]["top"]["cells"]["lut_a"]["connections"]["I1"] = [14]  # LUT2 ← LUT3 ← CARRY ← LUT2
    with pytest.raises(HLSError, match="combinational loop"):
        netlist_timing(loop, "top", 2.5)
    (tmp_path / "netlist.json").write_text("{not json")
    with pytest.raises(HLSError, match=r"cannot read the Yosys netlist .*netlist.json"):
        read_netlist_timing(tmp_path / "netlist.json", "top", 2.5)


# -- L0 system view --------------------------------------------------------------------------------------------


def test_l0_view_at_the_target_clock():
    view = l0_view(lut=10_000, ii=1, target_period_ns=2.5, period_estimate_ns=2.0, lut_budget=34_560)
    assert view == L0View(400.0, "target", 1, 10, 10_000, 34_560, 3, 30)
    assert L0View.from_json(json.loads(json.dumps(view.to_json()))) == view


def test_l0_view_slows_down_to_the_estimated_fmax():
    view = l0_view(lut=9_618, ii=1, target_period_ns=2.5, period_estimate_ns=5.334, lut_budget=34_560)
    assert view.clock_source == "estimate"
    assert view.clock_mhz == 187.5
    assert view.clusters_per_bx_per_instance == 4  # 25 ns / 5.334 ns = 4.7 whole clusters
    assert (view.instances, view.clusters_per_bx) == (3, 12)
    assert l0_view(9_618, 2, 2.5, 5.334).clusters_per_bx_per_instance == 2  # II 2 halves it
    assert l0_view(9_618, 1, 2.5, None).clock_source == "target (no estimate)"


def test_l0_view_of_a_design_beyond_the_budget_serves_nothing():
    view = l0_view(lut=40_000, ii=1, target_period_ns=2.5, period_estimate_ns=None, lut_budget=34_560)
    assert (view.instances, view.clusters_per_bx) == (0, 0)
    with pytest.raises(ValueError, match="l0_view needs"):
        l0_view(0, 1, 2.5, None)
