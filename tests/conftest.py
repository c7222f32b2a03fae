"""Shared pytest configuration for the streamflow test suite."""

pytest_plugins = ["streamflow.testing"]
