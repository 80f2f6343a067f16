"""Shared test fixtures.

Fixtures of the data stage (prefix ``synthetic_``) build random but valid :class:`ClusterBatch` objects. Keep
fixtures of other stages in their own clearly named blocks below.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from calohls.data.schema import CELL_FIELDS, SAMPLINGS, SCALAR_FIELDS, ClusterBatch

# -- command line: the logging set-up it leaves behind -----------------------------------------------------------


@pytest.fixture
def _restore_logging():
    """The CLI configures the ``calohls`` logger; leave it as it was for the other tests."""
    logger = logging.getLogger("calohls")
    state = (logger.level, list(logger.handlers), logger.propagate)
    yield
    logger.setLevel(state[0])
    logger.handlers[:] = state[1]
    logger.propagate = state[2]


# -- data stage: synthetic cluster batches -------------------------------------------------------------------

#: Number of distinct cells in the synthetic detector; every synthetic cluster draws its cells from this pool.
SYNTHETIC_CELL_POOL = 4096

# Plausible cell centre radius (m), sizes Δη and Δφ, and noise σ (GeV) per barrel sampling.
_SYNTHETIC_LAYERS: dict[int, tuple[float, float, float, float]] = {
    SAMPLINGS["PreSamplerB"]: (1.45, 0.025, 0.1, 0.020),
    SAMPLINGS["EMB1"]: (1.55, 0.003125, 0.1, 0.015),
    SAMPLINGS["EMB2"]: (1.70, 0.025, 0.0245, 0.030),
    SAMPLINGS["EMB3"]: (1.90, 0.05, 0.0245, 0.020),
    SAMPLINGS["TileBar0"]: (2.45, 0.1, 0.1, 0.025),
    SAMPLINGS["TileBar1"]: (2.95, 0.1, 0.1, 0.020),
    SAMPLINGS["TileBar2"]: (3.55, 0.2, 0.1, 0.030),
}


def set_cell(f, cluster: int, cell: int, field: str, value: float) -> None:
    """In an open HDF5 cluster file ``f`` (``h5py.File``, either schema version), set one field of one stored cell."""
    if "cells" in f and "first_cell" in f["clusters"]:  # version 2: one dataset per field
        f[f"cells/{field}"][int(f["clusters/first_cell"][cluster]) + cell] = value
    else:
        f["clusters/cells"][cluster, cell, CELL_FIELDS.index(field)] = value


def negate_cell_energies(f) -> None:
    """In an open HDF5 cluster file ``f`` (either schema version), flip the sign of every cell's EM-scale energy."""
    if "cells" in f and "first_cell" in f["clusters"]:
        f["cells/e"][...] = -f["cells/e"][...]
    else:
        cells = f["clusters/cells"][...]
        cells[..., 0] = -cells[..., 0]
        f["clusters/cells"][...] = cells


def synthetic_cell_geometry() -> dict[str, np.ndarray]:
    """The fixed geometry of the synthetic cell pool: one row per cell id, the same on every call.

    Returns:
        ``id`` (int64, large ATLAS-like identifiers, unique) and the float32 per-cell fields ``eta``, ``phi``,
        ``sampling``, ``r``, ``deta``, ``dphi``, ``sigma``.
    """
    rng = np.random.default_rng(20240611)
    ids = np.sort(rng.choice(2**40, size=SYNTHETIC_CELL_POOL, replace=False)).astype(np.int64) + (740 << 40)
    layers = np.array(sorted(_SYNTHETIC_LAYERS))
    sampling = layers[rng.integers(0, len(layers), SYNTHETIC_CELL_POOL)]
    table = np.array([_SYNTHETIC_LAYERS[int(s)] for s in sampling], np.float64)
    return {
        "id": ids,
        "eta": rng.uniform(-0.8, 0.8, SYNTHETIC_CELL_POOL).astype(np.float32),
        "phi": rng.uniform(-np.pi, np.pi, SYNTHETIC_CELL_POOL).astype(np.float32),
        "sampling": sampling.astype(np.float32),
        "r": table[:, 0].astype(np.float32),
        "deta": table[:, 1].astype(np.float32),
        "dphi": table[:, 2].astype(np.float32),
        "sigma": table[:, 3].astype(np.float32),
    }


def make_synthetic_batch(n: int = 200, max_cells: int = 32, seed: int = 0) -> ClusterBatch:
    """A valid random :class:`ClusterBatch`.

    Events hold one to three clusters (``cluster_index`` ranks them by ``e_em``) and share one truth
    particle. ``n_cells`` is log-uniform in ``1..max_cells`` (mostly small clusters, as in real data); a
    cluster that fills all ``max_cells`` slots has extra, unstored cells counted in ``n_cells_total`` and
    ``e_em``. Cell ids are unique within a cluster and drawn from the fixed pool of
    :func:`synthetic_cell_geometry`, so a cell id always maps to the same geometry.

    Args:
        n: Number of clusters.
        max_cells: Padded cell count ``N``.
        seed: Random seed; the same arguments give the same batch.

    Returns:
        The batch, events numbered in increasing order and clusters of an event in ``cluster_index`` order.
    """
    rng = np.random.default_rng(seed)
    geo = synthetic_cell_geometry()
    big_n = max_cells
    n_cells = np.minimum(np.exp(rng.uniform(0.0, np.log(max_cells + 1), n)).astype(np.int32), max_cells)
    n_cells = np.maximum(n_cells, 1).astype(np.int32)
    mask = np.arange(big_n)[None, :] < n_cells[:, None]

    # Unique cells per cluster: a run of consecutive pool entries from a random start.
    start = rng.integers(0, SYNTHETIC_CELL_POOL, n)
    pool_idx = (start[:, None] + np.arange(big_n)[None, :]) % SYNTHETIC_CELL_POOL
    # Cluster energy log-uniform in 0.2..300 GeV shared out over its cells, plus Gaussian cell noise.
    share = rng.exponential(1.0, (n, big_n)) * mask
    e_cluster = np.exp(rng.uniform(np.log(0.2), np.log(300.0), n))
    sigma = geo["sigma"][pool_idx]
    energy = e_cluster[:, None] * share / share.sum(axis=1, keepdims=True) + sigma * rng.normal(0.0, 1.0, (n, big_n))
    order = np.argsort(np.where(mask, -energy, np.inf), axis=1, kind="stable")
    energy = np.take_along_axis(energy, order, axis=1)
    pool_idx = np.take_along_axis(pool_idx, order, axis=1)

    fields = {
        "e": energy,
        "e_true": np.maximum(energy, 0.0) * rng.uniform(1.0, 1.6, (n, big_n)),
        **{name: geo[name][pool_idx] for name in ("eta", "phi", "sampling", "r", "deta", "dphi", "sigma")},
    }
    cells = np.stack([np.where(mask, fields[name], 0.0).astype(np.float32) for name in CELL_FIELDS], axis=-1)
    col = {name: i for i, name in enumerate(CELL_FIELDS)}
    cell_id = np.where(mask, geo["id"][pool_idx], -1).astype(np.int64)

    full = n_cells == max_cells
    extra_cells = np.where(full, rng.integers(1, 50, n), 0).astype(np.int32)
    extra_e = np.where(full, extra_cells * 0.01, 0.0)
    e_em = cells[..., col["e"]].sum(axis=1, dtype=np.float64) + extra_e
    e_true = cells[..., col["e_true"]].sum(axis=1, dtype=np.float64) + 1.3 * extra_e + 0.1

    # Events of 1-3 clusters; rank clusters within each event by e_em.
    sizes = rng.integers(1, 4, n)
    event_of = np.repeat(np.arange(n), sizes)[:n]
    event_ids = np.unique(event_of)
    first = np.searchsorted(event_of, event_ids)
    rank_order = np.lexsort((-e_em, event_of))
    cluster_index = np.empty(n, np.int32)
    cluster_index[rank_order] = np.arange(n) - np.repeat(first, np.diff(np.append(first, n)))
    # Put clusters of each event in cluster_index order.
    perm = rank_order
    particles = np.array([211, -211, 111, 22], np.int32)
    ev_particle = particles[rng.integers(0, len(particles), len(event_ids))]
    ev_energy = np.exp(rng.uniform(np.log(0.5), np.log(500.0), len(event_ids)))
    ev_eta = rng.uniform(-0.7, 0.7, len(event_ids))
    ev_phi = rng.uniform(-np.pi, np.pi, len(event_ids))
    w = np.abs(cells[..., col["e"]]) + 1e-9
    scalars = {
        "e_em": e_em,
        "e_true": e_true,
        "eta": (w * cells[..., col["eta"]]).sum(axis=1) / w.sum(axis=1),
        "phi": (w * cells[..., col["phi"]]).sum(axis=1) / w.sum(axis=1),
        "n_cells_total": n_cells + extra_cells,
        "particle": ev_particle[event_of],
        "e_particle": ev_energy[event_of],
        "eta_particle": ev_eta[event_of],
        "phi_particle": ev_phi[event_of],
        "event": (1000 + 7 * event_of).astype(np.int64),
        "cluster_index": cluster_index,
    }
    scalars = {k: np.asarray(v)[perm].astype(SCALAR_FIELDS[k]) for k, v in scalars.items()}
    return ClusterBatch(cells=cells[perm], cell_id=cell_id[perm], n_cells=n_cells[perm], scalars=scalars)


@pytest.fixture
def synthetic_batch() -> Callable[..., ClusterBatch]:
    """Factory of valid random cluster batches: ``synthetic_batch(n=200, max_cells=32, seed=0)``."""
    return make_synthetic_batch


# -- model stage: a small simulated data set and a tiny trained run -------------------------------------------


@pytest.fixture(scope="session")
def sim_file(tmp_path_factory) -> Path:
    """A seeded π±/π0 cluster file at μ = 200 (about 7k clusters)."""
    from calohls.config import SimConfig
    from calohls.sim.generate import simulate_to_file

    path = tmp_path_factory.mktemp("data") / "clusters.h5"
    simulate_to_file(SimConfig(events=8000, seed=21, max_cells=64), path, workers=2)
    return path


#: Options of the tiny test run: small enough to train in seconds.
TINY_TRAIN = {"model": {"preset": "tiny", "max_cells": 16}, "epochs": 12, "batch_size": 128, "seed": 3}


@pytest.fixture(scope="session")
def trained_run(sim_file, tmp_path_factory) -> Path:
    from calohls.config import TrainConfig
    from calohls.model.train import train

    run = tmp_path_factory.mktemp("runs") / "tiny"
    train(sim_file, run, TrainConfig.model_validate(TINY_TRAIN))
    return run
