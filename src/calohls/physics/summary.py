"""What a cluster file holds: counts per particle, energy ranges, truncation and the EM-scale response.

:func:`summarize_file` is the library side of ``calohls inspect``; :func:`summarize_scalars` does the same
work on arrays already in memory. They return typed records (:class:`FileSummary`, :class:`ScalarSummary`) whose
``to_json`` is the JSON ``calohls inspect --json`` prints (NaN written as ``None``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from calohls.data.convert import detect_format, read_cell_truth, read_scalars
from calohls.data.hdf5 import open_clusters
from calohls.data.root import BranchMap
from calohls.data.schema import PARTICLES
from calohls.physics.methods import PARTICLE_GROUPS, ParticleGroup
from calohls.physics.response import (
    DEFAULT_QUANTILES,
    ResponseTable,
    log_bins,
    resolution_label,
    summarize_response,
)

__all__ = [
    "COVERAGE_CLUSTERS",
    "RESPONSE_GROUPS",
    "SUMMARY_FIELDS",
    "FileSummary",
    "HitCoverage",
    "ScalarSummary",
    "hit_coverage",
    "summarize_file",
    "summarize_scalars",
]

#: Particle groups of the response summary: key → (display label, PDG ids). A group appears only if present.
RESPONSE_GROUPS: dict[str, ParticleGroup] = {key: PARTICLE_GROUPS[key] for key in ("pi0", "pi+-", "gamma")}

#: Scalar fields the summary reads.
SUMMARY_FIELDS: tuple[str, ...] = ("e_true", "e_em", "e_particle", "particle", "n_cells_total", "event")

#: Clusters (the first of the file) whose cells the hit coverage of :func:`summarize_file` reads: every cell is read.
COVERAGE_CLUSTERS = 100_000

_RANGE_FIELDS = ("e_true", "e_em", "e_particle")
_PARTICLE_NAMES = {pdg: name for name, pdg in PARTICLES.items()}


class HitCoverage(NamedTuple):
    """How much of each cluster's ``e_true`` its stored cells' calibration hits hold (:func:`hit_coverage`)."""

    read: int
    clusters: int
    median: float | None
    q16: float | None
    q84: float | None
    has_hits: bool

    def to_json(self) -> dict[str, Any]:
        return self._asdict()


class Truncation(NamedTuple):
    """Clusters with more cells than are stored: how many, their share, and the most cells of any cluster."""

    clusters: int
    fraction: float
    max_cells_total: int

    def to_json(self) -> dict[str, Any]:
        return self._asdict()


class ParticleCount(NamedTuple):
    """Clusters of one particle type: its PDG id, their number and share."""

    pdg: int
    clusters: int
    fraction: float


class EnergyRange(NamedTuple):
    """Smallest, median and largest value of an energy field (GeV)."""

    min: float
    median: float
    max: float


class GroupResponse(NamedTuple):
    """The EM-scale response of one particle group: its label, PDG ids, clusters and binned table."""

    label: str
    pdg: list[int]
    clusters: int
    table: ResponseTable

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "pdg": self.pdg, "clusters": self.clusters, **self.table.to_dict()}


class ResponseSummary(NamedTuple):
    """The EM-scale response per particle group (key of :data:`RESPONSE_GROUPS`, present groups only)."""

    quantity: str
    resolution_label: str
    groups: dict[str, GroupResponse]

    def to_json(self) -> dict[str, Any]:
        groups = {k: g.to_json() for k, g in self.groups.items()}
        return {"quantity": self.quantity, "resolution_label": self.resolution_label, "groups": groups}


@dataclass(frozen=True)
class ScalarSummary:
    """Summary of clusters from their scalar fields (:func:`summarize_scalars`).

    Attributes:
        n_clusters: Clusters.
        n_events: Distinct events.
        max_cells: Cells stored per cluster.
        truncated: Clusters with more cells than stored.
        particles: Particle name → :class:`ParticleCount`, most frequent first.
        energy: Field → its :class:`EnergyRange` (None without clusters).
        response: The EM-scale response per particle group.
    """

    n_clusters: int
    n_events: int
    max_cells: int
    truncated: Truncation
    particles: dict[str, ParticleCount]
    energy: dict[str, EnergyRange | None]
    response: ResponseSummary

    def to_json(self) -> dict[str, Any]:
        """JSON-ready values, NaN written as ``None``."""
        return {
            "n_clusters": self.n_clusters,
            "n_events": self.n_events,
            "max_cells": self.max_cells,
            "truncated": self.truncated.to_json(),
            "particles": {name: p._asdict() for name, p in self.particles.items()},
            "energy": {field: None if r is None else r._asdict() for field, r in self.energy.items()},
            "response": self.response.to_json(),
        }


@dataclass(frozen=True)
class FileSummary:
    """Summary of a cluster file (:func:`summarize_file`), as ``calohls inspect`` prints it.

    Attributes:
        path: The file.
        format: ``hdf5`` or ``root``.
        schema_version: Schema version of an HDF5 file (None for ROOT).
        config: The generating config stored in the file, or None.
        scalars: The summary of its clusters.
        hit_coverage: The hit coverage of its first :data:`COVERAGE_CLUSTERS` clusters.
    """

    path: str
    format: str
    schema_version: int | None
    config: Mapping[str, Any] | None
    scalars: ScalarSummary
    hit_coverage: HitCoverage

    def to_json(self) -> dict[str, Any]:
        """What ``calohls inspect --json`` prints."""
        head = {"path": self.path, "format": self.format, "schema_version": self.schema_version, "config": self.config}
        return head | self.scalars.to_json() | {"hit_coverage": self.hit_coverage.to_json()}


def _particle_name(pdg: int) -> str:
    return _PARTICLE_NAMES.get(pdg, f"pdg {pdg}")


def summarize_scalars(
    scalars: Mapping[str, np.ndarray],
    max_cells: int,
    *,
    bins: Any = None,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
    min_count: int = 10,
) -> ScalarSummary:
    """Summary of clusters given their scalar fields.

    Args:
        scalars: At least the fields of :data:`SUMMARY_FIELDS`, one value per cluster.
        max_cells: Cells stored per cluster; clusters with more (``n_cells_total > max_cells``) count as
            truncated.
        bins: ``E_true`` bin edges of the response; 0.5–500 GeV in three bins per decade if None.
        quantiles: Quantile pair of the resolution.
        min_count: Bins with fewer clusters get no response values.

    Returns:
        The :class:`ScalarSummary`: ``n_clusters``, ``n_events``, ``max_cells``, ``truncated`` (``clusters``,
        ``fraction``, ``max_cells_total``), ``particles`` (name → ``pdg``, ``clusters``, ``fraction``), ``energy``
        (field → ``min``, ``median``, ``max`` in GeV, or None when there are no clusters) and ``response``
        (``quantity``, ``resolution_label``, and ``groups``: key of :data:`RESPONSE_GROUPS` → ``label``, ``pdg``,
        ``clusters`` and the :class:`ResponseTable`).
    """
    if bins is None:
        bins = log_bins(0.5, 500.0, per_decade=3)
    n = int(np.asarray(scalars["e_true"]).shape[0])
    particle = np.asarray(scalars["particle"])
    n_total = np.asarray(scalars["n_cells_total"])
    n_truncated = int((n_total > max_cells).sum())

    ids, counts = np.unique(particle, return_counts=True)
    particles = {
        _particle_name(int(pdg)): ParticleCount(int(pdg), int(c), float(c / n))
        for pdg, c in sorted(zip(ids, counts, strict=True), key=lambda x: (-x[1], x[0]))
    }

    energy: dict[str, EnergyRange | None] = {}
    for field in _RANGE_FIELDS:
        v = np.asarray(scalars[field], dtype=np.float64)
        energy[field] = EnergyRange(float(v.min()), float(np.median(v)), float(v.max())) if n else None

    masks = {key: np.isin(particle, pdgs) for key, (_, pdgs) in RESPONSE_GROUPS.items()}
    masks = {key: m for key, m in masks.items() if m.any()}
    tables = summarize_response(
        scalars["e_true"], scalars["e_em"], bins, masks, quantiles=quantiles, min_count=min_count
    )
    groups = {
        key: GroupResponse(RESPONSE_GROUPS[key][0], list(RESPONSE_GROUPS[key][1]), int(masks[key].sum()), table)
        for key, table in tables.items()
    }
    truncated = Truncation(n_truncated, float(n_truncated / n) if n else 0.0, int(n_total.max()) if n else 0)
    return ScalarSummary(
        n_clusters=n,
        n_events=int(np.unique(np.asarray(scalars["event"])).shape[0]),
        max_cells=int(max_cells),
        truncated=truncated,
        particles=particles,
        energy=energy,
        response=ResponseSummary("e_em / e_true", resolution_label(quantiles), groups),
    )


def summarize_file(
    path: str | Path,
    *,
    bins: Any = None,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
    min_count: int = 10,
    branches: BranchMap | None = None,
    geometry: str | Path | None = None,
) -> FileSummary:
    """Summary of a cluster file (calohls HDF5 or MLTree ROOT), as printed by ``calohls inspect``.

    Args:
        path: The file.
        branches: Branch names of a ROOT file (the ATLAS MLTree defaults when None).
        geometry: A separate geometry file of a ROOT file (``cell_geo.root``).
        bins: ``E_true`` bin edges of the response; 0.5–500 GeV in three bins per decade if None.
        quantiles: Quantile pair of the resolution.
        min_count: Bins with fewer clusters get no response values.

    Returns:
        The :class:`FileSummary`: ``path``, ``format``, ``schema_version``, ``config`` (the generating config
        stored in the file, or None), ``scalars`` (:func:`summarize_scalars`) and ``hit_coverage`` (see
        :func:`hit_coverage`; of the first :data:`COVERAGE_CLUSTERS` clusters).

    Raises:
        InputFileError: the file is missing or unreadable (or a subclass: bad schema, unknown schema version).
        NonFiniteError: an energy is NaN or inf.
    """
    if detect_format(path) == "hdf5":
        with open_clusters(path) as f:
            head = (str(path), "hdf5", int(f.schema_version), f.config)
    else:
        head = (str(path), "root", None, None)
    scalars, max_cells = read_scalars(path, SUMMARY_FIELDS, branches=branches, geometry=geometry)
    cells, e_true = read_cell_truth(
        path, branches=branches, geometry=geometry, max_cells=max_cells, limit=COVERAGE_CLUSTERS
    )
    coverage = hit_coverage(cells, e_true)
    summary = summarize_scalars(scalars, max_cells, bins=bins, quantiles=quantiles, min_count=min_count)
    return FileSummary(*head, summary, coverage)


def hit_coverage(cells_e_true: np.ndarray, e_true: np.ndarray) -> HitCoverage:
    """How much of each cluster's ``e_true`` (``ENG_CALIB_TOT``) its stored cells' calibration hits hold.

    Args:
        cells_e_true: Per cluster, the sum of its stored cells' ``e_true``.
        e_true: Per cluster, its ``e_true``.

    Returns:
        ``read`` (clusters looked at), ``clusters`` (those with ``e_true`` > 0, the only ones counted),
        ``median``, ``q16``, ``q84`` of the ratio (None without such clusters or when no cell has hits), and
        ``has_hits`` (any cell with a non-zero ``e_true``).
    """
    ok = e_true > 0
    has_hits = bool(np.any(cells_e_true != 0))
    if not ok.any() or not has_hits:
        return HitCoverage(len(e_true), int(ok.sum()), None, None, None, has_hits)
    q16, median, q84 = np.quantile(cells_e_true[ok] / e_true[ok], [0.16, 0.5, 0.84])
    return HitCoverage(len(e_true), int(ok.sum()), float(median), float(q16), float(q84), True)
