"""Post-hoc calibration of the P10-P90 band: per-lead, per-species scales of the lower and upper gaps.

Pinball training gives quantiles that are calibrated on the training years; on a later year (Beijing's air
got cleaner and its ozone higher from 2013 to 2016) the band came out too narrow for O3 and too wide for
PM2.5 at short leads. After training, the gaps (P50 - P10 and P90 - P50 in the normalised log space) are
scaled so that 10 % of the validation observations at input stations fall below P10 and 10 % above P90, at
each lead (smoothed over neighbouring leads beyond the first hours, where the scales change fastest) and
species: a split-conformal step. The scales come in two classes, blended per cell by the model's station
weight w (`AQNet.station_weight`): cells that observed the species at the init hour (w = 1) and cells far
from any observation (w = 0; most of a hot-spot grid). The second is fitted on input stations dropped from
the inputs for the calibration pass, as in training (`data.drop_prob`); with one class their band covered
~60 % at +1 h. The inits should cover every hour of day forecasts are issued at (`data.calib_every_h`): a
lead's coverage depends on the hour it is valid at (scales fitted on 00 UTC inits alone left 77-85 % at
00/06/12/18 UTC inits). The scales are a buffer of the model (`gap_scale`), so the exported ONNX artifact
carries them. Held-out stations are never used; a two-fold cross-fit by calendar month (fit on even months,
score on odd, and back) estimates the coverage on data the calibration has not seen.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from training.module import INPUTS, at_stations, station_forward

MIN_SAMPLES = 50


def collect_ratios(net: Any, loader: Any) -> dict[str, np.ndarray]:
    """Run `net` (its gap scales reset to 1, no diurnal factor) over `loader`: r_lo = (P50 - obs) / lower gap
    and r_hi = (obs - P50) / upper gap in normalised space, each [N, L, 2, S]; `valid` (observed at a
    station that is not withheld), `w` (`net.station_weight` at the station: 1 = its cell observed the
    species at init), the init `month` and UTC `hour` [N], and, when the model has the hour forcings,
    `basis` [N, L, S, 4] (`net.hour_basis` of each valid hour), with the day-of-year ones `season` [N, L, S, 2]
    (`net.season_basis`)."""
    net.gap_scale.fill_(1.0)
    net.gap_hour.zero_()
    if hasattr(net, "gap_season"):
        net.gap_season.zero_()
    keys = ("r_lo", "r_hi", "valid", "w", "month", "hour", "basis", "season")
    out: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    with torch.no_grad():
        for batch in loader:
            row, col = batch["station_row"].long(), batch["station_col"].long()
            p50, g_lo, g_hi = station_forward(net, *(batch[k] for k in INPUTS), row, col, parts=True)
            withheld = batch.get("station_withheld", 1 - batch["station_in_input"])
            ok = (batch["target_mask"] > 0.5) & (withheld[:, None, None] < 0.5)
            t = torch.where(ok, batch["target"], torch.zeros_like(batch["target"])).clamp(min=0)
            tz = net.target_norm(t, dim=2)
            out["r_lo"].append(((p50 - tz) / g_lo.clamp(min=1e-6)).numpy())
            out["r_hi"].append(((tz - p50) / g_hi.clamp(min=1e-6)).numpy())
            out["valid"].append(ok.numpy())
            out["w"].append(at_stations(net.station_weight(batch["obs_mask"]), row, col).numpy()[:, None])
            fut = net.future_features(at_stations(batch["forcing"], row, col).unsqueeze(-1),
                                      at_stations(batch["forcing_mask"], row, col).unsqueeze(-1))
            basis = net.hour_basis(fut)
            if basis is not None:
                out["basis"].append(basis[..., 0].permute(0, 1, 3, 2).numpy())
            season = net.season_basis(fut) if hasattr(net, "season_basis") else None
            if season is not None:
                out["season"].append(season[..., 0].permute(0, 1, 3, 2).numpy())
            init = batch["init_time"].numpy().astype("datetime64[ns]")
            out["month"].append(init.astype("datetime64[M]").astype(np.int64) % 12)
            out["hour"].append(init.astype("datetime64[h]").astype(np.int64) % 24)
    r = {k: np.concatenate(v) for k, v in out.items() if v}
    r["w"] = np.broadcast_to(r["w"], r["valid"].shape)
    return r


def _weight(r: dict[str, np.ndarray]) -> np.ndarray:
    """Station weight of every sample (ratios without `w` are all observed: 1)."""
    return r["w"] if "w" in r else np.ones(r["valid"].shape)


def _observed(r: dict[str, np.ndarray]) -> np.ndarray:
    return _weight(r) >= 1 - 1e-6


def _blend_quantile(x: np.ndarray, w: np.ndarray, s_obs: float, q: float, bounds: tuple[float, float]) -> float:
    """s such that a share q of x lies at or below s + w (s_obs - s) (bisection; monotone in s for w < 1)."""
    lo, hi = bounds
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if np.mean(x <= mid + w * (s_obs - mid)) < q else (lo, mid)
    return 0.5 * (lo + hi)


def _smooth(a: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average along axis 0, its half-width growing from 0 at the first lead to width // 2
    (the scales change fastest over the first hours; a full window there biased +1..+4 h by ±5 points)."""
    half = width // 2
    out = np.empty_like(a)
    for i in range(a.shape[0]):
        k = min(half, i // 2)
        out[i] = a[max(0, i - k):i + k + 1].mean(axis=0)
    return out


def fit_scales(r: dict[str, np.ndarray], sel: np.ndarray | None = None, quantiles: tuple[float, ...] =
               (0.1, 0.5, 0.9), smooth: int = 7, bounds: tuple[float, float] = (0.25, 4.0)) -> np.ndarray:
    """Gap scales [L, 2, 2, 2] (lead, species, lower/upper, observed/unobserved) that put `quantiles[0]` of
    the observations below P10 and 1 - `quantiles[-1]` above P90 on the samples `sel` (bool [N]; None = all).
    The observed scale is the empirical quantile at cells with weight 1; the unobserved one is solved for on
    the other samples, each of which uses the blend s_u + w (s_o - s_u). A class with too few samples at a
    lead takes the other class's scale."""
    q_lo, q_hi = quantiles[0], quantiles[-1]
    keep = r["valid"] if sel is None else r["valid"] & sel[:, None, None, None]
    w, obs = _weight(r), _observed(r)
    n_l, n_sp = keep.shape[1], keep.shape[2]
    out = np.ones((n_l, n_sp, 2, 2))
    for lead in range(n_l):
        for k in range(n_sp):
            m = keep[:, lead, k]
            mo, mu = m & obs[:, lead, k], m & ~obs[:, lead, k]
            for side, (key, q) in enumerate((("r_lo", 1 - q_lo), ("r_hi", q_hi))):
                x = r[key][:, lead, k]
                s_o = np.quantile(x[mo if mo.sum() >= MIN_SAMPLES else m], q) if m.sum() >= MIN_SAMPLES else 1.0
                s_u = (_blend_quantile(x[mu], w[:, lead, k][mu], s_o, q, bounds) if mu.sum() >= MIN_SAMPLES
                       else s_o)
                out[lead, k, side] = (s_o, s_u)
    return np.clip(_smooth(out, smooth), *bounds)


def blended(r: dict[str, np.ndarray], scales: np.ndarray) -> np.ndarray:
    """[N, L, 2, side, S]: each sample's gap scales, s_unobs + w (s_obs - s_unobs) with its station weight w."""
    s_obs, s_unobs = scales[None, ..., 0, None], scales[None, ..., 1, None]  # [1, L, 2, side, 1]
    return s_unobs + _weight(r)[:, :, :, None] * (s_obs - s_unobs)


def inside(r: dict[str, np.ndarray], scales: np.ndarray) -> np.ndarray:
    """[N, L, 2, S]: the observation lies inside the band with the scales blended by its station weight."""
    s = blended(r, scales)
    return (r["r_lo"] <= s[:, :, :, 0]) & (r["r_hi"] <= s[:, :, :, 1])


def coverage(r: dict[str, np.ndarray], scales: np.ndarray, sel: np.ndarray | None = None,
             cls: int | None = None, hit: np.ndarray | None = None) -> np.ndarray:
    """P10-P90 coverage [L, 2] of the band with `scales` on samples `sel` of class `cls` (0 = observed at
    init, 1 = not, None = both; NaN where nothing is observed); `hit` replaces `inside(r, scales)`."""
    keep = r["valid"] if sel is None else r["valid"] & sel[:, None, None, None]
    if cls is not None:
        keep = keep & (_observed(r) if cls == 0 else ~_observed(r))
    hit = inside(r, scales) if hit is None else hit
    n = keep.sum((0, 3))
    return np.where(n > 0, (hit & keep).sum((0, 3)) / np.maximum(n, 1), np.nan)


def hour_factor(r: dict[str, np.ndarray], coef: np.ndarray) -> np.ndarray:
    """[N, L, 2, side, S]: the diurnal factor exp(basis . coef[species, side]) of every sample (1 without
    `basis`); coefficients [2, 2, 6] take the seasonal basis as their last two terms (`fit_band` with `season`)."""
    if "basis" not in r:
        return np.ones(r["r_lo"].shape[:3] + (2,) + r["r_lo"].shape[3:])
    b = r["basis"] if coef.shape[-1] == r["basis"].shape[-1] else np.concatenate([r["basis"], r["season"]], -1)
    return np.exp(np.einsum("nlsf,kdf->nlkds", b, coef))


def deflated(r: dict[str, np.ndarray], coef: np.ndarray) -> dict[str, np.ndarray]:
    """The ratios divided by the diurnal factor: a sample lies inside its band iff its deflated ratios lie
    inside the lead scales."""
    d = hour_factor(r, coef)
    return {**r, "r_lo": r["r_lo"] / d[:, :, :, 0], "r_hi": r["r_hi"] / d[:, :, :, 1]}


def fit_hour_coef(r: dict[str, np.ndarray], scales: np.ndarray, sel: np.ndarray | None = None,
                  quantiles: tuple[float, ...] = (0.1, 0.5, 0.9), max_log: float = math.log(2.0)) -> np.ndarray:
    """Diurnal coefficients [2 species, side, 4]: per species and side, the log of the gap quantile each
    valid hour still needs after the lead `scales` (24 hourly bins), least-squares on the 4-term Fourier
    basis with its mean removed (the lead scales keep the level). Zeros without `basis`; the factor is
    limited to [1/2, 2]."""
    if "basis" not in r:
        return np.zeros((2, 2, 4))
    b = r["basis"]
    hour = np.round(np.arctan2(b[..., 0], b[..., 1]) * 24 / (2 * np.pi)).astype(int) % 24  # [N, L, S]
    grid = np.stack([np.sin(a := 2 * np.pi * np.arange(24) / 24), np.cos(a), np.sin(2 * a), np.cos(2 * a)], -1)
    return _fit_binned(r, scales, hour, grid, (0, 1), 8, sel, quantiles, max_log)


def fit_season_coef(r: dict[str, np.ndarray], scales: np.ndarray, species: tuple[int, ...],
                    sel: np.ndarray | None = None, quantiles: tuple[float, ...] = (0.1, 0.5, 0.9),
                    max_log: float = math.log(2.0)) -> np.ndarray:
    """Seasonal coefficients [2 species, side, 2] for the `species` indices: the log of the gap quantile each
    valid month (12 bins of the day of year) still needs after `scales`, least-squares on sin/cos of the
    day of year with its mean removed, limited to a factor in [1/2, 2]; zeros elsewhere or without `season`."""
    if "season" not in r or not species:
        return np.zeros((2, 2, 2))
    sb = r["season"]
    month = (np.floor((np.arctan2(sb[..., 0], sb[..., 1]) / (2 * np.pi)) % 1.0 * 12).astype(int)) % 12  # [N, L, S]
    grid = np.stack([np.sin(a := 2 * np.pi * (np.arange(12) + 0.5) / 12), np.cos(a)], -1)
    return _fit_binned(r, scales, month, grid, tuple(species), 6, sel, quantiles, max_log)


def _fit_binned(r: dict[str, np.ndarray], scales: np.ndarray, bins: np.ndarray, grid: np.ndarray,
                species: tuple[int, ...], min_bins: int, sel: np.ndarray | None, quantiles: tuple[float, ...],
                max_log: float) -> np.ndarray:
    """Coefficients [2 species, side, F] on the basis `grid` [n_bins, F]: per species and side, the log of the
    ratio quantile each bin (`bins` [N, L, S]) still needs after `scales`, mean removed, least squares; the
    factor is then limited to exp(+-max_log) over the bins."""
    coef = np.zeros((2, 2, grid.shape[1]))
    keep = r["valid"] if sel is None else r["valid"] & sel[:, None, None, None]
    s = blended(r, scales)
    for k in species:
        for side, (key, q) in enumerate((("r_lo", 1 - quantiles[0]), ("r_hi", quantiles[-1]))):
            x, m = r[key][:, :, k] / s[:, :, k, side], keep[:, :, k]
            qb = np.array([np.quantile(x[m & (bins == b)], q) if (m & (bins == b)).sum() >= MIN_SAMPLES
                           else np.nan for b in range(grid.shape[0])])
            ok = np.isfinite(qb) & (qb > 0)
            if ok.sum() < min_bins:
                continue
            lq = np.log(qb[ok])
            coef[k, side] = np.linalg.lstsq(grid[ok], lq - lq.mean(), rcond=None)[0]
    peak = np.abs(np.einsum("hf,ksf->hks", grid, coef)).max(0)
    return coef * np.minimum(1.0, max_log / np.maximum(peak, 1e-9))[..., None]


def fit_band(r: dict[str, np.ndarray], sel: np.ndarray | None = None, quantiles: tuple[float, ...] =
             (0.1, 0.5, 0.9), hour: bool = True, season: tuple[int, ...] = ()) -> tuple[np.ndarray, np.ndarray]:
    """(lead scales, diurnal coefficients): lead scales, then the diurnal factor on what they leave, then the
    lead scales again on the deflated ratios (so the band's level stays right at every lead). With `season`
    (species indices) and the day-of-year basis, a seasonal factor is fitted the same way on what those leave
    and the coefficients are [2, 2, 6] (diurnal, then seasonal terms)."""
    scales = fit_scales(r, sel, quantiles)
    coef = fit_hour_coef(r, scales, sel, quantiles) if hour else np.zeros((2, 2, 4))
    if coef.any():
        scales = fit_scales(deflated(r, coef), sel, quantiles)
    if not season or "season" not in r or "basis" not in r:
        return scales, coef
    sea = fit_season_coef(deflated(r, coef), scales, tuple(season), sel, quantiles)
    coef = np.concatenate([coef, sea], -1)
    return fit_scales(deflated(r, coef), sel, quantiles), coef


def crossfit_inside(r: dict[str, np.ndarray], sel: np.ndarray | None = None, quantiles: tuple[float, ...] =
                    (0.1, 0.5, 0.9), hour: bool = True, season: tuple[int, ...] = ()) -> np.ndarray | None:
    """Inside-the-band [N, L, 2, S] with each calendar-month parity scored by the band fitted (on the samples
    `sel`) on the other parity; None when one parity has no samples."""
    even = r["month"] % 2 == 0
    if not (even.any() and (~even).any()):
        return None
    base = np.ones(even.shape, bool) if sel is None else sel
    hits = []
    for train in (~even, even):
        scales, coef = fit_band(r, base & train, quantiles, hour, season)
        hits.append(inside(deflated(r, coef), scales))
    return np.where(even[:, None, None, None], hits[0], hits[1])


def calibrate(net: Any, loader: Any, quantiles: tuple[float, ...] = (0.1, 0.5, 0.9),
              hour: bool = True, season: tuple[int, ...] = ()) -> dict[str, Any]:
    """Fit `net.gap_scale` (and, with `hour`, the diurnal factor `net.gap_hour`; with `season`, species
    indices, the seasonal factor `net.gap_season`) on `loader` (in place) and report coverage before, after
    (in-sample) and cross-fit by calendar month, for each cell class and, cross-fit, at each UTC issue hour."""
    r = collect_ratios(net, loader)
    scales, coef = fit_band(r, quantiles=quantiles, hour=hour, season=season)
    rd = deflated(r, coef)
    hit_cv = crossfit_inside(r, None, quantiles, hour, season)
    ones = np.ones_like(scales)
    cov: dict[str, dict[str, np.ndarray]] = {}
    for cname, cls in (("", None), ("_observed", 0), ("_unobserved", 1)):
        cov[cname] = {"uncalibrated": coverage(r, ones, cls=cls), "calibrated": coverage(rd, scales, cls=cls),
                      "crossfit": (coverage(r, scales, cls=cls, hit=hit_cv) if hit_cv is not None
                                   else np.full(scales.shape[:2], np.nan))}
    net.gap_scale.copy_(torch.as_tensor(scales, dtype=net.gap_scale.dtype))
    net.gap_hour.copy_(torch.as_tensor(coef[..., :4], dtype=net.gap_hour.dtype))
    sea = coef[..., 4:] if coef.shape[-1] > 4 else np.zeros((2, 2, 2))
    if hasattr(net, "gap_season"):
        net.gap_season.copy_(torch.as_tensor(sea, dtype=net.gap_season.dtype))
    metrics: dict[str, float] = {}
    for cname, arrs in cov.items():
        for k, sp in enumerate(("pm25", "o3")):
            for name, arr in arrs.items():
                col = arr[:, k]
                if np.isfinite(col).any():
                    metrics[f"calib_{name}_coverage{cname}_{sp}_min"] = float(np.nanmin(col))
                    metrics[f"calib_{name}_coverage{cname}_{sp}_max"] = float(np.nanmax(col))
    by_hour = {}
    if hit_cv is not None:  # cross-fit coverage range over the leads at each issue hour
        for h in sorted({int(x) for x in r["hour"]}):
            c = coverage(r, scales, r["hour"] == h, hit=hit_cv)
            by_hour[f"{h:02d}"] = [[round(float(np.nanmin(c[:, k])), 4), round(float(np.nanmax(c[:, k])), 4)]
                                   for k in range(2)]
        for k, sp in enumerate(("pm25", "o3")):
            lows, highs = [v[k][0] for v in by_hour.values()], [v[k][1] for v in by_hour.values()]
            metrics[f"calib_crossfit_coverage_by_issue_hour_{sp}_min"] = float(min(lows))
            metrics[f"calib_crossfit_coverage_by_issue_hour_{sp}_max"] = float(max(highs))
    own, valid = _observed(r), r["valid"]
    report = {"method": "split-conformal gap scaling on validation inits at input stations (some dropped from "
                        "the inputs), per lead, species and class (observed at init / far from any observation; "
                        "blended by the station weight), times a diurnal factor of the valid hour"
                        + (" and a seasonal factor of the valid day of year" if season else ""),
              "n_inits": int(valid.shape[0]),
              "n_per_lead": {"observed": int((valid & own)[:, 0].sum()), "unobserved": int((valid & ~own)[:, 0].sum())},
              "init_hours_utc": sorted({int(h) for h in r.get("hour", [])}), "gap_scale": scales.round(4).tolist(),
              "gap_hour": coef[..., :4].round(4).tolist(), "gap_season": sea.round(4).tolist(),
              "crossfit_coverage_by_issue_hour": by_hour}
    long = {"uncalibrated": "uncalibrated", "calibrated": "calibrated_in_sample", "crossfit": "crossfit_by_month"}
    for cname, arrs in cov.items():
        for name, arr in arrs.items():
            report[f"coverage_{long[name]}{cname}"] = np.round(arr, 4).tolist()
    return {"scales": scales, "hour_coef": coef, "metrics": metrics, "report": report}
