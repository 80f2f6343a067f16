"""``calohls qat``: quantization-aware training of the DeepSets calibration with HGQ2.

The network is the float DeepSets of :mod:`calohls.model.deepsets` built from HGQ2 layers, so every weight, bias and
activation has its own trainable fixed-point bit width:

``x[N, F] → Φ (bias-free QDense + ReLU) → KSum (QGlobalAveragePooling1D) → F (QDense + ReLU) → QDense(1)``.

* Weights and biases use HGQ2's ``kbi`` quantizers saturating symmetrically; activations ("datalanes") use ``kif``
  quantizers in ``WRAP`` mode, whose integer bits follow the largest values seen in training. That is HGQ2's
  recommended setup, and hls4ml converts it bit-exactly with no precision configuration.
* Padding stays exact: Φ is bias-free with ReLU and a zero input quantizes to zero, so padded cells are exactly zero
  through Φ and add nothing to the sum, in Keras and in firmware.
* Resource-aware training: HGQ2 estimates the cost of every layer in EBOPs (effective bit operations, about the LUTs
  of the multiplications and additions) and adds beta × EBOPs to the loss. Beta rises log-linearly from
  ``beta_start`` to ``beta_end`` over the first ``beta_ramp`` of the epochs, then stays; from then on the learning
  rate halves on plateaus and training stops early, as in float training.
* Every epoch on the Pareto front of validation loss vs EBOPs is saved. After training each Pareto checkpoint's
  activation ranges are traced on the training clusters (so that training clusters never wrap) and its validation
  loss and EBOPs are measured again; the front of those exact numbers is kept in ``pareto/`` and ``pareto.json``.
  ``select`` picks the run's ``model.keras`` among them.

The run folder has the layout of float training (:mod:`calohls.model.train`) with ``stage: qat``; the validation loss
here is always the MSE of the target, without the EBOPs and bit-width regularisers, so it compares with float runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from calohls.config import ModelConfig, QATConfig
from calohls.data.features import FEATURES
from calohls.errors import ConfigError, FileExistsRefusedError
from calohls.files import atomic_folder, check_parent
from calohls.model.closure import CLOSURE_FILE, TypeClosure
from calohls.model.prepare import PreparedData, prepare_training
from calohls.model.run_folder import write_run_files
from calohls.model.train import OnEpoch, fit_model, history_callback

__all__ = [
    "Checkpoint",
    "ParetoPoint",
    "QATResult",
    "beta_schedule",
    "build_qat_deepsets",
    "copy_weights",
    "float_start",
    "pareto_front",
    "quantizer_scopes",
    "select_checkpoint",
    "train_qat",
]

log = logging.getLogger(__name__)

#: File name of a Pareto checkpoint (epochs counted from 1, as in ``history.json``).
CHECKPOINT_NAME = "epoch_{epoch:04d}.keras"
#: Clusters per forward pass when tracing activation ranges after training (tracing runs eagerly: few large batches).
TRACE_BATCH = 32768


@dataclass(frozen=True)
class QATResult:
    """What ``train_qat`` did; ``best_epoch`` and ``best_val_loss`` are those of the selected checkpoint."""

    run_dir: Path
    epochs: int
    best_epoch: int
    best_val_loss: float
    ebops: int
    pareto_points: int
    n_train: int
    n_val: int
    n_test: int
    seconds: float


@contextlib.contextmanager
def quantizer_scopes(beta0: float) -> Iterator[None]:
    """HGQ2's recommended quantizers for layers built inside: ``kbi`` saturating weights and biases, ``kif``
    wrapping activations, EBOPs on, with the initial beta ``beta0``."""
    from hgq.config import LayerConfigScope, QuantizerConfigScope

    with (
        QuantizerConfigScope(place="all", default_q_type="kbi", overflow_mode="SAT_SYM"),
        QuantizerConfigScope(place="datalane", default_q_type="kif", overflow_mode="WRAP"),
        LayerConfigScope(enable_ebops=True, beta0=beta0),
    ):
        yield


def build_qat_deepsets(
    config: ModelConfig, n_features: int, *, seed: int = 0, output_mean: float = 0.0, beta0: float = 1e-9
) -> Any:
    """The DeepSets of :func:`calohls.model.deepsets.build_deepsets` from HGQ2 layers, with the same layer names.

    Args:
        config: Architecture (Φ and F widths, cells per cluster).
        n_features: Features per cell.
        seed: Seed of the initial weights.
        output_mean: Initial output bias (the mean training target).
        beta0: Initial EBOPs weight of every layer (a beta schedule overrides it during training).

    Returns:
        An uncompiled ``keras.Model``.
    """
    import keras
    from hgq.layers import QDense, QGlobalAveragePooling1D

    if n_features < 1:
        raise ConfigError(f"n_features={n_features} must be at least 1")
    if not beta0 >= 0:
        raise ConfigError(f"beta0={beta0} must be zero or positive")
    init = keras.initializers.HeNormal(seed=seed)
    with quantizer_scopes(beta0):
        cells = keras.Input((config.max_cells, n_features), name="cells")
        h = cells
        for i, width in enumerate(config.phi_widths, start=1):
            h = QDense(width, use_bias=False, activation="relu", kernel_initializer=init, name=f"phi_{i}")(h)
        h = QGlobalAveragePooling1D(name="ksum")(h)
        for i, width in enumerate(config.f_widths, start=1):
            h = QDense(width, activation="relu", kernel_initializer=init, name=f"f_{i}")(h)
        # The output weights start small, as in the float model, but above the initial quantization step (2^-6):
        # weights that quantize to zero would pass no gradient to the layers below.
        out = QDense(
            1,
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.05, seed=seed),
            bias_initializer=keras.initializers.Constant(output_mean),
            name="output",
        )(h)
    name = "qat_deepsets_" + "x".join(map(str, config.phi_widths)) + "_" + "x".join(map(str, config.f_widths))
    return keras.Model(cells, out, name=name)


def beta_schedule(config: QATConfig) -> Callable[[int], float]:
    """Beta per epoch (counted from 0): log-linear from ``beta_start`` to ``beta_end`` over the ramp, then constant."""
    from hgq.utils.sugar import PieceWiseSchedule

    return PieceWiseSchedule([(0, config.beta_start, "log"), (config.ramp_epochs - 1, config.beta_end, "constant")])


class Checkpoint(NamedTuple):
    """A saved QAT checkpoint, re-measured: its epoch (from 1), validation MSE and EBOPs."""

    epoch: int
    val_loss: float
    ebops: int


class ParetoPoint(NamedTuple):
    """A checkpoint kept on the Pareto front (a line of ``pareto.json``): its numbers, the beta it was trained at, its
    file in the run folder and whether it is the selected one."""

    epoch: int
    val_loss: float
    ebops: int
    beta: float
    file: str
    selected: bool

    def to_json(self) -> dict[str, Any]:
        return self._asdict()


def pareto_front(points: Sequence[Checkpoint]) -> list[Checkpoint]:
    """The points that no other point dominates in (``val_loss``, ``ebops``), both to minimise, sorted by EBOPs.

    A point is dominated by one that is no worse in both and better in one; of identical points the first is kept.
    """
    front = []
    for i, p in enumerate(points):
        dominated = any(
            q.val_loss <= p.val_loss and q.ebops <= p.ebops and (q.val_loss < p.val_loss or q.ebops < p.ebops or j < i)
            for j, q in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(p)
    return sorted(front, key=lambda p: (p.ebops, p.val_loss))


def select_checkpoint(front: Sequence[Checkpoint], select: str, max_loss_increase: float) -> Checkpoint:
    """The checkpoint the run keeps: the best validation loss (``select="loss"``), or the fewest EBOPs among those
    within ``max_loss_increase`` (relative) of the best validation loss (``select="ebops"``)."""
    if not front:
        raise ConfigError("no Pareto checkpoint to select from; train for at least one epoch")
    best = min(front, key=lambda p: p.val_loss)
    if select == "loss":
        return best
    if select != "ebops":
        raise ConfigError(f"select={select!r} is unknown; use 'loss' or 'ebops'")
    limit = best.val_loss * (1 + max_loss_increase)
    return min((p for p in front if p.val_loss <= limit), key=lambda p: (p.ebops, p.val_loss))


def float_start(run_dir: str | Path, config: QATConfig, data_path: Path) -> Any:
    """The float run (a :class:`~calohls.model.run_folder.TrainedRun`) whose weights and feature scaling start a QAT of
    ``config``, checked to fit it.

    QAT that starts from the trained float network only has to learn the bit widths and adapt the weights to them,
    instead of learning the calibration under a rising resource penalty.

    Raises:
        ConfigError: the run is of another size, cell count, activation or target.
        InputFileError: ``run_dir`` is no float run folder (missing, incomplete, or of another stage).
    """
    from calohls.model.run_folder import open_run

    run = open_run(run_dir, "train")
    ours, theirs = config.model, run.config.model
    differ = [
        f"{name} {a} (QAT {b})"
        for name, a, b in (
            ("Φ widths", theirs.phi_widths, ours.phi_widths),
            ("F widths", theirs.f_widths, ours.f_widths),
            ("max_cells", theirs.max_cells, ours.max_cells),
            ("activation", theirs.activation, "relu"),
            ("target", run.config.target, config.target),
        )
        if a != b
    ]
    if differ:
        raise ConfigError(
            f"init_from={run_dir} has {', '.join(differ)}; give a float run of the same size, cells and target, "
            "or leave init_from out"
        )
    if run.data_path.resolve() != data_path.resolve():
        log.warning("init_from run %s was trained on %s, not on %s", run_dir, run.data_path, data_path)
    elif data_path.is_file():  # the same path: it must still hold the same clusters (not a file put in its place)
        from calohls.data.fingerprint import check_data

        check_data(run_dir, run.info, data_path)
    return run


def copy_weights(source: Any, model: Any) -> None:
    """Copy the kernels and biases of the float Keras model ``source`` into the HGQ2 ``model`` (same layer names)."""
    for layer in source.layers:
        weights = layer.get_weights()
        if weights:
            target = model.get_layer(layer.name)
            target._kernel.assign(weights[0])
            if len(weights) > 1:
                target.bias.assign(weights[1])


def _callbacks(config: QATConfig, pareto_dir: Path, history_path: Path) -> list[Any]:
    """EBOPs and beta into the logs, the Pareto checkpoints, the post-ramp learning-rate and stopping rules, the
    history file (in that order: later callbacks read what earlier ones log)."""
    import keras
    from hgq.utils.sugar import BetaScheduler, FreeEBOPs, ParetoFront

    class _Pareto(ParetoFront):
        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            super().on_epoch_end(epoch + 1, logs)  # files named by epoch counted from 1, as in history.json

    class _AfterRamp(keras.callbacks.Callback):
        """Runs ``inner`` only once beta has reached beta_end (its waiting starts there)."""

        def __init__(self, inner: Any, first_epoch: int) -> None:
            super().__init__()
            self.inner, self.first_epoch = inner, first_epoch

        def set_model(self, model: Any) -> None:
            super().set_model(model)
            self.inner.set_model(model)

        def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
            self.inner.on_train_begin(logs)

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            if epoch >= self.first_epoch:
                self.inner.on_epoch_end(epoch, logs)

    at_end = config.ramp_epochs - 1
    return [
        FreeEBOPs(),
        BetaScheduler(beta_schedule(config)),
        _Pareto(pareto_dir, ["val_mse", "ebops"], [-1, -1], fname_format=CHECKPOINT_NAME),
        # improvements below 0.1 % of a typical loss (≈ 0.01) do not count, as in float training
        _AfterRamp(
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_mse", factor=0.5, patience=config.lr_patience, min_delta=1e-5, min_lr=1e-5
            ),
            at_end,
        ),
        _AfterRamp(keras.callbacks.EarlyStopping(monitor="val_mse", patience=config.patience, min_delta=1e-5), at_end),
        history_callback(history_path),
    ]


def _remeasure(
    model: Any, files: list[Path], x_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray
) -> list[Checkpoint]:
    """Trace each checkpoint's activation ranges on the training inputs, save it so, and measure its EBOPs and
    validation MSE (the numbers of the deployed model)."""
    from hgq.utils import trace_minmax

    points = []
    for path in files:
        model.load_weights(path)
        ebops = trace_minmax(model, x_train, batch_size=min(TRACE_BATCH, len(x_train)))
        y = model.predict(x_val, batch_size=4096, verbose=0)[:, 0]
        model.save(path)
        epoch = int(path.stem.removeprefix("epoch_"))
        points.append(Checkpoint(epoch, float(np.mean((y - y_val) ** 2)), int(ebops)))
    return points


def _keep_pareto(
    model: Any, pareto_dir: Path, prepared: PreparedData, config: QATConfig
) -> tuple[list[ParetoPoint], ParetoPoint]:
    """Re-measure the checkpoints saved in ``pareto_dir``, delete those off the front of the re-measured numbers,
    and select one; the front (sorted by EBOPs, each with its beta, file and whether selected) and the selected."""
    files = sorted(pareto_dir.glob("epoch_*.keras"))
    points = _remeasure(model, files, prepared.part("train")[0], *prepared.part("val"))
    front = pareto_front(points)
    kept = {p.epoch for p in front}
    for path, p in zip(files, points, strict=True):
        if p.epoch not in kept:
            path.unlink()
    chosen = select_checkpoint(front, config.select, config.max_loss_increase)
    schedule = beta_schedule(config)
    kept_front = [
        ParetoPoint(
            *p, schedule(p.epoch - 1), f"{pareto_dir.name}/{CHECKPOINT_NAME.format(epoch=p.epoch)}", p is chosen
        )
        for p in front
    ]
    return kept_front, next(p for p in kept_front if p.selected)


def _weights_nonzero(model: Any) -> int:
    """Weights and biases that quantize to a non-zero value (HGQ2 prunes a weight by giving it zero bits)."""
    count = 0
    for layer in model.layers:
        for q in (getattr(layer, "qkernel", None), getattr(layer, "qbias", None)):
            if q is not None:
                count += int(np.count_nonzero(np.asarray(q)))
    return count


def _compiled_model(config: QATConfig, prepared: PreparedData, init: Any) -> tuple[Any, PreparedData]:
    """The HGQ2 network, compiled; started from the float run ``init`` (its weights, and the feature scaling they
    expect) where one is given."""
    import keras

    keras.utils.set_random_seed(config.seed)
    model = build_qat_deepsets(
        config.model, len(FEATURES), seed=config.seed, output_mean=prepared.output_mean, beta0=config.beta_start
    )
    if init is not None:
        copy_weights(init.model, model)
        prepared = dataclasses.replace(prepared, scaler=init.scaler, x=init.scaler.transform(prepared.data.x))
        if (init.path / CLOSURE_FILE).exists():  # keep the float run's closure per particle type
            closure = TypeClosure.load(init.path / CLOSURE_FILE)
            shift = closure.target_shift(prepared.data.scalars["e_true"], prepared.data.scalars["particle"])
            prepared = dataclasses.replace(prepared, shift=shift)
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss="mse",
        metrics=[keras.metrics.MeanSquaredError(name="mse")],
    )
    return model, prepared


def _run_info(
    config: QATConfig, model: Any, front: list[ParetoPoint], chosen: ParetoPoint, epochs: int, fit_s: float
) -> dict:
    """The QAT keys of ``run.json`` (after the keys every run has)."""
    return {
        "epochs": epochs,
        "best_epoch": chosen.epoch,
        "best_val_loss": chosen.val_loss,
        "ebops": chosen.ebops,
        "weights_nonzero": _weights_nonzero(model),
        "selected": {k: getattr(chosen, k) for k in ("epoch", "val_loss", "ebops", "beta")}
        | {"rule": config.select, "max_loss_increase": config.max_loss_increase},
        "pareto_points": len(front),
        "beta": {"start": config.beta_start, "end": config.beta_end, "ramp_epochs": config.ramp_epochs},
        "seconds_per_epoch": fit_s / epochs,
    }


def train_qat(
    data_path: str | Path,
    run_dir: str | Path,
    config: QATConfig,
    *,
    overwrite: bool = False,
    on_epoch: OnEpoch | None = None,
) -> QATResult:
    """Quantization-aware training of a DeepSets calibration on ``data_path`` into the run folder ``run_dir``;
    ``on_epoch`` hears the end of every epoch (:class:`~calohls.model.train.EpochEnd`, with the EBOPs).

    The split, the feature scaling, the correction and the run files are those of float training (the same data and
    seed give the same test clusters). Besides them the folder holds ``pareto/`` (the Pareto checkpoints, activation
    ranges traced), ``pareto.json`` (``epoch``, ``val_loss``, ``ebops``, ``beta``, ``file`` and ``selected`` of each,
    sorted by EBOPs) and ``history.json`` (with ``ebops`` and ``beta`` per epoch); ``model.keras`` is the selected
    checkpoint.

    Raises:
        FileExistsRefusedError: ``run_dir`` exists and ``overwrite`` is False (checked before any work).
        OutputError: a parent of ``run_dir`` is a file (checked before any work).
        DataError: Too few clusters for a batch, or none for validation.
    """
    run_dir, data_path = Path(run_dir), Path(data_path)
    check_parent(run_dir)  # refuse before any work: an output below a file, or one that exists
    if run_dir.exists() and not overwrite:
        raise FileExistsRefusedError(run_dir)
    start = time.perf_counter()
    init = None if config.init_from is None else float_start(config.init_from, config, data_path)
    model, prepared = _compiled_model(config, prepare_training(data_path, config), init)

    with atomic_folder(run_dir, overwrite=overwrite) as staging:
        pareto_dir = staging / "pareto"
        callbacks = _callbacks(config, pareto_dir, staging / "history.json")
        fit_start = time.perf_counter()
        history = fit_model(model, prepared, config, callbacks, on_epoch=on_epoch)
        epochs = len(history["loss"])
        fit_seconds = time.perf_counter() - fit_start

        front, chosen = _keep_pareto(model, pareto_dir, prepared, config)
        (staging / "pareto.json").write_text(json.dumps([p.to_json() for p in front], indent=1))
        shutil.copyfile(staging / chosen.file, staging / "model.keras")
        model.load_weights(staging / "model.keras")
        extra = _run_info(config, model, front, chosen, epochs, fit_seconds)
        info = write_run_files(
            staging, stage="qat", config=config, data_path=data_path, prepared=prepared, model=model, start=start,
            extra=extra,
        )  # fmt: skip
    log.info(
        "QAT of %s in %.0f s: %d epochs, selected epoch %d (validation loss %.5f, %d EBOPs) of %d Pareto points",
        model.name, info.record["seconds"], epochs, chosen.epoch, chosen.val_loss, chosen.ebops, len(front),
    )  # fmt: skip
    split = prepared.split
    return QATResult(
        run_dir=run_dir,
        epochs=epochs,
        best_epoch=chosen.epoch,
        best_val_loss=chosen.val_loss,
        ebops=chosen.ebops,
        pareto_points=len(front),
        n_train=int(split["train"].size),
        n_val=int(split["val"].size),
        n_test=int(split["test"].size),
        seconds=info.record["seconds"],
    )
