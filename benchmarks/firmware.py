"""Firmware benchmarks: the checked firmware of a QAT design (hls4ml C simulation and Verilator against Keras), its
Yosys synthesis, and da4ml's estimate of PTQ designs of float models.

The three benchmarks share, within one run of ``benchmarks/run.py``, the simulated clusters and the trained models
(kept in a folder removed when the process ends), so ``yosys`` synthesises the very design ``rtl_check`` checked;
run alone, a benchmark simulates and trains what it needs (the same seeds give the same models).
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import Options, benchmark
from calohls.config import QATConfig, SimConfig, TrainConfig
from calohls.sim.generate import simulate_to_file

#: Cells per cluster of every design: the study's FPGA inputs.
MAX_CELLS = 32
#: Cells per cluster of the QAT designs with --quick: Yosys takes minutes on the 32-cell design of a short training.
QUICK_QAT_CELLS = 8
#: Precision of the PTQ designs costed by ``ptq_estimate`` (the study's default integer bits).
PTQ_PRECISION = "ap_fixed<16,10>"
#: Float presets costed by ``ptq_estimate``.
PTQ_PRESETS = ("tiny", "small", "medium")

_cache_dir: Path | None = None


def _cache() -> Path:
    """A folder for the clusters and models shared by the benchmarks of this process, removed at exit."""
    global _cache_dir
    if _cache_dir is None:
        _cache_dir = Path(tempfile.mkdtemp(prefix="calohls-bench-firmware-"))
        atexit.register(shutil.rmtree, _cache_dir, True)
    return _cache_dir


def _presets(opts: Options) -> tuple[str, ...]:
    """The QAT designs measured: tiny, and small as well with ``--full``."""
    return ("tiny", "small") if opts.full else ("tiny",)


def _clusters(opts: Options) -> Path:
    """A simulated cluster file (default particle mix, μ = 200) with at least the clusters the checks need."""
    events = 4_000 if opts.quick else 13_000  # ≈ 0.86 clusters per event: > 10,000 clusters for the full check
    path = _cache() / f"clusters_{events}.h5"
    if not path.exists():
        simulate_to_file(SimConfig(events=events, seed=11), path, workers=opts.workers)
    return path


def _qat_cells(opts: Options) -> int:
    return QUICK_QAT_CELLS if opts.quick else MAX_CELLS


def _qat_run(opts: Options, preset: str) -> tuple[Path, float | None]:
    """A QAT run of ``preset`` (:data:`MAX_CELLS` cells, :data:`QUICK_QAT_CELLS` with --quick); its folder and the
    training seconds (None if it was made before in this process)."""
    from calohls.model.qat import train_qat

    epochs = 3 if opts.quick else 20
    run = _cache() / f"qat_{preset}_{epochs}"
    if run.exists():
        return run, None
    model = {"preset": preset, "max_cells": _qat_cells(opts)}
    config = QATConfig.model_validate({"model": model, "epochs": epochs, "seed": 5})
    start = time.perf_counter()
    train_qat(_clusters(opts), run, config)
    return run, time.perf_counter() - start


def _float_run(opts: Options, preset: str) -> Path:
    """A float run of ``preset`` at :data:`MAX_CELLS` cells."""
    from calohls.model.train import train

    epochs = 2 if opts.quick else 10
    run = _cache() / f"float_{preset}_{epochs}"
    if not run.exists():
        config = TrainConfig.model_validate(
            {"model": {"preset": preset, "max_cells": MAX_CELLS}, "epochs": epochs, "patience": epochs, "seed": 5}
        )
        train(_clusters(opts), run, config)
    return run


def _inputs(run: Any, n: int) -> np.ndarray:
    """Network inputs of the first ``n`` clusters of the run's file (training, validation and test alike)."""
    from calohls.data.features import cell_features
    from calohls.data.hdf5 import open_clusters
    from calohls.physics.evaluate import read_clusters_at

    with open_clusters(run.data_path) as f:
        n = min(n, f.n_clusters)
    batch = read_clusters_at(run.data_path, np.arange(n), max_cells=run.scaler.max_cells)
    return run.scaler.transform(cell_features(batch, run.scaler.max_cells))


def _parameters(model: Any) -> int:
    """Weights and biases (not the bit widths an HGQ2 model also keeps)."""
    from benchmarks.training import network_parameters

    return network_parameters(model)


def _estimate(estimate: dict[str, Any]) -> dict[str, Any]:
    keys = ("LUT", "FF", "stages", "latency_ns", "input_bits", "output_bits")
    return {k: estimate[k] for k in keys if k in estimate}


# -- 1. the RTL check ------------------------------------------------------------------------------------------------
def _rtl_check_one(opts: Options, preset: str, clusters: int) -> dict[str, Any]:
    from calohls.firmware.build import build_firmware
    from calohls.model.run_folder import open_run

    run_dir, qat_s = _qat_run(opts, preset)
    run = open_run(run_dir, "qat")
    x = _inputs(run, clusters)
    result = build_firmware(run.model, x, opts.scratch / f"firmware_{preset}", synth=False)
    t = result.timings
    return {
        "preset": preset,
        "max_cells": _qat_cells(opts),
        "parameters": _parameters(run.model),
        "ebops": run.info["ebops"],
        "qat_epochs": run.info["epochs"],
        "qat_s": qat_s,
        "clusters": result.clusters_checked,
        "keras_predict_s": t["keras_predict"],
        "hls_csim": {
            "build_s": t["hls_compile"],
            "predict_s": t["hls_predict"],
            "total_s": t["hls_compile"] + t["hls_predict"],
        },
        "verilator": {
            "write_s": t["rtl_write"],
            "build_s": t["rtl_compile"],
            "predict_s": t["rtl_predict"],
            "clusters_per_s": result.clusters_checked / max(t["rtl_predict"], 1e-9),
        },
        "total_s": t["total"],
        "differing": result.differing,
        "bit_exact": result.bit_exact,
        "estimate": _estimate(result.estimate),
        "latency_cycles": result.latency_cycles,
        "latency_ns": result.latency_ns,
        "ii": result.ii,
    }


@benchmark()
def rtl_check(opts: Options) -> dict[str, Any]:
    """Checked firmware of a QAT design (tiny at 32 cells; small too with --full) on 10,000 clusters: hls4ml
    C-simulation and Verilator build and run times, RTL-check rate, differing outputs (must be 0), da4ml estimate.

    ``build_firmware(..., synth=False)``; the clusters are the first of a 13,000-event simulation the model was
    trained on (20 QAT epochs). With --quick: 8 cells, 3 epochs, 4,000 events and 2,000 clusters.
    """
    clusters = 2_000 if opts.quick else 10_000
    rows = {preset: _rtl_check_one(opts, preset, clusters) for preset in _presets(opts)}
    summary = []
    for preset, r in rows.items():
        hls, rtl, est = r["hls_csim"], r["verilator"], r["estimate"]
        summary += [
            f"{preset} at {r['max_cells']} cells ({r['parameters']:,} parameters, {r['ebops']:,} EBOPs) on "
            f"{r['clusters']:,} clusters: differing hls {r['differing']['hls']}, rtl {r['differing']['rtl']} "
            f"({'bit-exact' if r['bit_exact'] else 'NOT bit-exact'})",
            f"    hls4ml csim: build {hls['build_s']:.1f} s + predict {hls['predict_s']:.2f} s; Verilator: build "
            f"{rtl['build_s']:.1f} s, predict {rtl['predict_s']:.2f} s = {rtl['clusters_per_s']:,.0f} clusters/s",
            f"    da4ml estimate: {est['LUT']:,} LUT, {est['FF']:,} FF, {est['stages']} stages "
            f"({r['latency_ns']:g} ns, II {r['ii']})",
        ]
    return {
        "clusters": clusters,
        "designs": rows,
        "all_bit_exact": all(r["bit_exact"] for r in rows.values()),
        "summary": summary,
    }


# -- 2. Yosys --------------------------------------------------------------------------------------------------------
def _yosys_one(opts: Options, preset: str) -> dict[str, Any]:
    from calohls.firmware.rtl import synthesize, write_rtl
    from calohls.model.run_folder import open_run

    run_dir, _ = _qat_run(opts, preset)
    model = open_run(run_dir, "qat").model
    start = time.perf_counter()
    design = write_rtl(model, opts.scratch / f"rtl_{preset}")
    write_s = time.perf_counter() - start
    synth = synthesize(design)
    est = design.estimate.to_json()
    return {
        "preset": preset,
        "max_cells": _qat_cells(opts),
        "write_s": write_s,
        "seconds": synth.seconds,
        "family": synth.family,
        "yosys": synth.yosys,
        **synth.resources,
        "estimate": _estimate(est),
        "lut_ratio": synth.lut / est["LUT"] if est["LUT"] else None,
        "ff_ratio": synth.ff / est["FF"] if est["FF"] else None,
        "timing": synth.timing.to_json(),
    }


def _stage_depths(timing: dict[str, Any]) -> str:
    return ", ".join(f"{s['lut_levels']}+{s['carry_cells']}" for s in timing["stages"])


@benchmark()
def yosys(opts: Options) -> dict[str, Any]:
    """Yosys ``synth_xilinx`` (xcup) of the rtl_check design: seconds, LUT/FF/CARRY/DSP and their ratio to da4ml's
    estimate, and the per-stage timing estimate of its netlist."""
    rows = {preset: _yosys_one(opts, preset) for preset in _presets(opts)}
    summary = [
        f"{p} at {r['max_cells']} cells: {r['seconds']:.1f} s; {r['LUT']:,} LUT, {r['FF']:,} FF, {r['CARRY']:,} CARRY, "
        f"{r['DSP']} DSP; Yosys / da4ml estimate: LUT ×{r['lut_ratio']:.2f} (estimate {r['estimate']['LUT']:,}), "
        f"FF ×{r['ff_ratio']:.2f} (estimate {r['estimate']['FF']:,}); estimated period "
        f"{r['timing']['period_estimate_ns']:.2f} ns ({r['timing']['fmax_estimate_mhz']:.0f} MHz), stages (LUT levels, "
        f"CARRY4): {_stage_depths(r['timing'])}"
        for p, r in rows.items()
    ]
    return {"designs": rows, "summary": summary}


# -- 3. da4ml estimate of PTQ designs --------------------------------------------------------------------------------
@benchmark()
def ptq_estimate(opts: Options) -> dict[str, Any]:
    """Seconds of ``ptq_estimate`` (da4ml trace + pipeline of the hls4ml computation, nothing written) of the
    tiny/small/medium float models at 32 cells, ap_fixed<16,10>; with LUT/FF/stages.

    A first call on the tiny model (imports, compilation of the emulator's kernels) is timed apart as the warm-up.
    """
    from calohls.firmware.ptq_rtl import ptq_estimate as estimate
    from calohls.model.run_folder import open_run

    models = {preset: open_run(_float_run(opts, preset), "train").model for preset in PTQ_PRESETS}
    start = time.perf_counter()
    estimate(models["tiny"], PTQ_PRECISION)
    warmup_s = time.perf_counter() - start
    rows = {}
    for preset, model in models.items():
        start = time.perf_counter()
        est = estimate(model, PTQ_PRECISION).to_json()
        rows[preset] = {
            "parameters": _parameters(model),
            "seconds": time.perf_counter() - start,
            **_estimate(est),
            "latency_cycles": est["latency_cycles"],
        }
    summary = [f"{PTQ_PRECISION} at {MAX_CELLS} cells; warm-up call {warmup_s:.1f} s"]
    summary += [
        f"{p:7s} ({r['parameters']:5,d} parameters): {r['seconds']:6.2f} s; {r['LUT']:7,} LUT, {r['FF']:6,} FF, "
        f"{r['stages']} stages"
        for p, r in rows.items()
    ]
    return {
        "precision": PTQ_PRECISION,
        "max_cells": MAX_CELLS,
        "warmup_s": warmup_s,
        "presets": rows,
        "summary": summary,
    }
