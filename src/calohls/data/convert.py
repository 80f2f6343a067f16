"""Cluster files of either format: detect HDF5 or ROOT, read scalars from either, and convert ROOT to HDF5.

Users bring ATLAS MLTree ntuples (ROOT); every later stage reads calohls HDF5. ``calohls convert`` streams one into
the other with :func:`root_to_hdf5`, recording the source file and the branch map in the output's ``config``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import yaml

from calohls.data.hdf5 import ClusterWriter, open_clusters
from calohls.data.root import BranchMap, iter_mltree
from calohls.errors import InputFileError
from calohls.files import why_not_a_file

__all__ = ["detect_format", "read_scalars", "root_to_hdf5"]

log = logging.getLogger(__name__)

_MAGIC = {b"\x89HDF\r\n\x1a\n": "hdf5", b"root": "root"}


def detect_format(path: str | os.PathLike[str]) -> str:
    """``"hdf5"`` or ``"root"``, from the file's first bytes (not its name)."""
    p = Path(path)
    problem = why_not_a_file(p)
    if problem == "not found":
        raise InputFileError(f"cluster file {p} not found; check the path or create it with `calohls simulate`")
    if problem is not None:
        raise InputFileError(f"cluster file {p} {problem}; give the path of a cluster file")
    with p.open("rb") as f:
        head = f.read(8)
    if not head:
        raise InputFileError(f"cluster file {p} is empty (0 bytes); re-create it, or give another file")
    for magic, kind in _MAGIC.items():
        if head.startswith(magic):
            return kind
    raise InputFileError(f"{p} is neither an HDF5 nor a ROOT file (it starts with {head[:4]!r}); give a cluster file")


def read_scalars(
    path: str | os.PathLike[str], names: Sequence[str], *, branches: BranchMap | None = None, max_cells: int = 256
) -> tuple[dict[str, np.ndarray], int]:
    """Scalar fields of every cluster of an HDF5 or MLTree ROOT file, and the file's ``max_cells``."""
    if detect_format(path) == "hdf5":
        with open_clusters(path) as f:
            return f.read_scalars(list(names)), f.max_cells
    parts = [{k: b.scalars[k] for k in names} for b in iter_mltree(path, branches=branches, max_cells=max_cells)]
    if not parts:
        raise InputFileError(f"{path} holds no clusters with cells; check the tree and branch names (--branch-map)")
    return {k: np.concatenate([p[k] for p in parts]) for k in names}, max_cells


def root_to_hdf5(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    branches: BranchMap | None = None,
    max_cells: int = 256,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Stream an MLTree ROOT file into a calohls HDF5 cluster file; returns the number of clusters written.

    Args:
        source: MLTree ROOT file.
        output: HDF5 file to write (atomically; refused if it exists unless ``overwrite``).
        branches: Tree and branch names and unit scales (the ATLAS defaults when None).
        max_cells: Cells kept per cluster, highest EM-scale energy first.
        overwrite: Replace ``output`` if it exists.
        progress: Called with the number of clusters of each converted step.
    """
    if detect_format(source) != "root":
        raise InputFileError(f"{source} is not a ROOT file; `calohls convert` reads MLTree ROOT ntuples")
    bm = branches or BranchMap()
    provenance = {"source": str(Path(source).resolve()), "branches": bm.model_dump(mode="json"), "max_cells": max_cells}
    n = 0
    with ClusterWriter(output, max_cells, overwrite=overwrite, config_yaml=yaml.safe_dump(provenance)) as writer:
        for batch in iter_mltree(source, branches=bm, max_cells=max_cells):
            writer.append(batch)
            n += len(batch)
            if progress:
                progress(len(batch))
        if n == 0:
            raise InputFileError(
                f"{source} holds no clusters with cells; check the tree and branch names (--branch-map)"
            )
    log.info("converted %d clusters from %s to %s", n, source, output)
    return n
