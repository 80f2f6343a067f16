from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from calohls.data.schema import CELL_FIELDS, ClusterBatch, cell_field_index
from calohls.errors import DataError, NonFiniteError


def _replace(batch: ClusterBatch, **changes) -> ClusterBatch:
    return dataclasses.replace(batch, **changes)


def test_views(synthetic_batch):
    b = synthetic_batch(n=50, max_cells=16)
    assert len(b) == 50
    assert b.mask.sum() == b.n_cells.sum()
    np.testing.assert_array_equal(b.cell("e"), b.cells[:, :, cell_field_index("e")])
    np.testing.assert_allclose(b.response_em, b["e_em"] / b["e_true"])
    sub = b.select(b["e_true"] > np.median(b["e_true"]))
    assert 0 < len(sub) < 50
    joined = ClusterBatch.concatenate([b, sub])
    assert len(joined) == len(b) + len(sub)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda b: {"cells": b.cells.astype(np.float64)}, "cells has dtype float64; expected float32"),
        (lambda b: {"cell_id": b.cell_id[:, :-1]}, r"cell_id has shape \(20, 15\)"),
        (lambda b: {"cells": b.cells[:, :, :4]}, r"cells has shape \(20, 16, 4\)"),
        (lambda b: {"n_cells": np.where(np.arange(20) == 3, 0, b.n_cells).astype(np.int32)}, "cluster 3 has no cells"),
        (lambda b: {"n_cells": np.full(20, 17, np.int32)}, r"n_cells must lie in 0..16"),
        (
            lambda b: {"scalars": {k: v for k, v in b.scalars.items() if k != "e_true"}},
            "cluster fields missing: e_true",
        ),
        (lambda b: {"scalars": {**b.scalars, "event": b["event"].astype(np.int32)}}, "'event' has dtype int32"),
    ],
)
def test_invalid_batches_name_the_problem(synthetic_batch, change, message):
    b = synthetic_batch(n=20, max_cells=16)
    with pytest.raises(DataError, match=message):
        _replace(b, **change(b))


def test_non_finite_values_are_located(synthetic_batch):
    b = synthetic_batch(n=20, max_cells=16)
    cells = b.cells.copy()
    cells[4, 0, cell_field_index("eta")] = np.inf
    with pytest.raises(NonFiniteError, match=r"non-finite cell value inf in cluster 4, cell 0, field 'eta'"):
        _replace(b, cells=cells)
    e_true = b["e_true"].copy()
    e_true[7] = np.nan
    with pytest.raises(NonFiniteError, match=r"non-finite e_true=nan in cluster 7"):
        _replace(b, scalars={**b.scalars, "e_true": e_true})


def test_unknown_fields(synthetic_batch):
    b = synthetic_batch(n=5, max_cells=4)
    with pytest.raises(DataError, match="unknown cell field 'energy'"):
        b.cell("energy")
    with pytest.raises(DataError, match="unknown cluster field 'pt'"):
        b["pt"]
    with pytest.raises(DataError, match="no cluster batches"):
        ClusterBatch.concatenate([])
    with pytest.raises(DataError, match=r"different cell counts \[4, 8\]"):
        ClusterBatch.concatenate([b, synthetic_batch(n=5, max_cells=8)])


def test_ragged_clusters_round_trip_and_truncation(synthetic_batch):
    from calohls.data.schema import RaggedClusters

    a, b = synthetic_batch(n=40, max_cells=12, seed=1), synthetic_batch(n=25, max_cells=12, seed=2)
    ragged = RaggedClusters.concatenate([a.ragged(), b.ragged()])
    ragged.validate()
    assert len(ragged) == 65
    assert ragged.cells.shape == (int(a.n_cells.sum() + b.n_cells.sum()), len(CELL_FIELDS))
    np.testing.assert_array_equal(ragged.first_cell[1:], np.cumsum(ragged.n_cells)[:-1])
    joined = ClusterBatch.concatenate([a, b])
    padded = ragged.padded(12)
    np.testing.assert_array_equal(padded.cells, joined.cells)
    np.testing.assert_array_equal(padded.cell_id, joined.cell_id)
    # fewer cells: each cluster keeps its first (most energetic) ones
    short = ragged.padded(4)
    np.testing.assert_array_equal(short.cells, joined.cells[:, :4])
    np.testing.assert_array_equal(short.n_cells, np.minimum(joined.n_cells, 4))
    bad = RaggedClusters(ragged.cells[1:], ragged.cell_id[1:], ragged.n_cells, ragged.scalars)
    with pytest.raises(DataError, match="n_cells add up to"):
        bad.validate()
