"""Cluster selections of ``calohls convert --select``: rules on cluster quantities, and counts of what they drop.

A rule is ``QUANTITY OP VALUE`` (``e_em>1``, ``abs_eta<=2.5``), a range ``LOW<QUANTITY<HIGH`` (two rules), or a flag
(``truth_matched``). The quantities and flags are registered once, in :data:`QUANTITIES` and :data:`FLAGS`. A cluster
dropped by several rules is counted under the first of them, in the order given.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from calohls.errors import ConfigError

__all__ = ["FLAGS", "QUANTITIES", "ClusterSelection", "Rule"]

Scalars = Mapping[str, np.ndarray]

#: Quantities a rule may compare: name → (description, value per cluster from the cluster scalars).
QUANTITIES: dict[str, tuple[str, Callable[[Scalars], np.ndarray]]] = {
    "e_em": ("EM-scale cluster energy cluster_E, GeV", lambda s: s["e_em"]),
    "e_true": ("calibration-hit energy cluster_ENG_CALIB_TOT, GeV", lambda s: s["e_true"]),
    "abs_eta": ("|η| of the cluster", lambda s: np.abs(s["eta"])),
}

#: Flags a rule may name: name → (description, keep mask from the cluster scalars).
FLAGS: dict[str, tuple[str, Callable[[Scalars], np.ndarray]]] = {
    "truth_matched": (
        "the cluster holds calibration-hit energy of the truth particle(s): cluster_ENG_CALIB_TOT > 0",
        lambda s: s["e_true"] > 0,
    ),
}

_OPS: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}
_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_CUT = re.compile(rf"^\s*(\w+)\s*(<=|>=|<|>)\s*({_NUM})\s*$")
_RANGE = re.compile(rf"^\s*({_NUM})\s*(<=|<)\s*(\w+)\s*(<=|<)\s*({_NUM})\s*$")


@dataclass(frozen=True)
class Rule:
    """One selection rule: ``quantity op value``, or a flag (``op`` and ``value`` None)."""

    quantity: str
    op: str | None = None
    value: float | None = None

    @property
    def label(self) -> str:
        """The rule as written on the command line (``e_em>1``, ``truth_matched``)."""
        return self.quantity if self.op is None else f"{self.quantity}{self.op}{self.value:g}"

    def keep(self, scalars: Scalars) -> np.ndarray:
        """Boolean mask of the clusters that pass this rule."""
        if self.op is None:
            return np.asarray(FLAGS[self.quantity][1](scalars), bool)
        assert self.value is not None
        return np.asarray(_OPS[self.op](QUANTITIES[self.quantity][1](scalars), self.value), bool)


def _known() -> str:
    return ", ".join([*(f"{q}<x" for q in QUANTITIES), *FLAGS])


def _check_quantity(name: str, text: str) -> None:
    if name not in QUANTITIES:
        raise ConfigError(f"--select {text!r}: unknown quantity {name!r}; use one of {', '.join(QUANTITIES)}")


def _parse_one(text: str) -> tuple[Rule, ...]:
    word = text.strip()
    if word in FLAGS:
        return (Rule(word),)
    if m := _CUT.match(text):
        _check_quantity(m[1], text)
        return (Rule(m[1], m[2], float(m[3])),)
    if m := _RANGE.match(text):
        _check_quantity(m[3], text)
        return Rule(m[3], _FLIP[m[2]], float(m[1])), Rule(m[3], m[4], float(m[5]))
    raise ConfigError(
        f"--select {text!r} is not a rule; write QUANTITY<VALUE, LOW<QUANTITY<HIGH or a flag (e.g. {_known()})"
    )


@dataclass(frozen=True)
class ClusterSelection:
    """Rules every kept cluster passes, applied in order."""

    rules: tuple[Rule, ...] = ()

    @classmethod
    def parse(cls, texts: Sequence[str]) -> ClusterSelection:
        """Rules from their written form (``["e_em>1", "abs_eta<2.5", "truth_matched"]``).

        Raises:
            ConfigError: A text that is no rule, or names an unknown quantity or flag.
        """
        rules: list[Rule] = []
        for text in texts:
            rules.extend(_parse_one(text))
        return cls(tuple(rules))

    def apply(self, scalars: Scalars) -> tuple[np.ndarray, dict[str, int]]:
        """The keep mask of the clusters, and per rule label the clusters it dropped (first failing rule only)."""
        n = len(next(iter(scalars.values()))) if scalars else 0
        keep = np.ones(n, bool)
        dropped: dict[str, int] = {}
        for rule in self.rules:
            fail = keep & ~rule.keep(scalars)
            dropped[rule.label] = dropped.get(rule.label, 0) + int(fail.sum())
            keep &= ~fail
        return keep, dropped

    def to_json(self) -> list[str]:
        """The rules as written (parse them back with :meth:`parse`)."""
        return [rule.label for rule in self.rules]

    @classmethod
    def from_json(cls, data: Sequence[str]) -> ClusterSelection:
        """Inverse of :meth:`to_json`."""
        return cls.parse(data)
