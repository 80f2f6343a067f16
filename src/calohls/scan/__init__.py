"""Scans over models and precisions: point grids, executors (local processes or a Dask cluster) and a results store
that keeps every finished point, so a killed scan resumes where it stopped."""
