"""Cluster files of either format: detect HDF5 or ROOT, read scalars from either, and convert ROOT to HDF5.

Users bring ATLAS MLTree ntuples (ROOT), often as many files; every later stage reads calohls HDF5.
``calohls convert`` streams them, file after file and step after step, into one HDF5 file with
:func:`convert_mltree`, recording each input (path, size, entries), the branch map, the selection and the counts
of dropped clusters in the output's ``config``. Every input is checked (trees, branches, geometry) before any
cluster is written; the output appears only when the conversion succeeds.
"""

from __future__ import annotations

import glob
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from calohls.data.hdf5 import ClusterWriter, open_clusters
from calohls.data.root import BranchMap, MLTreeInfo, StepCounts, inspect_mltree, iter_mltree, iter_mltree_steps
from calohls.data.schema import STORED_CELLS, ClusterBatch, cell_field_index
from calohls.data.selection import ClusterSelection
from calohls.errors import CalohlsError, ConfigError, InputFileError
from calohls.files import why_not_a_file

__all__ = [
    "DEFAULT_STEP_SIZE",
    "ConvertProgress",
    "ConvertResult",
    "SkippedInput",
    "convert_mltree",
    "detect_format",
    "expand_inputs",
    "parse_step_size",
    "read_cell_truth",
    "read_scalars",
    "root_to_hdf5",
]

log = logging.getLogger(__name__)

_MAGIC = {b"\x89HDF\r\n\x1a\n": "hdf5", b"root": "root"}

#: Events read at a time, as uproot counts them: the in-memory size of the branches read.
DEFAULT_STEP_SIZE = "100 MB"

_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kMGT]i?B|B)\s*$", re.IGNORECASE)


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


def parse_step_size(text: str | int) -> int | str:
    """A step size as uproot takes it: a number of events (``10000``) or a size (``"100MB"`` → ``"100 MB"``).

    Raises:
        ConfigError: Neither a positive whole number nor a size with a unit (B, kB, MB, GB, KiB, MiB, GiB).
    """
    if isinstance(text, int) or str(text).strip().isdigit():
        n = int(text)
        if n < 1:
            raise ConfigError(f"step size {text!r} must be at least 1 event; give e.g. 10000 or 100MB")
        return n
    m = _SIZE.match(str(text))
    if not m or float(m[1]) <= 0:
        raise ConfigError(
            f"step size {text!r} is neither a number of events nor a size; give e.g. 10000 (events) or 100MB"
        )
    return f"{m[1]} {m[2]}"


def _folder_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and ".root" in p.name)
    if not files:
        raise InputFileError(f"folder {folder} holds no .root files; give the files or a folder that holds them")
    return files


def expand_inputs(sources: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """The input files named by paths, folders (their ``*.root*`` files, sorted) and glob patterns (sorted).

    Raises:
        InputFileError: No sources, a pattern that matches nothing, a folder without ROOT files, or a file given
            twice.
    """
    paths: list[Path] = []
    for source in sources:
        text = os.fspath(source)
        p = Path(text)
        if p.is_dir():
            paths.extend(_folder_files(p))
        elif not p.exists() and glob.has_magic(text):
            matches = sorted(glob.glob(text))
            if not matches:
                raise InputFileError(f"no file matches {text!r}; check the pattern")
            paths.extend(Path(m) for m in matches)
        else:
            paths.append(p)
    if not paths:
        raise InputFileError("no input files; give at least one MLTree ROOT file, folder or pattern")
    seen: dict[str, Path] = {}
    for p in paths:
        key = os.path.abspath(p)
        if key in seen:
            raise InputFileError(f"{p} is given twice; give each input once (its clusters would be written twice)")
        seen[key] = p
    return paths


# -- records -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SkippedInput:
    """An input left out by ``skip_bad``, and why (the one-line error)."""

    path: str
    reason: str

    def to_json(self) -> dict[str, str]:
        """A JSON-ready dict."""
        return {"path": self.path, "reason": self.reason}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SkippedInput:
        """Inverse of :meth:`to_json`."""
        return cls(path=str(data["path"]), reason=str(data["reason"]))


@dataclass(frozen=True)
class ConvertProgress:
    """Where a conversion stands, passed to the ``progress`` callback after every step."""

    file_index: int  # 0-based index of the input being read
    n_files: int
    path: str
    events_done: int  # over all inputs
    events_total: int
    clusters: int  # written so far


@dataclass(frozen=True)
class ConvertResult:
    """What :func:`convert_mltree` wrote: the inputs read and skipped, the counts, the options."""

    output: str
    inputs: tuple[MLTreeInfo, ...]
    skipped: tuple[SkippedInput, ...]
    counts: StepCounts
    max_cells: int
    step_size: int | str
    selection: tuple[str, ...]
    branches: Mapping[str, Any]

    @property
    def clusters(self) -> int:
        """Clusters written."""
        return self.counts.kept

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict; stored as the output's ``config`` (inverse: :meth:`from_json`)."""
        return {
            "converted_by": "calohls convert",
            "output": self.output,
            "inputs": [info.to_json() for info in self.inputs],
            "skipped": [s.to_json() for s in self.skipped],
            "counts": self.counts.to_json(),
            "max_cells": self.max_cells,
            "step_size": self.step_size,
            "selection": list(self.selection),
            "branches": dict(self.branches),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ConvertResult:
        """Inverse of :meth:`to_json`."""
        return cls(
            output=str(data["output"]),
            inputs=tuple(MLTreeInfo.from_json(d) for d in data["inputs"]),
            skipped=tuple(SkippedInput.from_json(d) for d in data["skipped"]),
            counts=StepCounts.from_json(data["counts"]),
            max_cells=int(data["max_cells"]),
            step_size=data["step_size"],
            selection=tuple(data["selection"]),
            branches=dict(data["branches"]),
        )


# -- conversion ----------------------------------------------------------------------------------------------
class _ConvertWriter(ClusterWriter):
    """A cluster writer that can take back the clusters of an input that failed part-way (``skip_bad``) and that
    stores the provenance, known only at the end, as its ``config``."""

    def rollback(self, n: int) -> None:
        """Drop every cluster after the first ``n``."""
        self.truncate(n)

    def set_config(self, text: str) -> None:
        """Store ``text`` (YAML) as the ``config`` attribute."""
        assert self._file is not None
        self._file.attrs["config"] = text


@dataclass(frozen=True)
class _Options:
    branches: BranchMap
    geometry: str | os.PathLike[str] | None
    max_cells: int
    step_size: int | str
    selection: ClusterSelection
    skip_bad: bool


def _check_inputs(paths: Sequence[Path], opts: _Options) -> tuple[list[MLTreeInfo], list[SkippedInput]]:
    """Every input's trees and branches, checked before anything is written; with ``skip_bad`` the bad ones are
    listed instead of raised."""
    infos: list[MLTreeInfo] = []
    skipped: list[SkippedInput] = []
    for p in paths:
        try:
            if detect_format(p) != "root":
                raise InputFileError(f"{p} is not a ROOT file; `calohls convert` reads MLTree ROOT ntuples")
            infos.append(inspect_mltree(p, branches=opts.branches, geometry=opts.geometry))
        except CalohlsError as exc:
            if not opts.skip_bad:
                raise
            log.warning("skipping %s: %s", p, exc)
            skipped.append(SkippedInput(str(p), str(exc)))
    if not infos:
        raise InputFileError(f"none of the {len(paths)} inputs can be read; the first: {skipped[0].reason}")
    return infos, skipped


def _convert_one(
    writer: _ConvertWriter,
    info: MLTreeInfo,
    opts: _Options,
    report: Callable[[int], None],
) -> StepCounts:
    """Stream one input into the writer; ``report`` gets the events read so far of this input."""
    counts = StepCounts()
    for step in iter_mltree_steps(
        info.path,
        step_size=opts.step_size,
        branches=opts.branches,
        max_cells=opts.max_cells,
        geometry=opts.geometry,
        selection=opts.selection,
    ):
        for batch in step.batches():
            writer.append(batch)
        counts += step.counts
        report(step.entry_stop)
    return counts


def _stream(
    writer: _ConvertWriter,
    infos: Sequence[MLTreeInfo],
    opts: _Options,
    progress: Callable[[ConvertProgress], None] | None,
) -> tuple[StepCounts, list[MLTreeInfo], list[SkippedInput]]:
    """Every input into the writer, file after file: the summed counts, the inputs read and those skipped."""
    total, read, skipped = StepCounts(), [], []
    events_total, events_before = sum(i.entries for i in infos), 0
    for k, info in enumerate(infos):

        def report(events: int, k: int = k, info: MLTreeInfo = info, before: int = events_before) -> None:
            if progress is not None:
                done = before + events
                progress(ConvertProgress(k, len(infos), info.path, done, events_total, writer.n_clusters))

        n0 = writer.n_clusters
        try:
            counts = _convert_one(writer, info, opts, report)
        except CalohlsError as exc:
            if not opts.skip_bad:
                raise
            writer.rollback(n0)
            log.warning("skipping %s: %s", info.path, exc)
            skipped.append(SkippedInput(info.path, str(exc)))
        else:
            total += counts
            read.append(info)
        events_before += info.entries
        report(info.entries)
    return total, read, skipped


def convert_mltree(
    sources: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    branches: BranchMap | None = None,
    geometry: str | os.PathLike[str] | None = None,
    max_cells: int = STORED_CELLS,
    step_size: int | str = DEFAULT_STEP_SIZE,
    selection: ClusterSelection | None = None,
    skip_bad: bool = False,
    overwrite: bool = False,
    progress: Callable[[ConvertProgress], None] | None = None,
) -> ConvertResult:
    """Stream MLTree ROOT files into one calohls HDF5 cluster file.

    Args:
        sources: Files, folders (their ``*.root*`` files) and glob patterns, read in the order given.
        output: HDF5 file to write (atomically; refused if it exists unless ``overwrite``).
        branches: Tree and branch names and unit scales (the MLTree defaults when None).
        geometry: A separate file with the geometry tree (``cell_geo.root``) for every input; when None each
            input's own geometry tree.
        max_cells: Cells kept per cluster, highest EM-scale energy first.
        step_size: Events read at a time: a number, or a size such as ``"100 MB"`` (uproot's convention).
        selection: Rules every written cluster passes.
        skip_bad: Leave out inputs that cannot be read (listed in the result) instead of failing.
        overwrite: Replace ``output`` if it exists.
        progress: Called after every step with a :class:`ConvertProgress`.

    Returns:
        The inputs read and skipped, the counts of clusters written and dropped, and the options; the same is
        stored as the output's ``config``.

    Raises:
        FileExistsRefusedError: ``output`` exists and ``overwrite`` is False.
        InputFileError: An input is missing, not ROOT, corrupt, or lacks a tree or branch (without ``skip_bad``);
            or no cluster is left to write. Nothing is written then.
        DataError: Implausible energies or noise for the branch map's unit scales, or invalid values.
    """
    opts = _Options(
        branches=branches or BranchMap(),
        geometry=geometry,
        max_cells=max_cells,
        step_size=parse_step_size(step_size),
        selection=selection or ClusterSelection(),
        skip_bad=skip_bad,
    )
    writer = _ConvertWriter(output, max_cells, overwrite=overwrite)  # refuses an existing output before any work
    infos, skipped = _check_inputs(expand_inputs(sources), opts)
    with writer:
        counts, read, failed = _stream(writer, infos, opts, progress)
        if counts.kept == 0:
            raise InputFileError(
                f"no clusters to write from {len(read)} input(s) ({counts.clusters} read, {counts.no_cells} without "
                f"cells, {sum(counts.selected_out.values())} selected out); check the inputs, the tree and branch "
                "names (--branch-map) and --select"
            )
        result = ConvertResult(
            output=str(output),
            inputs=tuple(read),
            skipped=(*skipped, *failed),
            counts=counts,
            max_cells=max_cells,
            step_size=opts.step_size,
            selection=tuple(opts.selection.to_json()),
            branches=opts.branches.model_dump(mode="json"),
        )
        writer.set_config(yaml.safe_dump(result.to_json(), sort_keys=False))
    log.info("converted %d clusters from %d file(s) to %s", counts.kept, len(read), output)
    return result


def root_to_hdf5(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    branches: BranchMap | None = None,
    max_cells: int = STORED_CELLS,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Stream one MLTree ROOT file into a calohls HDF5 cluster file; returns the number of clusters written.

    A shorthand of :func:`convert_mltree` for one input; ``progress`` is called with the clusters written since
    its last call.
    """
    if detect_format(source) != "root":
        raise InputFileError(f"{source} is not a ROOT file; `calohls convert` reads MLTree ROOT ntuples")
    written = [0]

    def report(p: ConvertProgress) -> None:
        if progress is not None and p.clusters > written[0]:
            progress(p.clusters - written[0])
            written[0] = p.clusters

    result = convert_mltree(
        [source], output, branches=branches, max_cells=max_cells, overwrite=overwrite, progress=report
    )
    return result.clusters


# -- reading either format -----------------------------------------------------------------------------------
def read_scalars(
    path: str | os.PathLike[str],
    names: Sequence[str],
    *,
    branches: BranchMap | None = None,
    geometry: str | os.PathLike[str] | None = None,
    max_cells: int = STORED_CELLS,
) -> tuple[dict[str, np.ndarray], int]:
    """Scalar fields of every cluster of an HDF5 or MLTree ROOT file, and the file's ``max_cells``."""
    if detect_format(path) == "hdf5":
        with open_clusters(path) as f:
            return f.read_scalars(list(names)), f.max_cells
    parts = [
        {k: b.scalars[k] for k in names}
        for b in iter_mltree(path, branches=branches, max_cells=max_cells, geometry=geometry)
    ]
    if not parts:
        raise InputFileError(f"{path} holds no clusters with cells; check the tree and branch names (--branch-map)")
    return {k: np.concatenate([p[k] for p in parts]) for k in names}, max_cells


def read_cell_truth(
    path: str | os.PathLike[str],
    *,
    branches: BranchMap | None = None,
    geometry: str | os.PathLike[str] | None = None,
    max_cells: int = STORED_CELLS,
    batch_size: int = 8192,
    limit: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per cluster of an HDF5 or MLTree ROOT file: the sum of its stored cells' ``e_true`` (their calibration
    hits), and its ``e_true`` (``ENG_CALIB_TOT``), both in GeV and in file order; only the first ``limit``
    clusters (and a few more, up to the end of a batch) when ``limit`` is given, since every cell is read."""
    col = cell_field_index("e_true")
    sums: list[np.ndarray] = []
    e_true: list[np.ndarray] = []
    for b in _batches(path, branches, geometry, max_cells, batch_size):  # one batch in memory at a time
        sums.append(b.cells[:, :, col].sum(axis=1, dtype=np.float64))
        e_true.append(b.scalars["e_true"].astype(np.float64))
        if limit is not None and sum(len(x) for x in sums) >= limit:
            break
    if not sums:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(sums), np.concatenate(e_true)


def _batches(
    path: str | os.PathLike[str],
    branches: BranchMap | None,
    geometry: str | os.PathLike[str] | None,
    max_cells: int,
    batch_size: int,
) -> Iterator[ClusterBatch]:
    if detect_format(path) == "hdf5":
        with open_clusters(path) as f:
            yield from f.iter_batches(batch_size)
    else:
        yield from iter_mltree(path, branches=branches, max_cells=max_cells, geometry=geometry)
