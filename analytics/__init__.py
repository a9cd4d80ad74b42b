"""DuckDB views over the Parquet results, ranking, plots and reports.

- :mod:`ramanscreen.analytics.db` — ``connect(results_root)``, ``run_query(con, sql)``; the views live in
  ``analytics/views.sql``;
- :mod:`ramanscreen.analytics.ranking` — ``ranking(con, campaign)``, ``summarize(rows)``, ``Thresholds``;
- :mod:`ramanscreen.analytics.plots` — central peak vs D scatter, Fig. 3-style spectra overlay;
- :mod:`ramanscreen.analytics.report` — ``write_report(results_root, campaign, out_dir)``.

See docs/results.md.
"""
