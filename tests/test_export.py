"""ONNX export: parity with PyTorch, dynamic batch (and grid), loud failure past tolerance, model card."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
TINY_CFG = {"hidden": 8, "decoder_hidden": 8, "dilations": [1, 2], "spread_sigmas": [1.5, 3.0]}
AVERAGED = {"method": "tail", "best_step": 30, "steps": [30, 40, 45], "n": 3}  # as training.averaging reports it


def tiny_artifact(tmp_path_factory: pytest.TempPathFactory, store, store_path: Path | None = None) -> Path:
    """Export a tiny untrained model on the tiny store once per session (reused by the serving tests)."""
    from training.bench import model_for_store
    from training.export import export_artifact

    out = tmp_path_factory.getbasetemp() / "tiny_artifact"
    if not (out / "model_card.json").exists():
        model, meta = model_for_store(store, TINY_CFG)
        meta |= {"validation_metrics": {"mae_pm25": 12.5, "crps_o3": 7.0},
                 "validation_window": ["2021-01-15T00:00:00+00:00", "2021-01-20T23:00:00+00:00"],
                 "store": str(store_path) if store_path else None, "weight_averaging": AVERAGED,
                 "dropped_channels": {"sat_no2col": "not in satellite.nc"}}
        export_artifact(model, meta, out, store=store_path)
    return out


@pytest.fixture(scope="module")
def artifact(tmp_path_factory, tiny_store, tiny_store_path) -> Path:
    return tiny_artifact(tmp_path_factory, tiny_store, tiny_store_path)


@pytest.fixture(scope="module")
def torch_model(tiny_store):
    from training.bench import model_for_store

    return model_for_store(tiny_store, TINY_CFG)[0]


def test_artifact_files_and_single_file_weights(artifact: Path):
    import onnx

    files = sorted(p.name for p in artifact.iterdir())
    assert files == ["model.onnx", "model_card.json"]  # no external .onnx.data
    m = onnx.load(str(artifact / "model.onnx"))
    assert max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert [i.name for i in m.graph.input] == ["obs", "obs_mask", "forcing", "forcing_mask", "static"]
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic batch


def test_card_contents(artifact: Path, tiny_store):
    from models.artifact import ModelCard

    card = ModelCard.read(artifact)
    assert card.channels["obs"][0] == "obs_pm25" and "hour_sin" in card.channels["forcing"]
    assert sorted(card.channels["static"]) == ["static_elevation", "station_distance_km"]
    assert json.loads(card.grid)["nx"] == 16 and card.grid == tiny_store.attrs["grid"]
    assert (card.history, card.leads, card.species, card.quantiles) == (24, 72, ["pm25", "o3"], [0.1, 0.5, 0.9])
    assert card.architecture["encoder"] == "dilated" and card.architecture["hidden"] == TINY_CFG["hidden"]
    assert card.lead_hours == list(range(1, 73))
    assert card.dropped_channels == {"sat_no2col": "not in satellite.nc"}  # what the model never saw, and why
    assert card.units["obs_pm25"] == "ug m-3" and card.units["met_t2m"] == "degC" and card.units["hour_sin"] == "1"
    assert card.roles["stn_pm25"] == "target" and card.roles["met_t2m"] == "forcing"
    assert card.train_window and card.train_window[0].startswith("2021-01-01")
    assert card.validation_metrics["mae_pm25"] == 12.5 and card.validation_window
    assert card.parity is not None and card.parity.n_real >= 1 and card.parity.n_random >= 1
    assert card.parity.max_abs_diff_random < 1e-2 and card.parity.max_abs_diff_real < 1e-2
    assert card.code_version and card.created and card.dynamic_spatial and card.weight_averaging == AVERAGED
    assert card.receptive_field_cells and card.norm_stats["obs_pm25"]["mean_log1p"] > 0
    # the normalisation the graph applies, channel by channel: pollutants in log1p space, precipitation linear
    assert card.normalisation["obs_pm25"] == {"mean": pytest.approx(card.norm_stats["obs_pm25"]["mean_log1p"]),
                                              "std": pytest.approx(card.norm_stats["obs_pm25"]["std_log1p"]),
                                              "log1p": True}
    assert card.normalisation["met_tp"]["log1p"] is False and set(card.normalisation) >= set(card.channels["forcing"])


def test_parity_random_and_dynamic_batch(artifact: Path, torch_model):
    import onnxruntime as ort
    import torch

    from training.export import random_inputs

    sess = ort.InferenceSession(str(artifact / "model.onnx"))
    from models.artifact import ModelCard

    card = ModelCard.read(artifact)
    for batch, ny, nx in [(1, 16, 16), (4, 16, 16), (2, 9, 21)]:
        x = random_inputs(card.channels, 24, 72, ny, nx, batch, batch, card.norm_stats)
        got = sess.run(None, x)[0]
        with torch.no_grad():
            ref = torch_model(*(torch.from_numpy(v) for v in x.values())).numpy()
        assert got.shape == (batch, 72, 2, 3, ny, nx)
        assert np.abs(got - ref).max() < 1e-2
        assert (got >= 0).all() and (np.diff(got, axis=3) >= -1e-4).all()  # non-negative, monotone quantiles


def meta_stats(meta: dict) -> dict:
    """The store's norm_stats from a model's metadata (a JSON string or a dict)."""
    return json.loads(meta["norm_stats"]) if isinstance(meta["norm_stats"], str) else meta["norm_stats"]


def test_parity_with_decoder_options_and_diurnal_band(tmp_path: Path, tiny_store):
    """The decoder options (lead-axis convolutions, trailing forcing windows, the forcing's change since init,
    two layers, precipitation in log1p space: those of configs/beijing.yaml; the skip gate, its hourly weight,
    its own weight at observed cells, FiLM, one decoder per species) and the diurnal factor of the band (`gap_hour`, read from the hour_sin /
    hour_cos forcings inside the graph) export and match PyTorch."""
    import torch

    from training.bench import model_for_store
    from training.export import parity, random_inputs, to_onnx

    model, meta = model_for_store(tiny_store, TINY_CFG | {"lead_dilations": [1, 4], "forcing_windows": [6, 24],
                                                     "forcing_changes": True, "decoder_layers": 2,
                                                     "skip_gate": True, "skip_hour": True, "decoder_film": True,
                                                     "skip_observed": True, "persistence_exact": True,
                                                     "log_forcings": ["met_tp"], "species_decoders": True})
    assert model.dec.groups == 2 and model.lead_convs[0].conv.groups == 2
    assert model.hour_idx is not None and model.f_proj.in_channels == 6 * len(model.forcing_names)
    assert model.forcing_norm.as_dict()["met_tp"]["log1p"]
    assert model.normalisation()["met_tp"] == {"mean": pytest.approx(meta_stats(meta)["met_tp"]["mean_log1p"]),
                                               "std": pytest.approx(meta_stats(meta)["met_tp"]["std_log1p"]),
                                               "log1p": True}  # so the model card says so
    with torch.no_grad():
        for lc in model.lead_convs:
            torch.nn.init.normal_(lc.conv.weight, std=0.1)
        torch.nn.init.normal_(model.skip_gate.weight, std=0.1)
        torch.nn.init.normal_(model.skip_hour_coef, std=0.1)
        torch.nn.init.normal_(model.alpha_own, std=0.1)
        torch.nn.init.normal_(model.gain_own, std=0.1)
        model.p50_persist.uniform_(0.0, 1.0)  # the P50's blend toward the init-hour observation, in the graph
        torch.nn.init.normal_(model.film.weight, std=0.1)
        model.gap_hour.copy_(torch.tensor([[[0.2, -0.1, 0.05, 0.0]] * 2, [[0.4, 0.1, 0.0, -0.1]] * 2]))
    stats = meta_stats(meta)
    x = random_inputs(meta["channels"], 24, 72, 12, 10, 2, 0, stats)
    to_onnx(model, x, tmp_path / "m.onnx")
    rep = parity(model, tmp_path / "m.onnx", [x, random_inputs(meta["channels"], 24, 72, 12, 10, 1, 1, stats)])
    assert rep.max_abs_diff_random < 1e-2


def test_parity_fails_loudly(artifact: Path, torch_model):
    import copy

    import torch

    from models.artifact import ModelCard
    from training.export import ParityError, parity, random_inputs

    card = ModelCard.read(artifact)
    other = copy.deepcopy(torch_model)
    with torch.no_grad():
        other.head.bias.add_(0.5)  # a different model than the one exported
    sample = random_inputs(card.channels, 24, 72, 16, 16, 1, 0, card.norm_stats)
    with pytest.raises(ParityError, match="exceeds"):
        parity(other, artifact / "model.onnx", [sample], atol=1e-2, rtol=1e-4)
    rep = parity(torch_model, artifact / "model.onnx", [sample], atol=1e-2, rtol=1e-4)
    assert rep.max_abs_diff_random < 1e-2


def test_export_refuses_past_tolerance(tmp_path: Path, torch_model, tiny_store, monkeypatch):
    from training import export

    def broken(model, example, path, opset=18):  # export a different model than the one checked
        import copy

        import torch

        m2 = copy.deepcopy(model)
        with torch.no_grad():
            m2.head.bias.add_(1.0)
        return real_to_onnx(m2, example, path, opset)

    real_to_onnx = export.to_onnx
    monkeypatch.setattr(export, "to_onnx", broken)
    _, meta = __import__("training.bench", fromlist=["x"]).model_for_store(tiny_store, TINY_CFG)
    with pytest.raises(export.ParityError):
        export.export_artifact(torch_model, meta, tmp_path / "art")
    assert not (tmp_path / "art").exists() and not (tmp_path / "art.partial").exists()


def test_models_uri_parsing():
    from features.errors import DataError
    from serving.registry import parse_models_uri

    assert parse_models_uri("models:/aqcast@champion") == ("aqcast", "champion")
    assert parse_models_uri("models:/aqcast/3") == ("aqcast", "3")
    with pytest.raises(DataError, match="models:/NAME@alias"):
        parse_models_uri("runs:/abc/model")


def test_registry_attach_and_resolve(tmp_path: Path, artifact: Path, monkeypatch):
    """export -> logged under the run's onnx/, version tagged; serving pins alias -> version and downloads."""
    import shutil

    from mlflow import MlflowClient

    from models.artifact import ModelCard
    from serving.registry import ONNX_TAG, resolve
    from training.export import attach_to_registry

    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.create_experiment("t", artifact_location=str(tmp_path / "mlartifacts"))
    run = client.create_run(exp)
    client.set_terminated(run.info.run_id)
    client.create_registered_model("aqcast")
    mv = client.create_model_version("aqcast", f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    client.set_registered_model_alias("aqcast", "champion", mv.version)
    out = tmp_path / "art"
    shutil.copytree(artifact, out)
    card = attach_to_registry(out, ModelCard.read(out), "models:/aqcast@champion", uri)
    assert (card.name, card.version, card.run_id) == ("aqcast", "1", run.info.run_id)
    tags = client.get_model_version("aqcast", "1").tags
    assert tags[ONNX_TAG] == f"runs:/{run.info.run_id}/onnx" and len(tags["aqcast.onnx_sha256"]) == 64
    r = resolve("models:/aqcast@champion", tracking_uri=uri, cache=tmp_path / "cache")
    assert (r.version, r.alias, r.uri, r.label) == ("1", "champion", "models:/aqcast/1", "aqcast/1")
    assert (r.artifact_dir / "model.onnx").is_file() and ModelCard.read(r.artifact_dir).version == "1"
    from features.errors import DataError

    with pytest.raises(DataError, match="cannot resolve"):
        resolve("models:/aqcast@nobody", tracking_uri=uri, cache=tmp_path / "cache")
