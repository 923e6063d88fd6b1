"""Plots that set the synthetic world beside the real Beijing record (docs/img/synth-*.png).

    python -m features.synth.report --synth DIR --real ../shared/data/beijing --out docs/img
The real directory is optional (plots then show the synthetic world alone).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

SEASONS = {"winter (DJF)": (12, 1, 2), "summer (JJA)": (6, 7, 8)}


def load_uci(directory: Path) -> pd.DataFrame:
    """All PRSA CSVs of a directory as one frame (local time), with a `date` column."""
    frames = [pd.read_csv(f) for f in sorted(directory.glob("PRSA_Data_*.csv"))]
    df = pd.concat(frames, ignore_index=True)
    df["date"] = pd.to_datetime(df[["year", "month", "day"]])
    return df


def summary(df: pd.DataFrame) -> dict:
    """Headline statistics (pooled stations)."""
    daily = df.groupby(["station", "date"])["PM2.5"].mean().dropna()
    n_years = max(df["date"].nunique() / 365.25, 1e-9)
    win, summ = df.month.isin(SEASONS["winter (DJF)"]), df.month.isin(SEASONS["summer (JJA)"])
    aft = summ & df.hour.between(13, 17)
    dmon = daily.index.get_level_values("date").month
    return {"annual_mean_pm25": df["PM2.5"].mean(), "winter_mean_pm25": df.loc[win, "PM2.5"].mean(),
            "summer_mean_pm25": df.loc[summ, "PM2.5"].mean(),
            "days_over_150_per_station_year": (daily > 150).sum() / df.station.nunique() / n_years,
            "share_of_days_over_150_in_winter_half": float(((daily > 150) & np.isin(dmon, (11, 12, 1, 2, 3))).sum()
                                                           / max((daily > 150).sum(), 1)),
            "p99_daily_pm25": daily.quantile(0.99), "max_daily_pm25": daily.max(),
            "summer_afternoon_o3": df.loc[aft, "O3"].mean(), "winter_mean_o3": df.loc[win, "O3"].mean(),
            "mean_no2": df["NO2"].mean(), "mean_so2": df["SO2"].mean(), "mean_co": df["CO"].mean(),
            "pm10_over_pm25": df["PM10"].mean() / df["PM2.5"].mean(), "mean_wspm": df["WSPM"].mean()}


def _plot_cycles(data: dict[str, pd.DataFrame], out: Path, plt) -> None:
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    for r, var in enumerate(("PM2.5", "O3")):
        for c, (sname, months) in enumerate(SEASONS.items()):
            ax = axes[r, c]
            for label, df in data.items():
                d = df[df.month.isin(months)].groupby("hour")[var].mean()
                ax.plot(d.index, d.values, label=label, lw=2)
            ax.set_title(f"{var} diurnal cycle, {sname}")
            ax.set_xlabel("local hour")
            ax.set_ylabel("ug m-3")
            ax.set_xticks(range(0, 24, 3))
        ax = axes[r, 2]
        for label, df in data.items():
            m = df.groupby("month")[var].mean()
            ax.plot(m.index, m.values, marker="o", label=label, lw=2)
        ax.set_title(f"{var} monthly mean")
        ax.set_xticks(range(1, 13))
        ax.set_xlabel("month")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "synth-cycles.png", dpi=90)
    plt.close(fig)


def _plot_daily(data: dict[str, pd.DataFrame], out: Path, plt) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    bins = np.arange(0, 560, 20)
    for label, df in data.items():
        daily = df.groupby(["station", "date"])["PM2.5"].mean().dropna()
        axes[0].hist(daily.values, bins=bins, density=True, histtype="step", lw=2, label=label)
        mon = daily.index.get_level_values("date").month
        frac = [(daily[mon == m] > 150).mean() * 100 for m in range(1, 13)]
        axes[1].plot(range(1, 13), frac, marker="o", lw=2, label=label)
    axes[0].axvline(150, color="k", ls=":")
    axes[0].set_yscale("log")
    axes[0].set_title("distribution of daily-mean PM2.5 (all stations)")
    axes[0].set_xlabel("ug m-3")
    axes[0].legend()
    axes[1].set_title("share of station-days with PM2.5 > 150 ug m-3")
    axes[1].set_xlabel("month")
    axes[1].set_ylabel("%")
    axes[1].set_xticks(range(1, 13))
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(out / "synth-daily-pm25.png", dpi=90)
    plt.close(fig)


def _plot_wind(data: dict[str, pd.DataFrame], out: Path, plt) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    edges = np.array([0, 0.5, 1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 12])
    for label, df in data.items():
        for ax, months, sname in ((axes[0], (11, 12, 1, 2, 3), "heating season (Nov-Mar)"),
                                  (axes[1], (5, 6, 7, 8, 9), "warm season (May-Sep)")):
            d = df[df.month.isin(months)].dropna(subset=["PM2.5", "WSPM"])
            b = pd.cut(d["WSPM"], edges)
            g = d.groupby(b, observed=True)["PM2.5"]
            mid = np.array([iv.mid for iv in g.median().index])
            line, = ax.plot(mid, g.median().values, marker="o", lw=2, label=f"{label} median")
            ax.fill_between(mid, g.quantile(0.25).values, g.quantile(0.75).values, alpha=0.2, color=line.get_color())
            ax.set_title(f"PM2.5 vs station wind speed, {sname}")
            ax.set_xlabel("WSPM (m s-1)")
            ax.set_ylabel("PM2.5 ug m-3 (median, IQR)")
            ax.legend()
    fig.tight_layout()
    fig.savefig(out / "synth-pm25-wind.png", dpi=90)
    plt.close(fig)


def _plot_maps(synth: Path, out: Path, plt) -> None:
    with xr.open_dataset(synth / "truth.nc", engine="h5netcdf") as t, \
            xr.open_dataset(synth / "emissions.nc", engine="h5netcdf") as e, \
            xr.open_dataset(synth / "static.nc", engine="h5netcdf") as s:
        hour = (t.time.dt.hour + 8) % 24
        summer_aft = t.time.dt.month.isin([6, 7, 8]) & (hour >= 13) & (hour <= 17)
        panels = [("elevation (m) + stations", s.elevation.values, "terrain"),
                  ("NOx emission, kg km-2 h-1", e.emis_nox.sum("sector").values, "magma_r"),
                  ("mean PM2.5 (truth), ug m-3", t.pm25.mean("time").values, "YlOrRd")]
        if bool(summer_aft.any()):
            panels.append(("summer 13-17 h O3 (truth), ug m-3", t.o3.isel(time=summer_aft.values).mean("time").values,
                           "PuBu"))
        lon, lat = t.lon.values, t.lat.values
    st = pd.read_csv(synth / "stations.csv")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.3 * len(panels), 4))
    for ax, (title, field, cmap) in zip(np.atleast_1d(axes), panels):
        im = ax.pcolormesh(lon, lat, field, cmap=cmap, shading="auto")
        ax.plot(st.lon, st.lat, "k^", ms=4)
        ax.set_title(title, fontsize=9)
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    fig.savefig(out / "synth-maps.png", dpi=90)
    plt.close(fig)


def _plot_episode(synth: Path, df: pd.DataFrame, out: Path, plt) -> None:
    with xr.open_dataset(synth / "truth.nc", engine="h5netcdf") as t:
        reg = t.regime.values
        times = pd.DatetimeIndex(t.time.values) + pd.Timedelta(hours=8)
    win = df[df.month.isin([12, 1, 2])]
    if win.empty:
        win = df
    first = win.date.min()
    sel = df[(df.date >= first) & (df.date < first + pd.Timedelta(days=45))]
    ts = sel.assign(t=sel.date + pd.to_timedelta(sel.hour, unit="h")).groupby("t")["PM2.5"].mean()
    fig, ax = plt.subplots(figsize=(13, 4))
    colors = {0: "#f4a582", 1: "#92c5de", 2: "#fddbc7", 3: "#e0e0e0"}
    names = {0: "stagnant", 1: "northerly", 2: "southerly", 3: "westerly"}
    inwin = (times >= ts.index.min()) & (times <= ts.index.max())
    for r_id, name in names.items():
        ax.fill_between(times[inwin], 0, np.where(reg[inwin] == r_id, 1, 0), transform=ax.get_xaxis_transform(),
                        color=colors[r_id], alpha=0.6, lw=0, label=name)
    ax.plot(ts.index, ts.values, "k", lw=1, label="station-mean PM2.5")
    ax.axhline(150, color="r", ls=":")
    ax.set_ylabel("ug m-3")
    ax.set_title("synthetic winter: regimes (shading) and station-mean PM2.5")
    ax.legend(ncol=5, fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(out / "synth-episode.png", dpi=90)
    plt.close(fig)


def _plot_scenarios(synth: Path, out: Path, plt) -> dict:
    res = {}
    files = sorted(synth.glob("truth_scenario_*.nc"))
    if not files:
        return res
    fig, ax = plt.subplots(figsize=(8, 4))
    with xr.open_dataset(synth / "truth.nc", engine="h5netcdf") as b:
        for f in files:
            name = f.stem.replace("truth_scenario_", "")
            with xr.open_dataset(f, engine="h5netcdf") as s:
                base = b.pm25.sel(time=s.time)
                mb = base.groupby("time.month").mean(...)
                ms = s.pm25.groupby("time.month").mean(...)
                pct = (100 * (ms - mb) / mb).values
                ax.plot(mb.month.values, pct, marker="o", label=name)
                res[name] = {"pm25_change_pct": float(100 * (float(s.pm25.mean()) / float(base.mean()) - 1)),
                             "o3_change_pct": float(100 * (float(s.o3.mean()) / float(b.o3.sel(time=s.time).mean())
                                                           - 1)),
                             "pm25_change_pct_by_month": np.round(pct, 1).tolist()}
    ax.set_title("scenario vs baseline: domain-mean PM2.5 change by month")
    ax.set_ylabel("%")
    ax.set_xlabel("month")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "synth-scenarios.png", dpi=90)
    plt.close(fig)
    return res


def make_report(synth: Path, real: Path | None, out: Path) -> dict:
    """Write the PNGs; return the statistics table (synthetic, real)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    data = {"synthetic": load_uci(synth)}
    if real is not None and real.is_dir() and any(real.glob("PRSA_Data_*.csv")):
        data["real Beijing 2013-16"] = load_uci(real)
    _plot_cycles(data, out, plt)
    _plot_daily(data, out, plt)
    _plot_wind(data, out, plt)
    _plot_maps(synth, out, plt)
    _plot_episode(synth, data["synthetic"], out, plt)
    stats = {k: {kk: round(float(vv), 2) for kk, vv in summary(v).items()} for k, v in data.items()}
    stats["scenarios"] = _plot_scenarios(synth, out, plt)
    return stats


def main() -> None:
    """CLI entry point."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--synth", type=Path, required=True)
    ap.add_argument("--real", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=Path("docs/img"))
    a = ap.parse_args()
    print(json.dumps(make_report(a.synth, a.real, a.out), indent=1))


if __name__ == "__main__":
    main()
