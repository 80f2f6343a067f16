"""Cluster files in HDF5: the versioned on-disk form of :class:`~calohls.data.schema.ClusterBatch`.

Layout (schema version :data:`~calohls.data.schema.SCHEMA_VERSION` = 2; version 1 is still read, and written on
request)::

    /                        root attributes:
        format               "calohls-clusters"
        schema_version       int, 2 (or 1)
        calohls_version      str, package version of the writer
        cell_fields          list of str, the per-cell fields (CELL_FIELDS)
        max_cells            int, the most cells stored per cluster, N
        created              str, ISO 8601 UTC time the file was started
        config               str, optional: YAML of the configuration that generated the file
        (any extra attributes given by the writer's caller)
    /clusters/n_cells        int32   [n]        stored cells per cluster (1..N)
    /clusters/first_cell     int64   [n]        row of the cluster's first cell in /cells (version 2)
    /clusters/<scalar>       one dataset [n] per entry of SCALAR_FIELDS, with that dtype
    /cells/<field>           float32 [M]        one dataset per entry of CELL_FIELDS (version 2): the stored cells
                                                of all clusters, cluster after cluster, by descending EM-scale energy
    /cells/cell_id           int64   [M]        cell identifiers (version 2)
    /clusters/cells          float32 [n, N, F]  version 1 only: per-cell fields padded to N cells, padding 0
    /clusters/cell_id        int64   [n, N]     version 1 only: cell identifiers, padding -1

Version 2 stores only the real cells (about half of 256 padded slots are used in simulated files) and one field per
dataset, which compresses better and faster than interleaved fields. Every dataset is resizable along its first axis
(``maxshape`` None) and chunked along it. Version 2 compresses with lzf all but the cell energies (``/cells/e``,
``/cells/e_true``: noise-like, stored as they are; see ``_V2_COMPRESSION``), version 1 with
gzip level 1. Units: GeV, radians, metres (see :mod:`calohls.data.schema`).

Files are written to a hidden sibling ``.<name>.partial-<pid>`` that replaces the target only when writing
ends without error, so a reader never sees a half-written file at the target path.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, Self

import h5py
import numpy as np
import yaml

from calohls import __version__
from calohls.data.schema import CELL_FIELDS, SCALAR_FIELDS, SCHEMA_VERSION, ClusterBatch, RaggedClusters
from calohls.errors import (
    ConfigError,
    DataError,
    InputFileError,
    NonFiniteError,
    OutputError,
    SchemaError,
    SchemaVersionError,
)
from calohls.files import (
    check_output,
    commit,
    discard,
    partial_path,
    reading,
    remove_stale_partials,
    unreadable,
    unwritable,
    why_not_a_file,
    writing,
)

__all__ = [
    "FORMAT",
    "ClusterFile",
    "ClusterWriter",
    "open_clusters",
    "read_clusters",
]

logger = logging.getLogger(__name__)

#: Value of the root attribute ``format`` that marks a calohls cluster file.
FORMAT = "calohls-clusters"

_GROUP = "clusters"
_CELLS = "cells"  # the group of the per-cell datasets (version 2)
#: Schema versions this module reads and writes.
READABLE_VERSIONS = (1, SCHEMA_VERSION)
# The scalars that ClusterBatch.validate requires to be finite; read_scalars checks the same ones.
_FINITE_SCALARS = ("e_em", "e_true", "eta", "phi", "e_particle")
_RESERVED_ATTRS = (
    "format",
    "schema_version",
    "calohls_version",
    "cell_fields",
    "max_cells",
    "created",
    "config",
)

# Compression: gzip level 1 without shuffle: readable by any HDF5 library (lzf is h5py's own), smaller than lzf, and
# shuffling would break up the runs of zero padding. The measured sizes and speeds are in docs/data.md.
_COMPRESSION: dict[str, Any] = {"compression": "gzip", "compression_opts": 1, "shuffle": False}
# Version 2, one dataset per cell field. Measured on 8.6k simulated clusters (130 stored cells each), CPU time per
# cluster and column: gzip-1 2.5-13 us, lzf 1.7-4 us, none 0.3 us; all columns gzip-1 wrote 2.1 kB in 60 us, lzf
# 2.9 kB in 25 us. The cell energies are noise in their low bits (lzf: 614 -> 520 B for 3 us each), so they are
# stored as they are; the other columns (geometry, IDs) shrink 2-4x with lzf. Together 3.1 kB in 19 us.
_V2_COMPRESSION: dict[str, Any] = {"compression": "lzf", "shuffle": False}
_V2_RAW_COLUMNS = ("e", "e_true")  # cell fields stored without compression
_CHUNK_BYTES = 2 << 20  # target size of a `cells` chunk (version 1)
_CELL_CHUNK = 1 << 18  # cells per chunk of a /cells dataset (version 2)
_MAX_CHUNK_ROWS = 65536  # upper bound of clusters per chunk (1-D datasets)


class _DatasetSpec(NamedTuple):
    """One dataset of the file's layout: its shape after the first axis, dtype, chunk rows and h5py filters."""

    tail: tuple[int, ...]
    dtype: np.dtype
    chunk_rows: int
    filters: dict[str, Any]


_CHUNK_CACHE_BYTES = 32 << 20  # per-dataset chunk cache, above one chunk: partial chunks are not re-read
# Writing fills chunks in order, so a cache of two chunks of the largest kind never re-reads one; a larger one only
# holds finished chunks (version 2 has 24 datasets: 32 MiB each kept ~350 MB of a large file in memory).
_WRITE_CACHE_BYTES = 2 * max(_CHUNK_BYTES, _CELL_CHUNK * 8)


# -- atomic output -------------------------------------------------------------------------------------------
# -- writing -------------------------------------------------------------------------------------------------
def _chunk_rows(row_bytes: int) -> int:
    return int(min(_MAX_CHUNK_ROWS, max(1, _CHUNK_BYTES // row_bytes)))


def _check_attr(name: str, value: Any) -> None:
    if name in _RESERVED_ATTRS:
        raise ConfigError(
            f"attribute {name!r} is set by the writer; rename it (reserved: {', '.join(_RESERVED_ATTRS)})"
        )
    scalar = (str, int, float, bool, np.generic)
    ok = isinstance(value, (*scalar, np.ndarray)) or (
        isinstance(value, Sequence) and all(isinstance(v, scalar) for v in value)
    )
    if not ok:
        raise ConfigError(
            f"attribute {name}={value!r} has type {type(value).__name__}; use a string, number, bool or a list of them"
        )


class ClusterWriter:
    """Append cluster batches to a new HDF5 cluster file (layout in the module docstring).

    Use as a context manager; the file appears at ``path`` only when the ``with`` block ends without error::

        with ClusterWriter("clusters.h5", max_cells=256, config_yaml=dump_config(cfg)) as out:
            for batch in batches:
                out.append(batch)

    Args:
        path: Output file.
        max_cells: Padded cell count ``N`` of every batch to append.
        overwrite: Replace an existing file at ``path``.
        config_yaml: YAML text of the generating configuration, stored as the ``config`` attribute.
        attrs: Extra root attributes (strings, numbers, bools or lists of them).
        schema_version: Layout to write: 2 (default, the stored cells only) or 1 (padded, for older readers).

    Raises:
        FileExistsRefusedError: ``path`` exists and ``overwrite`` is False.
        ConfigError: ``max_cells`` < 1, ``config_yaml`` is not a YAML mapping, an attribute is reserved or
            of an unsupported type, or an unknown ``schema_version``.
        OutputError: The file cannot be written (full or read-only file system, a parent that is not a folder).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        max_cells: int,
        *,
        overwrite: bool = False,
        config_yaml: str | None = None,
        attrs: Mapping[str, Any] | None = None,
        schema_version: int = SCHEMA_VERSION,
    ) -> None:
        self.path = Path(path)
        if schema_version not in READABLE_VERSIONS:
            raise ConfigError(
                f"schema_version={schema_version}; this calohls writes {' or '.join(map(str, READABLE_VERSIONS))}"
            )
        self.schema_version = int(schema_version)
        self.overwrite = overwrite
        check_output(self.path, overwrite)
        if int(max_cells) < 1:
            raise ConfigError(f"max_cells={max_cells} must be at least 1")
        self.max_cells = int(max_cells)
        if config_yaml is not None:
            try:
                parsed = yaml.safe_load(config_yaml)
            except yaml.YAMLError as exc:
                raise ConfigError(
                    f"config_yaml is not valid YAML ({exc.__class__.__name__}); pass dump_config(...)"
                ) from None
            if parsed is not None and not isinstance(parsed, dict):
                raise ConfigError(f"config_yaml holds a {type(parsed).__name__}; it must be a YAML mapping")
        self.config_yaml = config_yaml
        self.attrs = dict(attrs or {})
        for name, value in self.attrs.items():
            _check_attr(name, value)
        self._partial = partial_path(self.path)
        self._file: h5py.File | None = None
        self._datasets: dict[str, h5py.Dataset] = {}
        self.n_clusters = 0
        self._cells_written = 0  # rows of the /cells datasets (version 2)

    # -- context ---------------------------------------------------------------------------------------------
    def __enter__(self) -> Self:
        try:
            with writing(self.path):
                self.path.parent.mkdir(parents=True, exist_ok=True)
                remove_stale_partials(self.path)
                self._file = h5py.File(self._partial, "w", rdcc_nbytes=_WRITE_CACHE_BYTES)
                self._create()
        except BaseException:
            self._abort()
            raise
        logger.debug("writing %s via %s", self.path, self._partial)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:
            self._abort()
            return
        if self._file is None:
            raise DataError(f"an append to {self.path} failed earlier; nothing was written, run again")
        try:
            with writing(self.path), _write_failures(self.path):
                self._file.close()
                self._file = None
                commit(self._partial, self.path, self.overwrite)
        except BaseException as err:
            self._abort(failed_write=isinstance(err, OutputError))
            raise
        logger.info("wrote %d clusters to %s", self.n_clusters, self.path)

    def _abort(self, failed_write: bool = False) -> None:
        if self._file is not None:
            # The file is thrown away: its last writes go to /dev/null.
            with contextlib.suppress(Exception):
                _detach_from_disk(self._file)
            if failed_write:
                # After a failed write (a full disk) the HDF5 library's chunk cache is broken: closing the file or
                # a dataset, now or when the interpreter exits, crashes it (SIGSEGV). The objects are kept open
                # for good; the command line ends such a process without finalizing them (see abandoned_files).
                _ABANDONED.append((self._file, dict(self._datasets)))
            else:
                with contextlib.suppress(Exception):
                    self._file.close()
            self._file = None
            self._datasets = {}
        discard(self._partial)

    def _create(self) -> None:
        f = self._file
        assert f is not None
        f.attrs["format"] = FORMAT
        f.attrs["schema_version"] = self.schema_version
        f.attrs["calohls_version"] = __version__
        f.attrs["cell_fields"] = list(CELL_FIELDS)
        f.attrs["max_cells"] = self.max_cells
        f.attrs["created"] = datetime.now(UTC).isoformat(timespec="seconds")
        if self.config_yaml is not None:
            f.attrs["config"] = self.config_yaml
        for name, value in self.attrs.items():
            f.attrs[name] = value
        f.create_group(_GROUP)
        for path, (tail, dtype, chunk_rows, filters) in self._specs().items():
            self._datasets[path] = f.create_dataset(
                path, shape=(0, *tail), dtype=dtype, maxshape=(None, *tail), chunks=(chunk_rows, *tail), **filters
            )

    def _specs(self) -> dict[str, _DatasetSpec]:
        """Every dataset of the file's layout: path -> its :class:`_DatasetSpec`."""
        scalars = {f"{_GROUP}/{k}": ((), dt, _MAX_CHUNK_ROWS) for k, dt in SCALAR_FIELDS.items()}
        if self.schema_version == 1:
            big_n, nf = self.max_cells, len(CELL_FIELDS)
            rows = _chunk_rows(big_n * nf * 4)
            specs = {
                f"{_GROUP}/cells": ((big_n, nf), np.dtype(np.float32), rows),
                f"{_GROUP}/cell_id": ((big_n,), np.dtype(np.int64), rows),
                f"{_GROUP}/n_cells": ((), np.dtype(np.int32), _MAX_CHUNK_ROWS),
                **scalars,
            }
            return {path: _DatasetSpec(*spec, _COMPRESSION) for path, spec in specs.items()}
        specs = {
            f"{_GROUP}/n_cells": ((), np.dtype(np.int32), _MAX_CHUNK_ROWS),
            f"{_GROUP}/first_cell": ((), np.dtype(np.int64), _MAX_CHUNK_ROWS),
            **scalars,
            **{f"{_CELLS}/{name}": ((), np.dtype(np.float32), _CELL_CHUNK) for name in CELL_FIELDS},
            f"{_CELLS}/cell_id": ((), np.dtype(np.int64), _CELL_CHUNK),
        }
        raw = {f"{_CELLS}/{name}" for name in _V2_RAW_COLUMNS}
        return {path: _DatasetSpec(*spec, {} if path in raw else _V2_COMPRESSION) for path, spec in specs.items()}

    # -- data ------------------------------------------------------------------------------------------------
    def append(self, batch: ClusterBatch | RaggedClusters) -> None:
        """Append a batch, padded or ragged (validated again, since its arrays may have changed since it was built).

        Raises:
            DataError: The writer is not open, a padded batch's ``max_cells`` differs from the file's, a ragged
                batch has a cluster of more than ``max_cells`` cells, or the batch is invalid.
        """
        if self._file is None:
            raise DataError(f"writer for {self.path} is not open; use it as `with ClusterWriter(...) as out:`")
        if isinstance(batch, ClusterBatch) and batch.max_cells != self.max_cells:
            raise DataError(
                f"batch padded to {batch.max_cells} cells but {self.path} holds {self.max_cells}; "
                "pad every batch to the writer's max_cells"
            )
        batch.validate()
        k = len(batch)
        if k == 0:
            return
        if isinstance(batch, RaggedClusters) and int(batch.n_cells.max()) > self.max_cells:
            raise DataError(
                f"a cluster of the batch stores {int(batch.n_cells.max())} cells but {self.path} holds at most "
                f"{self.max_cells}; keep the first max_cells cells of each cluster"
            )
        columns = self._columns_v1(batch) if self.schema_version == 1 else self._columns_v2(batch)
        try:
            with writing(self.path), _write_failures(self.path):
                for path, values in columns.items():
                    ds = self._datasets[path]
                    n0 = ds.shape[0]
                    ds.resize(n0 + len(values), axis=0)
                    ds[n0:] = np.asarray(values).astype(ds.dtype, copy=False)
        except BaseException as err:
            self._abort(failed_write=isinstance(err, OutputError))  # datasets may differ in length: never publish
            raise
        self.n_clusters += k
        if self.schema_version != 1:
            self._cells_written = self._datasets[f"{_CELLS}/cell_id"].shape[0]

    def _columns_v1(self, batch: ClusterBatch | RaggedClusters) -> dict[str, np.ndarray]:
        padded = batch.padded(self.max_cells) if isinstance(batch, RaggedClusters) else batch
        return {
            f"{_GROUP}/cells": padded.cells,
            f"{_GROUP}/cell_id": padded.cell_id,
            f"{_GROUP}/n_cells": padded.n_cells,
            **{f"{_GROUP}/{name}": padded.scalars[name] for name in SCALAR_FIELDS},
        }

    def _columns_v2(self, batch: ClusterBatch | RaggedClusters) -> dict[str, np.ndarray]:
        ragged = batch.ragged() if isinstance(batch, ClusterBatch) else batch
        return {
            f"{_GROUP}/n_cells": ragged.n_cells,
            f"{_GROUP}/first_cell": ragged.first_cell + self._cells_written,
            **{f"{_GROUP}/{name}": ragged.scalars[name] for name in SCALAR_FIELDS},
            **{f"{_CELLS}/{name}": ragged.cells[:, i] for i, name in enumerate(CELL_FIELDS)},
            f"{_CELLS}/cell_id": ragged.cell_id,
        }

    def truncate(self, n: int) -> None:
        """Drop every cluster after the first ``n`` (and their cells)."""
        if self._file is None:
            raise DataError(f"writer for {self.path} is not open; use it as `with ClusterWriter(...) as out:`")
        n = min(int(n), self.n_clusters)
        if self.schema_version == 1:
            cells = n
        else:
            cells = self._cells_written if n == self.n_clusters else int(self._datasets[f"{_GROUP}/first_cell"][n])
        with writing(self.path), _write_failures(self.path):
            for path, ds in self._datasets.items():
                ds.resize(cells if path.startswith(f"{_CELLS}/") else n, axis=0)
        self.n_clusters = n
        self._cells_written = cells


#: HDF5 files (and their datasets) whose writing failed: never closed (see ``ClusterWriter._abort``).
_ABANDONED: list[tuple[h5py.File, dict[str, h5py.Dataset]]] = []


def abandoned_files() -> int:
    """How many HDF5 files this process left open after a failed write: if any, the process must end with
    ``os._exit`` (after flushing its output), since finalizing them crashes the HDF5 library."""
    return len(_ABANDONED)


def _detach_from_disk(f: h5py.File) -> None:
    """Point the operating-system file of ``f`` (sec2 driver) at /dev/null, so that closing it writes nothing."""
    fd = f.id.get_vfd_handle()
    null = os.open(os.devnull, os.O_RDWR)
    try:
        os.dup2(null, fd)
    finally:
        os.close(null)


@contextlib.contextmanager
def _write_failures(path: Path) -> Iterator[None]:
    """Turn the HDF5 library's report of a failed write (a full disk, a file-size limit), an ``OSError`` or a
    ``RuntimeError`` whose text carries the errno, into the one-line :class:`OutputError` naming ``path``."""
    try:
        yield
    except (OSError, RuntimeError) as exc:
        text = str(exc)
        if "write failed" not in text and "Can't write" not in text:
            raise
        found = re.search(r"errno = (\d+)", text)
        code = exc.errno if isinstance(exc, OSError) and exc.errno else int(found.group(1)) if found else errno.EIO
        raise unwritable(path, OSError(code, os.strerror(code))) from None


# -- reading -------------------------------------------------------------------------------------------------
_HINT = "the file is not HDF5, or is corrupt or truncated: re-create it (e.g. with `calohls simulate`)"
_LOW_LEVEL = (OSError, RuntimeError, KeyError, ValueError, TypeError)


def _unreadable(path: Path, exc: BaseException) -> InputFileError:
    return unreadable(path, "HDF5", exc, _HINT)


def _reading(path: Path) -> contextlib.AbstractContextManager[None]:
    """Turn low-level read failures into :class:`InputFileError` naming ``path``."""
    return reading(path, "HDF5", _HINT, _LOW_LEVEL)


def _plain(value: Any) -> Any:
    """An HDF5 attribute value as a plain Python object."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return _plain(value.item())
    return value


class ClusterFile:
    """An open HDF5 cluster file; use :func:`open_clusters` to get one.

    The layout is checked on opening; data are read only on demand, so files larger than memory can be
    streamed with :meth:`iter_batches`.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        problem = why_not_a_file(self.path)
        if problem == "not found":
            raise InputFileError(
                f"cluster file {self.path} not found; check the path or create it with `calohls simulate`"
            )
        if problem is not None:
            raise InputFileError(f"cluster file {self.path} {problem}; give the path of an HDF5 file")
        if self.path.stat().st_size == 0:
            raise InputFileError(f"cluster file {self.path} is empty (0 bytes); re-create it, or give another file")
        try:
            self._file = h5py.File(self.path, "r", rdcc_nbytes=_CHUNK_CACHE_BYTES)
        except (OSError, RuntimeError, ValueError) as exc:
            if "unable to lock file" in str(exc):
                raise InputFileError(
                    f"cluster file {self.path} is locked: another process is writing it (or died while writing it); "
                    "wait for that process to finish, or, if none is running, set HDF5_USE_FILE_LOCKING=FALSE"
                ) from None
            raise _unreadable(self.path, exc) from None
        try:
            with _reading(self.path):
                self._check()
        except BaseException:
            self._file.close()
            raise

    # -- layout checks ---------------------------------------------------------------------------------------
    def _check(self) -> None:
        f, path = self._file, self.path
        self.attrs: dict[str, Any] = {k: _plain(v) for k, v in f.attrs.items()}
        fmt = self.attrs.get("format")
        if fmt is None:
            raise SchemaError(
                f"{path} is HDF5 but not a calohls cluster file (root attribute 'format' missing); "
                "write it with calohls (e.g. `calohls simulate`)"
            )
        if fmt != FORMAT:
            raise SchemaError(f"{path} has format={fmt!r}, expected {FORMAT!r}; give a calohls cluster file")
        version = self.attrs.get("schema_version")
        if version is None:
            raise SchemaError(f"{path} lacks the root attribute 'schema_version'; re-create the file")
        if version not in READABLE_VERSIONS:
            raise SchemaVersionError(
                f"{path} has schema version {version}, this calohls reads version {SCHEMA_VERSION} (and "
                f"{', '.join(str(v) for v in READABLE_VERSIONS if v != SCHEMA_VERSION)}); "
                "re-create the file with this calohls or use the calohls version that wrote it"
            )
        if _GROUP not in f or not isinstance(f[_GROUP], h5py.Group):
            raise SchemaError(f"{path} has no group '/{_GROUP}'; re-create the file")
        self._version = int(version)
        cluster_names = ["cells", "cell_id", "n_cells"] if version == 1 else ["n_cells", "first_cell"]
        paths = [f"{_GROUP}/{name}" for name in (*cluster_names, *SCALAR_FIELDS)]
        if version != 1:
            paths += [f"{_CELLS}/{name}" for name in (*CELL_FIELDS, "cell_id")]
        missing = [p for p in paths if p not in f or not isinstance(f[p], h5py.Dataset)]
        if missing:
            raise SchemaError(f"{path} lacks dataset(s) {', '.join(f'/{m}' for m in missing)}; re-create the file")
        self._datasets: dict[str, h5py.Dataset] = {
            p.split("/", 1)[1] if p.startswith(_GROUP) else p: f[p] for p in paths
        }
        n, big_n = self._check_v1() if version == 1 else self._check_v2()
        fields = self.attrs.get("cell_fields")
        if fields is not None and list(fields) != list(CELL_FIELDS):
            raise SchemaError(
                f"{path} has cell_fields {list(fields)}; expected {list(CELL_FIELDS)}; re-create the file"
            )
        self._n = int(n)
        self._max_cells = int(big_n)

    def _check_shapes(self, expected: Mapping[str, tuple[tuple[int, ...], np.dtype]]) -> None:
        for name, (shape, dtype) in expected.items():
            ds = self._datasets[name]
            where = f"/{name}" if name.startswith(f"{_CELLS}/") else f"/{_GROUP}/{name}"
            if ds.shape != shape:
                raise SchemaError(f"{self.path}: {where} has shape {ds.shape}; expected {shape}")
            if ds.dtype != dtype:
                raise SchemaError(f"{self.path}: {where} has dtype {ds.dtype}; expected {dtype}")

    def _check_v1(self) -> tuple[int, int]:
        """Version 1: (clusters, padded cell count) after checking the padded layout."""
        cells = self._datasets["cells"]
        if cells.ndim != 3 or cells.shape[2] != len(CELL_FIELDS):
            raise SchemaError(
                f"{self.path}: /{_GROUP}/cells has shape {cells.shape}; expected [n, N, {len(CELL_FIELDS)}]"
            )
        n, big_n = cells.shape[:2]
        expected: dict[str, tuple[tuple[int, ...], np.dtype]] = {
            "cells": ((n, big_n, len(CELL_FIELDS)), np.dtype(np.float32)),
            "cell_id": ((n, big_n), np.dtype(np.int64)),
            "n_cells": ((n,), np.dtype(np.int32)),
        }
        expected.update({k: ((n,), dt) for k, dt in SCALAR_FIELDS.items()})
        self._check_shapes(expected)
        max_cells = self.attrs.get("max_cells")
        if max_cells is not None and max_cells != big_n:
            raise SchemaError(f"{self.path} says max_cells={max_cells} but its cells hold {big_n}; re-create the file")
        return n, big_n

    def _check_v2(self) -> tuple[int, int]:
        """Version 2: (clusters, max_cells) after checking the ragged layout."""
        n = self._datasets["first_cell"].shape[0] if self._datasets["first_cell"].ndim == 1 else -1
        m = self._datasets[f"{_CELLS}/cell_id"].shape[0] if self._datasets[f"{_CELLS}/cell_id"].ndim == 1 else -1
        expected: dict[str, tuple[tuple[int, ...], np.dtype]] = {
            "n_cells": ((n,), np.dtype(np.int32)),
            "first_cell": ((n,), np.dtype(np.int64)),
            **{k: ((n,), dt) for k, dt in SCALAR_FIELDS.items()},
            **{f"{_CELLS}/{k}": ((m,), np.dtype(np.float32)) for k in CELL_FIELDS},
            f"{_CELLS}/cell_id": ((m,), np.dtype(np.int64)),
        }
        self._check_shapes(expected)
        max_cells = self.attrs.get("max_cells")
        if not isinstance(max_cells, int) or max_cells < 1:
            raise SchemaError(
                f"{self.path} has max_cells={max_cells!r}; expected a positive integer; re-create the file"
            )
        return n, max_cells

    # -- properties ------------------------------------------------------------------------------------------
    @property
    def n_clusters(self) -> int:
        """Number of clusters in the file."""
        return self._n

    def __len__(self) -> int:
        return self._n

    @property
    def max_cells(self) -> int:
        """Padded cell count ``N``."""
        return self._max_cells

    @property
    def schema_version(self) -> int:
        """Schema version the file was written with."""
        return int(self.attrs["schema_version"])

    @property
    def config(self) -> dict[str, Any] | None:
        """The generating configuration parsed from the ``config`` attribute, or None if the file has none.

        Raises:
            SchemaError: The attribute is not a YAML mapping.
        """
        text = self.attrs.get("config")
        if text is None:
            return None
        try:
            parsed = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise SchemaError(f"{self.path}: attribute 'config' is not valid YAML ({exc.__class__.__name__})") from None
        if parsed is None:
            return None
        if not isinstance(parsed, dict):
            raise SchemaError(f"{self.path}: attribute 'config' holds a {type(parsed).__name__}, not a mapping")
        return parsed

    # -- data ------------------------------------------------------------------------------------------------
    def read(self, start: int = 0, stop: int | None = None, *, max_cells: int | None = None) -> ClusterBatch:
        """Clusters ``start`` to ``stop`` (exclusive) as one batch; bounds follow Python slicing.

        With ``max_cells``, only each cluster's first (most energetic) ``max_cells`` cells are read, so a network
        that looks at 64 cells never loads the rest; the scalars still describe the whole cluster.

        Raises:
            NonFiniteError: NaN or inf in the data (the message names the file and the cluster range).
            DataError: Other invalid content (e.g. ``n_cells`` out of range).
            InputFileError: The data cannot be read (corrupt file).
        """
        start, stop, _ = slice(start, stop).indices(self._n)
        stop = max(start, stop)
        k = self.max_cells if max_cells is None else min(int(max_cells), self.max_cells)
        if k < 1:
            raise ConfigError(f"max_cells={max_cells} must be at least 1")
        with _reading(self.path):
            ds = self._datasets
            stored = ds["n_cells"][start:stop]
            scalars = {name: ds[name][start:stop] for name in SCALAR_FIELDS}
            if stored.size and stored.max() > self.max_cells:  # more cells than the file stores: corrupt, not clipped
                first = int(np.flatnonzero(stored > self.max_cells)[0])
                raise DataError(
                    f"{self.path}: cluster {start + first} has n_cells={int(stored[first])}, more than the "
                    f"{self.max_cells} cells per cluster the file stores; re-create the file"
                )
            if self._version == 1:
                cells, cell_id = ds["cells"][start:stop, :k], ds["cell_id"][start:stop, :k]
            else:
                cells, cell_id = self._read_cells(start, stop, stored, k)
        n_cells = np.minimum(stored, k).astype(np.int32)
        try:
            return ClusterBatch(cells=cells, cell_id=cell_id, n_cells=n_cells, scalars=scalars)
        except DataError as exc:
            raise type(exc)(f"{self.path} [clusters {start}:{stop}]: {exc}") from None

    def _read_cells(self, start: int, stop: int, stored: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Version 2: the first ``k`` cells of clusters ``start:stop``, padded (cells, cell_id)."""
        n = stop - start
        cells = np.zeros((n, k, len(CELL_FIELDS)), np.float32)
        cell_id = np.full((n, k), -1, np.int64)
        if n == 0 or stored.min() < 1:  # no cells to read (an empty cluster fails the batch's checks)
            return cells, cell_id
        first = self._datasets["first_cell"][start:stop]
        lo, hi = int(first[0]), int(first[-1]) + int(stored[-1])
        total = self._datasets[f"{_CELLS}/cell_id"].shape[0]
        if lo < 0 or hi > total or (n > 1 and np.any(first[1:] != first[:-1] + stored[:-1])):
            raise DataError(
                f"{self.path}: first_cell of clusters {start}:{stop} does not match their n_cells and the "
                f"{total} stored cells; the file is corrupt, re-create it"
            )
        rank = np.arange(hi - lo) - np.repeat(first - lo, stored)
        keep = rank < k
        mask = np.arange(k)[None, :] < np.minimum(stored, k)[:, None]
        for i, name in enumerate(CELL_FIELDS):
            cells[:, :, i][mask] = self._datasets[f"{_CELLS}/{name}"][lo:hi][keep]
        cell_id[mask] = self._datasets[f"{_CELLS}/cell_id"][lo:hi][keep]
        return cells, cell_id

    def iter_batches(self, size: int = 65536, *, max_cells: int | None = None) -> Iterator[ClusterBatch]:
        """Stream the file in batches of ``size`` clusters (the last one may be shorter), optionally of only the
        first ``max_cells`` cells of each cluster (see :meth:`read`).

        Raises:
            ConfigError: ``size`` < 1.
        """
        if size < 1:
            raise ConfigError(f"batch size {size} must be at least 1")
        for start in range(0, self._n, size):
            yield self.read(start, start + size, max_cells=max_cells)

    def read_scalars(self, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Per-cluster scalars only (no cells), all of them or those named.

        Raises:
            DataError: An unknown name.
            NonFiniteError: NaN or inf where the cluster record needs finite values (as in ``read``).
        """
        names = list(SCALAR_FIELDS) if names is None else list(names)
        unknown = [name for name in names if name not in SCALAR_FIELDS]
        if unknown:
            raise DataError(f"unknown cluster field(s) {', '.join(unknown)}; known fields: {', '.join(SCALAR_FIELDS)}")
        with _reading(self.path):
            out = {name: self._datasets[name][:] for name in names}
        for name, values in out.items():
            if name in _FINITE_SCALARS and not np.isfinite(values).all():
                i = int(np.flatnonzero(~np.isfinite(values))[0])
                raise NonFiniteError(
                    f"{self.path}: non-finite {name}={values[i]} in cluster {i}; remove or fix it in the input"
                )
        return out

    # -- lifetime --------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the file (idempotent)."""
        self._file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ClusterFile({str(self.path)!r}, n_clusters={self._n}, max_cells={self._max_cells})"


def open_clusters(path: str | os.PathLike[str]) -> ClusterFile:
    """Open an HDF5 cluster file for reading, checking its layout and schema version.

    Raises:
        InputFileError: The file is missing, not HDF5, corrupt or truncated.
        SchemaError: The file is HDF5 but lacks the calohls layout, or has wrong shapes or dtypes.
        SchemaVersionError: The file was written with another schema version.
    """
    return ClusterFile(path)


def read_clusters(path: str | os.PathLike[str], start: int = 0, stop: int | None = None) -> ClusterBatch:
    """Read clusters ``start`` to ``stop`` of an HDF5 cluster file (all by default) into memory."""
    with open_clusters(path) as f:
        return f.read(start, stop)
