from __future__ import annotations

import numpy as np
import pytest

from calohls.config import SimConfig
from calohls.data.schema import ClusterBatch
from calohls.physics.response import binned_response
from calohls.sim.generate import simulate, simulate_batch
from calohls.sim.geometry import decode_cell_id


def _equal(a: ClusterBatch, b: ClusterBatch) -> bool:
    return (
        np.array_equal(a.cells, b.cells)
        and np.array_equal(a.cell_id, b.cell_id)
        and np.array_equal(a.n_cells, b.n_cells)
        and all(np.array_equal(a.scalars[k], b.scalars[k]) for k in a.scalars)
    )


def test_same_seed_same_clusters_whatever_the_workers():
    config = SimConfig(events=600, batch_events=200, seed=5)
    one = ClusterBatch.concatenate(simulate(config, workers=1))
    two = ClusterBatch.concatenate(simulate(config, workers=2))
    assert len(one) > 300
    assert _equal(one, two)
    assert not _equal(simulate_batch(config, 0), simulate_batch(config.model_copy(update={"seed": 6}), 0))


def test_progress_counts_every_event():
    seen: list[int] = []
    list(simulate(SimConfig(events=450, batch_events=200), workers=1, progress=seen.append))
    assert seen == [200, 200, 50]


@pytest.fixture(scope="module")
def batch() -> ClusterBatch:
    return simulate_batch(SimConfig(events=1500, batch_events=1500, seed=2, max_cells=64), 0)


def test_record_is_consistent(batch):
    b = batch
    e = b.cell("e")
    mask = b.mask
    # cells sorted by descending EM-scale energy, padding zero
    assert np.all(np.diff(np.where(mask, e, -1e30), axis=1)[mask[:, 1:]] <= 0)
    assert np.all(b.cells[~mask] == 0)
    assert np.all(b.cell_id[~mask] == -1)
    full = b["n_cells_total"] == b.n_cells
    assert full.any()
    assert (~full).any()
    np.testing.assert_allclose(np.where(mask, e, 0).sum(1)[full], b["e_em"][full], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(
        np.where(mask, b.cell("e_true"), 0).sum(1)[full], b["e_true"][full], rtol=1e-4, atol=1e-4
    )
    assert np.all(b["e_true"] >= 0.05)  # min_e_true
    sampling, _, _ = decode_cell_id(b.cell_id[mask])
    np.testing.assert_array_equal(sampling, b.cell("sampling")[mask])
    assert np.all(np.abs(b["eta"] - b["eta_particle"]) < 0.3)
    # every event with clusters has exactly one leading cluster
    events = np.unique(b["event"])
    assert np.array_equal(np.sort(b["event"][b["cluster_index"] == 0]), events)


@pytest.fixture(scope="module")
def physics() -> ClusterBatch:
    """Seeded π±/π0 sample at μ = 200: leading clusters only."""
    config = SimConfig(events=24_000, seed=11, max_cells=8)
    b = ClusterBatch.concatenate(simulate(config, workers=2))
    return b.select(b["cluster_index"] == 0)


def _table(b: ClusterBatch, pdg: tuple[int, ...], edges):
    sel = np.isin(b["particle"], pdg)
    return binned_response(b["e_true"][sel], b["e_em"][sel], edges, min_count=50)


EDGES = np.array([2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0])


def test_pi0_response_is_near_one_above_5_gev(physics):
    table = _table(physics, (111,), EDGES)
    above = table.edges[:-1] >= 5.0
    assert np.all(table.counts[above] >= 50)
    assert np.all((table.median[above] > 0.90) & (table.median[above] < 1.05)), table.median


def test_charged_pions_lie_below_and_rise_with_energy(physics):
    pi0, pic = _table(physics, (111,), EDGES), _table(physics, (211, -211), EDGES)
    assert np.all((pic.median > 0.5) & (pic.median < 0.9)), pic.median
    assert np.all(pi0.median - pic.median > 0.08)  # clearly below π0 in every bin
    assert pic.median[-1] - pic.median[0] > 0.08  # non-compensation shrinks as f_em grows
    assert np.all(np.diff(pic.median[1:]) > -0.01)


def test_charged_pion_resolution_improves_with_energy(physics):
    res = _table(physics, (211, -211), EDGES).resolution
    assert np.all(np.diff(res) < 0), res
    assert res[-1] < res[0] / 4


def test_photon_resolution_is_em_like():
    config = SimConfig(particles=("gamma",), events=3000, e_min=49.5, e_max=50.5, mu=0.0, seed=3, max_cells=8)
    b = ClusterBatch.concatenate(simulate(config, workers=1))
    r = b.response_em[b["cluster_index"] == 0]
    q16, q50, q84 = np.percentile(r, [16, 50, 84])
    # 10 %/√E ⊕ 0.7 % at 50 GeV is 1.6 %, plus electronic noise
    assert 0.012 < (q84 - q16) / 2 / q50 < 0.025


def test_sampling_resolution_without_noise_is_ten_percent_over_sqrt_e():
    """Noise off: σ/E of photons is the sampling term 10 %/√E ⊕ 0.7 % alone."""
    for energy in (5.0, 200.0):
        config = SimConfig(
            particles=("gamma",), events=2000, e_min=energy * 0.99, e_max=energy * 1.01, noise=False, seed=4
        )
        b = ClusterBatch.concatenate(simulate(config, workers=1))
        r = b.response_em[b["cluster_index"] == 0]
        q16, q50, q84 = np.percentile(r, [16, 50, 84])
        e_true = np.mean(b["e_true"][b["cluster_index"] == 0])
        expected = np.hypot(0.10 / np.sqrt(e_true), 0.007)
        assert (q84 - q16) / 2 / q50 == pytest.approx(expected, rel=0.1)
        assert q50 == pytest.approx(1.0, abs=0.005)
