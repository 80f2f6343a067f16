"""The clusters a run is trained on: read from the cluster file, split by event and scaled.

Float training and QAT (:mod:`calohls.model.train`, :mod:`calohls.model.qat`) both fit on a :class:`PreparedData`;
the same data, seed and fractions give the same split, so their test clusters are the same.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from calohls.config import TrainConfig
from calohls.data.features import E_REF_FLOOR, FeatureScaler, cell_features, check_em_scale, em_label, target
from calohls.data.hdf5 import open_clusters
from calohls.errors import DataError

__all__ = ["KEPT_SCALARS", "PreparedData", "TrainingData", "load_training_data", "prepare_training", "split_events"]

log = logging.getLogger(__name__)

#: Per-cluster fields kept next to the features (for evaluation and baselines).
KEPT_SCALARS = ("e_true", "e_em", "particle", "event", "cluster_index", "eta", "n_cells_total")


@dataclass(frozen=True)
class TrainingData:
    """Raw features, targets and per-cluster fields of the clusters used (in file order)."""

    x: np.ndarray  # [n, N, F] raw features
    y: np.ndarray  # [n] log10 e_true
    scalars: dict[str, np.ndarray]
    index: np.ndarray  # [n] cluster index in the file


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


@dataclass(frozen=True)
class PreparedData:
    """The clusters of a run, split by event and scaled: what float training and QAT both fit on."""

    data: TrainingData
    split: dict[str, np.ndarray]  # positions into data (train, val, test)
    scaler: FeatureScaler
    x: np.ndarray  # [n, N, F] scaled features
    shift: np.ndarray | None = None  # [n] added to the targets (the per-type closure, calohls.model.closure)

    @property
    def y(self) -> np.ndarray:
        """The targets fitted: the data's, shifted where a closure shift is set."""
        return self.data.y if self.shift is None else self.data.y + self.shift

    def part(self, name: str, *, em: bool = False) -> tuple[np.ndarray, Any]:
        """Scaled inputs and targets of ``name`` ("train", "val" or "test"); with ``em`` the targets of a model with
        the auxiliary EM head (:func:`~calohls.model.deepsets.with_em_head`) as a dict."""
        index = self.split[name]
        if not em:
            return self.x[index], self.y[index]
        from calohls.model.deepsets import EM_HEAD

        return self.x[index], {"output": self.y[index], EM_HEAD: em_label(self.data.scalars["particle"][index])}

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
        return float(self.y[self.split["train"]].mean())


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
