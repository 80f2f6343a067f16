"""``calohls train``: fit a DeepSets calibration on a cluster file and save everything in a run folder.

The run folder's layout, and how later stages read it, are :mod:`calohls.model.run_folder`'s; the clusters it is
trained on are read, split and scaled by :mod:`calohls.model.prepare`. The folder is assembled under a temporary
name and renamed into place at the end, so a run folder is complete or absent; an existing one is replaced only with
``overwrite``.

Quantization-aware training (:mod:`calohls.model.qat`) writes the same layout with ``stage: qat``; the Keras
callbacks and the fit are shared from here. Progress is reported per epoch through ``on_epoch`` (the command line
draws it); the library draws nothing.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from calohls.config import TrainConfig
from calohls.data.features import FEATURES
from calohls.errors import FileExistsRefusedError
from calohls.files import atomic_folder, write_text_atomic
from calohls.model.closure import CLOSURE_FILE, TypeClosure, close_per_type
from calohls.model.convergence import MIN_DELTA, Convergence, convergence
from calohls.model.prepare import PreparedData, TrainingData, load_training_data, prepare_training, split_events
from calohls.model.run_folder import (
    RUN_KIND,
    RUN_STAGES,
    TrainedRun,
    check_run_data,
    load_run,
    open_run,
    predict,
    write_run_files,
)

# the data preparation and the run folder lived here first: their names are still importable from this module
__all__ = [
    "RUN_KIND",
    "RUN_STAGES",
    "EpochEnd",
    "OnEpoch",
    "PreparedData",
    "TrainResult",
    "TrainedRun",
    "TrainingData",
    "check_run_data",
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

#: The Huber loss is quadratic up to this residual of the log10 target (12 % in energy) and linear beyond: the noise
#: tails of low-energy clusters then pull less on the fit than in MSE.
HUBER_DELTA = 0.05


@dataclass(frozen=True)
class EpochEnd:
    """What an ``on_epoch`` callback hears after every epoch: the epoch (counted from 1), the most epochs the fit
    may run (it may stop earlier) and the logged values (``loss``, ``val_loss``, for QAT ``ebops``, ...)."""

    epoch: int
    epochs: int
    logs: dict[str, float]


#: ``on_epoch(EpochEnd)``: called after every epoch of :func:`fit_model`, after the other callbacks.
OnEpoch = Callable[[EpochEnd], None]


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
    closure: TypeClosure | None = None


def loss_function(config: TrainConfig) -> Any:
    """The Keras loss of ``config.loss`` (Huber with δ = :data:`HUBER_DELTA` in log10 of the energy)."""
    import keras

    return keras.losses.Huber(delta=HUBER_DELTA) if config.loss == "huber" else config.loss


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


def epoch_callback(on_epoch: OnEpoch, epochs: int) -> Any:
    """A Keras callback passing every epoch's end to ``on_epoch`` as an :class:`EpochEnd`."""
    import keras

    class _Callback(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            on_epoch(EpochEnd(epoch + 1, epochs, {k: float(v) for k, v in (logs or {}).items()}))

    return _Callback()


def fit_model(
    model: Any,
    prepared: PreparedData,
    config: TrainConfig,
    callbacks: list[Any],
    *,
    on_epoch: OnEpoch | None = None,
) -> dict[str, list[float]]:
    """Fit ``model`` on the training part, validated on the validation part, with ``callbacks`` (then
    ``on_epoch``); the Keras history (metric → values per epoch)."""
    em = len(model.outputs) > 1  # the training model with the auxiliary EM head
    report = [epoch_callback(on_epoch, config.epochs)] if on_epoch is not None else []
    fit = model.fit(
        *prepared.part("train", em=em),
        sample_weight=prepared.weights("train", config.energy_weight),
        validation_data=(*prepared.part("val", em=em), prepared.weights("val", config.energy_weight)),
        epochs=config.epochs,
        batch_size=config.batch_size,
        shuffle=True,
        callbacks=[*([regression_logs()] if em else []), *callbacks, *report],
        verbose=0,
    )
    return fit.history


def _compiled(config: TrainConfig, output_mean: float) -> tuple[Any, Any]:
    """The network and the model that is fitted, compiled: the network itself, or with the auxiliary EM head when
    ``em_weight`` > 0 (the shared layers then also learn to tell electromagnetic from hadronic clusters)."""
    import keras

    from calohls.model.deepsets import EM_HEAD, build_deepsets, with_em_head

    keras.utils.set_random_seed(config.seed)
    model = build_deepsets(config.model, len(FEATURES), seed=config.seed, output_mean=output_mean)
    trainer, loss = model, {"output": loss_function(config)}
    if config.em_weight > 0:
        trainer, loss = with_em_head(model, seed=config.seed), {**loss, EM_HEAD: "binary_crossentropy"}
    trainer.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss=loss if config.em_weight > 0 else loss_function(config),
        loss_weights={"output": 1.0, EM_HEAD: config.em_weight} if config.em_weight > 0 else None,
    )
    return model, trainer


def _round_progress(on_epoch: OnEpoch, epoch: int, epochs: int) -> Callable[[int, int], None]:
    """The closure rounds' ``on_round`` for an ``on_epoch`` progress: an :class:`EpochEnd` of the last epoch whose
    logs are ``closure_round`` and ``closure_rounds``."""

    def on_round(k: int, rounds: int) -> None:
        on_epoch(EpochEnd(epoch, epochs, {"closure_round": float(k), "closure_rounds": float(rounds)}))

    return on_round


def _callbacks(config: TrainConfig, model: Any, staging: Path) -> list[Any]:
    """Early stopping, the learning-rate schedule, the best checkpoint and the history file."""
    import keras

    return [
        keras.callbacks.EarlyStopping(patience=config.patience, min_delta=MIN_DELTA, restore_best_weights=True),
        keras.callbacks.ReduceLROnPlateau(
            factor=0.5, patience=config.lr_patience, min_delta=MIN_DELTA, min_lr=config.learning_rate / 64
        ),
        save_best(model, staging / "checkpoints" / "best.keras"),
        history_callback(staging / "history.json"),
    ]


def train(
    data_path: str | Path,
    run_dir: str | Path,
    config: TrainConfig,
    *,
    overwrite: bool = False,
    on_epoch: OnEpoch | None = None,
) -> TrainResult:
    """Train a DeepSets calibration on ``data_path`` and write the run folder ``run_dir``; ``on_epoch`` hears the
    end of every epoch."""
    import keras

    run_dir, data_path = Path(run_dir), Path(data_path)
    if run_dir.exists() and not overwrite:  # refuse before any work
        raise FileExistsRefusedError(run_dir)
    start = time.perf_counter()
    prepared = prepare_training(data_path, config)
    model, trainer = _compiled(config, prepared.output_mean)

    with atomic_folder(run_dir, overwrite=overwrite) as staging:
        (staging / "checkpoints").mkdir()
        history = fit_model(trainer, prepared, config, _callbacks(config, model, staging), on_epoch=on_epoch)
        model.save(staging / "checkpoints" / "last.keras")
        val_loss = [float(v) for v in history["val_loss"]]
        best = int(np.argmin(val_loss))
        ended = convergence(val_loss, config.epochs, config.patience)
        # EarlyStopping restores the best weights only when it stops early; model.keras is the best checkpoint,
        # fine-tuned per particle type where closure rounds are asked for (checkpoints/best.keras stays as fitted)
        best_model = keras.saving.load_model(staging / "checkpoints" / "best.keras")
        closure = None
        if config.closure_rounds:
            on_round = None if on_epoch is None else _round_progress(on_epoch, len(val_loss), config.epochs)
            closure = close_per_type(best_model, prepared, config, loss=loss_function(config), on_round=on_round)
            closure.save(staging / CLOSURE_FILE)
        best_model.save(staging / "model.keras")
        extra = {"epochs": len(val_loss), "best_epoch": best + 1, "best_val_loss": val_loss[best],
                 "converged": ended.converged, "convergence": ended.to_json(),
                 "closure": None if closure is None else closure.summary().to_json()}  # fmt: skip
        info = write_run_files(
            staging, stage="train", config=config, data_path=data_path, prepared=prepared, model=best_model,
            start=start, extra=extra,
        )  # fmt: skip
    log.info("trained %s in %.0f s; %s", best_model.name, info.record["seconds"], ended.message)
    split = prepared.split
    return TrainResult(run_dir, len(val_loss), best + 1, val_loss[best], split["train"].size, split["val"].size,
                       split["test"].size, info.record["seconds"], ended, closure)  # fmt: skip
