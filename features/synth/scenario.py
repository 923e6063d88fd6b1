"""Emission-cut scenarios: re-run the world from a saved state with emissions scaled per sector, species,
region (bbox or cell mask) and time window; the truth of the perturbed world is written beside the baseline.

scenario.yaml:
    name: nox30
    cuts:
      - factor: 0.7                        # multiply emissions by this (0.7 = 30 % cut)
        sectors: [transport, industry]     # default: all anthropogenic sectors
        species: [nox]                     # default: all (nox so2 voc nh3 pm25 co pmc)
        bbox: [116.2, 39.8, 116.6, 40.1]   # lon_min, lat_min, lon_max, lat_max (optional)
        mask: mask.npy                     # bool (ny, nx) file (optional, relative to the yaml)
        start: "2015-01-10T00:00+08:00"    # optional window, ISO 8601 with offset (naive = UTC+08:00)
        end: "2015-01-20T00:00+08:00"      # exclusive
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator

from features.errors import DataError, MissingInputError, Problem
from features.synth.emissions import SECTORS, SPECIES
from features.synth.engine import State
from features.synth.world import World, ones_scale


class Cut(BaseModel):
    """One multiplicative change of emissions."""

    factor: float = Field(ge=0.0, le=10.0)
    sectors: list[str] | None = None
    species: list[str] | None = None
    bbox: tuple[float, float, float, float] | None = None
    mask: str | None = None
    start: str | None = None
    end: str | None = None

    @field_validator("sectors")
    @classmethod
    def _sectors(cls, v: list[str] | None) -> list[str] | None:
        bad = [s for s in v or [] if s not in SECTORS]
        if bad:
            raise ValueError(f"unknown sector(s) {bad}; choose from {list(SECTORS)}")
        return v

    @field_validator("species")
    @classmethod
    def _species(cls, v: list[str] | None) -> list[str] | None:
        bad = [s for s in v or [] if s not in SPECIES]
        if bad:
            raise ValueError(f"unknown species {bad}; choose from {list(SPECIES)}")
        return v


class Scenario(BaseModel):
    """A named set of cuts."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    cuts: list[Cut] = Field(default_factory=list)


def load_scenario(path: Path) -> Scenario:
    """Parse scenario.yaml; problems raise DataError."""
    if not path.is_file():
        raise MissingInputError(Problem("scenario file not found", file=str(path)))
    try:
        return Scenario.model_validate(yaml.safe_load(path.read_text()) or {})
    except yaml.YAMLError as e:
        raise DataError(Problem(f"not valid YAML: {e}", file=str(path))) from e
    except ValidationError as e:
        raise DataError([Problem(err["msg"], file=str(path), column=".".join(map(str, err["loc"])))
                         for err in e.errors()]) from e


def _to_utc(text: str, file: str) -> pd.Timestamp:
    try:
        t = pd.Timestamp(text)
    except ValueError as e:
        raise DataError(Problem(f"{text!r} is not an ISO 8601 time", file=file)) from e
    if t.tzinfo is None:
        return t - pd.Timedelta(hours=8)
    return t.tz_convert("UTC").tz_localize(None)


class ScaleSchedule:
    """scale(k) -> (sector, species, y, x) factors of hour k; all ones outside every cut."""

    def __init__(self, world: World, scenario: Scenario, base_dir: Path):
        self.base = ones_scale(world)
        g, n = world.land.grid, len(world.times)
        self.items = []
        for i, cut in enumerate(scenario.cuts):
            f = str(base_dir / f"cut {i}")
            sec = [SECTORS.index(s) for s in (cut.sectors or SECTORS)]
            spc = [SPECIES.index(s) for s in (cut.species or SPECIES)]
            cells = np.ones(g.shape, dtype=bool)
            if cut.bbox is not None:
                lo0, la0, lo1, la1 = cut.bbox
                cells &= (world.land.lon >= lo0) & (world.land.lon <= lo1) & (world.land.lat >= la0) \
                    & (world.land.lat <= la1)
            if cut.mask is not None:
                mp = (base_dir / cut.mask)
                if not mp.is_file():
                    raise MissingInputError(Problem("mask file not found", file=str(mp)))
                mk = np.load(mp)
                if mk.shape != g.shape:
                    raise DataError(Problem(f"mask shape {mk.shape} is not the grid's {g.shape}", file=str(mp)))
                cells &= mk.astype(bool)
            times = world.times
            k0 = 0 if cut.start is None else int(np.searchsorted(times, _to_utc(cut.start, f)))
            k1 = n if cut.end is None else int(np.searchsorted(times, _to_utc(cut.end, f)))
            fac = np.ones_like(self.base)
            fac[np.ix_(sec, spc)] = np.where(cells, cut.factor, 1.0)
            self.items.append((k0, k1, fac))
        self._cache: dict[tuple[int, ...], np.ndarray] = {}

    def first_hour(self) -> int:
        """Earliest hour any cut is active (len(times) if none)."""
        return min((k0 for k0, k1, _ in self.items if k1 > k0), default=10**9)

    def __call__(self, k: int) -> np.ndarray:
        active = tuple(i for i, (k0, k1, _) in enumerate(self.items) if k0 <= k < k1)
        if active not in self._cache:
            s = self.base.copy()
            for i in active:
                s = s * self.items[i][2]
            self._cache[active] = s
        return self._cache[active]


def pick_state(from_state: Path, before: pd.Timestamp) -> State:
    """A snapshot file, or the latest snapshot in a directory at or before time `before` (UTC)."""
    if from_state.is_file():
        return State.load(from_state)
    if not from_state.is_dir():
        raise MissingInputError(Problem("state file or directory not found", file=str(from_state)))
    stamped = []
    for f in sorted(from_state.glob("state_*.npz")):
        m = re.match(r"state_(\d{8}T\d{2})Z\.npz$", f.name)
        if m:
            stamped.append((pd.Timestamp(m.group(1)), f))
    if not stamped:
        raise MissingInputError(Problem("no state_YYYYMMDDTHHZ.npz snapshots", file=str(from_state)))
    ok = [f for t, f in stamped if t <= before]
    return State.load(ok[-1] if ok else stamped[0][1])
