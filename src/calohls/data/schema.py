"""The cluster record: what every stage reads and writes.

A batch of ``n`` topo-clusters is stored as fixed-size padded arrays:

* ``cells``: float32 ``[n, N, F]`` with the per-cell fields :data:`CELL_FIELDS` (in that order), cells sorted by
  descending EM-scale energy, rows ``>= n_cells`` zero;
* ``cell_id``: int64 ``[n, N]`` stable cell identifiers (``-1`` in padding);
* ``n_cells``: int32 ``[n]`` number of stored cells;
* scalars, one value per cluster, listed in :data:`SCALAR_FIELDS`.

Energies are in GeV, angles in radians, radii in metres. ``e_true`` of a cluster is its calibration-hit energy: the
true deposited energy (visible + invisible) in the cluster's cells, like ATLAS ``ENG_CALIB_TOT``; ``e_em`` is the sum
of the cells' EM-scale energies (the default calibration). When a cluster has more than ``N`` cells the lowest-energy
ones are not stored, but ``e_em``, ``e_true`` and ``n_cells_total`` still count every cell.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from calohls.errors import DataError, NonFiniteError

__all__ = [
    "CELL_FIELDS",
    "PARTICLES",
    "SAMPLINGS",
    "SCALAR_FIELDS",
    "SCHEMA_VERSION",
    "STORED_CELLS",
    "ClusterBatch",
    "cell_field_index",
]

#: Version of the on-disk layout; bump on any incompatible change and keep a reader for the old one if possible.
SCHEMA_VERSION = 1

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

#: Cells *stored* per cluster in a cluster file by default (simulation and conversion): the file's padded ``N``.
#: Not the network's input size: a network reads its own ``max_cells`` (:data:`calohls.config.NETWORK_CELLS`,
#: :data:`calohls.config.FPGA_CELLS`), the most energetic of the stored cells.
STORED_CELLS = 256

#: Particle names accepted on the command line and their PDG ids.
PARTICLES: dict[str, int] = {"pi+": 211, "pi-": -211, "pi0": 111, "gamma": 22}

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

    @property
    def response_em(self) -> np.ndarray:
        """EM-scale response ``e_em / e_true`` per cluster."""
        return self.scalars["e_em"] / self.scalars["e_true"]

    # -- checks ---------------------------------------------------------------------------------------------------
    def validate(self) -> None:
        """Check shapes, dtypes, cell counts and finiteness; raise :class:`DataError` naming the first problem."""
        for name, array, dtype in (
            ("cells", self.cells, np.float32),
            ("cell_id", self.cell_id, np.int64),
            ("n_cells", self.n_cells, np.int32),
        ):
            if array.dtype != dtype:
                raise DataError(f"{name} has dtype {array.dtype}; expected {np.dtype(dtype)} (convert with .astype)")
        if self.cells.ndim != 3 or self.cells.shape[2] != len(CELL_FIELDS):
            raise DataError(
                f"cells has shape {self.cells.shape}; expected [n, N, {len(CELL_FIELDS)}] with fields {CELL_FIELDS}"
            )
        n, big_n = self.cells.shape[:2]
        if self.cell_id.shape != (n, big_n):
            raise DataError(f"cell_id has shape {self.cell_id.shape}; expected {(n, big_n)} to match cells")
        if self.n_cells.shape != (n,):
            raise DataError(f"n_cells has shape {self.n_cells.shape}; expected ({n},)")
        missing = [k for k in SCALAR_FIELDS if k not in self.scalars]
        if missing:
            raise DataError(f"cluster fields missing: {', '.join(missing)}; every field of SCALAR_FIELDS is needed")
        for k, dtype in SCALAR_FIELDS.items():
            if self.scalars[k].shape != (n,):
                raise DataError(f"cluster field {k!r} has shape {self.scalars[k].shape}; expected ({n},)")
            if self.scalars[k].dtype != dtype:
                raise DataError(f"cluster field {k!r} has dtype {self.scalars[k].dtype}; expected {dtype}")
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
        for k in ("e_em", "e_true", "eta", "phi", "e_particle", "eta_particle", "phi_particle"):
            v = self.scalars[k]
            if not np.isfinite(v).all():
                i = int(np.flatnonzero(~np.isfinite(v))[0])
                raise NonFiniteError(f"non-finite {k}={v[i]} in cluster {i}; remove or fix it in the input")
