"""Did a training converge? A run counts as converged when it ended on a plateau of the validation loss.

Early stopping ends a run after ``patience`` epochs without an improvement larger than ``min_delta``: that is a
plateau. A run that instead reached its epoch cap while its best epoch lay within the last ``patience`` epochs was
still improving when it was cut off, and its numbers are not those of a converged network.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["MIN_DELTA", "Convergence", "convergence"]

#: Smallest validation-loss improvement that counts (about 0.1 % of a typical loss of 0.01).
MIN_DELTA = 1e-5


@dataclass(frozen=True)
class Convergence:
    """How a training ended: ``reason`` is ``"plateau"`` (converged) or ``"epoch cap"`` (cut off while improving,
    or on a plateau reached exactly at the cap, which counts as converged)."""

    converged: bool
    reason: str
    epochs: int
    epoch_cap: int
    best_epoch: int
    patience: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Convergence:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})

    @property
    def message(self) -> str:
        """One sentence for the CLI and the report."""
        if self.converged:
            return f"converged: best epoch {self.best_epoch}, stopped on a plateau after {self.epochs} epochs"
        return (
            f"NOT converged: the validation loss was still falling at the epoch cap ({self.epoch_cap}, best epoch "
            f"{self.best_epoch}); raise epochs"
        )


def convergence(val_loss: Sequence[float], epoch_cap: int, patience: int, min_delta: float = MIN_DELTA) -> Convergence:
    """The :class:`Convergence` of a run from its validation loss per epoch."""
    if not val_loss:
        raise ValueError("no epochs")
    best, best_epoch = float("inf"), 0
    for i, v in enumerate(val_loss):
        if v < best - min_delta:
            best, best_epoch = v, i + 1
    epochs = len(val_loss)
    plateau = epochs - best_epoch >= patience
    stopped_early = epochs < epoch_cap
    return Convergence(
        converged=plateau or stopped_early,
        reason="plateau" if plateau or stopped_early else "epoch cap",
        epochs=epochs,
        epoch_cap=epoch_cap,
        best_epoch=best_epoch,
        patience=patience,
    )
