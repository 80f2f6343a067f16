"""PTQ benchmarks: the bit-exact emulator against hls4ml's C-simulation, and the poster-size sweep."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import Options, benchmark
from calohls.config import SimConfig, TrainConfig
from calohls.sim.generate import simulate_to_file

#: Precisions compared: uniform defaults (low, poster, wide) and weights/data split.
CONFIGS = {
    "ap_fixed<12,4>": ("ap_fixed<12,4>", None),
    "ap_fixed<16,6>": ("ap_fixed<16,6>", None),
    "ap_fixed<18,10>": ("ap_fixed<18,10>", None),
    "ap_fixed<24,12,AP_RND,AP_SAT>": ("ap_fixed<24,12,AP_RND,AP_SAT>", None),
    "weights ap_fixed<8,3>, data ap_fixed<32,14>": ("ap_fixed<32,14>", "ap_fixed<8,3>"),
}


def _trained_run(opts: Options, preset: str, events: int) -> Path:
    from calohls.model.train import train

    data = opts.scratch / "clusters.h5"
    if not data.exists():
        simulate_to_file(SimConfig(events=events, seed=8), data, workers=opts.workers)
    run = opts.scratch / preset
    if not run.exists():
        train(data, run, TrainConfig.model_validate({"model": {"preset": preset}, "epochs": 3}))
    return run


@benchmark()
def emulator_vs_csim(opts: Options) -> dict[str, Any]:
    """Fraction of bit-identical outputs and speed ratio (emulator vs convert + compile + C-simulation)."""
    from calohls.firmware.hls import Precision, compile_model, convert, csim_predict
    from calohls.model.run_folder import open_run
    from calohls.physics.evaluate import read_clusters_at
    from calohls.quant.emulate import Emulator

    run = open_run(_trained_run(opts, "medium", 8_000 if opts.quick else 30_000))
    from calohls.data.features import cell_features

    batch = read_clusters_at(run.data_path, run.file_index("test")[: 1000 if opts.quick else 5000])
    x = run.scaler.transform(cell_features(batch, run.scaler.max_cells))
    rows = {}
    for label, (default, weights) in CONFIGS.items():
        precision = Precision.split(weights=weights, data=default) if weights else Precision(default=default)
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            hls_model = convert(run.model, precision, Path(tmp) / "csim")
            compile_model(hls_model)
            y_csim = csim_predict(hls_model, x)
            csim_s = time.perf_counter() - start
            start = time.perf_counter()
            emulator = Emulator.from_hls(convert(run.model, precision, Path(tmp) / "emu"))
            y_emu = emulator.predict(x)
            emu_s = time.perf_counter() - start
        rows[label] = {
            "clusters": int(x.shape[0]),
            "identical_fraction": float(np.mean(y_emu == y_csim)),
            "csim_s": csim_s,
            "emulate_s": emu_s,
            "speed_ratio": csim_s / emu_s,
        }
    worst = min(r["identical_fraction"] for r in rows.values())
    slowest = min(r["speed_ratio"] for r in rows.values())
    summary = [
        f"{label:45s} identical {r['identical_fraction']:.4f}  csim {r['csim_s']:6.2f} s  emulate "
        f"{r['emulate_s']:6.3f} s  ×{r['speed_ratio']:.0f}"
        for label, r in rows.items()
    ]
    summary.append(f"bit-identical fraction (worst config): {worst}; speed ratio (worst config): ×{slowest:.0f}")
    return {
        "model": run.info["model"],
        "configs": rows,
        "identical_fraction_min": worst,
        "speed_ratio_min": slowest,
        "goal_speed_ratio": 300,
        "meets_goal": bool(worst == 1.0 and slowest >= 300),
        "summary": summary,
    }


@benchmark()
def poster_sweep(opts: Options) -> dict[str, Any]:
    """Three model sizes (tiny, small, medium) × integer bits 2–16 (W=18), total bits 10–32 (I=10) and weight/bias
    bits 4–18 (data ap_fixed<32,14>) on ≥ 20k test clusters, emulated (goal: ≤ 5 minutes on 2 cores)."""
    from calohls.config import PTQConfig
    from calohls.scan.store import ResultStore
    from calohls.stages.ptq import run_ptq

    events = 20_000 if opts.quick else 160_000  # ≈ 21k test clusters for the full run
    runs = [_trained_run(opts, preset, events) for preset in ("tiny", "small", "medium")]
    clusters = 2_000 if opts.quick else 20_000
    config = PTQConfig(sweeps=("int-bits", "total-bits", "weights"), clusters=clusters, workers=opts.workers)
    start = time.perf_counter()
    summary = run_ptq(runs, opts.scratch / "ptq", config).to_json()
    wall = time.perf_counter() - start
    seconds = [r["seconds"] for r in ResultStore(opts.scratch / "ptq" / "results.jsonl")]
    n_points = len(seconds)
    return {
        "points": n_points,
        "clusters": clusters,
        "wall_s": wall,
        "point_seconds_mean": float(np.mean(seconds)),
        "point_seconds_max": float(np.max(seconds)),
        "goal_s": 300,
        "meets_goal": wall <= 300,
        "findings": summary["findings"],
        "summary": [
            f"{n_points} points on {clusters:,} clusters each in {wall:.0f} s "
            f"({np.mean(seconds):.2f} s per point in a worker, {opts.workers} workers)",
            *summary["findings"],
        ],
    }
