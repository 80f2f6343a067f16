"""Walk a study folder into typed records: whatever calohls wrote there, stage by stage.

A study folder holds (each part optional)::

    study.json, config.yaml      the study's record and resolved config
    data/*.h5                    cluster files (``calohls simulate``)
    runs/<name>/run.json         float training runs (``calohls train``; ``eval/`` from ``calohls evaluate``)
    qat/<name>/run.json          quantization-aware runs (stage ``qat``), with ``pareto.json``
    ptq/ptq.yaml + summary.json  a ``calohls ptq`` output folder
    firmware/<name>/firmware.json
    scan/points.jsonl, answer.json

Folders are recognised by what they hold, not by their names, anywhere below the given folder down to
:data:`MAX_DEPTH` levels, so a folder of run folders (or a single run) works as well as a whole study. Every PNG found
belongs to exactly one record: the artefact folder that holds it most closely, or :attr:`Study.other_figures`.

An artefact that cannot be read (corrupt JSON, a missing file it refers to) becomes a warning on its record, never an
exception: the report shows what it can.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from calohls.errors import CalohlsError, InputFileError
from calohls.model.train import RUN_KIND  # the kind of run.json, declared by its writer

if TYPE_CHECKING:
    from calohls.physics.summary import FileSummary

__all__ = [
    "MAX_DEPTH",
    "ConfigFile",
    "DataFile",
    "Figure",
    "Firmware",
    "PTQResult",
    "Run",
    "Scan",
    "Study",
    "collect_study",
]

log = logging.getLogger(__name__)

#: How many folder levels below the study folder are searched (``study/qat/<name>/eval`` is 3 deep).
MAX_DEPTH = 4
#: Folders never searched: model checkpoints, cached PTQ inputs, Python caches.
SKIP_FOLDERS = frozenset({"checkpoints", "inputs", "__pycache__"})
#: What a study folder is expected to hold; said when a folder holds none of it.
EXPECTED = (
    "study.json, data/*.h5, runs/<name>/run.json, qat/<name>/run.json, ptq/summary.json, "
    "firmware/<name>/firmware.json or scan/points.jsonl"
)
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Figure:
    """A PNG figure found in the study folder."""

    path: Path
    name: str  # path relative to the record's folder, e.g. "eval/response_all.png"
    label: str  # path relative to the study folder
    width: int | None = None  # pixels, from the PNG header; None when the header is not a PNG's
    height: int | None = None


@dataclass(frozen=True)
class ConfigFile:
    """A resolved config (YAML text) shown in the report."""

    label: str
    text: str


@dataclass(frozen=True)
class DataFile:
    """A cluster file and its summary (:func:`calohls.physics.summary.summarize_file`), None when unreadable."""

    path: Path
    label: str
    summary: FileSummary | None
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Run:
    """A training run folder: float (stage ``train``) or quantization-aware (stage ``qat``)."""

    path: Path
    label: str  # path relative to the study folder
    stage: str
    info: dict[str, Any]  # run.json ({} when unreadable)
    history: tuple[dict[str, Any], ...]
    metrics: dict[str, Any] | None  # eval/metrics.json
    pareto: tuple[dict[str, Any], ...] | None  # pareto.json of a QAT run
    figures: tuple[Figure, ...]
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class PTQResult:
    """A ``calohls ptq`` output folder."""

    path: Path
    label: str
    summary: dict[str, Any] | None
    figures: tuple[Figure, ...]
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Firmware:
    """One ``firmware.json``: a design checked against its model and synthesized."""

    path: Path
    label: str  # the folder holding firmware.json, relative to the study folder
    info: dict[str, Any]  # {} when unreadable
    figures: tuple[Figure, ...]
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Scan:
    """A size × precision scan folder: its design points and the answer in words."""

    path: Path
    label: str
    points: tuple[dict[str, Any], ...]
    answer: dict[str, Any] | None
    figures: tuple[Figure, ...]
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Study:
    """Everything found in a study folder."""

    root: Path
    info: dict[str, Any] | None  # study.json
    data: tuple[DataFile, ...]
    runs: tuple[Run, ...]  # stage "train"
    qat: tuple[Run, ...]
    ptq: tuple[PTQResult, ...]
    firmware: tuple[Firmware, ...]
    scans: tuple[Scan, ...]
    configs: tuple[ConfigFile, ...]
    other_figures: tuple[Figure, ...]
    warnings: tuple[str, ...] = ()

    @property
    def figures(self) -> tuple[Figure, ...]:
        """Every PNG of the study folder, each once."""
        owners: Iterable[Any] = (*self.runs, *self.qat, *self.ptq, *self.firmware, *self.scans)
        return tuple(f for owner in owners for f in owner.figures) + self.other_figures

    @property
    def empty(self) -> bool:
        """True when nothing calohls made was found."""
        parts = (self.data, self.runs, self.qat, self.ptq, self.firmware, self.scans)
        return self.info is None and not any(parts)


@dataclass
class _Found:
    """Paths found by the walk, before reading."""

    runs: list[Path] = field(default_factory=list)
    ptq: list[Path] = field(default_factory=list)
    firmware: list[Path] = field(default_factory=list)
    scans: list[Path] = field(default_factory=list)
    pngs: list[Path] = field(default_factory=list)

    @property
    def owners(self) -> list[Path]:
        return [*self.runs, *self.ptq, *self.firmware, *self.scans]


def _walk(root: Path) -> _Found:
    """Find the artefact folders and PNG files below ``root`` (hidden and :data:`SKIP_FOLDERS` folders left out)."""
    found = _Found()
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        depth = len(here.relative_to(root).parts)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIP_FOLDERS and depth < MAX_DEPTH)
        names = set(files)
        if "run.json" in names:
            found.runs.append(here)
        if "ptq.yaml" in names and ({"summary.json", "results.jsonl"} & names):
            found.ptq.append(here)
        if "firmware.json" in names:
            found.firmware.append(here)
        if {"points.jsonl", "answer.json"} & names:
            found.scans.append(here)
        found.pngs += [here / f for f in sorted(files) if f.lower().endswith(".png") and not f.startswith(".")]
    return found


def _label(path: Path, root: Path) -> str:
    rel = path.relative_to(root).as_posix()
    return path.name if rel == "." else rel


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:160] or type(exc).__name__


def _read_json(path: Path, root: Path, warnings: list[str], expect: type = dict) -> Any:
    """The JSON in ``path``, or None with a warning when it is missing, corrupt or not of type ``expect``."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        warnings.append(f"{_label(path, root)}: cannot read it as JSON ({type(exc).__name__}: {_short(exc)})")
        return None
    if not isinstance(value, expect):
        warnings.append(f"{_label(path, root)}: expected a JSON {expect.__name__}, found {type(value).__name__}")
        return None
    return value


def _read_jsonl(path: Path, root: Path, warnings: list[str]) -> tuple[dict[str, Any], ...]:
    """The JSON objects of a JSON-lines file; unreadable lines are left out with one warning."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, ValueError) as exc:
        warnings.append(f"{_label(path, root)}: cannot read it ({type(exc).__name__}: {_short(exc)})")
        return ()
    records, bad = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            bad.append(number)
    if bad:
        warnings.append(f"{_label(path, root)}: {len(bad)} unreadable line(s) left out (line {bad[0]} first)")
    return tuple(records)


def _read_text(path: Path, root: Path, warnings: list[str]) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, ValueError) as exc:
        warnings.append(f"{_label(path, root)}: cannot read it ({type(exc).__name__}: {_short(exc)})")
        return None


def _figure(path: Path, owner: Path, root: Path) -> Figure:
    """A figure, with its pixel size when the file starts like a PNG."""
    width = height = None
    try:
        with path.open("rb") as f:
            head = f.read(24)
        if head.startswith(_PNG_MAGIC) and head[12:16] == b"IHDR":
            width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    except OSError:
        pass
    return Figure(path, path.relative_to(owner).as_posix(), _label(path, root), width, height)


def _assign_figures(found: _Found, root: Path) -> tuple[dict[Path, tuple[Figure, ...]], tuple[Figure, ...]]:
    """Give each PNG to the deepest artefact folder holding it; the rest are returned apart."""
    owners = sorted(found.owners, key=lambda p: len(p.parts), reverse=True)
    by_owner: dict[Path, list[Figure]] = {owner: [] for owner in owners}
    rest = []
    for png in found.pngs:
        owner = next((o for o in owners if png.is_relative_to(o)), None)
        if owner is None:
            rest.append(_figure(png, root, root))
        else:
            by_owner[owner].append(_figure(png, owner, root))
    return {owner: tuple(figs) for owner, figs in by_owner.items()}, tuple(rest)


def _stage_of(run_dir: Path, root: Path, info: dict[str, Any] | None, warnings: list[str]) -> str:
    if info is not None:
        if info.get("kind") != RUN_KIND:
            warnings.append(f"{_label(run_dir / 'run.json', root)}: of kind {info.get('kind')!r}, not {RUN_KIND!r}")
        stage = info.get("stage")
        if isinstance(stage, str) and stage:
            return stage
    return "qat" if "qat" in run_dir.parts[-2:-1] else "train"


def _read_run(run_dir: Path, root: Path, figures: tuple[Figure, ...]) -> Run:
    warnings: list[str] = []
    info = _read_json(run_dir / "run.json", root, warnings)
    stage = _stage_of(run_dir, root, info, warnings)
    history: tuple[dict[str, Any], ...] = ()
    if (run_dir / "history.json").exists():
        rows = _read_json(run_dir / "history.json", root, warnings, expect=list)
        history = tuple(r for r in rows or () if isinstance(r, dict))
    metrics = None
    if (run_dir / "eval" / "metrics.json").exists():
        metrics = _read_json(run_dir / "eval" / "metrics.json", root, warnings)
    pareto = None
    if (run_dir / "pareto.json").exists():
        rows = _read_json(run_dir / "pareto.json", root, warnings, expect=list)
        pareto = tuple(r for r in rows or () if isinstance(r, dict))
    return Run(run_dir, _label(run_dir, root), stage, info or {}, history, metrics, pareto, figures, tuple(warnings))


def _read_ptq(folder: Path, root: Path, figures: tuple[Figure, ...]) -> PTQResult:
    warnings: list[str] = []
    summary = None
    if (folder / "summary.json").exists():
        summary = _read_json(folder / "summary.json", root, warnings)
    else:
        warnings.append(
            f"{_label(folder, root)}: no summary.json, the sweep has not finished (run `calohls ptq` again)"
        )
    return PTQResult(folder, _label(folder, root), summary, figures, tuple(warnings))


def _read_firmware(folder: Path, root: Path, figures: tuple[Figure, ...]) -> Firmware:
    warnings: list[str] = []
    info = _read_json(folder / "firmware.json", root, warnings)
    return Firmware(folder, _label(folder, root), info or {}, figures, tuple(warnings))


def _read_scan(folder: Path, root: Path, figures: tuple[Figure, ...]) -> Scan:
    warnings: list[str] = []
    points: tuple[dict[str, Any], ...] = ()
    if (folder / "points.jsonl").exists():
        points = _read_jsonl(folder / "points.jsonl", root, warnings)
    answer = None
    if (folder / "answer.json").exists():
        answer = _read_json(folder / "answer.json", root, warnings)
    return Scan(folder, _label(folder, root), points, answer, figures, tuple(warnings))


def _data_paths(root: Path, runs: Iterable[Run]) -> list[Path]:
    """The study's cluster files: ``data/*.h5``, else the existing files the runs were trained on."""
    local = sorted((root / "data").glob("*.h5")) if (root / "data").is_dir() else []
    if local:
        return local
    paths: list[Path] = []
    for run in runs:
        data = run.info.get("data")
        path = data.get("path") if isinstance(data, dict) else None
        if isinstance(path, str) and Path(path).is_file() and Path(path) not in paths:
            paths.append(Path(path))
    return paths


def _read_data(path: Path, root: Path) -> DataFile:
    from calohls.physics.summary import summarize_file

    label = _label(path, root) if path.is_relative_to(root) else str(path)
    try:
        summary = summarize_file(path)
    except (CalohlsError, OSError, ValueError, KeyError) as exc:
        return DataFile(path, label, None, (f"{label}: cannot summarise it ({type(exc).__name__}: {_short(exc)})",))
    return DataFile(path, label, summary)


def _yaml_files(root: Path, folder: Path, warnings: list[str]) -> list[ConfigFile]:
    """The YAML files lying directly in ``folder``."""
    out = []
    for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
        if path.is_file() and (text := _read_text(path, root, warnings)) is not None:
            out.append(ConfigFile(path.relative_to(root).as_posix(), text))
    return out


def _configs(
    root: Path,
    study_info: dict[str, Any] | None,
    folders: Iterable[Path],
    data: Iterable[DataFile],
    warnings: list[str],
) -> tuple[ConfigFile, ...]:
    """The configs: the study's, the cluster files' generating configs, then the YAML files of each artefact folder
    (in the order given)."""
    out = _yaml_files(root, root, warnings)
    if not out and isinstance((study_info or {}).get("config"), dict):
        text = yaml.safe_dump(study_info["config"], sort_keys=False, allow_unicode=True)
        out.append(ConfigFile("study.json: config", text))
    for d in data:
        config = d.summary.config if d.summary is not None else None
        if isinstance(config, dict):
            text = yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
            out.append(ConfigFile(f"{d.label} (generating config)", text))
    for folder in dict.fromkeys(folders):
        if folder != root:
            out += _yaml_files(root, folder, warnings)
    return tuple(out)


def collect_study(study_dir: str | os.PathLike[str]) -> Study:
    """Find and read everything calohls made in ``study_dir``.

    Args:
        study_dir: A study folder, or any folder holding run, PTQ, firmware or scan folders.

    Returns:
        The study; :attr:`Study.empty` tells whether anything was found.

    Raises:
        InputFileError: ``study_dir`` is not a folder.
    """
    root = Path(study_dir)
    if not root.is_dir():
        raise InputFileError(f"study folder {root} not found; give the folder a calohls study wrote ({EXPECTED})")
    warnings: list[str] = []
    info = None
    if (root / "study.json").exists():  # an unreadable one still marks a study folder: {} and a warning
        info = _read_json(root / "study.json", root, warnings) or {}
    found = _walk(root)
    figures, rest = _assign_figures(found, root)
    runs = [_read_run(p, root, figures[p]) for p in found.runs]
    data = tuple(_read_data(p, root) for p in _data_paths(root, runs))
    in_order = [r.path for r in runs if r.stage != "qat"] + [r.path for r in runs if r.stage == "qat"]
    in_order += [*found.ptq, *found.firmware, *found.scans]
    configs = _configs(root, info, in_order, data, warnings)
    study = Study(
        root=root,
        info=info,
        data=data,
        runs=tuple(r for r in runs if r.stage != "qat"),
        qat=tuple(r for r in runs if r.stage == "qat"),
        ptq=tuple(_read_ptq(p, root, figures[p]) for p in found.ptq),
        firmware=tuple(_read_firmware(p, root, figures[p]) for p in found.firmware),
        scans=tuple(_read_scan(p, root, figures[p]) for p in found.scans),
        configs=configs,
        other_figures=rest,
        warnings=tuple(warnings),
    )
    log.info(
        "found %d float runs, %d QAT runs, %d PTQ, %d firmware and %d scan folders, %d figures in %s",
        len(study.runs), len(study.qat), len(study.ptq), len(study.firmware), len(study.scans),
        len(study.figures), root,
    )  # fmt: skip
    return study
