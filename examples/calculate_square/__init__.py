"""The Redis Streams "calculate_square" tutorial, as a streamflow app."""
