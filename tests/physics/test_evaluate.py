from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from calohls.errors import FileExistsRefusedError, InputFileError
from calohls.physics.evaluate import METHODS, evaluate_run, read_clusters_at


@pytest.fixture(scope="module")
def evaluated(trained_run, tmp_path_factory):
    run = tmp_path_factory.mktemp("eval") / "run"
    shutil.copytree(trained_run, run)
    return run, evaluate_run(run)


def test_outputs(evaluated):
    run, result = evaluated
    files = {p.name for p in (run / "eval").iterdir()}
    for group in ("all", "pi0", "pipm"):
        assert {f"response_{group}.png", f"resolution_{group}.png", f"median_{group}.png"} <= files
    assert all((run / "eval" / f).stat().st_size > 10_000 for f in files if f.endswith(".png"))
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert set(metrics["tables"]) == {"all", "pi0", "pi+-"}
    assert set(metrics["tables"]["pi0"]) == set(METHODS)
    assert metrics["test_clusters"] == result.e_true.size
    assert set(metrics["checks"]["all"]) >= {"median_within_2pct_above_1gev", "bins_better_than_em", "bins"}


def test_deepsets_beats_em_scale_and_is_calibrated(evaluated):
    _, result = evaluated
    checks = result.checks["all"]
    assert checks["bins_better_than_em"] >= checks["bins"] - 2
    table = result.tables["all"]["deepsets"]
    assert np.all(np.abs(table.median[table.edges[:-1] >= 5] - 1) < 0.08)
    # the EM scale is low for charged pions, the LCW-like weighting lifts it
    pic = result.tables["pi+-"]
    above = pic["em"].edges[:-1] >= 5
    assert np.all(pic["lcw"].median[above] > pic["em"].median[above])


def test_refuses_to_overwrite_the_evaluation(evaluated):
    run, _ = evaluated
    with pytest.raises(FileExistsRefusedError, match="--overwrite"):
        evaluate_run(run, figures=False)
    evaluate_run(run, figures=False, overwrite=True)
    assert not (run / "eval" / "response_all.png").exists()  # replaced as a whole


def test_wrong_folder_or_data(tmp_path, trained_run, sim_file):
    with pytest.raises(InputFileError, match="not a calohls run folder"):
        evaluate_run(tmp_path)
    with pytest.raises(InputFileError, match="the data file the run was trained on"):
        read_clusters_at(sim_file, np.array([0, 10**9]))


def test_read_clusters_at_keeps_the_requested_order(sim_file):
    from calohls.data.hdf5 import read_clusters

    index = np.array([50, 3, 40000 % 6000, 7])
    picked = read_clusters_at(sim_file, index, max_cells=8)
    whole = read_clusters(sim_file)
    np.testing.assert_array_equal(picked["e_true"], whole["e_true"][index])
    assert picked.max_cells == 8
