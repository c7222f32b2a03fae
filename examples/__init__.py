"""Runnable examples for streamflow (run them from the repository root)."""
