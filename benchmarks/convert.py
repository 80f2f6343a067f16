"""Benchmark of ``calohls convert``: clusters per second and peak memory of MLTree → HDF5 at ``--max-cells 256``.

The input is a synthetic MLTree file of 20 000 single-pion-like clusters (cells per cluster log-normal, median 20,
up to 600, so that many clusters overflow 256 cells), written by uproot as an RNTuple (the only form in which
uproot writes lists of lists), in GeV / MeV / mm as MLTreeMaker writes; it is linked under several names and all
of them converted into one file, as a grid dataset of many job outputs would be: 5 files (100 000 clusters) with
``--quick``, 50 (1 000 000 clusters) otherwise. The conversion runs as ``python -m calohls convert`` in a child
process, whose own peak resident set size (``ru_maxrss``) is the memory figure.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import Options, benchmark

#: Clusters of the synthetic input file, and its geometry's cells.
CLUSTERS_PER_FILE = 20_000
GEOMETRY_CELLS = 20_000
MAX_CELLS = 256
#: The goal of issue 11: a 1M-cluster conversion at --max-cells 256 under 2 GB peak RSS.
GOAL_PEAK_RSS_MB = 2000.0

_CHILD = """
import resource, sys
from calohls.cli import main
try:
    main(sys.argv[2:], standalone_mode=False)
finally:
    with open(sys.argv[1], "w") as f:
        f.write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
"""


def _geometry(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One geometry entry: ATLAS-like IDs, barrel samplings, mm radii, MeV noise."""
    ids = np.sort(rng.choice(2**28, GEOMETRY_CELLS, replace=False)).astype(np.int64) + 0x2C000000
    sampling = rng.choice([0, 1, 2, 3, 12, 13, 14], GEOMETRY_CELLS)
    return {
        "cell_geo_ID": ids,
        "cell_geo_sampling": sampling.astype(np.int32),
        "cell_geo_eta": rng.uniform(-0.7, 0.7, GEOMETRY_CELLS).astype(np.float32),
        "cell_geo_phi": rng.uniform(-np.pi, np.pi, GEOMETRY_CELLS).astype(np.float32),
        "cell_geo_rPerp": rng.uniform(1400.0, 3600.0, GEOMETRY_CELLS).astype(np.float32),
        "cell_geo_deta": np.full(GEOMETRY_CELLS, 0.025, np.float32),
        "cell_geo_dphi": np.full(GEOMETRY_CELLS, 0.0245, np.float32),
        "cell_geo_sigma": rng.uniform(20.0, 90.0, GEOMETRY_CELLS).astype(np.float32),
    }


def write_input(path: Path, seed: int = 1) -> int:
    """Write the synthetic MLTree file; return its number of cells."""
    import awkward as ak
    import uproot

    rng = np.random.default_rng(seed)
    geo = _geometry(rng)
    n_cl = rng.choice([1, 2, 3], CLUSTERS_PER_FILE // 2, p=[0.3, 0.4, 0.3])
    n_cl = n_cl[np.cumsum(n_cl) <= CLUSTERS_PER_FILE]
    n_cl[-1] += CLUSTERS_PER_FILE - int(n_cl.sum())
    n_cell = np.clip(rng.lognormal(np.log(20.0), 1.0, CLUSTERS_PER_FILE), 1, 600).astype(np.int64)
    total = int(n_cell.sum())
    e_cell = rng.exponential(0.2, total).astype(np.float32)  # GeV
    e_cluster = np.add.reduceat(e_cell.astype(np.float64), np.cumsum(n_cell) - n_cell).astype(np.float32)

    def per_cluster(x: np.ndarray) -> ak.Array:
        return ak.unflatten(x, n_cl)

    def per_cell(x: np.ndarray) -> ak.Array:
        return ak.unflatten(ak.unflatten(x, n_cell), n_cl)

    events = {
        "eventNumber": np.arange(len(n_cl), dtype=np.int64),
        "cluster_E": per_cluster(e_cluster),
        "cluster_ENG_CALIB_TOT": per_cluster(e_cluster * np.float32(1.4)),
        "cluster_Eta": per_cluster(rng.uniform(-0.7, 0.7, CLUSTERS_PER_FILE).astype(np.float32)),
        "cluster_Phi": per_cluster(rng.uniform(-np.pi, np.pi, CLUSTERS_PER_FILE).astype(np.float32)),
        "cluster_nCells": per_cluster(n_cell.astype(np.int32)),
        "cluster_cell_ID": per_cell(geo["cell_geo_ID"][rng.integers(0, GEOMETRY_CELLS, total)]),
        "cluster_cell_E": per_cell(e_cell),
        "truthPartE": ak.unflatten(rng.uniform(2.0, 200.0, len(n_cl)).astype(np.float32), np.ones(len(n_cl), int)),
        "truthPartPdgId": ak.unflatten(np.full(len(n_cl), 211, np.int32), np.ones(len(n_cl), int)),
    }
    for kind, share in (("EM", 0.6), ("nonEM", 0.3), ("Invisible", 0.1), ("Escaped", 0.02)):
        events[f"cluster_cell_hitsE_{kind}"] = per_cell(e_cell * np.float32(share))
    with uproot.recreate(path) as f:
        f["EventTree"] = events
        f["CellGeo"] = {k: ak.unflatten(v, [len(v)]) for k, v in geo.items()}
    return total


def _convert(inputs: list[Path], out: Path, rss_file: Path) -> float:
    """Run the conversion in a child process; return its wall time (its peak RSS is written to ``rss_file``)."""
    args = [str(p) for p in inputs] + ["-o", str(out), "--max-cells", str(MAX_CELLS), "--hide-progress"]
    import calohls

    src = str(Path(calohls.__file__).resolve().parents[1])  # the calohls being benchmarked, also in the child
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", _CHILD, str(rss_file), "convert", *args], check=True, env=env, capture_output=True
    )
    return time.perf_counter() - t0


@benchmark()
def convert_throughput(opts: Options) -> dict[str, Any]:
    """Convert clusters/s and peak RSS of ``calohls convert`` on many MLTree files at ``--max-cells 256``."""
    from calohls.data.hdf5 import open_clusters

    n_files = 5 if opts.quick else 50
    source = opts.scratch / "mltree.root"
    cells = write_input(source)
    inputs = []
    for i in range(n_files):  # the same file under many names, as a dataset of job outputs
        link = opts.scratch / f"user.bench.job._{i:05d}.root"
        os.link(source, link)
        inputs.append(link)
    out, rss_file = opts.scratch / "converted.h5", opts.scratch / "rss.txt"
    seconds = _convert(inputs, out, rss_file)
    peak_mb = int(rss_file.read_text()) / 1024  # ru_maxrss is in KiB on Linux
    with open_clusters(out) as f:
        clusters = f.n_clusters
        config = f.config or {}
    rate = clusters / seconds
    command = f"calohls convert <{n_files} files> -o converted.h5 --max-cells {MAX_CELLS} --hide-progress"
    return {
        "command": command,
        "files": n_files,
        "input_mb_per_file": round(source.stat().st_size / 1e6, 2),
        "cells_per_file": cells,
        "clusters": clusters,
        "seconds": round(seconds, 2),
        "clusters_per_s": round(rate),
        "peak_rss_mb": round(peak_mb),
        "output_mb": round(out.stat().st_size / 1e6, 1),
        "step_size": config.get("step_size"),
        "goal_peak_rss_mb": GOAL_PEAK_RSS_MB,
        "meets_goal": bool(peak_mb < GOAL_PEAK_RSS_MB),
        "summary": [
            f"convert: {clusters:,} clusters from {n_files} files in {seconds:.1f} s = {rate:,.0f} clusters/s "
            f"(child process, python start-up included)",
            f"peak RSS {peak_mb:,.0f} MB at --max-cells {MAX_CELLS} (goal < {GOAL_PEAK_RSS_MB:,.0f} MB)",
        ],
    }
