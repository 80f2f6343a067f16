"""Training benchmark: clusters per second of DeepSets training (float and quantization-aware), per preset."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks import Options, benchmark
from calohls.config import QATConfig, SimConfig, TrainConfig
from calohls.sim.generate import simulate_to_file

#: Float presets (64 cells, the float default) and QAT presets (32 cells, the study's FPGA inputs) timed.
FLOAT_PRESETS = ("tiny", "small", "medium", "large")
QAT_PRESETS = ("tiny", "small", "medium")


def _epoch_timer() -> Any:
    """A Keras callback recording the wall seconds of every epoch (training and validation) in ``.seconds``."""
    import keras

    class _Timer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.seconds: list[float] = []
            self._start = 0.0

        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            self.seconds.append(time.perf_counter() - self._start)

    return _Timer()


def network_parameters(model: Any) -> int:
    """Weights and biases of a model (not the bit widths and counters an HGQ2 model also keeps)."""
    import numpy as np

    return sum(
        int(np.prod(w.shape))
        for layer in model.layers
        for w in (getattr(layer, "kernel", None), getattr(layer, "bias", None))
        if w is not None
    )


def _fit_rate(model: Any, prepared: Any, config: TrainConfig) -> dict[str, Any]:
    """Fit ``model`` for ``config.epochs`` epochs; the first epoch (with compilation) and the steady epochs."""
    import keras

    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss="mse")
    timer = _epoch_timer()
    model.fit(
        *prepared.part("train"),
        validation_data=prepared.part("val"),
        epochs=config.epochs,
        batch_size=config.batch_size,
        shuffle=True,
        callbacks=[timer],
        verbose=0,
    )
    n_train = int(prepared.split["train"].size)
    steady = statistics.median(timer.seconds[1:]) if len(timer.seconds) > 1 else timer.seconds[0]
    return {
        "parameters": network_parameters(model),
        "train_clusters": n_train,
        "epochs": len(timer.seconds),
        "first_epoch_s": timer.seconds[0],
        "steady_epoch_s": steady,
        "train_clusters_per_s": n_train / steady,
    }


def _float_rows(data: Path, presets: tuple[str, ...], epochs: int) -> tuple[dict[str, Any], float]:
    from calohls.data.features import FEATURES
    from calohls.model.deepsets import build_deepsets
    from calohls.model.prepare import prepare_training

    base = TrainConfig.model_validate({"epochs": epochs, "model": {"max_cells": 64}})
    start = time.perf_counter()
    prepared = prepare_training(data, base)
    prepare_s = time.perf_counter() - start
    rows = {}
    for preset in presets:
        config = TrainConfig.model_validate({"epochs": epochs, "model": {"preset": preset, "max_cells": 64}})
        model = build_deepsets(config.model, len(FEATURES), seed=config.seed, output_mean=prepared.output_mean)
        rows[preset] = _fit_rate(model, prepared, config)
    return rows, prepare_s


def _qat_rows(data: Path, presets: tuple[str, ...], epochs: int) -> dict[str, Any]:
    from calohls.data.features import FEATURES
    from calohls.model.prepare import prepare_training
    from calohls.model.qat import build_qat_deepsets

    prepared = prepare_training(data, QATConfig.model_validate({"epochs": epochs, "model": {"max_cells": 32}}))
    rows = {}
    for preset in presets:
        config = QATConfig.model_validate({"epochs": epochs, "model": {"preset": preset, "max_cells": 32}})
        model = build_qat_deepsets(
            config.model, len(FEATURES), seed=config.seed, output_mean=prepared.output_mean, beta0=config.beta_end
        )
        rows[preset] = _fit_rate(model, prepared, config)
    return rows


def _train_run(data: Path, out: Path, epochs: int) -> dict[str, Any]:
    """Wall time of a whole ``calohls train`` run of the default preset (reading, fitting, correction, files)."""
    from calohls.model.train import train

    config = TrainConfig.model_validate({"epochs": epochs, "patience": epochs})
    start = time.perf_counter()
    result = train(data, out, config)
    wall = time.perf_counter() - start
    epochs_run = len(json.loads((out / "history.json").read_text()))
    return {
        "preset": config.model.preset,
        "max_cells": config.model.max_cells,
        "epochs": epochs_run,
        "train_clusters": result.n_train,
        "wall_s": wall,
        "train_clusters_per_s": result.n_train * epochs_run / wall,
    }


@benchmark()
def train_throughput(opts: Options) -> dict[str, Any]:
    """Training speed (clusters/s, forward and backward plus validation, batch 512) of the float presets at 64
    cells and the QAT presets at 32 cells, and the wall time of one whole float training run.

    Epoch times are the median of the epochs after the first (the first compiles the step functions); the rate is
    training clusters per epoch over that time.
    """
    events = 12_000 if opts.quick else 60_000
    epochs = 3 if opts.quick else 5
    data = opts.scratch / "clusters.h5"
    start = time.perf_counter()
    simulate_to_file(SimConfig(events=events, seed=4), data, workers=opts.workers)
    simulate_s = time.perf_counter() - start
    float_rows, prepare_s = _float_rows(data, FLOAT_PRESETS, epochs)
    qat_rows = _qat_rows(data, QAT_PRESETS, epochs)
    run = _train_run(data, opts.scratch / "run", epochs)

    def line(kind: str, preset: str, r: dict[str, Any]) -> str:
        return (
            f"{kind:5s} {preset:7s} ({r['parameters']:6,d} parameters): {r['train_clusters_per_s']:8,.0f} training "
            f"clusters/s  (epoch {r['steady_epoch_s']:5.2f} s, first {r['first_epoch_s']:5.2f} s)"
        )

    summary = [f"{events:,} events, {next(iter(float_rows.values()))['train_clusters']:,} training clusters, "]
    summary[0] += f"{epochs} epochs, batch 512; float at 64 cells, QAT at 32 cells"
    summary += [line("float", p, r) for p, r in float_rows.items()]
    summary += [line("QAT", p, r) for p, r in qat_rows.items()]
    summary.append(
        f"whole `train` run ({run['preset']}, {run['epochs']} epochs): {run['wall_s']:.1f} s, "
        f"{run['train_clusters_per_s']:,.0f} training clusters/s including reading, correction and files"
    )
    return {
        "events": events,
        "epochs": epochs,
        "batch_size": 512,
        "simulate_s": simulate_s,
        "prepare_s": prepare_s,
        "float": {"max_cells": 64, "presets": float_rows},
        "qat": {"max_cells": 32, "presets": qat_rows},
        "train_run": run,
        "summary": summary,
    }
