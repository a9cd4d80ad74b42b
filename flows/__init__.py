"""Orchestration: Prefect flows, Dask cluster set-up and the ``ramanscreen`` CLI."""
