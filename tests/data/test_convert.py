from __future__ import annotations

import numpy as np
import pytest

from calohls.data.convert import detect_format, read_scalars, root_to_hdf5
from calohls.data.hdf5 import ClusterWriter, open_clusters, read_clusters
from calohls.data.root import write_mltree
from calohls.errors import FileExistsRefusedError, InputFileError


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
