"""Training configuration: one YAML file (`configs/*.yaml`) validated by pydantic before anything runs.

Variable roles are declared in the config (Anemoi-style): `data.obs_vars` (observed history), `data.forcing_vars`
(known-future forcings, calendar included) and `data.static_vars` — store variable names as in
docs/architecture.md. A config may start from another (`extends: beijing.yaml`, relative to it: its sections
merge key by key, lists replace). `load_config(path, overrides)` applies `key.sub=value` overrides (values parsed
as YAML) and turns every validation problem into one `features.errors.Problem` line.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    ValidationError,
    field_validator,
    model_validator,
)

from features.calendar import COMPUTED_VARS
from features.errors import DataError, Problem

CALENDAR = COMPUTED_VARS  # calendar + solar forcings, computed from the time axis, never stored
OBS_PREFIXES = ("obs_", "stn_", "sat_")
FORCING_PREFIXES = ("met_", "emis_")
STATIC_PREFIXES = ("static_", "station_distance_km", "input_distance_km")


def aqcast_home() -> Path:
    """State directory: `$AQCAST_HOME`, default `./.aqcast` (absolute)."""
    return Path(os.environ.get("AQCAST_HOME", ".aqcast")).resolve()


def parse_time(value: str) -> pd.Timestamp:
    """ISO 8601 string with an explicit offset (or `Z`) -> tz-aware Timestamp (UTC)."""
    ts = pd.Timestamp(value)
    if ts.tzinfo is None:
        raise ValueError(f"{value!r} has no UTC offset: write e.g. 2015-03-01T00:00+08:00")
    return ts.tz_convert("UTC")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class BuildOptions(_Strict):
    """Options for `features.store.build_store` when training from a raw `--data` directory."""

    res_km: float = Field(3.0, gt=0)
    margin_km: float = Field(15.0, ge=0)
    elevation: str | None = None
    emission_totals: str | None = None
    weather_clock: Literal["auto", "off"] = Field(
        "auto", description="auto: realign station weather months that run whole hours off the first year's "
        "clock (features.clock); off: keep them as recorded")


class DataConfig(_Strict):
    """Where the data come from, which periods and channels, which stations are held out."""

    store: str | None = Field(None, description="feature store (zarr); overridden by --store / --data")
    data_dir: str | None = Field(None, description="raw data directory; the store is built under $AQCAST_HOME")
    build: BuildOptions = BuildOptions()
    train_period: tuple[str, str] | None = Field(None, description="init-time window for training (ISO + offset); "
                                                 "None: the store's train_period attr")
    val_period: tuple[str, str] | None = Field(None, description="init-time window for validation; None: "
                                               "everything after the training period")
    history: int = Field(24, ge=1, le=24 * 14)
    leads: int = Field(72, ge=1, le=24 * 10)
    obs_vars: list[str] = Field(min_length=1)
    forcing_vars: list[str] = Field(min_length=1)
    static_vars: list[str] = []
    held_out_stations: list[str] = Field([], description="kept out of inputs and loss (leave-stations-out eval)")
    drop_prob: float = Field(0.15, ge=0, lt=1, description="training: per-sample drop-out of input stations")
    train_every_h: int = Field(1, ge=1, le=24 * 7, description="spacing of training init times")
    val_every_h: int = Field(24, ge=1, le=24 * 7, description="spacing of validation init times")
    calib_every_h: int | None = Field(None, ge=1, le=24 * 7, description="spacing of the validation inits the "
                                      "P10/P90 calibration is fitted on (None: val_every_h); every init hour "
                                      "the forecasts are issued at should be among them")
    max_train_samples: int | None = Field(None, ge=1, description="random subset of train inits per epoch")
    recent_halflife_days: float | None = Field(None, gt=0, description="draw training inits with weight "
                                               "halving every this many days before the last one (None: "
                                               "uniform); needs max_train_samples")

    @field_validator("train_period", "val_period", mode="before")
    @classmethod
    def _stringify(cls, p: Any) -> Any:
        """YAML turns unquoted dates into date/datetime objects: validate their text like any string."""
        if isinstance(p, (list, tuple)):
            return [x.isoformat() if hasattr(x, "isoformat") else x for x in p]
        return p

    @field_validator("train_period", "val_period")
    @classmethod
    def _period(cls, p: tuple[str, str] | None) -> tuple[str, str] | None:
        if p is None:
            return p
        a, b = parse_time(p[0]), parse_time(p[1])
        if b <= a:
            raise ValueError(f"period end {p[1]} is not after its start {p[0]}")
        return p

    @field_validator("obs_vars")
    @classmethod
    def _obs(cls, v: list[str]) -> list[str]:
        bad = [n for n in v if not n.startswith(OBS_PREFIXES)]
        if bad:
            raise ValueError(f"obs_vars must be observed store variables (obs_*, sat_*): {bad}")
        return _unique(v)

    @field_validator("forcing_vars")
    @classmethod
    def _forcing(cls, v: list[str]) -> list[str]:
        bad = [n for n in v if not (n.startswith(FORCING_PREFIXES) or n in CALENDAR)]
        if bad:
            raise ValueError(f"forcing_vars must be met_*, emis_* or calendar {list(CALENDAR)}: {bad}")
        leaks = [n for n in v if n.split("_", 1)[-1] in ("pm25", "o3") and n.startswith("met_")]
        if leaks:
            raise ValueError(f"pollutants cannot be forcings (future values would leak): {leaks}")
        return _unique(v)

    @field_validator("static_vars")
    @classmethod
    def _static(cls, v: list[str]) -> list[str]:
        bad = [n for n in v if not n.startswith(STATIC_PREFIXES)]
        if bad:
            raise ValueError(f"static_vars must be static_*, station_distance_km or input_distance_km: {bad}")
        return _unique(v)

    @model_validator(mode="after")
    def _periods(self) -> DataConfig:
        if self.train_period and self.val_period:
            tr_end = parse_time(self.train_period[1])
            va_start = parse_time(self.val_period[0])
            if va_start <= tr_end:
                raise ValueError(f"val_period starts ({self.val_period[0]}) before train_period ends "
                                 f"({self.train_period[1]}): the periods must not overlap")
        if self.recent_halflife_days and not self.max_train_samples:
            raise ValueError("recent_halflife_days weights a random subset of the training inits: set "
                             "max_train_samples too")
        return self


class OptimConfig(_Strict):
    """Optimiser, schedule, stopping, reproducibility and the time budget."""

    lr: float = Field(2e-3, gt=0, lt=1)
    weight_decay: float = Field(1e-4, ge=0)
    batch_size: int = Field(8, ge=1, le=1024)
    max_epochs: int = Field(20, ge=1)
    patience: int = Field(4, ge=1, description="early stopping on val_loss (epochs)")
    gradient_clip: float | None = Field(1.0, gt=0)
    schedule: Literal["cosine", "plateau", "none"] = "cosine"
    warmup_steps: int = Field(50, ge=0)
    schedule_steps: int | None = Field(None, ge=1, description="length of the cosine decay in steps; default: "
                                       "the planned steps, shortened to fit max_minutes at the speed measured "
                                       "over the first 100 steps (logged as lr_schedule_steps)")
    seed: int = 0
    num_threads: int = Field(2, ge=1, le=256)
    deterministic: bool = True
    max_minutes: float | None = Field(None, gt=0, description="stop training after this wall time")
    checkpoint_every_n_steps: int = Field(50, ge=1, description="last.ckpt refresh interval (resume point)")
    loss_space: Literal["log1p", "sqrt", "linear"] = "log1p"
    aux_weight: float = Field(0.5, ge=0)  # weight of `model.aux_targets`' loss beside the forecast's
    species_weight: tuple[float, float] = (1.0, 1.0)
    mirror_prob: float = Field(0.0, ge=0, le=0.5, description="training: flip each batch's grid west-east and "
                               "north-south, each with this probability, the wind components negated to match "
                               "(training.augment; 0.5 = the four mirrored worlds equally often)")
    obs_noise: float = Field(0.0, ge=0, le=1.0, description="training: multiply every observed input value of the "
                             "history by exp(obs_noise N(0, 1)), drawn per value (training.augment.noisy_obs); "
                             "0 = off")
    dropped_weight: float = Field(1.0, ge=1.0, description="training loss weight of the stations withheld from a "
                                  "sample's inputs by the station drop-out (data.drop_prob), against 1 for the "
                                  "others: how much the case of a cell with no station counts")
    species_scale: tuple[PositiveFloat, PositiveFloat] = Field(
        (1.0, 1.0), description="PM2.5, O3 (ug m-3): both divided by it before the loss transform; with log1p an "
        "error counts about absolutely below that level, relatively above (models.losses.masked_pinball)")
    level_power: float = Field(0.0, ge=0, le=2.0, description="each loss entry weighs (1 + the network's own P50, "
                               "detached, ug m-3)^level_power, mean 1 per species: high concentrations count more, "
                               "as in an MAE in ug m-3, the quantiles still the optimum (models.losses; 0 = off)")
    val_check_interval: float = Field(1.0, gt=0, le=1.0, description="fraction of an epoch between validations")
    ema_decay: float | None = Field(None, gt=0, lt=1, description="exponential moving average of the weights "
                                    "(e.g. 0.998; None = off), used for validation and the registered model")
    calibrate_quantiles: bool = Field(True, description="after training, scale the P10/P90 gaps per lead and "
                                      "species to 80 % coverage on the validation inits (training.calibrate)")
    calibrate_hour: bool = Field(True, description="with calibrate_quantiles: also fit a diurnal factor of the "
                                 "valid local hour on the gaps (needs the hour_sin/hour_cos forcings)")
    calibrate_season: list[Literal["pm25", "o3"]] = Field(
        default_factory=list, description="with calibrate_hour: also fit a seasonal factor of the valid day of year "
        "on these species' gaps (needs the doy_sin/doy_cos forcings; M45)")
    persistence_blend_every_h: int | None = Field(
        None, ge=1, description="after training, fit per lead and species how far the P50 moves toward a cell's own "
        "init-hour observation (weight in [0, 1]; buffer p50_persist), on training-period inits this many hours "
        "apart at the input stations, before the quantile calibration; None = off (training.blend_fit)")
    precision: Literal["32", "bf16-mixed", "auto"] = Field(
        "32", description="training steps' arithmetic: float32, or bfloat16 autocast of the learned layers "
        "(weights, optimizer, validation, calibration and export stay float32); auto = bf16-mixed where the "
        "CPU multiplies bfloat16 natively (training.precision)")
    average_weights: Literal["none", "tail", "best_last"] = Field(
        "none", description="registered weights: the best validation's (none), the mean of the weights at every "
        "validation from the best to the end of training (tail), or of the best's and the final weights (best_last); "
        "chosen before the quantile calibration (training.averaging)")

    @model_validator(mode="after")
    def _one_average(self) -> OptimConfig:
        if self.ema_decay and self.average_weights != "none":
            raise ValueError("ema_decay and average_weights both average the weights: set one of them")
        return self


class TrackingConfig(_Strict):
    """MLflow: experiment, registered model name, alias given to new versions, tracking URI."""

    experiment: str = "aqcast"
    registered_model: str = Field("aqcast", pattern=r"^[A-Za-z0-9_.\-]+$")
    alias: str = Field("challenger", pattern=r"^[A-Za-z][A-Za-z0-9_\-]*$")
    tracking_uri: str | None = None
    run_name: str | None = None
    log_plots: bool = True


class TrainConfig(_Strict):
    """The whole training configuration (one YAML file)."""

    name: str = Field("aqcast", pattern=r"^[A-Za-z0-9_.\-]+$", description="config name (run-name prefix)")
    data: DataConfig
    model: dict[str, Any] = {}
    optim: OptimConfig = OptimConfig()
    tracking: TrackingConfig = TrackingConfig()

    @field_validator("model")
    @classmethod
    def _model(cls, m: dict[str, Any]) -> dict[str, Any]:
        return _validated_model(m)

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        for key in ("history", "leads"):
            self.model[key] = getattr(self.data, key)  # data decides; the model follows
        self.model = _validated_model(self.model)  # constraints on history/leads, against the data's values
        if self.optim.dropped_weight != 1.0 and self.data.drop_prob == 0:
            raise ValueError(f"optim.dropped_weight={self.optim.dropped_weight} weighs the stations that the station "
                             "drop-out withholds, but data.drop_prob is 0: none is withheld; set data.drop_prob > 0")
        if self.optim.persistence_blend_every_h and not self.model.get("persistence_exact"):
            raise ValueError("optim.persistence_blend_every_h blends the P50 toward a cell's own init-hour "
                             "observation, which the model's skip carries only with model.persistence_exact: true")
        return self

    def model_config_obj(self) -> Any:
        """The `models.config.ModelConfig` for this run."""
        from models.config import ModelConfig

        return ModelConfig.model_validate(self.model)


def _unique(v: list[str]) -> list[str]:
    dup = sorted({n for n in v if v.count(n) > 1})
    if dup:
        raise ValueError(f"listed twice: {dup}")
    return v


def apply_overrides(raw: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """`a.b.c=value` (value parsed as YAML) into the nested dict `raw`, in place; returns `raw`."""
    import yaml

    problems = []
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            problems.append(Problem(f"override {item!r} is not key=value (e.g. optim.lr=0.001)"))
            continue
        parts = key.strip().split(".")
        node = raw
        for p in parts[:-1]:
            if not isinstance(node.get(p, {}), dict):
                problems.append(Problem(f"override {item!r}: {p!r} is not a section"))
                break
            node = node.setdefault(p, {})
        else:
            try:
                node[parts[-1]] = yaml.safe_load(value)
            except yaml.YAMLError as ex:
                problems.append(Problem(f"override {item!r}: value is not valid YAML ({ex})"))
    if problems:
        raise DataError(problems)
    return raw


def merged(base: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """`child` over `base`: sections merge key by key (recursively), any other value (lists too) replaces."""
    out = dict(base)
    for k, v in child.items():
        out[k] = merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_raw(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The YAML mapping of `path`, with an `extends: other.yaml` (relative to `path`) merged under it."""
    import yaml

    if not path.is_file():
        what = f"config named by 'extends' in {seen[-1]} not found" if seen else "config file not found"
        raise DataError(Problem(what, file=str(path)))
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as ex:
        raise DataError(Problem(f"not valid YAML: {ex}", file=str(path))) from None
    if not isinstance(raw, dict):
        raise DataError(Problem("the config must be a mapping of sections (data, model, optim, tracking)",
                                file=str(path)))
    base = raw.pop("extends", None)
    if base is None:
        return raw
    if not isinstance(base, str) or not base.strip():
        raise DataError(Problem("'extends' must name one YAML file (relative to this one)", file=str(path),
                                key="extends"))
    parent, chain = (path.parent / base).resolve(), seen + (path.resolve(),)
    if parent in chain:
        raise DataError(Problem(f"'extends' goes round in a circle at {parent}", file=str(path), key="extends"))
    out = merged(read_raw(parent, chain), raw)
    if "name" not in raw:
        out.pop("name", None)  # a config is named after its own file unless it says otherwise
    return out


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read (`extends` merged), override and validate a YAML config; raise `DataError` (one problem per bad
    field)."""
    path = Path(path)
    raw = read_raw(path)
    raw.setdefault("name", path.stem)
    apply_overrides(raw, overrides)
    set_keys = {o.partition("=")[0].strip(): o for o in overrides or []}
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as ex:
        problems = []
        for e in ex.errors():
            key = ".".join(str(p) for p in e["loc"]) or None
            given = f" (from --set {set_keys[key]})" if key in set_keys else ""
            problems.append(Problem(_msg(e) + given, file=str(path), key=key))
        raise DataError(problems) from None


def _validated_model(m: dict[str, Any] | None) -> dict[str, Any]:
    """`models.config.ModelConfig` of the `model:` section, dumped; its errors as one ValueError line."""
    from models.config import ModelConfig

    try:
        return ModelConfig.model_validate(m or {}).model_dump(mode="json")
    except ValidationError as ex:
        raise ValueError("; ".join(": ".join(filter(None, (".".join(map(str, e["loc"])), _msg(e))))
                                   for e in ex.errors())) from None


def _msg(err: dict[str, Any]) -> str:
    msg = str(err.get("msg", "invalid"))
    if err.get("type") == "extra_forbidden":
        return "unknown key (check spelling; see configs/tiny.yaml for the known keys)"
    if err.get("type") == "missing":
        return "required key is missing"
    return msg.removeprefix("Value error, ")
