from __future__ import annotations

import math

import numpy as np
import pytest

from calohls.data.schema import SAMPLINGS
from calohls.errors import ConfigError
from calohls.sim.geometry import LAYERS, SLABS, Window, decode_cell_id, encode_cell_id, window_for, wrap_phi


@pytest.fixture(scope="module")
def window() -> Window:
    return Window(200.0)


def _layer_slice(window: Window, name: str) -> slice:
    k = [lay.name for lay in LAYERS].index(name)
    return slice(int(window.offsets[k]), int(window.offsets[k + 1]))


def test_cell_id_round_trip():
    rng = np.random.default_rng(0)
    s = rng.choice(list(SAMPLINGS.values()), 1000)
    i = rng.integers(-400, 400, 1000)
    j = rng.integers(0, 256, 1000)
    assert all(np.array_equal(a, b) for a, b in zip(decode_cell_id(encode_cell_id(s, i, j)), (s, i, j), strict=True))
    assert encode_cell_id(s, i, j).max() < 2**31  # fits the int32 IDs of MLTree files


def test_reference_numbers():
    sizes = {lay.name: (lay.deta, round(lay.dphi, 4)) for lay in LAYERS}
    assert sizes["EMB1"] == (0.003125, 0.0982)
    assert sizes["EMB2"] == (0.025, 0.0245)
    assert sizes["TileBar2"] == (0.2, 0.0982)
    em_x0 = sum(s.x0 for s in SLABS if s.name.startswith("EMB"))
    tile_lam = sum(s.lam for s in SLABS if s.name.startswith("Tile"))
    assert 22 <= em_x0 <= 27
    assert tile_lam == pytest.approx(7.4)
    emb2 = LAYERS[2]
    assert emb2.noise(0.0) == pytest.approx(0.060)
    assert emb2.noise(200.0) == pytest.approx(math.hypot(0.060, emb2.noise_pu200))
    assert emb2.noise(50.0) < emb2.noise(200.0)


def test_window_shape_and_unique_ids(window):
    assert window.n_cells == 1875
    el, _pl, j = window_for(np.array([0.33]), np.array([1.0]))
    ids = window.global_ids(np.arange(window.n_cells), np.repeat(el, window.n_cells), np.repeat(j, window.n_cells))
    assert np.unique(ids).size == window.n_cells
    sampling, _, _ = decode_cell_id(ids)
    assert np.array_equal(sampling, window.cell_static[:, 0].astype(int))


def test_window_contains_particle_with_margin():
    rng = np.random.default_rng(1)
    eta, phi = rng.uniform(-0.7, 0.7, 500), rng.uniform(-math.pi, math.pi, 500)
    el, pl, _ = window_for(eta, phi)
    w = Window(0.0)
    assert np.all(eta - el >= 0.2 - 1e-9)
    assert np.all(el + w.eta_size - eta >= 0.2 - 1e-9)
    dphi = wrap_phi(phi - pl)
    assert np.all(dphi >= 0.19)
    assert np.all(w.phi_size - dphi >= 0.19)


def test_window_rejects_forward_particles():
    with pytest.raises(ConfigError, match=r"\|η\| = 0.900"):
        window_for(np.array([0.9]), np.array([0.0]))


def test_neighbours_symmetric_and_local(window):
    indptr, indices = window.neighbours
    src = np.repeat(np.arange(window.n_cells), np.diff(indptr))
    pairs = set(zip(src.tolist(), indices.tolist(), strict=True))
    assert all((b, a) in pairs for a, b in pairs)
    assert not any(a == b for a, b in pairs)
    # every neighbour pair is in the same or an adjacent layer
    layer = window.cell_layer
    assert np.abs(layer[src] - layer[indices]).max() == 1


@pytest.mark.parametrize(
    ("layer", "other", "expected"),
    [
        ("EMB2", "EMB1", 8),  # an EMB2 cell covers 8 strips in η and a quarter of one in φ
        ("EMB1", "EMB2", 4),  # a strip spans one EMB2 cell in η and four in φ
        ("EMB3", "TileBar0", 1),  # across the LAr/Tile boundary
        ("TileBar1", "TileBar2", 1),
    ],
)
def test_cross_layer_neighbours(window, layer, other, expected):
    indptr, indices = window.neighbours
    sl, so = _layer_slice(window, layer), _layer_slice(window, other)
    n_l, n_p = window.shape[[lay.name for lay in LAYERS].index(layer)]
    centre = sl.start + (n_l // 2) * n_p + n_p // 2  # an interior cell
    nb = indices[indptr[centre] : indptr[centre + 1]]
    assert ((nb >= so.start) & (nb < so.stop)).sum() == expected
    assert ((nb >= sl.start) & (nb < sl.stop)).sum() == 8  # same layer: edges and corners


def test_same_cell_from_two_windows_has_same_position(window):
    # two particles close enough that their windows overlap
    el, pl, j = window_for(np.array([0.05, 0.25]), np.array([0.0, 0.15]))
    cells = np.arange(window.n_cells)
    ids = [window.global_ids(cells, np.repeat(el[k], cells.size), np.repeat(j[k], cells.size)) for k in range(2)]
    common, ia, ib = np.intersect1d(ids[0], ids[1], return_indices=True)
    assert common.size > 100
    eta = [el[0] + window.cell_eta[ia], el[1] + window.cell_eta[ib]]
    phi = [wrap_phi(pl[0] + window.cell_phi[ia]), wrap_phi(pl[1] + window.cell_phi[ib])]
    np.testing.assert_allclose(eta[0], eta[1], atol=1e-9)
    np.testing.assert_allclose(phi[0], phi[1], atol=1e-9)
