from __future__ import annotations

import numpy as np
import pytest

from calohls.data.features import FEATURES, TARGETS, FeatureScaler, cell_features, energy_from_target, target
from calohls.data.schema import SAMPLINGS
from calohls.errors import DataError, InputFileError


def test_cell_features_layout(synthetic_batch):
    b = synthetic_batch(n=100, max_cells=16)
    x = cell_features(b, 24)
    assert x.shape == (100, 24, len(FEATURES))
    real = x[..., FEATURES.index("real")]
    np.testing.assert_array_equal(real[:, :16], b.mask)
    assert np.all(x[:, 16:] == 0)  # padding beyond the record's cells
    assert np.all(x[~np.pad(b.mask, ((0, 0), (0, 8)))] == 0)
    onehot = x[..., [i for i, f in enumerate(FEATURES) if f.startswith("s_")]]
    np.testing.assert_array_equal(onehot.sum(-1), real)
    e = b.cell("e")
    np.testing.assert_allclose(x[:, :16, FEATURES.index("asinh_e")][b.mask], np.arcsinh(e[b.mask] / 0.1), rtol=1e-6)


def test_the_significance_is_energy_over_the_cell_noise(synthetic_batch):
    b = synthetic_batch(n=20, max_cells=8)
    sigma = b.cell("sigma")
    sigma[:] = 0.2
    sigma[:, 0] = 0.0  # no noise stored: counts as the 10 MeV floor
    b.cells[:, :, 0] = np.where(b.mask, 0.6, 0.0)
    sig = cell_features(b, 8)[..., FEATURES.index("asinh_sig")]
    np.testing.assert_allclose(sig[:, 1:][b.mask[:, 1:]], np.arcsinh(3.0), rtol=1e-6)
    np.testing.assert_allclose(sig[:, 0][b.mask[:, 0]], np.arcsinh(60.0), rtol=1e-6)
    assert np.all(sig[~b.mask] == 0)


def test_fewer_cells_than_the_record_keeps_the_most_energetic(synthetic_batch):
    b = synthetic_batch(n=50, max_cells=16)
    x = cell_features(b, 4)
    assert x.shape[1] == 4
    np.testing.assert_allclose(x[..., FEATURES.index("asinh_e")], np.arcsinh(b.cell("e")[:, :4] / 0.1) * b.mask[:, :4])


def test_unknown_samplings_go_to_other(synthetic_batch):
    b = synthetic_batch(n=10, max_cells=4)
    b.cells[:, :, 4] = 21.0  # an end-cap sampling number
    x = cell_features(b, 4)
    np.testing.assert_array_equal(x[..., FEATURES.index("s_other")], b.mask)
    assert x[..., [FEATURES.index(f"s_{n}") for n in SAMPLINGS]].sum() == 0


def test_scaler_standardises_real_cells_and_keeps_padding_zero(synthetic_batch, tmp_path):
    x = cell_features(synthetic_batch(n=300, max_cells=16), 16)
    scaler = FeatureScaler.fit(x)
    z = scaler.transform(x)
    real = x[..., 0] > 0
    assert np.all(z[~real] == 0)
    unscaled = ("real", "e_100", "log_deta_cell")
    scaled = [i for i, f in enumerate(FEATURES) if f not in unscaled and not f.startswith("s_")]
    np.testing.assert_allclose(z[real][:, scaled].mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(z[real][:, scaled].std(0), 1, atol=1e-3)
    np.testing.assert_array_equal(z[..., 0], x[..., 0])  # the constant stays 1
    scaler.save(tmp_path / "f.json")
    assert FeatureScaler.load(tmp_path / "f.json") == scaler
    with pytest.raises(DataError, match=rf"features have shape \(8, {len(FEATURES)}\)"):
        scaler.transform(x[:, :8])
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(InputFileError, match="cannot read the feature scaling"):
        FeatureScaler.load(tmp_path / "bad.json")


@pytest.mark.parametrize("kind", TARGETS)
def test_target_round_trip(kind):
    e_true, e_em = np.array([0.05, 1.0, 450.0]), np.array([-0.3, 0.7, 400.0])
    np.testing.assert_allclose(energy_from_target(target(e_true, e_em, kind), e_em, kind), e_true, rtol=1e-6)


def test_target_errors():
    with pytest.raises(DataError, match=r"found -0\.1 GeV"):
        target(np.array([1.0, -0.1]), np.ones(2))
    with pytest.raises(DataError, match="unknown target 'ratio'"):
        target(np.ones(2), np.ones(2), "ratio")


def test_density_fraction_and_cluster_context_features(synthetic_batch):
    batch = synthetic_batch(n=200, max_cells=16)
    x = cell_features(batch, 16)
    real = x[..., FEATURES.index("real")] > 0
    col = {name: x[..., FEATURES.index(name)] for name in ("frac", "log_e_cluster", "log_n_cells", "asinh_rho")}
    e_ref = np.maximum(batch["e_em"], 0.1)
    for name in col:
        assert not col[name][~real].any(), f"{name} must stay zero in padding"
    # the cluster context is the same on every real cell of a cluster
    expected = np.broadcast_to(np.log10(e_ref)[:, None], real.shape)
    np.testing.assert_allclose(col["log_e_cluster"][real], expected[real], rtol=1e-6)
    n_cells = np.broadcast_to(np.log(np.maximum(batch["n_cells_total"], 1))[:, None], real.shape)
    np.testing.assert_allclose(col["log_n_cells"][real], n_cells[real], rtol=1e-6)
    # the fractions of the stored cells add up to their share of the EM-scale energy
    stored = (batch.cell("e")[:, :16] * batch.mask[:, :16]).sum(1)
    np.testing.assert_allclose(col["frac"].sum(1), stored / e_ref, rtol=1e-4, atol=1e-5)
    # the density grows with the energy at fixed cell size
    assert np.all(np.sign(col["asinh_rho"][real]) == np.sign(batch.cell("e")[:, :16][real]))
