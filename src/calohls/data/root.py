"""ATLAS MLTree-style ROOT ntuples: read into :class:`~calohls.data.schema.ClusterBatch` and written back.

The MLTree layout has two trees:

* an event tree (``EventTree``), one entry per event, with per-cluster lists ``cluster_E`` (EM scale),
  ``cluster_E_LCCalib``, ``cluster_ENG_CALIB_TOT``, ``cluster_Eta``, ``cluster_Phi``, ``cluster_nCells``;
  per-cell lists of lists ``cluster_cell_ID``, ``cluster_cell_E`` and optionally the calibration hits
  ``cluster_cell_hitsE_EM`` and ``cluster_cell_hitsE_nonEM``; truth particle lists ``truthPartE``,
  ``truthPartEta``, ``truthPartPhi``, ``truthPartPdgId``; and ``eventNumber``;
* a cell geometry tree (``CellGeo``) with one entry holding the vectors ``cell_geo_ID``, ``cell_geo_sampling``
  (ATLAS ``CaloSampling`` numbers), ``cell_geo_eta``, ``cell_geo_phi``, ``cell_geo_rPerp``, ``cell_geo_deta``,
  ``cell_geo_dphi``, ``cell_geo_sigma`` (noise).

ATLAS files hold energies in MeV and lengths in mm; calohls works in GeV and metres. The :class:`BranchMap`
gives the branch names and the unit scales (``energy_scale``, ``length_scale``: multiply a file value by the
scale to get calohls units), and can be loaded from YAML to read files with other names.

Mapping to the cluster record: ``e_em`` = ``cluster_E``, ``e_true`` = ``cluster_ENG_CALIB_TOT``,
``eta``/``phi`` = ``cluster_Eta``/``cluster_Phi``, ``n_cells_total`` = the larger of ``cluster_nCells`` and
the number of cells in the cell lists; per cell ``e`` = ``cluster_cell_E``, ``e_true`` = ``hitsE_EM +
hitsE_nonEM`` (0 without these branches), and the geometry fields looked up by cell ID in the geometry tree.
Cells are sorted by descending EM-scale energy and the first ``max_cells`` kept. The truth fields come from
the first truth particle of the event (0 when the event or the file has none), ``event`` from ``eventNumber``
(else the entry number), and ``cluster_index`` is the rank of ``cluster_E`` among all clusters of the event
(0 = highest). Clusters without cells are dropped (and counted in the log).

Both ROOT ``TTree`` files (as written by ATLAS software) and ``RNTuple`` files are read. :func:`write_mltree`
writes RNTuples, the only form in which this uproot version writes lists of lists; ROOT reads them from
version 6.34 on. It stores the stored cells of each cluster (at most ``max_cells``), ``cluster_nCells`` keeps
the full count, and the LC-calibrated energy, which the cluster record does not hold, is not written.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import uproot
from pydantic import BaseModel, ConfigDict, Field, model_validator

from calohls.config import load_config
from calohls.data.schema import CELL_FIELDS, SCALAR_FIELDS, ClusterBatch
from calohls.errors import ConfigError, DataError, InputFileError, NonFiniteError, SchemaError
from calohls.files import atomic_output, reading, unreadable, why_not_a_file

__all__ = ["BranchMap", "iter_mltree", "read_mltree", "write_mltree"]

logger = logging.getLogger(__name__)

#: Geometry fields of a cell, in the order of the looked-up table (the last seven of CELL_FIELDS).
_GEO_FIELDS = ("eta", "phi", "sampling", "r", "deta", "dphi", "sigma")
assert CELL_FIELDS[2:] == _GEO_FIELDS


class BranchMap(BaseModel):
    """Names of the trees and branches of an MLTree file and the unit scales of its values.

    Optional branches may be set to ``None`` (``null`` in YAML) to say that the file has none; a named
    optional branch that the file lacks is treated the same way, with a warning in the log.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_tree: str = Field("EventTree", min_length=1, description="tree with one entry per event")
    geometry_tree: str = Field("CellGeo", min_length=1, description="tree with the cell geometry vectors")
    # per cluster (one list per event)
    cluster_e: str = Field("cluster_E", min_length=1, description="EM-scale cluster energy")
    cluster_e_lc: str | None = Field("cluster_E_LCCalib", description="LC-calibrated energy (not read)")
    cluster_e_calib_tot: str = Field("cluster_ENG_CALIB_TOT", min_length=1, description="calibration-hit energy")
    cluster_eta: str = Field("cluster_Eta", min_length=1)
    cluster_phi: str = Field("cluster_Phi", min_length=1)
    cluster_n_cells: str | None = Field("cluster_nCells", description="cells in the cluster")
    # per cell (one list of lists per event)
    cell_id: str = Field("cluster_cell_ID", min_length=1, description="cell identifiers")
    cell_e: str = Field("cluster_cell_E", min_length=1, description="EM-scale cell energy")
    cell_hits_e_em: str | None = Field("cluster_cell_hitsE_EM", description="EM calibration-hit energy")
    cell_hits_e_nonem: str | None = Field("cluster_cell_hitsE_nonEM", description="non-EM calibration hits")
    # truth (one list per event; the first particle is used) and event number
    truth_e: str | None = Field("truthPartE")
    truth_eta: str | None = Field("truthPartEta")
    truth_phi: str | None = Field("truthPartPhi")
    truth_pdg_id: str | None = Field("truthPartPdgId")
    event_number: str | None = Field("eventNumber")
    # cell geometry (one entry of vectors)
    geo_id: str = Field("cell_geo_ID", min_length=1)
    geo_sampling: str = Field("cell_geo_sampling", min_length=1, description="ATLAS CaloSampling number")
    geo_eta: str = Field("cell_geo_eta", min_length=1)
    geo_phi: str = Field("cell_geo_phi", min_length=1)
    geo_r: str = Field("cell_geo_rPerp", min_length=1, description="cell centre radius")
    geo_deta: str = Field("cell_geo_deta", min_length=1)
    geo_dphi: str = Field("cell_geo_dphi", min_length=1)
    geo_sigma: str = Field("cell_geo_sigma", min_length=1, description="cell noise")
    # units
    energy_scale: float = Field(1e-3, gt=0, description="file energy unit in GeV (1e-3 for MeV)")
    length_scale: float = Field(1e-3, gt=0, description="file length unit in metres (1e-3 for mm)")

    @model_validator(mode="after")
    def _distinct(self) -> BranchMap:
        if self.event_tree == self.geometry_tree:
            raise ValueError(f"event_tree and geometry_tree are both {self.event_tree!r}; give distinct trees")
        for names in (self._event_names(), self._geo_names()):
            seen: dict[str, str] = {}
            for field, branch in names.items():
                if branch in seen:
                    raise ValueError(f"{seen[branch]} and {field} both name branch {branch!r}; give distinct names")
                seen[branch] = field
        return self

    def _event_names(self) -> dict[str, str]:
        fields = (
            "cluster_e",
            "cluster_e_lc",
            "cluster_e_calib_tot",
            "cluster_eta",
            "cluster_phi",
            "cluster_n_cells",
            "cell_id",
            "cell_e",
            "cell_hits_e_em",
            "cell_hits_e_nonem",
            "truth_e",
            "truth_eta",
            "truth_phi",
            "truth_pdg_id",
            "event_number",
        )
        return {f: getattr(self, f) for f in fields if getattr(self, f) is not None}

    def _geo_names(self) -> dict[str, str]:
        fields = ("geo_id", *(f"geo_{g}" for g in _GEO_FIELDS))
        return {f: getattr(self, f) for f in fields}

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> BranchMap:
        """Load a branch map from a YAML mapping; keys left out keep their defaults.

        Raises:
            ConfigError: The file is missing, not YAML, or holds an unknown key or a bad value.
        """
        return load_config(cls, Path(path))


# -- reading -------------------------------------------------------------------------------------------------
_HINT = "the file is not a ROOT file, or is corrupt or truncated: re-create or copy it again"


def _unreadable(path: Path, exc: BaseException) -> InputFileError:
    return unreadable(path, "ROOT", exc, _HINT)


def _reading(path: Path) -> contextlib.AbstractContextManager[None]:
    """Turn failures inside uproot calls (it raises many kinds on damaged files) into :class:`InputFileError`."""
    return reading(path, "ROOT", _HINT)


@contextlib.contextmanager
def _open(path: str | os.PathLike[str]) -> Iterator[tuple[Path, Any]]:
    path = Path(path)
    problem = why_not_a_file(path)
    if problem == "not found":
        raise InputFileError(f"ROOT file {path} not found; check the path")
    if problem is not None:
        raise InputFileError(f"ROOT file {path} {problem}; give the path of a .root file")
    with _reading(path):
        file = uproot.open(path)
    try:
        yield path, file
    finally:
        file.close()


def _tree(path: Path, file: Any, name: str, field: str) -> Any:
    with _reading(path):
        classes = {key.rsplit(";", 1)[0]: cls for key, cls in file.classnames().items()}
    cls = classes.get(name)
    if cls is None:
        trees = sorted(k for k, c in classes.items() if c in ("TTree", "ROOT::RNTuple"))
        raise SchemaError(
            f"{path} has no tree {name!r} (trees: {', '.join(trees) or 'none'}); "
            f"set {field} in the branch map to the right tree"
        )
    if cls not in ("TTree", "ROOT::RNTuple"):
        raise SchemaError(f"{path}: {name!r} is a {cls}, not a tree; set {field} in the branch map to a tree")
    with _reading(path):
        return file[name]


def _branch_names(path: Path, tree: Any) -> set[str]:
    with _reading(path):
        return set(tree.keys())


def _missing_required(path: Path, tree_name: str, present: set[str], names: dict[str, str]) -> None:
    for field, branch in names.items():
        if branch not in present:
            raise SchemaError(
                f"{path}: tree {tree_name!r} has no branch {branch!r} (needed for {field}); "
                f"fix {field} in the branch map"
            )


def _flat(x: ak.Array) -> np.ndarray:
    return ak.to_numpy(ak.flatten(x, axis=None))


def _first_bad_entry(x: ak.Array, bad: np.ndarray) -> int:
    """Local entry of ``x`` that holds the first True of ``bad``, a mask over all values of ``x`` in order."""
    if x.ndim == 1:
        per_entry = np.ones(len(x), np.int64)
    else:
        while x.ndim > 2:
            x = ak.flatten(x, axis=2)
        per_entry = ak.to_numpy(ak.num(x, axis=1))
    return int(np.searchsorted(np.cumsum(per_entry), int(np.flatnonzero(bad)[0]), side="right"))


def _check_finite(path: Path, name: str, x: ak.Array, values: np.ndarray, entry0: int) -> None:
    if values.dtype.kind != "f":
        return
    bad = ~np.isfinite(values)
    if bad.any():
        entry = entry0 + _first_bad_entry(x, bad)
        raise NonFiniteError(
            f"{path}: non-finite value {values[bad][0]} in branch {name!r} at entry {entry}; "
            "remove or fix these values in the input"
        )


@dataclass(frozen=True)
class _Geometry:
    ids: np.ndarray  # sorted int64 [G]
    table: np.ndarray  # float32 [G, 7] in _GEO_FIELDS order, calohls units


@dataclass(frozen=True)
class _Context:
    path: Path
    branches: BranchMap
    geometry: _Geometry
    optional: dict[str, str]  # present optional branches: field -> branch
    max_cells: int


def _as_int64(path: Path, name: str, values: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "u" and values.size and values.max() > np.iinfo(np.int64).max:
        raise SchemaError(f"{path}: branch {name!r} holds IDs above 2^63-1; calohls stores cell IDs as int64")
    if values.dtype.kind not in "iu":
        raise SchemaError(f"{path}: branch {name!r} has type {values.dtype}, expected integers; fix the branch map")
    return values.astype(np.int64)


def _read_geometry(path: Path, file: Any, bm: BranchMap) -> _Geometry:
    tree = _tree(path, file, bm.geometry_tree, "geometry_tree")
    names = bm._geo_names()
    _missing_required(path, bm.geometry_tree, _branch_names(path, tree), names)
    with _reading(path):
        arrays = tree.arrays(filter_name=list(names.values()), library="ak")
    flat = {}
    for field, branch in names.items():
        x = arrays[branch]
        values = _flat(x)
        _check_finite(path, branch, x, values, 0)
        flat[field] = values
    sizes = {len(v) for v in flat.values()}
    if len(sizes) != 1:
        lengths = ", ".join(f"{names[f]}={len(v)}" for f, v in flat.items())
        raise SchemaError(f"{path}: geometry branches differ in length ({lengths}); each needs one value per cell")
    ids = _as_int64(path, names["geo_id"], flat["geo_id"])
    scale = {"r": bm.length_scale, "sigma": bm.energy_scale}
    table = np.stack([flat[f"geo_{g}"].astype(np.float64) * scale.get(g, 1.0) for g in _GEO_FIELDS], axis=1).astype(
        np.float32
    )
    order = np.argsort(ids, kind="stable")
    ids, table = ids[order], table[order]
    dup = np.flatnonzero(ids[1:] == ids[:-1])
    if dup.size:  # e.g. files merged with their geometry entries: accept identical duplicates
        differ = (table[dup + 1] != table[dup]).any(axis=1)
        if differ.any():
            bad_id = ids[dup[differ][0]]
            raise SchemaError(
                f"{path}: cell ID {bad_id} appears in {bm.geometry_tree!r} with different geometries; fix the file"
            )
        keep = np.ones(len(ids), bool)
        keep[dup + 1] = False
        ids, table = ids[keep], table[keep]
    return _Geometry(ids=ids, table=table)


def _per_event(x: ak.Array, path: Path, name: str) -> np.ndarray:
    """A per-event value: a plain number per entry, or the first element of a list per entry (0 if empty)."""
    if x.ndim == 1:
        return ak.to_numpy(x)
    if x.ndim == 2:
        return ak.to_numpy(ak.fill_none(ak.firsts(x, axis=1), 0))
    raise SchemaError(f"{path}: branch {name!r} has {x.ndim - 1} list levels per event; expected at most one")


def _convert(arrays: ak.Array, entry0: int, ctx: _Context) -> ClusterBatch:
    """A chunk of events in the MLTree layout as a batch; ``entry0`` is the tree entry of the first event."""
    path, bm, max_cells = ctx.path, ctx.branches, ctx.max_cells
    n_events = len(arrays)
    # -- per-cluster branches --------------------------------------------------------------------------------
    cluster_names = {
        "cluster_e": bm.cluster_e,
        "cluster_e_calib_tot": bm.cluster_e_calib_tot,
        "cluster_eta": bm.cluster_eta,
        "cluster_phi": bm.cluster_phi,
    }
    if "cluster_n_cells" in ctx.optional:
        cluster_names["cluster_n_cells"] = ctx.optional["cluster_n_cells"]
    per_cluster: dict[str, np.ndarray] = {}
    n_cl: np.ndarray | None = None
    for field, branch in cluster_names.items():
        x = arrays[branch]
        if x.ndim != 2:
            raise SchemaError(
                f"{path}: branch {branch!r} has {x.ndim - 1} list levels per event; expected one list of "
                f"clusters per event: fix {field} in the branch map"
            )
        counts = ak.to_numpy(ak.num(x, axis=1))
        if n_cl is None:
            n_cl = counts
        elif not np.array_equal(counts, n_cl):
            i = int(np.flatnonzero(counts != n_cl)[0])
            raise SchemaError(
                f"{path}: branch {branch!r} has {counts[i]} clusters at entry {entry0 + i} but "
                f"{bm.cluster_e!r} has {n_cl[i]}; the per-cluster branches must have one value per cluster"
            )
        values = _flat(x)
        _check_finite(path, branch, x, values, entry0)
        per_cluster[field] = values
    assert n_cl is not None
    n_clusters = int(n_cl.sum())
    # -- per-cell branches -----------------------------------------------------------------------------------
    cell_names = {"cell_id": bm.cell_id, "cell_e": bm.cell_e}
    cell_names.update({f: ctx.optional[f] for f in ("cell_hits_e_em", "cell_hits_e_nonem") if f in ctx.optional})
    per_cell: dict[str, np.ndarray] = {}
    n_cell: np.ndarray | None = None
    for field, branch in cell_names.items():
        x = arrays[branch]
        if x.ndim != 3:
            raise SchemaError(
                f"{path}: branch {branch!r} has {x.ndim - 1} list levels per event; expected a list of cells "
                f"per cluster (two levels): fix {field} in the branch map"
            )
        counts_cl = ak.to_numpy(ak.num(x, axis=1))
        if not np.array_equal(counts_cl, n_cl):
            i = int(np.flatnonzero(counts_cl != n_cl)[0])
            raise SchemaError(
                f"{path}: branch {branch!r} has {counts_cl[i]} clusters at entry {entry0 + i} but "
                f"{bm.cluster_e!r} has {n_cl[i]}; the cell branches must have one list per cluster"
            )
        counts = ak.to_numpy(ak.flatten(ak.num(x, axis=2), axis=None))
        if n_cell is None:
            n_cell = counts
        elif not np.array_equal(counts, n_cell):
            j = int(np.flatnonzero(counts != n_cell)[0])
            entry = entry0 + int(np.searchsorted(np.cumsum(n_cl), j, side="right"))
            raise SchemaError(
                f"{path}: branch {branch!r} has {counts[j]} cells in a cluster at entry {entry} but "
                f"{bm.cell_id!r} has {n_cell[j]}; the cell branches must have one value per cell"
            )
        values = _flat(x)
        _check_finite(path, branch, x, values, entry0)
        per_cell[field] = values
    assert n_cell is not None
    if n_clusters == 0:
        return ClusterBatch.empty(max_cells)
    event_of_cluster = np.repeat(np.arange(n_events), n_cl)
    cluster_of_cell = np.repeat(np.arange(n_clusters), n_cell)

    # -- geometry lookup -------------------------------------------------------------------------------------
    ids = _as_int64(path, bm.cell_id, per_cell["cell_id"])
    geo = ctx.geometry
    pos = np.minimum(np.searchsorted(geo.ids, ids), max(len(geo.ids) - 1, 0))
    known = geo.ids[pos] == ids if len(geo.ids) else np.zeros(len(ids), bool)
    if not known.all():
        j = int(np.flatnonzero(~known)[0])
        entry = entry0 + int(event_of_cluster[cluster_of_cell[j]])
        raise SchemaError(
            f"{path}: cell ID {ids[j]} (branch {bm.cell_id!r}, entry {entry}) is not in the geometry tree "
            f"{bm.geometry_tree!r}; the file's geometry is incomplete or the branch map names the wrong tree"
        )

    # -- cells: sort by descending EM-scale energy within each cluster, keep the first max_cells -------------
    e_cell = per_cell["cell_e"].astype(np.float64) * bm.energy_scale
    e_true_cell = np.zeros_like(e_cell)
    for field in ("cell_hits_e_em", "cell_hits_e_nonem"):
        if field in per_cell:
            e_true_cell += per_cell[field].astype(np.float64) * bm.energy_scale
    values = np.empty((len(ids), len(CELL_FIELDS)), np.float32)
    values[:, 0] = e_cell
    values[:, 1] = e_true_cell
    values[:, 2:] = geo.table[pos]
    order = np.lexsort((-e_cell, cluster_of_cell))
    cell_start = np.concatenate([[0], np.cumsum(n_cell)[:-1]])
    rank = np.arange(len(ids)) - cell_start[cluster_of_cell[order]]
    stored = rank < max_cells
    src = order[stored]
    cells = np.zeros((n_clusters, max_cells, len(CELL_FIELDS)), np.float32)
    cell_id = np.full((n_clusters, max_cells), -1, np.int64)
    cells[cluster_of_cell[src], rank[stored]] = values[src]
    cell_id[cluster_of_cell[src], rank[stored]] = ids[src]

    # -- per-cluster scalars ---------------------------------------------------------------------------------
    e_em = per_cluster["cluster_e"].astype(np.float64)
    by_rank = np.lexsort((-e_em, event_of_cluster))
    cluster_start = np.concatenate([[0], np.cumsum(n_cl)[:-1]])
    cluster_index = np.empty(n_clusters, np.int64)
    cluster_index[by_rank] = np.arange(n_clusters) - cluster_start[event_of_cluster[by_rank]]
    n_total = n_cell.astype(np.int64)
    if "cluster_n_cells" in per_cluster:
        n_total = np.maximum(n_total, per_cluster["cluster_n_cells"].astype(np.int64))

    truth = {
        "particle": "truth_pdg_id",
        "e_particle": "truth_e",
        "eta_particle": "truth_eta",
        "phi_particle": "truth_phi",
    }
    per_event: dict[str, np.ndarray] = {}
    for key, field in truth.items():
        if field in ctx.optional:
            branch = ctx.optional[field]
            x = arrays[branch]
            v = _per_event(x, path, branch)
            _check_finite(path, branch, x, _flat(x), entry0)
            per_event[key] = v.astype(np.float64)
        else:
            per_event[key] = np.zeros(n_events)
    per_event["e_particle"] = per_event["e_particle"] * bm.energy_scale
    if "event_number" in ctx.optional:
        branch = ctx.optional["event_number"]
        x = arrays[branch]
        if x.ndim != 1:
            raise SchemaError(f"{path}: branch {branch!r} holds lists; expected one event number per entry")
        per_event["event"] = _as_int64(path, branch, ak.to_numpy(x))
    else:
        per_event["event"] = entry0 + np.arange(n_events, dtype=np.int64)

    scalars = {
        "e_em": e_em * bm.energy_scale,
        "e_true": per_cluster["cluster_e_calib_tot"].astype(np.float64) * bm.energy_scale,
        "eta": per_cluster["cluster_eta"],
        "phi": per_cluster["cluster_phi"],
        "n_cells_total": n_total,
        "cluster_index": cluster_index,
        **{k: v[event_of_cluster] for k, v in per_event.items()},
    }
    scalars = {k: np.asarray(scalars[k]).astype(dt) for k, dt in SCALAR_FIELDS.items()}
    keep = n_cell > 0
    dropped = int((~keep).sum())
    if dropped:
        logger.info(
            "dropped %d cluster(s) without cells at entries %d-%d of %s",
            dropped,
            entry0,
            entry0 + n_events - 1,
            path,
        )
    try:
        return ClusterBatch(
            cells=cells[keep],
            cell_id=cell_id[keep],
            n_cells=np.minimum(n_cell, max_cells).astype(np.int32)[keep],
            scalars={k: v[keep] for k, v in scalars.items()},
        )
    except DataError as exc:
        raise type(exc)(f"{path} [entries {entry0}:{entry0 + n_events}]: {exc}") from None


def _prepare(path: Path, file: Any, bm: BranchMap, max_cells: int) -> tuple[Any, list[str], _Context]:
    if max_cells < 1:
        raise ConfigError(f"max_cells={max_cells} must be at least 1")
    tree = _tree(path, file, bm.event_tree, "event_tree")
    present = _branch_names(path, tree)
    names = bm._event_names()
    required = {f: names[f] for f in ("cluster_e", "cluster_e_calib_tot", "cluster_eta", "cluster_phi")}
    required.update({"cell_id": bm.cell_id, "cell_e": bm.cell_e})
    _missing_required(path, bm.event_tree, present, required)
    optional_fields = (
        "cluster_n_cells",
        "cell_hits_e_em",
        "cell_hits_e_nonem",
        "truth_e",
        "truth_eta",
        "truth_phi",
        "truth_pdg_id",
        "event_number",
    )
    optional: dict[str, str] = {}
    for field in optional_fields:
        branch = names.get(field)
        if branch is None:
            continue
        if branch in present:
            optional[field] = branch
        else:
            logger.warning(
                "%s: tree %r has no branch %r; reading without it (set %s to null in the branch map to silence this)",
                path,
                bm.event_tree,
                branch,
                field,
            )
    geometry = _read_geometry(path, file, bm)
    ctx = _Context(path=path, branches=bm, geometry=geometry, optional=optional, max_cells=max_cells)
    return tree, [*required.values(), *optional.values()], ctx


def read_mltree(
    path: str | os.PathLike[str],
    *,
    branches: BranchMap | None = None,
    max_cells: int = 256,
    entry_start: int | None = None,
    entry_stop: int | None = None,
) -> ClusterBatch:
    """Read an MLTree file (or the events ``entry_start`` to ``entry_stop``) into one batch.

    Args:
        path: ROOT file.
        branches: Tree and branch names and unit scales; the ATLAS defaults when None.
        max_cells: Cells kept per cluster, highest EM-scale energy first.
        entry_start: First event entry to read (default: the first).
        entry_stop: Entry after the last one to read (default: the end).

    Returns:
        The clusters of the events read, in file order.

    Raises:
        InputFileError: The file is missing, not a ROOT file, corrupt or truncated.
        SchemaError: A tree or required branch is missing, branches disagree in their nesting, or a cell ID is
            not in the geometry tree.
        NonFiniteError: A NaN or inf value; the message names the branch and the entry.
    """
    bm = branches or BranchMap()
    with _open(path) as (p, file):
        tree, names, ctx = _prepare(p, file, bm, max_cells)
        with _reading(p):
            start, stop = _entry_range(tree, entry_start, entry_stop)
            arrays = tree.arrays(filter_name=names, entry_start=start, entry_stop=stop, library="ak")
        return _convert(arrays, start, ctx)


def _entry_range(tree: Any, entry_start: int | None, entry_stop: int | None) -> tuple[int, int]:
    start, stop, _ = slice(entry_start, entry_stop).indices(int(tree.num_entries))
    return start, max(start, stop)


def iter_mltree(
    path: str | os.PathLike[str],
    *,
    step_size: int | str = 10_000,
    branches: BranchMap | None = None,
    max_cells: int = 256,
    entry_start: int | None = None,
    entry_stop: int | None = None,
) -> Iterator[ClusterBatch]:
    """Stream an MLTree file as batches of the clusters of ``step_size`` events.

    Only one step of events is in memory at a time. Steps without clusters yield nothing. Arguments and errors
    as in :func:`read_mltree`; ``step_size`` is a number of events or a size such as ``"100 MB"``. The file is
    opened and checked when iteration starts, so errors are raised by the first ``next()``.
    """
    bm = branches or BranchMap()
    if isinstance(step_size, int) and step_size < 1:
        raise ConfigError(f"step_size={step_size} must be at least 1 event")
    with _open(path) as (p, file):
        tree, names, ctx = _prepare(p, file, bm, max_cells)
        with _reading(p):
            start, stop = _entry_range(tree, entry_start, entry_stop)
            steps = tree.iterate(
                filter_name=names,
                step_size=step_size,
                entry_start=start,
                entry_stop=stop,
                library="ak",
                report=True,
            )
        while True:
            with _reading(p):
                item = next(steps, None)
            if item is None:
                return
            arrays, report = item
            batch = _convert(arrays, int(report.tree_entry_start), ctx)
            if len(batch):
                yield batch


# -- writing -------------------------------------------------------------------------------------------------
def _lists(values: np.ndarray | ak.Array, counts: np.ndarray) -> ak.Array:
    if isinstance(values, np.ndarray):
        values = np.ascontiguousarray(values)
    return ak.unflatten(values, counts)


def write_mltree(
    path: str | os.PathLike[str],
    batch: ClusterBatch,
    *,
    branches: BranchMap | None = None,
    overwrite: bool = False,
) -> None:
    """Write a batch as an MLTree-style ROOT file (RNTuples; see the module docstring).

    Clusters are grouped into one entry per ``event`` number, events in increasing order and clusters in
    ``cluster_index`` order. The truth particle of an event is taken from its first cluster. The geometry tree
    holds every cell ID seen, once. The file appears at ``path`` only when fully written.

    Raises:
        FileExistsRefusedError: ``path`` exists and ``overwrite`` is False.
        DataError: The batch is empty, invalid, or gives one cell ID two different geometries.
    """
    bm = branches or BranchMap()
    with atomic_output(path, overwrite=overwrite) as partial:  # refuses an existing path before any work
        batch.validate()
        if len(batch) == 0:
            raise DataError(f"no clusters to write to {path}; give a batch with at least one cluster")
        event_data, geo_data = _mltree_arrays(batch, bm)
        with uproot.recreate(partial) as file:
            file[bm.event_tree] = event_data
            file[bm.geometry_tree] = geo_data
    n_events = len(np.unique(batch.scalars["event"]))
    logger.info("wrote %d clusters in %d events to %s", len(batch), n_events, path)


def _mltree_arrays(batch: ClusterBatch, bm: BranchMap) -> tuple[dict[str, Any], dict[str, Any]]:
    """The event-tree and geometry-tree columns of a non-empty batch, in file units."""
    order = np.lexsort((batch.scalars["cluster_index"], batch.scalars["event"]))
    b = batch.select(order)
    events, first, n_cl = np.unique(b.scalars["event"], return_index=True, return_counts=True)
    mask = b.mask
    cell_values = b.cells[mask]  # [total, F], cluster by cluster
    cell_ids = b.cell_id[mask]
    n_cells = b.n_cells.astype(np.int64)
    e_scale, l_scale = bm.energy_scale, bm.length_scale

    def energy(x: np.ndarray) -> np.ndarray:
        return (x.astype(np.float64) / e_scale).astype(np.float32)

    def per_cell(x: np.ndarray) -> ak.Array:
        return _lists(_lists(x, n_cells), n_cl)

    col = {name: i for i, name in enumerate(CELL_FIELDS)}
    s = b.scalars
    event_data: dict[str, Any] = {
        bm.cluster_e: _lists(energy(s["e_em"]), n_cl),
        bm.cluster_e_calib_tot: _lists(energy(s["e_true"]), n_cl),
        bm.cluster_eta: _lists(s["eta"].astype(np.float32), n_cl),
        bm.cluster_phi: _lists(s["phi"].astype(np.float32), n_cl),
        bm.cell_id: per_cell(cell_ids.astype(np.int64)),
        bm.cell_e: per_cell(energy(cell_values[:, col["e"]])),
    }
    if bm.cluster_n_cells is not None:
        event_data[bm.cluster_n_cells] = _lists(s["n_cells_total"].astype(np.int32), n_cl)
    if bm.cell_hits_e_em is not None:
        event_data[bm.cell_hits_e_em] = per_cell(energy(cell_values[:, col["e_true"]]))
    if bm.cell_hits_e_nonem is not None:
        event_data[bm.cell_hits_e_nonem] = per_cell(np.zeros(len(cell_ids), np.float32))
    one = np.ones(len(events), np.int64)
    truth = {
        bm.truth_e: energy(s["e_particle"][first]),
        bm.truth_eta: s["eta_particle"][first].astype(np.float32),
        bm.truth_phi: s["phi_particle"][first].astype(np.float32),
        bm.truth_pdg_id: s["particle"][first].astype(np.int32),
    }
    event_data.update({name: _lists(v, one) for name, v in truth.items() if name is not None})
    if bm.event_number is not None:
        event_data[bm.event_number] = events.astype(np.int64)

    uniq, first_cell, inverse = np.unique(cell_ids, return_index=True, return_inverse=True)
    geo = cell_values[:, 2:]
    differ = (geo != geo[first_cell][inverse]).any(axis=1)
    if differ.any():
        raise DataError(
            f"cell ID {cell_ids[np.flatnonzero(differ)[0]]} has two different geometries in the batch; "
            "a cell ID must always map to the same eta, phi, sampling, r, deta, dphi and sigma"
        )
    g = {name: geo[first_cell, i] for i, name in enumerate(_GEO_FIELDS)}
    geo_data = {
        bm.geo_id: uniq.astype(np.int64),
        bm.geo_sampling: np.rint(g["sampling"]).astype(np.int32),
        bm.geo_eta: g["eta"].astype(np.float32),
        bm.geo_phi: g["phi"].astype(np.float32),
        bm.geo_r: (g["r"].astype(np.float64) / l_scale).astype(np.float32),
        bm.geo_deta: g["deta"].astype(np.float32),
        bm.geo_dphi: g["dphi"].astype(np.float32),
        bm.geo_sigma: energy(g["sigma"]),
    }
    return event_data, {name: _lists(v, np.array([len(uniq)])) for name, v in geo_data.items()}
