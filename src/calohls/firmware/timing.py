"""Timing estimate of da4ml's pipelined Verilog without vendor tools: the longest register-to-register path of
each pipeline stage in the Yosys netlist, and its delay under a documented UltraScale+ delay model.

:func:`netlist_timing` reads the netlist that ``synth.ys`` writes (``write_json netlist.json`` after
``synth_xilinx -family xcup -flatten``) and walks it in topological order. Every path starts at a flip-flop's
output (clock-to-Q) and ends at a flip-flop's D input (setup); between them it passes LUTs (``LUT1``–``LUT6``,
``INV``), wide multiplexers (``MUXF7``/``MUXF8``) and carry elements (``CARRY4``/``CARRY8``), each with a cell
delay, and the nets between them, each with a net delay. A path belongs to stage *i* when it ends at a flip-flop
fed by ``stage<i>.model_out`` (da4ml instantiates the stages as ``stage0``, ``stage1``, … between its registers;
alkaid, its successor, as ``_inst_logic<i>``).
Per stage, the path of largest delay is reported with its counts of LUT levels, carry elements and multiplexers.

Delay model (:data:`ULTRASCALE_PLUS`, ns, UltraScale+ -2 or slower)
--------------------------------------------------------------------
The AMD data sheet DS923 tabulates no CLB delays; the figures are those Vivado's timing model reports for
UltraScale+ cells (``report_timing`` of public UltraScale+ designs, Vivado 2021.2, speed grade -1 — slightly
slower than the -2 of the VU13P, so the estimate errs on the slow side):

* flip-flop clock-to-Q 0.09 (``Prop_FDRE_C_Q`` 0.093); setup plus clock uncertainty 0.10;
* LUT 0.10 (``Prop_LUTn_I_O`` 0.04–0.12, the larger for a LUT's slow inputs);
* routed net between cells 0.30: Vivado's pre-placement estimates are 0.14–0.29 ns for fanouts of 1–9, and
  UG949 (UltraFast Design Methodology) notes that routing is more than half of a typical UltraScale path;
* a LUT feeding the carry chain or an F7/F8 multiplexer of its own slice 0.03 (``net`` 0.025 in the reports);
* entering a carry chain (``S``/``DI`` → ``CO``) 0.20 (``Prop_CARRY8_S_CO`` 0.245, ``_DI_CO`` 0.15–0.18);
  rippling through a further CARRY8 (``CI`` → ``CO``) 0.03, i.e. 0.015 per CARRY4 (Yosys 0.23 maps ``xcup``
  adders to CARRY4, two per CARRY8 of 8 bits, UG574), over the dedicated cascade (``net`` 0.007);
* ``MUXF7``/``MUXF8`` 0.08.

One LUT level with its net is thus 0.40 ns and one adder (LUT, carry entry, a short chain, the net out) about
0.65 ns, against the 0.5 ns per adder level that calohls gives da4ml to cut the stages
(:data:`calohls.firmware.rtl.ADDER_DELAY_NS`). Yosys does not optimise for timing and Vivado may map adders more
shallowly, so the estimate is a screening figure, not a sign-off. It agrees with the published HGQ2 → da4ml
designs (JEDI-linear on a VU13P, 19–28 stages at a 2 ns target), which closed at achieved periods above their target:
a stage cut at da4ml's nominal delay is longer in silicon.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from calohls.errors import HLSError

__all__ = ["ULTRASCALE_PLUS", "DelayModel", "StageTiming", "TimingEstimate", "netlist_timing", "read_netlist_timing"]


@dataclass(frozen=True)
class DelayModel:
    """Delays in ns of the cells and nets of a path (see the module notes for their sources)."""

    clock_to_q: float = 0.09
    setup: float = 0.10
    lut: float = 0.10
    net: float = 0.30
    local_net: float = 0.03
    carry_entry: float = 0.20
    carry8_ripple: float = 0.03
    carry_cascade: float = 0.007
    muxf: float = 0.08
    name: str = "UltraScale+ (Vivado cell delays of -1/-2 parts, 0.30 ns per routed net)"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DelayModel:
        return cls(**data)


#: The default delay model (UltraScale+, see the module notes).
ULTRASCALE_PLUS = DelayModel()


@dataclass(frozen=True)
class StageTiming:
    """The longest register-to-register path of one pipeline stage.

    Attributes:
        stage: Stage index (0 = the first after the input register).
        delay_ns: Estimated delay of the path, clock-to-Q and setup included.
        lut_levels: LUTs (and inverters) on the path.
        carry_cells: Carry elements on the path (``CARRY4`` of Yosys' xcup mapping).
        mux_levels: ``MUXF7``/``MUXF8`` on the path.
    """

    stage: int
    delay_ns: float
    lut_levels: int
    carry_cells: int
    mux_levels: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StageTiming:
        return cls(**data)


@dataclass(frozen=True)
class TimingEstimate:
    """Per-stage longest paths of a pipelined design and the clock they allow.

    Attributes:
        stages: One :class:`StageTiming` per pipeline stage, in order.
        target_period_ns: The clock period the design was pipelined for.
        model: The delay model of the estimate.
    """

    stages: tuple[StageTiming, ...]
    target_period_ns: float
    model: DelayModel = ULTRASCALE_PLUS

    @property
    def period_ns(self) -> float:
        """The estimated shortest clock period: the slowest stage's path."""
        return max(s.delay_ns for s in self.stages)

    @property
    def fmax_mhz(self) -> float:
        return 1000.0 / self.period_ns

    @property
    def met(self) -> bool:
        """Whether every stage fits the target period."""
        return self.period_ns <= self.target_period_ns

    @property
    def effective_period_ns(self) -> float:
        """The period the design runs at: the target, or the estimate where that is longer."""
        return max(self.target_period_ns, self.period_ns)

    def to_json(self) -> dict[str, Any]:
        return {
            "period_estimate_ns": round(self.period_ns, 3),
            "fmax_estimate_mhz": round(self.fmax_mhz, 1),
            "target_period_ns": self.target_period_ns,
            "timing_met": self.met,
            "effective_period_ns": round(self.effective_period_ns, 3),
            "stages": [s.to_json() for s in self.stages],
            "model": self.model.to_json(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TimingEstimate:
        stages = tuple(StageTiming.from_json(s) for s in data["stages"])
        return cls(stages, float(data["target_period_ns"]), DelayModel.from_json(data["model"]))


# -- the netlist walk ------------------------------------------------------------------------------------------------

_LUT = re.compile(r"^(LUT[1-6]|INV)$")
_MUX = re.compile(r"^MUXF[789]$")
_CARRY = re.compile(r"^CARRY(4|8)$")
#: The output of stage i: da4ml 0.6 instantiates the stages as ``stage<i>``, its successor alkaid as ``_inst_logic<i>``.
_STAGE_OUT = re.compile(r"^(?:stage|_inst_logic)(\d+)\.model_out$")


@dataclass(frozen=True)
class _Arrival:
    delay: float
    luts: int = 0
    carries: int = 0
    muxes: int = 0
    kind: str = "ff"  # what drives the bit: ff, lut, mux, carry, other


def _kind(cell_type: str) -> str:
    for kind, pattern in (("lut", _LUT), ("mux", _MUX), ("carry", _CARRY)):
        if pattern.match(cell_type):
            return kind
    return "ff" if cell_type.startswith("FD") else "other"


def _input_delay(kind: str, cell_type: str, port: str, driver: str, model: DelayModel) -> float:
    """Net delay into ``port`` of a cell plus the cell's delay from that port to its outputs."""
    if kind == "carry":
        ripple = model.carry8_ripple / (2 if cell_type == "CARRY4" else 1)
        if port == "CI":
            return (model.carry_cascade if driver == "carry" else model.net) + ripple
        return (model.local_net if driver == "lut" else model.net) + model.carry_entry
    if kind == "mux":
        return (model.local_net if driver in ("lut", "mux") and port != "S" else model.net) + model.muxf
    return model.net + model.lut


def _later(a: _Arrival | None, b: _Arrival) -> _Arrival:
    return b if a is None or b.delay > a.delay else a


def _cell_arrival(cell: Mapping[str, Any], kind: str, arrivals: Mapping[Any, _Arrival], model: DelayModel) -> _Arrival:
    best: _Arrival | None = None
    for port, bits in cell["connections"].items():
        if cell["port_directions"].get(port) != "input":
            continue
        for bit in bits:
            source = arrivals.get(bit)
            if source is None:  # a constant or an undriven bit
                continue
            d = source.delay + _input_delay(kind, cell["type"], port, source.kind, model)
            best = _later(best, _Arrival(d, source.luts, source.carries, source.muxes))
    best = best or _Arrival(0.0)
    return _Arrival(
        best.delay,
        best.luts + (kind == "lut"),
        best.carries + (kind == "carry"),
        best.muxes + (kind == "mux"),
        kind,
    )


def _order(cells: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The combinational cells in topological order (drivers first)."""
    comb = {name: cell for name, cell in cells.items() if not cell["type"].startswith("FD")}
    driver = {}
    for name, cell in comb.items():
        for port, bits in cell["connections"].items():
            if cell["port_directions"].get(port) == "output":
                driver.update((bit, name) for bit in bits if isinstance(bit, int))
    users: dict[str, list[str]] = {name: [] for name in comb}
    waiting = {}
    for name, cell in comb.items():
        deps = {driver[b] for p, bits in _inputs(cell) for b in bits if b in driver}
        waiting[name] = len(deps)
        for dep in deps:
            users[dep].append(name)
    ready = deque(name for name, n in waiting.items() if n == 0)
    order = []
    while ready:
        name = ready.popleft()
        order.append(name)
        for user in users[name]:
            waiting[user] -= 1
            if waiting[user] == 0:
                ready.append(user)
    if len(order) != len(comb):
        raise HLSError(f"the netlist has a combinational loop through {len(comb) - len(order)} cells; no timing")
    return order


def _inputs(cell: Mapping[str, Any]) -> Iterable[tuple[str, list[Any]]]:
    return ((p, bits) for p, bits in cell["connections"].items() if cell["port_directions"].get(p) == "input")


def _stage_of_bits(module: Mapping[str, Any]) -> dict[int, int]:
    stage = {}
    for name, net in module["netnames"].items():
        match = _STAGE_OUT.match(name)
        if match:
            stage.update((bit, int(match.group(1))) for bit in net["bits"] if isinstance(bit, int))
    return stage


def netlist_timing(
    netlist: Mapping[str, Any], top: str, target_period: float, model: DelayModel = ULTRASCALE_PLUS
) -> TimingEstimate:
    """Per-stage longest register-to-register paths of a flattened Yosys JSON netlist of da4ml's Verilog.

    Args:
        netlist: The parsed ``write_json`` output.
        top: The top module (the design's name).
        target_period: The clock period in ns the design was pipelined for.
        model: The delay model.

    Raises:
        HLSError: the netlist lacks the module, its stages, or has a combinational loop.
    """
    module = netlist.get("modules", {}).get(top)
    if module is None:
        raise HLSError(f"the Yosys netlist holds no module {top!r}; was it written after synth_xilinx -flatten?")
    cells = module["cells"]
    arrivals: dict[Any, _Arrival] = {}
    for cell in cells.values():
        if cell["type"].startswith("FD"):
            arrivals.update((bit, _Arrival(model.clock_to_q)) for bit in cell["connections"].get("Q", []))
    for port in module["ports"].values():
        if port["direction"] == "input":
            arrivals.update((bit, _Arrival(0.0)) for bit in port["bits"] if isinstance(bit, int))
    for name in _order(cells):
        cell = cells[name]
        out = _cell_arrival(cell, _kind(cell["type"]), arrivals, model)
        for port, bits in cell["connections"].items():
            if cell["port_directions"].get(port) == "output":
                arrivals.update((bit, out) for bit in bits if isinstance(bit, int))
    return TimingEstimate(
        _stage_paths(cells, arrivals, _stage_of_bits(module), model, top), float(target_period), model
    )


def _stage_paths(
    cells: Mapping[str, Any], arrivals: Mapping[Any, _Arrival], stage_of: Mapping[int, int], model: DelayModel, top: str
) -> tuple[StageTiming, ...]:
    worst: dict[int, _Arrival] = {}
    for cell in cells.values():
        if not cell["type"].startswith("FD"):
            continue
        for bit in cell["connections"].get("D", []):
            if bit in stage_of and bit in arrivals:
                a = arrivals[bit]
                end = _Arrival(a.delay + model.net + model.setup, a.luts, a.carries, a.muxes)
                worst[stage_of[bit]] = _later(worst.get(stage_of[bit]), end)
    if not worst:
        raise HLSError(f"the Yosys netlist of {top!r} has no registers fed by stage<i>.model_out; is it da4ml's?")
    return tuple(StageTiming(i, round(a.delay, 3), a.luts, a.carries, a.muxes) for i, a in sorted(worst.items()))


def read_netlist_timing(
    path: str | os.PathLike[str], top: str, target_period: float, model: DelayModel = ULTRASCALE_PLUS
) -> TimingEstimate:
    """:func:`netlist_timing` of a ``write_json`` file.

    Raises:
        HLSError: the file is missing or not a Yosys JSON netlist, or see :func:`netlist_timing`.
    """
    path = Path(path)
    try:
        netlist = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise HLSError(f"cannot read the Yosys netlist {path} ({type(exc).__name__}); re-run synthesis") from None
    estimate = netlist_timing(netlist, top, target_period, model)
    if not math.isfinite(estimate.period_ns):
        raise HLSError(f"the timing estimate of {path} is not finite")
    return estimate
