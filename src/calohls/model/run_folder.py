"""The run folder: what float training and QAT write, and what every later stage reads.

A run folder holds:

* ``run.json``: what the folder is (``kind: calohls-run``, ``stage: train`` or ``qat``), versions, data file, sizes,
  timing;
* ``config.yaml``: the resolved :class:`~calohls.config.TrainConfig` (or :class:`~calohls.config.QATConfig`);
* ``model.keras``: the model with the best validation loss (QAT: the selected checkpoint);
* ``features.json``: the feature scaling (:class:`~calohls.data.features.FeatureScaler`);
* ``correction.json``: the response correction fitted on the validation clusters
  (:class:`~calohls.model.correction.ResponseCorrection`);
* ``split.npz``: the cluster indices of the train, validation and test sets (split by event, by seed);
* ``history.json``: loss, validation loss and learning rate per epoch.

:func:`write_run_files` writes the files every run has besides the model and history; :func:`open_run` reads a
run back as a :class:`TrainedRun`, and :func:`load_run` only its ``run.json``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from calohls.config import TrainConfig, dump_config
from calohls.data.features import FeatureScaler, cell_features, energy_from_target
from calohls.data.fingerprint import check_config, check_data, check_inputs_fit, run_fingerprints
from calohls.data.schema import ClusterBatch
from calohls.errors import CalohlsError, InputFileError
from calohls.model.correction import ResponseCorrection
from calohls.versions import versions

if TYPE_CHECKING:
    from calohls.model.prepare import PreparedData

__all__ = [
    "RUN_KIND",
    "RUN_STAGES",
    "RunInfo",
    "TrainedRun",
    "check_run_data",
    "load_run",
    "open_run",
    "predict",
    "write_run_files",
]

RUN_KIND = "calohls-run"
#: Stages whose run folders hold a trained model that :func:`open_run` loads.
RUN_STAGES = ("train", "qat")


def predict(
    model: Any, scaler: FeatureScaler, batch: ClusterBatch, *, target_kind: str = "log_e", batch_size: int = 4096
) -> np.ndarray:
    """Calibrated energies (GeV) of the clusters of ``batch``."""
    x = scaler.transform(cell_features(batch, scaler.max_cells))
    return energy_from_target(model.predict(x, batch_size=batch_size, verbose=0), batch["e_em"], target_kind)


def write_run_files(
    staging: Path,
    *,
    stage: str,
    config: TrainConfig,
    data_path: Path,
    prepared: PreparedData,
    model: Any,
    start: float,
    extra: dict[str, Any],
) -> RunInfo:
    """Write the files every run folder has besides the model and history: ``features.json``, ``correction.json``
    (fitted with ``model`` on the validation clusters), ``split.npz``, ``config.yaml`` and ``run.json``.

    ``extra`` (with at least ``epochs``) goes into ``run.json`` after the common keys; returns the :class:`RunInfo`
    written.
    """
    prepared.scaler.save(staging / "features.json")
    data, val = prepared.data, prepared.split["val"]
    y_val = model.predict(prepared.x[val], batch_size=4096, verbose=0)
    e_val = energy_from_target(y_val, data.scalars["e_em"][val], config.target)
    correction = ResponseCorrection.fit(data.scalars["e_true"][val], e_val, min_energy=config.correction_min_energy)
    correction.save(staging / "correction.json")
    np.savez(staging / "split.npz", index=data.index, **prepared.split)
    (staging / "config.yaml").write_text(dump_config(config))
    seconds = time.perf_counter() - start
    info = {
        "kind": RUN_KIND,
        "stage": stage,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": versions(),
        "data": {"path": str(data_path.resolve()), "clusters": int(data.y.size)},
        **run_fingerprints(data_path, (staging / "config.yaml").read_text()).to_json(),
        "model": {"name": model.name, "parameters": _network_parameters(model)},
        "sizes": {k: int(v.size) for k, v in prepared.split.items()},
        **extra,
        "seconds": seconds,
        "train_clusters_per_second": prepared.split["train"].size * extra["epochs"] / max(seconds, 1e-9),
    }
    (staging / "run.json").write_text(json.dumps(info, indent=1))
    return RunInfo(stage, info)


def _network_parameters(model: Any) -> int:
    """Weights and biases of the network (not the bit widths and counters a quantized model also keeps)."""
    return sum(
        int(np.prod(w.shape))
        for layer in model.layers
        for w in (getattr(layer, "kernel", None), getattr(layer, "bias", None))
        if w is not None
    )


@dataclass(frozen=True)
class RunInfo:
    """A run folder's ``run.json``: what later stages read of it, and the whole record (its keys are this module's).

    Attributes:
        stage: ``train`` (float) or ``qat``.
        record: The content of ``run.json``.
    """

    stage: str
    record: Mapping[str, Any]

    @property
    def data_path(self) -> str | None:
        """The cluster file the run was trained on, as ``run.json`` names it (None where it names none)."""
        data = self.record.get("data")
        path = data.get("path") if isinstance(data, Mapping) else None
        return str(path) if path else None

    def to_json(self) -> dict[str, Any]:
        return dict(self.record)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunInfo:
        return cls(str(data.get("stage")), data)


def load_run(run_dir: str | Path, stage: str | tuple[str, ...] = "train") -> RunInfo:
    """The ``run.json`` of a run folder, checked to be of the given stage (or of one of the given stages)."""
    run_dir = Path(run_dir)
    stages = (stage,) if isinstance(stage, str) else tuple(stage)
    made_by = " or ".join(f"`calohls {s}`" for s in stages)
    info_path = run_dir / "run.json"
    if not run_dir.is_dir():
        raise InputFileError(f"run folder {run_dir} not found; give a folder made by {made_by}")
    try:
        info = json.loads(info_path.read_text())
    except FileNotFoundError:
        raise InputFileError(f"{run_dir} is not a calohls run folder (no run.json); give a folder made by "
                             f"{made_by}") from None  # fmt: skip
    except ValueError:
        raise InputFileError(f"{info_path} is corrupt; re-run {made_by}") from None
    if not isinstance(info, dict):
        raise InputFileError(f"{info_path} holds a {type(info).__name__}, not a run record; re-run {made_by}")
    if info.get("kind") != RUN_KIND or info.get("stage") not in stages:
        raise InputFileError(
            f"{run_dir} is a run folder of stage {info.get('stage')!r}, not {' or '.join(map(repr, stages))}; "
            f"give a folder made by {made_by}"
        )
    return RunInfo.from_json(info)


def check_run_data(run_dir: str | Path, info: RunInfo) -> Path:
    """The cluster file a run was trained on (later stages read its test clusters), checked to be still there."""
    path = info.data_path
    if not path:
        raise InputFileError(f"{Path(run_dir) / 'run.json'} names no cluster file; re-run `calohls "
                             f"{info.stage}`")  # fmt: skip
    if not Path(path).is_file():
        raise InputFileError(f"the cluster file {path} that {run_dir} was trained on is gone; put it back at that path")
    check_data(run_dir, info.record, path)
    return Path(path)


@dataclass(frozen=True)
class TrainedRun:
    """Everything a later stage needs from a run folder of float training or QAT (``config`` is then a
    :class:`~calohls.config.QATConfig` and ``model`` is built from HGQ2 layers)."""

    path: Path
    info: dict[str, Any]
    config: TrainConfig
    model: Any  # keras.Model
    scaler: FeatureScaler
    correction: ResponseCorrection
    split: dict[str, np.ndarray]  # index (file positions) and train/val/test (positions into index)

    @property
    def data_path(self) -> Path:
        return Path(self.info["data"]["path"])

    def file_index(self, part: str) -> np.ndarray:
        """File positions of the clusters of ``part`` ("train", "val" or "test")."""
        return self.split["index"][self.split[part]]

    def predict(self, batch: ClusterBatch, *, corrected: bool = True) -> np.ndarray:
        """Calibrated energies (GeV) of the clusters of ``batch``, response-corrected unless told otherwise."""
        e = predict(self.model, self.scaler, batch, target_kind=self.config.target)
        return self.correction.apply(e) if corrected else e


def open_run(run_dir: str | Path, stage: str | tuple[str, ...] = RUN_STAGES) -> TrainedRun:
    """Load a run folder of float training or QAT (checked to be one of ``stage``)."""
    import keras
    import yaml

    from calohls.config import QATConfig, load_config

    run_dir = Path(run_dir)
    info = dict(load_run(run_dir, stage).record)
    schema: type[TrainConfig] = TrainConfig
    if info["stage"] == "qat":
        import hgq  # noqa: F401  (registers the HGQ2 layers with Keras, so that the model loads)

        schema = QATConfig
    try:
        config_text = (run_dir / "config.yaml").read_text()
        config = load_config(schema, yaml.safe_load(config_text))
    except (OSError, yaml.YAMLError, CalohlsError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise InputFileError(f"{run_dir / 'config.yaml'} is missing or corrupt ({reason}); re-run "
                             f"`calohls {info['stage']}`") from None  # fmt: skip
    try:
        with np.load(run_dir / "split.npz") as z:
            split = {k: z[k] for k in ("index", "train", "val", "test")}
        model = keras.saving.load_model(run_dir / "model.keras")
    except (OSError, ValueError, KeyError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise InputFileError(
            f"{run_dir} is incomplete or corrupt ({reason}); re-run `calohls {info['stage']}`"
        ) from None
    check_config(run_dir, info, config_text)
    scaler = FeatureScaler.load(run_dir / "features.json")
    check_inputs_fit(run_dir, model.input_shape, scaler, config.model.max_cells)
    return TrainedRun(run_dir, info, config, model, scaler, ResponseCorrection.load(run_dir / "correction.json"), split)
