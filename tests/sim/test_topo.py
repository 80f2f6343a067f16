from __future__ import annotations

import numpy as np
import pytest

from calohls.config import TopoConfig
from calohls.sim.topo import padded_table, topo_cluster


def _chain(n: int) -> np.ndarray:
    """Neighbour table of cells in a line: i is next to i-1 and i+1."""
    indptr = [0]
    indices: list[int] = []
    for i in range(n):
        indices += [j for j in (i - 1, i + 1) if 0 <= j < n]
        indptr.append(len(indices))
    return padded_table((np.array(indptr), np.array(indices)))


def _clusters(energy, table, topo=None):
    found = topo_cluster(
        np.atleast_2d(np.asarray(energy, np.float32)), np.ones(table.shape[0]), table, topo or TopoConfig()
    )
    return [
        (int(found.event[found.cluster == k][0]), found.cell[found.cluster == k].tolist())
        for k in range(found.n_clusters)
    ]


def test_seed_grow_boundary():
    #         0    1  2  3    4    5    6    7     8   9
    energy = [0.3, 5, 3, 0.5, 0.2, 0.1, 2.5, 0.4, -5, 0.1]
    # seeds |E|>4: 1 and 8 (absolute value); growing |E|>2: 1, 2, 6, 8; cell 6 grows but holds no seed
    assert _clusters(energy, _chain(10)) == [(0, [1, 2, 3, 0]), (0, [7, 9, 8])]


def test_seeds_joined_by_growing_cells_share_a_cluster():
    energy = [0.1, 5, 3, 2.5, 6, 0.1]
    assert _clusters(energy, _chain(6)) == [(0, [4, 1, 2, 3, 0, 5])]


def test_shared_boundary_cell_goes_to_most_significant_neighbour():
    energy = [4.5, 0.5, 9.0]  # cell 1 borders two clusters; its neighbour 2 is more significant
    assert _clusters(energy, _chain(3)) == [(0, [0]), (0, [2, 1])]


def test_zero_energy_cells_are_not_boundary_cells_and_thresholds_apply():
    energy = [0.0, 5, 0.0]
    assert _clusters(energy, _chain(3)) == [(0, [1])]
    assert _clusters([1, 5, 1], _chain(3), TopoConfig(seed=6, grow=2, boundary=0)) == []


def test_events_are_independent():
    table = _chain(4)
    found = topo_cluster(np.array([[5, 0.1, 0, 0], [0, 0, 0.2, 5]], np.float32), np.ones(4), table, TopoConfig())
    assert found.n_clusters == 2
    assert found.event.tolist() == [0, 0, 1, 1]
    assert found.cell.tolist() == [0, 1, 3, 2]


def test_noise_sigma_scales_thresholds():
    table = _chain(3)
    energy = np.array([[0.0, 5.0, 0.0]], np.float32)
    assert topo_cluster(energy, np.full(3, 2.0), table, TopoConfig()).n_clusters == 0  # 5 GeV is only 2.5σ
    assert topo_cluster(energy, np.full(3, 1.0), table, TopoConfig()).n_clusters == 1


def test_thresholds_must_be_ordered():
    with pytest.raises(ValueError, match="seed >= grow >= boundary"):
        TopoConfig(seed=2, grow=4, boundary=0)
