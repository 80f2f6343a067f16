"""HDF5 cluster files: round trips, streaming, atomic writes and every read error."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import h5py
import numpy as np
import pytest

from calohls import __version__
from calohls.data.hdf5 import FORMAT, ClusterWriter, open_clusters, read_clusters
from calohls.data.schema import CELL_FIELDS, SCALAR_FIELDS, SCHEMA_VERSION, ClusterBatch, RaggedClusters
from calohls.errors import (
    ConfigError,
    DataError,
    FileExistsRefusedError,
    InputFileError,
    NonFiniteError,
    SchemaError,
    SchemaVersionError,
)


def assert_batches_equal(a: ClusterBatch, b: ClusterBatch) -> None:
    assert len(a) == len(b)
    np.testing.assert_array_equal(a.cells, b.cells)
    np.testing.assert_array_equal(a.cell_id, b.cell_id)
    np.testing.assert_array_equal(a.n_cells, b.n_cells)
    for k, dt in SCALAR_FIELDS.items():
        assert a.scalars[k].dtype == dt, k
        np.testing.assert_array_equal(a.scalars[k], b.scalars[k], err_msg=k)


def write(path: Path, *batches: ClusterBatch, **kwargs: object) -> None:
    with ClusterWriter(path, batches[0].max_cells, **kwargs) as out:  # type: ignore[arg-type]
        for batch in batches:
            out.append(batch)


@pytest.fixture
def h5_file(tmp_path, synthetic_batch) -> tuple[Path, ClusterBatch]:
    batch = synthetic_batch(n=300, max_cells=24, seed=1)
    path = tmp_path / "clusters.h5"
    write(path, batch)
    return path, batch


@pytest.fixture
def h5_file_v1(tmp_path, synthetic_batch) -> tuple[Path, ClusterBatch]:
    """A file in the padded layout of schema version 1 (still read)."""
    batch = synthetic_batch(n=300, max_cells=24, seed=1)
    path = tmp_path / "clusters_v1.h5"
    write(path, batch, schema_version=1)
    return path, batch


# -- round trips ---------------------------------------------------------------------------------------------
def test_round_trip_and_attributes(tmp_path, synthetic_batch):
    a = synthetic_batch(n=120, max_cells=16, seed=1)
    b = synthetic_batch(n=80, max_cells=16, seed=2)
    path = tmp_path / "deep" / "folder" / "c.h5"
    config = "events: 100\ntopo:\n  seed: 4.0\n"
    write(path, a, b, config_yaml=config, attrs={"generator": "unit test", "mu": 200.0, "tags": ["x", "y"]})
    assert not list(path.parent.glob(".*partial*"))
    with open_clusters(path) as f:
        assert f.n_clusters == len(f) == 200
        assert f.max_cells == 16
        assert f.schema_version == SCHEMA_VERSION
        assert f.attrs["format"] == FORMAT
        assert f.attrs["calohls_version"] == __version__
        assert f.attrs["cell_fields"] == list(CELL_FIELDS)
        assert f.attrs["max_cells"] == 16
        assert f.attrs["generator"] == "unit test"
        assert f.attrs["tags"] == ["x", "y"]
        assert datetime.fromisoformat(f.attrs["created"]).utcoffset().total_seconds() == 0
        assert f.config == {"events": 100, "topo": {"seed": 4.0}}
        assert_batches_equal(f.read(), ClusterBatch.concatenate([a, b]))
        assert_batches_equal(f.read(150, 170), b.select(slice(30, 50)))
        assert_batches_equal(f.read(-5), b.select(slice(75, 80)))
    assert_batches_equal(read_clusters(path, 10, 20), a.select(slice(10, 20)))


def test_layout_on_disk(h5_file_v1):
    path, batch = h5_file_v1
    with h5py.File(path, "r") as f:
        g = f["clusters"]
        assert g["cells"].dtype == np.float32
        assert g["cells"].shape == (300, 24, len(CELL_FIELDS))
        assert g["cell_id"].dtype == np.int64
        assert g["n_cells"].dtype == np.int32
        for name, ds in g.items():
            assert ds.maxshape[0] is None, name
            assert ds.compression == "gzip", name
            assert ds.chunks is not None
        for k, dt in SCALAR_FIELDS.items():
            assert g[k].dtype == dt
        assert (g["cell_id"][:][~batch.mask] == -1).all()


def test_layout_on_disk_v2(h5_file):
    path, batch = h5_file
    m = int(batch.n_cells.sum())
    with h5py.File(path, "r") as f:
        assert f.attrs["schema_version"] == SCHEMA_VERSION == 2
        assert f.attrs["max_cells"] == 24
        g, cells = f["clusters"], f["cells"]
        assert "cells" not in g
        assert "cell_id" not in g
        assert g["n_cells"].dtype == np.int32
        np.testing.assert_array_equal(g["first_cell"][:], np.concatenate([[0], np.cumsum(batch.n_cells)[:-1]]))
        for k, dt in SCALAR_FIELDS.items():
            assert g[k].dtype == dt
            assert g[k].shape == (300,)
        for name in CELL_FIELDS:
            assert cells[name].dtype == np.float32
            assert cells[name].shape == (m,)
            np.testing.assert_array_equal(cells[name][:], batch.cell(name)[batch.mask])
        assert cells["cell_id"].dtype == np.int64
        np.testing.assert_array_equal(cells["cell_id"][:], batch.cell_id[batch.mask])
        for ds in [*g.values(), *cells.values()]:
            assert ds.maxshape[0] is None, ds.name
            raw = ds.name in ("/cells/e", "/cells/e_true")  # noise-like: not worth compressing
            assert ds.compression == (None if raw else "lzf"), ds.name
            assert ds.chunks is not None


def test_version_1_and_2_read_alike(h5_file, h5_file_v1):
    with open_clusters(h5_file[0]) as new, open_clusters(h5_file_v1[0]) as old:
        assert (new.schema_version, old.schema_version) == (2, 1)
        assert new.max_cells == old.max_cells == 24
        assert_batches_equal(new.read(), old.read())
        assert_batches_equal(new.read(), h5_file[1])
        for start, stop, k in ((0, 300, 5), (17, 18, 24), (250, 300, 1), (40, 40, None), (5, 123, 100)):
            assert_batches_equal(new.read(start, stop, max_cells=k), old.read(start, stop, max_cells=k))


def test_ragged_batches_are_written_as_given(tmp_path, synthetic_batch):
    a, b = synthetic_batch(n=50, max_cells=12, seed=3), synthetic_batch(n=70, max_cells=12, seed=4)
    ragged = b.ragged()
    assert isinstance(ragged, RaggedClusters)
    assert_batches_equal(ragged.padded(12), b)
    for version in (1, 2):
        path = tmp_path / f"mixed{version}.h5"
        with ClusterWriter(path, 12, schema_version=version) as out:
            out.append(a)
            out.append(ragged)
        assert_batches_equal(read_clusters(path), ClusterBatch.concatenate([a, b]))
    with ClusterWriter(tmp_path / "small.h5", 8) as out, pytest.raises(DataError, match="stores 12 cells"):
        out.append(ragged)


def test_truncate_drops_clusters_and_their_cells(tmp_path, synthetic_batch):
    a, b = synthetic_batch(n=40, max_cells=10, seed=5), synthetic_batch(n=30, max_cells=10, seed=6)
    for version in (1, 2):
        path = tmp_path / f"t{version}.h5"
        with ClusterWriter(path, 10, schema_version=version) as out:
            out.append(a)
            out.append(b)
            out.truncate(40)
            out.append(b.select(slice(0, 5)))
            assert out.n_clusters == 45
        assert_batches_equal(read_clusters(path), ClusterBatch.concatenate([a, b.select(slice(0, 5))]))


def test_unknown_schema_version_to_write(tmp_path):
    with pytest.raises(ConfigError, match="schema_version=3"):
        ClusterWriter(tmp_path / "x.h5", 8, schema_version=3)


def test_corrupt_first_cell(h5_file):
    path, _ = h5_file
    with h5py.File(path, "r+") as f:
        f["clusters/first_cell"][10] += 1
    with open_clusters(path) as f:
        assert len(f.read(0, 10)) == 10
        with pytest.raises(DataError, match=r"first_cell of clusters 0:300 does not match"):
            f.read()


def test_streaming_equals_one_read(h5_file):
    path, _ = h5_file
    with open_clusters(path) as f:
        parts = list(f.iter_batches(size=70))
        assert [len(p) for p in parts] == [70, 70, 70, 70, 20]
        assert_batches_equal(ClusterBatch.concatenate(parts), f.read())
        with pytest.raises(ConfigError, match="batch size 0"):
            next(f.iter_batches(size=0))


def test_read_scalars(h5_file):
    path, batch = h5_file
    with open_clusters(path) as f:
        all_scalars = f.read_scalars()
        assert set(all_scalars) == set(SCALAR_FIELDS)
        np.testing.assert_array_equal(all_scalars["e_true"], batch["e_true"])
        some = f.read_scalars(["event", "e_em"])
        assert list(some) == ["event", "e_em"]
        with pytest.raises(DataError, match=r"unknown cluster field\(s\) nope"):
            f.read_scalars(["nope"])


def test_empty_file_and_no_config(tmp_path):
    path = tmp_path / "empty.h5"
    with ClusterWriter(path, 8):
        pass
    with open_clusters(path) as f:
        assert f.n_clusters == 0
        assert f.config is None
        assert len(f.read()) == 0
        assert list(f.iter_batches()) == []


# -- atomic writes -------------------------------------------------------------------------------------------
def test_refuses_to_overwrite(h5_file, synthetic_batch):
    path, _ = h5_file
    before = path.read_bytes()
    with pytest.raises(FileExistsRefusedError, match=re.escape(str(path))):
        ClusterWriter(path, 24)
    assert path.read_bytes() == before
    assert not list(path.parent.glob(".*partial*"))


def test_overwrite_replaces(h5_file, synthetic_batch):
    path, _ = h5_file
    new = synthetic_batch(n=10, max_cells=4, seed=9)
    write(path, new, overwrite=True)
    assert_batches_equal(read_clusters(path), new)


@pytest.mark.parametrize("existing", [False, True])
def test_failed_write_leaves_nothing(tmp_path, synthetic_batch, existing):
    path = tmp_path / "c.h5"
    if existing:
        path.write_bytes(b"old content")
    batch = synthetic_batch(n=50, max_cells=8, seed=3)
    partials = []

    def fail_mid_way() -> None:
        with ClusterWriter(path, 8, overwrite=True) as out:
            out.append(batch)
            partials.extend(tmp_path.glob(".c.h5.partial-*"))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fail_mid_way()
    assert len(partials) == 1
    assert list(tmp_path.iterdir()) == ([path] if existing else [])
    if existing:
        assert path.read_bytes() == b"old content"


def test_failed_append_is_never_published(tmp_path, synthetic_batch, monkeypatch):
    path = tmp_path / "c.h5"
    calls = []
    original = h5py.Dataset.__setitem__

    def flaky(self, key, value):
        calls.append(self.name)
        if len(calls) == 3:
            raise OSError("disk full")
        original(self, key, value)

    def write_and_swallow() -> None:
        with ClusterWriter(path, 8) as out:
            monkeypatch.setattr(h5py.Dataset, "__setitem__", flaky)
            with pytest.raises(OSError, match="disk full"):
                out.append(synthetic_batch(n=20, max_cells=8))

    with pytest.raises(DataError, match=rf"an append to {re.escape(str(path))} failed earlier; nothing"):
        write_and_swallow()
    assert list(tmp_path.iterdir()) == []


def test_writer_argument_errors(tmp_path, synthetic_batch):
    with (
        pytest.raises(DataError, match=r"padded to 8 cells .* holds 16"),
        ClusterWriter(tmp_path / "a.h5", 16) as out,
    ):
        out.append(synthetic_batch(n=5, max_cells=8))
    assert not list(tmp_path.iterdir())
    with pytest.raises(ConfigError, match="'format' is set by the writer"):
        ClusterWriter(tmp_path / "b.h5", 8, attrs={"format": "x"})
    with pytest.raises(ConfigError, match="attribute bad=None"):
        ClusterWriter(tmp_path / "b.h5", 8, attrs={"bad": None})
    with pytest.raises(ConfigError, match="config_yaml holds a list"):
        ClusterWriter(tmp_path / "b.h5", 8, config_yaml="- a\n- b\n")
    with pytest.raises(ConfigError, match="max_cells=0"):
        ClusterWriter(tmp_path / "b.h5", 0)
    writer = ClusterWriter(tmp_path / "b.h5", 8)
    with pytest.raises(DataError, match="not open"):
        writer.append(synthetic_batch(n=5, max_cells=8))


# -- read errors ---------------------------------------------------------------------------------------------
def test_missing_file(tmp_path):
    path = tmp_path / "nothing.h5"
    with pytest.raises(InputFileError, match=rf"{re.escape(str(path))} not found; .*calohls simulate"):
        open_clusters(path)


def test_not_hdf5(tmp_path):
    path = tmp_path / "text.h5"
    path.write_text("this is not HDF5\n" * 100)
    with pytest.raises(InputFileError, match=rf"cannot read {re.escape(str(path))} as HDF5.*re-create it"):
        open_clusters(path)


def test_truncated(h5_file):
    path, _ = h5_file
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputFileError, match=rf"cannot read {re.escape(str(path))} as HDF5.*truncated"):
        read_clusters(path)


def test_hdf5_without_format(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(SchemaError, match=r"not a calohls cluster file \(root attribute 'format' missing\)"):
        open_clusters(path)


def test_wrong_format_value(h5_file):
    path, _ = h5_file
    with h5py.File(path, "r+") as f:
        f.attrs["format"] = "something-else"
    with pytest.raises(SchemaError, match="format='something-else'"):
        open_clusters(path)


def test_other_schema_version(h5_file):
    path, _ = h5_file
    with h5py.File(path, "r+") as f:
        f.attrs["schema_version"] = 99
    with pytest.raises(SchemaVersionError, match=rf"schema version 99, this calohls reads version {SCHEMA_VERSION}"):
        open_clusters(path)


def test_missing_group(h5_file):
    path, _ = h5_file
    with h5py.File(path, "r+") as f:
        del f["clusters"]
    with pytest.raises(SchemaError, match="no group '/clusters'"):
        open_clusters(path)


def test_missing_dataset(h5_file):
    path, _ = h5_file
    with h5py.File(path, "r+") as f:
        del f["clusters/e_true"]
    with pytest.raises(SchemaError, match=r"lacks dataset\(s\) /clusters/e_true"):
        open_clusters(path)


def test_wrong_dtype(h5_file):
    path, _ = h5_file
    with h5py.File(path, "r+") as f:
        n_cells = f["clusters/n_cells"][:]
        del f["clusters/n_cells"]
        f["clusters/n_cells"] = n_cells.astype(np.float64)
    with pytest.raises(SchemaError, match="n_cells has dtype float64; expected int32"):
        open_clusters(path)


def test_wrong_shape(h5_file):
    path, _ = h5_file
    with h5py.File(path, "r+") as f:
        del f["clusters/eta"]
        f["clusters/eta"] = np.zeros(7, np.float32)
    with pytest.raises(SchemaError, match=r"eta has shape \(7,\); expected \(300,\)"):
        open_clusters(path)


def test_wrong_cell_fields(h5_file):
    path, _ = h5_file
    with h5py.File(path, "r+") as f:
        f.attrs["cell_fields"] = list(reversed(CELL_FIELDS))
    with pytest.raises(SchemaError, match="cell_fields"):
        open_clusters(path)


def test_non_finite_cells(h5_file_v1):
    path, _ = h5_file_v1
    with h5py.File(path, "r+") as f:
        f["clusters/cells"][5, 0, 0] = np.nan
    with open_clusters(path) as f:
        assert len(f.read(0, 5)) == 5  # clean slices still read
        with pytest.raises(NonFiniteError, match=rf"{re.escape(str(path))} \[clusters 0:300\]: non-finite"):
            f.read()


def test_non_finite_cells_v2(h5_file):
    path, batch = h5_file
    row = int(batch.n_cells[:5].sum())  # the first cell of cluster 5
    with h5py.File(path, "r+") as f:
        f["cells/e"][row] = np.nan
    with open_clusters(path) as f:
        assert len(f.read(0, 5)) == 5  # clean slices still read
        with pytest.raises(NonFiniteError, match=rf"{re.escape(str(path))} \[clusters 0:300\]: non-finite.* cluster 5"):
            f.read()


def test_non_finite_scalar(h5_file):
    path, _ = h5_file
    with h5py.File(path, "r+") as f:
        f["clusters/e_true"][7] = np.inf
    with (
        open_clusters(path) as f,
        pytest.raises(NonFiniteError, match=rf"{re.escape(str(path))}: non-finite e_true=inf"),
    ):
        f.read_scalars(["e_true"])
    with pytest.raises(NonFiniteError, match=re.escape(str(path))):
        read_clusters(path)


def test_invalid_config_attribute(h5_file):
    path, _ = h5_file
    with h5py.File(path, "r+") as f:
        f.attrs["config"] = "a: [unclosed"
    with open_clusters(path) as f, pytest.raises(SchemaError, match="attribute 'config' is not valid YAML"):
        _ = f.config
