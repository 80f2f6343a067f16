"""ATLAS MLTree ntuples: read into :class:`~calohls.data.schema.ClusterBatch` and written back.

The MLTree layout (atlas-calo-ml/MLTree, ``MLTreeMaker`` and ``CellGeometryTreeMaker``) has two trees:

* an event tree (``EventTree``), one entry per event, with per-cluster lists ``cluster_E`` (EM scale),
  ``cluster_E_LCCalib``, ``cluster_ENG_CALIB_TOT``, ``cluster_Eta``, ``cluster_Phi``, ``cluster_nCells``;
  per-cell lists of lists ``cluster_cell_ID``, ``cluster_cell_E`` and optionally the calibration hits
  ``cluster_cell_hitsE_EM``, ``_nonEM``, ``_Invisible`` and ``_Escaped``; truth particle lists ``truthPartE``,
  ``truthPartEta``, ``truthPartPhi``, ``truthPartPdgId``; and ``eventNumber``;
* a cell geometry tree (``CellGeo``) with one entry holding the vectors ``cell_geo_ID``, ``cell_geo_sampling``
  (ATLAS ``CaloSampling`` numbers), ``cell_geo_eta``, ``cell_geo_phi``, ``cell_geo_rPerp``, ``cell_geo_deta``,
  ``cell_geo_dphi`` and the noise: ``cell_geo_sigma`` (older ``CellGeometryTreeMaker``) or ``cell_geo_totalNoise``
  (newer; ``cell_geo_electronicNoise`` is the last resort). The geometry may sit in the event file (several
  identical entries after ``hadd`` are fine) or in a file of its own (``cell_geo.root``, given as ``geometry``).

Units as MLTreeMaker writes them: energies in GeV (it scales them by 1e-3), the noise in MeV (the noise tool's
unit), lengths in mm; calohls works in GeV and metres. The :class:`BranchMap` gives the branch names and the unit
scales (``energy_scale``, ``noise_scale``, ``length_scale``: multiply a file value by the scale to get calohls
units), and can be loaded from YAML to read files with other names or units. Unless ``check_units`` is off, a
file whose median ``cluster_E`` (in GeV, after the scale) lies outside 10 MeV–10 TeV, or whose median noise lies
outside 0.1 MeV–10 GeV, is refused with the scale to set.

Mapping to the cluster record: ``e_em`` = ``cluster_E``, ``e_true`` = ``cluster_ENG_CALIB_TOT``,
``eta``/``phi`` = ``cluster_Eta``/``cluster_Phi``, ``n_cells_total`` = the larger of ``cluster_nCells`` and
the number of cells in the cell lists; per cell ``e`` = ``cluster_cell_E``, ``e_true`` = the sum of the hit
branches the file has (0 without any), and the geometry fields looked up by cell ID in the geometry tree.
Cells are sorted by descending EM-scale energy and the first ``max_cells`` kept. The truth fields come from
the first truth particle of the event (0 when the event or the file has none), ``event`` from ``eventNumber``
(else the entry number), and ``cluster_index`` is the rank of ``cluster_E`` among all clusters of the event
(0 = highest). Clusters without cells are dropped, then those that fail the selection; both are counted in the
:class:`StepCounts` of each step.

Both ROOT ``TTree`` files (as written by ATLAS software) and ``RNTuple`` files are read; a step of events is read
at a time (``step_size``: a number of events or a size such as ``"100 MB"``, uproot's convention) and turned into
batches of at most about :data:`BATCH_BYTES` of padded cells each, so memory does not grow with the file or the
cluster count. :func:`write_mltree` writes RNTuples, the only form in which this uproot version writes lists of
lists; ROOT reads them from version 6.34 on. It stores the stored cells of each cluster (at most ``max_cells``),
``cluster_nCells`` keeps the full count, and the LC-calibrated energy, which the cluster record does not hold, is
not written.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import uproot
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from calohls.config import load_config
from calohls.data.schema import CELL_FIELDS, SCALAR_FIELDS, STORED_CELLS, ClusterBatch
from calohls.data.selection import ClusterSelection
from calohls.errors import ConfigError, DataError, InputFileError, NonFiniteError, SchemaError
from calohls.files import atomic_output, reading, unreadable, why_not_a_file

__all__ = [
    "BATCH_BYTES",
    "HIT_FIELDS",
    "BranchMap",
    "MLTreeInfo",
    "MLTreeStep",
    "StepCounts",
    "inspect_mltree",
    "iter_mltree",
    "iter_mltree_steps",
    "read_mltree",
    "write_mltree",
]

logger = logging.getLogger(__name__)

#: Geometry fields of a cell, in the order of the looked-up table (the last seven of CELL_FIELDS).
_GEO_FIELDS = ("eta", "phi", "sampling", "r", "deta", "dphi", "sigma")
assert CELL_FIELDS[2:] == _GEO_FIELDS

#: Branch-map keys of the cell calibration-hit branches; the cell's ``e_true`` is the sum of those present.
HIT_FIELDS = ("cell_hits_e_em", "cell_hits_e_nonem", "cell_hits_e_invisible", "cell_hits_e_escaped")

#: Largest padded block (cells and cell IDs) of one batch: a step of events is cut into batches of this size.
BATCH_BYTES = 32 << 20

# Plausible medians, GeV: of cluster_E (a pion sample's clusters lie near 0.1-100 GeV) and of the cell noise
# (ATLAS cells: tens of MeV, some hundreds); outside, the scale is off by 10^3.
_E_RANGE = (1e-2, 1e4)
_NOISE_RANGE = (1e-4, 10.0)
_UNITS = {1e-3: "MeV", 1.0: "GeV", 1e3: "TeV"}


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
    cell_hits_e_invisible: str | None = Field("cluster_cell_hitsE_Invisible", description="invisible hits")
    cell_hits_e_escaped: str | None = Field("cluster_cell_hitsE_Escaped", description="escaped-energy hits")
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
    geo_sigma: tuple[str, ...] = Field(
        ("cell_geo_sigma", "cell_geo_totalNoise", "cell_geo_electronicNoise"),
        min_length=1,
        description="cell noise: the first of these branches that the geometry tree has",
    )
    # units: multiply a file value by the scale to get GeV or metres
    energy_scale: float = Field(1.0, gt=0, description="file energy unit in GeV (1.0: GeV, as MLTreeMaker)")
    noise_scale: float = Field(1e-3, gt=0, description="file noise unit in GeV (1e-3: MeV, the noise tool's)")
    length_scale: float = Field(1e-3, gt=0, description="file length unit in metres (1e-3 for mm)")
    check_units: bool = Field(True, description="refuse implausible median cluster energies and noise")

    @field_validator("geo_sigma", mode="before")
    @classmethod
    def _one_or_more(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value

    @field_validator("geo_sigma")
    @classmethod
    def _not_blank(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(not name for name in value):
            raise ValueError("geo_sigma holds an empty branch name")
        return value

    @model_validator(mode="after")
    def _distinct(self) -> BranchMap:
        if self.event_tree == self.geometry_tree:
            raise ValueError(f"event_tree and geometry_tree are both {self.event_tree!r}; give distinct trees")
        geo = {**self._geo_names(), **{f"geo_sigma[{i}]": b for i, b in enumerate(self.geo_sigma)}}
        for names in (self._event_names(), geo):
            seen: dict[str, str] = {}
            for key, branch in names.items():
                if branch in seen:
                    raise ValueError(f"{seen[branch]} and {key} both name branch {branch!r}; give distinct names")
                seen[branch] = key
        return self

    def _event_names(self) -> dict[str, str]:
        keys = (
            "cluster_e",
            "cluster_e_lc",
            "cluster_e_calib_tot",
            "cluster_eta",
            "cluster_phi",
            "cluster_n_cells",
            "cell_id",
            "cell_e",
            *HIT_FIELDS,
            "truth_e",
            "truth_eta",
            "truth_phi",
            "truth_pdg_id",
            "event_number",
        )
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}

    def _geo_names(self) -> dict[str, str]:
        """The geometry branches but the noise (which has alternatives)."""
        keys = ("geo_id", *(f"geo_{g}" for g in _GEO_FIELDS if g != "sigma"))
        return {k: getattr(self, k) for k in keys}

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> BranchMap:
        """Load a branch map from a YAML mapping; keys left out keep their defaults.

        Raises:
            ConfigError: The file is missing, not YAML, or holds an unknown key or a bad value.
        """
        return load_config(cls, Path(path))


# -- records -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MLTreeInfo:
    """What an MLTree file holds, found by :func:`inspect_mltree` before any data are read.

    Attributes:
        path: The event file.
        size: Its size in bytes.
        entries: Events in its event tree.
        geometry: The file the cell geometry is read from (``path`` itself or a separate one).
        noise_branch: The geometry branch read as the cell noise.
        hit_branches: The cell calibration-hit branches found (their sum is the cell ``e_true``).
        missing: Optional branches named in the branch map that the file lacks.
    """

    path: str
    size: int
    entries: int
    geometry: str
    noise_branch: str
    hit_branches: tuple[str, ...]
    missing: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (inverse: :meth:`from_json`)."""
        return {
            "path": self.path,
            "size": self.size,
            "entries": self.entries,
            "geometry": self.geometry,
            "noise_branch": self.noise_branch,
            "hit_branches": list(self.hit_branches),
            "missing": list(self.missing),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MLTreeInfo:
        """Inverse of :meth:`to_json`."""
        return cls(
            path=str(data["path"]),
            size=int(data["size"]),
            entries=int(data["entries"]),
            geometry=str(data["geometry"]),
            noise_branch=str(data["noise_branch"]),
            hit_branches=tuple(data["hit_branches"]),
            missing=tuple(data.get("missing", ())),
        )


@dataclass(frozen=True)
class StepCounts:
    """Clusters of a step of events (or, added up, of a whole conversion) and why some were dropped.

    Attributes:
        events: Events read.
        clusters: Clusters read.
        no_cells: Clusters dropped because they have no cells.
        selected_out: Per selection rule (its label), the clusters it dropped.
        kept: Clusters kept.
        calib_tot_nonpositive: Kept clusters with ``ENG_CALIB_TOT`` ≤ 0 (−1: the moment is missing), which
            have no calibration target.
    """

    events: int = 0
    clusters: int = 0
    no_cells: int = 0
    selected_out: Mapping[str, int] = field(default_factory=dict)
    kept: int = 0
    calib_tot_nonpositive: int = 0

    def __add__(self, other: StepCounts) -> StepCounts:
        rules = {**self.selected_out}
        for rule, n in other.selected_out.items():
            rules[rule] = rules.get(rule, 0) + n
        return StepCounts(
            events=self.events + other.events,
            clusters=self.clusters + other.clusters,
            no_cells=self.no_cells + other.no_cells,
            selected_out=rules,
            kept=self.kept + other.kept,
            calib_tot_nonpositive=self.calib_tot_nonpositive + other.calib_tot_nonpositive,
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (inverse: :meth:`from_json`)."""
        return {
            "events": self.events,
            "clusters": self.clusters,
            "no_cells": self.no_cells,
            "selected_out": dict(self.selected_out),
            "kept": self.kept,
            "calib_tot_nonpositive": self.calib_tot_nonpositive,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StepCounts:
        """Inverse of :meth:`to_json`."""
        return cls(**{**data, "selected_out": dict(data.get("selected_out", {}))})


# -- reading: files and trees --------------------------------------------------------------------------------
_HINT = "the file is not a ROOT file, or is corrupt or truncated: re-create or copy it again"
_TREE_CLASSES = ("TTree", "ROOT::RNTuple")


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


def _tree(path: Path, file: Any, name: str, key: str, fix: str | None = None) -> Any:
    with _reading(path):
        classes = {k.rsplit(";", 1)[0]: cls for k, cls in file.classnames().items()}
    cls = classes.get(name)
    if cls is None:
        trees = sorted(k for k, c in classes.items() if c in _TREE_CLASSES)
        raise SchemaError(
            f"{path} has no tree {name!r} (trees: {', '.join(trees) or 'none'}); "
            f"{fix or f'set {key} in the branch map to the right tree'}"
        )
    if cls not in _TREE_CLASSES:
        raise SchemaError(f"{path}: {name!r} is a {cls}, not a tree; set {key} in the branch map to a tree")
    with _reading(path):
        return file[name]


def _branch_names(path: Path, tree: Any) -> set[str]:
    with _reading(path):
        return set(tree.keys())


def _missing_required(path: Path, tree_name: str, present: set[str], names: Mapping[str, str]) -> None:
    for key, branch in names.items():
        if branch not in present:
            raise SchemaError(
                f"{path}: tree {tree_name!r} has no branch {branch!r} (needed for {key}); fix {key} in the branch map"
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


def _as_int64(path: Path, name: str, values: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "u" and values.size and values.max() > np.iinfo(np.int64).max:
        raise SchemaError(f"{path}: branch {name!r} holds IDs above 2^63-1; calohls stores cell IDs as int64")
    if values.dtype.kind not in "iu":
        raise SchemaError(f"{path}: branch {name!r} has type {values.dtype}, expected integers; fix the branch map")
    return values.astype(np.int64)


def _unit_error(path: Path, what: str, median: float, key: str, scale: float) -> DataError:
    """A refusal of an implausible median: the scale that would bring it into range, and how to override."""
    low = median < (_E_RANGE[0] if key == "energy_scale" else _NOISE_RANGE[0])
    better = scale * (1e3 if low else 1e-3)
    unit = next((u for s, u in _UNITS.items() if np.isclose(s, better)), f"units of {better:g} GeV")
    return DataError(
        f"{path}: median {what} is {median * 1e3:.3g} MeV after {key}={scale:g}, implausibly "
        f"{'low' if low else 'high'}; the file looks like {unit}: set {key}: {better:g} in the branch map "
        "(--branch-map), or turn the check off (--no-unit-check, check_units: false) if these values are right"
    )


def _check_median(path: Path, what: str, values: np.ndarray, key: str, bm: BranchMap) -> None:
    """Refuse values whose median magnitude (GeV) is outside the plausible range of ``key``'s quantity."""
    if not bm.check_units or values.size == 0:
        return
    lo, hi = _E_RANGE if key == "energy_scale" else _NOISE_RANGE
    median = float(np.median(np.abs(values)))
    if not lo <= median <= hi:
        raise _unit_error(path, what, median, key, getattr(bm, key))


# -- reading: the cell geometry ------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Geometry:
    ids: np.ndarray  # sorted int64 [G]
    table: np.ndarray  # float32 [G, 7] in _GEO_FIELDS order, calohls units
    noise_branch: str


def _geometry_tree(path: Path, file: Any, bm: BranchMap, separate: bool) -> tuple[Any, str]:
    """The geometry tree (checked for its branches) and the name of its noise branch."""
    fix = None
    if not separate:
        fix = "give the geometry file (e.g. cell_geo.root) with --geometry FILE, or set geometry_tree in the branch map"
    tree = _tree(path, file, bm.geometry_tree, "geometry_tree", fix)
    present = _branch_names(path, tree)
    _missing_required(path, bm.geometry_tree, present, bm._geo_names())
    noise = next((name for name in bm.geo_sigma if name in present), None)
    if noise is None:
        tried = " or ".join(repr(name) for name in bm.geo_sigma)
        raise SchemaError(
            f"{path}: tree {bm.geometry_tree!r} has no branch {tried} (needed for geo_sigma); "
            "fix geo_sigma in the branch map"
        )
    if noise == "cell_geo_electronicNoise":
        logger.warning("%s: cell noise from %r: electronic noise only, without pile-up noise", path, noise)
    return tree, noise


def _geometry_columns(path: Path, tree: Any, names: Mapping[str, str]) -> dict[str, np.ndarray]:
    """Every named geometry branch as one flat array (all entries joined), checked finite and equally long."""
    with _reading(path):
        arrays = tree.arrays(filter_name=list(names.values()), library="ak")
    flat = {}
    for key, branch in names.items():
        x = arrays[branch]
        values = _flat(x)
        _check_finite(path, branch, x, values, 0)
        flat[key] = values
    if len({len(v) for v in flat.values()}) != 1:
        lengths = ", ".join(f"{names[k]}={len(v)}" for k, v in flat.items())
        raise SchemaError(f"{path}: geometry branches differ in length ({lengths}); each needs one value per cell")
    return flat


def _without_duplicates(path: Path, tree_name: str, ids: np.ndarray, table: np.ndarray) -> _Geometry:
    """Sorted by ID; identical duplicates (geometry entries of files merged by hadd) are dropped."""
    order = np.argsort(ids, kind="stable")
    ids, table = ids[order], table[order]
    dup = np.flatnonzero(ids[1:] == ids[:-1])
    if dup.size:
        differ = (table[dup + 1] != table[dup]).any(axis=1)
        if differ.any():
            raise SchemaError(
                f"{path}: cell ID {ids[dup[differ][0]]} appears in {tree_name!r} with different geometries; "
                "fix the file"
            )
        keep = np.ones(len(ids), bool)
        keep[dup + 1] = False
        ids, table = ids[keep], table[keep]
    return _Geometry(ids=ids, table=table, noise_branch="")


@functools.lru_cache(maxsize=4)
def _load_geometry(path: str, stamp: tuple[int, int], bm: BranchMap, separate: bool) -> _Geometry:
    """The cell geometry of a file in calohls units; cached by path and modification (``stamp``)."""
    with _open(path) as (p, file):
        tree, noise = _geometry_tree(p, file, bm, separate)
        flat = _geometry_columns(p, tree, {**bm._geo_names(), "geo_sigma": noise})
    scale = {"r": bm.length_scale, "sigma": bm.noise_scale}
    columns = [flat[f"geo_{g}"].astype(np.float64) * scale.get(g, 1.0) for g in _GEO_FIELDS]
    _check_median(p, f"cell noise {noise!r}", columns[-1], "noise_scale", bm)
    ids = _as_int64(p, bm.geo_id, flat["geo_id"])
    geo = _without_duplicates(p, bm.geometry_tree, ids, np.stack(columns, axis=1).astype(np.float32))
    return _Geometry(ids=geo.ids, table=geo.table, noise_branch=noise)


def _geometry(path: Path, bm: BranchMap, separate: bool) -> _Geometry:
    st = path.stat()
    return _load_geometry(str(path), (st.st_mtime_ns, st.st_size), bm, separate)


# -- reading: the event tree ---------------------------------------------------------------------------------
_REQUIRED = ("cluster_e", "cluster_e_calib_tot", "cluster_eta", "cluster_phi", "cell_id", "cell_e")
_OPTIONAL = ("cluster_n_cells", *HIT_FIELDS, "truth_e", "truth_eta", "truth_phi", "truth_pdg_id", "event_number")


@dataclass(frozen=True)
class _Context:
    path: Path
    branches: BranchMap
    geometry: _Geometry
    optional: dict[str, str]  # present optional branches: key -> branch
    max_cells: int
    selection: ClusterSelection


def _event_tree(path: Path, file: Any, bm: BranchMap) -> tuple[Any, dict[str, str], dict[str, str], list[str]]:
    """The event tree, its required branches, the optional ones it has, and the optional ones it lacks."""
    tree = _tree(path, file, bm.event_tree, "event_tree")
    present = _branch_names(path, tree)
    names = bm._event_names()
    required = {k: names[k] for k in _REQUIRED}
    _missing_required(path, bm.event_tree, present, required)
    optional = {k: names[k] for k in _OPTIONAL if k in names and names[k] in present}
    missing = [k for k in _OPTIONAL if k in names and names[k] not in present]
    return tree, required, optional, missing


def _inspect(
    path: Path, file: Any, bm: BranchMap, geometry: str | os.PathLike[str] | None
) -> tuple[MLTreeInfo, Any, dict[str, str], dict[str, str]]:
    tree, required, optional, missing = _event_tree(path, file, bm)
    if geometry is None:
        geo_path, (_, noise) = path, _geometry_tree(path, file, bm, separate=False)
    else:
        with _open(geometry) as (geo_path, geo_file):
            _, noise = _geometry_tree(geo_path, geo_file, bm, separate=True)
    with _reading(path):
        entries = int(tree.num_entries)
    names = bm._event_names()
    info = MLTreeInfo(
        path=str(path),
        size=path.stat().st_size,
        entries=entries,
        geometry=str(geo_path),
        noise_branch=noise,
        hit_branches=tuple(optional[k] for k in HIT_FIELDS if k in optional),
        missing=tuple(names[k] for k in missing),
    )
    return info, tree, required, optional


def inspect_mltree(
    path: str | os.PathLike[str],
    *,
    branches: BranchMap | None = None,
    geometry: str | os.PathLike[str] | None = None,
) -> MLTreeInfo:
    """Check an MLTree file's trees and branches (no data are read) and say what it holds.

    Args:
        path: The event file.
        branches: Tree and branch names (the MLTree defaults when None).
        geometry: A separate file with the geometry tree (``cell_geo.root``); the event file itself when None.

    Raises:
        InputFileError: A file is missing, not a ROOT file, corrupt or truncated.
        SchemaError: A tree or required branch is missing.
    """
    bm = branches or BranchMap()
    with _open(path) as (p, file):
        return _inspect(p, file, bm, geometry)[0]


def _log_missing(path: Path, bm: BranchMap, info: MLTreeInfo) -> None:
    """Say which optional branches a file lacks: a warning, but for the hit branches (older files lack some)."""
    names = bm._event_names()
    for key in _OPTIONAL:
        if key in names and names[key] in info.missing and key not in HIT_FIELDS:
            logger.warning(
                "%s: tree %r has no branch %r; reading without it (set %s to null in the branch map to silence this)",
                path,
                bm.event_tree,
                names[key],
                key,
            )
    if info.hit_branches:
        logger.info("%s: cell e_true from %s", path, " + ".join(info.hit_branches))
    else:
        logger.warning("%s: no cell calibration-hit branches (%s); cell e_true is 0", path, ", ".join(info.missing))


def _prepare(
    path: Path,
    file: Any,
    bm: BranchMap,
    max_cells: int,
    geometry: str | os.PathLike[str] | None,
    selection: ClusterSelection | None,
) -> tuple[Any, list[str], _Context]:
    if max_cells < 1:
        raise ConfigError(f"max_cells={max_cells} must be at least 1")
    info, tree, required, optional = _inspect(path, file, bm, geometry)
    geo = _geometry(Path(info.geometry), bm, separate=geometry is not None)
    _log_missing(path, bm, info)
    ctx = _Context(
        path=path,
        branches=bm,
        geometry=geo,
        optional=optional,
        max_cells=max_cells,
        selection=selection or ClusterSelection(),
    )
    return tree, [*required.values(), *optional.values()], ctx


# -- reading: a step of events -------------------------------------------------------------------------------
def _cluster_branches(arrays: ak.Array, entry0: int, ctx: _Context) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The per-cluster branches as flat arrays, and the clusters per event."""
    path, bm = ctx.path, ctx.branches
    names = {k: getattr(bm, k) for k in ("cluster_e", "cluster_e_calib_tot", "cluster_eta", "cluster_phi")}
    if "cluster_n_cells" in ctx.optional:
        names["cluster_n_cells"] = ctx.optional["cluster_n_cells"]
    per_cluster: dict[str, np.ndarray] = {}
    n_cl: np.ndarray | None = None
    for key, branch in names.items():
        x = arrays[branch]
        if x.ndim != 2:
            raise SchemaError(
                f"{path}: branch {branch!r} has {x.ndim - 1} list levels per event; expected one list of "
                f"clusters per event: fix {key} in the branch map"
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
        per_cluster[key] = _flat(x)
        _check_finite(path, branch, x, per_cluster[key], entry0)
    assert n_cl is not None
    return per_cluster, n_cl


def _cell_counts(x: ak.Array, branch: str, key: str, n_cl: np.ndarray, entry0: int, ctx: _Context) -> np.ndarray:
    """Cells per cluster of a per-cell branch, after checking its nesting against the clusters per event."""
    path, bm = ctx.path, ctx.branches
    if x.ndim != 3:
        raise SchemaError(
            f"{path}: branch {branch!r} has {x.ndim - 1} list levels per event; expected a list of cells "
            f"per cluster (two levels): fix {key} in the branch map"
        )
    counts_cl = ak.to_numpy(ak.num(x, axis=1))
    if not np.array_equal(counts_cl, n_cl):
        i = int(np.flatnonzero(counts_cl != n_cl)[0])
        raise SchemaError(
            f"{path}: branch {branch!r} has {counts_cl[i]} clusters at entry {entry0 + i} but "
            f"{bm.cluster_e!r} has {n_cl[i]}; the cell branches must have one list per cluster"
        )
    return ak.to_numpy(ak.flatten(ak.num(x, axis=2), axis=None))


def _cell_branches(
    arrays: ak.Array, entry0: int, ctx: _Context, n_cl: np.ndarray
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The per-cell branches as flat arrays (cluster by cluster), and the cells per cluster."""
    bm = ctx.branches
    names = {"cell_id": bm.cell_id, "cell_e": bm.cell_e}
    names.update({k: ctx.optional[k] for k in HIT_FIELDS if k in ctx.optional})
    per_cell: dict[str, np.ndarray] = {}
    n_cell: np.ndarray | None = None
    for key, branch in names.items():
        x = arrays[branch]
        counts = _cell_counts(x, branch, key, n_cl, entry0, ctx)
        if n_cell is None:
            n_cell = counts
        elif not np.array_equal(counts, n_cell):
            j = int(np.flatnonzero(counts != n_cell)[0])
            entry = entry0 + int(np.searchsorted(np.cumsum(n_cl), j, side="right"))
            raise SchemaError(
                f"{ctx.path}: branch {branch!r} has {counts[j]} cells in a cluster at entry {entry} but "
                f"{bm.cell_id!r} has {n_cell[j]}; the cell branches must have one value per cell"
            )
        per_cell[key] = _flat(x)
        _check_finite(ctx.path, branch, x, per_cell[key], entry0)
    assert n_cell is not None
    return per_cell, n_cell.astype(np.int64)


def _geometry_rows(ids: np.ndarray, event_of_cell: np.ndarray, entry0: int, ctx: _Context) -> np.ndarray:
    """Row of each cell in the geometry table; an ID the geometry lacks is an error."""
    geo = ctx.geometry
    pos = np.minimum(np.searchsorted(geo.ids, ids), max(len(geo.ids) - 1, 0))
    known = geo.ids[pos] == ids if len(geo.ids) else np.zeros(len(ids), bool)
    if not known.all():
        j = int(np.flatnonzero(~known)[0])
        raise SchemaError(
            f"{ctx.path}: cell ID {ids[j]} (branch {ctx.branches.cell_id!r}, entry {entry0 + int(event_of_cell[j])}) "
            f"is not in the geometry tree {ctx.branches.geometry_tree!r}; the geometry is incomplete, of another "
            "detector description, or the branch map names the wrong tree"
        )
    return pos


def _cell_values(per_cell: Mapping[str, np.ndarray], pos: np.ndarray, ctx: _Context) -> np.ndarray:
    """Per cell, the fields of CELL_FIELDS in calohls units: energy, the sum of the hits, the geometry."""
    scale = ctx.branches.energy_scale
    values = np.empty((len(pos), len(CELL_FIELDS)), np.float32)
    values[:, 0] = per_cell["cell_e"].astype(np.float64) * scale
    e_true = np.zeros(len(pos))
    for key in HIT_FIELDS:
        if key in per_cell:
            e_true += per_cell[key]
    values[:, 1] = e_true * scale
    values[:, 2:] = ctx.geometry.table[pos]
    return values


def _per_event(x: ak.Array, path: Path, name: str) -> np.ndarray:
    """A per-event value: a plain number per entry, or the first element of a list per entry (0 if empty)."""
    if x.ndim == 1:
        return ak.to_numpy(x)
    if x.ndim == 2:
        return ak.to_numpy(ak.fill_none(ak.firsts(x, axis=1), 0))
    raise SchemaError(f"{path}: branch {name!r} has {x.ndim - 1} list levels per event; expected at most one")


_TRUTH = {"particle": "truth_pdg_id", "e_particle": "truth_e", "eta_particle": "truth_eta", "phi_particle": "truth_phi"}


def _event_scalars(arrays: ak.Array, entry0: int, ctx: _Context) -> dict[str, np.ndarray]:
    """The per-event fields of the cluster record: truth particle and event number."""
    path, n_events = ctx.path, len(arrays)
    per_event: dict[str, np.ndarray] = {}
    for name, key in _TRUTH.items():
        if key not in ctx.optional:
            per_event[name] = np.zeros(n_events)
            continue
        branch = ctx.optional[key]
        x = arrays[branch]
        _check_finite(path, branch, x, _flat(x), entry0)
        per_event[name] = _per_event(x, path, branch).astype(np.float64)
    per_event["e_particle"] = per_event["e_particle"] * ctx.branches.energy_scale
    if "event_number" in ctx.optional:
        branch = ctx.optional["event_number"]
        x = arrays[branch]
        if x.ndim != 1:
            raise SchemaError(f"{path}: branch {branch!r} holds lists; expected one event number per entry")
        per_event["event"] = _as_int64(path, branch, ak.to_numpy(x))
    else:
        per_event["event"] = entry0 + np.arange(n_events, dtype=np.int64)
    return per_event


def _cluster_scalars(
    per_cluster: Mapping[str, np.ndarray],
    per_event: Mapping[str, np.ndarray],
    n_cl: np.ndarray,
    n_cell: np.ndarray,
    scale: float,
) -> dict[str, np.ndarray]:
    """Every field of SCALAR_FIELDS per cluster, in calohls units and dtypes."""
    n_clusters = len(n_cell)
    event_of_cluster = np.repeat(np.arange(len(n_cl)), n_cl)
    e_em = per_cluster["cluster_e"].astype(np.float64)
    by_rank = np.lexsort((-e_em, event_of_cluster))
    cluster_start = np.cumsum(n_cl) - n_cl
    cluster_index = np.empty(n_clusters, np.int64)
    cluster_index[by_rank] = np.arange(n_clusters) - cluster_start[event_of_cluster[by_rank]]
    n_total = n_cell
    if "cluster_n_cells" in per_cluster:
        n_total = np.maximum(n_total, per_cluster["cluster_n_cells"].astype(np.int64))
    scalars = {
        "e_em": e_em * scale,
        "e_true": per_cluster["cluster_e_calib_tot"].astype(np.float64) * scale,
        "eta": per_cluster["cluster_eta"],
        "phi": per_cluster["cluster_phi"],
        "n_cells_total": n_total,
        "cluster_index": cluster_index,
        **{k: v[event_of_cluster] for k, v in per_event.items()},
    }
    return {k: np.asarray(scalars[k]).astype(dt) for k, dt in SCALAR_FIELDS.items()}


@dataclass(frozen=True)
class _Flat:
    """A step's clusters in flat form: the cells of all clusters one after another, cluster by cluster."""

    values: np.ndarray  # float32 [cells, F], CELL_FIELDS
    ids: np.ndarray  # int64 [cells]
    n_cell: np.ndarray  # int64 [clusters]
    cell_start: np.ndarray  # int64 [clusters], index of each cluster's first cell
    scalars: Mapping[str, np.ndarray]  # SCALAR_FIELDS, [clusters]
    kept: np.ndarray  # int64 indices of the clusters kept


def _dense(flat: _Flat, clusters: np.ndarray, max_cells: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The padded ``cells``, ``cell_id`` and ``n_cells`` of some clusters, cells by descending EM-scale energy."""
    n = flat.n_cell[clusters]
    local = np.repeat(np.arange(len(clusters)), n)
    rank = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
    idx = np.repeat(flat.cell_start[clusters], n) + rank
    idx = idx[np.lexsort((-flat.values[idx, 0], local))]  # clusters stay in place: rank is unchanged
    stored = rank < max_cells
    cells = np.zeros((len(clusters), max_cells, len(CELL_FIELDS)), np.float32)
    cell_id = np.full((len(clusters), max_cells), -1, np.int64)
    cells[local[stored], rank[stored]] = flat.values[idx[stored]]
    cell_id[local[stored], rank[stored]] = flat.ids[idx[stored]]
    return cells, cell_id, np.minimum(n, max_cells).astype(np.int32)


@dataclass(frozen=True)
class MLTreeStep:
    """The clusters of a step of events, kept in a compact flat form until :meth:`batches` pads them.

    Attributes:
        path: The event file.
        entry_start: Tree entry of the step's first event.
        entry_stop: Entry after its last event.
        counts: Its clusters, and those dropped and why.
        max_cells: Cells stored per cluster.
    """

    path: str
    entry_start: int
    entry_stop: int
    counts: StepCounts
    max_cells: int
    flat: _Flat = field(repr=False)

    def batches(self, batch_bytes: int = BATCH_BYTES) -> Iterator[ClusterBatch]:
        """The kept clusters as padded batches of at most about ``batch_bytes`` each (at least one cluster)."""
        per = max(1, batch_bytes // (self.max_cells * (len(CELL_FIELDS) * 4 + 8)))
        kept = self.flat.kept
        for i in range(0, len(kept), per):
            yield self._batch(kept[i : i + per])

    def _batch(self, clusters: np.ndarray) -> ClusterBatch:
        cells, cell_id, n_cells = _dense(self.flat, clusters, self.max_cells)
        try:
            return ClusterBatch(
                cells=cells,
                cell_id=cell_id,
                n_cells=n_cells,
                scalars={k: v[clusters] for k, v in self.flat.scalars.items()},
            )
        except DataError as exc:
            raise type(exc)(f"{self.path} [entries {self.entry_start}:{self.entry_stop}]: {exc}") from None


def _keep(
    scalars: Mapping[str, np.ndarray], n_cell: np.ndarray, n_events: int, ctx: _Context
) -> tuple[np.ndarray, StepCounts]:
    """Indices of the clusters kept (with cells, passing the selection) and the step's counts."""
    has_cells = n_cell > 0
    keep, dropped = ctx.selection.apply({k: v[has_cells] for k, v in scalars.items()})
    kept = np.flatnonzero(has_cells)[keep]
    counts = StepCounts(
        events=n_events,
        clusters=len(n_cell),
        no_cells=int((~has_cells).sum()),
        selected_out=dropped,
        kept=len(kept),
        calib_tot_nonpositive=int((scalars["e_true"][kept] <= 0).sum()),
    )
    return kept, counts


def _convert(arrays: ak.Array, entry0: int, ctx: _Context) -> MLTreeStep:
    """A step of events in the MLTree layout; ``entry0`` is the tree entry of the first event."""
    n_events = len(arrays)
    per_cluster, n_cl = _cluster_branches(arrays, entry0, ctx)
    per_cell, n_cell = _cell_branches(arrays, entry0, ctx, n_cl)
    ids = _as_int64(ctx.path, ctx.branches.cell_id, per_cell["cell_id"])
    event_of_cell = np.repeat(np.repeat(np.arange(n_events), n_cl), n_cell)
    values = _cell_values(per_cell, _geometry_rows(ids, event_of_cell, entry0, ctx), ctx)
    del per_cell, event_of_cell
    per_event = _event_scalars(arrays, entry0, ctx)
    scalars = _cluster_scalars(per_cluster, per_event, n_cl, n_cell, ctx.branches.energy_scale)
    kept, counts = _keep(scalars, n_cell, n_events, ctx)
    if counts.no_cells:
        logger.info(
            "dropped %d cluster(s) without cells at entries %d-%d of %s",
            counts.no_cells,
            entry0,
            entry0 + n_events - 1,
            ctx.path,
        )
    flat = _Flat(
        values=values,
        ids=ids,
        n_cell=n_cell,
        cell_start=np.cumsum(n_cell) - n_cell,
        scalars=scalars,
        kept=kept,
    )
    return MLTreeStep(str(ctx.path), entry0, entry0 + n_events, counts, ctx.max_cells, flat)


def _entry_range(tree: Any, entry_start: int | None, entry_stop: int | None) -> tuple[int, int]:
    start, stop, _ = slice(entry_start, entry_stop).indices(int(tree.num_entries))
    return start, max(start, stop)


def iter_mltree_steps(
    path: str | os.PathLike[str],
    *,
    step_size: int | str = "100 MB",
    branches: BranchMap | None = None,
    max_cells: int = STORED_CELLS,
    entry_start: int | None = None,
    entry_stop: int | None = None,
    geometry: str | os.PathLike[str] | None = None,
    selection: ClusterSelection | None = None,
) -> Iterator[MLTreeStep]:
    """Stream an MLTree file step by step (one step of events in memory at a time), with the counts of each.

    Arguments and errors as in :func:`iter_mltree`. Unless the branch map turns ``check_units`` off, the first
    step with clusters is checked for a plausible median ``cluster_E`` (a :class:`DataError` naming
    ``energy_scale`` when it is not).
    """
    bm = branches or BranchMap()
    if isinstance(step_size, int) and step_size < 1:
        raise ConfigError(f"step_size={step_size} must be at least 1 event")
    with _open(path) as (p, file):
        tree, names, ctx = _prepare(p, file, bm, max_cells, geometry, selection)
        with _reading(p):
            start, stop = _entry_range(tree, entry_start, entry_stop)
            steps = tree.iterate(
                filter_name=names, step_size=step_size, entry_start=start, entry_stop=stop, library="ak", report=True
            )
        checked = False
        while True:
            with _reading(p):
                item = next(steps, None)
            if item is None:
                return
            step = _convert(item[0], int(item[1].tree_entry_start), ctx)
            del item
            if not checked and step.counts.clusters:
                _check_median(p, "cluster_E", step.flat.scalars["e_em"], "energy_scale", bm)
                checked = True
            yield step


def iter_mltree(
    path: str | os.PathLike[str],
    *,
    step_size: int | str = "100 MB",
    branches: BranchMap | None = None,
    max_cells: int = STORED_CELLS,
    entry_start: int | None = None,
    entry_stop: int | None = None,
    geometry: str | os.PathLike[str] | None = None,
    selection: ClusterSelection | None = None,
) -> Iterator[ClusterBatch]:
    """Stream an MLTree file as batches of clusters.

    One step of events is in memory at a time, and each step is cut into batches of at most about
    :data:`BATCH_BYTES`. Steps without clusters yield nothing. Arguments and errors as in :func:`read_mltree`;
    ``step_size`` is a number of events or a size such as ``"100 MB"`` (uproot's convention). The file is opened
    and checked when iteration starts, so errors are raised by the first ``next()``.
    """
    for step in iter_mltree_steps(
        path,
        step_size=step_size,
        branches=branches,
        max_cells=max_cells,
        entry_start=entry_start,
        entry_stop=entry_stop,
        geometry=geometry,
        selection=selection,
    ):
        yield from step.batches()


def read_mltree(
    path: str | os.PathLike[str],
    *,
    branches: BranchMap | None = None,
    max_cells: int = STORED_CELLS,
    entry_start: int | None = None,
    entry_stop: int | None = None,
    geometry: str | os.PathLike[str] | None = None,
    selection: ClusterSelection | None = None,
) -> ClusterBatch:
    """Read an MLTree file (or the events ``entry_start`` to ``entry_stop``) into one batch.

    Args:
        path: ROOT file.
        branches: Tree and branch names and unit scales; the MLTree defaults when None.
        max_cells: Cells kept per cluster, highest EM-scale energy first.
        entry_start: First event entry to read (default: the first).
        entry_stop: Entry after the last one to read (default: the end).
        geometry: A separate file with the geometry tree (``cell_geo.root``); the event file itself when None.
        selection: Rules every kept cluster passes (all clusters with cells when None).

    Returns:
        The clusters of the events read, in file order.

    Raises:
        InputFileError: The file is missing, not a ROOT file, corrupt or truncated.
        SchemaError: A tree or required branch is missing, branches disagree in their nesting, or a cell ID is
            not in the geometry tree.
        NonFiniteError: A NaN or inf value; the message names the branch and the entry.
        DataError: The median cluster energy or cell noise is implausible for the unit scales of the branch map.
    """
    parts = list(
        iter_mltree(
            path,
            step_size=1 << 62,
            branches=branches,
            max_cells=max_cells,
            entry_start=entry_start,
            entry_stop=entry_stop,
            geometry=geometry,
            selection=selection,
        )
    )
    return ClusterBatch.concatenate(parts) if parts else ClusterBatch.empty(max_cells)


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
    ``cluster_index`` order. The truth particle of an event is taken from its first cluster. The cell ``e_true``
    is written as the EM hits (the other hit branches as zeros). The geometry tree holds every cell ID seen, once,
    with the noise in the first ``geo_sigma`` branch. The file appears at ``path`` only when fully written.

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
    for name in (bm.cell_hits_e_nonem, bm.cell_hits_e_invisible, bm.cell_hits_e_escaped):
        if name is not None:
            event_data[name] = per_cell(np.zeros(len(cell_ids), np.float32))
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
        bm.geo_sigma[0]: (g["sigma"].astype(np.float64) / bm.noise_scale).astype(np.float32),
    }
    return event_data, {name: _lists(v, np.array([len(uniq)])) for name, v in geo_data.items()}
