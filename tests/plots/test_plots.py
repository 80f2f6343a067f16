from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import pytest

from calohls import plots
from calohls.errors import ConfigError, DataError
from calohls.physics.response import QUANTILE_PAIRS, ResponseTable, binned_response, log_bins

#: A written PNG of a whole figure is well above this; an empty or broken one is not.
MIN_PNG_BYTES = 5_000
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# -- fixtures: synthetic responses ----------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def atlas_style() -> Iterator[None]:
    """Every test draws in the ATLAS style; matplotlib's settings are restored afterwards."""
    with plots.style_context():
        yield


@pytest.fixture(scope="module")
def sample() -> dict[str, np.ndarray]:
    """Log-uniform true energies in 0.5..300 GeV with three calibrations of different response and spread."""
    rng = np.random.default_rng(7)
    e_true = np.exp(rng.uniform(np.log(0.5), np.log(300.0), 20_000))
    return {
        "e_true": e_true,
        "EM scale": rng.normal(0.7, 0.2, e_true.size),
        "LCW-like": rng.normal(0.9, 0.15, e_true.size),
        "DeepSets": rng.normal(1.0, 0.1, e_true.size),
    }


@pytest.fixture(scope="module")
def tables(sample: dict[str, np.ndarray]) -> dict[str, ResponseTable]:
    """Binned responses; the edges reach 2 TeV, so the top bins hold no clusters and are NaN."""
    bins = log_bins(0.5, 2000.0, per_decade=5)
    e_true = sample["e_true"]
    return {name: binned_response(e_true, e_true * sample[name], bins) for name in ("EM scale", "LCW-like", "DeepSets")}


def _check_png(path: Path) -> None:
    assert path.is_file()
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert path.stat().st_size > MIN_PNG_BYTES


def test_tables_have_empty_bins(tables):
    table = tables["DeepSets"]
    assert np.isnan(table.median).any()
    assert np.isfinite(table.median).any()


# -- response_2d ------------------------------------------------------------------------------------------


def test_response_2d_draws_histogram_median_and_quantiles(tmp_path, sample, tables):
    table = tables["DeepSets"]
    fig, ax = plots.new_figure()
    artists = plots.response_2d(ax, sample["e_true"], sample["DeepSets"], table, label="DeepSets", colorbar=True)
    plots.experiment_label(ax)

    ok = np.isfinite(table.median)
    np.testing.assert_array_equal(artists.median.get_xdata(), table.centres[ok])
    np.testing.assert_array_equal(artists.median.get_ydata(), table.median[ok])
    assert artists.median.get_linestyle() == "-"
    lo, hi = artists.quantiles
    np.testing.assert_array_equal(lo.get_ydata(), table.q_lo[np.isfinite(table.q_lo)])
    np.testing.assert_array_equal(hi.get_ydata(), table.q_hi[np.isfinite(table.q_hi)])
    assert lo.get_linestyle() == hi.get_linestyle() == "--"
    assert np.isfinite(artists.median.get_ydata()).all()

    assert [t.get_text() for t in artists.legend.get_texts()] == ["median", "16% and 84% quantiles"]
    assert artists.legend.get_title().get_text() == "DeepSets"
    assert artists.colorbar is not None
    assert ax.get_xscale() == "log"
    assert ax.get_ylim() == (0.0, 2.0)
    assert "Response" in ax.get_ylabel()
    assert "True cluster energy" in ax.get_xlabel()

    # Every cluster inside the histogram range is counted once: 4 energy bins per table bin, 100 response bins.
    counts = artists.mesh.get_array()
    assert counts.shape == (100, 4 * table.n_bins)
    r = sample["DeepSets"]
    assert counts.sum() == np.count_nonzero((r >= 0.0) & (r <= 2.0))

    _check_png(plots.save(fig, tmp_path / "response_2d.png"))


def test_response_2d_options_and_non_finite_pairs(sample, tables):
    table = binned_response(sample["e_true"], sample["e_true"] * sample["EM scale"], log_bins(0.5, 300.0, 2))
    r = sample["EM scale"].copy()
    r[:10] = np.nan
    _, ax = plots.new_figure()
    artists = plots.response_2d(
        ax,
        sample["e_true"],
        r,
        table,
        label="EM scale",
        bins_y=np.linspace(0.0, 1.5, 31),
        bins_x=np.geomspace(0.5, 300.0, 9),
        log_x=False,
        log_counts=False,
    )
    assert artists.colorbar is None
    assert artists.mesh.get_array().shape == (30, 8)
    assert artists.mesh.get_array().sum() == np.count_nonzero((r[10:] >= 0.0) & (r[10:] <= 1.5))
    assert ax.get_xscale() == "linear"


def test_response_2d_quantile_legend_follows_the_table(sample):
    e_true = sample["e_true"]
    table = binned_response(
        e_true, e_true * sample["DeepSets"], log_bins(0.5, 300.0, 3), quantiles=QUANTILE_PAIRS["25-75"]
    )
    _, ax = plots.new_figure()
    artists = plots.response_2d(ax, e_true, sample["DeepSets"], table, label="DeepSets")
    assert artists.legend.get_texts()[1].get_text() == "25% and 75% quantiles"


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"bins_y": (2.0, 0.0, 10)}, ConfigError),
        ({"bins_y": (0.0, 2.0, 0)}, ConfigError),
        ({"bins_x": [1.0]}, ConfigError),
        ({"bins_x": [1.0, 1.0, 2.0]}, ConfigError),
    ],
)
def test_response_2d_rejects_bad_bins(sample, tables, kwargs, error):
    _, ax = plots.new_figure()
    with pytest.raises(error, match="bins_"):
        plots.response_2d(ax, sample["e_true"], sample["DeepSets"], tables["DeepSets"], label="x", **kwargs)


def test_response_2d_rejects_mismatched_arrays(sample, tables):
    _, ax = plots.new_figure()
    with pytest.raises(DataError, match="one value per cluster"):
        plots.response_2d(ax, sample["e_true"], sample["DeepSets"][:-1], tables["DeepSets"], label="x")


# -- comparisons --------------------------------------------------------------------------------------------


def test_resolution_comparison(tmp_path, tables):
    fig, ax = plots.new_figure()
    artists = plots.resolution_comparison(ax, tables)
    plots.experiment_label(ax)

    assert list(artists.series) == ["EM scale", "LCW-like", "DeepSets"]
    for shift, (name, container) in zip((-0.15, 0.0, 0.15), artists.series.items(), strict=True):
        table = tables[name]
        ok = np.isfinite(table.resolution)
        line = container.lines[0]
        # side by side within their bins: 30 % of the bin width (in log E) between the first and the last
        lo, hi = table.edges[:-1][ok], table.edges[1:][ok]
        np.testing.assert_allclose(line.get_xdata(), table.centres[ok] * (hi / lo) ** shift)
        np.testing.assert_array_equal(line.get_ydata(), table.resolution[ok])
        assert container.has_xerr
        assert container.has_yerr  # the 68 % bootstrap interval
        (_, ybars) = container.lines[2]
        spans = np.array([seg[:, 1] for seg in ybars.get_segments()])
        np.testing.assert_allclose(spans[:, 0], table.resolution_lo[ok])
        np.testing.assert_allclose(spans[:, 1], table.resolution_hi[ok])
    # Markers differ between calibrations.
    assert len({c.lines[0].get_marker() for c in artists.series.values()}) == 3
    assert [t.get_text() for t in artists.legend.get_texts()] == list(tables)
    assert ax.get_ylabel() == tables["DeepSets"].resolution_label == "IQR(16–84%)/median"
    assert ax.get_xscale() == "log"
    assert ax.get_ylim()[0] == 0.0
    # Headroom above the data for the legend and the label.
    top = max(np.nanmax(t.resolution) for t in tables.values())
    assert ax.get_ylim()[1] > 1.4 * top

    _check_png(plots.save(fig, tmp_path / "resolution.png"))


def test_resolution_comparison_x_errors_span_the_bins(tables):
    _, ax = plots.new_figure()
    container = plots.resolution_comparison(ax, {"DeepSets": tables["DeepSets"]}).series["DeepSets"]
    table = tables["DeepSets"]
    ok = np.isfinite(table.resolution)
    bars = container.lines[2][0]
    segments = np.array(bars.get_segments())
    np.testing.assert_allclose(segments[:, 0, 0], table.edges[:-1][ok])
    np.testing.assert_allclose(segments[:, 1, 0], table.edges[1:][ok])


def test_resolution_comparison_rejects_mixed_quantiles(sample, tables):
    e_true = sample["e_true"]
    other = binned_response(e_true, e_true * sample["DeepSets"], tables["DeepSets"].edges, quantiles=(0.25, 0.75))
    _, ax = plots.new_figure()
    with pytest.raises(ConfigError, match="quantile pairs"):
        plots.resolution_comparison(ax, {"a": tables["DeepSets"], "b": other})


def test_median_comparison(tmp_path, tables):
    fig, ax = plots.new_figure()
    artists = plots.median_comparison(ax, tables)
    plots.experiment_label(ax)

    for name, container in artists.series.items():
        table = tables[name]
        ok = np.isfinite(table.median)
        np.testing.assert_array_equal(container.lines[0].get_ydata(), table.median[ok])
    assert artists.band is not None
    assert artists.band.get_y() == pytest.approx(0.98)
    assert artists.band.get_height() == pytest.approx(0.04)
    assert artists.unity is not None
    assert [t.get_text() for t in artists.legend.get_texts()] == ["±2%", *tables]
    bottom, top = ax.get_ylim()
    assert bottom < min(np.nanmin(t.median) for t in tables.values())
    assert top > 1.02

    _check_png(plots.save(fig, tmp_path / "median.png"))


def test_median_comparison_without_band(tables):
    _, ax = plots.new_figure()
    artists = plots.median_comparison(ax, tables, band=None)
    assert artists.band is None
    assert [t.get_text() for t in artists.legend.get_texts()] == list(tables)


def test_comparisons_draw_tables_without_any_values(tables):
    empty = binned_response([1.0, 2.0], [1.0, 2.0], tables["DeepSets"].edges)  # below min_count: all NaN
    assert np.isnan(empty.median).all()
    _, ax = plots.new_figure()
    artists = plots.median_comparison(ax, {"empty": empty, "DeepSets": tables["DeepSets"]})
    assert len(artists.series["empty"].lines[0].get_ydata()) == 0
    _, ax = plots.new_figure()
    artists = plots.resolution_comparison(ax, {"empty": empty})
    assert len(artists.series["empty"].lines[0].get_ydata()) == 0


@pytest.mark.parametrize("func", [plots.resolution_comparison, plots.median_comparison])
def test_comparisons_reject_empty_or_wrong_input(func, tables):
    _, ax = plots.new_figure()
    with pytest.raises(DataError, match="no response tables"):
        func(ax, {})
    with pytest.raises(DataError, match="ResponseTable"):
        func(ax, {"a": tables["DeepSets"].median})
    with pytest.raises(ConfigError, match="headroom"):
        func(ax, tables, headroom=1.0)


# -- style, label, save -------------------------------------------------------------------------------------


def test_style_context_applies_and_restores():
    with mpl.rc_context({"xtick.direction": "out"}):
        with plots.style_context():
            assert mpl.rcParams["xtick.direction"] == "in"
            assert mpl.rcParams["ytick.right"]
        assert mpl.rcParams["xtick.direction"] == "out"


def test_experiment_label_texts():
    _, ax = plots.new_figure()
    texts = [t.get_text() for t in plots.experiment_label(ax)]
    assert texts == ["calohls", "Simulation", plots.DEFAULT_EXTRA]
    _, ax = plots.new_figure()
    assert [t.get_text() for t in plots.experiment_label(ax, "Internal", extra=None, exp="ATLAS")] == [
        "ATLAS",
        "Internal",
    ]


def test_new_figure_is_not_registered_with_pyplot():
    before = plt.get_fignums()
    fig, axes = plots.new_figure(1, 2)
    assert axes.shape == (2,)
    assert tuple(fig.get_size_inches()) == pytest.approx((16.0, 6.0))
    assert plt.get_fignums() == before


def test_save_writes_atomically_into_new_folder(tmp_path, tables):
    fig, ax = plots.new_figure()
    plots.resolution_comparison(ax, tables)
    out = tmp_path / "a" / "b" / "fig.png"
    assert plots.save(fig, out) == out
    _check_png(out)
    assert [p.name for p in out.parent.iterdir()] == ["fig.png"]  # no temporary file left

    fig, ax = plots.new_figure()
    ax.plot([1, 2], [1, 2])
    plots.save(fig, str(out), dpi=50)  # replaces the file
    assert [p.name for p in out.parent.iterdir()] == ["fig.png"]


def test_save_closes_pyplot_figures(tmp_path):
    before = plt.get_fignums()
    fig = plt.figure()
    fig.add_subplot().plot([1, 2], [3, 4])
    assert len(plt.get_fignums()) == len(before) + 1
    _check_png(plots.save(fig, tmp_path / "pyplot.png"))
    assert plt.get_fignums() == before


def test_save_closes_the_figure_and_cleans_up_on_failure(tmp_path, monkeypatch):
    before = plt.get_fignums()
    fig = plt.figure()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(fig, "savefig", broken)
    with pytest.raises(OSError, match="disk full"):
        plots.save(fig, tmp_path / "broken.png")
    assert list(tmp_path.iterdir()) == []
    assert plt.get_fignums() == before


def test_save_rejects_unknown_format(tmp_path):
    before = plt.get_fignums()
    fig = plt.figure()
    with pytest.raises(ConfigError, match=r"\.png"):
        plots.save(fig, tmp_path / "fig.jpeg")
    assert plt.get_fignums() == before
    assert list(tmp_path.iterdir()) == []


def test_comparisons_can_put_every_marker_at_the_centre(tables):
    _, ax = plots.new_figure()
    artists = plots.median_comparison(ax, tables, dodge=0.0)
    for name, container in artists.series.items():
        ok = np.isfinite(tables[name].median)
        np.testing.assert_array_equal(container.lines[0].get_xdata(), tables[name].centres[ok])
    with pytest.raises(ConfigError, match=r"dodge=1\.0"):
        plots.resolution_comparison(ax, tables, dodge=1.0)


def test_comparisons_without_bootstrap_have_no_y_errors(sample):
    e_true = sample["e_true"]
    table = binned_response(e_true, e_true * sample["DeepSets"], log_bins(0.5, 300.0, 2), bootstrap=0)
    _, ax = plots.new_figure()
    container = plots.median_comparison(ax, {"DeepSets": table}).series["DeepSets"]
    assert container.has_xerr
    assert not container.has_yerr


# -- study figures ------------------------------------------------------------------------------------------


def test_study_figures_draw_resolution_error_bars(tmp_path, monkeypatch):
    from types import SimpleNamespace

    import calohls.plots.study as study

    points = [
        {"kind": "float", "preset": "tiny", "parameters": 300, "resolution": 0.30, "resolution_err": 0.01},
        {"kind": "float", "preset": "small", "parameters": 1200, "resolution": 0.27, "resolution_err": 0.012},
        {"kind": "ptq", "preset": "tiny", "lut": 900, "resolution": 0.33, "resolution_err": 0.01, "pareto": True},
        {"kind": "ptq", "preset": "small", "lut": 3000, "resolution": 0.28, "resolution_err": 0.01, "pareto": True},
        {"kind": "qat", "preset": "small", "lut": 2000, "resolution": 0.29},  # an older point without an error
    ]
    config = SimpleNamespace(presets=["tiny", "small"], lut_budget=5000)
    drawn = []

    def save_and_keep(fig, path, **kwargs):
        drawn.append(fig)
        return plots.save(fig, path, **kwargs)

    monkeypatch.setattr(study, "save", save_and_keep)
    written = study.draw_study(points, config, tmp_path)
    assert [p.name for p in written] == ["pareto_lut.png", "resolution_vs_size.png"]
    for path in written:
        _check_png(path)
    pareto, size = (fig.axes[0] for fig in drawn)
    assert sum(c.has_yerr for c in pareto.containers) == 2  # the PTQ series; the QAT point has no error
    float_series = next(c for c in size.containers if c.get_label() == "float")
    ybars = float_series.lines[2][-1]
    np.testing.assert_allclose([seg[1, 1] - seg[0, 1] for seg in ybars.get_segments()], [0.02, 0.024])
