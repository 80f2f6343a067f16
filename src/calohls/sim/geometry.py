"""An ATLAS-like barrel calorimeter: layers, cells, stable cell IDs, noise, and neighbour relations.

Reference numbers (ATLAS detector papers and the LAr/Tile technical design reports, rounded):

* cell sizes Δη × Δφ: presampler 0.025 × 0.1, EMB1 0.025/8 × 0.1, EMB2 0.025 × 0.025, EMB3 0.05 × 0.025,
  TileBar0/1 0.1 × 0.1, TileBar2 0.2 × 0.1 (φ sizes are exact divisions of 2π: 64 or 256 cells in φ);
* depths at η = 0 (they grow as cosh η in the barrel): about 2 X0 of material in front of the presampler, EMB1/2/3
  ≈ 4.3 / 16 / 2 X0 (≈ 1.2 λ in all), ≈ 0.3 λ of cryostat between LAr and Tile, Tile ≈ 1.5 / 4.1 / 1.8 λ;
* electronic noise per cell: PS 90 MeV, EMB1 26, EMB2 60, EMB3 40, Tile 20 MeV. Pile-up noise at μ = 200 is added in
  quadrature and scales as √μ (values below: ATLAS-like order of magnitude for the HL-LHC, per cell).

Cells are addressed in two ways. *Global* IDs are stable integers over the whole barrel:
``id = sampling << 24 | (ieta + 4096) << 10 | iphi`` where cell ``ieta`` spans ``[ieta·Δη, (ieta+1)·Δη)`` and ``iphi``
spans ``[-π + iphi·Δφ, -π + (iphi+1)·Δφ)``. *Local* indices number the cells of a :class:`Window`: a fixed block of
cells around a particle, the same shape for every event, so that neighbour tables are computed once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from calohls.data.schema import SAMPLINGS
from calohls.errors import ConfigError

__all__ = ["LAYERS", "SLABS", "Layer", "Slab", "Window", "decode_cell_id", "encode_cell_id", "window_for"]

TWO_PI = 2.0 * math.pi
_IETA_OFFSET = 4096


@dataclass(frozen=True)
class Layer:
    """An instrumented barrel layer."""

    name: str
    deta: float
    n_phi: int  # cells around the full circle; Δφ = 2π / n_phi
    radius: float  # cell-centre radius at η = 0, m
    noise_elec: float  # electronic noise per cell, GeV
    noise_pu200: float  # pile-up noise per cell at μ = 200, GeV

    @property
    def sampling(self) -> int:
        """ATLAS CaloSampling number."""
        return SAMPLINGS[self.name]

    @property
    def dphi(self) -> float:
        return TWO_PI / self.n_phi

    def noise(self, mu: float) -> float:
        """Total noise σ per cell (GeV) at pile-up ``mu``: electronic ⊕ pile-up·√(μ/200)."""
        return math.hypot(self.noise_elec, self.noise_pu200 * math.sqrt(mu / 200.0))


@dataclass(frozen=True)
class Slab:
    """A radial slab of material along the particle path at η = 0; ``layer`` is None for dead material."""

    name: str
    x0: float  # thickness in radiation lengths
    lam: float  # thickness in nuclear interaction lengths
    layer: int | None  # index into LAYERS of the layer that reads out this slab
    is_lar: bool  # LAr (True) or Tile (False) response; dead material is lost either way


#: Instrumented layers, inside out.
LAYERS: tuple[Layer, ...] = (
    Layer("PreSamplerB", 0.025, 64, 1.43, 0.090, 0.150),
    Layer("EMB1", 0.025 / 8, 64, 1.53, 0.026, 0.040),
    Layer("EMB2", 0.025, 256, 1.70, 0.060, 0.150),
    Layer("EMB3", 0.050, 256, 1.90, 0.040, 0.060),
    Layer("TileBar0", 0.1, 64, 2.43, 0.020, 0.100),
    Layer("TileBar1", 0.1, 64, 3.01, 0.020, 0.080),
    Layer("TileBar2", 0.2, 64, 3.63, 0.020, 0.050),
)

#: Material along the path at η = 0, inside out (ID + solenoid + cryostat, the layers, the cryostat back wall).
#: EMB: λ/X0 ≈ 1.2/22 (lead/LAr); Tile: λ/X0 ≈ 1/9.4 (iron/scintillator).
SLABS: tuple[Slab, ...] = (
    Slab("front dead material", 2.0, 0.30, None, True),
    Slab("PreSamplerB", 0.5, 0.03, 0, True),
    Slab("EMB1", 4.3, 0.235, 1, True),
    Slab("EMB2", 16.0, 0.87, 2, True),
    Slab("EMB3", 2.0, 0.11, 3, True),
    Slab("cryostat", 2.5, 0.30, None, True),
    Slab("TileBar0", 14.1, 1.5, 4, False),
    Slab("TileBar1", 38.5, 4.1, 5, False),
    Slab("TileBar2", 16.9, 1.8, 6, False),
)

# The window is aligned to the coarsest grid (TileBar2 η cells of 0.2 and φ cells of 2π/64), which every layer's grid
# divides, so the cell pattern and the neighbour table are the same for every window.
_ALIGN_ETA = 0.2
_ALIGN_NPHI = 64
_WIN_ETA_CELLS = (1, 1)  # coarse η cells below / above the one holding the particle (window = 3 × 0.2 in η)
_WIN_PHI_CELLS = (2, 2)  # coarse φ cells below / above (window = 5 × 2π/64 ≈ 0.49 in φ)


def encode_cell_id(sampling: np.ndarray | int, ieta: np.ndarray | int, iphi: np.ndarray | int) -> np.ndarray:
    """Global cell ID from ATLAS sampling number, η index and φ index."""
    s, i, j = (np.asarray(a, np.int64) for a in (sampling, ieta, iphi))
    return (s << 24) | ((i + _IETA_OFFSET) << 10) | j


def decode_cell_id(cell_id: np.ndarray | int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of :func:`encode_cell_id`: (sampling, ieta, iphi)."""
    c = np.asarray(cell_id, np.int64)
    return c >> 24, ((c >> 10) & 0x3FFF) - _IETA_OFFSET, c & 0x3FF


def wrap_phi(phi: np.ndarray) -> np.ndarray:
    """φ folded into [-π, π)."""
    return (np.asarray(phi) + math.pi) % TWO_PI - math.pi


@dataclass(frozen=True)
class Window:
    """The fixed block of cells simulated around one particle, in local coordinates.

    Local η runs from 0 at the window's lower η edge, local φ from 0 at its lower φ edge. Cells are numbered layer by
    layer (inside out), η-major within a layer.
    """

    mu: float

    @cached_property
    def eta_size(self) -> float:
        return _ALIGN_ETA * (sum(_WIN_ETA_CELLS) + 1)

    @cached_property
    def phi_size(self) -> float:
        return TWO_PI / _ALIGN_NPHI * (sum(_WIN_PHI_CELLS) + 1)

    @cached_property
    def shape(self) -> tuple[tuple[int, int], ...]:
        """(n_eta, n_phi) per layer."""
        return tuple(
            (round(self.eta_size / lay.deta), lay.n_phi // _ALIGN_NPHI * (sum(_WIN_PHI_CELLS) + 1)) for lay in LAYERS
        )

    @cached_property
    def offsets(self) -> np.ndarray:
        """First local cell index of each layer, plus the total at the end."""
        return np.concatenate([[0], np.cumsum([a * b for a, b in self.shape])])

    @property
    def n_cells(self) -> int:
        return int(self.offsets[-1])

    @cached_property
    def _cells(self) -> dict[str, np.ndarray]:
        layer, ieta, iphi = [], [], []
        for k, (ne, nphi) in enumerate(self.shape):
            i, j = np.meshgrid(np.arange(ne), np.arange(nphi), indexing="ij")
            layer.append(np.full(ne * nphi, k))
            ieta.append(i.ravel())
            iphi.append(j.ravel())
        layer_a = np.concatenate(layer)
        return {"layer": layer_a, "ieta": np.concatenate(ieta), "iphi": np.concatenate(iphi)}

    @property
    def cell_layer(self) -> np.ndarray:
        """Layer index (into LAYERS) of each local cell."""
        return self._cells["layer"]

    @property
    def cell_ieta(self) -> np.ndarray:
        """η index of each local cell within its layer's part of the window."""
        return self._cells["ieta"]

    @property
    def cell_iphi(self) -> np.ndarray:
        """φ index of each local cell within its layer's part of the window."""
        return self._cells["iphi"]

    @cached_property
    def cell_eta(self) -> np.ndarray:
        """Local η of each cell centre."""
        deta = np.array([lay.deta for lay in LAYERS])[self.cell_layer]
        return (self._cells["ieta"] + 0.5) * deta

    @cached_property
    def cell_phi(self) -> np.ndarray:
        """Local φ of each cell centre."""
        dphi = np.array([lay.dphi for lay in LAYERS])[self.cell_layer]
        return (self._cells["iphi"] + 0.5) * dphi

    @cached_property
    def cell_sigma(self) -> np.ndarray:
        """Total noise σ (GeV) of each cell at this window's μ."""
        return np.array([lay.noise(self.mu) for lay in LAYERS])[self.cell_layer]

    @cached_property
    def cell_static(self) -> np.ndarray:
        """Per-cell (sampling, r, Δη, Δφ, σ), float32 ``[n_cells, 5]``."""
        per_layer = np.array([[lay.sampling, lay.radius, lay.deta, lay.dphi, lay.noise(self.mu)] for lay in LAYERS])
        return per_layer[self.cell_layer].astype(np.float32)

    def global_ids(self, cell: np.ndarray, eta_low: np.ndarray, phi_low_index: np.ndarray) -> np.ndarray:
        """Global cell IDs of local cells ``cell`` in windows with the given lower corners (arrays of one shape).

        Args:
            cell: local cell indices.
            eta_low: lower η edge of each cell's window (a multiple of 0.2).
            phi_low_index: index of the window's lower φ edge on the 2π/64 grid (may be negative; wraps).
        """
        k = self.cell_layer[cell]
        deta = np.array([lay.deta for lay in LAYERS])[k]
        n_phi = np.array([lay.n_phi for lay in LAYERS])[k]
        sampling = np.array([lay.sampling for lay in LAYERS])[k]
        ieta = np.rint(np.asarray(eta_low) / deta).astype(np.int64) + self._cells["ieta"][cell]
        iphi = (np.asarray(phi_low_index, np.int64) * (n_phi // _ALIGN_NPHI) + self._cells["iphi"][cell]) % n_phi
        return encode_cell_id(sampling, ieta, iphi)

    @cached_property
    def neighbours(self) -> tuple[np.ndarray, np.ndarray]:
        """Neighbour table in CSR form ``(indptr, indices)`` over local cells.

        Two cells are neighbours when they share an edge or a corner in the same layer, or when their η–φ areas
        overlap in adjacent layers (including EMB3–TileBar0), as for ATLAS's 3D topo-clustering neighbours.
        """
        src, dst = [], []
        for k, (ne, nphi) in enumerate(self.shape):
            base = self.offsets[k]
            i, j = np.meshgrid(np.arange(ne), np.arange(nphi), indexing="ij")
            for di in (-1, 0, 1):
                for dj in (-1, 0, 1):
                    if di == dj == 0:
                        continue
                    ii, jj = i + di, j + dj
                    ok = (ii >= 0) & (ii < ne) & (jj >= 0) & (jj < nphi)
                    src.append(base + (i * nphi + j)[ok])
                    dst.append(base + (ii * nphi + jj)[ok])
        for k in range(len(LAYERS) - 1):
            a, b = self._overlaps(k, k + 1)
            src += [a, b]
            dst += [b, a]
        s, d = np.concatenate(src), np.concatenate(dst)
        order = np.lexsort((d, s))
        s, d = s[order], d[order]
        indptr = np.searchsorted(s, np.arange(self.n_cells + 1))
        return indptr, d.astype(np.int32)

    def _overlaps(self, ka: int, kb: int) -> tuple[np.ndarray, np.ndarray]:
        """Pairs of local cells of layers ka and kb whose η–φ rectangles overlap with positive area."""

        def ranges(k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
            sl = slice(self.offsets[k], self.offsets[k + 1])
            lay = LAYERS[k]
            e, p = self.cell_eta[sl], self.cell_phi[sl]
            idx = np.arange(self.offsets[k], self.offsets[k + 1])
            return idx, e - lay.deta / 2, e + lay.deta / 2, p - lay.dphi / 2, p + lay.dphi / 2

        ia, ea0, ea1, pa0, pa1 = ranges(ka)
        ib, eb0, eb1, pb0, pb1 = ranges(kb)
        tol = 1e-9
        ov = (np.minimum(ea1[:, None], eb1[None, :]) - np.maximum(ea0[:, None], eb0[None, :]) > tol) & (
            np.minimum(pa1[:, None], pb1[None, :]) - np.maximum(pa0[:, None], pb0[None, :]) > tol
        )
        a, b = np.nonzero(ov)
        return ia[a], ib[b]


def window_for(eta: np.ndarray, phi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Place a window around each particle direction.

    Returns:
        (eta_low, phi_low, phi_low_index): the window's lower η edge, lower φ edge (in [-π, π)), and that edge's
        index on the 2π/64 grid.
    """
    eta = np.asarray(eta, np.float64)
    if np.any(np.abs(eta) > 0.8):
        raise ConfigError(f"|η| = {np.abs(eta).max():.3f} is outside the simulated barrel window; use |η| <= 0.8")
    eta_low = (np.floor(eta / _ALIGN_ETA) - _WIN_ETA_CELLS[0]) * _ALIGN_ETA
    dphi = TWO_PI / _ALIGN_NPHI
    j = np.floor((wrap_phi(phi) + math.pi) / dphi).astype(np.int64) - _WIN_PHI_CELLS[0]
    return eta_low, wrap_phi(-math.pi + j * dphi), j
