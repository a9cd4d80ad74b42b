"""``ramanscreen rank`` and ``ramanscreen query``: DuckDB over the Parquet results."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ramanscreen.flows.cli import app

# Piped output (logs, tests) gets a wide console so the ranking columns are never truncated.
out = Console(highlight=False, soft_wrap=False, width=None if sys.stdout.isatty() else 200)

_CLASS_STYLE = {"liquid-like": "red", "hopping": "yellow", "non-conducting": "blue", "unknown": "dim"}


def _default_root() -> Path:
    from ramanscreen.tasks.settings import get_settings

    return get_settings().results_root


@app.command()
def rank(
    results_root: Path | None = typer.Argument(
        None, help="Results root a campaign wrote (default: the `results_root` setting, ./results)."
    ),
    campaign: str | None = typer.Option(None, "--campaign", "-c", help="Rank one campaign (default: all)."),
    metric: str = typer.Option(
        "cp_fraction", "--metric",
        help="Central-peak metric: cp_fraction (share of the Raman intensity in 5–1000 cm⁻¹ that lies in 5–50 cm⁻¹) "
             "or any column of the descriptors table.",
    ),
    d_liquid: float = typer.Option(5e-6, "--d-liquid", help="D (cm²/s) at or above which conduction is liquid-like."),
    d_hopping: float = typer.Option(
        1e-7, "--d-hopping", help="D (cm²/s) at or above which (below --d-liquid) it is hopping; below: non-conducting."
    ),
    cp_threshold: float = typer.Option(0.25, "--cp-threshold", help="Metric value at or above which a run shows a central peak."),
    out_dir: Path | None = typer.Option(
        None, "--out", help="Where to write ranking.csv/.md, summary.json and the PNGs "
                            "(default: <results_root>/reports/<campaign or all>)."
    ),
) -> None:
    """Rank materials by Raman central-peak intensity against the mobile ion's diffusivity D.

    Classes by D of the mobile species: liquid-like D ≥ 5e-6 cm²/s; hopping 1e-7 ≤ D < 5e-6; non-conducting D < 1e-7.

    A run shows a central peak when cp_fraction ≥ 0.25; "agrees" says whether liquid-like goes with a central peak.

    Prints the table and the Spearman correlation of the metric with D; writes a scatter PNG (log D axis) and a stacked spectra overlay with the low-frequency region magnified.

    Schemas and thresholds: docs/results.md.
    """
    from ramanscreen.analytics.db import connect
    from ramanscreen.analytics.ranking import Thresholds, ranking, summarize
    from ramanscreen.analytics.report import REPORT_COLUMNS, fmt, write_report

    root = results_root if results_root is not None else _default_root()
    thresholds = Thresholds(d_liquid_cm2_s=d_liquid, d_hopping_cm2_s=d_hopping, cp_threshold=cp_threshold)
    con = connect(root)
    try:
        rows = ranking(con, campaign, metric=metric, thresholds=thresholds)
    finally:
        con.close()
    summary = summarize(rows)
    paths = write_report(root, campaign, out_dir, metric=metric, thresholds=thresholds)

    title = f"ranking of {campaign!r}" if campaign else "ranking of all campaigns"
    table = Table(title=title, title_justify="left")
    columns = list(REPORT_COLUMNS)
    if campaign is None and len({r["campaign"] for r in rows}) > 1:
        columns.insert(1, ("campaign", "campaign"))
    for key, header in columns:
        table.add_column(header, justify="right" if key not in ("material", "campaign", "conduction", "mobile_species") else "left")
    for r in rows:
        cells = [escape(fmt(k, r.get(k))) for k, _ in columns]
        idx = [k for k, _ in columns].index("conduction")
        cells[idx] = f"[{_CLASS_STYLE.get(r['conduction'], 'default')}]{cells[idx]}[/]"
        table.add_row(*cells)
    out.print(table)
    out.print(summary.line(metric))
    out.print(f"[dim]{thresholds.describe(metric)}[/]")
    out.print(f"scatter: {paths['scatter_png']}")
    out.print(f"spectra: {paths['spectra_png']}")
    out.print(f"table:   {paths['ranking_csv']}")


@app.command()
def query(
    sql: str = typer.Argument(..., help='One SELECT over the views, e.g. "SELECT * FROM screening".'),
    results_root: Path | None = typer.Option(
        None, "--results-root", "-r", help="Results root (default: the `results_root` setting, ./results)."
    ),
    limit: int = typer.Option(200, "--limit", help="Print at most this many rows."),
) -> None:
    """Run read-only SQL over the results views and print a table.

    Views: materials, spectra, transport, descriptors, ml_metrics, msd, vdos, and the derived central_peak, mobile_transport, screening (docs/results.md).

    Only one SELECT (or EXPLAIN SELECT) runs; DELETE, COPY ... TO, CREATE, SET, INSTALL, ATTACH and the like are refused, and file access is confined to the results root.
    """
    from ramanscreen.analytics.db import check_read_only, connect, run_query

    check_read_only(sql)  # refuse before touching the results root
    root = results_root if results_root is not None else _default_root()
    con = connect(root)
    try:
        res = run_query(con, sql, limit=limit)
    finally:
        con.close()
    table = Table(show_lines=False)
    for c in res.columns:
        table.add_column(c)
    for row in res.rows:
        table.add_row(*[_cell(v) for v in row])
    out.print(table)
    note = f"{len(res.rows)} row{'s' if len(res.rows) != 1 else ''}"
    if res.truncated:
        note += " shown (more exist; raise --limit or add LIMIT/aggregates)"
    out.print(f"[dim]{note}[/]")


def _cell(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.6g}"
    text = str(v)
    return escape(text if len(text) <= 120 else text[:117] + "...")
