"""DuckDB views over the Parquet results, ranking, plots and reports."""
