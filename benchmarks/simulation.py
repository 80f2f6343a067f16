"""Benchmarks of the data stage: simulation throughput, EM resolution of the calorimeter, cluster response."""

from __future__ import annotations

import math
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import Options, benchmark, best_of
from calohls.config import SimConfig
from calohls.physics.response import log_bins, resolution_label, summarize_response
from calohls.sim.generate import simulate, simulate_batch

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


_RATE = re.compile(r"wrote ([\d,]+) clusters from [\d,]+ events to .* in [\d.]+ s \(([\d,]+) clusters/s\)")

#: The no-write run, in a fresh process like the command: the clusters of every batch counted, nothing written.
_NO_WRITE = """
import sys, time
from calohls.config import SimConfig
from calohls.sim.generate import simulate_ragged_batches
config = SimConfig(events=int(sys.argv[1]), mu=200.0, seed=1)
t0 = time.perf_counter()
n = sum(len(b) for b in simulate_ragged_batches(config, workers=int(sys.argv[2])))
print(n, time.perf_counter() - t0)
"""


def _command(events: int, workers: int, path: Path) -> dict[str, float]:
    """Run ``calohls simulate`` as a user would, in a fresh process: its own report (clusters, seconds from the
    start of the simulation to the file in place) and the wall time of the whole command (with Python's start and
    the imports)."""
    args = ["simulate", "--events", str(events), "--mu", "200", "--seed", "1", "--workers", str(workers)]
    args += ["-o", str(path), "--overwrite", "--hide-progress"]
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "calohls", *args], capture_output=True, text=True, check=True)
    command_s = time.perf_counter() - t0
    found = _RATE.search(done.stdout)
    if found is None:
        raise RuntimeError(f"unexpected output of calohls simulate: {done.stdout!r}")
    clusters, rate = (int(found.group(i).replace(",", "")) for i in (1, 2))
    seconds = clusters / rate  # the printed rate is unrounded, the printed time has one decimal
    return {"clusters": clusters, "wall_s": seconds, "command_wall_s": command_s}


def _start_method() -> str:
    """How the command starts its workers: fork, unless its imports loaded JAX (then spawn)."""
    probe = "import sys, calohls.cli, calohls.sim.generate; print('spawn' if 'jax' in sys.modules else 'fork')"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()


def _no_write(events: int, workers: int) -> tuple[int, float]:
    done = subprocess.run(
        [sys.executable, "-c", _NO_WRITE, str(events), str(workers)], capture_output=True, text=True, check=True
    )
    n, seconds = done.stdout.split()
    return int(n), float(seconds)


# -- 1. simulation throughput ------------------------------------------------------------------------------------
@benchmark()
def simulate_throughput(opts: Options) -> dict[str, Any]:
    """``calohls simulate`` of the default particle mix at μ=200, end to end as a command; the same simulation
    without writing; one batch in a single process."""
    events = 20_000 if opts.quick else 200_000
    repeats = 1 if opts.quick else 2
    config = SimConfig(events=events, mu=200.0, seed=1)
    _warm_up(config.mu)  # fills the numba cache, should the kernels have changed since the last run

    path = opts.scratch / "throughput.h5"
    best: dict[str, float] = {"wall_s": math.inf}
    nowrite_s, n_iterated, size = math.inf, 0, 0
    # alternate the two so that a change of load on the machine affects both alike
    for _ in range(repeats):
        run = _command(events, opts.workers, path)
        if run["wall_s"] < best["wall_s"]:
            best, size = run, path.stat().st_size
        path.unlink()
        n_iterated, seconds = _no_write(events, opts.workers)
        nowrite_s = min(nowrite_s, seconds)

    one = SimConfig(events=2000, batch_events=2000, mu=200.0, seed=1)
    simulate_batch(one, 0)  # warm-up
    single_s, batch = best_of(lambda: simulate_batch(one, 0), 3)

    n_written, write_s = int(best["clusters"]), best["wall_s"]
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
        "start_method": _start_method(),
        "repeats": repeats,
        "write": {
            "command": f"calohls simulate --events {events} --mu 200 --seed 1 --workers {opts.workers} -o FILE",
            "wall_s": write_s,
            "events_per_s": events / write_s,
            "clusters": n_written,
            "clusters_per_s": rate,
            "command_wall_s": best["command_wall_s"],
            "command_clusters_per_s": n_written / best["command_wall_s"],
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
            f"calohls simulate : {rate:9,.0f} clusters/s  {events / write_s:8,.0f} events/s  ({write_s:.1f} s as "
            f"the command reports it, {best['command_wall_s']:.1f} s with Python's start; {size / 1e6:.0f} MB, "
            f"{size / max(n_written, 1):.0f} B/cluster)",
            f"simulate only    : {rate_nowrite:9,.0f} clusters/s  {events / nowrite_s:8,.0f} events/s  "
            f"({nowrite_s:.1f} s; writing takes {100 * (1 - nowrite_s / write_s):.0f} % of the time)",
            f"single process   : {rate_single:9,.0f} clusters/s  (one batch of {one.events} events, best of 3)",
            f"goal {GOAL_CLUSTERS_PER_S:,} clusters/s end-to-end: {'met' if meets_goal else 'NOT met'}",
        ],
    }


# -- 2. EM resolution --------------------------------------------------------------------------------------------
#: Lowest energy (GeV) of the points in the fit of the noise-subtracted resolution; below it the noise dominates
#: σ/E and the subtraction leaves little to fit.
NOISE_SUBTRACTED_MIN_E = 20.0


def _em_model(e: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    """σ/E = a/√E ⊕ b ⊕ c/E."""
    return np.sqrt(a * a / e + b * b + (c / e) ** 2)


def _em_model_no_noise(e: np.ndarray, a: float, b: float) -> np.ndarray:
    """σ/E = a/√E ⊕ b."""
    return np.sqrt(a * a / e + b * b)


def _width(r: np.ndarray) -> tuple[float, float]:
    """Median and σ/E = ((q84 − q16) / 2) / median of the response ``r`` (along the last axis)."""
    q16, med, q84 = np.quantile(r, (0.16, 0.5, 0.84), axis=-1)
    return med, (q84 - q16) / 2 / med


def _leading_photons(config: SimConfig, workers: int) -> dict[str, np.ndarray]:
    """e_em, e_true, cell count and summed cell noise σ (stored cells, in quadrature) of the leading clusters."""
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("e_em", "e_true", "n_cells", "noise")}
    for batch in simulate(config, workers=workers):
        lead = batch.scalars["cluster_index"] == 0
        sigma = batch.cell("sigma")[lead].astype(np.float64) * batch.mask[lead]
        parts["noise"].append(np.sqrt((sigma**2).sum(axis=1)))
        parts["n_cells"].append(batch.scalars["n_cells_total"][lead])
        for k in ("e_em", "e_true"):
            parts[k].append(batch.scalars[k][lead].astype(np.float64))
    return {k: np.concatenate(v) for k, v in parts.items()}


def _fit(model, e: np.ndarray, y: np.ndarray, dy: np.ndarray, p0: tuple[float, ...]) -> dict[str, Any]:
    """Weighted least-squares fit of ``model`` with parameters ≥ 0: values, uncertainties, χ², ndf, fitted y."""
    from scipy.optimize import curve_fit

    popt, pcov = curve_fit(model, e, y, p0=p0, sigma=dy, absolute_sigma=True, bounds=(0.0, np.inf))
    fitted = model(e, *popt)
    return {
        "values": [float(x) for x in popt],
        "errors": [float(x) for x in np.sqrt(np.diag(pcov))],
        "chi2": float((((y - fitted) / dy) ** 2).sum()),
        "ndf": int(e.size - len(popt)),
        "fitted": fitted,
    }


def _em_scan(mu: float, events: int, workers: int, *, noise: bool = True) -> dict[str, Any]:
    rng = np.random.default_rng(12345)
    rows = []
    for i, energy in enumerate(EM_ENERGIES):
        config = SimConfig(
            particles=("gamma",),
            events=events,
            mu=mu,
            noise=noise,
            seed=1000 + i,
            e_min=0.99 * energy,
            e_max=1.01 * energy,
        )
        s = _leading_photons(config, workers)
        r = s["e_em"] / s["e_true"]
        median, rel = _width(r)
        # bootstrap uncertainty of σ/E: 200 resamples of the leading clusters
        _, rel_boot = _width(r[rng.integers(0, r.size, (200, r.size))])
        rel_err = float(rel_boot.std(ddof=1))
        e_mean = float(s["e_true"].mean())
        cluster_noise = float(np.sqrt(np.mean(s["noise"] ** 2)))
        noise_rel = cluster_noise / e_mean
        # what is left of σ/E once the noise of the cluster's cells is taken out in quadrature
        left = rel**2 - noise_rel**2
        rows.append({
            "energy": energy,
            "e_true_mean": e_mean,
            "clusters": int(r.size),
            "median": float(median),
            "sigma_r": float(rel * median),
            "sigma_over_e": float(rel),
            "sigma_over_e_err": rel_err,
            "n_cells_mean": float(s["n_cells"].mean()),
            "cluster_noise": cluster_noise,
            "sigma_over_e_noise_subtracted": float(np.sqrt(left)) if left > 0 else None,
            "sigma_over_e_noise_subtracted_err": float(rel * rel_err / np.sqrt(left)) if left > 0 else None,
        })  # fmt: skip

    e = np.array([row["e_true_mean"] for row in rows])
    y = np.array([row["sigma_over_e"] for row in rows])
    dy = np.array([row["sigma_over_e_err"] for row in rows])
    # without noise there is no c/E term to fit
    fit = _fit(_em_model, e, y, dy, (0.1, 0.01, 0.1)) if noise else _fit(_em_model_no_noise, e, y, dy, (0.1, 0.01))
    for row, f in zip(rows, fit["fitted"], strict=True):
        row["fit"] = float(f)
    (a, b, c), (da, db, dc) = (
        (fit["values"], fit["errors"]) if noise else ((*fit["values"], 0.0), (*fit["errors"], 0.0))
    )

    use = [r for r in rows if r["e_true_mean"] >= NOISE_SUBTRACTED_MIN_E and r["sigma_over_e_noise_subtracted"]]
    sub = _fit(
        _em_model_no_noise,
        np.array([r["e_true_mean"] for r in use]),
        np.array([r["sigma_over_e_noise_subtracted"] for r in use]),
        np.array([r["sigma_over_e_noise_subtracted_err"] for r in use]),
        (0.1, 0.01),
    )
    return {
        "mu": mu,
        "noise": noise,
        "events_per_energy": events,
        "a": a,
        "a_err": da,
        "b": b,
        "b_err": db,
        "c": c,
        "c_err": dc,
        "chi2": fit["chi2"],
        "ndf": fit["ndf"],
        "noise_subtracted": {
            "model": "σ/E = sqrt((a/√E)² + b²) fitted to sqrt((σ/E)² − (cluster_noise/E)²)",
            "min_energy": NOISE_SUBTRACTED_MIN_E,
            "points": len(use),
            "a": sub["values"][0],
            "a_err": sub["errors"][0],
            "b": sub["values"][1],
            "b_err": sub["errors"][1],
            "chi2": sub["chi2"],
            "ndf": sub["ndf"],
        },
        "table": rows,
    }


def _fit_line(fit: dict[str, Any]) -> str:
    line = f"a = {100 * fit['a']:.2f} ± {100 * fit['a_err']:.2f} %/√E, "
    line += f"b = {100 * fit['b']:.2f} ± {100 * fit['b_err']:.2f} %"
    if "c" in fit:
        line += f", c = {fit['c']:.3f} ± {fit['c_err']:.3f} GeV"
    return line + f" (χ²/ndf = {fit['chi2']:.1f}/{fit['ndf']})"


@benchmark()
def em_resolution(opts: Options) -> dict[str, Any]:
    """Photon resolution σ/E = a/√E ⊕ b ⊕ c/E of leading clusters at fixed energies, at μ=0 and μ=200."""
    events = 1000 if opts.quick else 4000
    fits = {f"mu{mu:g}": _em_scan(float(mu), events, opts.workers) for mu in (0, 200)}
    # the sampling term alone: cell signals without noise (thresholds keep the nominal σ)
    fits["noise_off"] = _em_scan(0.0, events, opts.workers, noise=False)
    summary = []
    for fit in fits.values():
        sub = fit["noise_subtracted"]
        summary.append(f"{'noise off' if not fit['noise'] else 'μ=' + format(fit['mu'], 'g')}: {_fit_line(fit)}")
        summary.append(f"    cluster noise subtracted, E ≥ {sub['min_energy']:g} GeV: {_fit_line(sub)}")
        summary.append("    E [GeV]  clusters  median R     σ/E [%]   fit [%]   cells  noise [GeV]  σ/E − noise [%]")
        for row in fit["table"]:
            left = row["sigma_over_e_noise_subtracted"]
            summary.append(
                f"    {row['e_true_mean']:7.1f}  {row['clusters']:8d}  {row['median']:8.4f}  "
                f"{100 * row['sigma_over_e']:6.2f}±{100 * row['sigma_over_e_err']:.2f}  {100 * row['fit']:7.2f}  "
                f"{row['n_cells_mean']:6.0f}  {row['cluster_noise']:11.3f}  "
                + (f"{100 * left:15.2f}" if left is not None else f"{'–':>15}")
            )
    a_off, a0, a0_sub = fits["noise_off"]["a"], fits["mu0"]["a"], fits["mu0"]["noise_subtracted"]["a"]
    summary.append(
        f"EM stochastic term: a = {100 * a_off:.1f} %/√E without noise (expected ≈ 10 %/√E); at μ=0 the "
        f"three-term fit gives {100 * a0:.1f} %/√E, {100 * a0_sub:.1f} %/√E with the cluster noise subtracted"
    )
    return {
        "particle": "gamma",
        "energies": list(EM_ENERGIES),
        "energy_window": "±1 % (log-uniform), E in the fit = mean e_true of the leading clusters",
        "width": "σ_R = (q84 − q16) / 2 of R = e_em / e_true; σ/E = σ_R / median(R); errors by bootstrap",
        "model": "σ/E = sqrt((a/√E)² + b² + (c/E)²), E in GeV",
        "cluster_noise": "rms over leading clusters of sqrt(Σ σ_cell²) over their stored cells, GeV",
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
