"""Closure per particle type: the shifted targets, the record in the run folder, and QAT keeping the shifts."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from tests.conftest import TINY_TRAIN

from calohls.config import TrainConfig
from calohls.errors import InputFileError
from calohls.model.closure import CLOSURE_FILE, ClosureRound, TypeClosure, close_per_type
from calohls.model.prepare import prepare_training
from calohls.model.run_folder import load_run
from calohls.particles import PARTICLES

PI0, PIPM = PARTICLES["pi0"], PARTICLES["pi+"]


def _closure() -> TypeClosure:
    return TypeClosure((0.5, 1.0, 2.0), {"pi0": (-0.04, -0.02, 0.0), "pi+-": (0.02, 0.01, 0.0)}, min_energy=2.0)


def test_the_shift_is_per_type_above_the_floor_and_interpolated():
    closure = _closure()
    e_true = np.array([1.0, 3.1623, 3.1623, 10**0.75, 1000.0, 5.0])
    particle = np.array([PI0, PI0, -PIPM, PI0, PIPM, 2112])
    shift = closure.target_shift(e_true, particle)
    assert shift[0] == 0  # below min_energy: not shifted
    assert shift[1] == pytest.approx(-0.04, abs=1e-4)  # held below the first centre
    assert shift[2] == pytest.approx(0.02, abs=1e-4)  # π- is a charged pion
    assert shift[3] == pytest.approx(-0.03, abs=1e-4)  # halfway between two centres
    assert shift[4] == 0  # held beyond the last centre
    assert shift[5] == 0  # a neutron: no type closed


def test_the_message_says_what_the_rounds_did():
    closure = _closure()
    assert closure.message() == "π0 and π± medians above 2 GeV already within 1%: no closure rounds"
    rounds = (ClosureRound({"pi0": 0.07, "pi+-": 0.03}, 5, 10.0), ClosureRound({"pi0": 0.02, "pi+-": 0.01}, 3, 6.0))
    done = dataclasses.replace(closure, rounds=rounds, worst={"pi0": 0.004, "pi+-": 0.006})
    assert done.message() == (
        "closed π0 and π± medians above 2 GeV in 2 rounds (8 epochs, 16 s): worst |median − 1| on the training "
        "clusters pi0 7.0% → 0.4%, pi+- 3.0% → 0.6%"
    )
    assert done.summary().to_json()["worst_before"] == {"pi0": 0.07, "pi+-": 0.03}


def test_round_trip_and_a_corrupt_record(tmp_path):
    closure = _closure()
    closure.save(tmp_path / CLOSURE_FILE)
    assert TypeClosure.load(tmp_path / CLOSURE_FILE) == closure
    (tmp_path / "bad.json").write_text('{"log_e": [1.0]}')
    with pytest.raises(InputFileError, match=r"bad\.json.*re-run `calohls train`"):
        TypeClosure.load(tmp_path / "bad.json")


def test_one_particle_type_is_not_closed(sim_file):
    config = TrainConfig.model_validate(TINY_TRAIN)
    prepared = prepare_training(sim_file, config)
    scalars = {**prepared.data.scalars, "particle": np.full_like(prepared.data.scalars["particle"], PIPM)}
    only_charged = dataclasses.replace(prepared, data=dataclasses.replace(prepared.data, scalars=scalars))
    closure = close_per_type(None, only_charged, config, loss="mse")  # no model needed: nothing to fine-tune
    assert closure.skipped is not None
    assert "too few" in closure.skipped
    assert not np.any(closure.target_shift(scalars["e_true"], scalars["particle"]))


def test_training_closes_the_types_and_records_it(trained_run):
    info = load_run(trained_run).record["closure"]
    assert 1 <= info["rounds"] <= TrainConfig().closure_rounds == 5
    assert info["skipped"] is None
    closure = TypeClosure.load(trained_run / CLOSURE_FILE)
    assert len(closure.rounds) == info["rounds"]
    assert all(r.epochs >= 1 for r in closure.rounds)
    # a calibration of the mixture puts π0 high and π± low at a few GeV: their targets move down and up there
    assert closure.log_e[2] < 1.0  # the first three bins lie below 11 GeV
    assert np.mean(closure.shift["pi0"][:3]) < 0 < np.mean(closure.shift["pi+-"][:3])
    # the rounds bring the worst median of the two types closer to 1
    assert max(closure.worst.values()) < max(closure.rounds[0].worst.values())
    assert json.loads((trained_run / CLOSURE_FILE).read_text())["min_energy"] == 2.0


def test_qat_started_from_a_float_run_fits_its_shifted_targets(trained_run, sim_file):
    from calohls.config import QATConfig
    from calohls.model.qat import _compiled_model, float_start

    options = {"model": {"preset": "tiny", "max_cells": 16}, "epochs": 1, "batch_size": 128, "seed": 3}
    config = QATConfig.model_validate({**options, "init_from": trained_run})
    assert config.closure_rounds == 0  # QAT runs no rounds of its own
    init = float_start(trained_run, config, sim_file)
    _, prepared = _compiled_model(config, prepare_training(sim_file, config), init)
    closure = TypeClosure.load(trained_run / CLOSURE_FILE)
    scalars = prepared.data.scalars
    np.testing.assert_array_equal(prepared.shift, closure.target_shift(scalars["e_true"], scalars["particle"]))
    assert np.any(prepared.shift != 0)
    np.testing.assert_allclose(prepared.part("train")[1], (prepared.data.y + prepared.shift)[prepared.split["train"]])
