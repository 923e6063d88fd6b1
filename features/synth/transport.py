"""Horizontal transport and boundary-layer exchange of column masses (ug m-2) in two layers.

Advection: finite-volume, flux form, van Leer (monotonised) slope limiter, dimensional splitting with
alternating x/y order, sub-stepped so that every face Courant number |u| dt / dx <= 1/2. Flux form conserves
mass exactly; the limited face values stay within [0, 2 m_i], and with Courant <= 1/2 a cell can never lose
more than it holds, so the scheme is positive (proof in docs/synthetic-world.md). Diffusion: explicit, once
per hour, K dt / dx^2 <= 0.2 per sweep, zero-flux walls. Lateral boundaries: inflow faces
carry the regional background (ghost cells), outflow faces carry the upwind interior value.
"""
from __future__ import annotations

import numpy as np

COURANT_MAX = 0.5
K_DIFF = 300.0  # m2 s-1, sub-grid horizontal eddy diffusivity


def n_substeps(u_faces: list[np.ndarray], dt: float, dx: float) -> int:
    """Number of advection sub-steps keeping every face Courant number <= COURANT_MAX."""
    cmax = max(float(np.max(np.abs(u))) for u in u_faces) * dt / dx
    return max(1, int(np.ceil(cmax / COURANT_MAX)))


def faces(u: np.ndarray, axis: int) -> np.ndarray:
    """Face velocities (n+1 along `axis`) from cell-centre velocities: interior mean, edges copied."""
    u = np.moveaxis(u, axis, -1)
    mid = 0.5 * (u[..., 1:] + u[..., :-1])
    out = np.concatenate([u[..., :1], mid, u[..., -1:]], axis=-1)
    return np.moveaxis(out, -1, axis)


def advect_1d(m: np.ndarray, nu: np.ndarray, ghost_lo: np.ndarray, ghost_hi: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    """One van Leer step along the last axis.

    m: (..., n) masses; nu: (..., n+1) face Courant numbers (broadcastable, |nu| <= 0.5); ghost_lo/hi:
    (...,) values beyond the west/south and east/north edges. Returns (new m, net outflow per line (...,)).
    """
    ext = np.concatenate([ghost_lo[..., None], m, ghost_hi[..., None]], axis=-1)  # n+2
    dm = ext[..., 1:] - ext[..., :-1]  # n+1
    a, b = dm[..., :-1], dm[..., 1:]  # backward/forward differences of the n interior cells
    prod = a * b
    slope = np.zeros_like(ext)  # ghost cells: zero slope
    np.divide(2.0 * prod, a + b, out=slope[..., 1:-1], where=prod > 0)  # van Leer (harmonic mean)
    half = 0.5 * (1.0 - np.abs(nu))
    face = np.where(nu > 0, ext[..., :-1] + half * slope[..., :-1], ext[..., 1:] - half * slope[..., 1:])
    flux = nu * face  # mass crossing each face towards +axis, per unit cell area
    new = m + flux[..., :-1] - flux[..., 1:]
    return new, flux[..., -1] - flux[..., 0]


def diffuse_1d(m: np.ndarray, kappa: float) -> np.ndarray:
    """Explicit diffusion along the last axis, zero-flux walls; kappa = K dt / dx^2 (<= 0.25 for positivity)."""
    flux = kappa * (m[..., 1:] - m[..., :-1])
    out = m.copy()
    out[..., :-1] += flux
    out[..., 1:] -= flux
    return out


def transport(m: np.ndarray, u: np.ndarray, v: np.ndarray, ghost: dict[str, np.ndarray], dt: float,
              dx: float, flip: bool) -> tuple[np.ndarray, np.ndarray]:
    """Advect + diffuse masses m (..., y, x) for `dt` seconds with cell winds u, v (y, x).

    ghost: "w", "e" (..., y) and "s", "n" (..., x) background masses. Returns (m, net lateral outflow
    summed over the boundary (...,) in ug m-2 x cell-area units)."""
    uf, vf = faces(u, -1), faces(v, -2)
    n = n_substeps([uf, vf], dt, dx)
    h = dt / n
    nux, nuy = uf * h / dx, np.swapaxes(vf, -1, -2) * h / dx
    out = np.zeros(m.shape[:-2])
    for k in range(n):
        for ax in (("x", "y") if (k % 2 == 0) != flip else ("y", "x")):
            if ax == "x":
                m, o = advect_1d(m, nux, ghost["w"], ghost["e"])
            else:
                mt, o = advect_1d(np.swapaxes(m, -1, -2), nuy, ghost["s"], ghost["n"])
                m = np.swapaxes(mt, -1, -2)
            out += o.sum(axis=-1)
    kappa = K_DIFF * dt / dx**2
    nd = max(1, int(np.ceil(kappa / 0.2)))
    for _ in range(nd):
        m = diffuse_1d(m, kappa / nd)
        m = np.swapaxes(diffuse_1d(np.swapaxes(m, -1, -2), kappa / nd), -1, -2)
    return np.ascontiguousarray(m), out


def entrain(m_ml: np.ndarray, m_rl: np.ndarray, h_old: np.ndarray, h_new: np.ndarray, top: float
            ) -> tuple[np.ndarray, np.ndarray]:
    """Move mass between mixed layer (0..h) and residual layer (h..top) when the mixing height changes.

    Growing: the mixed layer takes in the residual air it grows into. Collapsing: it leaves its air behind
    in the residual layer. Column mass is conserved exactly in both cases."""
    c_ml = m_ml / h_old
    c_rl = m_rl / (top - h_old)
    grow = h_new > h_old
    moved = np.where(grow, c_rl * (h_new - h_old), -c_ml * (h_old - h_new))
    return m_ml + moved, m_rl - moved
