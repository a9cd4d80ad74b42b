"""The campaign report as one self-contained HTML page: figures embedded as PNGs, the ranking
with its provenance, and the run's known limits stated plainly.

Written at the end of every campaign (beside the ranking files of
:func:`ramanscreen.analytics.report.write_report`) and by ``ramanscreen report``. Everything
comes from the committed results (the SQL views), so the page shows what the Parquet holds and
nothing else. Per material it has the equivalents of the paper's figures that the results
carry:

* Fig. 3 — the Raman spectrum, with the ML committee band and the central-peak window shaded;
* Fig. S2 — the atom-resolved VDOS; Fig. S3 — the MSD per species;
* Fig. 2 — the α model's test metrics (R², RMSE of the diagonal and off-diagonal components).

A figure whose data the run did not record (parity points, learning curves, spectra against
N_T or trajectory length) is listed under "Not in this report" with the reason, never drawn
from anything else. Every number that does not come from DFPT or DFT is labelled with its
source (the ``mlff`` and ``reference_method`` columns).

>>> import tempfile
>>> from ramanscreen.tasks.results import write_run
>>> root = tempfile.mkdtemp()
>>> _ = write_run(root, "demo", "A", "r1", meta=dict(formula="A", temperature_k=300, n_atoms=8, mlff="f",
...     reference_method="thole-dipole-model (embedded, not DFPT)", n_train=10, md_production_ps=4.0),
...     spectrum={"freq_cm1": [0, 10, 20, 100, 200], "intensity": [0, 3, 1, 1, 1]},
...     transport=[{"species": "Na", "D_cm2_s": 3e-5}])
>>> page = write_html_report(root, "demo")
>>> text = page.read_text()
>>> "data:image/png;base64," in text and "not DFPT" in text and "shorter than the paper" in text
True
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ramanscreen.analytics.db import connect
from ramanscreen.analytics.report import REPORT_COLUMNS, fmt, reliability_lines
from ramanscreen.tasks.common import CM1_PER_INV_FS, atomic_write, new_figure

#: The paper's production settings, against which a run's limits are stated.
PAPER_PRODUCTION_PS = 100.0
PAPER_N_TRAIN = 300
#: Figures of the paper whose data a run does not record yet: (figure, what it needs).
NOT_RECORDED = (
    ("Fig. 2A / S4 learning curves", "test error against N_T (the results hold only the final model's metrics)"),
    ("Fig. 2B/2C parity plots", "per-frame reference and predicted α (not stored in the results)"),
    ("Fig. 2D ML vs reference spectrum", "a reference α(t) series over the trajectory (only N_T snapshots have one)"),
    ("Fig. S1 force parity against DFT", "MLFF forces against DFT on held-out frames (a distilled potential's "
     "errors against its teacher are in the mlff_validation rows above, where the run has them)"),
    ("Figs. S5–S12 spectra against N_T and trajectory length", "spectra of sub-trajectories and training subsets"),
)
_PROVENANCE = (("mlff", "MLFF (MD forces)"), ("md_engine", "MD engine"), ("reference_method", "α reference"),
               ("n_train", "N_T"), ("md_production_ps", "production (ps)"), ("md_dt_fs", "dt (fs)"),
               ("n_atoms", "atoms"), ("phase", "phase"), ("structure", "structure"),
               ("npt_equilibrated", "NPT first"), ("density_g_cm3", "density (g/cm³)"), ("pressure_gpa", "P (GPa)"),
               ("code_version", "code version"))
_VALIDATION = (("species", "species"), ("method", "potential"), ("teacher", "teacher"),
               ("force_rmse_eV_A", "force RMSE (eV/Å)"), ("energy_rmse_meV_atom", "energy RMSE (meV/atom)"),
               ("flagged", "flagged"), ("D_teacher_cm2_s", "D teacher (cm²/s)"),
               ("D_distilled_cm2_s", "D distilled (cm²/s)"), ("vdos_overlap", "VDOS overlap"))


def _key(row: dict[str, Any]) -> tuple[str, str, str]:
    return row["campaign"], row["material"], row["run_id"]


def _records(con: Any, view: str, campaign: str | None, *, order: str | None = None) -> list[dict[str, Any]]:
    """Every row of ``view`` (of ``campaign``, if given) as a dict."""
    where = "WHERE campaign = $1" if campaign is not None else ""
    cur = con.execute(f"SELECT * FROM {view} {where} {f'ORDER BY {order}' if order else ''}",
                      [campaign] if campaign is not None else [])
    names = [c[0] for c in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _img(uri: str, alt: str) -> str:
    return f'<figure><img src="{uri}" alt="{html.escape(alt)}"><figcaption>{html.escape(alt)}</figcaption></figure>'


def _fetch(con: Any, sql: str, key: tuple[str, str, str]) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in con.execute(sql, list(key)).fetchnumpy().items()}


def _spectrum_png(con: Any, r: dict[str, Any]) -> str | None:
    d = _fetch(con, "SELECT freq_cm1, intensity, band_low, band_high FROM spectra WHERE campaign = $1 AND "
                    "material = $2 AND run_id = $3 ORDER BY freq_cm1", _key(r))
    f = d["freq_cm1"].astype(float)
    if f.size == 0:
        return None
    y = d["intensity"].astype(float)
    fig = new_figure(figsize=(6.4, 3.0), layout="constrained")
    ax = fig.subplots()
    lo = r.get("cp_lo_cm1") or (float(f[1]) if f.size > 1 else 0.0)
    keep = f >= lo
    scale = float(np.max(y[keep])) if keep.any() and np.max(y[keep]) > 0 else 1.0
    ax.plot(f[keep], y[keep] / scale, color="k", lw=1.0, label="ML-predicted")
    band_low, band_high = d["band_low"], d["band_high"]
    if band_low.dtype.kind == "f" and np.isfinite(band_low).any():
        ax.fill_between(f[keep], band_low.astype(float)[keep] / scale, band_high.astype(float)[keep] / scale,
                        color="C0", alpha=0.3, lw=0, label="committee band")
    if r.get("cp_hi_cm1") is not None:
        ax.axvspan(lo, r["cp_hi_cm1"], color="0.85", zorder=0, label="central-peak window")
    ax.set_xlabel("Raman shift (cm⁻¹)")
    ax.set_ylabel("intensity (normalised)")
    ax.set_xlim(0, float(r.get("cp_top_cm1") or f[-1]))
    ax.legend(fontsize=7)
    ax.set_title(f"{r['material']}: Raman spectrum (Fig. 3)", fontsize=9)
    return _png(fig)


def _per_species_png(con: Any, r: dict[str, Any], table: str, x: str, y: str, *, loglog: bool, title: str,
                     xlabel: str, ylabel: str) -> str | None:
    d = _fetch(con, f"SELECT species, {x}, {y} FROM {table} WHERE campaign = $1 AND material = $2 AND run_id = $3 "
                    f"ORDER BY species, {x}", _key(r))
    if d["species"].size == 0:
        return None
    fig = new_figure(figsize=(4.6, 3.0), layout="constrained")
    ax = fig.subplots()
    for sp in np.unique(d["species"]):
        sel = (d["species"] == sp) & (d[x].astype(float) > 0 if loglog else True)
        ax.plot(d[x][sel].astype(float), d[y][sel].astype(float), lw=1.0, label=str(sp))
    if loglog:
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    ax.set_title(f"{r['material']}: {title}", fontsize=9)
    return _png(fig)


def known_limits(meta: dict[str, Any]) -> list[str]:
    """The plain-language limits of one run, from what it recorded.

    >>> known_limits({"reference_method": "thole-dipole-model (embedded, not DFPT)", "n_train": 60,
    ...               "md_production_ps": 4.0, "mlff": "chgnet"})[0]
    'α reference: thole-dipole-model (embedded, not DFPT) — an embedded model, not DFPT'
    """
    out = []
    ref = str(meta.get("reference_method") or "")
    if "not dfpt" in ref.lower() or "embedded" in ref.lower():
        out.append(f"α reference: {ref} — an embedded model, not DFPT")
    mlff = str(meta.get("mlff") or "")
    if mlff:
        low = mlff.lower()
        kind = ("a distilled potential, not DFT" if "distil" in low or "snap" in low
                else "a universal pretrained MLFF, not fitted to this material's DFT" if "chgnet" in low
                else "not validated against DFT in this run")
        out.append(f"MD forces: {mlff} — {kind}")
    ps = meta.get("md_production_ps")
    if ps is not None and math.isfinite(float(ps)) and float(ps) < PAPER_PRODUCTION_PS:
        bin_cm1 = CM1_PER_INV_FS / (float(ps) * 1000.0)  # 1 / T of the production run
        out.append(f"production {float(ps):g} ps, shorter than the paper's {PAPER_PRODUCTION_PS:g} ps: "
                   f"spectral bins of {bin_cm1:.1f} cm⁻¹, and D of slow hopping is not converged")
    n = meta.get("n_train")
    if n is not None and int(n) < PAPER_N_TRAIN:
        out.append(f"N_T = {int(n)} reference structures (the paper: {PAPER_N_TRAIN})")
    return out


def _table(rows: list[dict[str, Any]], columns: tuple[tuple[str, str], ...] | list[tuple[str, str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for _, h in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(fmt(k, r.get(k)))}</td>" for k, _ in columns) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_CSS = """body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #bbb;padding:3px 8px;font-size:13px;text-align:right}th{background:#eee}
figure{display:inline-block;margin:4px}img{max-width:100%}.limits li{color:#a30}h2{border-bottom:1px solid #ccc}"""


def write_html_report(results_root: str | os.PathLike[str], campaign: str | None = None,
                      out_dir: str | os.PathLike[str] | None = None) -> Path:
    """Write ``report.html`` for ``campaign`` (all campaigns if None); returns its path.

    ``out_dir`` defaults to ``<results_root>/reports/<campaign or "all">``; the file is written
    atomically and overwritten by a re-run.
    """
    from ramanscreen.analytics.ranking import common_thresholds, ranking, summarize

    con = connect(results_root)
    try:
        rows = ranking(con, campaign)
        summary = summarize(rows)
        used = common_thresholds(rows)
        metas = {_key(m): m for m in _records(con, "materials", campaign)}
        run_metas = [metas.get(_key(r), {}) for r in rows]
        parts = [f"<h1>ramanscreen report: {html.escape(campaign or 'all campaigns')}</h1>",
                 f"<p>{len(rows)} runs ranked by {html.escape(used.metric)} against D; "
                 f"{html.escape(summary.line(used.metric))}</p>",
                 f"<p>{html.escape(used.describe())}</p>", "<h2>Ranking</h2>", _table(rows, REPORT_COLUMNS),
                 *[f"<p>{html.escape(line)}</p>" for line in (*reliability_lines(rows), used.describe_convergence())],
                 "<h2>Provenance</h2>",
                 _table([{**meta, "material": r["material"]} for r, meta in zip(rows, run_metas, strict=True)],
                        [("material", "material"), *_PROVENANCE])]
        vrows = _records(con, "mlff_validation", campaign, order="material")
        if vrows:
            parts += ["<h2>Distilled potentials against their teacher (not DFT)</h2>",
                      _table(vrows, [("material", "material"), *_VALIDATION])]
        limits: list[str] = []
        figures: list[str] = []
        for r, meta in zip(rows, run_metas, strict=True):
            limits += [f"{r['material']}: {x}" for x in known_limits(meta)]
            if r.get("mlff_flagged"):
                from ramanscreen.tasks.mlff.snap import FORCE_RMSE_LIMIT_EV_A

                limits.append(f"{r['material']}: the distilled potential is flagged (held-out force RMSE above "
                              f"{FORCE_RMSE_LIMIT_EV_A:g} eV/Å against its teacher): its MD numbers are less reliable")
            key = _key(r)
            imgs = [(_spectrum_png(con, r), f"{r['material']}: Raman spectrum (Fig. 3 equivalent)"),
                    (_per_species_png(con, r, "vdos", "freq_cm1", "vdos", loglog=False, title="VDOS (Fig. S2)",
                                      xlabel="frequency (cm⁻¹)", ylabel="VDOS (arb.)"),
                     f"{r['material']}: atom-resolved VDOS (Fig. S2 equivalent)"),
                    (_per_species_png(con, r, "msd", "time_ps", "msd_A2", loglog=True, title="MSD (Fig. S3)",
                                      xlabel="lag time (ps)", ylabel="MSD (Å²)"),
                     f"{r['material']}: MSD per species (Fig. S3 equivalent)")]
            ml = con.execute("SELECT r2_diag, r2_offdiag, rmse_diag_A3, rmse_offdiag_A3 FROM ml_metrics WHERE "
                             "campaign = $1 AND material = $2 AND run_id = $3", list(key)).fetchall()
            figures.append(f"<h3>{html.escape(r['material'])} ({html.escape(str(r.get('conduction')))})</h3>")
            if ml:
                r2d, r2o, rd, ro = ml[0]
                figures.append(f"<p>α model on its test set (Fig. 2 metrics): R² diagonal {fmt('r2_diag', r2d)}, "
                               f"off-diagonal {fmt('r2_offdiag', r2o)}; RMSE {rd:.3g} / {ro:.3g} Å³ "
                               f"(against {html.escape(str(meta.get('reference_method')))})</p>")
            figures += [_img(uri, alt) for uri, alt in imgs if uri is not None]
            figures += [f"<p>{html.escape(alt)}: not recorded by this run</p>" for uri, alt in imgs if uri is None]
        parts += ["<h2>Known limits of these runs</h2>",
                  "<ul class=limits>" + "".join(f"<li>{html.escape(x)}</li>" for x in limits) + "</ul>"
                  if limits else "<p>none recorded</p>",
                  "<h2>Figures per material</h2>", *figures, "<h2>Not in this report</h2><ul>",
                  *(f"<li>{html.escape(f)}: needs {html.escape(why)}</li>" for f, why in NOT_RECORDED), "</ul>"]
    finally:
        con.close()
    out = Path(out_dir) if out_dir is not None else Path(results_root) / "reports" / (campaign or "all")
    out.mkdir(parents=True, exist_ok=True)
    page = out / "report.html"
    doc = (f"<!doctype html><html><head><meta charset=utf-8><title>ramanscreen report</title>"
           f"<style>{_CSS}</style></head><body>{''.join(parts)}</body></html>")
    with atomic_write(page, "w") as fh:
        fh.write(doc)
    return page
