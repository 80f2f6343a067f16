"""MLTree files written by ROOT itself (classic TTrees, tests/data/fixtures/, made by make_mltree_fixtures.py).

The fixtures hold what MLTreeMaker writes: GeV energies, MeV noise, mm radii, ``vector<vector<unsigned long>>`` cell
IDs, ``eventNumber/L``; ``mltree_v1.root`` with the older geometry (``cell_geo_sigma``, two entries after hadd) and
two hit branches, ``mltree_v2_events.root`` with all four hit branches and its geometry (``cell_geo_totalNoise``,
``cell_geo_electronicNoise``) in ``mltree_v2_geo.root``.
"""

from __future__ import annotations

from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

from calohls.data.root import BranchMap, inspect_mltree, iter_mltree, iter_mltree_steps, read_mltree
from calohls.data.schema import ClusterBatch
from calohls.errors import DataError, SchemaError

FIXTURES = Path(__file__).parent / "fixtures"
V1 = FIXTURES / "mltree_v1.root"
V2 = FIXTURES / "mltree_v2_events.root"
V2_GEO = FIXTURES / "mltree_v2_geo.root"


def raw(path: Path, tree: str = "EventTree") -> ak.Array:
    with uproot.open(path) as f:
        return f[tree].arrays()


def geometry_of(path: Path) -> dict[int, ak.Record]:
    geo = raw(path, "CellGeo")[0]
    return {int(i): k for k, i in enumerate(ak.to_numpy(geo["cell_geo_ID"]))}, geo


def test_fixtures_are_root_written_mltree_ttrees():
    assert sum(p.stat().st_size for p in FIXTURES.glob("*.root")) < 2_000_000
    with uproot.open(V1) as f:
        assert f.classnames() == {"EventTree;1": "TTree", "CellGeo;1": "TTree"}
        tree = f["EventTree"]
        assert tree["cluster_cell_ID"].typename == "std::vector<std::vector<uint64_t>>"
        assert tree["cluster_cell_E"].typename == "std::vector<std::vector<float>>"
        assert tree["eventNumber"].typename == "int64_t"
        assert f["CellGeo"].num_entries == 2  # hadd-merged: the geometry entry twice
    with uproot.open(V2) as f:
        assert set(f.classnames()) == {"EventTree;1"}
    with uproot.open(V2_GEO) as f:
        assert {"cell_geo_totalNoise", "cell_geo_electronicNoise"} <= set(f["CellGeo"].keys())
        assert "cell_geo_sigma" not in set(f["CellGeo"].keys())


def test_default_branch_map_gives_gev_energies_mev_noise_and_metres():
    got = read_mltree(V1, max_cells=256)
    ev = raw(V1)
    np.testing.assert_allclose(got["e_em"], ak.to_numpy(ak.flatten(ev["cluster_E"])), rtol=1e-6)  # GeV as written
    assert 1.0 < np.median(got["e_em"]) < 200.0
    np.testing.assert_allclose(got.cell("e").sum(axis=1), got["e_em"], rtol=1e-4, atol=1e-4)  # cells add up
    np.testing.assert_allclose(got["e_true"], ak.to_numpy(ak.flatten(ev["cluster_ENG_CALIB_TOT"])), rtol=1e-6)
    first = ak.to_numpy(ak.firsts(ev["truthPartE"]))
    np.testing.assert_allclose(np.unique(got["e_particle"]), np.unique(first[ak.to_numpy(ak.num(ev["cluster_E"])) > 0]))
    rows, geo = geometry_of(V1)
    idx = np.array([rows[int(i)] for i in got.cell_id[got.mask]])
    np.testing.assert_allclose(got.cell("sigma")[got.mask], ak.to_numpy(geo["cell_geo_sigma"])[idx] * 1e-3, rtol=1e-6)
    np.testing.assert_allclose(got.cell("r")[got.mask], ak.to_numpy(geo["cell_geo_rPerp"])[idx] * 1e-3, rtol=1e-6)
    assert 0.01 < np.median(got.cell("sigma")[got.mask]) < 0.1  # tens of MeV, in GeV
    np.testing.assert_array_equal(
        np.unique(got["event"]), np.unique(ak.to_numpy(ev["eventNumber"])[ak.num(ev["cluster_E"]) > 0])
    )


def test_cell_truth_sums_every_hit_branch_present():
    v1 = inspect_mltree(V1)
    assert v1.hit_branches == ("cluster_cell_hitsE_EM", "cluster_cell_hitsE_nonEM")
    assert v1.missing == ("cluster_cell_hitsE_Invisible", "cluster_cell_hitsE_Escaped")
    assert v1.noise_branch == "cell_geo_sigma"
    v2 = inspect_mltree(V2, geometry=V2_GEO)
    assert len(v2.hit_branches) == 4
    assert v2.noise_branch == "cell_geo_totalNoise"
    assert (v2.entries, v2.size, v2.geometry) == (100, V2.stat().st_size, str(V2_GEO))

    for path, geometry, low, high in ((V1, None, 0.8, 0.92), (V2, V2_GEO, 0.999, 1.001)):
        got = read_mltree(path, geometry=geometry)
        ok = got["e_true"] > 0
        cover = got.cell("e_true").sum(axis=1)[ok] / got["e_true"][ok]
        assert low < np.median(cover) < high, path
        assert (got.cell("e_true")[~ok] == 0).all()  # the noise clusters have no hits and ENG_CALIB_TOT = -1
        np.testing.assert_array_equal(got["e_true"][~ok], -1.0)
    ev = raw(V1)
    got = read_mltree(V1)
    hits = ev["cluster_cell_hitsE_EM"] + ev["cluster_cell_hitsE_nonEM"]
    np.testing.assert_allclose(
        np.sort(got.cell("e_true")[got.mask]), np.sort(ak.to_numpy(ak.flatten(hits, axis=None))), rtol=1e-6
    )


def test_separate_geometry_file_and_noise_aliases():
    with pytest.raises(
        SchemaError, match=r"no tree 'CellGeo' \(trees: EventTree\); give the geometry file .*--geometry"
    ):
        read_mltree(V2)
    got = read_mltree(V2, geometry=V2_GEO)
    rows, geo = geometry_of(V2_GEO)
    idx = np.array([rows[int(i)] for i in got.cell_id[got.mask]])
    total = ak.to_numpy(geo["cell_geo_totalNoise"])[idx] * 1e-3
    np.testing.assert_allclose(got.cell("sigma")[got.mask], total, rtol=1e-6)
    electronic = read_mltree(V2, geometry=V2_GEO, branches=BranchMap(geo_sigma="cell_geo_electronicNoise"))
    np.testing.assert_allclose(
        electronic.cell("sigma")[got.mask], ak.to_numpy(geo["cell_geo_electronicNoise"])[idx] * 1e-3, rtol=1e-6
    )
    # the event file of the older generation read with the newer geometry file: the same cells
    np.testing.assert_allclose(read_mltree(V1, geometry=V2_GEO).cells, read_mltree(V1).cells)
    with pytest.raises(SchemaError, match=r"has no branch 'cell_geo_sigma'.*fix geo_sigma"):
        read_mltree(V2, geometry=V2_GEO, branches=BranchMap(geo_sigma=["cell_geo_sigma"]))


@pytest.mark.parametrize(
    ("update", "match"),
    [
        (
            {"energy_scale": 1e-3},
            r"median cluster_E is 3\.\d+ MeV after energy_scale=0\.001.*like GeV: set energy_scale: 1 ",
        ),
        ({"energy_scale": 1e4}, r"implausibly high; the file looks like units of 10 GeV: set energy_scale: 10 "),
        ({"noise_scale": 1.0}, r"median cell noise 'cell_geo_sigma' .*looks like MeV: set noise_scale: 0\.001 "),
        ({"noise_scale": 1e-6}, r"implausibly low; the file looks like MeV: set noise_scale: 0\.001 "),
    ],
)
def test_implausible_units_are_refused(update, match):
    with pytest.raises(DataError, match=match) as info:
        read_mltree(V1, branches=BranchMap(**update))
    assert "\n" not in str(info.value)
    assert "--no-unit-check" in str(info.value)


def test_unit_check_can_be_turned_off():
    mev = read_mltree(V1, branches=BranchMap(energy_scale=1e-3, check_units=False))
    np.testing.assert_allclose(mev["e_em"], read_mltree(V1)["e_em"] * 1e-3, rtol=1e-6)


def test_streaming_root_written_ttrees_in_bounded_steps_and_batches():
    whole = read_mltree(V1)
    steps = list(iter_mltree_steps(V1, step_size="20 kB"))
    assert len(steps) > 2
    assert sum(s.counts.events for s in steps) == 120
    assert [s.entry_start for s in steps[1:]] == [s.entry_stop for s in steps[:-1]]
    small = [b for s in steps for b in s.batches(batch_bytes=8 * 256 * (9 * 4 + 8))]  # 8 clusters
    assert max(len(b) for b in small) <= 8
    joined = ClusterBatch.concatenate(small)
    np.testing.assert_array_equal(joined.cells, whole.cells)
    np.testing.assert_array_equal(joined.cell_id, whole.cell_id)
    by_events = ClusterBatch.concatenate(list(iter_mltree(V2, geometry=V2_GEO, step_size=7, max_cells=16)))
    np.testing.assert_array_equal(by_events.cell_id, read_mltree(V2, geometry=V2_GEO, max_cells=16).cell_id)
