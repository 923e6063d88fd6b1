"""Regional background air entering the domain (lateral inflow) and the free troposphere above it.

Concentration = clean(season) + haze x excess(season) x side weight; `haze` is the regional-pollution index
of the weather (built up by stagnant/southerly days, cleared by northerly outbreaks). The North China Plain
lies to the south and east, mountains and the Mongolian plateau to the north and west, so southern inflow
is the dirtiest.
"""
from __future__ import annotations

import numpy as np

from features.synth.chemistry import TRACERS

SIDE_WEIGHT = {"w": 0.6, "e": 0.85, "s": 1.0, "n": 0.45}
FREE_TROP_WEIGHT = 0.1
RESIDUAL_WEIGHT = 0.35  # the regional haze layer fills ~1/3 of the residual layer's depth
# ug m-3:           nox   ox     so2  voc   nhx   tno3  so4  co     ppm   soa  pmc
CLEAN_WINTER = (4.0, 62.0, 8.0, 8.0, 2.0, 1.0, 2.0, 300.0, 5.0, 1.0, 10.0)
CLEAN_SUMMER = (3.0, 105.0, 3.0, 10.0, 6.0, 1.5, 3.0, 200.0, 4.0, 2.0, 10.0)
EXCESS_WINTER = (14.0, -30.0, 9.0, 10.0, 5.0, 6.0, 6.0, 400.0, 10.0, 3.0, 12.0)
EXCESS_SUMMER = (4.0, 40.0, 3.0, 8.0, 7.0, 5.0, 9.0, 160.0, 6.0, 5.0, 8.0)
# extra regional excess in the crop-residue burning seasons (primary PM, SOA, CO)
BURNING = (0.0, 0.0, 0.0, 10.0, 0.0, 0.0, 0.0, 500.0, 30.0, 12.0, 10.0)


def background(haze: float, winter: float, burning: float = 0.0) -> dict[str, np.ndarray]:
    """Background (tracer,) per side ('w','e','s','n'), per side aloft ('rl_w', ...) and above ('top')."""
    clean = winter * np.asarray(CLEAN_WINTER) + (1 - winter) * np.asarray(CLEAN_SUMMER)
    excess = winter * np.asarray(EXCESS_WINTER) + (1 - winter) * np.asarray(EXCESS_SUMMER) \
        + burning * np.asarray(BURNING)
    out = {s: np.maximum(clean + haze * excess * w, 0.1 * clean) for s, w in SIDE_WEIGHT.items()}
    out.update({f"rl_{s}": np.maximum(clean + haze * excess * w * RESIDUAL_WEIGHT, 0.1 * clean)
                for s, w in SIDE_WEIGHT.items()})
    out["top"] = np.maximum(clean + haze * excess * FREE_TROP_WEIGHT, 0.1 * clean)
    assert len(clean) == len(TRACERS)
    return out
