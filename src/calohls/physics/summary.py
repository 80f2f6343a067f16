"""What a cluster file holds: counts per particle, energy ranges, truncation and the EM-scale response.

:func:`summarize_file` is the library side of ``calohls inspect``; :func:`summarize_scalars` does the same
work on arrays already in memory. Both return plain JSON-ready dicts (NaN written as ``None``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from calohls.data.convert import detect_format, read_cell_truth, read_scalars
from calohls.data.hdf5 import open_clusters
from calohls.data.root import BranchMap
from calohls.data.schema import PARTICLES
from calohls.errors import InputFileError
from calohls.physics.methods import PARTICLE_GROUPS, ParticleGroup
from calohls.physics.response import DEFAULT_QUANTILES, log_bins, resolution_label, summarize_response

__all__ = [
    "COVERAGE_CLUSTERS",
    "RESPONSE_GROUPS",
    "SUMMARY_FIELDS",
    "hit_coverage",
    "stored_config",
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


def _particle_name(pdg: int) -> str:
    return _PARTICLE_NAMES.get(pdg, f"pdg {pdg}")


def summarize_scalars(
    scalars: Mapping[str, np.ndarray],
    max_cells: int,
    *,
    bins: Any = None,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
    min_count: int = 10,
) -> dict[str, Any]:
    """Summary of clusters given their scalar fields.

    Args:
        scalars: At least the fields of :data:`SUMMARY_FIELDS`, one value per cluster.
        max_cells: Cells stored per cluster; clusters with more (``n_cells_total > max_cells``) count as
            truncated.
        bins: ``E_true`` bin edges of the response; 0.5–500 GeV in three bins per decade if None.
        quantiles: Quantile pair of the resolution.
        min_count: Bins with fewer clusters get no response values.

    Returns:
        A dict with ``n_clusters``, ``n_events``, ``max_cells``, ``truncated`` (``clusters``, ``fraction``,
        ``max_cells_total``), ``particles`` (name → ``pdg``, ``clusters``, ``fraction``), ``energy`` (field
        → ``min``, ``median``, ``max`` in GeV, or None when there are no clusters) and ``response``
        (``quantity``, ``resolution_label``, and ``groups``: key of :data:`RESPONSE_GROUPS` → ``label``,
        ``pdg``, ``clusters`` and the :meth:`ResponseTable.to_dict` fields).
    """
    if bins is None:
        bins = log_bins(0.5, 500.0, per_decade=3)
    n = int(np.asarray(scalars["e_true"]).shape[0])
    particle = np.asarray(scalars["particle"])
    n_total = np.asarray(scalars["n_cells_total"])
    n_truncated = int((n_total > max_cells).sum())

    ids, counts = np.unique(particle, return_counts=True)
    particles = {
        _particle_name(int(pdg)): {"pdg": int(pdg), "clusters": int(c), "fraction": float(c / n)}
        for pdg, c in sorted(zip(ids, counts, strict=True), key=lambda x: (-x[1], x[0]))
    }

    energy: dict[str, dict[str, float] | None] = {}
    for field in _RANGE_FIELDS:
        v = np.asarray(scalars[field], dtype=np.float64)
        energy[field] = {"min": float(v.min()), "median": float(np.median(v)), "max": float(v.max())} if n else None

    masks = {key: np.isin(particle, pdgs) for key, (_, pdgs) in RESPONSE_GROUPS.items()}
    masks = {key: m for key, m in masks.items() if m.any()}
    tables = summarize_response(
        scalars["e_true"], scalars["e_em"], bins, masks, quantiles=quantiles, min_count=min_count
    )
    groups = {
        key: {
            "label": RESPONSE_GROUPS[key][0],
            "pdg": list(RESPONSE_GROUPS[key][1]),
            "clusters": int(masks[key].sum()),
            **table.to_dict(),
        }
        for key, table in tables.items()
    }
    return {
        "n_clusters": n,
        "n_events": int(np.unique(np.asarray(scalars["event"])).shape[0]),
        "max_cells": int(max_cells),
        "truncated": {
            "clusters": n_truncated,
            "fraction": float(n_truncated / n) if n else 0.0,
            "max_cells_total": int(n_total.max()) if n else 0,
        },
        "particles": particles,
        "energy": energy,
        "response": {
            "quantity": "e_em / e_true",
            "resolution_label": resolution_label(quantiles),
            "groups": groups,
        },
    }


def summarize_file(
    path: str | Path,
    *,
    bins: Any = None,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
    min_count: int = 10,
    branches: BranchMap | None = None,
    geometry: str | Path | None = None,
) -> dict[str, Any]:
    """Summary of a cluster file (calohls HDF5 or MLTree ROOT), as printed by ``calohls inspect``.

    Args:
        path: The file.
        branches: Branch names of a ROOT file (the ATLAS MLTree defaults when None).
        geometry: A separate geometry file of a ROOT file (``cell_geo.root``).
        bins: ``E_true`` bin edges of the response; 0.5–500 GeV in three bins per decade if None.
        quantiles: Quantile pair of the resolution.
        min_count: Bins with fewer clusters get no response values.

    Returns:
        ``path``, ``schema_version``, ``config`` (the generating config stored in the file, or None),
        ``hit_coverage`` (see :func:`hit_coverage`; of the first :data:`COVERAGE_CLUSTERS` clusters) and the
        keys of :func:`summarize_scalars`.

    Raises:
        InputFileError: the file is missing or unreadable (or a subclass: bad schema, unknown schema version).
        NonFiniteError: an energy is NaN or inf.
    """
    if detect_format(path) == "hdf5":
        with open_clusters(path) as f:
            head = {"path": str(path), "format": "hdf5", "schema_version": int(f.schema_version), "config": f.config}
    else:
        head = {"path": str(path), "format": "root", "schema_version": None, "config": None}
    scalars, max_cells = read_scalars(path, SUMMARY_FIELDS, branches=branches, geometry=geometry)
    cells, e_true = read_cell_truth(
        path, branches=branches, geometry=geometry, max_cells=max_cells, limit=COVERAGE_CLUSTERS
    )
    coverage = hit_coverage(cells, e_true)
    summary = summarize_scalars(scalars, max_cells, bins=bins, quantiles=quantiles, min_count=min_count)
    return head | summary | {"hit_coverage": coverage}


def hit_coverage(cells_e_true: np.ndarray, e_true: np.ndarray) -> dict[str, Any]:
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
        return {
            "read": len(e_true),
            "clusters": int(ok.sum()),
            "median": None,
            "q16": None,
            "q84": None,
            "has_hits": has_hits,
        }
    q16, median, q84 = np.quantile(cells_e_true[ok] / e_true[ok], [0.16, 0.5, 0.84])
    return {
        "read": len(e_true),
        "clusters": int(ok.sum()),
        "median": float(median),
        "q16": float(q16),
        "q84": float(q84),
        "has_hits": True,
    }


def stored_config(path: str | Path) -> dict[str, Any]:
    """The generating config stored in a cluster file.

    Raises:
        InputFileError: the file cannot be read, or holds no config (not written by ``calohls simulate``).
    """
    if detect_format(path) == "root":
        raise InputFileError(f"{path} is a ROOT file, which holds no generating config; inspect it without --config")
    with open_clusters(path) as f:
        config = f.config
    if config is None:
        raise InputFileError(
            f"{path} holds no generating config (it was not written by 'calohls simulate'); inspect it without --config"
        )
    return dict(config)
