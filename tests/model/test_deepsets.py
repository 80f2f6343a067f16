from __future__ import annotations

import keras
import numpy as np
import pytest

from calohls.config import PRESETS, ModelConfig
from calohls.data.features import FEATURES
from calohls.model.deepsets import build_deepsets, layer_names

N_FEATURES = len(FEATURES)


def _inputs(n: int, max_cells: int, seed: int = 0) -> np.ndarray:
    """Random scaled inputs with a varying number of real cells (real flag first, padding all zero)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, max_cells, N_FEATURES)).astype(np.float32)
    x[..., 0] = 1.0
    n_real = rng.integers(1, max_cells + 1, n)
    x[np.arange(max_cells)[None, :] >= n_real[:, None]] = 0.0
    return x


@pytest.fixture(scope="module")
def model() -> keras.Model:
    return build_deepsets(ModelConfig(preset="small", max_cells=16), N_FEATURES, seed=1)


def test_presets_grow_and_layers_are_named():
    sizes = [build_deepsets(ModelConfig(preset=p, max_cells=8), N_FEATURES).count_params() for p in PRESETS]
    assert sizes == sorted(sizes)
    names = layer_names(build_deepsets(ModelConfig(phi=(8, 4), f=(6,), max_cells=8), N_FEATURES))
    assert names == ["phi_1", "phi_2", "ksum", "f_1", "output"]


def test_permutation_invariance(model):
    x = _inputs(64, 16)
    perm = np.random.default_rng(3).permutation(16)
    np.testing.assert_allclose(model.predict(x, verbose=0), model.predict(x[:, perm], verbose=0), rtol=1e-5, atol=1e-6)


def test_padding_adds_nothing(model):
    """Φ maps padding to exactly zero, so the output equals F applied to the sum over the real cells only."""
    x = _inputs(32, 16, seed=5)
    phi = keras.Model(model.inputs, model.get_layer(f"phi_{len(PRESETS['small'][0])}").output)
    phi_out = np.asarray(phi.predict(x, verbose=0))
    padding = x[..., 0] == 0
    assert padding.any()
    assert np.all(phi_out[padding] == 0.0)
    # a cluster with more padding rows: put each cluster's real cells into a 16-row block of a 16-cell input after
    # zeros — the real cells move, the padding count is the same, the prediction must not change
    shifted = np.zeros_like(x)
    for i in range(x.shape[0]):
        real = x[i][~padding[i]]
        shifted[i, 16 - real.shape[0] :] = real
    np.testing.assert_allclose(model.predict(x, verbose=0), model.predict(shifted, verbose=0), rtol=1e-5, atol=1e-6)
    # explicit sum over real cells only
    pooled = phi_out.sum(axis=1) / 16
    head_in = keras.Input((pooled.shape[1],))
    h = head_in
    for layer in model.layers[model.layers.index(model.get_layer("ksum")) + 1 :]:
        h = layer(h)
    head = keras.Model(head_in, h)
    np.testing.assert_allclose(model.predict(x, verbose=0), head.predict(pooled, verbose=0), rtol=1e-5, atol=1e-6)


def test_save_load_round_trip(model, tmp_path):
    x = _inputs(16, 16, seed=9)
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(model.predict(x, verbose=0), again.predict(x, verbose=0))
    assert layer_names(again) == layer_names(model)
