"""aqcast serving package."""
