"""Fingerprints of what a run folder was made from: its cluster file and its own options.

A run folder names its cluster file by path, and later stages (evaluate, ptq, qat from a float run, firmware) read the
test clusters again from that path, or from ``--data``. A file replaced at that path (re-simulated, converted again,
another sample copied over it) would be read silently: the split indices would pick other clusters, and the numbers
would be wrong without any sign. So ``run.json`` records a :class:`DataFingerprint` of the file (its size, its
cluster count and a digest of a sample of its clusters, quick even for a large file) and a digest of ``config.yaml``
(an edited ``target`` would turn every prediction into nonsense); :func:`check_data` and :func:`check_config` refuse
a mismatch. Run folders written before fingerprints existed are read as before, with a log note.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from calohls.errors import DataError, InputFileError

__all__ = [
    "DataFingerprint",
    "RunFingerprints",
    "check_config",
    "check_data",
    "check_inputs_fit",
    "clusters_digest",
    "config_digest",
    "run_fingerprints",
]

log = logging.getLogger(__name__)

#: Clusters whose truth and EM-scale energies enter the sample digest (spread evenly over the file).
SAMPLE_CLUSTERS = 256


@dataclass(frozen=True)
class DataFingerprint:
    """What identifies a cluster file: bytes, clusters, and a digest of the energies of a sample of clusters."""

    size: int
    clusters: int
    sample: str

    @classmethod
    def of(cls, path: str | Path, sample: int = SAMPLE_CLUSTERS) -> DataFingerprint:
        """The fingerprint of the cluster file ``path`` (which the caller has checked to be readable), from the
        energies of ``sample`` clusters spread over it."""
        path = Path(path)
        with h5py.File(path, "r") as f:
            group = f["clusters"]
            n = int(group["e_true"].shape[0])
            index = np.unique(np.linspace(0, max(n - 1, 0), min(n, sample)).astype(np.int64))
            h = hashlib.sha256(str(n).encode())
            for name in ("e_true", "e_em", "event"):
                h.update(np.ascontiguousarray(group[name][index] if n else np.empty(0)).tobytes())
        return cls(size=path.stat().st_size, clusters=n, sample=h.hexdigest()[:16])

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DataFingerprint:
        return cls(size=int(data["size"]), clusters=int(data["clusters"]), sample=str(data["sample"]))


def clusters_digest(path: str | Path, sample: int = 4096) -> str:
    """A digest of the clusters of a file, not of its bytes: the same clusters simulated again (with another
    creation time in the file) have the same digest, other clusters (another seed, another file put in its place)
    another one. From the energies of ``sample`` clusters spread over the file and their count."""
    found = DataFingerprint.of(path, sample)
    return hashlib.sha256(f"{found.clusters}:{found.sample}".encode()).hexdigest()[:16]


def config_digest(text: str) -> str:
    """The digest of a run's ``config.yaml`` text."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RunFingerprints:
    """What a run folder's ``run.json`` records of its inputs: the cluster file's fingerprint, the config's digest."""

    data_fingerprint: DataFingerprint
    config_digest: str

    def to_json(self) -> dict[str, Any]:
        """The entries of ``run.json``: ``data_fingerprint`` and ``config_digest``."""
        return {"data_fingerprint": self.data_fingerprint.to_json(), "config_digest": self.config_digest}


def run_fingerprints(data_path: str | Path, config_text: str) -> RunFingerprints:
    """The fingerprints of a run's inputs (:class:`RunFingerprints`; its ``to_json`` goes into ``run.json``)."""
    return RunFingerprints(DataFingerprint.of(data_path), config_digest(config_text))


def check_data(run_dir: str | Path, info: dict[str, Any], data_path: str | Path) -> None:
    """Refuse a cluster file that is not the one the run was trained on (by its fingerprint in ``run.json``).

    Raises:
        DataError: the file's size, cluster count or sample digest differs from the run's record.
    """
    recorded = info.get("data_fingerprint")
    if not isinstance(recorded, dict):
        log.info("%s records no fingerprint of its cluster file (an older run); %s is not checked", run_dir, data_path)
        return
    try:
        expected = DataFingerprint.from_json(recorded)
    except (KeyError, TypeError, ValueError):
        where = Path(run_dir) / "run.json"
        raise InputFileError(f"{where} has a corrupt data_fingerprint; re-run the training") from None
    found = DataFingerprint.of(data_path)
    if found == expected:
        return
    differ = [
        text
        for text, same in (
            (f"{found.size:,} bytes instead of {expected.size:,}", found.size == expected.size),
            (f"{found.clusters:,} clusters instead of {expected.clusters:,}", found.clusters == expected.clusters),
            ("other energies in a sample of its clusters", found.sample == expected.sample),
        )
        if not same
    ]
    raise DataError(
        f"{data_path} is not the cluster file {run_dir} was trained on ({', '.join(differ)}); give that file "
        "(--data where the command has it, or put it back at its path) or train again on this one"
    )


def check_config(run_dir: str | Path, info: dict[str, Any], text: str) -> None:
    """Refuse a run whose ``config.yaml`` was edited after training (its digest is in ``run.json``).

    Raises:
        InputFileError: the digest of ``text`` differs from the recorded one.
    """
    recorded = info.get("config_digest")
    if recorded is None:
        log.info("%s records no digest of its config.yaml (an older run); it is not checked", run_dir)
        return
    if config_digest(text) != recorded:
        raise InputFileError(
            f"{Path(run_dir) / 'config.yaml'} was changed after training (its digest differs from run.json); the "
            "model was trained with the options it had then: put the file back or train again"
        )


def check_inputs_fit(run_dir: str | Path, input_shape: tuple[Any, ...], scaler: Any, max_cells: int) -> None:
    """Refuse a run folder whose network, feature scaling and config disagree on the inputs (cells × features).

    Raises:
        InputFileError: naming ``features.json`` and what each part of the run expects.
    """
    shape = tuple(input_shape[1:])
    expected = (scaler.max_cells, len(scaler.features))
    if shape != expected or scaler.max_cells != max_cells:
        raise InputFileError(
            f"{Path(run_dir) / 'features.json'} is made for {expected[0]} cells × {expected[1]} features, but the "
            f"network takes {shape} and config.yaml says max_cells={max_cells}; the run folder was edited or mixed "
            "with another: re-run the training"
        )
