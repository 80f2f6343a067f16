from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from calohls.sim.ziggurat import ZIGGURAT, _fill, standard_normal


def test_normal_moments_and_tails():
    z = standard_normal(np.random.default_rng(3), 4_000_000, np.float64)
    n = z.size
    assert abs(z.mean()) < 5 / math.sqrt(n)
    assert abs(z.var() - 1.0) < 5 * math.sqrt(2.0 / n)
    assert abs(stats.skew(z)) < 5 * math.sqrt(6.0 / n)
    assert abs(stats.kurtosis(z)) < 5 * math.sqrt(24.0 / n)
    # the tails decide the topo-cluster seeds (4σ) and growth (2σ); 3.65 is where the ziggurat's tail starts
    for t in (1.0, 2.0, 3.0, 3.6541528853610088, 4.0):
        expected = 2 * stats.norm.sf(t) * n
        assert abs(np.sum(np.abs(z) > t) - expected) < 5 * math.sqrt(expected), t
    assert stats.kstest(z[:200_000], "norm").pvalue > 1e-4


def test_same_generator_same_numbers():
    a = standard_normal(np.random.default_rng(11), (300, 7))
    b = standard_normal(np.random.default_rng(11), (300, 7))
    assert a.dtype == np.float32
    assert a.shape == (300, 7)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, standard_normal(np.random.default_rng(12), (300, 7)))


def test_running_out_of_words_stops_cleanly():
    words = np.random.default_rng(5).bit_generator.random_raw(50)
    out = np.zeros(100)
    done = _fill(out, words, 0, ZIGGURAT)
    assert 0 < done <= 50
    assert np.all(out[done:] == 0.0)
    # resuming with more words fills the rest
    assert _fill(out, np.random.default_rng(6).bit_generator.random_raw(500), done, ZIGGURAT) == 100


@pytest.mark.parametrize("layer", [0, 1, 100, 255])
def test_tables_are_consistent(layer):
    k, w, f = ZIGGURAT[:, layer]
    assert w > 0.0
    assert 0.0 < f <= 1.0
    assert 0.0 <= k < 2.0**52
