from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from calohls.errors import ConfigError, DataError, NonFiniteError
from calohls.physics.response import (
    QUANTILE_PAIRS,
    ResponseTable,
    binned_response,
    log_bins,
    resolution_label,
    summarize_response,
)

# -- log_bins ------------------------------------------------------------------------------------------------


def test_log_bins_whole_decades():
    edges = log_bins(0.5, 500.0, per_decade=3)
    assert edges.shape == (10,)
    assert edges[0] == 0.5
    assert edges[-1] == 500.0
    np.testing.assert_allclose(edges[1:] / edges[:-1], 10 ** (1 / 3), rtol=1e-12)


def test_log_bins_default_five_per_decade():
    assert log_bins(1.0, 1000.0).shape == (16,)


def test_log_bins_partial_decade_rounds_up_and_keeps_the_ends():
    edges = log_bins(1.0, 30.0, per_decade=2)  # 2 × log10(30) = 2.95 → 3 bins
    assert edges.shape == (4,)
    assert (edges[0], edges[-1]) == (1.0, 30.0)


@pytest.mark.parametrize(
    ("lo", "hi", "per_decade", "match"),
    [
        (0.0, 10.0, 3, "positive"),
        (-1.0, 10.0, 3, "positive"),
        (1.0, float("inf"), 3, "finite"),
        (10.0, 1.0, 3, "empty"),
        (1.0, 1.0, 3, "empty"),
        (1.0, 10.0, 0, "per_decade=0"),
        (1.0, 10.0, 2.5, "per_decade=2.5"),
        (1.0, 10.0, True, "per_decade=True"),
    ],
)
def test_log_bins_rejects(lo, hi, per_decade, match):
    with pytest.raises(ConfigError, match=match):
        log_bins(lo, hi, per_decade)


# -- binned_response: exact values ---------------------------------------------------------------------------


def _integer_responses(n: int, e: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` clusters at ``e_true = e`` whose responses are exactly 0, 1, ..., n - 1 (shuffled)."""
    r = rng.permutation(n).astype(np.float64)
    return np.full(n, e), r * e


def test_exact_median_and_16_84_quantiles():
    rng = np.random.default_rng(0)
    e_true, e_pred = _integer_responses(101, 2.0, rng)  # R = 0..100: quantile q sits exactly at 100 q
    table = binned_response(e_true, e_pred, [1.0, 10.0])
    assert table.counts.tolist() == [101]
    assert table.median.tolist() == [50.0]
    assert table.q_lo.tolist() == [16.0]
    assert table.q_hi.tolist() == [84.0]
    assert table.resolution.tolist() == [68.0 / 50.0]
    assert table.quantiles == (0.16, 0.84)
    assert table.resolution_label == "IQR(16–84%)/median"


def test_exact_25_75_quantiles():
    rng = np.random.default_rng(1)
    e_true, e_pred = _integer_responses(101, 4.0, rng)
    table = binned_response(e_true, e_pred, [1.0, 10.0], quantiles=QUANTILE_PAIRS["25-75"])
    assert (table.q_lo[0], table.median[0], table.q_hi[0]) == (25.0, 50.0, 75.0)
    assert table.resolution[0] == 1.0
    assert table.resolution_label == "IQR(25–75%)/median"


def test_interpolates_like_numpy_quantile():
    e_true = np.full(4, 3.0)
    e_pred = np.array([3.0, 6.0, 9.0, 12.0])  # R = 1, 2, 3, 4
    table = binned_response(e_true, e_pred, [1.0, 10.0], min_count=1)
    assert table.median[0] == 2.5
    np.testing.assert_allclose([table.q_lo[0], table.q_hi[0]], [1.48, 3.52], rtol=1e-14)


def test_matches_numpy_quantile_per_bin():
    rng = np.random.default_rng(2)
    e_true = np.exp(rng.uniform(np.log(0.5), np.log(500.0), 20_000))
    e_pred = e_true * rng.normal(0.9, 0.2, e_true.size)
    bins = log_bins(0.5, 500.0, per_decade=3)
    table = binned_response(e_true, e_pred, bins)
    index = np.digitize(e_true, bins) - 1
    for i in range(len(bins) - 1):
        r = (e_pred / e_true)[index == i]
        assert table.counts[i] == r.size
        expected = np.quantile(r, [0.16, 0.5, 0.84])
        np.testing.assert_allclose([table.q_lo[i], table.median[i], table.q_hi[i]], expected, rtol=1e-13)
    np.testing.assert_allclose(table.resolution, (table.q_hi - table.q_lo) / table.median)


def test_geometric_centres_and_edges():
    table = binned_response([2.0], [2.0], [1.0, 4.0, 16.0], min_count=1)
    assert table.centres.tolist() == [2.0, 8.0]
    assert table.edges.tolist() == [1.0, 4.0, 16.0]
    assert table.n_bins == 2


def test_bin_membership_at_edges_and_outside():
    bins = [1.0, 2.0, 4.0]
    e_true = np.array([0.5, 1.0, 1.999, 2.0, 3.0, 4.0, 4.001, 100.0])
    table = binned_response(e_true, e_true, bins, min_count=1)
    # [1, 2) holds 1.0 and 1.999; the last bin [2, 4] holds 2.0, 3.0 and its upper edge 4.0; others are out.
    assert table.counts.tolist() == [2, 3]


# -- binned_response: sparse bins ----------------------------------------------------------------------------


def test_bins_below_min_count_are_nan():
    rng = np.random.default_rng(3)
    e_true = np.concatenate([np.full(9, 1.5), np.full(10, 15.0)])
    e_pred = e_true * rng.uniform(0.8, 1.2, e_true.size)
    table = binned_response(e_true, e_pred, [1.0, 10.0, 100.0, 1000.0], min_count=10)
    assert table.counts.tolist() == [9, 10, 0]
    for values in (table.median, table.q_lo, table.q_hi, table.resolution):
        assert np.isnan(values[0])
        assert np.isfinite(values[1])
        assert np.isnan(values[2])


def test_no_clusters_at_all():
    table = binned_response(np.array([]), np.array([]), [1.0, 10.0])
    assert table.counts.tolist() == [0]
    assert np.isnan(table.median).all()


def test_resolution_nan_where_median_not_positive():
    e_true = np.full(20, 5.0)
    e_pred = np.linspace(-2.0, 1.0, 20)
    table = binned_response(e_true, e_pred, [1.0, 10.0])
    assert table.median[0] < 0
    assert np.isnan(table.resolution[0])


# -- ResponseTable -------------------------------------------------------------------------------------------


def test_to_dict_is_strict_json_with_none_for_nan():
    e_true = np.concatenate([np.full(12, 2.0), np.full(3, 20.0)])
    table = binned_response(e_true, e_true, [1.0, 10.0, 100.0])
    d = json.loads(json.dumps(table.to_dict(), allow_nan=False))
    assert d["counts"] == [12, 3]
    assert d["median"] == [1.0, None]
    assert d["resolution"] == [0.0, None]
    assert d["quantiles"] == [0.16, 0.84]
    assert d["resolution_label"] == "IQR(16–84%)/median"
    assert d["min_count"] == 10
    assert set(d) >= {"edges", "centres", "q_lo", "q_hi"}


def test_table_is_immutable():
    table = binned_response([2.0], [2.0], [1.0, 4.0], min_count=1)
    assert isinstance(table, ResponseTable)
    with pytest.raises(dataclasses.FrozenInstanceError):
        table.median = np.zeros(1)  # type: ignore[misc]
    with pytest.raises(ValueError, match="read-only"):
        table.median[0] = 0.0


def test_resolution_label_formats_percent():
    assert resolution_label() == "IQR(16–84%)/median"
    assert resolution_label((0.05, 0.95)) == "IQR(5–95%)/median"


# -- errors --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("e_true", "e_pred", "match"),
    [
        ([1.0, np.nan, 2.0], [1.0, 1.0, 1.0], r"non-finite e_true=nan at cluster 1"),
        ([1.0, 2.0], [np.inf, 1.0], r"non-finite e_pred=inf at cluster 0"),
    ],
)
def test_non_finite_inputs(e_true, e_pred, match):
    with pytest.raises(NonFiniteError, match=match) as info:
        binned_response(e_true, e_pred, [1.0, 10.0])
    assert "\n" not in str(info.value)


def test_length_mismatch():
    with pytest.raises(DataError, match="e_true has 3 values but e_pred has 2"):
        binned_response([1.0, 2.0, 3.0], [1.0, 2.0], [1.0, 10.0])


def test_two_dimensional_input():
    with pytest.raises(DataError, match=r"e_true has shape \(2, 2\)"):
        binned_response(np.ones((2, 2)), np.ones((2, 2)), [1.0, 10.0])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"bins": [1.0]}, "at least two bin edges"),
        ({"bins": [10.0, 1.0]}, "increasing"),
        ({"bins": [0.0, 1.0]}, "positive"),
        ({"bins": [1.0, np.nan]}, "finite"),
        ({"quantiles": (0.84, 0.16)}, "0 <= low < high <= 1"),
        ({"quantiles": (0.16,)}, "pair of numbers"),
        ({"min_count": 0}, "min_count=0"),
    ],
)
def test_bad_options(kwargs, match):
    args = {"bins": [1.0, 10.0]} | kwargs
    bins = args.pop("bins")
    with pytest.raises(ConfigError, match=match):
        binned_response([2.0], [2.0], bins, **args)


# -- summarize_response --------------------------------------------------------------------------------------


def test_summarize_response_per_group():
    rng = np.random.default_rng(4)
    n = 3000
    e_true = np.exp(rng.uniform(0.0, np.log(100.0), n))
    kind = rng.integers(0, 2, n)
    e_pred = e_true * np.where(kind == 0, 0.6, 0.9) * rng.normal(1.0, 0.05, n)
    bins = log_bins(1.0, 100.0, per_decade=2)
    tables = summarize_response(e_true, e_pred, bins, {"b": kind == 1, "a": kind == 0})
    assert list(tables) == ["b", "a"]
    for name, mask in (("a", kind == 0), ("b", kind == 1)):
        expected = binned_response(e_true[mask], e_pred[mask], bins)
        np.testing.assert_array_equal(tables[name].median, expected.median)
        np.testing.assert_array_equal(tables[name].counts, expected.counts)
    np.testing.assert_allclose(tables["a"].median, 0.6, rtol=0.02)
    np.testing.assert_allclose(tables["b"].median, 0.9, rtol=0.02)


@pytest.mark.parametrize("mask", [np.ones(3, bool), np.ones(4, np.int64)])
def test_summarize_response_rejects_bad_masks(mask):
    with pytest.raises(DataError, match="group 'x'"):
        summarize_response(np.ones(4), np.ones(4), [0.5, 2.0], {"x": mask})


# -- bootstrap intervals -------------------------------------------------------------------------------------


def _gaussian(n: int, sigma: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    e_true = np.full(n, 5.0)
    return e_true, e_true * (1.0 + sigma * rng.normal(size=n))


def test_bootstrap_interval_matches_the_analytic_spread_of_the_median():
    e_true, e_pred = _gaussian(4000, 0.2, 1)
    table = binned_response(e_true, e_pred, [1.0, 10.0], bootstrap=400)
    # the median of n Gaussian values scatters by sqrt(π/2) σ / sqrt(n); the resolution (2σ/median) by about
    # sqrt(π/2) · 2σ / sqrt(n) too (each of the 16 % and 84 % quantiles scatters by ~1.3 × that of the median)
    expected = np.sqrt(np.pi / 2) * 0.2 / np.sqrt(4000)
    assert table.median_err[0] == pytest.approx(expected, rel=0.25)
    assert table.median_lo[0] < table.median[0] < table.median_hi[0]
    assert table.resolution_lo[0] < table.resolution[0] < table.resolution_hi[0]
    assert 0.5 * expected < table.resolution_err[0] < 4 * expected
    assert table.bootstrap == 400
    assert table.resolution_replicas.shape == (400, 1)


def test_bootstrap_matches_resampling_by_hand():
    """The order-statistic shortcut gives the distribution of a plain bootstrap (resample, np.quantile)."""
    rng = np.random.default_rng(8)
    response = rng.lognormal(0.0, 0.4, 300)  # skewed, so the three quantiles move differently
    e_true = np.full(response.size, 3.0)
    table = binned_response(e_true, e_true * response, [1.0, 10.0], bootstrap=4000)
    resamples = response[rng.integers(0, response.size, (4000, response.size))]
    q_lo, median, q_hi = np.quantile(resamples, [0.16, 0.5, 0.84], axis=1)
    by_hand = {"median": median, "resolution": (q_hi - q_lo) / median}
    for name, values in by_hand.items():
        lo, hi = np.quantile(values, [0.16, 0.84])
        width = hi - lo
        assert getattr(table, f"{name}_lo")[0] == pytest.approx(lo, abs=0.1 * width)
        assert getattr(table, f"{name}_hi")[0] == pytest.approx(hi, abs=0.1 * width)


def test_bootstrap_interval_covers_the_truth_about_68_percent_of_the_time():
    covered = 0
    for seed in range(40):
        e_true, e_pred = _gaussian(400, 0.2, 100 + seed)
        table = binned_response(e_true, e_pred, [1.0, 10.0], bootstrap=100, seed=seed)
        covered += table.median_lo[0] <= 1.0 <= table.median_hi[0]
    assert 18 <= covered <= 36  # 27 expected; binomial ±3σ


def test_bootstrap_is_reproducible_and_seeded():
    e_true, e_pred = _gaussian(2000, 0.2, 2)
    a = binned_response(e_true, e_pred, [1.0, 10.0])
    b = binned_response(e_true, e_pred, [1.0, 10.0])
    c = binned_response(e_true, e_pred, [1.0, 10.0], seed=1)
    np.testing.assert_array_equal(a.median_lo, b.median_lo)
    np.testing.assert_array_equal(a.resolution_hi, b.resolution_hi)
    assert a.median_lo[0] != c.median_lo[0]
    assert a.bootstrap == 200  # the default
    # the central values do not depend on the bootstrap
    off = binned_response(e_true, e_pred, [1.0, 10.0], bootstrap=0)
    np.testing.assert_array_equal(off.median, a.median)


def test_bootstrap_zero_turns_it_off_and_empty_bins_get_none():
    e_true, e_pred = _gaussian(500, 0.2, 3)
    off = binned_response(e_true, e_pred, [1.0, 10.0, 100.0], bootstrap=0)
    assert off.bootstrap == 0
    assert off.resolution_replicas is None
    assert np.isnan(off.median_err).all()
    assert np.isnan(off.resolution_lo).all()
    d = off.to_dict()
    assert d["median_err"] == [None, None]
    assert d["bootstrap"] == 0
    on = binned_response(e_true, e_pred, [1.0, 10.0, 100.0]).to_dict()
    assert on["median_err"][0] > 0
    assert on["median_err"][1] is None
    json.dumps(on, allow_nan=False)


def test_bootstrap_is_fast_enough_for_every_evaluation():
    import time

    rng = np.random.default_rng(5)
    e_true = np.exp(rng.uniform(np.log(0.5), np.log(500.0), 30_000))
    e_pred = e_true * (1.0 + 0.2 * rng.normal(size=e_true.size))
    begin = time.perf_counter()
    binned_response(e_true, e_pred, log_bins(0.5, 500.0, 3))
    assert time.perf_counter() - begin < 1.0  # 30k clusters, 9 bins, 200 resamples (about 0.02 s)


@pytest.mark.parametrize(("args", "match"), [({"bootstrap": -1}, "bootstrap=-1"), ({"seed": 1.5}, "seed=1.5")])
def test_bootstrap_options_are_checked(args, match):
    with pytest.raises(ConfigError, match=match):
        binned_response([2.0], [2.0], [1.0, 4.0], **args)
