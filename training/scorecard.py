"""Scorecard: markdown summary + PNG of MAE and skill by lead, from `training.metrics.evaluate_forecast` output."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

SPECIES = ("pm25", "o3")
LEADS_SHOWN = (1, 6, 12, 24, 48, 72)


def _fmt(x: float, nd: int = 2) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{x:.{nd}f}"


SUMMARY_LEADS = (24, 48, 72)
SUMMARY_ROWS = ("deep", "gbt", "blend", "persistence", "climatology", "idw_persistence")


def summary_markdown(summ: Mapping[str, Mapping[str, np.ndarray]],
                     checks: list[tuple[str, bool | None, str]] | None = None) -> list[str]:
    """Summary: MAE at 24/48/72 h per group (deep + references on their common samples) + acceptance rows."""
    n_l = next(iter(summ.values()))["n"].shape[0] if summ else 72
    lds = [ld for ld in SUMMARY_LEADS if ld <= n_l] or [n_l]
    lines = [f"## Summary — MAE (ug m-3) at {' / '.join(map(str, lds))} h", "",
             ("Per group, every forecast is scored on the same samples: the (init, lead, station) where the "
              "observation and *all* forecasts in that group exist (n = samples per lead)."), ""]
    head = ["group", "forecast"] + [f"{sp} {ld} h" for sp in SPECIES for ld in lds]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for group, sm in summ.items():
        for k in SUMMARY_ROWS:
            if k in sm:
                vals = [_fmt(sm[k][ld - 1, i], 1) for i in range(2) for ld in lds]
            elif k == "gbt" and group.startswith("held_out"):
                vals = ["n/a (no history at the point)"] + [""] * (2 * len(lds) - 1)
            else:
                continue
            lines.append("| " + " | ".join([group, "deep model" if k == "deep" else k, *vals]) + " |")
        lines.append("| " + " | ".join([group, "n", *[f"{int(sm['n'][ld - 1, i])}" for i in range(2)
                                                       for ld in lds]]) + " |")
    lines.append("")
    if checks:
        lines += ["## Acceptance checks", "", "| check | result | detail |", "|---|---|---|"]
        for name, ok, det in checks:
            lines.append(f"| {name} | {'–' if ok is None else ('✓' if ok else '✗')} | {det} |")
        lines.append("")
    return lines


def markdown(results: Mapping[str, Mapping[str, np.ndarray]], title: str, notes: list[str] | None = None,
             summ: Mapping[str, Mapping[str, np.ndarray]] | None = None,
             checks: list[tuple[str, bool | None, str]] | None = None) -> str:
    """results: group -> scores dict ([L, 2] arrays). Optional summary/acceptance on top, then one table per
    group and species, rows = leads."""
    lines = [f"# {title}", ""] + [f"- {n}" for n in (notes or [])] + [""]
    if summ:
        lines += summary_markdown(summ, checks)
    for group, sc in results.items():
        n_l = sc["mae"].shape[0]
        leads = [ld for ld in LEADS_SHOWN if ld <= n_l]
        skills = sorted(k for k in sc if k.startswith("skill_vs_"))
        skills = [k for k in skills if k == "skill_vs_gbt"] + [k for k in skills if k != "skill_vs_gbt"]
        for i, sp in enumerate(SPECIES):
            lines += [f"## {group} — {sp}", ""]
            gb = ["MAE gbt"] if "mae_ref_gbt" in sc else []
            head = ["lead h", "n", "MAE", *gb, "RMSE", "bias", "corr", *[s.replace("skill_vs_", "skill vs ")
                                                                         for s in skills], "P10-P90 cov",
                    "AQI class acc"]
            ev = "pm25_gt75" if sp == "pm25" else "o3_gt160"
            head += [f"CSI {ev}", f"POD {ev}", f"FAR {ev}"]
            lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            for ld in leads:
                k = ld - 1
                row = [str(ld), f"{int(sc['n'][k, i])}", _fmt(sc["mae"][k, i], 1)]
                row += [_fmt(sc["mae_ref_gbt"][k, i], 1)] if gb else []
                row += [_fmt(sc["rmse"][k, i], 1), _fmt(sc["bias"][k, i], 1), _fmt(sc["corr"][k, i])]
                row += [_fmt(sc[s][k, i]) for s in skills]
                row += [_fmt(sc["coverage_p10_p90"][k, i]), _fmt(sc["aqi_class_accuracy"][k, i])]
                row += [_fmt(sc.get(f"{ev}_{m}", np.full(n_l, np.nan))[k]) for m in ("csi", "pod", "far")]
                lines.append("| " + " | ".join(row) + " |")
            lines.append("")
        if "daily_pm25_gt75_csi" in sc:
            d = sc["daily_pm25_gt75_csi"].shape[0]
            lines += [f"Daily-mean PM2.5 > 75 (day k = leads 24(k-1)+1..24k), {group}:", "",
                      "| day | CSI | POD | FAR | hits | misses | false alarms |", "|---|---|---|---|---|---|---|"]
            for k in range(d):
                lines.append(f"| +{k + 1} | " + " | ".join(
                    [_fmt(sc[f"daily_pm25_gt75_{m}"][k]) for m in ("csi", "pod", "far")]
                    + [f"{int(sc[f'daily_pm25_gt75_{m}'][k])}" for m in ("hits", "misses", "false_alarms")])
                    + " |")
            lines.append("")
    return "\n".join(lines)


def plot(results: Mapping[str, Mapping[str, np.ndarray]], path: str | Path, title: str = "") -> Path:
    """PNG: MAE by lead (top) and MAE skill vs each reference by lead (bottom), per species."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
    for group, sc in results.items():
        lead = np.arange(1, sc["mae"].shape[0] + 1)
        for i, sp in enumerate(SPECIES):
            axes[0, i].plot(lead, sc["mae"][:, i], label=group)
            if "mae_ref_gbt" in sc:
                axes[0, i].plot(lead, sc["mae_ref_gbt"][:, i], "--", label=f"{group}: GBT")
            for k in sorted(x for x in sc if x.startswith("skill_vs_")):
                axes[1, i].plot(lead, sc[k][:, i], label=f"{group}: {k.replace('skill_vs_', 'vs ')}")
    for i, sp in enumerate(SPECIES):
        axes[0, i].set_title(f"{sp}: MAE (ug m-3)")
        axes[1, i].set_title(f"{sp}: MAE skill (1 - MAE/MAE_ref)")
        axes[1, i].axhline(0, color="k", lw=0.8)
        axes[1, i].set_xlabel("lead (h)")
        for ax in axes[:, i]:
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def flat_metrics(results: Mapping[str, Mapping[str, np.ndarray]], leads=(24, 48, 72)) -> dict[str, float]:
    """MLflow-friendly scalars: `{group}.{species}.{metric}.h{lead}` for a few leads + lead means."""
    out: dict[str, float] = {}
    for group, sc in results.items():
        for metric in ("mae", "rmse", "bias", "corr", "coverage_p10_p90", "aqi_class_accuracy",
                       *[k for k in sc if k.startswith(("skill_vs_", "mae_ref_"))]):
            a = sc[metric]
            for i, sp in enumerate(SPECIES):
                for ld in leads:
                    if ld <= a.shape[0] and np.isfinite(a[ld - 1, i]):
                        out[f"{group}.{sp}.{metric}.h{ld}"] = float(a[ld - 1, i])
                m = np.nanmean(a[:, i]) if np.isfinite(a[:, i]).any() else np.nan
                if np.isfinite(m):
                    out[f"{group}.{sp}.{metric}.mean"] = float(m)
    return out
