"""The L0 system view of a firmware design: how many topo-clusters per bunch crossing it calibrates.

At the HL-LHC the L0 trigger sees a bunch crossing every 25 ns (40 MHz) and must calibrate every topo-cluster of
it. One instance of a pipelined design at initiation interval II and clock f takes a new cluster every II clock
cycles: ``floor(25 ns · f / II)`` whole clusters per crossing on a fixed schedule (10 at 400 MHz and II 1). The
clock is the target clock, or the estimated fmax where that is lower (:mod:`calohls.firmware.timing`). Instances are
replicated within a LUT budget (the study's ``lut_budget``, by default 34,560 LUT = 2 % of a VU13P):
``floor(budget / LUT per instance)`` instances serve ``instances × per instance`` clusters per crossing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["BUNCH_CROSSING_NS", "DEFAULT_LUT_BUDGET", "L0View", "l0_view"]

#: Time between LHC bunch crossings in ns (40 MHz).
BUNCH_CROSSING_NS = 25.0
#: LUTs the calibration may use when no budget is given: 2 % of a VU13P (1.728 M LUT), the study's default.
DEFAULT_LUT_BUDGET = 34_560


@dataclass(frozen=True)
class L0View:
    """Clusters per bunch crossing of one design, alone and replicated within a LUT budget.

    Attributes:
        clock_mhz: The clock the design runs at: the target, or the estimated fmax where lower.
        clock_source: ``target`` or ``estimate`` (which of the two set ``clock_mhz``), or ``target (no estimate)``.
        ii: Initiation interval in clock cycles.
        clusters_per_bx_per_instance: Whole clusters one instance takes per 25 ns crossing.
        lut_per_instance: LUTs of one instance.
        lut_budget: LUTs all instances may use together.
        instances: Instances within the budget.
        clusters_per_bx: Clusters per crossing of all instances.
    """

    clock_mhz: float
    clock_source: str
    ii: int
    clusters_per_bx_per_instance: int
    lut_per_instance: int
    lut_budget: int
    instances: int
    clusters_per_bx: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> L0View:
        return cls(**data)


def l0_view(
    lut: int, ii: int, target_period_ns: float, period_estimate_ns: float | None, lut_budget: int = DEFAULT_LUT_BUDGET
) -> L0View:
    """The L0 view of a design of ``lut`` LUTs at initiation interval ``ii`` (see the module notes).

    Args:
        lut: LUTs of one instance (Yosys count, or da4ml's estimate without synthesis).
        ii: Initiation interval in cycles (≥ 1).
        target_period_ns: The target clock period.
        period_estimate_ns: The estimated shortest period, or None where timing was not estimated.
        lut_budget: LUTs all instances may use together.
    """
    if lut < 1 or ii < 1 or lut_budget < 1 or not target_period_ns > 0:
        raise ValueError(f"l0_view needs lut, ii, lut_budget ≥ 1 and a positive period; got {lut}, {ii}, {lut_budget}")
    period, source = target_period_ns, "target (no estimate)"
    if period_estimate_ns is not None:
        source = "estimate" if period_estimate_ns > target_period_ns else "target"
        period = max(target_period_ns, period_estimate_ns)
    # a hair of tolerance: 25 ns / 2.5 ns is 10 clusters, not 9 after rounding
    per_instance = math.floor(BUNCH_CROSSING_NS / (ii * period) + 1e-9)
    instances = lut_budget // lut
    return L0View(
        round(1000.0 / period, 1),
        source,
        ii,
        per_instance,
        lut,
        lut_budget,
        instances,
        instances * per_instance,
    )
