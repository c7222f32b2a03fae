"""Simulated image-resize job queue: concurrency, retries and a done-hash."""
