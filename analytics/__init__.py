"""DuckDB views over the Parquet results, ranking, plots and reports.

- :mod:`analytics.db` — ``connect(results_root)``, ``run_query(con, sql)``; the views live in
  ``analytics/views.sql``;
- :mod:`analytics.ranking` — ``ranking(con, campaign)``, ``summarize(rows)``, ``Thresholds``;
- :mod:`analytics.plots` — central peak vs D scatter, Fig. 3-style spectra overlay;
- :mod:`analytics.report` — ``write_report(results_root, campaign, out_dir)``.

See docs/results.md.
"""
