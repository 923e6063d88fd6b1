"""aqcast training package."""
