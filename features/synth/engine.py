"""The hourly time step: entrainment, emissions, transport, chemistry, deposition, free-troposphere exchange.

State: column masses m (layer, tracer, y, x) in ug m-2 for the mixed layer (0..h) and residual layer
(h..TOP_M) plus the previous mixing height. Every operator returns exactly what it added or removed, so the
budget (kg per tracer) closes to round-off: emitted - deposited - transformed - outflow = change in burden.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from features.synth import chemistry as ch
from features.synth.background import background
from features.synth.emissions import SPECIES, Inventory, biogenic_factor
from features.synth.transport import entrain, transport
from features.synth.weather import Weather, rel_humidity

TOP_M = 3500.0  # top of the residual layer, m
TAU_TOP_H = 36.0  # residual layer <-> free troposphere exchange time
ML_WIND, RL_WIND = 1.2, 1.5  # transport wind / 10 m wind (mixed layer), / large-scale wind (residual layer)
STACK_H = 250.0  # power-plant plumes rise above mixed layers shallower than this
# emitted species -> tracer
EMIT_TO = {"nox": "nox", "so2": "so2", "voc": "voc", "nh3": "nhx", "pm25": "ppm", "co": "co", "pmc": "pmc"}
BUDGET_TERMS = ("emitted", "deposited", "transformed", "outflow")


@dataclass
class State:
    """Model state at the start of hour `k`."""

    k: int
    m: np.ndarray  # (2, tracer, y, x) ug m-2, float64
    h: np.ndarray  # (y, x) mixing height of the previous hour, m

    def save(self, path: Path, time: np.datetime64) -> None:
        """Write a restart snapshot (.npz, exact float64)."""
        np.savez(path, k=self.k, m=self.m, h=self.h, time=np.datetime64(time, "ns").astype(np.int64))

    @classmethod
    def load(cls, path: Path) -> State:
        """Read a snapshot written by `save`."""
        with np.load(path) as z:
            return cls(k=int(z["k"]), m=z["m"].copy(), h=z["h"].copy())


@dataclass
class Budget:
    """Per-tracer mass budget in kg."""

    initial: np.ndarray
    terms: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for t in BUDGET_TERMS:
            self.terms.setdefault(t, np.zeros(len(ch.TRACERS)))

    def residual(self, final: np.ndarray) -> np.ndarray:
        """emitted - deposited - transformed - outflow - (final - initial); ~0 by construction."""
        t = self.terms
        return t["emitted"] - t["deposited"] - t["transformed"] - t["outflow"] - (final - self.initial)

    def to_dict(self, final: np.ndarray) -> dict:
        """JSON-ready budget table."""
        res = self.residual(final)
        return {tr: {"initial_kg": float(self.initial[i]), "final_kg": float(final[i]),
                     **{f"{t}_kg": float(self.terms[t][i]) for t in BUDGET_TERMS},
                     "residual_kg": float(res[i])} for i, tr in enumerate(ch.TRACERS)}


def burden(m: np.ndarray, cell_m2: float) -> np.ndarray:
    """Total mass per tracer, kg."""
    return m.sum(axis=(0, 2, 3)) * cell_m2 * 1e-9


def initial_state(wx: Weather, shape: tuple[int, int]) -> State:
    """Background air in both layers at hour 0."""
    bg = background(float(wx.haze[0]), float(wx.winter[0]), float(wx.burning[0]))
    c = 0.5 * (bg["s"] + bg["n"])
    h = wx.blh[0].astype(np.float64)
    m = np.empty((2, len(ch.TRACERS)) + shape)
    m[0] = c[:, None, None] * h
    m[1] = c[:, None, None] * (TOP_M - h)
    return State(k=0, m=m, h=h)


@dataclass
class HourOut:
    """Mixed-layer diagnostics of one hour (all (y, x) ug m-3 unless noted)."""

    c_ml: np.ndarray  # (tracer, y, x)
    c_rl: np.ndarray
    h: np.ndarray
    rh: np.ndarray
    j: np.ndarray


def step(state: State, wx: Weather, inv: Inventory, scale: np.ndarray, local: tuple[int, int, int],
         dx: float, budget: Budget) -> HourOut:
    """Advance `state` by one hour in place. `scale` (sector, species, y, x) multiplies emissions."""
    k = state.k
    area = dx * dx * 1e-9  # ug m-2 -> kg per cell
    m = state.m
    h = wx.blh[k].astype(np.float64)
    t_c = wx.t2m[k].astype(np.float64)
    rh = rel_humidity(t_c, wx.d2m[k].astype(np.float64))
    j = ch.photolysis(wx.ssr[k].astype(np.float64))
    # 1. mixing height change: entrainment / detrainment (conservative)
    m[0], m[1] = entrain(m[0], m[1], state.h, h, TOP_M)
    # 2. emissions (kg km-2 h-1 -> ug m-2 per hour = x 1e3)
    fac = inv.factors(*local)
    per_sector = fac[:, None, None, None] * inv.maps * scale * 1e3  # (sector, species, y, x)
    rest = per_sector[1:].sum(axis=0)
    power = per_sector[0]
    elevated = h < STACK_H
    added = np.zeros((2,) + m.shape[1:])
    for sp, tr in EMIT_TO.items():
        i, q = SPECIES.index(sp), ch.IX[tr]
        added[0, q] += rest[i] + np.where(elevated, 0.0, power[i])
        added[1, q] += np.where(elevated, power[i], 0.0)
    bvoc = inv.biogenic_voc * biogenic_factor(t_c, wx.ssr[k].astype(np.float64)) * 1e3
    added[0, ch.IX["voc"]] += bvoc
    added[:, ch.IX["ox"]] += ch.PRIMARY_NO2 * added[:, ch.IX["nox"]] * (ch.M_O3 / ch.M_NO2)
    m += added
    budget.terms["emitted"] += added.sum(axis=(0, 2, 3)) * area
    # 3. transport (each layer with its own wind), boundary inflow from the regional background
    bg = background(float(wx.haze[k]), float(wx.winter[k]), float(wx.burning[k]))
    d_rl = TOP_M - h
    # regional surface air is diluted by deep afternoon mixing, and loses O3 in shallow night layers
    edge_h = float(h.mean())
    f_ml = np.full(len(ch.TRACERS), np.clip((600.0 / edge_h) ** 0.3, 0.7, 1.5))
    f_ml[ch.IX["ox"]] = np.clip((edge_h / 800.0) ** 0.4, 0.45, 1.1)
    bg_ml = {s: bg[s] * f_ml for s in ("w", "e", "s", "n")}
    flip = bool(k % 2)
    ghost_ml = {"w": bg_ml["w"][:, None] * h[None, :, 0], "e": bg_ml["e"][:, None] * h[None, :, -1],
                "s": bg_ml["s"][:, None] * h[None, 0, :], "n": bg_ml["n"][:, None] * h[None, -1, :]}
    ghost_rl = {"w": bg["rl_w"][:, None] * d_rl[None, :, 0], "e": bg["rl_e"][:, None] * d_rl[None, :, -1],
                "s": bg["rl_s"][:, None] * d_rl[None, 0, :], "n": bg["rl_n"][:, None] * d_rl[None, -1, :]}
    u_ml, v_ml = ML_WIND * wx.u10[k].astype(np.float64), ML_WIND * wx.v10[k].astype(np.float64)
    m[0], out0 = transport(m[0], u_ml, v_ml, ghost_ml, 3600.0, dx, flip)
    u_rl = np.full(h.shape, RL_WIND * wx.wind_ls[k, 0])
    v_rl = np.full(h.shape, RL_WIND * wx.wind_ls[k, 1])
    m[1], out1 = transport(m[1], u_rl, v_rl, ghost_rl, 3600.0, dx, flip)
    budget.terms["outflow"] += (out0 + out1) * area
    # 4. chemistry on concentrations
    c_ml, c_rl = m[0] / h, m[1] / d_rl
    new_ml = ch.chem_step(c_ml, j, t_c, rh)
    new_rl = ch.chem_step(c_rl, 0.8 * j, t_c - 5.0, 0.8 * rh)
    dchem = (new_ml - c_ml) * h + (new_rl - c_rl) * d_rl
    m[0], m[1] = new_ml * h, new_rl * d_rl
    budget.terms["transformed"] -= dchem.sum(axis=(1, 2)) * area
    # 5. dry deposition (mixed layer) and wet scavenging (both layers)
    vd = ch.dry_velocity(new_ml, t_c, rh, j)
    dep_ml = m[0] * -np.expm1(-vd * 3600.0 / h)
    wash = ch.washout_fraction(wx.tp[k].astype(np.float64))
    dep_ml = dep_ml + (m[0] - dep_ml) * wash
    dep_rl = m[1] * wash
    m[0] -= dep_ml
    m[1] -= dep_rl
    budget.terms["deposited"] += (dep_ml.sum(axis=(1, 2)) + dep_rl.sum(axis=(1, 2))) * area
    # 6. residual layer <-> free troposphere (relaxation to the background aloft)
    top = (bg["top"][:, None, None] * d_rl - m[1]) * -np.expm1(-1.0 / TAU_TOP_H)
    m[1] += top
    budget.terms["outflow"] -= top.sum(axis=(1, 2)) * area
    state.h = h
    state.k = k + 1
    return HourOut(c_ml=m[0] / h, c_rl=m[1] / d_rl, h=h, rh=rh, j=j)
