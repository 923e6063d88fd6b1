"""Synthetic-world ablation: forecast skill against the simulator's truth at cells with and without a station.

On a store built from `aqcast synth` output, `truth_pm25` / `truth_o3 (time, y, x)` hold the true concentration
in every cell (role `truth`, never a model input). For each model this module forecasts every validation init
(after the store's `train_period`, every `every_h` hours), with every station as input and no drop-out, and
scores the p50 against the truth at (i) cells with no station and (ii) station cells, per species and lead
window (1-24 h -> "24", 25-48 h -> "48", 49-72 h -> "72"):

- MAE of the model, of persistence of the IDW-spread station observations (`models.baselines.idw_persistence`,
  last value at or before init interpolated to the cell centres), of the same IDW spread applied to the value
  at the same hour of the last day before init (diurnal persistence) and of the pooled station climatology
  (`models.baselines.Climatology`, month x local hour, fitted on station data in the training period);
- skill = 1 - MAE_model / MAE_reference, all on the same (init, lead, cell) set (cells where the truth and
  every reference are finite).

    python -m training.ablation --store STORE --models URI1,URI2 --names a,b --out docs/ablation-synthetic.md

The tables are written between `<!-- ablation:begin -->` and `<!-- ablation:end -->` markers, so prose around
them in an existing `--out` file survives re-runs.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SPECIES: tuple[str, ...] = ("pm25", "o3")
GROUPS: tuple[str, ...] = ("no_station", "station")
LEAD_BINS: dict[int, tuple[int, int]] = {24: (1, 24), 48: (25, 48), 72: (49, 72)}
SOURCES: tuple[str, ...] = ("model", "idw_persistence", "idw_diurnal_persistence", "climatology")
HOUR = np.timedelta64(3600 * 10**9, "ns")
BEGIN, END = "<!-- ablation:begin -->", "<!-- ablation:end -->"

# forecaster(sampler, item indices) -> p50 [n, L, 2, Y, X] in ug m-3
Forecaster = Callable[[Any, Sequence[int]], np.ndarray]


@dataclass
class Accumulator:
    """Running sums of |error| and counts per (source, group, species, lead window)."""

    sums: dict[tuple[str, str, str, int], float] = field(default_factory=dict)
    counts: dict[tuple[str, str, str, int], int] = field(default_factory=dict)

    def add(self, key: tuple[str, str, str, int], abs_err: np.ndarray, ok: np.ndarray) -> None:
        """Add the errors where `ok` (same shapes)."""
        self.sums[key] = self.sums.get(key, 0.0) + float(np.where(ok, abs_err, 0.0).sum())
        self.counts[key] = self.counts.get(key, 0) + int(ok.sum())

    def mae(self, key: tuple[str, str, str, int]) -> float:
        """Mean absolute error of `key` (NaN when nothing was scored)."""
        n = self.counts.get(key, 0)
        return self.sums.get(key, 0.0) / n if n else float("nan")


def station_cells(ds: Any) -> np.ndarray:
    """bool [Y, X]: True where at least one station of the store lies in the cell."""
    mask = np.zeros((int(ds.sizes["y"]), int(ds.sizes["x"])), dtype=bool)
    mask[np.asarray(ds["station_row"].values, int), np.asarray(ds["station_col"].values, int)] = True
    return mask


def train_end(ds: Any) -> np.datetime64:
    """End of the store's `train_period` attr as UTC datetime64[ns]."""
    import pandas as pd

    end = pd.Timestamp(json.loads(ds.attrs["train_period"])[1])
    if end.tzinfo is not None:
        end = end.tz_convert("UTC").tz_localize(None)
    return np.datetime64(end.value, "ns")


def validation_inits(ds: Any, every_h: int = 12, history: int = 24, leads: int = 72) -> np.ndarray:
    """Init times after the training period (every `every_h` h) whose whole window lies in the store."""
    from features.windows import valid_init_times

    inits = valid_init_times(ds, every_h=every_h, history=history, leads=leads)
    return inits[inits > train_end(ds)]


def model_forecaster(model: Any, batch_size: int = 8) -> Forecaster:
    """Forecaster running a torch model (forward contract of docs/architecture.md) and keeping the p50."""

    def run(sampler: Any, idx: Sequence[int]) -> np.ndarray:
        import torch

        keys = ("obs", "obs_mask", "forcing", "forcing_mask", "static")
        out = []
        model.eval()
        with torch.no_grad():
            for b0 in range(0, len(idx), batch_size):
                items = [sampler[i] for i in idx[b0:b0 + batch_size]]
                x = [torch.from_numpy(np.stack([it[k] for it in items])) for k in keys]
                out.append(model(*x)[:, :, :, 1].numpy().astype(np.float32))
        return np.concatenate(out)

    return run


def _references(ds: Any, inits: np.ndarray, leads: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(IDW persistence [N, 2, Y*X], IDW diurnal persistence [N, L, 2, Y*X], pooled climatology [N, L, 2])
    from station data only (values at or before init)."""
    from models.baselines import Climatology, idw_persistence

    times = np.asarray(ds["time"].values, dtype="datetime64[ns]")
    series = np.stack([_station_values(ds, p) for p in SPECIES], axis=1)  # [T, 2, S]
    idx = ((inits - times[0]) // HOUR).astype(int)
    src = np.stack([np.asarray(ds["station_lon"].values, float), np.asarray(ds["station_lat"].values, float)], 1)
    dst = np.stack([np.asarray(ds["lon"].values, float).ravel(), np.asarray(ds["lat"].values, float).ravel()], 1)
    # exclude_km=0: a station cell is (mostly) its own station's persistence, as an IDW map would give
    idw = idw_persistence(series, idx, src, dst, leads=1, exclude_km=0.0)[:, 0]  # [N, 2, P]
    # diurnal: the same hour of the last day before init (valid - 24*ceil(lead/24) h), spread the same way
    back = {lt: lt - 24 * int(np.ceil(lt / 24)) for lt in range(1, leads + 1)}
    by_back = {b: idw_persistence(series, idx + b, src, dst, leads=1, exclude_km=0.0)[:, 0].astype(np.float32)
               for b in sorted(set(back.values()))}
    diurnal = np.stack([by_back[back[lt]] for lt in range(1, leads + 1)], axis=1)  # [N, L, 2, P]
    offset = str(ds.attrs.get("source_utc_offset", "+08:00"))
    off_h = int(offset[:3]) + (1 if offset[0] != "-" else -1) * int(offset[4:6]) / 60
    clim = Climatology(utc_offset_h=off_h).fit(series, times, times <= train_end(ds))
    vt = inits[:, None] + np.arange(1, leads + 1)[None, :] * HOUR
    pooled = clim.at(vt, np.full(series.shape[2], -1))[..., 0]  # [N, L, 2]
    return idw, diurnal, pooled


def _station_values(ds: Any, p: str) -> np.ndarray:
    """[T, S] station values with QC-flagged values as NaN (what the sampler feeds the model)."""
    v = np.array(ds[f"stn_{p}"].transpose("time", "station").values, dtype=np.float64)
    if f"qc_{p}" in ds:
        v[np.asarray(ds[f"qc_{p}"].transpose("time", "station").values) != 0] = np.nan
    return v


def score(ds: Any, forecaster: Forecaster, sampler: Any, inits: np.ndarray, chunk: int = 16) -> Accumulator:
    """Score `forecaster` on every item of `sampler` (built over `inits` of `ds`) against `truth_<species>`.

    Returns an `Accumulator` with keys (source, group, species, lead window) for sources `model`,
    `idw_persistence`, `climatology`; all three are scored on the same (init, lead, cell) points.
    """
    from features.errors import DataError

    missing = [f"truth_{p}" for p in SPECIES if f"truth_{p}" not in ds]
    if missing:
        raise DataError(f"the store has no {missing}: the ablation needs a synthetic-world store (aqcast synth)")
    leads = int(sampler.leads)
    if leads < max(hi for _, hi in LEAD_BINS.values()):
        bins = {k: v for k, v in LEAD_BINS.items() if v[1] <= leads} or {leads: (1, leads)}
    else:
        bins = LEAD_BINS
    times = np.asarray(ds["time"].values, dtype="datetime64[ns]")
    truth = np.stack([np.asarray(ds[f"truth_{p}"].values, np.float32) for p in SPECIES], 1)  # [T, 2, Y, X]
    truth = truth.reshape(truth.shape[0], 2, -1)
    groups = {"station": station_cells(ds).ravel()}
    groups["no_station"] = ~groups["station"]
    idw, diurnal, clim = _references(ds, inits, leads)
    acc = Accumulator()
    for c0 in range(0, len(inits), chunk):
        idx = list(range(c0, min(c0 + chunk, len(inits))))
        pred = forecaster(sampler, idx)
        pred = pred.reshape(pred.shape[0], leads, 2, -1)  # [n, L, 2, P]
        t_idx = ((inits[idx] - times[0]) // HOUR).astype(int)[:, None] + np.arange(1, leads + 1)[None, :]
        y = truth[t_idx]  # [n, L, 2, P]
        refs = {"idw_persistence": np.broadcast_to(idw[idx][:, None], y.shape),
                "idw_diurnal_persistence": diurnal[idx],
                "climatology": np.broadcast_to(clim[idx][..., None], y.shape)}
        ok = np.isfinite(y)
        for r in refs.values():
            ok &= np.isfinite(r)
        errs = {"model": np.abs(pred - y), **{k: np.abs(v - y) for k, v in refs.items()}}
        for src, e in errs.items():
            for g, cells in groups.items():
                for s, sp in enumerate(SPECIES):
                    for lead, (lo, hi) in bins.items():
                        sl = (slice(None), slice(lo - 1, hi), s, cells)
                        acc.add((src, g, sp, lead), e[sl], ok[sl])
    return acc


def rows_of(acc: Accumulator, name: str) -> list[dict[str, Any]]:
    """Flat table rows for one model: group, species, lead, n, MAE of model/references, skills."""
    rows = []
    leads = sorted({k[3] for k in acc.counts})
    for g in GROUPS:
        for sp in SPECIES:
            for lead in leads:
                m = {src: acc.mae((src, g, sp, lead)) for src in SOURCES}
                rows.append({"model": name, "group": g, "species": sp, "lead": lead,
                             "n": acc.counts.get(("model", g, sp, lead), 0),
                             "mae": m["model"], "mae_idw_persistence": m["idw_persistence"],
                             "mae_idw_diurnal_persistence": m["idw_diurnal_persistence"],
                             "mae_climatology": m["climatology"],
                             "skill_idw_persistence": _skill(m["model"], m["idw_persistence"]),
                             "skill_climatology": _skill(m["model"], m["climatology"])})
    return rows


def _skill(mae: float, ref: float) -> float:
    return 1.0 - mae / ref if np.isfinite(ref) and ref > 0 else float("nan")


def score_model(model: Any, meta: dict[str, Any], ds: Any, name: str, every_h: int = 12,
                batch_size: int = 8, forecaster: Forecaster | None = None) -> list[dict[str, Any]]:
    """Rows for one model on the validation part of `ds`: inputs from every station, no drop-out, the model's
    channels (from `meta`), `forecaster` defaulting to the model's p50."""
    from features.windows import WindowSampler
    from training.evaluate import channels_of

    h = int(meta.get("history", 24))
    n_l = int(meta.get("leads", 72))
    inits = validation_inits(ds, every_h, h, n_l)
    if inits.size == 0:
        from features.errors import DataError

        raise DataError("no validation init time after the store's train_period has a complete window")
    ch = channels_of(meta, model)
    sampler = WindowSampler(ds, inits, history=h, leads=n_l, obs_vars=ch["obs"], forcing_vars=ch["forcing"],
                            static_vars=ch["static"], drop_prob=0.0)
    acc = score(ds, forecaster or model_forecaster(model, batch_size), sampler, inits)
    return rows_of(acc, name)


def _f(x: float, pct: bool = False) -> str:
    if not np.isfinite(x):
        return "–"
    return f"{100 * x:+.0f} %" if pct else f"{x:.1f}"


def markdown_tables(rows: list[dict[str, Any]], notes: Sequence[str] = ()) -> str:
    """One table per (cell group, species): a row per model plus the two references; MAE and skill by lead."""
    out = [f"- {n}" for n in notes] + [""]
    names = list(dict.fromkeys(r["model"] for r in rows))
    leads = sorted({r["lead"] for r in rows})
    title = {"no_station": "cells with no station", "station": "station cells"}
    for g in GROUPS:
        for sp in SPECIES:
            sel = [r for r in rows if r["group"] == g and r["species"] == sp]
            if not sel:
                continue
            n = max(r["n"] for r in sel)
            out.append(f"### {sp.upper().replace('PM25', 'PM2.5')} — {title[g]} (truth points per lead window: {n})")
            out.append("")
            head = ["forecast"] + [f"MAE {lt} h" for lt in leads] + [f"skill vs IDW pers. {lt} h" for lt in leads] \
                + [f"skill vs clim. {lt} h" for lt in leads]
            out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            by = {(r["model"], r["lead"]): r for r in sel}
            for nm in names:
                cells = [_f(by[(nm, lt)]["mae"]) for lt in leads]
                cells += [_f(by[(nm, lt)]["skill_idw_persistence"], True) for lt in leads]
                cells += [_f(by[(nm, lt)]["skill_climatology"], True) for lt in leads]
                out.append(f"| {nm} | " + " | ".join(cells) + " |")
            ref0 = names[0]
            for key, label in (("mae_idw_persistence", "IDW persistence"),
                               ("mae_idw_diurnal_persistence", "IDW diurnal persistence"),
                               ("mae_climatology", "climatology")):
                cells = [_f(by[(ref0, lt)][key]) for lt in leads] + [""] * (2 * len(leads))
                out.append(f"| *{label}* | " + " | ".join(cells) + " |")
            out.append("")
    return "\n".join(out)


def write_markdown(path: str | Path, body: str, title: str = "Synthetic-world ablation") -> Path:
    """Put `body` between the ablation markers of `path` (creating the file when needed)."""
    path = Path(path)
    block = f"{BEGIN}\n{body.rstrip()}\n{END}"
    text = path.read_text() if path.is_file() else ""
    if BEGIN in text and END in text:
        pre, rest = text.split(BEGIN, 1)
        text = pre + block + rest.split(END, 1)[1]
    else:
        text = (text.rstrip() + "\n\n" if text.strip() else f"# {title}\n\n") + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def log_to_mlflow(rows: list[dict[str, Any]], md: Path, experiment: str, uri: str | None) -> str:
    """One MLflow run in `experiment` with every score as a metric and the markdown as an artifact."""
    import mlflow

    from training.tracking import setup

    setup(uri, experiment)
    with mlflow.start_run(run_name="ablation") as run:
        mlflow.set_tag("kind", "ablation")
        for r in rows:
            for k in ("mae", "skill_idw_persistence", "skill_climatology"):
                if np.isfinite(r[k]):
                    mlflow.log_metric(f"{r['model']}.{r['group']}.{r['species']}.{k}.{r['lead']}h", float(r[k]))
        mlflow.log_artifact(str(md))
        return run.info.run_id


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point (see the module docstring)."""
    ap = argparse.ArgumentParser(prog="python -m training.ablation", description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True, help="synthetic-world feature store (zarr) with truth_*")
    ap.add_argument("--models", required=True, help="comma-separated model URIs (models:/NAME/V, paths)")
    ap.add_argument("--names", help="comma-separated names, one per model (default: the URIs)")
    ap.add_argument("--out", default="docs/ablation-synthetic.md", help="markdown file to write/update")
    ap.add_argument("--tracking-uri", help="MLflow tracking URI (default: SQLite in $AQCAST_HOME)")
    ap.add_argument("--every", type=int, default=12, help="hours between validation inits")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--experiment", help="also log the scores as one run of this MLflow experiment")
    ap.add_argument("--json", help="also write the rows as JSON here")
    a = ap.parse_args(argv)

    import torch

    from features.errors import DataError
    from features.store import open_store
    from training.tracking import load_model

    torch.set_num_threads(a.threads)
    uris = [u.strip() for u in a.models.split(",") if u.strip()]
    names = [n.strip() for n in a.names.split(",")] if a.names else uris
    try:
        if len(names) != len(uris):
            raise DataError(f"--names has {len(names)} entries for {len(uris)} models")
        ds = open_store(a.store)
        rows: list[dict[str, Any]] = []
        inits = None
        for uri, name in zip(uris, names):
            model, meta = load_model(uri, a.tracking_uri)
            print(f"scoring {name} ({uri}) ...", file=sys.stderr)
            rows += score_model(model, meta, ds, name, a.every, a.batch_size)
            inits = validation_inits(ds, a.every, int(meta.get("history", 24)), int(meta.get("leads", 72)))
    except DataError as ex:
        print(f"error: {ex}", file=sys.stderr)
        return 2
    notes = [(f"store `{a.store}`; validation inits {inits[0]} .. {inits[-1]} UTC every {a.every} h "
             f"({inits.size}), after the store's train_period"),
             "inputs: every station, no drop-out; scored: p50 against `truth_*` (the simulator's true field)",
             "lead window *24 h* = leads 1–24 h, *48 h* = 25–48 h, *72 h* = 49–72 h",
             ("IDW persistence: stations' last value (≤ 6 h old) at init, inverse-distance² to the cell centre; "
             "IDW diurnal persistence: the same, from the value at valid − 24·ceil(lead/24) h (same hour, last day "
             "before init); climatology: pooled station month × local-hour mean of the training period (months "
             "absent from it fall back to the species mean)"),
             "models: " + ", ".join(f"{n} = `{u}`" for n, u in zip(names, uris)),
             "command: `python -m training.ablation " + " ".join(shlex.quote(x) for x in
                                                                 (argv if argv is not None else sys.argv[1:])) + "`"]
    md = write_markdown(a.out, markdown_tables(rows, notes))
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    if a.experiment:
        print(f"logged MLflow run {log_to_mlflow(rows, md, a.experiment, a.tracking_uri)}", file=sys.stderr)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
