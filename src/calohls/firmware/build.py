"""Checked firmware of a quantization-aware trained (HGQ2) DeepSets: hls4ml and da4ml, both compared with Keras.

:func:`build_firmware` makes, in one folder:

1. ``hls/``: the hls4ml project (Vitis, ``io_parallel``, types from the model's quantizers, no precision config);
   its C simulation is run on the given clusters and compared with Keras;
2. ``rtl/``: da4ml's pipelined Verilog (:mod:`calohls.firmware.rtl`); its Verilator simulation is run on the same
   clusters and compared with Keras;
3. Yosys ``synth_xilinx`` counts of that Verilog (``rtl/yosys.log``) and the per-stage timing estimate of its
   netlist (:mod:`calohls.firmware.timing`), unless ``synth=False``;

then ``firmware.json`` (what was checked and found, resources, latency, II, timing estimate, the L0 system view of
:mod:`calohls.firmware.l0`, timings, versions, and :data:`REBUILD_COMMANDS`) and ``config.yaml`` (the resolved
:class:`~calohls.config.FirmwareConfig`). Every script in the folder names its files relative to itself, so the
folder, or a copy of it, rebuilds with the commands of :data:`REBUILD_COMMANDS`. The folder is assembled under a
temporary name and renamed into place at the end; an existing one is replaced only with ``overwrite``.

"Differing" counts clusters whose output is not equal bit for bit to the Keras model's float32 output. Keras
evaluates HGQ2's quantizers in float32, which is exact while the scaled inputs stay below 2^24 (|x| up to ~10^4 to
10^5 for 8 fractional input bits): far beyond standardised features, but inputs of 10^6 and more can make Keras,
not the firmware, round differently.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from calohls.config import FirmwareConfig, dump_config
from calohls.errors import (
    ConfigError,
    ConversionError,
    DataError,
    FileExistsRefusedError,
    HLSError,
    InputFileError,
    NonFiniteError,
)
from calohls.files import atomic_folder, check_parent
from calohls.firmware.l0 import DEFAULT_LUT_BUDGET, L0View, l0_view
from calohls.firmware.rtl import (
    DEFAULT_CLOCK_PERIOD,
    DEFAULT_PART,
    RTLDesign,
    Synthesis,
    check_family,
    compile_rtl,
    is_quantized,
    not_quantized_error,
    pipeline_options,
    rtl_predict,
    synthesize,
    write_rtl,
)
from calohls.firmware.timing import TimingEstimate
from calohls.firmware.tools import find_build_tools, find_verilator, find_yosys, yosys_version
from calohls.versions import versions

if TYPE_CHECKING:
    import keras

__all__ = ["FIRMWARE_KIND", "FirmwareResult", "build_firmware", "firmware_from_run"]

log = logging.getLogger(__name__)

FIRMWARE_KIND = "calohls-firmware"

#: How a copied firmware folder is rebuilt, each step from the folder itself (recorded in ``firmware.json``).
REBUILD_COMMANDS = {
    "yosys": "cd rtl && yosys -s synth.ys",
    "verilator": "sh rtl/sim/build.sh",
    "hls_csim": "cd hls && bash build_lib.sh",
    "hls_synthesis": "cd hls && vitis_hls -f build_prj.tcl",
}


#: Fields of :class:`FirmwareResult` whose JSON form differs from the value.
_NESTED = ("path", "timing", "l0")


@dataclass(frozen=True)
class FirmwareResult:
    """What :func:`build_firmware` built and found (the main fields of ``firmware.json``)."""

    path: Path
    clusters_checked: int
    differing: dict[str, int]
    bit_exact: bool
    resources: dict[str, Any] | None  # Yosys counts (LUT, FF, CARRY, DSP, BRAM); None without synthesis
    estimate: dict[str, Any]  # da4ml's estimate
    latency_cycles: int
    latency_ns: float
    ii: int
    timings: dict[str, float]
    timing: TimingEstimate | None  # per-stage timing estimate; None without synthesis
    l0: L0View  # clusters per bunch crossing

    def to_json(self) -> dict[str, Any]:
        """The result as JSON-ready values (the path as text, the timing estimate and L0 view as their JSON)."""
        plain = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in _NESTED}
        return {
            **plain,
            "path": str(self.path),
            "timing": None if self.timing is None else self.timing.to_json(),
            "l0": self.l0.to_json(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FirmwareResult:
        """The result from :meth:`to_json` output."""
        plain = {f.name: data[f.name] for f in dataclasses.fields(cls) if f.name not in _NESTED}
        timing = None if data["timing"] is None else TimingEstimate.from_json(data["timing"])
        return cls(**plain, path=Path(data["path"]), timing=timing, l0=L0View.from_json(data["l0"]))

    @property
    def latency_estimate_ns(self) -> float:
        """The latency at the target clock, or at the estimated period where that is longer."""
        period = self.timing.effective_period_ns if self.timing is not None else self.latency_ns / self.latency_cycles
        return self.latency_cycles * period


def _inputs(model: keras.Model, x: np.ndarray) -> np.ndarray:
    shape = tuple(int(d) for d in model.input_shape[1:])
    x = np.asarray(x)
    if x.dtype.kind not in "fiu":
        raise DataError(f"x must hold real numbers; got dtype {x.dtype}")
    if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape or len(x) == 0:
        raise DataError(f"x has shape {x.shape}; the model takes n ≥ 1 clusters of shape {shape}")
    if not np.isfinite(x).all():
        raise NonFiniteError("x holds NaN or inf; give finite inputs (padded cells are zeros)")
    return x.astype(np.float32)


def _differing(reference: np.ndarray, other: np.ndarray) -> tuple[int, float]:
    """Clusters whose outputs differ at all, and the largest absolute difference."""
    n = len(reference)
    a, b = reference.reshape(n, -1).astype(np.float64), np.asarray(other, np.float64).reshape(n, -1)
    diff = np.abs(a - b)
    return int(np.any(a != b, axis=1).sum()), float(diff.max(initial=0.0))


@contextlib.contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    """Record the seconds the block takes as ``timings[name]``."""
    start = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - start, 3)


@contextlib.contextmanager
def _logs_kept(staging: Path, out_dir: Path) -> Iterator[None]:
    """Keep the build logs a failed build names: the temporary folder they are in is removed with the failure, so
    each is copied beside the output (``<output>.<file>``, e.g. ``fw.verilator.log``) and the message names the
    copy."""
    try:
        yield
    except HLSError as err:
        message = str(err)
        prefixes = "|".join(re.escape(str(p)) for p in {staging.resolve(), staging.absolute(), staging})
        for found in sorted(set(re.findall(rf"(?:{prefixes})/[^\s;,()']+", message)), key=len, reverse=True):
            log_file = Path(found)
            if log_file.is_file():
                kept = out_dir.with_name(f"{out_dir.name}.{log_file.name}")
                with contextlib.suppress(OSError):
                    shutil.copyfile(log_file, kept)
                    message = message.replace(found, str(kept))
        raise HLSError(message) from None


def _check_tools(synth: bool) -> dict[str, str]:
    """Fail before any work when a tool is missing; their versions."""
    found = {"verilator": find_verilator().version}
    find_build_tools()
    if synth:
        found["yosys"] = yosys_version(find_yosys())
    return found


def _check_hls(
    model: keras.Model, x: np.ndarray, y_keras: np.ndarray, folder: Path, options: dict[str, Any], timings: dict
) -> tuple[int, float]:
    """Convert and compile the hls4ml project in ``folder``; its C simulation compared with Keras."""
    from calohls.firmware.hls import compile_model, convert_quantized, csim_predict, relative_project_paths

    with _timed(timings, "hls_compile"):
        hls_model = convert_quantized(model, folder, part=options["part"], clock_period=options["clock_period"])
        compile_model(hls_model)
    relative_project_paths(folder, folder)
    with _timed(timings, "hls_predict"):
        return _differing(y_keras, csim_predict(hls_model, x))


def _check_rtl(
    model: keras.Model, x: np.ndarray, y_keras: np.ndarray, folder: Path, options: dict[str, Any], timings: dict
) -> tuple[RTLDesign, tuple[int, float]]:
    """Write da4ml's Verilog in ``folder`` and build its simulation; the simulation compared with Keras."""
    with _timed(timings, "rtl_write"):
        design = write_rtl(model, folder, **options)
    with _timed(timings, "rtl_compile"):
        compile_rtl(design)
    with _timed(timings, "rtl_predict"):
        return design, _differing(y_keras, rtl_predict(design, x))


def _firmware_info(
    model: keras.Model,
    design: RTLDesign,
    checks: dict[str, tuple[int, float]],
    synthesis: Synthesis | None,
    system: tuple[TimingEstimate | None, L0View],
    **fields: Any,
) -> dict[str, Any]:
    """The content of ``firmware.json``."""
    differing = {name: n for name, (n, _) in checks.items()}
    synth = synthesis is not None
    timing, l0 = system
    period = timing.effective_period_ns if timing is not None else design.clock_period
    return {
        "kind": FIRMWARE_KIND,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": {"name": model.name, "parameters": int(model.count_params())},
        "source": fields.pop("source"),
        "clusters_checked": fields.pop("clusters_checked"),
        "differing": differing,
        "max_abs_difference": {name: d for name, (_, d) in checks.items()},
        "bit_exact": not any(differing.values()),
        "resources": synthesis.resources if synth else None,
        "cells": synthesis.cells if synth else None,
        "estimate": design.estimate.to_json(),
        "latency": {
            "cycles": design.latency_cycles,
            "ns": design.latency_ns,
            "ns_estimate": round(design.latency_cycles * period, 3),
        },
        "ii": design.ii,
        "clock_period": design.clock_period,
        "latency_cutoff": design.latency_cutoff,
        "latency_levels": design.estimate.latency_levels,
        "timing": timing.to_json() if timing is not None else None,
        "l0": l0.to_json(),
        "family": synthesis.family if synth else None,
        "part": design.part,
        **fields,
        "files": {
            "hls": "hls",
            "hls_build_log": "hls/build.log",
            "rtl": "rtl",
            "verilator_log": "rtl/sim/verilator.log",
            "yosys_script": "rtl/synth.ys" if synth else None,
            "yosys_log": "rtl/yosys.log" if synth else None,
        },
        "rebuild": REBUILD_COMMANDS,
    }


def _system(design: RTLDesign, synthesis: Synthesis | None, lut_budget: int) -> tuple[TimingEstimate | None, L0View]:
    """The timing estimate (with synthesis) and the L0 view of a design."""
    timing = synthesis.timing if synthesis is not None else None
    lut = synthesis.lut if synthesis is not None else design.estimate.lut
    period = timing.period_ns if timing is not None else None
    return timing, l0_view(max(int(lut), 1), design.ii, design.clock_period, period, lut_budget)


def _build(
    model: keras.Model, x: np.ndarray, staging: Path, options: dict[str, Any], synth_family: str | None
) -> tuple[RTLDesign, dict[str, tuple[int, float]], Synthesis | None, dict[str, float]]:
    """The checks of :func:`build_firmware` in ``staging``: hls4ml and Verilator against Keras, then Yosys."""
    timings: dict[str, float] = {}
    start = time.perf_counter()
    with _timed(timings, "keras_predict"):
        y_keras = np.asarray(model.predict(x, batch_size=4096, verbose=0))
    hls_options = {k: options[k] for k in ("clock_period", "part")}
    checks = {"hls": _check_hls(model, x, y_keras, staging / "hls", hls_options, timings)}
    design, checks["rtl"] = _check_rtl(model, x, y_keras, staging / "rtl", options, timings)
    synthesis = None
    if synth_family is not None:
        with _timed(timings, "synth"):
            synthesis = synthesize(design, family=synth_family)
    timings["total"] = round(time.perf_counter() - start, 3)
    return design, checks, synthesis, timings


def _make_folder(
    model: keras.Model,
    x: np.ndarray,
    staging: Path,
    options: dict[str, Any],
    synth_family: str | None,
    lut_budget: int,
    *,
    source: dict[str, Any] | None,
    tools: dict[str, str],
    out_dir: Path,
) -> FirmwareResult:
    """The checks of :func:`build_firmware`, its ``firmware.json`` and ``config.yaml``, written in ``staging`` (to
    become ``out_dir``)."""
    design, checks, synthesis, timings = _build(model, x, staging, options, synth_family)
    system = _system(design, synthesis, lut_budget)
    info = _firmware_info(
        model,
        design,
        checks,
        synthesis,
        system,
        source=source,
        clusters_checked=len(x),
        timings=timings,
        versions={**versions(), **tools},
    )
    (staging / "firmware.json").write_text(json.dumps(info, indent=1))
    config = FirmwareConfig(
        clock_period=options["clock_period"],
        latency_cutoff=options["latency_cutoff"],
        clusters=len(x),
        synth=synth_family is not None,
        lut_budget=lut_budget,
    )
    (staging / "config.yaml").write_text(dump_config(config))
    return FirmwareResult(
        out_dir,
        len(x),
        info["differing"],
        info["bit_exact"],
        info["resources"],
        info["estimate"],
        design.latency_cycles,
        design.latency_ns,
        design.ii,
        timings,
        *system,
    )


def build_firmware(
    model: keras.Model,
    x: np.ndarray,
    out_dir: str | os.PathLike[str],
    *,
    clock_period: float = DEFAULT_CLOCK_PERIOD,
    latency_cutoff: float | None = None,
    synth: bool = True,
    family: str = "xcup",
    part: str = DEFAULT_PART,
    lut_budget: int = DEFAULT_LUT_BUDGET,
    overwrite: bool = False,
    source: dict[str, Any] | None = None,
) -> FirmwareResult:
    """Build the firmware of an HGQ2 model, check it bit for bit against Keras on ``x`` and synthesise it.

    Args:
        model: The HGQ2 model (e.g. the ``model`` of a ``calohls qat`` run).
        x: Network inputs ``[n, N, F]`` (scaled features, padded cells zero) the firmware is checked on.
        out_dir: Folder to write (see the module notes).
        clock_period: Target clock period in ns.
        latency_cutoff: Most combinational delay per pipeline stage in ns (default: the clock period); see
            :func:`calohls.firmware.rtl.pipeline_options`.
        synth: Run Yosys for resource counts and the timing estimate.
        family: Yosys ``synth_xilinx`` family (``xcup``: UltraScale+).
        part: FPGA part of the hls4ml project and of the RTL constraints.
        lut_budget: LUTs of the L0 system view (:mod:`calohls.firmware.l0`).
        overwrite: Replace an existing ``out_dir``.
        source: What the model is (e.g. ``{"run": path}``), recorded in ``firmware.json``.

    Raises:
        ConversionError: the model is not HGQ2 (firmware needs a QAT run), or cannot be converted or traced.
        ConfigError: a clock, pipeline or family option that cannot be met.
        DataError, NonFiniteError: ``x`` does not fit the model or holds NaN/inf.
        FileExistsRefusedError: ``out_dir`` exists and ``overwrite`` is False (before any work).
        ToolMissingError: Verilator, make, a C++ compiler or (with ``synth``) Yosys is missing (before any work).
        HLSError: a C-simulation, Verilator or Yosys build failed; the message names its log.
    """
    if not is_quantized(model):
        raise not_quantized_error(model)
    clock_period, latency_cutoff, _ = pipeline_options(clock_period, latency_cutoff)
    if synth:
        check_family(family)
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsRefusedError(out_dir)
    x = _inputs(model, x)
    tools = _check_tools(synth)
    options = {"clock_period": clock_period, "part": part, "latency_cutoff": latency_cutoff}
    with atomic_folder(out_dir, overwrite=overwrite) as staging, _logs_kept(staging, out_dir):
        result = _make_folder(
            model,
            x,
            staging,
            options,
            family if synth else None,
            lut_budget,
            source=source,
            tools=tools,
            out_dir=out_dir,
        )
    _log_result(result, model)
    return result


def _log_result(result: FirmwareResult, model: keras.Model) -> None:
    out_dir = result.path
    if not result.bit_exact:
        log.warning("firmware in %s is not bit-exact to Keras: %s clusters differ", out_dir, result.differing)
    timing = result.timing.to_json() if result.timing is not None else None
    if timing is not None and not timing["timing_met"]:
        log.warning(
            "firmware in %s: estimated period %.2f ns misses the %.2f ns clock (fmax %.0f MHz)",
            out_dir,
            timing["period_estimate_ns"],
            timing["target_period_ns"],
            timing["fmax_estimate_mhz"],
        )
    log.info("firmware of %s written to %s in %.0f s", model.name, out_dir, result.timings["total"])


def firmware_from_run(
    run_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    config: FirmwareConfig | None = None,
    *,
    family: str = "xcup",
    overwrite: bool = False,
    epoch: int | None = None,
) -> FirmwareResult:
    """:func:`build_firmware` of the model of a ``calohls qat`` run, checked on the first test clusters of the run.

    Args:
        run_dir: A QAT run folder.
        out_dir: Firmware folder to write.
        config: Clock, pipeline, number of test clusters and synthesis switch (default: :class:`FirmwareConfig`).
        family: Yosys ``synth_xilinx`` family.
        overwrite: Replace an existing ``out_dir``.
        epoch: Build this Pareto checkpoint of the run (an epoch in its ``pareto.json``) instead of its selected
            model.

    Raises:
        ConversionError: ``run_dir`` is a float run (stage ``train``): firmware needs ``calohls qat`` first.
        InputFileError: ``run_dir`` is no run folder, is incomplete, or its cluster file is gone.
        and those of :func:`build_firmware`; options, the output path, the run, its data and the tools are checked
        before the model is loaded.
    """
    from calohls.data.features import cell_features
    from calohls.model.run_folder import RUN_STAGES, check_run_data, load_run, open_run
    from calohls.physics.evaluate import read_clusters_at

    config = config or FirmwareConfig()
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    # everything that can be checked without loading the model is checked first, cheapest first
    check_parent(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsRefusedError(out_dir)
    pipeline_options(config.clock_period, config.latency_cutoff)
    if config.synth:
        check_family(family)
    info = load_run(run_dir, RUN_STAGES)
    if info.stage != "qat":
        raise ConversionError(
            f"{run_dir} is a float run (stage {info.stage!r}); firmware needs a quantization-aware run: make one "
            "with `calohls qat` (float designs at a PTQ precision are costed by calohls.firmware.ptq_rtl.ptq_estimate)"
        )
    check_run_data(run_dir, info)
    checkpoint = None if epoch is None else _checkpoint_file(run_dir, epoch)
    _check_tools(config.synth)
    run = open_run(run_dir, "qat")
    if checkpoint is not None:
        run.model.load_weights(checkpoint)
    test = run.file_index("test")
    if test.size == 0:
        raise DataError(f"{run_dir} has no test clusters to check the firmware on; train on a larger data set")
    index = np.sort(test[: config.clusters])
    batch = read_clusters_at(run.data_path, index, max_cells=run.scaler.max_cells)
    x = run.scaler.transform(cell_features(batch, run.scaler.max_cells))
    source = {"run": str(run_dir.resolve()), "stage": "qat", "clusters": f"the first {len(index)} test clusters"}
    source["model"] = "model.keras (the selected checkpoint)" if checkpoint is None else str(checkpoint.name)
    return build_firmware(
        run.model,
        x,
        out_dir,
        clock_period=config.clock_period,
        latency_cutoff=config.latency_cutoff,
        synth=config.synth,
        family=family,
        lut_budget=config.lut_budget or DEFAULT_LUT_BUDGET,
        overwrite=overwrite,
        source=source,
    )


def _checkpoint_file(run_dir: Path, epoch: int) -> Path:
    """The file of the Pareto checkpoint of ``epoch`` in a QAT run folder."""
    try:
        front = json.loads((run_dir / "pareto.json").read_text())
        files = {int(p["epoch"]): run_dir / p["file"] for p in front}
    except (OSError, ValueError, KeyError, TypeError):
        raise InputFileError(f"{run_dir / 'pareto.json'} is missing or corrupt; re-run `calohls qat`") from None
    if epoch not in files:
        raise ConfigError(
            f"epoch={epoch} is no Pareto checkpoint of {run_dir}; choose one of {sorted(files)} (pareto.json)"
        )
    if not files[epoch].is_file():
        raise InputFileError(f"{files[epoch]} not found; re-run `calohls qat` or choose another epoch")
    return files[epoch]
