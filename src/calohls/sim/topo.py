"""Topological clustering (4-2-0) of noisy cells, event by event in a compiled kernel.

Seeds are cells with ``|E| > 4σ``; seeds grow through neighbours with ``|E| > 2σ`` (a connected region of such cells
that holds a seed is one cluster, so two seeds joined by ``2σ`` cells share a cluster); finally every neighbour of a
cluster's growing cells with ``|E| > 0σ`` joins as a boundary cell. A boundary cell next to several clusters joins the
one whose neighbouring growing cell is most significant. σ is the cell's total (electronic ⊕ pile-up) noise. Clusters
are not split at local maxima (ATLAS's splitter is not modelled).
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from calohls.config import TopoConfig

__all__ = ["ClusterCells", "padded_table", "topo_cluster"]


class ClusterCells(NamedTuple):
    """Cells of all clusters of a batch, grouped by cluster and sorted by descending energy within each.

    Attributes:
        cluster: cluster number (0..n_clusters-1) of each member cell; clusters are numbered event by event.
        event: event row (in the batch) of each member cell.
        cell: local cell index of each member cell.
        n_clusters: number of clusters.
    """

    cluster: np.ndarray
    event: np.ndarray
    cell: np.ndarray
    n_clusters: int


def padded_table(neighbours: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """CSR neighbours as a dense ``[C, max_degree]`` int32 table, padded with -1."""
    indptr, indices = neighbours
    n_cells = indptr.size - 1
    degree = np.diff(indptr)
    table = np.full((n_cells, int(degree.max())), -1, np.int32)
    row = np.repeat(np.arange(n_cells), degree)
    table[row, np.arange(indices.size) - indptr[row]] = indices
    return table


@numba.njit(cache=True, nogil=True, inline="always")
def _descending_key(bits):  # pragma: no cover - compiled
    """An int64 that sorts float32 values (given by their bits) from the highest down, in the upper 32 bits' range:
    a sort of ``key << 32 | cell`` orders cells by descending energy without the indirection of an argsort."""
    i = np.int64(bits)
    if i < 0:  # negative floats: larger bit patterns are more negative
        i ^= 0x7FFFFFFF
    return ~i


@numba.njit(cache=True, nogil=True)
def _cluster_kernel(energy, sigma, table, seed_cut, grow_cut, boundary_cut):  # pragma: no cover - compiled
    n_events, n_cells = energy.shape
    degree = table.shape[1]
    sig = np.empty(n_cells, np.float32)
    label = np.empty(n_cells, np.int64)  # cluster of a growing cell, -1 none
    b_label = np.empty(n_cells, np.int64)  # best cluster of a boundary candidate
    b_best = np.empty(n_cells, np.float32)  # significance of that cluster's neighbouring cell
    stack = np.empty(n_cells, np.int64)
    cap = 1 << 16
    out_cluster = np.empty(cap, np.int64)
    out_event = np.empty(cap, np.int64)
    out_cell = np.empty(cap, np.int64)
    n_out = 0
    n_clusters = 0
    members = np.empty(n_cells, np.int64)
    for e in range(n_events):
        for c in range(n_cells):
            sig[c] = abs(energy[e, c]) / sigma[c]
            label[c] = -1
            b_label[c] = -1
            b_best[c] = -1.0
        first_cluster = n_clusters
        for c in range(n_cells):
            if sig[c] <= seed_cut or label[c] >= 0:
                continue
            # a new cluster: flood its region of growing cells
            k = n_clusters
            n_clusters += 1
            label[c] = k
            top = 0
            stack[top] = c
            top += 1
            while top > 0:
                top -= 1
                g = stack[top]
                for d in range(degree):
                    nb = table[g, d]
                    if nb < 0:
                        break
                    if sig[nb] > grow_cut:
                        if label[nb] < 0:
                            label[nb] = k
                            stack[top] = nb
                            top += 1
                    elif sig[nb] > boundary_cut and sig[g] > b_best[nb]:
                        b_best[nb] = sig[g]
                        b_label[nb] = k
        # write members cluster by cluster, by descending energy (ties: by cell index)
        bits = energy[e].view(np.int32)
        for k in range(first_cluster, n_clusters):
            m = 0
            for c in range(n_cells):
                if label[c] == k or (label[c] < 0 and b_label[c] == k):
                    members[m] = _descending_key(bits[c]) << 32 | c
                    m += 1
            order = np.sort(members[:m])
            if n_out + m > out_cluster.size:
                grow_to = max(2 * out_cluster.size, n_out + m)
                out_cluster = np.concatenate((out_cluster, np.empty(grow_to - out_cluster.size, np.int64)))
                out_event = np.concatenate((out_event, np.empty(grow_to - out_event.size, np.int64)))
                out_cell = np.concatenate((out_cell, np.empty(grow_to - out_cell.size, np.int64)))
            for i in range(m):
                out_cluster[n_out] = k
                out_event[n_out] = e
                out_cell[n_out] = order[i] & 0xFFFFFFFF
                n_out += 1
    return out_cluster[:n_out], out_event[:n_out], out_cell[:n_out], n_clusters


def topo_cluster(energy: np.ndarray, sigma: np.ndarray, table: np.ndarray, topo: TopoConfig) -> ClusterCells:
    """Cluster the cells of a batch.

    Args:
        energy: measured cell energies ``[E, C]`` (float32).
        sigma: total noise per cell ``[C]``.
        table: neighbour table ``[C, max_degree]`` from :func:`padded_table`.
        topo: thresholds in units of σ.
    """
    cluster, event, cell, n = _cluster_kernel(
        np.ascontiguousarray(energy, np.float32),
        np.ascontiguousarray(sigma, np.float32),
        np.ascontiguousarray(table, np.int32),
        np.float32(topo.seed),
        np.float32(topo.grow),
        np.float32(topo.boundary),
    )
    return ClusterCells(cluster, event, cell, int(n))
