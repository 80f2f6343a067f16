"""Benchmarks of the data stage: simulation throughput, EM resolution of the calorimeter, cluster response."""

from __future__ import annotations

import math
import sys
import time
from typing import Any

import numpy as np

from benchmarks import Options, benchmark, best_of
from calohls.config import SimConfig
from calohls.data.hdf5 import open_clusters
from calohls.physics.response import log_bins, resolution_label, summarize_response
from calohls.sim.generate import simulate, simulate_batch, simulate_to_file

#: The project's goal for the end-to-end simulation (simulate + topo-cluster + write), clusters per second.
GOAL_CLUSTERS_PER_S = 20_000

#: Photon energies (GeV) of the EM resolution scan; each is simulated in a ±1 % log window.
EM_ENERGIES = (2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0)

_SCALARS = ("e_em", "e_true", "particle", "e_particle", "cluster_index")


def _scalars(config: SimConfig, workers: int) -> dict[str, np.ndarray]:
    """The scalars needed here of every cluster of a simulated run, joined over batches."""
    parts: dict[str, list[np.ndarray]] = {k: [] for k in _SCALARS}
    for batch in simulate(config, workers=workers):
        for k in _SCALARS:
            parts[k].append(np.asarray(batch.scalars[k]))
    return {k: np.concatenate(v) for k, v in parts.items()}


def _warm_up(mu: float) -> None:
    """Compile or load the numba kernels and build the geometry of ``mu`` in this process (forked workers
    inherit both), so that timings measure the steady state."""
    simulate_batch(SimConfig(events=200, batch_events=200, mu=mu), 0)


# -- 1. simulation throughput ------------------------------------------------------------------------------------
@benchmark()
def simulate_throughput(opts: Options) -> dict[str, Any]:
    """End-to-end ``simulate_to_file`` of the default particle mix at μ=200, the same without writing, and one
    batch in a single process."""
    events = 20_000 if opts.quick else 200_000
    repeats = 1 if opts.quick else 2
    config = SimConfig(events=events, mu=200.0, seed=1)
    _warm_up(config.mu)

    path = opts.scratch / "throughput.h5"
    write_s, nowrite_s = math.inf, math.inf
    n_written = n_iterated = 0
    size = 0
    # alternate the two so that a change of load on the machine affects both alike
    for _ in range(repeats):
        t0 = time.perf_counter()
        simulate_to_file(config, path, overwrite=True, workers=opts.workers)
        write_s = min(write_s, time.perf_counter() - t0)
        size = path.stat().st_size
        with open_clusters(path) as f:
            n_written = f.n_clusters
        path.unlink()

        t0 = time.perf_counter()
        n_iterated = sum(len(batch) for batch in simulate(config, workers=opts.workers))
        nowrite_s = min(nowrite_s, time.perf_counter() - t0)

    one = SimConfig(events=2000, batch_events=2000, mu=200.0, seed=1)
    simulate_batch(one, 0)  # warm-up
    single_s, batch = best_of(lambda: simulate_batch(one, 0), 3)

    rate = n_written / write_s
    rate_nowrite = n_iterated / nowrite_s
    rate_single = len(batch) / single_s
    meets_goal = bool(rate >= GOAL_CLUSTERS_PER_S)
    return {
        "config": {
            "particles": list(config.particles),
            "mu": config.mu,
            "events": events,
            "seed": config.seed,
            "batch_events": config.batch_events,
            "max_cells": config.max_cells,
        },
        "workers": opts.workers,
        "start_method": "spawn" if "jax" in sys.modules else "fork",
        "repeats": repeats,
        "write": {
            "wall_s": write_s,
            "events_per_s": events / write_s,
            "clusters": n_written,
            "clusters_per_s": rate,
            "file_mb": size / 1e6,
            "bytes_per_cluster": size / max(n_written, 1),
        },
        "no_write": {
            "wall_s": nowrite_s,
            "events_per_s": events / nowrite_s,
            "clusters": n_iterated,
            "clusters_per_s": rate_nowrite,
        },
        "write_share_of_time": 1.0 - nowrite_s / write_s,
        "single_process": {
            "events": one.events,
            "clusters": len(batch),
            "wall_s": single_s,
            "events_per_s": one.events / single_s,
            "clusters_per_s": rate_single,
            "repeats": 3,
        },
        "goal_clusters_per_s": GOAL_CLUSTERS_PER_S,
        "meets_goal": meets_goal,
        "summary": [
            f"{events:,} events at μ=200, {opts.workers} workers, best of {repeats}",
            f"simulate + write : {rate:9,.0f} clusters/s  {events / write_s:8,.0f} events/s  ({write_s:.1f} s, "
            f"{size / 1e6:.0f} MB, {size / max(n_written, 1):.0f} B/cluster)",
            f"simulate only    : {rate_nowrite:9,.0f} clusters/s  {events / nowrite_s:8,.0f} events/s  "
            f"({nowrite_s:.1f} s; writing takes {100 * (1 - nowrite_s / write_s):.0f} % of the time)",
            f"single process   : {rate_single:9,.0f} clusters/s  (one batch of {one.events} events, best of 3)",
            f"goal {GOAL_CLUSTERS_PER_S:,} clusters/s end-to-end: {'met' if meets_goal else 'NOT met'}",
        ],
    }


# -- 2. EM resolution --------------------------------------------------------------------------------------------
def _em_model(e: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    """σ/E = a/√E ⊕ b ⊕ c/E."""
    return np.sqrt(a * a / e + b * b + (c / e) ** 2)


def _width(r: np.ndarray) -> tuple[float, float]:
    """Median and σ/E = ((q84 − q16) / 2) / median of the response ``r`` (along the last axis)."""
    q16, med, q84 = np.quantile(r, (0.16, 0.5, 0.84), axis=-1)
    return med, (q84 - q16) / 2 / med


def _em_scan(mu: float, events: int, workers: int) -> dict[str, Any]:
    from scipy.optimize import curve_fit

    rng = np.random.default_rng(12345)
    rows = []
    for i, energy in enumerate(EM_ENERGIES):
        config = SimConfig(
            particles=("gamma",), events=events, mu=mu, seed=1000 + i, e_min=0.99 * energy, e_max=1.01 * energy
        )
        s = _scalars(config, workers)
        lead = s["cluster_index"] == 0
        e_true = s["e_true"][lead].astype(np.float64)
        r = s["e_em"][lead].astype(np.float64) / e_true
        median, rel = _width(r)
        # bootstrap uncertainty of σ/E: 200 resamples of the leading clusters
        _, rel_boot = _width(r[rng.integers(0, r.size, (200, r.size))])
        rows.append({
            "energy": energy,
            "e_true_mean": float(e_true.mean()),
            "clusters": int(r.size),
            "median": float(median),
            "sigma_r": float(rel * median),
            "sigma_over_e": float(rel),
            "sigma_over_e_err": float(rel_boot.std(ddof=1)),
        })  # fmt: skip

    e = np.array([row["e_true_mean"] for row in rows])
    y = np.array([row["sigma_over_e"] for row in rows])
    dy = np.array([row["sigma_over_e_err"] for row in rows])
    popt, pcov = curve_fit(_em_model, e, y, p0=(0.1, 0.01, 0.1), sigma=dy, absolute_sigma=True, bounds=(0.0, np.inf))
    perr = np.sqrt(np.diag(pcov))
    fitted = _em_model(e, *popt)
    chi2 = float((((y - fitted) / dy) ** 2).sum())
    for row, f in zip(rows, fitted, strict=True):
        row["fit"] = float(f)
    a, b, c = (float(x) for x in popt)
    da, db, dc = (float(x) for x in perr)
    return {
        "mu": mu,
        "events_per_energy": events,
        "a": a,
        "a_err": da,
        "b": b,
        "b_err": db,
        "c": c,
        "c_err": dc,
        "chi2": chi2,
        "ndf": len(rows) - 3,
        "table": rows,
    }


@benchmark()
def em_resolution(opts: Options) -> dict[str, Any]:
    """Photon resolution σ/E = a/√E ⊕ b ⊕ c/E of leading clusters at fixed energies, at μ=0 and μ=200."""
    events = 1000 if opts.quick else 4000
    fits = {f"mu{mu:g}": _em_scan(float(mu), events, opts.workers) for mu in (0, 200)}
    summary = []
    for fit in fits.values():
        summary.append(
            f"μ={fit['mu']:<3g}: a = {100 * fit['a']:.2f} ± {100 * fit['a_err']:.2f} %/√E, "
            f"b = {100 * fit['b']:.2f} ± {100 * fit['b_err']:.2f} %, c = {fit['c']:.3f} ± {fit['c_err']:.3f} GeV "
            f"(χ²/ndf = {fit['chi2']:.1f}/{fit['ndf']})"
        )
        summary.append("    E [GeV]  clusters  median R   σ/E [%]   fit [%]")
        for row in fit["table"]:
            summary.append(
                f"    {row['e_true_mean']:7.1f}  {row['clusters']:8d}  {row['median']:8.4f}  "
                f"{100 * row['sigma_over_e']:5.2f}±{100 * row['sigma_over_e_err']:.2f}  {100 * row['fit']:7.2f}"
            )
    a0 = fits["mu0"]["a"]
    summary.append(f"EM stochastic term: a = {100 * a0:.1f} %/√E (expected ≈ 10 %/√E)")
    return {
        "particle": "gamma",
        "energies": list(EM_ENERGIES),
        "energy_window": "±1 % (log-uniform), E in the fit = mean e_true of the leading clusters",
        "width": "σ_R = (q84 − q16) / 2 of R = e_em / e_true; σ/E = σ_R / median(R); errors by bootstrap",
        "model": "σ/E = sqrt((a/√E)² + b² + (c/E)²), E in GeV",
        "expected": {"a": 0.10, "b": 0.007},
        "fits": fits,
        "summary": summary,
    }


# -- 3. response summary -----------------------------------------------------------------------------------------
@benchmark()
def response_summary(opts: Options) -> dict[str, Any]:
    """Median EM-scale response and resolution of leading clusters per particle group and bin of e_true."""
    events = 10_000 if opts.quick else 40_000
    config = SimConfig(events=events, mu=200.0, seed=2)
    s = _scalars(config, opts.workers)
    lead = s["cluster_index"] == 0
    pdg = s["particle"][lead]
    groups = {"pi0": pdg == 111, "pi+-": np.abs(pdg) == 211}
    bins = log_bins(0.5, 500.0, per_decade=3)
    tables = summarize_response(s["e_true"][lead], s["e_em"][lead], bins, groups)

    label = resolution_label()
    summary = [f"{events:,} events at μ=200, leading clusters; R = e_em / e_true; resolution = {label}"]
    summary.append("    e_true [GeV]        " + "".join(f"{name:>24}" for name in tables))
    summary.append("                        " + "".join(f"{'n':>8}{'median':>8}{'resol.':>8}" for _ in tables))
    for i in range(len(bins) - 1):
        line = f"    {bins[i]:7.2f} – {bins[i + 1]:7.2f}   "
        for t in tables.values():
            med, res = t.median[i], t.resolution[i]
            line += f"{t.counts[i]:8d}" + (f"{med:8.3f}{res:8.3f}" if np.isfinite(med) else f"{'–':>8}{'–':>8}")
        summary.append(line)
    return {
        "config": {"particles": list(config.particles), "mu": config.mu, "events": events, "seed": config.seed},
        "selection": "leading cluster of each event (cluster_index == 0)",
        "response": "e_em / e_true",
        "groups": {"pi0": "PDG 111", "pi+-": "PDG ±211"},
        "clusters": {name: int(mask.sum()) for name, mask in groups.items()},
        "tables": {name: t.to_dict() for name, t in tables.items()},
        "summary": summary,
    }
