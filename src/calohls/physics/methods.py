"""The calibration methods that ``calohls evaluate`` compares, and the particle groups it compares them on.

One registry per concept: every module that names a method (the evaluation, its figures, the terminal table, the
report) looks it up in :data:`METHODS`; a particle group in :data:`PARTICLE_GROUPS`. Adding a method means one
:class:`Method` entry here (and its calibration class, if new).

A method is *fitted* on the run's training clusters and then *predicts* the energy of any :class:`ClusterBatch`:

* ``em``: the EM scale, the default calibration (nothing to fit);
* ``lcw``: the LCW-like cell weighting (:class:`~calohls.physics.baselines.LCWCalibration`);
* ``gbdt``: a gradient-boosted-tree regression on cluster moments (:class:`~calohls.physics.gbdt.GBDTCalibration`);
* ``oracle``: the EM scale calibrated per *true* particle type (:class:`ParticleOracle`): what a perfect π0/π±
  classification followed by a per-type energy scale could give at best;
* ``deepsets``: the run's network, with its response correction; its prediction comes from the run, not from a fit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np

from calohls.data.schema import PARTICLES, ClusterBatch

__all__ = [
    "GROUPS",
    "METHODS",
    "PARTICLE_GROUPS",
    "Calibration",
    "EMScale",
    "Method",
    "ParticleGroup",
    "ParticleOracle",
    "group_file_tag",
    "group_mask",
    "method_labels",
    "resolution_better_than",
]


class Calibration(Protocol):
    """What a fitted method offers: the calibrated energy of each cluster of a batch, a JSON-ready record of its
    fit, and the files it leaves in the evaluation folder."""

    def predict(self, batch: ClusterBatch) -> np.ndarray: ...

    def to_json(self) -> dict[str, Any]: ...

    def save(self, folder: Path) -> None: ...


@dataclass(frozen=True)
class EMScale:
    """The default calibration: the EM-scale cluster energy ``e_em``."""

    def predict(self, batch: ClusterBatch) -> np.ndarray:
        return np.asarray(batch["e_em"], dtype=np.float64)

    def to_json(self) -> dict[str, Any]:
        return {}

    def save(self, folder: Path) -> None:
        pass


@dataclass(frozen=True, eq=False)
class ParticleOracle:
    """The EM scale divided by its median response, fitted per *true* particle type (|PDG id|: π+ and π− share one).

    The response ``e_em / e_true`` as a function of ``e_em`` is inverted numerically per type
    (:class:`~calohls.model.correction.ResponseCorrection` on the training clusters of that type). A type not seen
    in training keeps the EM scale.
    """

    corrections: dict[int, Any] = field(default_factory=dict)  # |pdg| → ResponseCorrection

    @classmethod
    def fit(cls, batch: ClusterBatch) -> ParticleOracle:
        """One numerical inversion per particle type with at least 20 clusters of positive energies."""
        from calohls.model.correction import ResponseCorrection

        kind = np.abs(np.asarray(batch["particle"]))
        e_true, e_em = np.asarray(batch["e_true"], np.float64), np.asarray(batch["e_em"], np.float64)
        corrections = {}
        for pdg in np.unique(kind).tolist():
            sel = kind == pdg
            if ((e_true[sel] > 0) & (e_em[sel] > 0)).sum() >= 20:
                corrections[int(pdg)] = ResponseCorrection.fit(e_true[sel], e_em[sel])
        return cls(corrections)

    def predict(self, batch: ClusterBatch) -> np.ndarray:
        """The EM-scale energy of each cluster divided by the median response of its true type at that energy."""
        kind = np.abs(np.asarray(batch["particle"]))
        out = np.asarray(batch["e_em"], dtype=np.float64).copy()
        for pdg, correction in self.corrections.items():
            sel = kind == pdg
            out[sel] = correction.apply(out[sel])
        return out

    def to_json(self) -> dict[str, Any]:
        return {"particle_types": sorted(self.corrections)}

    def save(self, folder: Path) -> None:
        pass


def _fit_lcw(batch: ClusterBatch, seed: int) -> Calibration:
    from calohls.physics.baselines import LCWCalibration

    return _LCWMethod(LCWCalibration.fit(batch))


def _fit_gbdt(batch: ClusterBatch, seed: int) -> Calibration:
    from calohls.physics.gbdt import GBDTCalibration

    return GBDTCalibration.fit(batch, seed=seed)


@dataclass(frozen=True)
class _LCWMethod:
    """The LCW-like calibration as a :class:`Calibration`: its record is its training counts, its file ``lcw.json``."""

    lcw: Any

    def predict(self, batch: ClusterBatch) -> np.ndarray:
        return self.lcw.predict(batch)

    def to_json(self) -> dict[str, Any]:
        return dict(self.lcw.training or {})

    def save(self, folder: Path) -> None:
        self.lcw.save(folder / "lcw.json")


@dataclass(frozen=True)
class Method:
    """One calibration method.

    Attributes:
        key: Its key in ``metrics.json`` and the registry.
        label: Its name in figures, tables and the report.
        short: Its column head in the terminal table.
        fit: Builds the calibration from training clusters and a seed; None for a method whose prediction comes
            from the trained run (DeepSets).
    """

    key: str
    label: str
    short: str
    fit: Callable[[ClusterBatch, int], Calibration] | None


#: The methods compared, in the order of tables and legends; DeepSets last.
METHODS: dict[str, Method] = {
    m.key: m
    for m in (
        Method("em", "EM scale", "EM", lambda batch, seed: EMScale()),
        Method("lcw", "LCW-like", "LCW", _fit_lcw),
        Method("gbdt", "GBDT (moments)", "GBDT", _fit_gbdt),
        Method("oracle", "Oracle: EM scale per true type", "Oracle", lambda batch, seed: ParticleOracle.fit(batch)),
        Method("deepsets", "DeepSets", "DS", None),
    )
}


def method_labels() -> dict[str, str]:
    """Key → label of every method, as written in ``metrics.json``."""
    return {key: m.label for key, m in METHODS.items()}


class ParticleGroup(NamedTuple):
    """A particle group: its label in figures, tables and the report, and its PDG ids (empty: every cluster)."""

    label: str
    pdgs: tuple[int, ...]


#: Every particle group: key (as in ``metrics.json`` and the data summary) → :class:`ParticleGroup`.
PARTICLE_GROUPS: dict[str, ParticleGroup] = {
    "all": ParticleGroup("all clusters", ()),
    "pi0": ParticleGroup("π0", (PARTICLES["pi0"],)),
    "pi+-": ParticleGroup("π±", (PARTICLES["pi+"], PARTICLES["pi-"])),
    "gamma": ParticleGroup("γ", (PARTICLES["gamma"],)),
}

#: Particle groups ``calohls evaluate`` compares the methods on, in the order of its tables and figures.
GROUPS: dict[str, ParticleGroup] = {key: PARTICLE_GROUPS[key] for key in ("all", "pi0", "pi+-")}


def group_file_tag(key: str) -> str:
    """A group's word in figure file names: its key without sign characters (``pi+-`` → ``pipm``)."""
    return key.replace("+-", "pm")


def resolution_better_than(what: str) -> str:
    """The claim of a resolution comparison, as the evaluation's verdicts and the report word it."""
    return f"resolution better than {what}"


def group_mask(particle: np.ndarray, pdgs: tuple[int, ...]) -> np.ndarray:
    """The clusters of a group: every cluster when ``pdgs`` is empty, else those of these PDG ids."""
    return np.ones(particle.size, bool) if not pdgs else np.isin(particle, pdgs)
