"""The cluster records of a simulated batch: per-cluster sums and the stored cells, from the topo-clustered cells.

Two compiled passes over the member cells (grouped by cluster, as :func:`~calohls.sim.topo.topo_cluster` returns
them) replace a dozen numpy gathers and bincounts of a batch's ~250k member cells; sums run in float64 in member
order, as ``np.bincount`` adds them, so the records are the same to the bit.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from calohls.config import SimConfig
from calohls.data.schema import CELL_FIELDS, SCALAR_FIELDS, RaggedClusters
from calohls.sim.geometry import _IETA_OFFSET, LAYERS, TWO_PI, Window, wrap_phi
from calohls.sim.topo import ClusterCells

__all__ = ["cluster_records"]


@numba.njit(cache=True, nogil=True)
def _cluster_sums(cluster, event, cell, measured, dep, cell_eta, cell_phi, n_clusters):  # pragma: no cover
    """Per cluster: EM-scale and true energy, |E| weight, |E|-weighted local η and φ sums, cells, event."""
    sums = np.zeros((5, n_clusters))
    size = np.zeros(n_clusters, np.int64)
    cluster_event = np.zeros(n_clusters, np.int64)
    for i in range(cluster.size):
        k, ev, c = cluster[i], event[i], cell[i]
        e = measured[ev, c]
        w = np.float64(abs(e))
        sums[0, k] += e
        sums[1, k] += dep[ev, c]
        sums[2, k] += w
        sums[3, k] += w * cell_eta[c]
        sums[4, k] += w * cell_phi[c]
        size[k] += 1
        cluster_event[k] = ev
    return sums, size, cluster_event


@numba.njit(cache=True, nogil=True)
def _cell_rows(cluster, event, cell, measured, dep, keep, n_rows, max_cells, corner, tables, static):
    # pragma: no cover - compiled
    """The stored cells (the first ``max_cells`` of every kept cluster): per-cell fields and global cell IDs."""
    eta_low, phi_low, phi_low_index = corner
    cell_eta, cell_phi, cell_deta = tables[0], tables[1], tables[2]
    values = np.empty((n_rows, static.shape[1] + 4), np.float32)
    ids = np.empty(n_rows, np.int64)
    j, prev, rank = 0, -1, 0
    for i in range(cluster.size):
        k, ev, c = cluster[i], event[i], cell[i]
        rank = rank + 1 if k == prev else 0
        prev = k
        if not keep[k] or rank >= max_cells:
            continue
        values[j, 0] = measured[ev, c]
        values[j, 1] = dep[ev, c]
        values[j, 2] = eta_low[ev] + cell_eta[c]
        values[j, 3] = (phi_low[ev] + cell_phi[c] + math.pi) % TWO_PI - math.pi  # wrap_phi
        for f in range(static.shape[1]):
            values[j, 4 + f] = static[c, f]
        ieta = np.int64(np.rint(eta_low[ev] / cell_deta[c])) + np.int64(tables[3, c])
        n_phi = np.int64(tables[5, c])
        iphi = (phi_low_index[ev] * (n_phi // 64) + np.int64(tables[4, c])) % n_phi
        ids[j] = (np.int64(tables[6, c]) << 24) | ((ieta + _IETA_OFFSET) << 10) | iphi
        j += 1
    return values, ids


def _tables(window: Window) -> np.ndarray:
    """Per local cell: η, φ (local centre), Δη, η index, φ index, φ cells of its layer, sampling (float64 rows)."""
    layer = window.cell_layer
    return np.stack([
        window.cell_eta,
        window.cell_phi,
        np.array([lay.deta for lay in LAYERS])[layer],
        window.cell_ieta,
        window.cell_iphi,
        np.array([lay.n_phi for lay in LAYERS])[layer],
        np.array([lay.sampling for lay in LAYERS])[layer],
    ]).astype(np.float64)  # fmt: skip


def cluster_records(
    config: SimConfig,
    window: Window,
    particles,
    first: int,
    corner: tuple[np.ndarray, np.ndarray, np.ndarray],
    measured: np.ndarray,
    dep: np.ndarray,
    found: ClusterCells,
) -> RaggedClusters:
    """The clusters of a batch with at least ``config.min_e_true`` true energy, at most ``config.max_cells``
    stored cells each.

    Args:
        particles: the batch's truth particles (:class:`~calohls.sim.generate.Particles`).
        first: number of the batch's first event in the run.
        corner: each event's window corner (eta_low, phi_low, phi_low_index), as :func:`window_for` gives it.
        measured, dep: EM-scale and true energy of every window cell ``[E, C]``.
        found: the topo-clusters' member cells.
    """
    eta_low, phi_low, _ = corner
    members = (found.cluster, found.event, found.cell)
    sums, size, cluster_event = _cluster_sums(
        *members, measured, dep, window.cell_eta, window.cell_phi, found.n_clusters
    )
    keep = sums[1] >= config.min_e_true
    size, cluster_event = size[keep], cluster_event[keep]
    e_em, e_true, wsum, eta_sum, phi_sum = sums[:, keep]
    n_cells = np.minimum(size, config.max_cells)
    values, ids = _cell_rows(
        *members, measured, dep, keep, int(n_cells.sum()), config.max_cells, corner, _tables(window), window.cell_static
    )
    assert values.shape[1] == len(CELL_FIELDS)
    wsum = np.maximum(wsum, 1e-12)
    scalars = {
        "e_em": e_em,
        "e_true": e_true,
        "eta": eta_low[cluster_event] + eta_sum / wsum,
        "phi": wrap_phi(phi_low[cluster_event] + phi_sum / wsum),
        "n_cells_total": size,
        "particle": particles.pdg[cluster_event],
        "e_particle": particles.energy[cluster_event],
        "eta_particle": particles.eta[cluster_event],
        "phi_particle": particles.phi[cluster_event],
        "event": first + cluster_event,
        "cluster_index": _rank_in_event(e_em, cluster_event),
    }
    return RaggedClusters(
        cells=values,
        cell_id=ids,
        n_cells=n_cells.astype(np.int32),
        scalars={name: np.asarray(scalars[name]).astype(dt) for name, dt in SCALAR_FIELDS.items()},
    )


def _rank_in_event(e_em: np.ndarray, cluster_event: np.ndarray) -> np.ndarray:
    """Rank of each cluster within its event by EM-scale energy (0 = leading)."""
    order = np.lexsort((-e_em, cluster_event))
    ev_sorted = cluster_event[order]
    ev_start = np.searchsorted(ev_sorted, ev_sorted, side="left")
    rank = np.empty(e_em.size, np.int32)
    rank[order] = np.arange(e_em.size) - ev_start
    return rank
