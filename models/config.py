"""Architecture hyper-parameters of the deep model (embedded by the training YAML config as `model:`)."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SPECIES: tuple[str, ...] = ("pm25", "o3")
QUANTILES: tuple[float, ...] = (0.1, 0.5, 0.9)
POLLUTANTS: tuple[str, ...] = ("pm25", "pm10", "so2", "no2", "co", "o3")
AUX_POLLUTANTS: tuple[str, ...] = tuple(p for p in POLLUTANTS if p not in SPECIES)  # may be auxiliary targets


class ModelConfig(BaseModel):
    """Hyper-parameters of `models.net.AQNet`.

    history/leads are fixed at build time (the ONNX graph has fixed H and L, dynamic batch).
    `spread_sigmas` are Gaussian scales in grid cells for the normalized convolution that spreads sparse
    station values over the grid, applied to the last `spread_recent` hours and every `spread_stride`-th
    hour before (all hours still enter as raw value + mask); `dilations` sets the encoder's residual blocks (receptive field
    1 + 2*sum(dilations) cells, plus 3*max(sigma) for the spreading). The persistence skip adds the spread
    last observation (finest scale) to the P50; with `persistence_exact`, cells that observed the init hour
    use their own value instead (a station's spread value is blurred with its neighbours').
    """

    model_config = ConfigDict(extra="forbid")

    name: str = "aqnet"
    history: int = Field(24, ge=1)
    leads: int = Field(72, ge=1)
    species: tuple[str, ...] = SPECIES
    quantiles: tuple[float, float, float] = QUANTILES
    spread_sigmas: tuple[float, ...] = (1.5, 4.0, 10.0)
    spread_truncate: float = Field(3.0, gt=0)
    history_forcing_stride: int = Field(3, ge=1)
    spread_recent: int = Field(6, ge=1)
    spread_stride: int = Field(3, ge=1)
    hidden: int = Field(48, ge=4)
    dilations: tuple[int, ...] = (1, 2, 4, 1, 2, 4)
    # the encoder after the stem: AQNet's dilated residual blocks (`dilations`), or a U-Net (`models.unet`: two
    # stride-2 levels, `unet_blocks` residual blocks per level); measured against each other in M40
    encoder: Literal["dilated", "unet"] = "dilated"
    unet_blocks: int = Field(2, ge=1, le=4)
    # with members > 1: one encoder per member (e.g. [dilated, unet]), so the ensemble mixes architectures
    member_encoders: tuple[Literal["dilated", "unet"], ...] = ()
    decoder_hidden: int = Field(32, ge=4)
    decoder_kernel: int = Field(1, ge=1)
    decoder_layers: int = Field(1, ge=1, le=4)
    forcing_windows: tuple[int, ...] = ()
    # forcings normalised in log1p space like the pollutants, e.g. [met_tp]: precipitation is 93 % zeros and
    # reaches 125 standard deviations linearly (M31), 26 in log1p space
    log_forcings: tuple[str, ...] = ()
    forcing_changes: bool = False  # each lead also sees every forcing's change since the init hour
    skip_gate: bool = False  # the decoder scales the persistence skip per lead and cell by 2 sigmoid(g), g = 0 at init
    # the skip's weight per lead also follows the valid local hour (so, per lead, the issue hour): alpha + c . (sin,
    # cos of 1 and 2 cycles a day), c zero at init; needs the hour_sin/hour_cos forcings
    skip_hour: bool = False
    # cells that observed a species at the init hour get their own skip weight and decoder gain on top of the
    # shared ones (alpha + own * alpha_own, gain + own * gain_own per lead and species, zero at init): the
    # station drop-out makes the shared weight a compromise between exact and spread init values
    skip_observed: bool = False
    # training-only heads for other pollutants' P50 (multi-task), e.g. [pm10, no2, co]; not in the forecast
    aux_targets: tuple[str, ...] = ()
    decoder_film: bool = False  # the weather at each lead scales the init-hour state's projection (1 + FiLM, 0 at init)
    median_stop_grad: bool = False  # training only: P10/P90 = P50 (no gradient) -/+ gaps, so the tails' losses move
    # the gaps and not the median (the P50 learns from its own pinball); inference and export unchanged
    # one decoder per species (grouped 1x1 convolutions, each `decoder_hidden` wide) on the shared encoder state:
    # the species stop sharing the decoder's features (the aux targets' extra sharing cost O3, M32)
    species_decoders: bool = False
    lead_dilations: tuple[int, ...] = ()  # causal residual convs along the lead axis in the decoder
    dropout: float = Field(0.0, ge=0, lt=1)
    persistence_skip: bool = True
    persistence_exact: bool = False  # skip uses the cell's own last observation where it has one
    members: int = Field(1, ge=1, le=8)  # > 1: an ensemble of independently initialised nets (models.ensemble)
    # the decoder sees, at each lead, the cell's target species at the same local hour on the last day of the
    # history (exact where observed, else finest-scale spread) and a skip from it: the trees' diurnal persistence
    diurnal_inputs: bool = False

    @field_validator("quantiles")
    @classmethod
    def _monotone(cls, q: tuple[float, float, float]) -> tuple[float, float, float]:
        if not (0 < q[0] < q[1] < q[2] < 1):
            raise ValueError(f"quantiles must be increasing in (0, 1), got {q}")
        return q

    @field_validator("decoder_kernel")
    @classmethod
    def _odd(cls, k: int) -> int:
        if k % 2 == 0:
            raise ValueError("decoder_kernel must be odd")
        return k

    @model_validator(mode="after")
    def _windows(self) -> ModelConfig:
        bad = [w for w in self.forcing_windows if not 2 <= w <= self.history]
        if bad:
            raise ValueError(f"forcing_windows must lie in 2..history ({self.history} h): {bad}")
        if self.diurnal_inputs and self.history < 24:
            raise ValueError(f"diurnal_inputs needs history >= 24 h (the same hour yesterday), got {self.history}")
        if self.member_encoders and (self.members < 2 or len(self.member_encoders) != self.members):
            raise ValueError(f"member_encoders needs members >= 2 and one encoder per member: got "
                             f"{len(self.member_encoders)} for members = {self.members}")
        if any(not 1 <= d < self.leads for d in self.lead_dilations):
            raise ValueError(f"lead_dilations must lie in 1..leads-1 ({self.leads - 1}): {list(self.lead_dilations)}")
        return self

    @field_validator("aux_targets")
    @classmethod
    def _aux(cls, a: tuple[str, ...]) -> tuple[str, ...]:
        bad = [p for p in a if p not in AUX_POLLUTANTS]
        if bad or len(set(a)) != len(a):
            raise ValueError(f"must be distinct pollutants from {AUX_POLLUTANTS}, got {list(a)}")
        return tuple(a)

    @field_validator("species")
    @classmethod
    def _species(cls, s: tuple[str, ...]) -> tuple[str, ...]:
        if tuple(s) != SPECIES:
            raise ValueError(f"species must be {SPECIES} (the output contract)")
        return tuple(s)

    def spread_hours(self) -> list[int]:
        """History indices (0 = oldest, history-1 = init hour) that get the multi-scale spreading."""
        h = self.history
        recent = set(range(max(0, h - self.spread_recent), h))
        return sorted(recent | set(range((h - 1) % self.spread_stride, h, self.spread_stride)))

    def encoders(self) -> tuple[str, ...]:
        """Each ensemble member's encoder: `member_encoders`, else `encoder` for all of them."""
        return self.member_encoders or (self.encoder,) * self.members

    def receptive_field_cells(self) -> int:
        """Half-width (cells) beyond which an input cannot influence an output cell; tile overlap >= this."""
        spread = int(max(self.spread_sigmas) * self.spread_truncate + 0.5) if self.spread_sigmas else 0
        if "unet" in self.encoders():
            from models.unet import PHASE, UNetEncoder

            rf = spread + UNetEncoder.receptive_field_cells(self.unet_blocks) + self.decoder_kernel // 2
            return -(-rf // PHASE) * PHASE  # a multiple of PHASE: tiles keep the grid's downsampling phase
        return spread + sum(self.dilations) + 1 + self.decoder_kernel // 2
