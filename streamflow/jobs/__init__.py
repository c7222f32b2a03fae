"""Jobs: RQ-style task queue on the streams runtime."""
