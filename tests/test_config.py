"""Training configs: every shipped config validates; bad configs and channels give clear, located errors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from features.errors import DataError
from training.config import TrainConfig, load_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


MINIMAL = """
data:
  obs_vars: [obs_pm25, obs_o3]
  forcing_vars: [met_t2m, hour_sin]
"""


def test_configs_exist() -> None:
    assert {p.stem for p in CONFIGS} >= {"tiny", "synth", "beijing"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_config_validates(path: Path) -> None:
    cfg = load_config(path)
    assert isinstance(cfg, TrainConfig)
    assert cfg.name == path.stem
    assert cfg.model["history"] == cfg.data.history and cfg.model["leads"] == cfg.data.leads == 72
    assert cfg.tracking.registered_model == "aqcast" and cfg.tracking.alias == "challenger"


def test_beijing_config_holds_out_two_stations_and_fits_budget() -> None:
    cfg = load_config(Path(CONFIGS[0]).with_name("beijing.yaml"))
    assert len(cfg.data.held_out_stations) == 2
    assert cfg.data.train_period[0].startswith("2013-03-01") and cfg.data.val_period[1].startswith("2016-02-29")
    assert cfg.optim.max_minutes is not None and cfg.optim.max_minutes < 15


def test_minimal_config_and_overrides(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, MINIMAL), ["optim.lr=0.01", "model.hidden=8", "data.held_out_stations=[A]"])
    assert cfg.optim.lr == 0.01 and cfg.model["hidden"] == 8 and cfg.data.held_out_stations == ["A"]
    assert cfg.tracking.tracking_uri is None and cfg.name == "c"


@pytest.mark.parametrize("text, overrides, where, words", [
    (MINIMAL + "  bogus: 1\n", [], "data.bogus", "unknown key"),
    (MINIMAL, ["optim.lr=-1"], "optim.lr", "greater than 0"),
    (MINIMAL, ["model.hidden=2"], "model", "hidden"),
    (MINIMAL, ["model.nonsense=2"], "model", "nonsense"),
    (MINIMAL, ["data.train_period=[2015-01-01, 2015-02-01]"], "data.train_period", "offset"),
    (MINIMAL + "  train_period: ['2015-01-01T00:00+08:00', '2015-03-01T00:00+08:00']\n"
     "  val_period: ['2015-02-01T00:00+08:00', '2015-04-01T00:00+08:00']\n", [], "data", "overlap"),
    (MINIMAL, ["data.forcing_vars=[obs_pm25]"], "data.forcing_vars", "forcing_vars must be"),
    (MINIMAL, ["data.obs_vars=[obs_pm25, obs_pm25]"], "data.obs_vars", "twice"),
    ("data:\n  forcing_vars: [met_t2m]\n", [], "data.obs_vars", "required"),
    (MINIMAL, ["optim.lr"], None, "key=value"),
    (MINIMAL, ["data.recent_halflife_days=365"], "data", "set max_train_samples"),
    (MINIMAL, ["data.max_train_samples=10", "data.recent_halflife_days=0"], "data.recent_halflife_days", "greater"),
    (MINIMAL, ["model.history=12", "model.diurnal_inputs=true"], "model", "key 'model': diurnal_inputs needs"),
    # the data's history is the model's: its constraints are checked against it, at load time
    (MINIMAL, ["data.history=12", "model.diurnal_inputs=true"], None, "needs history >= 24 h (the same hour"),
    (MINIMAL, ["data.history=12", "model.forcing_windows=[18]"], None, "forcing_windows must lie in 2..history (12"),
    (MINIMAL, ["data.drop_prob=0", "optim.dropped_weight=3"], None, "data.drop_prob is 0: none is withheld"),
    (MINIMAL, ["optim.mirror_prob=0.7"], "optim.mirror_prob", "less than or equal to 0.5"),
    (MINIMAL, ["optim.persistence_blend_every_h=30"], None, "only with model.persistence_exact: true"),
    (MINIMAL, ["optim.level_power=3"], "optim.level_power", "less than or equal to 2 (from --set optim.level_power=3)"),
])
def test_bad_config_gives_clear_error(tmp_path: Path, text: str, overrides: list[str], where: str | None,
                                      words: str) -> None:
    with pytest.raises(DataError) as ei:
        load_config(_write(tmp_path, text), overrides)
    msgs = [str(p) for p in ei.value.problems]
    assert any(words.lower() in m.lower() for m in msgs), msgs
    if where:
        assert any(p.key and p.key.startswith(where) for p in ei.value.problems), msgs


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(DataError, match="YAML"):
        load_config(_write(tmp_path, "data: [unclosed"))
    with pytest.raises(DataError, match="mapping"):
        load_config(_write(tmp_path, "- a\n- b\n"))


def test_channels_checked_against_store(tiny_store, tmp_path: Path, caplog) -> None:
    from training.datamodule import resolve_channels, split_stations

    cfg = load_config(Path(CONFIGS[0]).with_name("tiny.yaml"))
    with caplog.at_level("WARNING", logger="training.datamodule"):
        ch, dropped = resolve_channels(tiny_store, cfg)
    assert "sat_no2col" in dropped and "sat_no2col" not in ch["obs"]  # listed as missing: dropped, no crash
    reason = json.loads(tiny_store.attrs["missing_reasons"])["sat_no2col"]
    assert dropped["sat_no2col"] == reason  # the store's reason travels, not a generic one
    notes = [r.getMessage() for r in caplog.records]
    assert len(notes) == 1 and "sat_no2col" in notes[0] and reason in notes[0]  # one line for all of them
    assert ch["forcing"][-5:] == ["hour_sin", "hour_cos", "doy_sin", "doy_cos", "weekend"]
    bad = load_config(Path(CONFIGS[0]).with_name("tiny.yaml"), ["data.obs_vars=[obs_pm25, sat_aod_valid]",
                                                                "data.static_vars=[static_nothing]"])
    with pytest.raises(DataError) as ei:
        resolve_channels(tiny_store, bad)
    text = str(ei.value)
    assert "sat_aod_valid" in text and "role" in text and "static_nothing" in text
    computed = load_config(Path(CONFIGS[0]).with_name("tiny.yaml"),
                           ["data.static_vars=[static_elevation, input_distance_km]"])
    assert resolve_channels(tiny_store, computed)[0]["static"] == ["static_elevation", "input_distance_km"]
    held = load_config(Path(CONFIGS[0]).with_name("tiny.yaml"), ["data.held_out_stations=[Nowhere]"])
    with pytest.raises(DataError, match="Nowhere"):
        split_stations(tiny_store, held)


def test_extends_merges_sections_and_names_the_child(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text("name: base\n" + MINIMAL + "  held_out_stations: [A, B]\n"
                                        "optim:\n  lr: 0.01\n  seed: 3\n")
    child = tmp_path / "child.yaml"
    child.write_text("extends: base.yaml\ndata:\n  held_out_stations: []\noptim:\n  seed: 7\n")
    cfg = load_config(child, ["optim.lr=0.02"])
    assert cfg.name == "child"  # its own file's name, not the base's
    assert cfg.data.held_out_stations == [] and cfg.data.obs_vars == ["obs_pm25", "obs_o3"]  # lists replace
    assert cfg.optim.seed == 7 and cfg.optim.lr == 0.02  # sections merge key by key; --set wins over both


@pytest.mark.parametrize("base_text, child_text, words", [
    (None, "extends: nowhere.yaml\n", "not found"),
    ("extends: child.yaml\n" + MINIMAL, "extends: base.yaml\n", "circle"),
    (MINIMAL, "extends: [base.yaml]\n", "one YAML file"),
])
def test_extends_errors_are_located(tmp_path: Path, base_text: str | None, child_text: str, words: str) -> None:
    if base_text is not None:
        (tmp_path / "base.yaml").write_text(base_text)
    child = tmp_path / "child.yaml"
    child.write_text(child_text)
    with pytest.raises(DataError) as ei:
        load_config(child)
    assert words in str(ei.value)


def test_operational_config_is_the_shipped_one_on_every_station() -> None:
    """configs/beijing-operational.yaml: the scorecard config's network and budget, trained on all ten stations."""
    root = Path(CONFIGS[0]).parent
    ship, op = load_config(root / "beijing.yaml"), load_config(root / "beijing-operational.yaml")
    assert op.data.held_out_stations == [] and op.name == "beijing-operational"
    assert op.model == ship.model and op.optim == ship.optim
    assert op.data.obs_vars == ship.data.obs_vars and op.data.forcing_vars == ship.data.forcing_vars
    assert op.data.train_period[0] == ship.data.train_period[0] and op.data.val_period[1] == ship.data.val_period[1]
