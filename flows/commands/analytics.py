"""``ramanscreen rank``, ``report`` and ``query``: DuckDB over the Parquet results."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ramanscreen.flows.cli import app

# Piped output (logs, tests) gets a wide console so the ranking columns are never truncated.
out = Console(highlight=False, soft_wrap=False, width=None if sys.stdout.isatty() else 200)

_CLASS_STYLE = {"liquid-like": "red", "hopping": "yellow", "non-conducting": "blue", "unknown": "dim"}


def _default_root() -> Path:
    from ramanscreen.tasks.settings import get_settings

    return get_settings().results_root


_RESULTS_ROOT = typer.Option(None, "--results-root", "-r",
                             help="Results root a campaign wrote (default: the `results_root` setting, ./results).")


def _thresholds_help(name: str) -> str:
    from ramanscreen.analytics.ranking import Thresholds
    from ramanscreen.tasks.schema import help_text

    return help_text(Thresholds, name, default_text="default: what each run was screened with, else {default}")


@app.command()
def rank(
    results_root: Path | None = _RESULTS_ROOT,
    campaign: str | None = typer.Option(None, "--campaign", help="Rank one campaign (default: all)."),
    metric: str | None = typer.Option(None, "--metric", help=_thresholds_help("metric")),
    d_liquid_cm2_s: float | None = typer.Option(None, "--d-liquid-cm2-s", help=_thresholds_help("d_liquid_cm2_s")),
    d_hopping_cm2_s: float | None = typer.Option(None, "--d-hopping-cm2-s", help=_thresholds_help("d_hopping_cm2_s")),
    cp_threshold: float | None = typer.Option(None, "--cp-threshold", help=_thresholds_help("cp_threshold")),
    converge_max_l2: float | None = typer.Option(None, "--converge-max-l2", help=_thresholds_help("converge_max_l2")),
    converge_max_cp_change: float | None = typer.Option(None, "--converge-max-cp-change",
                                                        help=_thresholds_help("converge_max_cp_change")),
    converge_max_D_rel_change: float | None = typer.Option(None, "--converge-max-d-rel-change",
                                                           help=_thresholds_help("converge_max_D_rel_change")),
    tie_sigmas: float | None = typer.Option(None, "--tie-sigmas", help=_thresholds_help("tie_sigmas")),
    out_dir: Path | None = typer.Option(
        None, "--out-dir", help="Where to write ranking.csv/.md, summary.json and the PNGs "
                                "(default: <results_root>/reports/<campaign or all>)."
    ),
) -> None:
    """Rank materials by Raman central-peak intensity against the mobile ion's diffusivity D.

    Each run is classified by D of its mobile species (liquid-like, hopping, non-conducting) and
    shows a central peak when its metric reaches cp_threshold; "agrees" says whether liquid-like
    goes with a central peak. The metric and thresholds are those each run was screened with
    (its campaign's [ranking]); the options override them. "converged" says whether the run's
    spectrum, cp_fraction and D hold at half the trajectory and half N_T (a run that does not is
    flagged, and listed under the table with the reason); "tied with" lists the runs whose
    cp_fraction intervals (± block standard errors) overlap.

    Prints the table and the Spearman correlation of the metric with D; writes a scatter PNG (log D axis) and a stacked spectra overlay with the low-frequency region magnified.

    Schemas and thresholds: docs/results.md.
    """
    import dataclasses

    from ramanscreen.analytics.db import connect
    from ramanscreen.analytics.ranking import Thresholds, common_thresholds, ranking, summarize
    from ramanscreen.analytics.report import REPORT_COLUMNS, fmt, reliability_lines, write_report

    root = results_root if results_root is not None else _default_root()
    con = connect(root)
    try:
        thresholds = None
        given = {k: v for k, v in (("d_liquid_cm2_s", d_liquid_cm2_s), ("d_hopping_cm2_s", d_hopping_cm2_s),
                                   ("cp_threshold", cp_threshold), ("converge_max_l2", converge_max_l2),
                                   ("converge_max_cp_change", converge_max_cp_change),
                                   ("converge_max_D_rel_change", converge_max_D_rel_change),
                                   ("tie_sigmas", tie_sigmas)) if v is not None}
        if given:  # the options override what the runs recorded; the rest comes from the runs
            base = common_thresholds(ranking(con, campaign, metric=metric))
            thresholds = dataclasses.replace(base, **given, **({"metric": metric} if metric else {}))
        rows = ranking(con, campaign, metric=metric, thresholds=thresholds)
    finally:
        con.close()
    used = common_thresholds(rows) if rows else Thresholds()
    summary = summarize(rows)
    paths = write_report(root, campaign, out_dir, metric=used.metric, thresholds=thresholds)

    title = f"ranking of {campaign!r}" if campaign else "ranking of all campaigns"
    table = Table(title=title, title_justify="left")
    columns = list(REPORT_COLUMNS)
    if campaign is None and len({r["campaign"] for r in rows}) > 1:
        columns.insert(1, ("campaign", "campaign"))
    for key, header in columns:
        # numbers never truncated ("4.42e-…"): on a narrow terminal the long labels (the MD label) wrap instead
        table.add_column(header, justify="right" if key not in ("material", "campaign", "conduction", "mobile_species", "tied_with")
                         else "left",
                         no_wrap=key not in ("mlff", "material", "campaign", "tied_with"))
    cells_by_row = []
    for r in rows:
        cells = [escape(fmt(k, r.get(k))) for k, _ in columns]
        idx = [k for k, _ in columns].index("conduction")
        cells[idx] = f"[{_CLASS_STYLE.get(r['conduction'], 'default')}]{cells[idx]}[/]"
        if r.get("converged") is False:  # flagged, not silently ranked
            k = [k for k, _ in columns].index("converged")
            cells[k] = f"[bold red]{cells[k]}[/]"
        table.add_row(*cells)
        cells_by_row.append(cells)
    if _needed_width(columns, cells_by_row) <= out.width:
        out.print(table)
    else:  # too narrow for a row per material: one column per material, every value whole
        for t in _transposed(title, columns, cells_by_row, out.width):
            out.print(t)
    out.print(summary.line(used.metric))
    out.print(f"[dim]{used.describe()}[/]")
    for line in reliability_lines(rows):
        out.print(escape(line))
    out.print(f"[dim]{escape(used.describe_convergence())}[/]")
    windows = sorted({(r.get("cp_lo_cm1"), r.get("cp_hi_cm1"), r.get("cp_top_cm1")) for r in rows
                      if r.get("cp_hi_cm1") is not None})
    if used.metric == "cp_fraction" and windows:
        out.print("[dim]cp_fraction windows (each run's own): " + "; ".join(
            f"{lo:g}–{hi:g} of {lo:g}–{top:g} cm⁻¹" for lo, hi, top in windows) + "[/]")
    out.print(f"scatter: {paths['scatter_png']}")
    out.print(f"spectra: {paths['spectra_png']}")
    out.print(f"table:   {paths['ranking_csv']}")
    out.print(f"report:  {paths['report_html']}")


def _needed_width(columns: list[tuple[str, str]], cells_by_row: list[list[str]]) -> int:
    """Terminal columns the row-per-material table needs to show every number whole (headers and
    the MD label may wrap at spaces)."""
    need = 1
    for j, (key, header) in enumerate(columns):
        cells = [Text.from_markup(r[j]).plain for r in cells_by_row]
        words = [w for c in [header, *(cells if key == "mlff" else [])] for w in c.split()]
        whole = [] if key == "mlff" else cells
        need += max([len(w) for w in words] + [len(c) for c in whole] + [1]) + 3
    return need


def _transposed(title: str, columns: list[tuple[str, str]], cells_by_row: list[list[str]], width: int) -> list[Table]:
    """The ranking as tables of one column per material (as many materials side by side as
    ``width`` holds), for a terminal too narrow for a row per material."""
    keys = [k for k, _ in columns]
    header_w = max(len(h) for _, h in columns) + 3
    # the numbers set the width (never cut); the long MD label wraps
    value_w = max([len(Text.from_markup(c).plain) for cells in cells_by_row
                   for k, c in zip(keys, cells, strict=True) if k != "mlff"] + [8]) + 3
    per = max(1, (width - header_w) // value_w)
    tables = []
    for start in range(0, len(cells_by_row), per):
        part = range(start, min(start + per, len(cells_by_row)))
        t = Table(title=title if start == 0 else None, title_justify="left")
        t.add_column("", justify="left", no_wrap=True)
        for i in part:
            t.add_column(f"#{i + 1}", justify="right")
        for j, (key, header) in enumerate(columns):
            if key == "rank":
                continue
            t.add_row(header, *(cells_by_row[i][j] for i in part))
        tables.append(t)
    return tables


@app.command()
def report(
    results_root: Path | None = _RESULTS_ROOT,
    campaign: str | None = typer.Option(None, "--campaign", help="Report one campaign (default: all)."),
    out_dir: Path | None = typer.Option(None, "--out-dir", help="Where to write report.html "
                                        "(default: <results_root>/reports/<campaign or all>)."),
) -> None:
    """Write the campaign's self-contained HTML report (figures embedded) and print its path.

    Ranking with provenance (MLFF, α reference, N_T, trajectory length, cell, code version), the
    runs' known limits, and per material the spectrum (Fig. 3), VDOS (S2), MSD (S3) and the α
    model's metrics (Fig. 2); figures whose data the runs did not record are listed as such.
    """
    from ramanscreen.analytics.html_report import write_html_report
    from ramanscreen.tasks.common import InputError

    root = results_root if results_root is not None else _default_root()
    if not Path(root).is_dir():
        raise InputError(f"no results root at {root}", field="results_root",
                         fix="pass the --results-root a campaign wrote")
    out.print(f"report: {write_html_report(root, campaign, out_dir)}")


FORMATS = ("table", "csv", "json", "parquet")


@app.command()
def query(
    sql: str = typer.Argument(..., help='One SELECT over the views, e.g. "SELECT * FROM screening".'),
    results_root: Path | None = _RESULTS_ROOT,
    limit: int | None = typer.Option(None, "--limit", help="At most this many rows (default: 200 for the table "
                                     "format, all for the others)."),
    out_format: str = typer.Option("table", "--format", help=f"Output format: {' | '.join(FORMATS)} "
                                   "(parquet needs --out)."),
    out_file: Path | None = typer.Option(None, "--out", "-o", help="Write the result to this file instead of "
                                         "stdout (the format from --format, or the suffix .csv/.json/.parquet)."),
) -> None:
    """Run read-only SQL over the results views; print a table, or write CSV, JSON or Parquet.

    Views: materials, spectra, transport, descriptors, ml_metrics, msd, vdos, and the derived central_peak, mobile_transport, screening (docs/results.md).

    Only one SELECT (or EXPLAIN SELECT) runs; DELETE, COPY ... TO, CREATE, SET, INSTALL, ATTACH and the like are refused, and file access is confined to the results root.
    """
    from ramanscreen.analytics.db import check_read_only, connect, run_query
    from ramanscreen.tasks.common import InputError

    fmt = out_format.lower()
    if fmt == "table" and out_file is not None and out_file.suffix.lower().lstrip(".") in FORMATS:
        fmt = out_file.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise InputError(f"unknown format {out_format!r}", field="out_format", fix=f"use one of {', '.join(FORMATS)}")
    if fmt == "parquet" and out_file is None:
        raise InputError("Parquet is binary: it needs a file", field="out_file", fix="add --out result.parquet")
    check_read_only(sql)  # refuse before touching the results root
    root = results_root if results_root is not None else _default_root()
    con = connect(root)
    try:
        res = run_query(con, sql, limit=limit if limit is not None else (200 if fmt == "table" else None))
    finally:
        con.close()
    if fmt == "table":
        table = Table(show_lines=False)
        for c in res.columns:
            table.add_column(c)
        for row in res.rows:
            table.add_row(*[_cell(v) for v in row])
        console = out if out_file is None else Console(file=open(out_file, "w", encoding="utf-8"),  # noqa: SIM115
                                                       width=200, highlight=False)
        console.print(table)
        note = f"{len(res.rows)} row{'s' if len(res.rows) != 1 else ''}"
        if res.truncated:
            note += " shown (more exist; raise --limit or add LIMIT/aggregates)"
        out.print(f"[dim]{note}[/]")
        if out_file is not None:
            console.file.close()
        return
    text = export_rows(res.columns, res.rows, fmt, out_file)
    if text is not None:
        sys.stdout.write(text)
    else:
        out.print(f"[dim]wrote {len(res.rows)} rows to {out_file}[/]")
    if res.truncated:
        out.print("[dim](more rows exist: raise --limit)[/]", style=None)


def export_rows(columns: list[str], rows: list[tuple[Any, ...]], fmt: str, path: Path | None) -> str | None:
    """Rows as CSV, JSON (a list of objects) or Parquet: returned as text when ``path`` is None
    (not for Parquet), else written to ``path`` atomically."""
    import json

    import pyarrow as pa

    from ramanscreen.tasks.common import atomic_path, atomic_write

    table = pa.Table.from_pylist([dict(zip(columns, r, strict=True)) for r in rows]) if rows else \
        pa.table({c: pa.array([], type=pa.null()) for c in columns})
    if fmt == "parquet":
        import pyarrow.parquet as pq

        assert path is not None
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)
        return None
    if fmt == "csv":
        import io

        import pyarrow.csv as pacsv

        buf = io.BytesIO()
        pacsv.write_csv(table, buf)
        text = buf.getvalue().decode()
    else:
        text = json.dumps(_nan_to_none(table.to_pylist()), indent=1, default=str) + "\n"  # JSON has no NaN
    if path is None:
        return text
    with atomic_write(path, "w") as fh:
        fh.write(text)
    return None


def _nan_to_none(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    import math

    return [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()} for r in rows]


def _cell(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.6g}"
    text = str(v)
    return escape(text if len(text) <= 120 else text[:117] + "...")


results_app = typer.Typer(no_args_is_help=True, add_completion=False, rich_markup_mode="rich")
app.add_typer(results_app, name="results", help="Maintain a results root (garbage-collect superseded files).")


@results_app.command("vacuum")
def vacuum_cmd(results_root: Path | None = _RESULTS_ROOT) -> None:
    """Delete data files superseded longer than the readers' grace period, and crashed writes' leftovers.

    Writers already do this for the run they write; vacuum does it for every run of the root
    (e.g. after a campaign stopped re-running some materials)."""
    from ramanscreen.analytics.db import check_results_root
    from ramanscreen.tasks.results import STALE_GRACE_S, vacuum

    root = check_results_root(results_root if results_root is not None else _default_root())
    done = vacuum(root)
    out.print(f"{root}: removed {done['removed']} superseded data files (older than {STALE_GRACE_S:g} s "
              f"since superseded), kept {done['kept']}")
