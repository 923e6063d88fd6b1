"""Request and response bodies of the forecast service (pydantic; BentoML turns validation errors into 400)."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_LEAD = 72
Lead = Annotated[int, Field(ge=1, le=MAX_LEAD, description="hours after the init time, 1..72")]


class Point(BaseModel):
    """A location in degrees (WGS84)."""

    model_config = ConfigDict(extra="forbid")

    lon: float = Field(..., ge=-180, le=180)
    lat: float = Field(..., ge=-90, le=90)


class ForecastRequest(BaseModel):
    """Select cells by exactly one of `points`, `cells` or `bbox`; pick species, lead hours and quantiles."""

    model_config = ConfigDict(extra="forbid")

    points: list[Point] | None = Field(None, min_length=1, description="[{lon, lat}, ...]")
    cells: list[str] | None = Field(None, min_length=1, description="cell ids, e.g. '3000m_12_-4' (GET /grid)")
    bbox: list[float] | None = Field(None, min_length=4, max_length=4,
                                     description="[west, south, east, north] in degrees (cell centres inside)")
    species: list[Literal["pm25", "o3"]] = Field(["pm25", "o3"], min_length=1)
    lead_hours: Lead | list[Lead] = Field(MAX_LEAD, description="N = every hour 1..N, or a list of hours")
    quantiles: list[float] | None = Field(None, description="subset of the model's quantiles (default all)")
    init_time: str | None = Field(None, description="ISO 8601 with offset, e.g. 2017-02-28T08:00:00+08:00; "
                                                    "default: latest available")
    format: Literal["json", "netcdf"] = "json"

    @model_validator(mode="after")
    def _one_selector(self) -> ForecastRequest:
        given = [k for k in ("points", "cells", "bbox") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of 'points' ([{lon, lat}]), 'cells' (ids) or 'bbox' "
                             f"([west, south, east, north]); got {given or 'none'}")
        if self.bbox is not None:
            w, s, e, n = self.bbox
            if not (w < e and s < n):
                raise ValueError("bbox must be [west, south, east, north] with west < east and south < north")
        return self

    def leads(self) -> list[int]:
        """The requested lead hours, sorted and unique."""
        if isinstance(self.lead_hours, int):
            return list(range(1, self.lead_hours + 1))
        return sorted(set(self.lead_hours))


class ObservationRow(BaseModel):
    """One station-hour; pollutants in µg m-3 (CO too). Unknown stations need lon/lat."""

    model_config = ConfigDict(extra="forbid")

    station: str
    time: str = Field(..., description="ISO 8601 with offset (hour), e.g. 2017-03-01T09:00:00+08:00")
    lon: float | None = None
    lat: float | None = None
    pm25: float | None = Field(None, ge=0)
    pm10: float | None = Field(None, ge=0)
    so2: float | None = Field(None, ge=0)
    no2: float | None = Field(None, ge=0)
    co: float | None = Field(None, ge=0)
    o3: float | None = Field(None, ge=0)


class ObservationsRequest(BaseModel):
    """New station rows; the latest init time advances to the newest hour with data."""

    model_config = ConfigDict(extra="forbid")

    rows: list[ObservationRow] = Field(..., min_length=1, max_length=100_000)


class SpeciesSeries(BaseModel):
    """Per lead hour: quantiles (µg m-3) keyed p10/p50/p90, China hourly IAQI and category from P50."""

    model_config = ConfigDict(extra="allow")

    aqi: list[float]
    category: list[str]


class CellForecast(BaseModel):
    """One grid cell's forecast."""

    cell_id: str
    row: int
    col: int
    lon: float
    lat: float
    query: dict[str, Any] | None = None
    lead_hours: list[int]
    valid_time: list[str]
    species: dict[str, SpeciesSeries]


class ForecastResponse(BaseModel):
    """Forecasts for the selected cells."""

    model_version: str
    init_time: str
    units: str = "ug m-3"
    quantiles: list[float]
    aqi: str = "China HJ 633-2012 IAQI of the P50 value"
    forecasts: list[CellForecast]
