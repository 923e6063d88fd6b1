"""aqcast features package."""
