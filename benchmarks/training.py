"""Training benchmark: clusters per second through one epoch of DeepSets training, per preset."""

from __future__ import annotations

import json
import time
from typing import Any

from benchmarks import Options, benchmark
from calohls.config import SimConfig, TrainConfig
from calohls.sim.generate import simulate_to_file


@benchmark()
def train_throughput(opts: Options) -> dict[str, Any]:
    """Training speed (clusters/s, forward and backward, batch 512, 64 cells) of the presets on this machine."""
    from calohls.model.train import train

    events = 12_000 if opts.quick else 60_000
    data = opts.scratch / "clusters.h5"
    simulate_to_file(SimConfig(events=events, seed=4), data, workers=opts.workers)
    epochs = 2 if opts.quick else 4
    rows = {}
    for preset in ("tiny", "medium", "large"):
        config = TrainConfig.model_validate({"model": {"preset": preset}, "epochs": epochs, "patience": epochs})
        start = time.perf_counter()
        result = train(data, opts.scratch / preset, config)
        history = json.loads((opts.scratch / preset / "history.json").read_text())
        wall = time.perf_counter() - start
        rows[preset] = {
            "parameters": json.loads((opts.scratch / preset / "run.json").read_text())["model"]["parameters"],
            "train_clusters": result.n_train,
            "epochs": len(history),
            "wall_s": wall,
            "train_clusters_per_s": result.n_train * len(history) / wall,
        }
    summary = [
        f"{p:7s} ({r['parameters']:6,d} parameters): {r['train_clusters_per_s']:8,.0f} training clusters/s "
        f"(epochs incl. validation and overheads)"
        for p, r in rows.items()
    ]
    return {"events": events, "max_cells": 64, "batch_size": 512, "presets": rows, "summary": summary}
