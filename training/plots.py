"""Training plots (matplotlib Agg): skill by lead, a forecast map, a station time series."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

SPECIES = ("pm25", "o3")
LABEL = {"pm25": "PM2.5", "o3": "O3"}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def skill_by_lead(per_lead: dict[str, np.ndarray], path: str | Path) -> Path:
    """MAE of the P50 by lead (input and held-out stations) against persistence, and P10-P90 coverage."""
    plt = _plt()
    leads = np.arange(1, per_lead["mae"].shape[0] + 1)
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for k, sp in enumerate(SPECIES):
        ax = axes[k]
        ax.plot(leads, per_lead["mae"][:, k], label="model (input stations)")
        if np.isfinite(per_lead["mae_heldout"][:, k]).any():
            ax.plot(leads, per_lead["mae_heldout"][:, k], label="model (held-out stations)")
        ax.plot(leads, per_lead["mae_persistence"][:, k], "--", label="persistence")
        ax.set_title(f"{LABEL[sp]} validation MAE")
        ax.set_xlabel("lead (h)")
        ax.set_ylabel("µg m⁻³")
        ax.legend(fontsize=8)
    for k, sp in enumerate(SPECIES):
        axes[2].plot(leads, 100 * per_lead["coverage"][:, k], label=LABEL[sp])
    axes[2].axhspan(75, 85, color="0.9")
    axes[2].set_title("P10-P90 coverage (target 80 %)")
    axes[2].set_xlabel("lead (h)")
    axes[2].set_ylabel("%")
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def forecast_map(grid_p50: np.ndarray, lon: np.ndarray, lat: np.ndarray, station_lon: np.ndarray,
                 station_lat: np.ndarray, title: str, path: str | Path, lead: int = 24) -> Path:
    """P50 at +`lead` h on the grid for both species (grid_p50 [L, 2, Y, X]), stations as dots."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for k, sp in enumerate(SPECIES):
        ax = axes[k]
        im = ax.pcolormesh(lon, lat, grid_p50[lead - 1, k], shading="auto", cmap="magma_r")
        ax.scatter(station_lon, station_lat, s=12, c="cyan", edgecolors="k", linewidths=0.5)
        fig.colorbar(im, ax=ax, label="µg m⁻³")
        ax.set_title(f"{LABEL[sp]} P50 +{lead} h — {title}", fontsize=9)
        ax.set_xlabel("lon")
        ax.set_ylabel("lat")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def station_series(init_ns: np.ndarray, q: np.ndarray, target: np.ndarray, mask: np.ndarray, station: str,
                   path: str | Path, lead: int = 24) -> Path:
    """Observed vs +`lead` h forecast (P50, P10-P90 band) at one station over the validation inits.

    q [N, L, 2, 3] and target/mask [N, L, 2] at that station."""
    plt = _plt()
    valid = (init_ns.astype("datetime64[ns]") + np.timedelta64(lead, "h"))
    order = np.argsort(valid)
    fig, axes = plt.subplots(2, 1, figsize=(12, 6), sharex=True)
    for k, sp in enumerate(SPECIES):
        ax = axes[k]
        t, qq = valid[order], q[order, lead - 1, k]
        obs = np.where(mask[order, lead - 1, k] > 0, target[order, lead - 1, k], np.nan)
        ax.fill_between(t, qq[:, 0], qq[:, 2], color="C0", alpha=0.25, label="P10-P90")
        ax.plot(t, qq[:, 1], color="C0", lw=1, label=f"P50 +{lead} h")
        ax.plot(t, obs, "k.", ms=3, label="observed")
        ax.set_ylabel(f"{LABEL[sp]} µg m⁻³")
        ax.legend(fontsize=8, loc="upper right")
    axes[0].set_title(f"{station}: validation forecasts at +{lead} h")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
