"""Response correction by numerical inversion: make the median response 1 in bins of true energy.

A regression trained on a falling or bounded energy spectrum is pulled towards the mean where its resolution is poor
(at low energy), so its median response in bins of E_true is off by a few percent there. Numerical inversion, the
procedure ATLAS uses for its energy calibrations, measures on held-out clusters the median response R in bins of
E_true together with the median prediction of the bin, and divides every prediction by R interpolated at its own
value: a one-dimensional lookup after the network (a small table in firmware).

The inversion is fitted on clusters above ``min_energy`` only (2 GeV by default, where the study asks for closure)
and held below. Where a bin of E_true is wider than the resolution, the median response falls steeply with the
prediction, and dividing by it stretches the response distribution of a bin: on 250k events (seed 23, `calohls
train` defaults) the π± resolution at 1.1–2.3 GeV went from 0.65 without the correction to 0.76 with one fitted down
to 0.5 GeV, and back to 0.65 with the correction held below 2 GeV, the medians above 2 GeV unchanged.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calohls.errors import DataError, InputFileError
from calohls.files import write_text_atomic

__all__ = ["ResponseCorrection"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResponseCorrection:
    """Median response ``response`` as a function of log10 of the prediction ``log_pred`` (both increasing in x),
    fitted on clusters with E_true above ``min_energy`` (GeV)."""

    log_pred: tuple[float, ...]
    response: tuple[float, ...]
    min_energy: float = 0.0

    @classmethod
    def fit(
        cls,
        e_true: np.ndarray,
        e_pred: np.ndarray,
        *,
        bins_per_decade: int = 10,
        min_count: int = 50,
        min_energy: float = 0.0,
    ) -> ResponseCorrection:
        """Fit on held-out clusters (true and predicted energies, GeV) with E_true ≥ ``min_energy``.

        Bins need ``min_count`` clusters (fewer for small sets: a twentieth of them, at least 5); with no bin filled
        the correction is the identity (logged).
        """
        e_true, e_pred = np.asarray(e_true, np.float64), np.asarray(e_pred, np.float64)
        good = (e_true > 0) & (e_pred > 0) & np.isfinite(e_pred)
        if not good.any():
            raise DataError("no clusters with positive true and predicted energy to fit the response correction")
        good &= e_true >= min_energy
        lt, lp = np.log10(e_true[good]), np.log10(e_pred[good])
        if lt.size == 0:
            log.warning("no clusters above %g GeV to fit the response correction on; using none", min_energy)
            return cls((0.0,), (1.0,), float(min_energy))
        min_count = min(min_count, max(5, lt.size // 20))
        edges = np.arange(np.floor(lt.min() * bins_per_decade), np.ceil(lt.max() * bins_per_decade) + 1)
        which = np.digitize(lt, edges / bins_per_decade)
        x, y = [], []
        for b in np.unique(which):
            sel = which == b
            if sel.sum() >= min_count:
                x.append(float(np.median(lp[sel])))
                y.append(float(np.median(10.0 ** (lp[sel] - lt[sel]))))
        if not x:
            log.warning("too few clusters (%d) to fit the response correction; using none", lt.size)
            return cls((0.0,), (1.0,), min_energy)
        order = np.argsort(x)
        x_sorted, y_sorted = np.asarray(x)[order], np.asarray(y)[order]
        keep = np.concatenate([[True], np.diff(x_sorted) > 0])  # interpolation needs increasing x
        return cls(tuple(map(float, x_sorted[keep])), tuple(map(float, y_sorted[keep])), float(min_energy))

    def apply(self, e_pred: np.ndarray) -> np.ndarray:
        """Corrected energies: each prediction divided by the median response at its value (held at the ends)."""
        e_pred = np.asarray(e_pred, np.float64)
        lp = np.log10(np.maximum(e_pred, 1e-6))
        return e_pred / np.interp(lp, self.log_pred, self.response)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the correction as JSON (atomically)."""
        record = {"log_pred": self.log_pred, "response": self.response, "min_energy": self.min_energy}
        write_text_atomic(path, json.dumps(record, indent=1))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ResponseCorrection:
        try:
            d = json.loads(Path(path).read_text())
            return cls(
                tuple(map(float, d["log_pred"])), tuple(map(float, d["response"])), float(d.get("min_energy", 0.0))
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputFileError(
                f"cannot read the response correction {path} ({exc}); re-run `calohls train`"
            ) from None
