from __future__ import annotations

from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

from calohls.data.convert import (
    ConvertProgress,
    ConvertResult,
    convert_mltree,
    detect_format,
    expand_inputs,
    parse_step_size,
    read_scalars,
    root_to_hdf5,
)
from calohls.data.hdf5 import ClusterWriter, open_clusters, read_clusters
from calohls.data.root import read_mltree, write_mltree
from calohls.data.selection import ClusterSelection
from calohls.errors import ConfigError, FileExistsRefusedError, InputFileError, SchemaError


@pytest.fixture
def files(tmp_path, synthetic_batch):
    batch = synthetic_batch(n=120, max_cells=16, seed=4)
    h5, root = tmp_path / "c.h5", tmp_path / "c.root"
    with ClusterWriter(h5, 16) as w:
        w.append(batch)
    write_mltree(root, batch)
    return batch, h5, root


def test_detect_format_reads_the_bytes_not_the_name(files, tmp_path):
    _, h5, root = files
    assert detect_format(h5) == "hdf5"
    assert detect_format(root) == "root"
    renamed = tmp_path / "actually_root.h5"
    renamed.write_bytes(root.read_bytes())
    assert detect_format(renamed) == "root"
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    with pytest.raises(InputFileError, match=r"neither an HDF5 nor a ROOT file \(it starts with b'hell'\)"):
        detect_format(other)
    with pytest.raises(InputFileError, match="not found"):
        detect_format(tmp_path / "missing.h5")


def test_root_to_hdf5_keeps_every_cluster(files, tmp_path):
    batch, _, root = files
    out = tmp_path / "converted.h5"
    seen: list[int] = []
    n = root_to_hdf5(root, out, max_cells=16, progress=seen.append)
    assert n == len(batch) == sum(seen)
    back = read_clusters(out)
    order = np.lexsort((back["cluster_index"], back["event"]))
    ref = np.lexsort((batch["cluster_index"], batch["event"]))
    np.testing.assert_allclose(back["e_em"][order], batch["e_em"][ref], rtol=1e-6)
    np.testing.assert_array_equal(back.cell_id[order], batch.cell_id[ref])
    with open_clusters(out) as f:
        assert f.config["inputs"][0]["path"].endswith("c.root")
        assert f.config["branches"]["cell_e"] == "cluster_cell_E"


def test_root_to_hdf5_refuses_existing_output_and_non_root_input(files, tmp_path):
    _, h5, root = files
    with pytest.raises(FileExistsRefusedError, match="--overwrite"):
        root_to_hdf5(root, h5)
    with pytest.raises(InputFileError, match="is not a ROOT file"):
        root_to_hdf5(h5, tmp_path / "x.h5")
    assert not (tmp_path / "x.h5").exists()


def test_read_scalars_from_either_format(files):
    batch, h5, root = files
    (a, na), (b, nb) = read_scalars(h5, ["e_true"]), read_scalars(root, ["e_true"], max_cells=16)
    assert na == nb == 16
    np.testing.assert_allclose(np.sort(a["e_true"]), np.sort(batch["e_true"]))
    np.testing.assert_allclose(np.sort(b["e_true"]), np.sort(batch["e_true"]), rtol=1e-6)


# -- many inputs, selections, bad inputs (on the ROOT-written fixtures of test_mltree_fixtures.py) -----------
FIXTURES = Path(__file__).parent / "fixtures"
V1 = FIXTURES / "mltree_v1.root"
V2 = FIXTURES / "mltree_v2_events.root"
V2_GEO = FIXTURES / "mltree_v2_geo.root"
N_V1, N_V2 = 177, 157  # clusters in the fixtures, all with cells


def test_convert_many_inputs_into_one_file(tmp_path):
    out = tmp_path / "both.h5"
    seen: list[ConvertProgress] = []
    result = convert_mltree([V1, V2], out, geometry=V2_GEO, step_size="30 kB", progress=seen.append)
    assert result.clusters == N_V1 + N_V2
    assert seen[-1].events_done == seen[-1].events_total == 220
    assert [p.file_index for p in seen] == sorted(p.file_index for p in seen)
    assert {p.n_files for p in seen} == {2}
    back = read_clusters(out)
    assert len(back) == N_V1 + N_V2
    np.testing.assert_allclose(back["e_em"][:N_V1], read_mltree(V1)["e_em"])
    np.testing.assert_allclose(back["e_em"][N_V1:], read_mltree(V2, geometry=V2_GEO)["e_em"])
    with open_clusters(out) as f:
        config = f.config
    assert [i["path"] for i in config["inputs"]] == [str(V1), str(V2)]
    assert [i["entries"] for i in config["inputs"]] == [120, 100]
    assert [i["size"] for i in config["inputs"]] == [V1.stat().st_size, V2.stat().st_size]
    assert config["inputs"][1]["hit_branches"][-1] == "cluster_cell_hitsE_Escaped"
    assert config["counts"]["kept"] == N_V1 + N_V2
    missing = int((back["e_true"] <= 0).sum())
    assert config["counts"]["calib_tot_nonpositive"] == missing > 0
    assert ConvertResult.from_json(config) == result


def test_folders_and_globs(tmp_path):
    folder = tmp_path / "grid"
    folder.mkdir()
    for i in range(3):
        (folder / f"user.job._00000{i}.root.1").write_bytes(V1.read_bytes())
    (folder / "log.txt").write_text("not an input")
    assert [p.name for p in expand_inputs([folder])] == [f"user.job._00000{i}.root.1" for i in range(3)]
    assert len(expand_inputs([str(folder / "*._00000[01].root.1")])) == 2
    with pytest.raises(InputFileError, match=r"no file matches '.*nothing\*'"):
        expand_inputs([str(tmp_path / "nothing*")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputFileError, match=r"folder .*empty holds no \.root files"):
        expand_inputs([tmp_path / "empty"])
    with pytest.raises(InputFileError, match="is given twice"):
        expand_inputs([V1, folder, V1])
    result = convert_mltree([folder], tmp_path / "grid.h5")
    assert result.clusters == 3 * N_V1


def test_a_bad_input_among_many_writes_nothing_or_is_skipped(tmp_path):
    junk = tmp_path / "junk.root"
    junk.write_text("not ROOT\n" * 20)
    out = tmp_path / "out.h5"
    with pytest.raises(InputFileError, match=str(junk)):
        convert_mltree([V1, junk, V2], out, geometry=V2_GEO)
    with pytest.raises(SchemaError, match=rf"{V2}.*--geometry"):
        convert_mltree([V1, V2], out)
    assert list(tmp_path.iterdir()) == [junk]
    result = convert_mltree([V1, junk, V2], out, skip_bad=True)
    assert [s.path for s in result.skipped] == [str(junk), str(V2)]
    assert "--geometry" in result.skipped[1].reason
    assert len(read_clusters(out)) == result.clusters == N_V1
    with pytest.raises(InputFileError, match=r"none of the 2 inputs can be read; the first: .*junk\.root"):
        convert_mltree([junk, V2], tmp_path / "none.h5", skip_bad=True)
    assert not (tmp_path / "none.h5").exists()


def test_an_input_failing_part_way_is_rolled_back_with_skip_bad(tmp_path, synthetic_batch):
    good = tmp_path / "good.root"
    write_mltree(good, synthetic_batch(n=60, max_cells=8, seed=3))
    with uproot.open(good) as f:
        event, geo = f["EventTree"].arrays(), f["CellGeo"].arrays()
    last_id = int(ak.flatten(event["cluster_cell_ID"][-1], axis=None)[0])
    keep = ak.to_numpy(geo["cell_geo_ID"][0]) != last_id
    bad = tmp_path / "bad.root"
    with uproot.recreate(bad) as f:  # its last event has a cell the geometry lacks: fails at the last step
        f["EventTree"] = {k: event[k] for k in event.fields}
        f["CellGeo"] = {k: ak.Array([ak.to_numpy(geo[k][0])[keep]]) for k in geo.fields}
    out = tmp_path / "out.h5"
    with pytest.raises(SchemaError, match=rf"{bad}: cell ID {last_id}"):
        convert_mltree([good, bad], out, step_size=5, max_cells=8)
    assert not out.exists()
    result = convert_mltree([bad, good], out, step_size=5, max_cells=8, skip_bad=True)
    assert [s.path for s in result.skipped] == [str(bad)]
    assert len(read_clusters(out)) == result.clusters == 60
    with open_clusters(out) as f:
        assert [i["path"] for i in f.config["inputs"]] == [str(good)]


def test_selection_counts(tmp_path):
    out = tmp_path / "sel.h5"
    rules = ClusterSelection.parse(["truth_matched", "2<e_em<50", "abs_eta<0.5"])
    result = convert_mltree([V1], out, selection=rules)
    ev = uproot.open(V1)["EventTree"].arrays()
    e = ak.to_numpy(ak.flatten(ev["cluster_E"]))
    t = ak.to_numpy(ak.flatten(ev["cluster_ENG_CALIB_TOT"]))
    eta = ak.to_numpy(ak.flatten(ev["cluster_Eta"]))
    matched = t > 0
    low = matched & ~(e > 2)
    high = matched & (e > 2) & ~(e < 50)
    wide = matched & (e > 2) & (e < 50) & ~(np.abs(eta) < 0.5)
    expected = {
        "truth_matched": (~matched).sum(),
        "e_em>2": low.sum(),
        "e_em<50": high.sum(),
        "abs_eta<0.5": wide.sum(),
    }
    assert result.counts.selected_out == {k: int(v) for k, v in expected.items()}
    assert all(v > 0 for v in expected.values())
    back = read_clusters(out)
    assert len(back) == N_V1 - sum(expected.values()) == result.counts.kept
    assert (back["e_true"] > 0).all()
    assert (np.abs(back["eta"]) < 0.5).all()
    assert result.counts.calib_tot_nonpositive == 0
    with open_clusters(out) as f:
        assert f.config["selection"] == ["truth_matched", "e_em>2", "e_em<50", "abs_eta<0.5"]
    with pytest.raises(InputFileError, match=r"no clusters to write .*177 selected out"):
        convert_mltree([V1], tmp_path / "none.h5", selection=ClusterSelection.parse(["e_em>1e6"]))


@pytest.mark.parametrize(
    ("text", "expected"),
    [("100MB", "100 MB"), ("100 MB", "100 MB"), (" 2.5 GiB", "2.5 GiB"), ("500kB", "500 kB"), ("10000", 10000), (7, 7)],
)
def test_parse_step_size(text, expected):
    assert parse_step_size(text) == expected


@pytest.mark.parametrize("text", ["0", "-5", "100 apples", "MB", "0MB", ""])
def test_parse_step_size_refuses(text):
    with pytest.raises(ConfigError, match="step size"):
        parse_step_size(text)
