"""aqcast models package."""
