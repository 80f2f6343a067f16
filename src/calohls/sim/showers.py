"""Parametric electromagnetic and hadronic showers, deposited into the cells of a :class:`~calohls.sim.geometry.Window`.

Every event holds up to three shower *slots*: a photon holds one (an EM shower), a π0 two (its decay photons), a
charged pion three (the minimum-ionising track before its first nuclear interaction, the EM part and the hadronic part
of its shower). For every slot and layer we know the true deposited energy (visible + invisible, what ATLAS calls
calibration hits), the visible energy at EM scale, the shower centre and a two-Gaussian lateral profile (core + tail).

Physics (reference numbers from the ATLAS calorimeter papers and the PDG review of calorimetry, rounded):

* EM showers: photon conversion depth ~ Exp(9/7 X0); Gamma longitudinal profile with b = 0.5 and
  T_max = ln(E/E_c) + 0.5 (Grindhammer–Peters, photons), E_c ≈ 11 MeV in lead/LAr, with event-by-event fluctuation
  of the shape; Molière radius ≈ 4 cm: a core (σ ≈ 0.25 R_M) with 85 % of the energy and a tail (σ ≈ 1.2 R_M),
  widening with depth.
* Charged pions: first interaction ~ Exp(λ_π ≈ 1.1 λ); before it a minimum-ionising track (≈ 0.22 GeV per λ); after
  it an EM fraction with mean f_em = 1 − (E/E0)^(k−1), E0 = 1 GeV, k = 0.82, drawn from a Beta distribution whose
  spread shrinks with energy; the EM part showers like photons from the interaction point; the hadronic part has a
  Gamma profile in λ with maximum at 0.2 ln(E/GeV) + 0.7 λ, a lateral core growing with depth and a wide tail; its
  invisible fraction (nuclear binding, slow neutrons) reproduces e/h ≈ 1.74 in LAr and 1.36 in Tile and fluctuates;
  at low energy the non-EM response drops further (binding losses and quenching of slow hadrons), which brings the
  EM-scale response of charged-pion clusters to ≈ 0.5 at 1 GeV, rising to ≈ 0.85 at a few hundred GeV.
* Non-instrumented material (inner detector, solenoid, cryostats) absorbs energy that no cell sees; energy beyond
  the last Tile layer leaks out. Neither counts in any cell's calibration-hit energy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
from scipy.special import gammainc

from calohls.sim.geometry import LAYERS, SLABS, Window, wrap_phi

__all__ = [
    "CONSTANT_TERM",
    "N_SLOTS",
    "PI0_MASS",
    "SAMPLING_TERM",
    "ShowerSlots",
    "deposit",
    "em_showers",
    "pi0_decay",
    "pion_showers",
]

PI0_MASS = 0.1349768  # GeV

N_SLOTS = 3
_N_LAYERS = len(LAYERS)

# Material along the path at η = 0, as cumulative slab edges.
_X0_EDGES = np.concatenate([[0.0], np.cumsum([s.x0 for s in SLABS])])
_LAM_EDGES = np.concatenate([[0.0], np.cumsum([s.lam for s in SLABS])])
_SLAB_LAYER = np.array([-1 if s.layer is None else s.layer for s in SLABS])
_ACTIVE = np.flatnonzero(_SLAB_LAYER >= 0)  # slab indices read out by a layer, in layer order
_SLAB_IS_LAR = np.array([s.is_lar for s in SLABS])
_LAYER_RADIUS = np.array([lay.radius for lay in LAYERS])
_LAYER_IS_LAR = _SLAB_IS_LAR[_ACTIVE]

# EM showers
E_CRITICAL = 0.011  # GeV, lead/LAr
MOLIERE_RADIUS = 0.04  # m
_EM_B = 0.5
_EM_CORE, _EM_TAIL, _EM_TAIL_FRACTION = 0.25, 1.2, 0.15  # in Molière radii
_EM_WIDTH_BY_LAYER = np.array([1.5, 0.6, 1.0, 1.8, 3.0, 3.0, 3.0])  # the shower widens with depth

# Charged pions
PION_LAMBDA = 1.1  # pion interaction length, in nucleon λ
MIP_PER_LAMBDA = 0.22  # GeV deposited by a minimum-ionising pion per λ
_MIP_VISIBLE = np.where(_LAYER_IS_LAR, 0.85, 0.95)  # mip/e signal ratio at EM scale
_FEM_E0, _FEM_K = 1.0, 0.82
_HAD_SCALE = 0.9  # λ, scale of the Gamma profile of the hadronic part
# Non-EM energy seen at EM scale: intrinsic e/h ≈ 1.74 (LAr) and 1.36 (Tile); calibration hits also count energy
# that escapes or arrives after the signal window (neutrinos, slow neutrons), ≈ 10 % of the non-EM energy here.
_ESCAPED = 0.10
INVISIBLE_FRACTION = 1.0 - (1.0 - _ESCAPED) * np.where(_LAYER_IS_LAR, 1.0 / 1.74, 1.0 / 1.36)
# Low-energy hadronic cascades lose more to nuclear binding and to quenching of slow protons (recombination in LAr,
# Birks saturation in scintillator): the non-EM response is scaled by 1 - c/√(E_nonEM/GeV) (at least 0.3).
_LOW_ENERGY_QUENCHING = 0.3
_HAD_TAIL_WIDTH, _HAD_TAIL_FRACTION = 2.5, 0.25


_FIELDS = ("dep", "vis", "eta", "phi", "sigma_core", "sigma_tail", "tail_fraction")  # of ShowerSlots, in order


@dataclass
class ShowerSlots:
    """Up to :data:`N_SLOTS` showers per event; unused slots have zero energy.

    Attributes:
        dep: true deposited energy per layer, GeV ``[E, S, L]``.
        vis: visible EM-scale energy per layer (before sampling fluctuations), GeV ``[E, S, L]``.
        eta, phi: shower centre per layer ``[E, S, L]`` (absolute η, φ).
        sigma_core, sigma_tail: lateral Gaussian widths in η–φ units ``[E, S, L]``.
        tail_fraction: share of the tail Gaussian ``[E, S]``.
    """

    dep: np.ndarray
    vis: np.ndarray
    eta: np.ndarray
    phi: np.ndarray
    sigma_core: np.ndarray
    sigma_tail: np.ndarray
    tail_fraction: np.ndarray

    @classmethod
    def zeros(cls, n_events: int) -> ShowerSlots:
        shape = (n_events, N_SLOTS, _N_LAYERS)
        return cls(
            dep=np.zeros(shape),
            vis=np.zeros(shape),
            eta=np.zeros(shape),
            phi=np.zeros(shape),
            sigma_core=np.full(shape, 1e-3),
            sigma_tail=np.full(shape, 1e-3),
            tail_fraction=np.zeros(shape[:2]),
        )

    def select(self, rows: slice) -> ShowerSlots:
        """The showers of event ``rows``."""
        return ShowerSlots(*(getattr(self, name)[rows] for name in _FIELDS))

    def put(self, rows: np.ndarray, slot: int, other: ShowerSlots, count: int = 1) -> None:
        """Copy the first ``count`` slots of ``other`` (one row per event row) into slots ``slot`` onwards."""
        dst, src = slice(slot, slot + count), slice(0, count)
        for name in _FIELDS:
            getattr(self, name)[rows, dst] = getattr(other, name)[:, src]


def _gamma_slab_fractions(start: np.ndarray, a: np.ndarray, scale: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Share of a Gamma(a, scale) profile starting at depth ``start`` that falls in each slab ``[n, n_slabs]``."""
    x = np.clip(edges - start[:, None], 0.0, None) / scale[:, None]
    cdf = gammainc(a[:, None], x)
    return np.diff(cdf, axis=1)


def em_showers(
    energy: np.ndarray, eta: np.ndarray, phi: np.ndarray, rng: np.random.Generator, start_x0: np.ndarray | None = None
) -> ShowerSlots:
    """EM showers (one slot each) of photons, or of the EM part of hadronic showers when ``start_x0`` is given."""
    n = len(energy)
    cosh = np.cosh(eta)
    if start_x0 is None:  # photon conversion point
        start_x0 = rng.exponential(9.0 / 7.0, n)
    edges = _X0_EDGES[None, :] * cosh[:, None]
    t_max = np.clip(np.log(np.maximum(energy, 1e-6) / E_CRITICAL) + 0.5, 1.0, None)
    a = (1.0 + _EM_B * t_max) * np.exp(0.08 * rng.standard_normal(n))
    frac = _gamma_slab_fractions(start_x0, a, np.full(n, 1.0 / _EM_B), edges)[:, _ACTIVE]
    out = ShowerSlots.zeros(n)
    dep = energy[:, None] * frac
    out.dep[:, 0], out.vis[:, 0] = dep, dep  # EM showers are seen at EM scale by definition
    out.eta[:, 0], out.phi[:, 0] = eta[:, None], phi[:, None]
    width = np.exp(0.1 * rng.standard_normal(n))[:, None] * _EM_WIDTH_BY_LAYER * MOLIERE_RADIUS / _LAYER_RADIUS
    out.sigma_core[:, 0] = _EM_CORE * width
    out.sigma_tail[:, 0] = _EM_TAIL * width
    out.tail_fraction[:, 0] = _EM_TAIL_FRACTION
    return out


def pi0_decay(
    energy: np.ndarray, eta: np.ndarray, phi: np.ndarray, rng: np.random.Generator
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """π0 → γγ, isotropic in the rest frame: ((E1, η1, φ1), (E2, η2, φ2))."""
    n = len(energy)
    theta = 2.0 * np.arctan(np.exp(-eta))
    nhat = np.stack([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)], axis=1)
    # an orthonormal basis (nhat, u, v)
    ref = np.where(np.abs(nhat[:, 2:3]) < 0.9, [[0.0, 0.0, 1.0]], [[1.0, 0.0, 0.0]])
    u = np.cross(nhat, ref)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    v = np.cross(nhat, u)
    cos_t = rng.uniform(-1.0, 1.0, n)
    sin_t = np.sqrt(1.0 - cos_t**2)
    psi = rng.uniform(0.0, 2.0 * math.pi, n)
    gamma = np.maximum(energy, PI0_MASS * 1.0001) / PI0_MASS
    beta = np.sqrt(1.0 - 1.0 / gamma**2)
    e_star = PI0_MASS / 2.0
    photons = []
    for sign in (1.0, -1.0):
        p_par = sign * e_star * cos_t
        p_perp_u = sign * e_star * sin_t * np.cos(psi)
        p_perp_v = sign * e_star * sin_t * np.sin(psi)
        e_lab = gamma * (e_star + beta * p_par)
        p_par_lab = gamma * (p_par + beta * e_star)
        p = p_par_lab[:, None] * nhat + p_perp_u[:, None] * u + p_perp_v[:, None] * v
        pt = np.hypot(p[:, 0], p[:, 1])
        photons.append((e_lab, np.arcsinh(p[:, 2] / pt), np.arctan2(p[:, 1], p[:, 0])))
    return photons[0], photons[1]


def pion_showers(energy: np.ndarray, eta: np.ndarray, phi: np.ndarray, rng: np.random.Generator) -> ShowerSlots:
    """Charged-pion showers: slot 0 the ionising track, slot 1 the EM part, slot 2 the hadronic part."""
    n = len(energy)
    cosh = np.cosh(eta)
    lam_edges = _LAM_EDGES[None, :] * cosh[:, None]
    t_int = rng.exponential(PION_LAMBDA, n)
    out = ShowerSlots.zeros(n)

    # minimum-ionising track up to the first interaction
    path = np.clip(np.minimum(t_int[:, None], lam_edges[:, 1:]) - lam_edges[:, :-1], 0.0, None)
    mip_all = MIP_PER_LAMBDA * path
    mip_total = np.minimum(mip_all.sum(axis=1), 0.5 * energy)
    scale = np.where(mip_all.sum(axis=1) > 0, mip_total / np.maximum(mip_all.sum(axis=1), 1e-12), 0.0)
    mip = mip_all[:, _ACTIVE] * scale[:, None]
    out.dep[:, 0] = mip
    out.vis[:, 0] = mip * _MIP_VISIBLE
    out.eta[:, 0], out.phi[:, 0] = eta[:, None], phi[:, None]
    out.sigma_core[:, 0] = out.sigma_tail[:, 0] = 0.005 / _LAYER_RADIUS

    # the shower after the first interaction (none if the pion punches through)
    e_shower = np.where(t_int < lam_edges[:, -1], energy - mip_total, 0.0)
    mean_fem = np.clip(1.0 - (np.maximum(e_shower, 1e-3) / _FEM_E0) ** (_FEM_K - 1.0), 0.05, 0.95)
    kappa = 4.0 * np.maximum(e_shower, 0.1) ** 0.35
    f_em = rng.beta(mean_fem * kappa, (1.0 - mean_fem) * kappa)

    # EM part: showers like photons of about half its energy, from the interaction point
    e_em = f_em * e_shower
    start_x0 = np.interp(t_int / cosh, _LAM_EDGES, _X0_EDGES) * cosh
    axis_jitter = 0.015 * rng.standard_normal((2, n))
    em = em_showers(0.5 * e_em, eta + axis_jitter[0], phi + axis_jitter[1], rng, start_x0=start_x0)
    em.dep *= 2.0
    em.vis *= 2.0
    out.put(np.arange(n), 1, em)

    # hadronic part
    e_had = e_shower - e_em
    t_max = np.clip(0.2 * np.log(np.maximum(e_had, 1e-3)) + 0.7, 0.3, None)
    a_had = (1.0 + t_max / _HAD_SCALE) * np.exp(0.15 * rng.standard_normal(n))
    frac = _gamma_slab_fractions(t_int, a_had, np.full(n, _HAD_SCALE), lam_edges)[:, _ACTIVE]
    dep = e_had[:, None] * frac
    f_inv = INVISIBLE_FRACTION[None, :] * (1.0 + 0.12 * rng.standard_normal((n, 1)))
    f_inv = np.clip(f_inv * (1.0 + 0.08 * rng.standard_normal((n, _N_LAYERS))), 0.0, 0.9)
    quench = np.clip(1.0 - _LOW_ENERGY_QUENCHING / np.sqrt(np.maximum(e_had, 1e-3)), 0.3, 1.0)
    out.dep[:, 2] = dep
    out.vis[:, 2] = dep * (1.0 - f_inv) * quench[:, None]
    # lateral: the core grows with depth after the interaction; the centre wanders from layer to layer
    mid = 0.5 * (lam_edges[:, _ACTIVE] + lam_edges[:, _ACTIVE + 1])
    depth_after = np.clip(mid - t_int[:, None], 0.0, None)
    width = np.exp(0.2 * rng.standard_normal(n))[:, None]
    core_m = np.minimum(0.03 + 0.02 * depth_after, 0.10) * width
    out.sigma_core[:, 2] = core_m / _LAYER_RADIUS
    out.sigma_tail[:, 2] = _HAD_TAIL_WIDTH * out.sigma_core[:, 2]
    out.tail_fraction[:, 2] = _HAD_TAIL_FRACTION
    wander = 0.3 * out.sigma_core[:, 2] * rng.standard_normal((2, n, _N_LAYERS))
    out.eta[:, 2] = eta[:, None] + wander[0]
    out.phi[:, 2] = phi[:, None] + wander[1]
    return out


@numba.njit(cache=True, nogil=True)
def _deposit_kernel(dep, vis, centre_eta, centre_phi, sc, st, ft, n_eta, n_phi, deta, dphi, offsets, dep_out, vis_out):
    # pragma: no cover - compiled
    n_events, n_slots, n_layers = dep.shape
    max_e = n_eta.max() + 1
    max_p = n_phi.max() + 1
    pe = np.empty((2, max_e))
    pp = np.empty((2, max_p))
    inv_sqrt2 = 1.0 / math.sqrt(2.0)
    for e in range(n_events):
        for k in range(n_layers):
            base = offsets[k]
            ne, nphi = n_eta[k], n_phi[k]
            for c in range(base, base + ne * nphi):
                dep_out[e, c] = 0.0
                vis_out[e, c] = 0.0
            for s in range(n_slots):
                amount = dep[e, s, k]
                if amount <= 0.0:
                    continue
                ratio = vis[e, s, k] / amount
                for r in range(2):
                    sigma = sc[e, s, k] if r == 0 else st[e, s, k]
                    w = (1.0 - ft[e, s]) if r == 0 else ft[e, s]
                    if w == 0.0:  # a single Gaussian (the track of a charged pion): no erf for the other
                        pe[r, :ne] = 0.0
                        pp[r, :nphi] = 0.0
                        continue
                    z = inv_sqrt2 / sigma
                    prev = math.erf((0.0 - centre_eta[e, s, k]) * z)
                    for i in range(ne):
                        cur = math.erf(((i + 1) * deta[k] - centre_eta[e, s, k]) * z)
                        pe[r, i] = 0.5 * (cur - prev) * w * amount
                        prev = cur
                    prev = math.erf((0.0 - centre_phi[e, s, k]) * z)
                    for j in range(nphi):
                        cur = math.erf(((j + 1) * dphi[k] - centre_phi[e, s, k]) * z)
                        pp[r, j] = 0.5 * (cur - prev)
                        prev = cur
                for i in range(ne):
                    a0, a1 = pe[0, i], pe[1, i]
                    if a0 == 0.0 and a1 == 0.0:
                        continue
                    row = base + i * nphi
                    for j in range(nphi):
                        v = a0 * pp[0, j] + a1 * pp[1, j]
                        dep_out[e, row + j] += v
                        vis_out[e, row + j] += v * ratio


def deposit(
    showers: ShowerSlots, window: Window, eta_low: np.ndarray, phi_low: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """True and visible energy per window cell: two float32 ``[E, n_cells]`` arrays.

    Each slot's lateral profile (core + tail Gaussians) is integrated exactly over every cell of every layer.
    """
    n = showers.dep.shape[0]
    dep_cells = np.empty((n, window.n_cells), np.float32)
    vis_cells = np.empty((n, window.n_cells), np.float32)
    shape = np.array(window.shape, np.int64)
    _deposit_kernel(
        showers.dep,
        showers.vis,
        showers.eta - eta_low[:, None, None],
        wrap_phi(showers.phi - phi_low[:, None, None]),
        showers.sigma_core,
        showers.sigma_tail,
        showers.tail_fraction,
        shape[:, 0],
        shape[:, 1],
        np.array([lay.deta for lay in LAYERS]),
        np.array([lay.dphi for lay in LAYERS]),
        np.asarray(window.offsets, np.int64),
        dep_cells,
        vis_cells,
    )
    return dep_cells, vis_cells


#: Stochastic (sampling) term a of σ/E = a/√E per cell, GeV^½: ≈ 10 % for the lead/LAr barrel, ≈ 30 % for Tile.
SAMPLING_TERM = np.where(_LAYER_IS_LAR, 0.10, 0.30)
#: Constant term of the EM resolution (calibration non-uniformity), applied per event.
CONSTANT_TERM = 0.007
