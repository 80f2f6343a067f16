"""The cluster record: what every stage reads and writes.

A batch of ``n`` topo-clusters is held in memory as fixed-size padded arrays (:class:`ClusterBatch`):

* ``cells``: float32 ``[n, N, F]`` with the per-cell fields :data:`CELL_FIELDS` (in that order), cells sorted by
  descending EM-scale energy, rows ``>= n_cells`` zero;
* ``cell_id``: int64 ``[n, N]`` stable cell identifiers (``-1`` in padding);
* ``n_cells``: int32 ``[n]`` number of stored cells;
* scalars, one value per cluster, listed in :data:`SCALAR_FIELDS`.

Energies are in GeV, angles in radians, radii in metres. ``e_true`` of a cluster is its calibration-hit energy: the
true deposited energy (visible + invisible) in the cluster's cells, like ATLAS ``ENG_CALIB_TOT``; ``e_em`` is the sum
of the cells' EM-scale energies (the default calibration). When a cluster has more than ``N`` cells the lowest-energy
ones are not stored, but ``e_em``, ``e_true`` and ``n_cells_total`` still count every cell.

:class:`RaggedClusters` holds the same record without padding (the stored cells of all clusters one after the other),
as cluster files of schema version 2 store it; :meth:`RaggedClusters.padded` and :meth:`ClusterBatch.ragged` convert.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from calohls.config import STORED_CELLS
from calohls.errors import DataError, NonFiniteError
from calohls.particles import PARTICLES

__all__ = [
    "CELL_FIELDS",
    "PARTICLES",
    "SAMPLINGS",
    "SCALAR_FIELDS",
    "SCHEMA_VERSION",
    "STORED_CELLS",
    "ClusterBatch",
    "RaggedClusters",
    "cell_field_index",
]

#: Version of the on-disk layout; bump on any incompatible change and keep a reader for the old one if possible.
#: 1: cells padded to ``max_cells`` per cluster; 2: the stored cells only, one column per cell field.
SCHEMA_VERSION = 2

#: Barrel calorimeter layers (inside out) and their ATLAS ``CaloSampling`` numbers, the ``sampling`` value stored
#: per cell. Files from users may hold other ATLAS samplings (end-caps); the numbers are ATLAS's own.
SAMPLINGS: dict[str, int] = {
    "PreSamplerB": 0,
    "EMB1": 1,
    "EMB2": 2,
    "EMB3": 3,
    "TileBar0": 12,
    "TileBar1": 13,
    "TileBar2": 14,
}

#: Per-cell fields of ``cells[..., F]``: EM-scale energy, true (calibration-hit) energy, cell centre η and φ,
#: ATLAS sampling number (see :data:`SAMPLINGS`), cell centre radius, cell sizes Δη and Δφ, total noise σ of the cell.
CELL_FIELDS: tuple[str, ...] = ("e", "e_true", "eta", "phi", "sampling", "r", "deta", "dphi", "sigma")

#: Per-cluster scalars and their dtypes.
SCALAR_FIELDS: dict[str, np.dtype] = {
    "e_em": np.dtype(np.float32),  # sum of EM-scale cell energies (default calibration), GeV
    "e_true": np.dtype(np.float32),  # calibration-hit energy in the cluster's cells, GeV
    "eta": np.dtype(np.float32),  # |E|-weighted cluster barycentre
    "phi": np.dtype(np.float32),
    "n_cells_total": np.dtype(np.int32),  # cells in the cluster, stored or not
    "particle": np.dtype(np.int32),  # PDG id of the truth particle
    "e_particle": np.dtype(np.float32),  # truth particle energy, GeV
    "eta_particle": np.dtype(np.float32),
    "phi_particle": np.dtype(np.float32),
    "event": np.dtype(np.int64),  # event number (unique within a file)
    "cluster_index": np.dtype(np.int32),  # rank of the cluster in its event by e_em, 0 = leading
}


def cell_field_index(name: str) -> int:
    """Index of a per-cell field in ``cells[..., F]``."""
    try:
        return CELL_FIELDS.index(name)
    except ValueError:
        raise DataError(f"unknown cell field {name!r}; known fields: {', '.join(CELL_FIELDS)}") from None


def _check_dtypes(cells: np.ndarray, cell_id: np.ndarray, n_cells: np.ndarray) -> None:
    """Raise :class:`DataError` naming the first of the cell arrays whose dtype is not the schema's."""
    for name, array, dtype in (
        ("cells", cells, np.float32),
        ("cell_id", cell_id, np.int64),
        ("n_cells", n_cells, np.int32),
    ):
        if array.dtype != dtype:
            raise DataError(f"{name} has dtype {array.dtype}; expected {np.dtype(dtype)} (convert with .astype)")


@dataclass(frozen=True)
class ClusterBatch:
    """A batch of clusters in the padded layout described in the module docstring."""

    cells: np.ndarray
    cell_id: np.ndarray
    n_cells: np.ndarray
    scalars: Mapping[str, np.ndarray]

    def __post_init__(self) -> None:
        self.validate()

    # -- construction ---------------------------------------------------------------------------------------------
    @classmethod
    def empty(cls, max_cells: int) -> ClusterBatch:
        """A batch with no clusters and room for ``max_cells`` cells each."""
        return cls(
            cells=np.zeros((0, max_cells, len(CELL_FIELDS)), np.float32),
            cell_id=np.zeros((0, max_cells), np.int64),
            n_cells=np.zeros(0, np.int32),
            scalars={k: np.zeros(0, dt) for k, dt in SCALAR_FIELDS.items()},
        )

    @classmethod
    def concatenate(cls, batches: Iterable[ClusterBatch]) -> ClusterBatch:
        """Join batches with the same ``max_cells``."""
        batches = list(batches)
        if not batches:
            raise DataError("no cluster batches to concatenate; generate or read at least one cluster first")
        sizes = {b.max_cells for b in batches}
        if len(sizes) != 1:
            raise DataError(f"cannot join batches padded to different cell counts {sorted(sizes)}; pad them equally")
        return cls(
            cells=np.concatenate([b.cells for b in batches]),
            cell_id=np.concatenate([b.cell_id for b in batches]),
            n_cells=np.concatenate([b.n_cells for b in batches]),
            scalars={k: np.concatenate([b.scalars[k] for b in batches]) for k in SCALAR_FIELDS},
        )

    # -- views ----------------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.n_cells.shape[0])

    @property
    def max_cells(self) -> int:
        """Padded cell count ``N``."""
        return int(self.cells.shape[1])

    @property
    def mask(self) -> np.ndarray:
        """Boolean ``[n, N]``: True for stored (real) cells, False for padding."""
        return np.arange(self.max_cells)[None, :] < self.n_cells[:, None]

    def cell(self, name: str) -> np.ndarray:
        """One per-cell field as ``[n, N]``."""
        return self.cells[:, :, cell_field_index(name)]

    def __getitem__(self, key: str) -> np.ndarray:
        """A scalar field by name (``batch["e_true"]``)."""
        try:
            return self.scalars[key]
        except KeyError:
            raise DataError(f"unknown cluster field {key!r}; known fields: {', '.join(SCALAR_FIELDS)}") from None

    def select(self, index: np.ndarray | slice) -> ClusterBatch:
        """A sub-batch by boolean mask, integer indices or slice."""
        return ClusterBatch(
            cells=self.cells[index],
            cell_id=self.cell_id[index],
            n_cells=self.n_cells[index],
            scalars={k: v[index] for k, v in self.scalars.items()},
        )

    def ragged(self) -> RaggedClusters:
        """The same clusters without padding."""
        mask = self.mask
        return RaggedClusters(self.cells[mask], self.cell_id[mask], self.n_cells, dict(self.scalars))

    @property
    def response_em(self) -> np.ndarray:
        """EM-scale response ``e_em / e_true`` per cluster."""
        return self.scalars["e_em"] / self.scalars["e_true"]

    # -- checks ---------------------------------------------------------------------------------------------------
    def validate(self) -> None:
        """Check shapes, dtypes, cell counts and finiteness; raise :class:`DataError` naming the first problem."""
        _check_dtypes(self.cells, self.cell_id, self.n_cells)
        if self.cells.ndim != 3 or self.cells.shape[2] != len(CELL_FIELDS):
            raise DataError(
                f"cells has shape {self.cells.shape}; expected [n, N, {len(CELL_FIELDS)}] with fields {CELL_FIELDS}"
            )
        n, big_n = self.cells.shape[:2]
        if self.cell_id.shape != (n, big_n):
            raise DataError(f"cell_id has shape {self.cell_id.shape}; expected {(n, big_n)} to match cells")
        if self.n_cells.shape != (n,):
            raise DataError(f"n_cells has shape {self.n_cells.shape}; expected ({n},)")
        _check_scalars(self.scalars, n)
        if n and (self.n_cells.min() < 0 or self.n_cells.max() > big_n):
            raise DataError(f"n_cells must lie in 0..{big_n}; got {self.n_cells.min()}..{self.n_cells.max()}")
        if n and (self.n_cells == 0).any():
            first = int(np.flatnonzero(self.n_cells == 0)[0])
            raise DataError(f"cluster {first} has no cells (n_cells=0); drop empty clusters before use")
        bad = ~np.isfinite(self.cells)
        if bad.any():
            i, j, f = np.argwhere(bad)[0]
            raise NonFiniteError(
                f"non-finite cell value {self.cells[i, j, f]} in cluster {i}, cell {j}, field {CELL_FIELDS[f]!r}; "
                "remove or fix these cells in the input"
            )


@dataclass(frozen=True)
class RaggedClusters:
    """Clusters without padding: the stored cells of all clusters one after the other (cheap to pass between
    processes and to write).

    Attributes:
        cells: float32 ``[M, F]`` per-cell fields, cluster after cluster, by descending EM-scale energy within each.
        cell_id: int64 ``[M]``.
        n_cells: int32 ``[n]`` stored cells per cluster (``M`` in all).
        scalars: one array ``[n]`` per entry of :data:`SCALAR_FIELDS`.
    """

    cells: np.ndarray
    cell_id: np.ndarray
    n_cells: np.ndarray
    scalars: Mapping[str, np.ndarray]

    def __len__(self) -> int:
        return int(self.n_cells.shape[0])

    @classmethod
    def concatenate(cls, parts: Iterable[RaggedClusters]) -> RaggedClusters:
        """Join batches (at least one)."""
        parts = list(parts)
        if not parts:
            raise DataError("no cluster batches to concatenate; generate or read at least one cluster first")
        if len(parts) == 1:
            return parts[0]
        return cls(
            cells=np.concatenate([p.cells for p in parts]),
            cell_id=np.concatenate([p.cell_id for p in parts]),
            n_cells=np.concatenate([p.n_cells for p in parts]),
            scalars={k: np.concatenate([p.scalars[k] for p in parts]) for k in SCALAR_FIELDS},
        )

    @property
    def first_cell(self) -> np.ndarray:
        """int64 ``[n]``: the row of ``cells`` where each cluster starts."""
        first = np.zeros(len(self), np.int64)
        np.cumsum(self.n_cells[:-1], out=first[1:])
        return first

    def padded(self, max_cells: int) -> ClusterBatch:
        """The padded record (validated); clusters with more than ``max_cells`` stored cells keep their first ones."""
        n = len(self)
        if n and int(self.n_cells.max()) > max_cells:
            first = self.first_cell
            rank = np.arange(self.cell_id.size) - np.repeat(first, self.n_cells)
            keep = rank < max_cells
            return RaggedClusters(
                self.cells[keep], self.cell_id[keep], np.minimum(self.n_cells, max_cells).astype(np.int32), self.scalars
            ).padded(max_cells)
        mask = np.arange(max_cells)[None, :] < self.n_cells[:, None]
        cells = np.zeros((n, max_cells, len(CELL_FIELDS)), np.float32)
        cells[mask] = self.cells
        cell_id = np.full((n, max_cells), -1, np.int64)
        cell_id[mask] = self.cell_id
        return ClusterBatch(cells, cell_id, np.asarray(self.n_cells, np.int32), dict(self.scalars))

    def validate(self) -> None:
        """The checks of :meth:`ClusterBatch.validate`, on the stored cells."""
        _check_dtypes(self.cells, self.cell_id, self.n_cells)
        if self.cells.ndim != 2 or self.cells.shape[1] != len(CELL_FIELDS):
            raise DataError(f"cells has shape {self.cells.shape}; expected [M, {len(CELL_FIELDS)}] ({CELL_FIELDS})")
        if self.n_cells.ndim != 1 or self.cell_id.shape != (self.cells.shape[0],):
            raise DataError(f"cell_id {self.cell_id.shape} and n_cells {self.n_cells.shape} do not fit cells")
        if int(self.n_cells.sum()) != self.cells.shape[0]:
            raise DataError(f"n_cells add up to {int(self.n_cells.sum())}, but there are {self.cells.shape[0]} cells")
        if len(self) and self.n_cells.min() < 1:
            first = int(np.flatnonzero(self.n_cells < 1)[0])
            raise DataError(f"cluster {first} has n_cells={self.n_cells[first]}; drop empty clusters before use")
        _check_scalars(self.scalars, len(self))
        if not np.isfinite(self.cells).all():
            j, f = np.argwhere(~np.isfinite(self.cells))[0]
            i = int(np.searchsorted(self.first_cell, j, side="right") - 1)
            raise NonFiniteError(
                f"non-finite cell value {self.cells[j, f]} in cluster {i}, cell {j - self.first_cell[i]}, field "
                f"{CELL_FIELDS[f]!r}; remove or fix these cells in the input"
            )


def _check_scalars(scalars: Mapping[str, np.ndarray], n: int) -> None:
    """Every scalar field present with shape ``(n,)``, its dtype, and finite where the record needs it."""
    missing = [k for k in SCALAR_FIELDS if k not in scalars]
    if missing:
        raise DataError(f"cluster fields missing: {', '.join(missing)}; every field of SCALAR_FIELDS is needed")
    for k, dtype in SCALAR_FIELDS.items():
        if scalars[k].shape != (n,):
            raise DataError(f"cluster field {k!r} has shape {scalars[k].shape}; expected ({n},)")
        if scalars[k].dtype != dtype:
            raise DataError(f"cluster field {k!r} has dtype {scalars[k].dtype}; expected {dtype}")
    for k in ("e_em", "e_true", "eta", "phi", "e_particle", "eta_particle", "phi_particle"):
        v = scalars[k]
        if not np.isfinite(v).all():
            i = int(np.flatnonzero(~np.isfinite(v))[0])
            raise NonFiniteError(f"non-finite {k}={v[i]} in cluster {i}; remove or fix it in the input")
