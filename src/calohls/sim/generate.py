"""Simulate single-particle events, topo-cluster them and write the clusters (``calohls simulate``).

Events are simulated in batches; batch ``k`` draws from its own random stream ``SeedSequence([seed, k])``, so the
clusters depend only on the config — not on the number of worker processes or on the batch order.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import math
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from calohls.config import SimConfig, dump_config
from calohls.data.schema import PARTICLES, ClusterBatch, RaggedClusters
from calohls.sim.geometry import Window, window_for
from calohls.sim.pileup import CellNoise, measured_signal
from calohls.sim.records import cluster_records
from calohls.sim.showers import N_SLOTS, ShowerSlots, deposit, em_showers, pi0_decay, pion_showers
from calohls.sim.topo import padded_table, topo_cluster

__all__ = [
    "Particles",
    "draw_particles",
    "simulate",
    "simulate_batch",
    "simulate_ragged",
    "simulate_ragged_batches",
    "simulate_to_file",
]

log = logging.getLogger(__name__)


class Particles:
    """Truth particles of a batch: PDG id, energy (GeV), η, φ."""

    def __init__(self, pdg: np.ndarray, energy: np.ndarray, eta: np.ndarray, phi: np.ndarray) -> None:
        self.pdg, self.energy, self.eta, self.phi = pdg, energy, eta, phi

    def __len__(self) -> int:
        return len(self.pdg)

    def select(self, rows: slice) -> Particles:
        """The particles of ``rows``."""
        return Particles(self.pdg[rows], self.energy[rows], self.eta[rows], self.phi[rows])


def draw_particles(config: SimConfig, n: int, rng: np.random.Generator) -> Particles:
    """Particle types with equal odds, energies log-uniform in [e_min, e_max], |η| < eta_max, φ uniform."""
    pdg = np.array([PARTICLES[p] for p in config.particles])[rng.integers(0, len(config.particles), n)]
    energy = np.exp(rng.uniform(math.log(config.e_min), math.log(config.e_max), n))
    eta = rng.uniform(-config.eta_max, config.eta_max, n)
    phi = rng.uniform(-math.pi, math.pi, n)
    return Particles(pdg, energy, eta, phi)


def _showers(p: Particles, rng: np.random.Generator) -> ShowerSlots:
    slots = ShowerSlots.zeros(len(p))
    rows = np.flatnonzero(p.pdg == 22)
    if rows.size:
        slots.put(rows, 0, em_showers(p.energy[rows], p.eta[rows], p.phi[rows], rng))
    rows = np.flatnonzero(p.pdg == 111)
    if rows.size:
        for slot, (e, eta, phi) in enumerate(pi0_decay(p.energy[rows], p.eta[rows], p.phi[rows], rng)):
            slots.put(rows, slot, em_showers(e, eta, phi, rng))
    rows = np.flatnonzero(np.abs(p.pdg) == 211)
    if rows.size:
        slots.put(rows, 0, pion_showers(p.energy[rows], p.eta[rows], p.phi[rows], rng), count=N_SLOTS)
    return slots


@functools.lru_cache(maxsize=4)
def _window(mu: float) -> Window:
    return Window(mu)


@functools.lru_cache(maxsize=4)
def _table(mu: float) -> np.ndarray:
    return padded_table(_window(mu).neighbours)


def simulate_batch(config: SimConfig, batch_index: int) -> ClusterBatch:
    """Simulate batch ``batch_index`` of the run described by ``config`` and return its clusters."""
    return simulate_ragged(config, batch_index).padded(config.max_cells)


#: Events that go through deposit, noise and clustering together: their [events, cells] arrays (~2 MB each) stay in
#: the CPU caches, where a whole batch's (~15 MB each) would not.
_CHUNK_EVENTS = 250


def simulate_ragged(config: SimConfig, batch_index: int) -> RaggedClusters:
    """:func:`simulate_batch` without the padding (at most ``config.max_cells`` cells per cluster)."""
    first = batch_index * config.batch_events
    n = min(config.batch_events, config.events - first)
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, batch_index]))
    window = _window(config.mu)
    particles = draw_particles(config, n, rng)
    corner = window_for(particles.eta, particles.phi)
    showers = _showers(particles, rng)
    noise = CellNoise(rng, n, window.n_cells)
    parts = []
    for a in range(0, n, _CHUNK_EVENTS):
        rows = slice(a, min(a + _CHUNK_EVENTS, n))
        part_corner = (corner[0][rows], corner[1][rows], corner[2][rows])
        dep, vis = deposit(showers.select(rows), window, part_corner[0], part_corner[1])
        measured = measured_signal(vis, window, noise, rows, electronic=config.noise)
        found = topo_cluster(measured, window.cell_sigma, _table(config.mu), config.topo)
        records = cluster_records(config, window, particles.select(rows), first + a, part_corner, measured, dep, found)
        parts.append(records)
    return RaggedClusters.concatenate(parts)


def _n_batches(config: SimConfig) -> int:
    return -(-config.events // config.batch_events)


def simulate(
    config: SimConfig, *, workers: int | None = None, progress: Callable[[int], None] | None = None
) -> Iterator[ClusterBatch]:
    """Yield the clusters of each batch of events, in batch order.

    Args:
        config: what to simulate.
        workers: worker processes (default: one per CPU core, at most one per batch); 1 runs in this process.
        progress: called with the number of events of each finished batch.
    """
    for batch in simulate_ragged_batches(config, workers=workers, progress=progress):
        yield batch.padded(config.max_cells)


def simulate_ragged_batches(
    config: SimConfig, *, workers: int | None = None, progress: Callable[[int], None] | None = None
) -> Iterator[RaggedClusters]:
    """:func:`simulate` without the padding: what a cluster file stores."""
    n_batches = _n_batches(config)
    workers = min(workers or os.cpu_count() or 1, n_batches)
    if workers <= 1:
        for b in range(n_batches):
            batch = simulate_ragged(config, b)
            if progress:
                progress(min(config.batch_events, config.events - b * config.batch_events))
            yield batch
        return
    # fork is cheap and works from unguarded scripts; spawn is safe once a multithreaded library (JAX) is loaded
    ctx = multiprocessing.get_context("spawn" if "jax" in sys.modules else "fork")
    if ctx.get_start_method() == "fork":
        _prepare(config)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init, initargs=(os.getpid(),))
    try:
        pending: deque = deque()
        next_batch = 0
        while next_batch < n_batches or pending:
            while next_batch < n_batches and len(pending) < 2 * workers:
                with _sigint_blocked():  # a worker started now inherits the block until it ignores Ctrl-C
                    pending.append((next_batch, pool.submit(simulate_ragged, config, next_batch)))
                next_batch += 1
            b, fut = pending.popleft()
            batch = fut.result()
            if getattr(signal.getsignal(signal.SIGINT), "interrupted", False):  # a Ctrl-C lost by the interpreter
                raise KeyboardInterrupt
            if progress:
                progress(min(config.batch_events, config.events - b * config.batch_events))
            yield batch
    except BaseException:
        _stop_workers(pool)  # Ctrl-C, a full disk, ...: the batches still running are of no use
        raise
    pool.shutdown()


def _prepare(config: SimConfig) -> None:
    """Load the compiled kernels and build the window of ``config.mu`` here, once, for the forked workers to
    inherit (each would do it on its own otherwise): simulate one event and drop it."""
    simulate_ragged(config.model_copy(update={"events": 1, "batch_events": 1}), 0)


@contextlib.contextmanager
def _sigint_blocked() -> Iterator[None]:
    """Block SIGINT in this thread while the block runs (child processes started in it inherit the block); a
    Ctrl-C that came meanwhile is raised as ``KeyboardInterrupt`` at its end, from here rather than from wherever
    the interpreter would run the signal handler next (inside a garbage-collector callback, it would be lost)."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    interrupted = False
    try:
        yield
    finally:
        if signal.SIGINT in signal.sigpending():
            signal.sigwait({signal.SIGINT})
            interrupted = True
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
    if interrupted:
        raise KeyboardInterrupt


#: prctl(2) option: the signal a process gets when its parent dies (Linux).
_PR_SET_PDEATHSIG = 1


def _worker_init(parent: int) -> None:
    """Set up a worker process: Ctrl-C is the parent's to handle (the worker is stopped by it, without a
    traceback of its own), and the worker dies with its parent, even one killed with SIGKILL."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        watched = libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):  # not Linux
        watched = False
    if os.getppid() != parent:  # the parent died before the death signal was set
        os._exit(1)
    if not watched:
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def _watch_parent(parent: int) -> None:
    """End this worker once its parent is gone (where the death signal of prctl is not available)."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """Kill the workers of ``pool`` now and drop the queued batches (shutting down would wait for them)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # no public handle on the processes
    for process in processes:
        with contextlib.suppress(Exception):
            process.kill()
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        with contextlib.suppress(Exception):
            process.join(5)


def simulate_to_file(
    config: SimConfig,
    path: Path,
    *,
    overwrite: bool = False,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Simulate ``config.events`` events and write their clusters to an HDF5 file (atomically)."""
    from calohls.data.hdf5 import ClusterWriter

    path = Path(path)
    with ClusterWriter(path, config.max_cells, overwrite=overwrite, config_yaml=dump_config(config)) as writer:
        for batch in simulate_ragged_batches(config, workers=workers, progress=progress):
            writer.append(batch)  # unpadded: the file stores the cells as they come
    log.info("wrote %s", path)
    return path
