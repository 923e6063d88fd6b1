"""The inference artifact's self-description: `DIR/model_card.json` next to `DIR/model.onnx`.

Written by `aqcast export`, read by serving (pydantic only: no torch import here, so serving may use it).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

ONNX_FILE = "model.onnx"
CARD_FILE = "model_card.json"
INPUT_NAMES: tuple[str, ...] = ("obs", "obs_mask", "forcing", "forcing_mask", "static")
OUTPUT_NAME = "forecast"


class Parity(BaseModel):
    """onnxruntime vs PyTorch on the same inputs (µg m-3)."""

    max_abs_diff_random: float
    max_abs_diff_real: float | None = None
    max_rel_diff: float = 0.0
    atol: float
    rtol: float
    n_random: int = 0
    n_real: int = 0


class ModelCard(BaseModel):
    """Everything serving needs to feed `model.onnx` and to describe its output."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    name: str = "aqcast"
    version: str | None = Field(None, description="registered model version (None: not registered)")
    run_id: str | None = None
    model_uri: str | None = None
    onnx_file: str = ONNX_FILE
    opset: int = 18
    input_names: list[str] = list(INPUT_NAMES)
    output_name: str = OUTPUT_NAME
    output_dims: list[str] = ["batch", "lead", "species", "quantile", "y", "x"]
    dynamic_spatial: bool = Field(False, description="Y, X are dynamic in the graph (tiling possible)")
    receptive_field_cells: int | None = Field(None, description="halo in cells for tiled inference")
    ensemble_members: int = Field(1, ge=1, description="networks averaged inside the graph (model.members)")
    architecture: dict[str, Any] | None = Field(None, description="the network's hyper-parameters (ModelConfig)")
    channels: dict[str, list[str]] = Field(..., description="{obs, forcing, static}: channel names in order")
    dropped_channels: dict[str, str] = Field(default_factory=dict, description="channels the training config "
                                             "named that its data lacked -> the store's reason (not inputs)")
    roles: dict[str, str] = Field(default_factory=dict, description="store variable -> role")
    units: dict[str, str] = Field(default_factory=dict)
    grid: str = Field(..., description="features.grid.Grid JSON")
    history: int = Field(..., ge=1)
    leads: int = Field(..., ge=1)
    lead_hours: list[int] = Field(default_factory=list)
    species: list[str] = ["pm25", "o3"]
    quantiles: list[float] = [0.1, 0.5, 0.9]
    train_window: list[str] | None = None
    validation_window: list[str] | None = None
    validation_metrics: dict[str, Any] = Field(default_factory=dict)
    norm_stats: dict[str, Any] = Field(default_factory=dict, description="the store's statistics (informative)")
    normalisation: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per channel {mean, std, log1p} as applied inside the graph: "
        "(x - mean) / std, or (log1p(max(x, 0)) - mean) / std where log1p")
    parity: Parity | None = None
    created: str | None = None
    code_version: str | None = None
    store: str | None = Field(None, description="feature store the model was trained on (informative)")
    quantile_calibration: dict[str, Any] | None = Field(None, description="P10/P90 gap scales fitted after "
                                                        "training (inside the graph) and their coverage")
    weight_averaging: dict[str, Any] | None = Field(None, description="which weights were registered: method "
                                                    "(none / tail / best_last), best_step, the steps averaged")
    persistence_blend: dict[str, Any] | None = Field(None, description="the P50's weight toward a cell's own "
                                                     "init-hour observation per lead and species (inside the graph)")

    def write(self, directory: str | Path) -> Path:
        """Write `model_card.json` into `directory`; returns its path."""
        path = Path(directory) / CARD_FILE
        path.write_text(self.model_dump_json(indent=1))
        return path

    @classmethod
    def read(cls, directory: str | Path) -> ModelCard:
        """Read `DIR/model_card.json`."""
        return cls.model_validate(json.loads((Path(directory) / CARD_FILE).read_text()))
