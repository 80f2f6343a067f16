"""Closure per particle type: fine-tune the network on targets shifted per type until π0 and π± medians close.

A calibration that cannot tell a π0 from a π± for sure returns, for an ambiguous cluster, something between the two
types' calibrations. In bins of E_true the mixture then closes while the π0 median comes out high and the π± one low
(1.07 and 0.97 at 2.3–5 GeV on 250k events of seed 23 after plain training). The types are known in training (the
simulation and single-pion samples carry them), so the training targets of each type can be shifted by
δ_type(E_true) (log10): the network, fitted to the shifted targets, moves the clusters it takes for π0 down and those
it takes for π± up. δ starts at zero; each round measures the median response of each type in bins of E_true on the
training clusters (after the response correction, which takes the common part), lowers δ by ``gain`` times the
log10 of it, and fine-tunes. Above ``min_energy`` only: below it the study asks for no closure, and shifting there
costs resolution.

The deployed network is unchanged (the same graph and layers, so it converts as before); only its weights move.
QAT started from a float run (``init_from``) fits the same shifted targets (:meth:`TypeClosure.target_shift`), so
that quantization-aware fine-tuning keeps the closure.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from calohls.data.features import em_label, energy_from_target
from calohls.errors import InputFileError
from calohls.files import write_text_atomic
from calohls.model.correction import ResponseCorrection

if TYPE_CHECKING:
    from calohls.config import TrainConfig
    from calohls.model.prepare import PreparedData

__all__ = ["CLOSURE_FILE", "ClosureRound", "ClosureSummary", "TypeClosure", "close_per_type"]

log = logging.getLogger(__name__)

#: The closure record in a run folder.
CLOSURE_FILE = "closure.json"
#: The particle types closed, by their :func:`~calohls.data.features.em_label`.
TYPES = {"pi0": 1.0, "pi+-": 0.0}
#: Bins of log10 E_true per decade in which the per-type bias is measured (δ is interpolated between centres).
BINS_PER_DECADE = 4
#: Fewest training clusters of a type in a bin for its median to be measured.
MIN_COUNT = 100
#: Each round lowers δ by GAIN × the measured log10 median (above 1: the types are told apart only in part, so a
#: shift of a type's targets moves its median by less than the shift; 1.2 left the π0 median 2 % high after three
#: rounds on one 250k-event sample where the separation is poor).
GAIN = 1.5
#: The rounds stop once every measured per-type median is within this of 1 (on the training clusters).
TOLERANCE = 0.01
#: Fine-tuning of a round: at most EPOCHS epochs at LEARNING_RATE × the training's initial rate, stopped after 2
#: epochs without a better validation loss (the best kept).
EPOCHS = 12
LEARNING_RATE = 0.25


@dataclass(frozen=True)
class ClosureRound:
    """One round: the largest |median − 1| of each type above ``min_energy`` before it, and its fine-tuning."""

    worst: dict[str, float]
    epochs: int
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"worst": dict(self.worst), "epochs": self.epochs, "seconds": round(self.seconds, 2)}


@dataclass(frozen=True)
class ClosureSummary:
    """The closure in ``run.json``: rounds, their epochs and seconds, the worst |median − 1| of each type on the
    training clusters before the first round and after the last, the energy floor, or why there were no rounds."""

    rounds: int
    epochs: int
    seconds: float
    worst_before: dict[str, float]
    worst: dict[str, float]
    min_energy: float
    skipped: str | None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TypeClosure:
    """The per-type target shifts a network was fine-tuned with, and how the rounds went.

    Attributes:
        log_e: Bin centres, log10 E_true (GeV).
        shift: Type (``pi0``, ``pi+-``) → δ in log10 per bin (held beyond the ends, zero below ``min_energy``).
        min_energy: E_true (GeV) below which targets are not shifted.
        rounds: The rounds of fine-tuning.
        worst: The largest |median − 1| of each type above ``min_energy`` on the training clusters at the end.
        skipped: Why no closure was done (one type only, too few clusters), or ``None``.
    """

    log_e: tuple[float, ...]
    shift: dict[str, tuple[float, ...]]
    min_energy: float
    rounds: tuple[ClosureRound, ...] = ()
    worst: dict[str, float] = dataclasses.field(default_factory=dict)
    skipped: str | None = None

    def target_shift(self, e_true: np.ndarray, particle: np.ndarray) -> np.ndarray:
        """The shift of each cluster's log10 target (0 below ``min_energy`` and for types not closed)."""
        e_true = np.asarray(e_true, np.float64)
        label, out = em_label(particle), np.zeros(e_true.shape, np.float32)
        if not self.log_e:
            return out
        lt = np.log10(np.maximum(e_true, 1e-9))
        above = e_true >= self.min_energy
        for name, value in TYPES.items():
            sel = above & (label == value)
            out[sel] = np.interp(lt[sel], self.log_e, self.shift[name])
        return out

    def summary(self) -> ClosureSummary:
        """What ``run.json`` keeps of it."""
        return ClosureSummary(
            rounds=len(self.rounds),
            epochs=sum(r.epochs for r in self.rounds),
            seconds=round(sum(r.seconds for r in self.rounds), 1),
            worst_before=dict(self.rounds[0].worst) if self.rounds else {},
            worst=dict(self.worst),
            min_energy=self.min_energy,
            skipped=self.skipped,
        )

    def message(self) -> str:
        """One line for people: what the rounds did to the worst per-type median, or why there were none."""
        if self.skipped is not None:
            return f"no closure per particle type: {self.skipped}"
        if not self.rounds:
            return f"π0 and π± medians above {self.min_energy:g} GeV already within {TOLERANCE:.0%}: no closure rounds"
        worst = ", ".join(
            f"{name} {self.rounds[0].worst[name]:.1%} → {self.worst[name]:.1%}" for name in TYPES
        ) if self.rounds else "none measured"  # fmt: skip
        return (f"closed π0 and π± medians above {self.min_energy:g} GeV in {len(self.rounds)} rounds "
                f"({sum(r.epochs for r in self.rounds)} epochs, {sum(r.seconds for r in self.rounds):.0f} s): "
                f"worst |median − 1| on the training clusters {worst}")  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return {
            "log_e": list(self.log_e),
            "shift": {k: list(v) for k, v in self.shift.items()},
            "min_energy": self.min_energy,
            "rounds": [r.to_json() for r in self.rounds],
            "worst": dict(self.worst),
            "skipped": self.skipped,
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        write_text_atomic(path, json.dumps(self.to_json(), indent=1))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TypeClosure:
        try:
            d = json.loads(Path(path).read_text())
            rounds = tuple(ClosureRound(dict(r["worst"]), int(r["epochs"]), float(r["seconds"])) for r in d["rounds"])
            shift = {k: tuple(map(float, d["shift"][k])) for k in TYPES} if d["log_e"] else dict.fromkeys(TYPES, ())
            return cls(tuple(map(float, d["log_e"])), shift, float(d["min_energy"]), rounds, dict(d["worst"]),
                       d["skipped"])  # fmt: skip
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputFileError(f"cannot read the closure record {path} ({exc}); re-run `calohls train`") from None


def _edges(min_energy: float, e_true: np.ndarray) -> np.ndarray:
    lo = np.log10(max(min_energy, float(e_true.min()), 1e-3))
    hi = np.log10(float(e_true.max()))
    n = max(1, int(np.ceil((hi - lo) * BINS_PER_DECADE)))
    return np.linspace(lo, lo + n / BINS_PER_DECADE, n + 1)


def _bias(response: np.ndarray, lt: np.ndarray, label: np.ndarray, edges: np.ndarray) -> dict[str, np.ndarray]:
    """log10 of the median response of each type per bin (0 where a bin holds too few clusters of the type)."""
    which = np.digitize(lt, edges) - 1
    out = {}
    for name, value in TYPES.items():
        b = np.zeros(edges.size - 1)
        for k in range(b.size):
            sel = (which == k) & (label == value)
            if sel.sum() >= MIN_COUNT:
                b[k] = np.log10(np.median(response[sel]))
        out[name] = b
    return out


def close_per_type(
    model: Any,
    prepared: PreparedData,
    config: TrainConfig,
    *,
    loss: Any,
    on_round: Callable[[int, int], None] | None = None,
) -> TypeClosure:
    """Fine-tune ``model`` (compiled or not; it is recompiled with ``loss``) in ``config.closure_rounds`` rounds on
    per-type shifted targets; the :class:`TypeClosure` it ends with. ``on_round(k, rounds)`` hears the start of
    round ``k`` (from 1)."""
    import keras

    scalars = prepared.data.scalars
    e_true, e_em = scalars["e_true"].astype(np.float64), scalars["e_em"]
    label, lt = em_label(scalars["particle"]), np.log10(np.maximum(scalars["e_true"].astype(np.float64), 1e-9))
    train, val = prepared.split["train"], prepared.split["val"]
    above = e_true[train] >= config.closure_min_energy
    counts = {name: int(np.sum(above & (label[train] == v))) for name, v in TYPES.items()}
    if min(counts.values()) < MIN_COUNT:
        reason = f"too few training clusters of a type above {config.closure_min_energy:g} GeV ({counts})"
        log.info("no closure per type: %s", reason)
        return TypeClosure((), dict.fromkeys(TYPES, ()), config.closure_min_energy, skipped=reason)

    edges = _edges(config.closure_min_energy, e_true[train][above])
    centres = 0.5 * (edges[1:] + edges[:-1])
    shift = {name: np.zeros(centres.size) for name in TYPES}
    weights = {part: prepared.weights(part, config.energy_weight) for part in ("train", "val")}

    def measure() -> dict[str, np.ndarray]:
        y_val = model.predict(prepared.x[val], batch_size=4096, verbose=0)
        correction = ResponseCorrection.fit(
            e_true[val], energy_from_target(y_val, e_em[val], config.target), min_energy=config.correction_min_energy
        )
        y = model.predict(prepared.x[train], batch_size=4096, verbose=0)
        response = correction.apply(energy_from_target(y, e_em[train], config.target)) / e_true[train]
        return _bias(response, lt[train], label[train], edges)

    def worst(bias: dict[str, np.ndarray]) -> dict[str, float]:
        return {name: float(np.max(np.abs(10.0 ** b[b != 0] - 1), initial=0.0)) for name, b in bias.items()}

    rounds = []
    bias = measure()
    for k in range(config.closure_rounds):
        if max(worst(bias).values()) <= TOLERANCE:
            break
        if on_round is not None:
            on_round(k + 1, config.closure_rounds)
        start = time.perf_counter()
        before = worst(bias)
        for name in TYPES:
            shift[name] = shift[name] - GAIN * bias[name]
        closure = TypeClosure(tuple(centres), {n: tuple(s) for n, s in shift.items()}, config.closure_min_energy)
        shifted = dataclasses.replace(prepared, shift=closure.target_shift(e_true, scalars["particle"]))
        model.compile(optimizer=keras.optimizers.Adam(config.learning_rate * LEARNING_RATE), loss=loss)
        fit = model.fit(
            *shifted.part("train"),
            sample_weight=weights["train"],
            validation_data=(*shifted.part("val"), weights["val"]),
            epochs=EPOCHS,
            batch_size=config.batch_size,
            shuffle=True,
            callbacks=[keras.callbacks.EarlyStopping(patience=2, restore_best_weights=True)],
            verbose=0,
        )
        bias = measure()
        rounds.append(ClosureRound(before, len(fit.history["val_loss"]), time.perf_counter() - start))
        log.info("closure round %d: worst |median - 1| before %s, %d epochs", k + 1, before, rounds[-1].epochs)
    return TypeClosure(
        tuple(map(float, centres)),
        {n: tuple(map(float, s)) for n, s in shift.items()},
        config.closure_min_energy,
        tuple(rounds),
        worst(bias),
    )
