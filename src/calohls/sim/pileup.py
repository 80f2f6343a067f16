"""Measured cell signals: visible energy, sampling fluctuations, electronic noise and pile-up noise.

Pile-up is modelled as zero-mean Gaussian noise per cell (bipolar LAr shaping cancels its average in a bunch train),
with a σ that grows as √μ, added in quadrature to the electronic noise (per-layer values in
:mod:`calohls.sim.geometry`). The topo-clustering thresholds are in units of the same total σ, as in ATLAS.

A cell with visible energy E also gets a sampling spread a·√E (a per layer, :data:`~calohls.sim.showers.SAMPLING_TERM`),
so a shower spread over many cells keeps the a/√E_total resolution of one in a single cell. Sampling spread and noise
are independent Gaussians, so each cell draws once with the summed variance. A per-event constant term (calibration
non-uniformity) multiplies the visible energy.
"""

from __future__ import annotations

import numba
import numpy as np

from calohls.sim.geometry import Window
from calohls.sim.showers import CONSTANT_TERM, SAMPLING_TERM

__all__ = ["CellNoise", "measured_signal"]


@numba.njit(cache=True, nogil=True)
def _smear_kernel(z, vis, a2, noise2, scale):  # pragma: no cover - compiled
    """z <- z·sqrt(max(vis, 0)·a2 + noise2) + vis·scale per cell, in float32 and rounded as the numpy expression
    of the same would round it, in one pass over the cells."""
    n_events, n_cells = z.shape
    for e in range(n_events):
        s = scale[e]
        for c in range(n_cells):
            v = vis[e, c]
            spread = np.sqrt(np.float32(max(v, np.float32(0.0)) * a2[c]) + noise2[c])
            z[e, c] = z[e, c] * spread + v * s


class CellNoise:
    """The random numbers of a batch's cell signals, drawn at once, so that the random stream (and the clusters of a
    seed) do not depend on how the batch is cut into chunks: a standard normal per cell ``z [E, C]``, then the
    constant term's per-event scale ``[E]``."""

    def __init__(self, rng: np.random.Generator, n_events: int, n_cells: int) -> None:
        self.z = rng.standard_normal((n_events, n_cells), dtype=np.float32)
        self.scale = (1.0 + CONSTANT_TERM * rng.standard_normal(n_events)).astype(np.float32)


def measured_signal(vis: np.ndarray, window: Window, noise: CellNoise, rows: slice, *, electronic: bool = True):
    """EM-scale cell signals (GeV) of events ``rows`` of ``noise`` from their visible energies ``vis [E, C]``:
    float32 ``[E, C]``.

    With ``electronic=False`` only the sampling fluctuations and the constant term are applied (no electronic or
    pile-up noise).
    """
    a2 = (SAMPLING_TERM[window.cell_layer] ** 2).astype(np.float32)
    noise2 = (window.cell_sigma**2 if electronic else np.zeros(window.n_cells)).astype(np.float32)
    out = noise.z[rows].copy()
    _smear_kernel(out, np.ascontiguousarray(vis, np.float32), a2, noise2, noise.scale[rows])
    return out
