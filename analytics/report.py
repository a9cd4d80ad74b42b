"""A campaign report: the ranking as CSV, Markdown and JSON, and the two PNGs.

>>> import tempfile
>>> from ramanscreen.tasks.results import write_run
>>> root = tempfile.mkdtemp()
>>> for name, d in (("A", 3e-5), ("B", 1e-6), ("C", 1e-9)):
...     _ = write_run(root, "demo", name, "r1", meta=dict(formula=name, temperature_k=300, n_atoms=8,
...         mlff="f", reference_method="ref", n_train=10),
...         spectrum={"freq_cm1": [0, 10, 20, 100, 200], "intensity": [0, d * 1e5, 1, 1, 1]},
...         transport=[{"species": "Na", "D_cm2_s": d}])
>>> paths = write_report(root, "demo")
>>> sorted(paths)
['ranking_csv', 'ranking_md', 'report_html', 'scatter_png', 'spectra_png', 'summary_json']
>>> print(paths["ranking_md"].read_text().splitlines()[2])
| 1 | A | 300 | Na | 3.00e-05 | — | 0.3 | — | liquid-like | yes | yes | — | — | f | — | — | — |
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from ramanscreen.analytics.db import connect
from ramanscreen.analytics.plots import scatter_cp_vs_d, spectra_overlay
from ramanscreen.analytics.ranking import RECORDED, RankSummary, Thresholds, common_thresholds, ranking, summarize
from ramanscreen.tasks.common import atomic_write

#: Columns of the CSV and Markdown ranking, in order: (key, header).
REPORT_COLUMNS = (
    ("rank", "rank"), ("material", "material"), ("temperature_k", "T (K)"), ("mobile_species", "ion"),
    ("D_cm2_s", "D (cm²/s)"), ("D_err_cm2_s", "±D"), ("metric_value", "central peak"), ("metric_err", "± block"),
    ("conduction", "conduction"), ("central_peak", "peak?"), ("consistent", "agrees"),
    ("r2_diag", "R² diag"), ("r2_offdiag", "R² off"), ("mlff", "MD by"), ("mlff_flagged", "MLFF flagged"),
    ("converged", "converged"), ("tied_with", "tied with"),
)


def fmt(key: str, value: Any) -> str:
    """Human formatting of one ranking cell.

    >>> fmt("D_cm2_s", 2.8e-05), fmt("metric_value", 0.41234), fmt("central_peak", True), fmt("x", None)
    ('2.80e-05', '0.412', 'yes', '—')
    >>> fmt("tied_with", ["AgI", "Na3PS4"]), fmt("tied_with", [])
    ('AgI, Na3PS4', '—')
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) or "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if key in ("D_cm2_s", "D_err_cm2_s", "sigma_S_cm"):
        return f"{value:.2e}"
    if key == "temperature_k":
        return f"{value:.0f}"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def ranking_markdown(rows: list[dict[str, Any]], summary: RankSummary, thresholds: Thresholds) -> str:
    """The ranking as a Markdown table, followed by the Spearman line and the thresholds."""
    metric = rows[0]["metric"] if rows else "cp_fraction"
    head = "| " + " | ".join(h for _, h in REPORT_COLUMNS) + " |"
    sep = "|" + "|".join("---" for _ in REPORT_COLUMNS) + "|"
    body = ["| " + " | ".join(fmt(k, r.get(k)) for k, _ in REPORT_COLUMNS) + " |" for r in rows]
    return "\n".join([head, sep, *body, "", summary.line(metric), "", thresholds.describe(metric), "",
                      *[x for line in reliability_lines(rows) for x in (line, "")], thresholds.describe_convergence(), ""])


def reliability_lines(rows: list[dict[str, Any]]) -> list[str]:
    """What the ranking table cannot show in a cell: which runs are tied (their order is not
    significant) and which are not converged, and why.

    >>> rows = [{"material": "A", "tied_with": ["B"], "converged": True, "convergence_note": ""},
    ...         {"material": "B", "tied_with": ["A"], "converged": False, "convergence_note": "D changed"}]
    >>> reliability_lines(rows)
    ['tied (cp_fraction intervals overlap; their order is not significant): A = B', 'not converged: B (D changed)']
    """
    from ramanscreen.analytics.ranking import tie_groups

    out = []
    groups = tie_groups(rows)
    if groups:
        out.append("tied (cp_fraction intervals overlap; their order is not significant): "
                   + "; ".join(" = ".join(g) for g in groups))
    bad = [f"{r['material']} ({r.get('convergence_note')})" for r in rows if r.get("converged") is False]
    if bad:
        out.append("not converged: " + "; ".join(bad))
    unknown = [r["material"] for r in rows if r.get("converged") is None and "converged" in r]
    if unknown:
        out.append("no convergence data: " + ", ".join(unknown))
    return out


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """A ranking row without the Thresholds object (its fields become columns)."""
    out = {k: v for k, v in row.items() if k != "thresholds"}
    thr = row.get("thresholds")
    if thr is not None:
        out.update({k: getattr(thr, k) for k in RECORDED})
    if isinstance(out.get("tied_with"), list):
        out["tied_with"] = ";".join(out["tied_with"])
    return out


def _csv(rows: list[dict[str, Any]]) -> str:
    import csv
    import io

    rows = [_plain(r) for r in rows]
    keys = list(rows[0]) if rows else [k for k, _ in REPORT_COLUMNS]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in keys})
    return buf.getvalue()


def write_report(
    results_root: str | os.PathLike[str],
    campaign: str | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    metric: str | None = None,
    thresholds: Thresholds | None = None,
) -> dict[str, Path]:
    """Rank ``campaign`` (all campaigns if None) and write the report files into ``out_dir``.

    ``metric`` and ``thresholds`` default to those the runs recorded (see
    :func:`ramanscreen.analytics.ranking.ranking`).

    ``out_dir`` defaults to ``<results_root>/reports/<campaign or "all">``. Returns the paths
    under the keys ``ranking_csv, ranking_md, summary_json, scatter_png, spectra_png, report_html``
    (the self-contained HTML report, :mod:`ramanscreen.analytics.html_report`). Every
    file is written atomically; re-running overwrites the same files.
    """
    con = connect(results_root)
    try:
        rows = ranking(con, campaign, metric=metric, thresholds=thresholds)
        summary = summarize(rows)
        used = common_thresholds(rows)
        out = Path(out_dir) if out_dir is not None else Path(results_root) / "reports" / (campaign or "all")
        out.mkdir(parents=True, exist_ok=True)
        paths = {
            "ranking_csv": out / "ranking.csv",
            "ranking_md": out / "ranking.md",
            "summary_json": out / "summary.json",
            "scatter_png": out / "central_peak_vs_D.png",
            "spectra_png": out / "spectra_overlay.png",
        }
        with atomic_write(paths["ranking_csv"], "w") as fh:
            fh.write(_csv(rows))
        with atomic_write(paths["ranking_md"], "w") as fh:
            fh.write(ranking_markdown(rows, summary, used))
        with atomic_write(paths["summary_json"], "w") as fh:
            json.dump({
                "campaign": campaign, "metric": used.metric, "n_runs": len(rows),
                "spearman_rho": summary.spearman_rho, "spearman_p": summary.spearman_p,
                "spearman_n": summary.n, "spearman_note": summary.note,
                "thresholds": {"d_liquid_cm2_s": used.d_liquid_cm2_s, "d_hopping_cm2_s": used.d_hopping_cm2_s,
                               "cp_threshold": used.cp_threshold},
                "ranking": [_plain(r) for r in rows],
            }, fh, indent=2, default=str)
        scatter_cp_vs_d(rows, paths["scatter_png"], summary=summary, thresholds=used)
        spectra_overlay(con, rows, paths["spectra_png"])
    finally:
        con.close()
    from ramanscreen.analytics.html_report import write_html_report

    paths["report_html"] = write_html_report(results_root, campaign, out)
    return paths
