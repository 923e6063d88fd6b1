"""Readers for aqcast's raw inputs (see docs/architecture.md, "Raw data directory").

    read_stations(directory, *, utc_offset="+08:00", domain=None) -> xr.Dataset
    read_station_table(path, *, domain=None) -> pandas.DataFrame
    read_meteorology(path) -> xr.Dataset
    read_satellite(path) -> xr.Dataset
    read_emissions(path) -> EmissionInventory     (.hourly(times) -> xr.Dataset)
    read_static(path) -> xr.Dataset
    read_elevation_npy(path) -> xr.DataArray
    read_emission_totals(path) -> pandas.DataFrame
"""
from features.readers.emission_totals import read_emission_totals
from features.readers.gridded import EmissionInventory, read_emissions, read_meteorology, read_satellite
from features.readers.static import read_elevation_npy, read_static
from features.readers.stations import read_station_table, read_stations

__all__ = ["EmissionInventory", "read_elevation_npy", "read_emission_totals", "read_emissions",
           "read_meteorology", "read_satellite", "read_static", "read_station_table", "read_stations"]
