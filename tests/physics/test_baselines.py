from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from calohls.config import SimConfig
from calohls.data.schema import ClusterBatch, cell_field_index
from calohls.errors import ConfigError, DataError, InputFileError, SchemaError
from calohls.physics.baselines import LCW_FORMAT, LCWCalibration, cluster_moments, em_scale
from calohls.physics.response import binned_response, log_bins
from calohls.sim.generate import simulate

PI0 = 111
E, E_TRUE, SAMPLING, R, DETA, DPHI = (cell_field_index(n) for n in ("e", "e_true", "sampling", "r", "deta", "dphi"))

# -- a seeded simulated sample, fitted on even events and evaluated on odd ones ------------------------------


@pytest.fixture(scope="module")
def halves() -> tuple[ClusterBatch, ClusterBatch]:
    batch = ClusterBatch.concatenate(simulate(SimConfig(events=30000, seed=1), workers=2))
    even = batch["event"] % 2 == 0
    return batch.select(even), batch.select(~even)


@pytest.fixture(scope="module")
def fitted(halves) -> LCWCalibration:
    return LCWCalibration.fit(halves[0])


@pytest.fixture(scope="module")
def held_out(halves, fitted) -> tuple[ClusterBatch, np.ndarray]:
    test = halves[1]
    return test, fitted.predict(test)


#: E_true bins above 2 GeV, three per decade (about 900-1200 clusters of each kind per bin in the held-out half).
BINS_ABOVE_2_GEV = log_bins(2.0, 500.0, per_decade=3)


def test_lcw_brings_charged_pion_response_closer_to_one(held_out):
    test, e_lcw = held_out
    charged = np.abs(test["particle"]) == 211
    em = binned_response(test["e_true"][charged], em_scale(test)[charged], BINS_ABOVE_2_GEV, min_count=200)
    lcw = binned_response(test["e_true"][charged], e_lcw[charged], BINS_ABOVE_2_GEV, min_count=200)
    assert np.isfinite(lcw.median).all()
    # EM scale: about 0.68 at 2-5 GeV rising to 0.88 at 250-500 GeV; LCW: 0.90-0.98.
    np.testing.assert_array_less(np.abs(lcw.median - 1.0), np.abs(em.median - 1.0))
    assert (np.abs(lcw.median - 1.0) < 0.15).all()


def test_lcw_improves_the_resolution_of_all_clusters_in_most_bins(held_out):
    test, e_lcw = held_out
    em = binned_response(test["e_true"], em_scale(test), BINS_ABOVE_2_GEV, min_count=200)
    lcw = binned_response(test["e_true"], e_lcw, BINS_ABOVE_2_GEV, min_count=200)
    better = lcw.resolution < em.resolution
    assert better.sum() >= 0.75 * better.size, (em.resolution, lcw.resolution)


def test_p_em_separates_neutral_from_charged_pions(held_out, fitted):
    test, _ = held_out
    p_em = fitted.classify(test)
    assert ((p_em >= 0) & (p_em <= 1)).all()
    neutral = p_em[test["particle"] == PI0].mean()
    charged = p_em[np.abs(test["particle"]) == 211].mean()
    assert neutral > charged + 0.4, (neutral, charged)


def test_save_load_round_trip_gives_identical_predictions(held_out, fitted, tmp_path):
    test, e_lcw = held_out
    path = fitted.save(tmp_path / "sub" / "lcw.json")
    assert sorted(p.name for p in path.parent.iterdir()) == ["lcw.json"]  # no temporary file left behind
    loaded = LCWCalibration.load(path)
    np.testing.assert_array_equal(loaded.predict(test), e_lcw)
    np.testing.assert_array_equal(loaded.classify(test), fitted.classify(test))
    assert loaded.samplings == fitted.samplings
    assert loaded.training == fitted.training
    # Saving again replaces the file.
    fitted.save(path)
    assert LCWCalibration.load(path).to_dict() == fitted.to_dict()


def test_to_dict_is_plain_json(fitted):
    data = fitted.to_dict()
    again = LCWCalibration.from_dict(json.loads(json.dumps(data)))
    assert data["format"] == LCW_FORMAT
    for name in ("p_em", "weights", "rho_edges", "cell_rho_edges"):
        np.testing.assert_array_equal(getattr(again, name), getattr(fitted, name))


def test_weights_stay_in_range_and_tables_are_read_only(fitted):
    lo, hi = fitted.weight_range
    assert (fitted.weights >= lo).all()
    assert (fitted.weights <= hi).all()
    assert fitted.samplings == (0, 1, 2, 3, 12, 13, 14)
    with pytest.raises(ValueError, match="read-only"):
        fitted.weights[0, 0, 0] = 1.0


# -- exact behaviour on small synthetic batches --------------------------------------------------------------


def _reference_predict(cal: LCWCalibration, batch: ClusterBatch) -> np.ndarray:
    """The prediction written out cluster by cluster, as in the module docstring."""

    def index(x: float, edges: np.ndarray) -> int:
        return int(np.clip(np.searchsorted(edges, x, side="right") - 1, 0, edges.size - 2))

    def centres(edges: np.ndarray) -> np.ndarray:
        return 0.5 * (edges[1:] + edges[:-1])

    out = []
    for i in range(len(batch)):
        cells = batch.cells[i, : batch.n_cells[i]].astype(np.float64)
        e = cells[:, E]
        pos = e > 0
        log_e = np.log10(max(float(batch["e_em"][i]), 1e-3))
        if pos.any():
            rho = e[pos] / (cells[pos, DETA] * cells[pos, DPHI] * cells[pos, R] ** 2)
            mean_rho = (e[pos] * rho).sum() / e[pos].sum()
            depth = (e[pos] * cells[pos, R]).sum() / e[pos].sum()
            row = cal.p_em[index(np.log10(mean_rho), cal.rho_edges), index(depth, cal.depth_edges)]
            p = np.interp(log_e, centres(cal.energy_edges), row)
        else:
            p = 0.5
        weighted = 0.0
        log_rhos = np.log10(rho) if pos.any() else np.zeros(0)
        for e_cell, sampling, log_rho in zip(e[pos], cells[pos, SAMPLING], log_rhos, strict=True):
            if int(sampling) in cal.samplings:
                table = cal.weights[cal.samplings.index(int(sampling)), index(log_rho, cal.cell_rho_edges)]
                w = np.interp(log_e, centres(cal.weight_energy_edges), table)
            else:
                w = 1.0
            weighted += (p + (1 - p) * w) * e_cell
        mean_w = weighted / e[pos].sum() if pos.any() else 1.0
        rest = float(batch["e_em"][i]) - e.sum()
        out.append(weighted + e[~pos].sum() + (mean_w if rest > 0 else 1.0) * rest)
    return np.array(out)


def test_prediction_matches_the_cluster_by_cluster_formula(synthetic_batch):
    train = synthetic_batch(n=600, max_cells=8, seed=1)
    test = synthetic_batch(n=200, max_cells=8, seed=2)
    cal = LCWCalibration.fit(train, rho_bins=4, depth_bins=3, energy_bins=3, cell_rho_bins=5, weight_energy_bins=3)
    truncated = test["n_cells_total"] > test.n_cells
    assert truncated.any()  # the energy of unstored cells is part of the check
    np.testing.assert_allclose(cal.predict(test), _reference_predict(cal, test), rtol=1e-5)


def test_em_scale_is_e_em(synthetic_batch):
    batch = synthetic_batch(n=50)
    out = em_scale(batch)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, batch["e_em"].astype(np.float64))


def test_cluster_moments_of_a_one_cell_cluster(synthetic_batch):
    batch = synthetic_batch(n=100, seed=3)
    one = batch.select(np.flatnonzero((batch.n_cells == 1) & (batch.cell("e")[:, 0] > 0))[:1])
    cell = one.cells[0, 0].astype(np.float64)
    m = cluster_moments(one)
    expected = np.log10(cell[E] / (cell[DETA] * cell[DPHI] * cell[R] ** 2))
    np.testing.assert_allclose(m["log_rho"], [expected], rtol=1e-5)
    np.testing.assert_allclose(m["depth"], [cell[R]], rtol=1e-6)


def test_single_bins_give_equal_priors_and_plain_layer_ratios(synthetic_batch):
    batch = synthetic_batch(n=800, seed=4)
    cal = LCWCalibration.fit(
        batch,
        rho_bins=1,
        depth_bins=1,
        energy_bins=1,
        cell_rho_bins=1,
        weight_energy_bins=1,
        prior_clusters=0,
        prior_cells=0,
        weight_range=(0.1, 10.0),
        absorb_negative=False,
    )
    np.testing.assert_allclose(cal.p_em, 0.5)  # one bin holds both classes, weighted to equal totals
    charged = (np.abs(batch["particle"]) == 211)[:, None] & batch.mask & (batch.cell("e") > 0)
    for row, sampling in enumerate(cal.samplings):
        cells = charged & (batch.cell("sampling") == sampling)
        ratio = batch.cell("e_true")[cells].sum(dtype=np.float64) / batch.cell("e")[cells].sum(dtype=np.float64)
        np.testing.assert_allclose(cal.weights[row, 0, 0], ratio, rtol=1e-9)
    absorbed = LCWCalibration.fit(
        batch, cell_rho_bins=1, weight_energy_bins=1, prior_cells=0, weight_range=(0.1, 10.0), absorb_negative=True
    )
    # Negative cells carry no true energy here, so absorbing their deficit can only raise the weights.
    assert (absorbed.weights >= cal.weights - 1e-12).all()
    assert (absorbed.weights > cal.weights).any()


def test_other_particles_are_ignored_in_the_fit(synthetic_batch):
    batch = synthetic_batch(n=400, seed=5)
    pions = np.isin(batch["particle"], (111, 211, -211))
    assert not pions.all()
    a = LCWCalibration.fit(batch)
    b = LCWCalibration.fit(batch.select(pions))
    np.testing.assert_array_equal(a.p_em, b.p_em)
    np.testing.assert_array_equal(a.weights, b.weights)


def test_unknown_samplings_get_weight_one_with_a_warning(synthetic_batch, caplog):
    cal = LCWCalibration.fit(synthetic_batch(n=400, seed=6))
    test = synthetic_batch(n=50, seed=7)
    cells = test.cells.copy()
    cells[:5, :, SAMPLING] = np.where(test.mask[:5], 21.0, 0.0)  # an end-cap sampling, never seen in training
    moved = ClusterBatch(cells=cells, cell_id=test.cell_id, n_cells=test.n_cells, scalars=test.scalars)
    with caplog.at_level(logging.WARNING, logger="calohls.physics.baselines"):
        out = cal.predict(moved)
    # Every cell of these clusters has weight 1, whatever p_EM: the EM scale comes back.
    np.testing.assert_allclose(out[:5], test["e_em"][:5], rtol=1e-5)
    np.testing.assert_array_equal(out[5:], cal.predict(test)[5:])
    assert "21 (" in caplog.text
    assert "not seen in training" in caplog.text


def test_predict_and_classify_an_empty_batch(synthetic_batch):
    cal = LCWCalibration.fit(synthetic_batch(n=300, seed=10))
    empty = ClusterBatch.empty(32)
    for out in (cal.predict(empty), cal.classify(empty)):
        assert out.shape == (0,)
        assert out.dtype == np.float64


# -- errors --------------------------------------------------------------------------------------------------


def test_fit_on_an_empty_batch_names_the_problem():
    with pytest.raises(DataError, match="empty batch"):
        LCWCalibration.fit(ClusterBatch.empty(16))


@pytest.mark.parametrize(("keep", "match"), [((211, -211), r"no π0 \(PDG 111\)"), ((111,), r"no π± \(PDG ±211\)")])
def test_fit_without_a_particle_type_names_it(synthetic_batch, keep, match):
    batch = synthetic_batch(n=300, seed=8)
    with pytest.raises(DataError, match=match):
        LCWCalibration.fit(batch.select(np.isin(batch["particle"], keep)))


def test_fit_with_neither_pion_type_names_both(synthetic_batch):
    batch = synthetic_batch(n=300, seed=8)
    with pytest.raises(DataError, match=r"no π0 .* and π±"):
        LCWCalibration.fit(batch.select(batch["particle"] == 22))


@pytest.mark.parametrize(
    ("option", "match"),
    [
        ({"rho_bins": 0}, "rho_bins=0"),
        ({"cell_rho_bins": 2.5}, "cell_rho_bins=2.5"),
        ({"weight_range": (1.5, 3.0)}, "weight_range"),
        ({"weight_range": "wide"}, "weight_range"),
        ({"prior_cells": -1.0}, "prior_cells=-1.0"),
    ],
)
def test_fit_rejects_bad_options(synthetic_batch, option, match):
    with pytest.raises(ConfigError, match=match):
        LCWCalibration.fit(synthetic_batch(n=50), **option)


def test_cells_without_a_size_are_refused(synthetic_batch):
    batch = synthetic_batch(n=50, seed=9)
    cells = batch.cells.copy()
    cells[3, 0, DETA] = 0.0
    bad = ClusterBatch(cells=cells, cell_id=batch.cell_id, n_cells=batch.n_cells, scalars=batch.scalars)
    with pytest.raises(DataError, match="Δη·Δφ·r² <= 0"):
        cluster_moments(bad)


def test_from_dict_refuses_other_content(fitted):
    with pytest.raises(DataError, match="not an LCW calibration"):
        LCWCalibration.from_dict({"format": "something else"})
    data = fitted.to_dict()
    with pytest.raises(DataError, match="version 99"):
        LCWCalibration.from_dict({**data, "version": 99})
    broken = json.loads(json.dumps(data))
    del broken["hadronic_weights"]["weights"]
    with pytest.raises(DataError, match="weights"):
        LCWCalibration.from_dict(broken)
    broken = json.loads(json.dumps(data))
    broken["classification"]["p_em"] = broken["classification"]["p_em"][1:]
    with pytest.raises(DataError, match="p_em has shape"):
        LCWCalibration.from_dict(broken)


def test_load_errors_name_the_file(tmp_path):
    missing = tmp_path / "missing.json"
    with pytest.raises(InputFileError, match=r"missing\.json"):
        LCWCalibration.load(missing)
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    with pytest.raises(InputFileError, match=r"garbage\.json"):
        LCWCalibration.load(garbage)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "calohls.scaler"}))
    with pytest.raises(SchemaError, match=r"other\.json: not an LCW calibration"):
        LCWCalibration.load(other)


def test_save_refuses_a_directory(fitted, tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        fitted.save(tmp_path)
