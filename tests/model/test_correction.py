from __future__ import annotations

import numpy as np
import pytest

from calohls.errors import DataError, InputFileError
from calohls.model.correction import ResponseCorrection


def _biased_sample(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A regression pulled towards the mean: +10 % at 1 GeV falling to 0 at 100 GeV, with 20 % spread."""
    rng = np.random.default_rng(seed)
    e_true = 10 ** rng.uniform(0, 2, n)
    bias = 1 + 0.1 * (2 - np.log10(e_true)) / 2
    return e_true, e_true * bias * rng.lognormal(0, 0.2, n)


def test_correction_makes_the_binned_median_one():
    e_true, e_pred = _biased_sample(40_000)
    corr = ResponseCorrection.fit(e_true, e_pred)
    e_true2, e_pred2 = _biased_sample(40_000, seed=1)
    fixed = corr.apply(e_pred2)
    for lo in (1, 3, 10, 30):
        sel = (e_true2 >= lo) & (e_true2 < 2 * lo)
        assert np.median(e_pred2[sel] / e_true2[sel]) > 1.02 or lo == 30
        assert np.median(fixed[sel] / e_true2[sel]) == pytest.approx(1.0, abs=0.02)


def test_small_sets_and_round_trip(tmp_path):
    e_true, e_pred = _biased_sample(30)
    corr = ResponseCorrection.fit(e_true, e_pred)
    assert len(corr.log_pred) >= 1
    identity = ResponseCorrection.fit(e_true[:3], e_pred[:3])  # no bin can hold 5 clusters: no correction
    np.testing.assert_allclose(identity.apply(e_pred), e_pred)
    corr.save(tmp_path / "c.json")
    assert ResponseCorrection.load(tmp_path / "c.json") == corr
    with pytest.raises(InputFileError, match="re-run `calohls train`"):
        ResponseCorrection.load(tmp_path / "missing.json")
    with pytest.raises(DataError, match="no clusters"):
        ResponseCorrection.fit(np.array([1.0]), np.array([-1.0]))
    # nothing above the floor (a low-energy sample): no correction rather than an error
    below = ResponseCorrection.fit(e_true, e_pred, min_energy=1000.0)
    np.testing.assert_allclose(below.apply(e_pred), e_pred)


def test_the_correction_is_held_below_its_floor():
    e_true, e_pred = _biased_sample(40_000)
    floor = ResponseCorrection.fit(e_true, e_pred, min_energy=10.0)
    assert floor.min_energy == 10.0
    # fitted above 10 GeV only: below its lowest prediction the factor stays at the first bin's
    low = np.array([1.0, 2.0, 5.0])
    np.testing.assert_allclose(floor.apply(low) / low, 1 / floor.response[0])
    assert 10 ** floor.log_pred[0] > 9.0
