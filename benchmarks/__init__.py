"""Benchmarks for streamflow: throughput, latency, memory and scaling (see README.md)."""
