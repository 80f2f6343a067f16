from __future__ import annotations

import numpy as np
import pytest
from scipy.special import ndtr

from calohls.sim.geometry import LAYERS, Window, window_for, wrap_phi
from calohls.sim.showers import PI0_MASS, deposit, em_showers, pi0_decay, pion_showers


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


def test_pi0_decay_kinematics(rng):
    e = np.geomspace(0.5, 500, 2000)
    eta, phi = rng.uniform(-0.7, 0.7, e.size), rng.uniform(-3, 3, e.size)
    (e1, eta1, phi1), (e2, eta2, phi2) = pi0_decay(e, eta, phi, rng)
    np.testing.assert_allclose(e1 + e2, e, rtol=1e-9)

    def unit(eta_, phi_):
        theta = 2 * np.arctan(np.exp(-eta_))
        return np.stack([np.sin(theta) * np.cos(phi_), np.sin(theta) * np.sin(phi_), np.cos(theta)], 1)

    cos_open = np.sum(unit(eta1, phi1) * unit(eta2, phi2), axis=1)
    mass = np.sqrt(2 * e1 * e2 * (1 - cos_open))
    np.testing.assert_allclose(mass[e < 50], PI0_MASS, rtol=1e-4)
    # the photons open up less at high energy (≈ 2m/E)
    assert np.median(np.arccos(np.clip(cos_open[e > 100], -1, 1))) < 0.005


def test_em_showers_deepen_with_energy_and_are_contained(rng):
    n = 4000
    low = em_showers(np.full(n, 2.0), np.zeros(n), np.zeros(n), rng)
    high = em_showers(np.full(n, 200.0), np.zeros(n), np.zeros(n), rng)
    frac_low, frac_high = low.dep[:, 0].mean(0) / 2.0, high.dep[:, 0].mean(0) / 200.0
    emb1, emb3, tile0 = 1, 3, 4
    assert frac_low[emb1] > frac_high[emb1]
    assert frac_high[emb3] > frac_low[emb3]
    assert 0.85 < frac_high.sum() < 1.0  # dead material in front and a little leakage
    assert frac_high[tile0] < 0.02
    np.testing.assert_array_equal(low.vis, low.dep)  # EM scale: EM showers are seen in full


def test_pion_showers_are_non_compensating(rng):
    n = 4000
    response = []
    for e in (2.0, 20.0, 200.0):
        s = pion_showers(np.full(n, e), np.zeros(n), np.zeros(n), rng)
        dep, vis = s.dep.sum(axis=(1, 2)), s.vis.sum(axis=(1, 2))
        assert np.all(dep <= e * (1 + 1e-9))
        assert np.all(vis <= dep + 1e-9)  # invisible energy is never seen
        response.append(np.median(vis / dep))
        tile_share = s.dep[:, :, 4:].sum() / s.dep.sum()
        assert tile_share > 0.2  # hadronic showers reach the Tile calorimeter
    assert 0.4 < response[0] < response[1] < response[2] < 0.95


def test_deposit_integrates_the_profiles_exactly(rng):
    """The compiled kernel equals a direct numpy integration of the core and tail Gaussians over every cell."""
    n = 20
    e, eta, phi = np.geomspace(1, 300, n), rng.uniform(-0.6, 0.6, n), rng.uniform(-3.1, 3.1, n)
    slots = pion_showers(e, eta, phi, rng)
    window = Window(200.0)
    el, pl, _ = window_for(eta, phi)
    dep, vis = deposit(slots, window, el, pl)
    ref = np.zeros((n, window.n_cells))
    for k, (ne, nphi) in enumerate(window.shape):
        lay = LAYERS[k]
        e_edges, p_edges = np.arange(ne + 1) * lay.deta, np.arange(nphi + 1) * lay.dphi
        for s in range(slots.dep.shape[1]):
            ce, cp = slots.eta[:, s, k] - el, wrap_phi(slots.phi[:, s, k] - pl)
            prof = 0.0
            for sig, w in (
                (slots.sigma_core[:, s, k], 1 - slots.tail_fraction[:, s]),
                (slots.sigma_tail[:, s, k], slots.tail_fraction[:, s]),
            ):
                a = np.diff(ndtr((e_edges[None] - ce[:, None]) / sig[:, None]), axis=1)
                b = np.diff(ndtr((p_edges[None] - cp[:, None]) / sig[:, None]), axis=1)
                prof = prof + w[:, None, None] * a[:, :, None] * b[:, None, :]
            ref[:, window.offsets[k] : window.offsets[k + 1]] += (slots.dep[:, s, k, None, None] * prof).reshape(n, -1)
    np.testing.assert_allclose(dep, ref, atol=1e-6 * ref.max())
    assert np.all(vis <= dep * (1 + 1e-5) + 1e-7)
    # almost everything deposited in the layers lands in the window's cells
    np.testing.assert_allclose(dep.sum(1), slots.dep.sum(axis=(1, 2)), rtol=0.03)
