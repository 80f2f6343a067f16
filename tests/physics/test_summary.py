from __future__ import annotations

import json

import numpy as np
import pytest

from calohls.physics.response import QUANTILE_PAIRS, binned_response, log_bins
from calohls.physics.summary import RESPONSE_GROUPS, SUMMARY_FIELDS, hit_coverage, summarize_scalars


@pytest.fixture
def batch(synthetic_batch):
    return synthetic_batch(n=600, max_cells=16, seed=5)


def test_counts_truncation_and_ranges(batch):
    s = summarize_scalars(batch.scalars, batch.max_cells)
    n = len(batch)
    assert s.n_clusters == n
    assert s.n_events == np.unique(batch["event"]).size
    assert s.max_cells == 16
    assert sum(p.clusters for p in s.particles.values()) == n
    assert set(s.particles) <= {"pi+", "pi-", "pi0", "gamma"}
    assert s.particles["pi0"].pdg == 111
    assert s.particles["pi0"].clusters == int((batch["particle"] == 111).sum())
    truncated = int((batch["n_cells_total"] > batch.max_cells).sum())
    assert truncated > 0
    assert s.truncated.clusters == truncated
    assert s.truncated.max_cells_total == int(batch["n_cells_total"].max())
    for field in ("e_true", "e_em", "e_particle"):
        assert s.energy[field].min == pytest.approx(float(batch[field].min()))
        assert s.energy[field].max == pytest.approx(float(batch[field].max()))


def test_response_groups_match_binned_response(batch):
    bins = log_bins(0.5, 500.0, per_decade=2)
    s = summarize_scalars(batch.scalars, batch.max_cells, bins=bins, quantiles=QUANTILE_PAIRS["25-75"], min_count=5)
    assert s.response.resolution_label == "IQR(25–75%)/median"
    assert list(s.response.groups) == ["pi0", "pi+-", "gamma"]
    pions = s.response.groups["pi+-"]
    assert pions.label == "π±"
    assert pions.pdg == [211, -211]
    mask = np.isin(batch["particle"], [211, -211])
    assert pions.clusters == int(mask.sum())
    expected = binned_response(
        batch["e_true"][mask], batch["e_em"][mask], bins, quantiles=(0.25, 0.75), min_count=5
    ).to_dict()
    for key, value in expected.items():
        assert pions.to_json()[key] == value


def test_absent_particles_have_no_response_group(batch):
    keep = batch["particle"] != 22
    scalars = {k: v[keep] for k, v in batch.scalars.items()}
    s = summarize_scalars(scalars, batch.max_cells)
    assert "gamma" not in s.response.groups
    assert "gamma" not in s.particles


def test_unknown_particle_ids_are_named_by_pdg(batch):
    scalars = dict(batch.scalars)
    scalars["particle"] = np.where(batch["particle"] == 22, 2112, batch["particle"]).astype(np.int32)
    s = summarize_scalars(scalars, batch.max_cells)
    assert s.particles["pdg 2112"].pdg == 2112
    assert set(s.response.groups) == {"pi0", "pi+-"}


def test_empty_input_is_strict_json(batch):
    scalars = {k: v[:0] for k, v in batch.scalars.items()}
    s = summarize_scalars(scalars, batch.max_cells)
    assert s.n_clusters == 0
    assert s.particles == {}
    assert s.energy == {"e_true": None, "e_em": None, "e_particle": None}
    assert s.response.groups == {}
    json.dumps(s.to_json(), allow_nan=False)


def test_summary_is_strict_json(batch):
    s = summarize_scalars(batch.scalars, batch.max_cells)
    assert json.loads(json.dumps(s.to_json(), allow_nan=False)) == s.to_json()


def test_response_groups_cover_known_particles():
    assert set(SUMMARY_FIELDS) >= {"e_true", "e_em", "particle", "n_cells_total"}
    assert {pdg for _, pdgs in RESPONSE_GROUPS.values() for pdg in pdgs} == {111, 211, -211, 22}


def test_hit_coverage_of_cells_and_clusters():
    cov = hit_coverage(np.array([0.9, 0.8, 0.0, 1.0]), np.array([1.0, 1.0, -1.0, 1.0]))
    assert cov.read == 4
    assert cov.clusters == 3  # the cluster with ENG_CALIB_TOT = -1 is not counted
    assert cov.median == pytest.approx(0.9)
    assert cov.q16 < cov.median < cov.q84
    none = hit_coverage(np.zeros(3), np.ones(3))
    assert none.has_hits is False
    assert none.median is None
