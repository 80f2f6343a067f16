"""``calohls train``: fit a DeepSets calibration on a cluster file and save everything in a run folder.

A run folder holds:

* ``run.json``: what the folder is (``kind: calohls-run``, ``stage: train``), versions, data file, sizes, timing;
* ``config.yaml``: the resolved :class:`~calohls.config.TrainConfig`;
* ``model.keras``: the model with the best validation loss; ``checkpoints/`` the best and the last epoch;
* ``features.json``: the feature scaling (:class:`~calohls.data.features.FeatureScaler`);
* ``correction.json``: the response correction fitted on the validation clusters
  (:class:`~calohls.model.correction.ResponseCorrection`);
* ``split.npz``: the cluster indices of the train, validation and test sets (split by event, by seed);
* ``history.json``: loss, validation loss and learning rate per epoch.

The folder is assembled under a temporary name and renamed into place at the end, so a run folder is complete or
absent; an existing one is replaced only with ``overwrite``.

Quantization-aware training (:mod:`calohls.model.qat`) writes the same layout with ``stage: qat``; the data
preparation, the Keras callbacks and the run files are shared from here, and :func:`open_run` reads both.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from calohls.config import TrainConfig, dump_config
from calohls.data.features import (
    E_REF_FLOOR,
    FEATURES,
    FeatureScaler,
    cell_features,
    check_em_scale,
    em_label,
    energy_from_target,
    target,
)
from calohls.data.fingerprint import check_config, check_data, check_inputs_fit, run_fingerprints
from calohls.data.hdf5 import open_clusters
from calohls.data.schema import ClusterBatch
from calohls.errors import CalohlsError, DataError, FileExistsRefusedError, InputFileError
from calohls.files import atomic_folder, write_text_atomic
from calohls.model.convergence import MIN_DELTA, Convergence, convergence
from calohls.model.correction import ResponseCorrection
from calohls.versions import versions

__all__ = [
    "RUN_KIND",
    "RUN_STAGES",
    "PreparedData",
    "TrainResult",
    "TrainedRun",
    "TrainingData",
    "check_run_data",
    "epoch_progress",
    "fit_model",
    "history_callback",
    "load_run",
    "load_training_data",
    "open_run",
    "predict",
    "prepare_training",
    "split_events",
    "train",
    "write_run_files",
]

log = logging.getLogger(__name__)

RUN_KIND = "calohls-run"
#: Stages whose run folders hold a trained model that :func:`open_run` loads.
RUN_STAGES = ("train", "qat")
#: Per-cluster fields kept next to the features (for evaluation and baselines).
KEPT_SCALARS = ("e_true", "e_em", "particle", "event", "cluster_index", "eta", "n_cells_total")


@dataclass(frozen=True)
class TrainingData:
    """Raw features, targets and per-cluster fields of the clusters used (in file order)."""

    x: np.ndarray  # [n, N, F] raw features
    y: np.ndarray  # [n] log10 e_true
    scalars: dict[str, np.ndarray]
    index: np.ndarray  # [n] cluster index in the file


@dataclass(frozen=True)
class TrainResult:
    """What ``train`` did."""

    run_dir: Path
    epochs: int
    best_epoch: int
    best_val_loss: float
    n_train: int
    n_val: int
    n_test: int
    seconds: float
    convergence: Convergence


def load_training_data(
    path: str | Path, max_cells: int, *, target_kind: str = "log_e", max_clusters: int | None = None
) -> TrainingData:
    """Stream a cluster file into network inputs: the ``max_cells`` most energetic cells of each cluster.

    Clusters without positive calibration-hit energy cannot be a log-energy target and are left out (logged).
    """
    xs, ys, index = [], [], []
    scalars: dict[str, list[np.ndarray]] = {k: [] for k in KEPT_SCALARS}
    dropped = 0
    with open_clusters(path) as f:
        stop = f.n_clusters if max_clusters is None else min(max_clusters, f.n_clusters)
        start = 0
        for batch in f.iter_batches(32768, max_cells=max_cells):
            if start >= stop:
                break
            batch = batch.select(slice(0, stop - start))
            good = batch["e_true"] > 0
            dropped += int((~good).sum())
            batch = batch.select(good)
            xs.append(cell_features(batch, max_cells))
            ys.append(target(batch["e_true"], batch["e_em"], target_kind))
            index.append(start + np.flatnonzero(good))
            for k in KEPT_SCALARS:
                scalars[k].append(batch[k])
            start += good.size
    if dropped:
        log.warning("%d clusters without positive e_true left out of %s", dropped, path)
    if not xs or sum(len(y) for y in ys) == 0:
        raise DataError(f"{path} holds no cluster with positive e_true; nothing to train on")
    check_em_scale(path, np.concatenate(scalars["e_em"]))
    return TrainingData(
        x=np.concatenate(xs),
        y=np.concatenate(ys),
        scalars={k: np.concatenate(v) for k, v in scalars.items()},
        index=np.concatenate(index),
    )


def split_events(event: np.ndarray, seed: int, val_fraction: float, test_fraction: float) -> dict[str, np.ndarray]:
    """Train/validation/test cluster indices; all clusters of one event go to the same set."""
    events, inverse = np.unique(event, return_inverse=True)
    u = np.random.default_rng(np.random.SeedSequence([seed, 0x5917])).random(events.size)[inverse]
    test = u < test_fraction
    val = (u >= test_fraction) & (u < test_fraction + val_fraction)
    return {"train": np.flatnonzero(~(test | val)), "val": np.flatnonzero(val), "test": np.flatnonzero(test)}


def predict(
    model: Any, scaler: FeatureScaler, batch: ClusterBatch, *, target_kind: str = "log_e", batch_size: int = 4096
) -> np.ndarray:
    """Calibrated energies (GeV) of the clusters of ``batch``."""
    x = scaler.transform(cell_features(batch, scaler.max_cells))
    return energy_from_target(model.predict(x, batch_size=batch_size, verbose=0), batch["e_em"], target_kind)


@dataclass(frozen=True)
class PreparedData:
    """The clusters of a run, split by event and scaled: what float training and QAT both fit on."""

    data: TrainingData
    split: dict[str, np.ndarray]  # positions into data (train, val, test)
    scaler: FeatureScaler
    x: np.ndarray  # [n, N, F] scaled features

    def part(self, name: str, *, em: bool = False) -> tuple[np.ndarray, Any]:
        """Scaled inputs and targets of ``name`` ("train", "val" or "test"); with ``em`` the targets of a model with
        the auxiliary EM head (:func:`~calohls.model.deepsets.with_em_head`) as a dict."""
        index = self.split[name]
        if not em:
            return self.x[index], self.data.y[index]
        from calohls.model.deepsets import EM_HEAD

        return self.x[index], {"output": self.data.y[index], EM_HEAD: em_label(self.data.scalars["particle"][index])}

    def weights(self, name: str, power: float) -> np.ndarray | None:
        """Per-cluster loss weights of ``name``: E_EM^power (E_EM floored at 0.1 GeV), normalised to a mean of 1
        on the training clusters; None for power 0. A weight rising with energy makes the narrow high-energy
        responses count in a loss that the wide low-energy ones would otherwise dominate."""
        if power == 0:
            return None
        w = np.maximum(self.data.scalars["e_em"].astype(np.float64), E_REF_FLOOR) ** power
        return (w[self.split[name]] / w[self.split["train"]].mean()).astype(np.float32)

    @property
    def output_mean(self) -> float:
        """Mean training target: the initial output bias of the network."""
        return float(self.data.y[self.split["train"]].mean())


def prepare_training(data_path: str | Path, config: TrainConfig) -> PreparedData:
    """Read ``data_path``, split it by event with ``config.seed`` and fit the feature scaling on the training part.

    The same data, seed and fractions give the same split, so float and QAT runs share their test clusters.
    """
    data = load_training_data(
        data_path, config.model.max_cells, target_kind=config.target, max_clusters=config.max_clusters
    )
    split = split_events(data.scalars["event"], config.seed, config.val_fraction, config.test_fraction)
    if config.train_fraction < 1:  # a seeded subset of the training clusters; validation and test stay whole
        train = split["train"]
        rng = np.random.default_rng(np.random.SeedSequence([config.seed, 0x7A1]))
        keep = rng.permutation(train.size)[: max(1, round(config.train_fraction * train.size))]
        split = {**split, "train": np.sort(train[keep])}
    n_train, n_val = split["train"].size, split["val"].size
    if n_train < config.batch_size:
        raise DataError(
            f"only {n_train} training clusters for batch_size={config.batch_size}; "
            "lower --batch-size or use a larger data set"
        )
    if n_val == 0:
        raise DataError(f"no validation clusters among {data.y.size}; use a larger data set or val_fraction")
    scaler = FeatureScaler.fit(data.x[split["train"]])
    return PreparedData(data, split, scaler, scaler.transform(data.x))


def epoch_progress(epochs: int, hide: bool, label: str = "training") -> tuple[Any, Callable[[], None]]:
    """A Keras callback showing one rich progress bar over epochs on stderr, and its closer.

    The status shows the loss and validation loss, and the EBOPs when the logs carry them (QAT).
    """
    import keras
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("epochs  {task.fields[status]}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=hide,
    )
    task = bar.add_task(label, total=epochs, status="")
    bar.start()

    class _Callback(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            logs = logs or {}
            status = f"loss {logs.get('loss', float('nan')):.4f}  val {logs.get('val_loss', float('nan')):.4f}"
            if "ebops" in logs:
                status += f"  EBOPs {logs['ebops']:,.0f}"
            bar.update(task, completed=epoch + 1, status=status)

    return _Callback(), bar.stop


def save_best(network: Any, path: Path) -> Any:
    """A Keras callback saving ``network`` (the deployed model, also when a training model with more outputs is
    fitted around it) whenever the validation loss reaches a new minimum."""
    import keras

    class _Callback(keras.callbacks.Callback):
        best = float("inf")

        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            value = (logs or {}).get("val_loss", float("inf"))
            if value < self.best:
                self.best = value
                network.save(path)

    return _Callback()


def history_callback(path: Path) -> Any:
    """A Keras callback writing every logged value (loss, validation loss, ...) and the learning rate per epoch
    into a JSON file; place it after the callbacks that add to the logs (EBOPs, beta)."""
    import keras

    class _Callback(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.rows: list[dict[str, float]] = []

        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            logs = dict(logs or {})
            lr = self.model.optimizer.learning_rate
            logs["learning_rate"] = float(np.asarray(lr.value if hasattr(lr, "value") else lr))
            self.rows.append({"epoch": epoch + 1, **{k: float(v) for k, v in logs.items()}})
            write_text_atomic(path, json.dumps(self.rows, indent=1))

    return _Callback()


def regression_logs() -> Any:
    """The first callback of a model with the auxiliary EM head: ``loss``/``val_loss`` become the energy
    regression's (so early stopping, the learning-rate schedule, checkpoints, the history and the convergence judge
    the energy), the classification's go to ``em_loss``/``val_em_loss`` and the sums to ``total_loss``."""
    import keras

    from calohls.model.deepsets import EM_HEAD

    class _Callback(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            if logs is None or "output_loss" not in logs:
                return
            for prefix in ("", "val_"):
                logs[f"{prefix}total_loss"] = logs[f"{prefix}loss"]
                logs[f"{prefix}loss"] = logs.pop(f"{prefix}output_loss")
                logs[f"{prefix}em_loss"] = logs.pop(f"{prefix}{EM_HEAD}_loss")

    return _Callback()


def fit_model(
    model: Any,
    prepared: PreparedData,
    config: TrainConfig,
    callbacks: list[Any],
    *,
    hide_progress: bool = True,
    label: str = "training",
) -> dict[str, list[float]]:
    """Fit ``model`` on the training part, validated on the validation part, with a progress bar after
    ``callbacks``; the Keras history (metric → values per epoch)."""
    progress, close_progress = epoch_progress(config.epochs, hide_progress, label)
    em = len(model.outputs) > 1  # the training model with the auxiliary EM head
    try:
        fit = model.fit(
            *prepared.part("train", em=em),
            sample_weight=prepared.weights("train", config.energy_weight),
            validation_data=(*prepared.part("val", em=em), prepared.weights("val", config.energy_weight)),
            epochs=config.epochs,
            batch_size=config.batch_size,
            shuffle=True,
            callbacks=[*([regression_logs()] if em else []), *callbacks, progress],
            verbose=0,
        )
    finally:
        close_progress()
    return fit.history


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
) -> dict[str, Any]:
    """Write the files every run folder has besides the model and history: ``features.json``, ``correction.json``
    (fitted with ``model`` on the validation clusters), ``split.npz``, ``config.yaml`` and ``run.json``.

    ``extra`` (with at least ``epochs``) goes into ``run.json`` after the common keys; the info written is returned.
    """
    prepared.scaler.save(staging / "features.json")
    data, val = prepared.data, prepared.split["val"]
    y_val = model.predict(prepared.x[val], batch_size=4096, verbose=0)
    e_val = energy_from_target(y_val, data.scalars["e_em"][val], config.target)
    ResponseCorrection.fit(data.scalars["e_true"][val], e_val).save(staging / "correction.json")
    np.savez(staging / "split.npz", index=data.index, **prepared.split)
    (staging / "config.yaml").write_text(dump_config(config))
    seconds = time.perf_counter() - start
    info = {
        "kind": RUN_KIND,
        "stage": stage,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": versions(),
        "data": {"path": str(data_path.resolve()), "clusters": int(data.y.size)},
        **run_fingerprints(data_path, (staging / "config.yaml").read_text()),
        "model": {"name": model.name, "parameters": _network_parameters(model)},
        "sizes": {k: int(v.size) for k, v in prepared.split.items()},
        **extra,
        "seconds": seconds,
        "train_clusters_per_second": prepared.split["train"].size * extra["epochs"] / max(seconds, 1e-9),
    }
    (staging / "run.json").write_text(json.dumps(info, indent=1))
    return info


def train(
    data_path: str | Path,
    run_dir: str | Path,
    config: TrainConfig,
    *,
    overwrite: bool = False,
    hide_progress: bool = True,
) -> TrainResult:
    """Train a DeepSets calibration on ``data_path`` and write the run folder ``run_dir``."""
    import keras

    from calohls.model.deepsets import EM_HEAD, build_deepsets, with_em_head

    run_dir, data_path = Path(run_dir), Path(data_path)
    if run_dir.exists() and not overwrite:  # refuse before any work
        raise FileExistsRefusedError(run_dir)
    start = time.perf_counter()
    prepared = prepare_training(data_path, config)

    keras.utils.set_random_seed(config.seed)
    model = build_deepsets(config.model, len(FEATURES), seed=config.seed, output_mean=prepared.output_mean)
    trainer, loss = model, {"output": "mse"}
    if config.em_weight > 0:  # the shared layers also learn to tell electromagnetic from hadronic clusters
        trainer, loss = with_em_head(model, seed=config.seed), {**loss, EM_HEAD: "binary_crossentropy"}
    trainer.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss=loss if config.em_weight > 0 else "mse",
        loss_weights={"output": 1.0, EM_HEAD: config.em_weight} if config.em_weight > 0 else None,
    )

    with atomic_folder(run_dir, overwrite=overwrite) as staging:
        (staging / "checkpoints").mkdir()
        callbacks = [
            keras.callbacks.EarlyStopping(patience=config.patience, min_delta=MIN_DELTA, restore_best_weights=True),
            keras.callbacks.ReduceLROnPlateau(
                factor=0.5, patience=config.lr_patience, min_delta=MIN_DELTA, min_lr=config.learning_rate / 64
            ),
            save_best(model, staging / "checkpoints" / "best.keras"),
            history_callback(staging / "history.json"),
        ]
        history = fit_model(trainer, prepared, config, callbacks, hide_progress=hide_progress)
        model.save(staging / "checkpoints" / "last.keras")
        val_loss = [float(v) for v in history["val_loss"]]
        best = int(np.argmin(val_loss))
        ended = convergence(val_loss, config.epochs, config.patience)
        # EarlyStopping restores the best weights only when it stops early; model.keras is the best checkpoint
        shutil.copyfile(staging / "checkpoints" / "best.keras", staging / "model.keras")
        best_model = keras.saving.load_model(staging / "model.keras")
        info = write_run_files(
            staging,
            stage="train",
            config=config,
            data_path=data_path,
            prepared=prepared,
            model=best_model,
            start=start,
            extra={
                "epochs": len(val_loss),
                "best_epoch": best + 1,
                "best_val_loss": val_loss[best],
                "converged": ended.converged,
                "convergence": ended.to_json(),
            },
        )
    log.info("trained %s in %.0f s; %s", best_model.name, info["seconds"], ended.message)
    split = prepared.split
    return TrainResult(
        run_dir,
        len(val_loss),
        best + 1,
        val_loss[best],
        split["train"].size,
        split["val"].size,
        split["test"].size,
        info["seconds"],
        ended,
    )


def _network_parameters(model: Any) -> int:
    """Weights and biases of the network (not the bit widths and counters a quantized model also keeps)."""
    return sum(
        int(np.prod(w.shape))
        for layer in model.layers
        for w in (getattr(layer, "kernel", None), getattr(layer, "bias", None))
        if w is not None
    )


def load_run(run_dir: str | Path, stage: str | tuple[str, ...] = "train") -> dict[str, Any]:
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
    return info


def check_run_data(run_dir: str | Path, info: dict[str, Any]) -> Path:
    """The cluster file a run was trained on (later stages read its test clusters), checked to be still there."""
    data = info.get("data")
    path = data.get("path") if isinstance(data, dict) else None
    if not path:
        raise InputFileError(f"{Path(run_dir) / 'run.json'} names no cluster file; re-run `calohls "
                             f"{info.get('stage', 'train')}`")  # fmt: skip
    if not Path(path).is_file():
        raise InputFileError(f"the cluster file {path} that {run_dir} was trained on is gone; put it back at that path")
    check_data(run_dir, info, path)
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
    info = load_run(run_dir, stage)
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
