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
from calohls.sim.ziggurat import standard_normal

__all__ = ["measured_signal"]


@numba.njit(cache=True, nogil=True)
def _smear_kernel(z, vis, a2, noise2, scale):  # pragma: no cover - compiled
    """z <- z·sqrt(max(vis, 0)·a2 + noise2) + vis·scale per cell, in float32: one pass over the batch's cells."""
    n_events, n_cells = z.shape
    for e in range(n_events):
        s = scale[e]
        for c in range(n_cells):
            v = vis[e, c]
            spread = np.sqrt(np.float32(max(v, np.float32(0.0)) * a2[c]) + noise2[c])
            z[e, c] = z[e, c] * spread + v * s


def measured_signal(vis: np.ndarray, window: Window, rng: np.random.Generator, *, noise: bool = True) -> np.ndarray:
    """EM-scale cell signals (GeV) from visible energies ``[E, C]``: float32 ``[E, C]``.

    With ``noise=False`` only the sampling fluctuations and the constant term are applied.
    """
    n_events = vis.shape[0]
    a2 = (SAMPLING_TERM[window.cell_layer] ** 2).astype(np.float32)
    noise2 = (window.cell_sigma**2 if noise else np.zeros(window.n_cells)).astype(np.float32)
    scale = (1.0 + CONSTANT_TERM * rng.standard_normal(n_events)).astype(np.float32)
    out = standard_normal(rng, vis.shape)  # compiled ziggurat: 3x faster than rng.standard_normal here
    _smear_kernel(out, np.ascontiguousarray(vis, np.float32), a2, noise2, scale)
    return out
