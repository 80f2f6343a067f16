"""MLTree ROOT files: round trips, branch maps, streaming, atomic writes and every read error."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

from calohls.data.root import BranchMap, iter_mltree, read_mltree, write_mltree
from calohls.data.schema import CELL_FIELDS, SCALAR_FIELDS, ClusterBatch
from calohls.errors import (
    ConfigError,
    DataError,
    FileExistsRefusedError,
    InputFileError,
    NonFiniteError,
    SchemaError,
)

Raw = dict[str, ak.Array]


def assert_batches_close(a: ClusterBatch, b: ClusterBatch) -> None:
    """Equal up to float32 rounding of the unit conversions."""
    assert len(a) == len(b)
    assert a.max_cells == b.max_cells
    np.testing.assert_array_equal(a.cell_id, b.cell_id)
    np.testing.assert_array_equal(a.n_cells, b.n_cells)
    np.testing.assert_allclose(a.cells, b.cells, rtol=1e-6, atol=1e-9)
    for k, dt in SCALAR_FIELDS.items():
        assert a.scalars[k].dtype == dt, k
        np.testing.assert_allclose(a.scalars[k], b.scalars[k], rtol=1e-6, err_msg=k)


def read_raw(path: Path) -> tuple[Raw, Raw]:
    """Every branch of the event and geometry trees, as awkward arrays."""
    with uproot.open(path) as f:
        event, geo = f["EventTree"].arrays(), f["CellGeo"].arrays()
    return {k: event[k] for k in event.fields}, {k: geo[k] for k in geo.fields}


def write_raw(path: Path, event: Raw, geo: Raw, event_tree: str = "EventTree") -> None:
    with uproot.recreate(path) as f:
        f[event_tree] = event
        f["CellGeo"] = geo


def with_values(x: ak.Array, change: Callable[[np.ndarray], np.ndarray]) -> ak.Array:
    """``x`` with the same nesting and its innermost values replaced by ``change(values)``."""
    flat = change(ak.to_numpy(ak.flatten(x, axis=None)).copy())
    if x.ndim == 3:
        return ak.unflatten(ak.unflatten(flat, ak.flatten(ak.num(x, axis=2))), ak.num(x, axis=1))
    return ak.unflatten(flat, ak.num(x, axis=1))


@pytest.fixture
def root_file(tmp_path, synthetic_batch) -> tuple[Path, ClusterBatch]:
    batch = synthetic_batch(n=200, max_cells=16, seed=5)
    path = tmp_path / "ml.root"
    write_mltree(path, batch)
    return path, batch


# -- round trips ---------------------------------------------------------------------------------------------
def test_round_trip(root_file):
    path, batch = root_file
    assert_batches_close(read_mltree(path, max_cells=16), batch)


def test_file_layout_and_units(root_file):
    path, batch = root_file
    event, geo = read_raw(path)
    n_events = len(np.unique(batch["event"]))
    assert len(event["cluster_E"]) == n_events
    assert event["cluster_cell_E"].ndim == 3
    np.testing.assert_allclose(ak.flatten(event["cluster_E"]), batch["e_em"], rtol=1e-6)  # GeV, as MLTreeMaker
    sigma = batch.cell("sigma")[batch.mask]
    np.testing.assert_allclose(np.unique(ak.to_numpy(geo["cell_geo_sigma"][0])), np.unique(sigma) * 1e3, rtol=1e-6)
    np.testing.assert_array_equal(ak.flatten(event["cluster_nCells"]), batch["n_cells_total"])
    np.testing.assert_array_equal(event["eventNumber"], np.unique(batch["event"]))
    assert len(geo["cell_geo_ID"]) == 1  # one entry of vectors
    ids = ak.to_numpy(geo["cell_geo_ID"][0])
    np.testing.assert_array_equal(ids, np.unique(batch.cell_id[batch.mask]))
    r_mm = ak.to_numpy(geo["cell_geo_rPerp"][0])
    assert r_mm.min() > 1000
    assert r_mm.max() < 4000


def test_truncates_to_max_cells(root_file):
    path, batch = root_file
    small = read_mltree(path, max_cells=4)
    assert small.max_cells == 4
    np.testing.assert_array_equal(small.n_cells, np.minimum(batch.n_cells, 4))
    np.testing.assert_array_equal(small.cell_id, batch.cell_id[:, :4])
    np.testing.assert_allclose(small.cells, batch.cells[:, :4], rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(small["n_cells_total"], batch["n_cells_total"])


def test_streaming_equals_one_read(root_file):
    path, _ = root_file
    whole = read_mltree(path, max_cells=16)
    parts = list(iter_mltree(path, step_size=17, max_cells=16))
    assert len(parts) > 3
    assert_batches_close(ClusterBatch.concatenate(parts), whole)
    part = read_mltree(path, max_cells=16, entry_start=10, entry_stop=30)
    streamed = ClusterBatch.concatenate(iter_mltree(path, step_size=7, max_cells=16, entry_start=10, entry_stop=30))
    assert_batches_close(streamed, part)
    events = np.unique(whole["event"])[10:30]
    assert_batches_close(part, whole.select(np.isin(whole["event"], events)))
    assert len(read_mltree(path, entry_start=5, entry_stop=5)) == 0


def test_custom_branch_map_from_yaml(tmp_path, synthetic_batch):
    yaml_path = tmp_path / "map.yaml"
    yaml_path.write_text(
        "event_tree: Events\ncluster_e: clE\ncell_e: cellE\ngeo_r: cellR\nenergy_scale: 1.0\nlength_scale: 1.0\n"
    )
    bm = BranchMap.from_yaml(yaml_path)
    assert bm.cluster_e == "clE"
    assert bm.cell_id == "cluster_cell_ID"
    batch = synthetic_batch(n=40, max_cells=8, seed=2)
    path = tmp_path / "custom.root"
    write_mltree(path, batch, branches=bm)
    with uproot.open(path) as f:
        assert {"clE", "cellE"} <= set(f["Events"].keys())
        np.testing.assert_allclose(ak.flatten(f["Events"]["clE"].array()), batch["e_em"])  # GeV in the file
    assert_batches_close(read_mltree(path, branches=bm, max_cells=8), batch)


def test_branch_map_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("cluster_E: x\n")
    with pytest.raises(ConfigError, match="cluster_E"):
        BranchMap.from_yaml(bad)
    with pytest.raises(ConfigError, match="not found"):
        BranchMap.from_yaml(tmp_path / "none.yaml")
    dup = tmp_path / "dup.yaml"
    dup.write_text("cell_e: cluster_E\n")
    with pytest.raises(ConfigError, match="both name branch 'cluster_E'"):
        BranchMap.from_yaml(dup)
    scale = tmp_path / "scale.yaml"
    scale.write_text("energy_scale: 0\n")
    with pytest.raises(ConfigError, match="energy_scale"):
        BranchMap.from_yaml(scale)


def test_optional_branches_absent(tmp_path, synthetic_batch):
    bm = BranchMap(
        cluster_n_cells=None,
        cell_hits_e_em=None,
        cell_hits_e_nonem=None,
        truth_e=None,
        truth_eta=None,
        truth_phi=None,
        truth_pdg_id=None,
        event_number=None,
    )
    batch = synthetic_batch(n=50, max_cells=8, seed=4)
    path = tmp_path / "bare.root"
    write_mltree(path, batch, branches=bm)
    got = read_mltree(path, branches=bm, max_cells=8)
    np.testing.assert_array_equal(got.cell("e_true"), 0.0)
    for k in ("particle", "e_particle", "eta_particle", "phi_particle"):
        np.testing.assert_array_equal(got[k], 0)
    n_events = len(np.unique(batch["event"]))
    np.testing.assert_array_equal(np.unique(got["event"]), np.arange(n_events))  # entry numbers
    np.testing.assert_array_equal(got["n_cells_total"], batch.n_cells)
    np.testing.assert_allclose(got["e_em"], batch["e_em"], rtol=1e-6)


def test_missing_optional_branch_is_logged(root_file, tmp_path, caplog):
    path, batch = root_file
    event, geo = read_raw(path)
    del event["truthPartE"], event["cluster_cell_hitsE_nonEM"]
    out = tmp_path / "partial_truth.root"
    write_raw(out, event, geo)
    with caplog.at_level(logging.WARNING, logger="calohls.data.root"):
        got = read_mltree(out, max_cells=16)
    assert "no branch 'truthPartE'" in caplog.text
    assert "truth_e to null" in caplog.text
    np.testing.assert_array_equal(got["e_particle"], 0.0)
    np.testing.assert_allclose(got.cell("e_true"), batch.cell("e_true"), rtol=1e-6)  # hitsE_EM alone


def test_sorting_ranking_and_dropping(root_file, tmp_path, caplog):
    path, batch = root_file
    event, geo = read_raw(path)
    cell_branches = [name for name in event if name.startswith("cluster_cell_")]
    rows = {name: v.to_list() for name, v in event.items()}
    for name in rows:
        if name.startswith("cluster"):  # reverse clusters in events and cells in clusters
            rows[name] = [ev[::-1] for ev in rows[name]]
        if name in cell_branches:
            rows[name] = [[cl[::-1] for cl in ev] for ev in rows[name]]
    for name in cell_branches:  # empty the first stored (lowest-ranked) cluster of the first event
        rows[name][0][0] = []
    for name in rows:  # prepend an event without clusters
        rows[name].insert(0, 1 if name == "eventNumber" else [] if name.startswith("cluster") else rows[name][0])
    dtypes = {name: ak.to_numpy(ak.flatten(v, axis=None)).dtype for name, v in event.items()}
    out = tmp_path / "shuffled.root"
    write_raw(out, {name: ak.values_astype(ak.Array(r), dtypes[name]) for name, r in rows.items()}, geo)
    with caplog.at_level(logging.INFO, logger="calohls.data.root"):
        got = read_mltree(out, max_cells=16)
    assert "dropped 1 cluster(s) without cells" in caplog.text
    first_event = batch["event"] == batch["event"][0]
    dropped = np.flatnonzero(first_event)[-1]
    expected = batch.select(np.arange(len(batch)) != dropped)
    assert_batches_close(got.select(np.lexsort((got["cluster_index"], got["event"]))), expected)


# -- atomic writes -------------------------------------------------------------------------------------------
def test_refuse_and_overwrite(root_file, synthetic_batch):
    path, _ = root_file
    before = path.read_bytes()
    new = synthetic_batch(n=10, max_cells=16, seed=11)
    with pytest.raises(FileExistsRefusedError, match=re.escape(str(path))):
        write_mltree(path, new)
    assert path.read_bytes() == before
    write_mltree(path, new, overwrite=True)
    assert_batches_close(read_mltree(path, max_cells=16), new)
    assert sorted(p.name for p in path.parent.iterdir()) == ["ml.root"]


def test_failed_write_leaves_nothing(tmp_path, synthetic_batch, monkeypatch):
    def fail(self, where, what):
        raise RuntimeError("disk full")

    monkeypatch.setattr(uproot.writing.writable.WritableDirectory, "__setitem__", fail)
    path = tmp_path / "out" / "x.root"
    with pytest.raises(RuntimeError, match="disk full"):
        write_mltree(path, synthetic_batch(n=10, max_cells=8))
    assert list(path.parent.iterdir()) == []


def test_write_errors(tmp_path, synthetic_batch):
    batch = synthetic_batch(n=20, max_cells=8, seed=1)
    with pytest.raises(DataError, match="no clusters to write"):
        write_mltree(tmp_path / "e.root", ClusterBatch.empty(8))
    cells, cell_id = batch.cells.copy(), batch.cell_id.copy()
    cell_id[3, 0] = cell_id[4, 0]
    cells[3, 0, 2:] = cells[4, 0, 2:]
    cells[3, 0, CELL_FIELDS.index("r")] += 0.5
    bad = ClusterBatch(cells=cells, cell_id=cell_id, n_cells=batch.n_cells, scalars=batch.scalars)
    with pytest.raises(DataError, match=rf"cell ID {cell_id[4, 0]} has two different geometries"):
        write_mltree(tmp_path / "g.root", bad)
    assert not list(tmp_path.iterdir())


# -- read errors ---------------------------------------------------------------------------------------------
def test_missing_file(tmp_path):
    path = tmp_path / "none.root"
    with pytest.raises(InputFileError, match=rf"{re.escape(str(path))} not found"):
        read_mltree(path)


def test_not_root(tmp_path):
    path = tmp_path / "junk.root"
    path.write_text("hello world\n" * 50)
    with pytest.raises(InputFileError, match=rf"cannot read {re.escape(str(path))} as ROOT .*not a ROOT file"):
        read_mltree(path)


def test_truncated(root_file):
    path, _ = root_file
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputFileError, match=rf"cannot read {re.escape(str(path))} as ROOT .*truncated"):
        read_mltree(path)
    with pytest.raises(InputFileError, match="truncated"):
        list(iter_mltree(path))


def test_missing_tree(root_file):
    path, _ = root_file
    with pytest.raises(SchemaError, match=r"no tree 'Events' \(trees: CellGeo, EventTree\); set event_tree"):
        read_mltree(path, branches=BranchMap(event_tree="Events"))
    with pytest.raises(SchemaError, match=r"no tree 'Geo'.*set geometry_tree"):
        read_mltree(path, branches=BranchMap(geometry_tree="Geo"))


def test_not_a_tree_and_ttree_branches(tmp_path):
    path = tmp_path / "ttree.root"
    with uproot.recreate(path) as f:
        f["EventTree"] = np.histogram(np.arange(10.0), bins=5)
        tree = f.mktree("Events", {"cluster_E": "var * float32", "eventNumber": np.int64})
        tree.extend({"cluster_E": ak.Array([[1.0, 2.0], []]), "eventNumber": np.array([1, 2])})
    with pytest.raises(SchemaError, match=r"'EventTree' is a TH1D, not a tree; set event_tree"):
        read_mltree(path)
    with pytest.raises(SchemaError, match=r"tree 'Events' has no branch 'cluster_ENG_CALIB_TOT'"):
        read_mltree(path, branches=BranchMap(event_tree="Events"))


def test_missing_required_branch(root_file, tmp_path):
    path, _ = root_file
    event, geo = read_raw(path)
    del event["cluster_cell_E"]
    out = tmp_path / "no_cell_e.root"
    write_raw(out, event, geo)
    with pytest.raises(SchemaError, match=r"no branch 'cluster_cell_E' .*fix cell_e in the branch map"):
        read_mltree(out)
    event, geo = read_raw(path)
    del geo["cell_geo_sigma"]
    write_raw(out, event, geo)
    with pytest.raises(SchemaError, match=r"tree 'CellGeo' has no branch 'cell_geo_sigma'.*fix geo_sigma"):
        read_mltree(out)


def test_non_finite(root_file, tmp_path):
    path, _ = root_file
    event, geo = read_raw(path)
    n_before = int(ak.sum(ak.num(ak.flatten(event["cluster_cell_E"][:3], axis=1), axis=1)))

    def poison(v: np.ndarray) -> np.ndarray:
        v[n_before] = np.nan  # first cell of entry 3
        return v

    event["cluster_cell_E"] = with_values(event["cluster_cell_E"], poison)
    out = tmp_path / "nan.root"
    write_raw(out, event, geo)
    with pytest.raises(NonFiniteError, match=r"non-finite value nan in branch 'cluster_cell_E' at entry 3"):
        read_mltree(out)
    geo["cell_geo_eta"] = with_values(geo["cell_geo_eta"], lambda v: np.where(np.arange(len(v)) == 2, np.inf, v))
    write_raw(out, read_raw(path)[0], geo)
    with pytest.raises(NonFiniteError, match="inf in branch 'cell_geo_eta'"):
        read_mltree(out)


def test_cell_branch_length_mismatch(root_file, tmp_path):
    path, _ = root_file
    event, geo = read_raw(path)
    rows = event["cluster_cell_E"].to_list()
    k = next(i for i, ev in enumerate(rows) if ev and len(ev[0]) > 1)
    rows[k][0] = rows[k][0][:-1]
    event["cluster_cell_E"] = ak.values_astype(ak.Array(rows), np.float32)
    out = tmp_path / "jagged.root"
    write_raw(out, event, geo)
    with pytest.raises(SchemaError, match=rf"'cluster_cell_E' has \d+ cells in a cluster at entry {k} but"):
        read_mltree(out)


def test_cluster_branch_length_mismatch(root_file, tmp_path):
    path, _ = root_file
    event, geo = read_raw(path)
    rows = event["cluster_Eta"].to_list()
    rows[4].append(0.1)
    event["cluster_Eta"] = ak.values_astype(ak.Array(rows), np.float32)
    out = tmp_path / "clusters.root"
    write_raw(out, event, geo)
    with pytest.raises(SchemaError, match=r"'cluster_Eta' has \d+ clusters at entry 4 but 'cluster_E' has"):
        read_mltree(out)


def test_wrong_nesting(root_file, tmp_path):
    path, _ = root_file
    event, geo = read_raw(path)
    event["cluster_cell_E"] = ak.flatten(event["cluster_cell_E"], axis=2)  # one list per event, not per cluster
    out = tmp_path / "flat.root"
    write_raw(out, event, geo)
    with pytest.raises(SchemaError, match="'cluster_cell_E' has 1 list levels per event; expected a list of cells"):
        read_mltree(out)


def test_unknown_cell_id(root_file, tmp_path):
    path, batch = root_file
    event, geo = read_raw(path)
    missing = int(batch.cell_id[0, 0])
    keep = ak.to_numpy(geo["cell_geo_ID"][0]) != missing
    geo = {name: ak.Array([ak.to_numpy(v[0])[keep]]) for name, v in geo.items()}
    out = tmp_path / "nogeo.root"
    write_raw(out, event, geo)
    with pytest.raises(SchemaError, match=rf"cell ID {missing} \(branch 'cluster_cell_ID', entry \d+\) is not in"):
        read_mltree(out)
