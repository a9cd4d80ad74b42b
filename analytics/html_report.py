"""The campaign report as one self-contained HTML page: figures embedded as PNGs, the ranking
with its provenance, and the run's known limits stated plainly.

Written at the end of every campaign (beside the ranking files of
:func:`ramanscreen.analytics.report.write_report`) and by ``ramanscreen report``. Everything
comes from the committed results (the SQL views), so the page shows what the Parquet holds and
nothing else. Per material it has the equivalents of the paper's figures that the results
carry:

* Fig. 3 — the Raman spectrum, with the ML committee band and the central-peak window shaded;
* Fig. S2 — the atom-resolved VDOS; Fig. S3 — the MSD per species;
* Fig. 2 — the α model's test metrics (R², RMSE of the diagonal and off-diagonal components);
* from the ``convergence`` and ``convergence_spectra`` tables (:mod:`ramanscreen.tasks.convergence`):
  Figs. S5–S8 — the spectra of the α model refitted on ¼, ½ and all of N_T, overlaid; Figs.
  S9–S12 — the spectra of the first ¼, ½ and all of the trajectory; Fig. 2A / S4 — the learning
  curve, test RMSE of the refits against N_T; the convergence rows as a table, with the
  ranking's ``converged`` flag and its reason.

A figure whose data the run did not record (parity points, the ML-vs-reference spectrum, force
parity against DFT; the convergence figures of a run written without them) is listed under "Not
in this report" with the reason, never drawn from anything else. Every number that does not
come from DFPT or DFT is labelled with its source (the ``mlff`` and ``reference_method`` columns).

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
from ramanscreen.tasks.convergence import LENGTH, TRAINING

#: The paper's production settings, against which a run's limits are stated.
PAPER_PRODUCTION_PS = 100.0
PAPER_N_TRAIN = 300
#: Figures of the paper whose data a run does not record yet: (figure, what it needs).
NOT_RECORDED = (
    ("Fig. 2B/2C parity plots", "per-frame reference and predicted α (not stored in the results)"),
    ("Fig. 2D ML vs reference spectrum", "a reference α(t) series over the trajectory (only N_T snapshots have one)"),
    ("Fig. S1 force parity against DFT", "MLFF forces against DFT on held-out frames (a distilled potential's "
     "errors against its teacher are in the mlff_validation rows above, where the run has them)"),
)
LEARNING_CURVE = "learning_curve"
#: The convergence figures drawn from the ``convergence`` tables, by test (and the learning curve):
#: (figure, what it needs). A run without that data lists them under "Not in this report".
CONVERGENCE_FIGURES = {
    TRAINING: ("Figs. S5–S8 spectra against N_T",
               "spectra of the α model refitted on training subsets (convergence_spectra, test training_set)"),
    LENGTH: ("Figs. S9–S12 spectra against trajectory length",
             "spectra of sub-trajectories (convergence_spectra, test trajectory_length)"),
    LEARNING_CURVE: ("Fig. 2A / S4 learning curves",
                     "test RMSE of the refitted α models against N_T (convergence.rmse_diag_A3 / rmse_offdiag_A3; "
                     "null when the model had no test frames)"),
}
_FRACTION_NAMES = {0.25: "¼", 0.5: "½", 1.0: "full"}
_CONVERGENCE = (("test", "test"), ("fraction_name", "fraction"), ("n_train", "N_T"), ("duration_ps", "α series (ps)"),
                ("spectrum_l2_change", "spectrum L2 change"), ("cp_fraction", "cp_fraction"),
                ("cp_fraction_change", "Δcp_fraction"), ("species", "ion"), ("D_cm2_s", "D (cm²/s)"),
                ("D_change", "ΔD (cm²/s)"), ("rmse_diag_A3", "test RMSE diag (Å³)"),
                ("rmse_offdiag_A3", "test RMSE off-diag (Å³)"), ("note", "note"))
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


def _fraction_name(fraction: float) -> str:
    return next((v for k, v in _FRACTION_NAMES.items() if abs(k - fraction) < 1e-9), f"{fraction:g}")


def _num(value: Any, spec: str = ".3g") -> str:
    """``value`` formatted with ``spec``, or "—" when null or not finite."""
    if value is None or not math.isfinite(float(value)):
        return "—"
    return format(float(value), spec)


def _subset_label(test: str, row: dict[str, Any]) -> str:
    """``¼ N_T (35)`` / ``first ½ (30 ps)``, ``all N_T (140)`` / ``full run (60 ps)``."""
    f = float(row["fraction"])
    if test == TRAINING:
        n = "" if row.get("n_train") is None else f" ({int(row['n_train'])})"
        return f"all N_T{n}" if f >= 1.0 else f"{_fraction_name(f)} N_T{n}"
    ps = "" if row.get("duration_ps") is None else f" ({_num(row['duration_ps'])} ps)"
    return f"full run{ps}" if f >= 1.0 else f"first {_fraction_name(f)}{ps}"


def _change_text(row: dict[str, Any]) -> str:
    return (f"spectrum L2 change {_num(row.get('spectrum_l2_change'))}, "
            f"cp_fraction change {_num(row.get('cp_fraction_change'), '+.3g')}")


def _convergence_spectra_png(r: dict[str, Any], test: str, rows: list[dict[str, Any]],
                             spectra: dict[str, np.ndarray]) -> tuple[str | None, str]:
    """The overlaid spectra of one test (Figs. S5–S8 or S9–S12) and their caption's changes.

    Every spectrum is divided by the same number (the full one's maximum in the plotted range),
    so the traces keep the full run's relative scale; the ω → 0 bin (below the run's
    ``cp_lo_cm1``) is left out, the central-peak window shaded."""
    in_test = spectra["test"] == test
    if not in_test.any():
        return None, ""
    f_all = spectra["freq_cm1"].astype(float)
    y_all = spectra["intensity"].astype(float)
    fr_all = spectra["fraction"].astype(float)
    grid = np.unique(f_all[in_test])
    lo = r.get("cp_lo_cm1") or float(grid[min(1, grid.size - 1)])  # else: above the ω = 0 bin
    top = float(min(r.get("cp_top_cm1") or math.inf, f_all[in_test].max()))  # the α sampling's Nyquist may be lower
    shown = in_test & (f_all >= lo) & (f_all <= top)
    ref = shown & (fr_all >= 1.0)
    peak = float(y_all[ref].max()) if ref.any() else float(y_all[shown].max()) if shown.any() else 0.0
    scale = peak if peak > 0 else 1.0
    by_fraction = {float(row["fraction"]): row for row in rows if row.get("test") == test}
    fig = new_figure(figsize=(6.4, 3.2), layout="constrained")
    ax = fig.subplots()
    if r.get("cp_hi_cm1") is not None:
        ax.axvspan(lo, r["cp_hi_cm1"], color="0.88", zorder=0, label="central-peak window")
    widths = {1.0: 1.4}
    for k, fr in enumerate(sorted({float(x) for x in fr_all[in_test]})):  # a handful of fractions
        sel = shown & np.isclose(fr_all, fr)
        row = by_fraction.get(fr, {"fraction": fr})
        label = _subset_label(test, row)
        if fr < 1.0:
            label += f": L2 {_num(row.get('spectrum_l2_change'))}, Δcp {_num(row.get('cp_fraction_change'), '+.3g')}"
        ax.plot(f_all[sel], y_all[sel] / scale, lw=widths.get(fr, 1.0), color="k" if fr >= 1.0 else f"C{k}",
                label=label, zorder=3 if fr >= 1.0 else 2)
    ax.set_xlim(0, top)
    ax.set_xlabel("Raman shift (cm⁻¹)")
    ax.set_ylabel("intensity (full run's maximum = 1)")
    ax.legend(fontsize=7)
    fig_name = "Figs. S5–S8" if test == TRAINING else "Figs. S9–S12"
    what = "the α model refitted on training subsets" if test == TRAINING else "sub-trajectories"
    ax.set_title(f"{r['material']}: spectra of {what} ({fig_name})", fontsize=9)
    changes = "; ".join(
        f"{_subset_label(test, row)}: " + (_change_text(row) if row.get("spectrum_l2_change") is not None
                                          else f"no spectrum ({row.get('note') or 'not computed'})")
        for fr, row in sorted(by_fraction.items()) if fr < 1.0)
    return _png(fig), changes


def _learning_curve_png(r: dict[str, Any], rows: list[dict[str, Any]]) -> tuple[str | None, str, str]:
    """Test RMSE of the refitted α models against N_T (Fig. 2A / S4): the image, the values for
    the caption and the omitted points (null RMSE)."""
    pts = sorted((row for row in rows if row.get("test") == TRAINING and row.get("n_train") is not None),
                 key=lambda row: float(row["fraction"]))
    if not pts:
        return None, "", ""

    def ok(v: Any) -> bool:
        return v is not None and math.isfinite(float(v))

    n = np.array([float(p["n_train"]) for p in pts])
    series = {key: np.array([float(p[key]) if ok(p.get(key)) else np.nan for p in pts])
              for key in ("rmse_diag_A3", "rmse_offdiag_A3")}
    if not any(np.isfinite(v).any() for v in series.values()):
        return None, "", ""
    fig = new_figure(figsize=(4.6, 3.0), layout="constrained")
    ax = fig.subplots()
    for key, label, marker in (("rmse_diag_A3", "diagonal", "o"), ("rmse_offdiag_A3", "off-diagonal", "s")):
        keep = np.isfinite(series[key])
        ax.plot(n[keep], series[key][keep], marker=marker, lw=1.0, label=label)
    ax.set_xlabel("N_T (training structures)")
    ax.set_ylabel("test RMSE of α (Å³)")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7)
    ax.set_title(f"{r['material']}: learning curve (Fig. 2A / S4)", fontsize=9)
    values = "; ".join(f"N_T = {int(p['n_train'])}: diagonal {_num(p.get('rmse_diag_A3'))}, "
                       f"off-diagonal {_num(p.get('rmse_offdiag_A3'))} Å³" for p in pts)
    omitted = "; ".join(f"{name} at N_T = {int(p['n_train'])}" for p in pts
                        for key, name in (("rmse_diag_A3", "diagonal"), ("rmse_offdiag_A3", "off-diagonal"))
                        if not ok(p.get(key)))
    return _png(fig), values, omitted


def _convergence_section(con: Any, r: dict[str, Any], meta: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The convergence part of one material (figures, table, flag) and the keys of
    :data:`CONVERGENCE_FIGURES` it could not draw."""
    cur = con.execute("SELECT * FROM convergence WHERE campaign = $1 AND material = $2 AND run_id = $3 "
                      "ORDER BY test, fraction", list(_key(r)))
    names = [c[0] for c in cur.description]
    rows = [dict(zip(names, rec, strict=True)) for rec in cur.fetchall()]
    spectra = _fetch(con, "SELECT test, fraction, freq_cm1, intensity FROM convergence_spectra WHERE campaign = $1 "
                          "AND material = $2 AND run_id = $3 ORDER BY test, fraction, freq_cm1", _key(r))
    mat = str(r["material"])
    ref = str(meta.get("reference_method") or "reference not recorded")
    mlff = str(meta.get("mlff") or "not recorded")
    out = ["<h4>Convergence</h4>"]
    conv = r.get("converged")
    out.append(f"<p>converged (ranking, checked at ½ the trajectory and ½ N_T): {html.escape(fmt('converged', conv))}"
               f" — {html.escape(str(r.get('convergence_note') or ''))}</p>")
    missing: list[str] = []
    for test, fig_name, what in ((TRAINING, "Figs. S5–S8", "the α model refitted on ¼, ½ and all of N_T"),
                                 (LENGTH, "Figs. S9–S12", "the first ¼, ½ and all of the trajectory")):
        uri, changes = _convergence_spectra_png(r, test, rows, spectra)
        if uri is None:
            missing.append(test)
            out.append(f"<p>{html.escape(f'{mat}: spectra of {what} ({fig_name} equivalent)')}: "
                       "not recorded by this run</p>")
            continue
        source = (f"same α frames; models fitted to {ref} references" if test == TRAINING
                  else f"same α model, fitted to {ref} references")
        out.append(_img(uri, f"{mat}: Raman spectra of {what} ({fig_name} equivalent; {source}; MD by {mlff}); "
                             f"{changes or 'no subset rows'}"))
    uri, values, omitted = _learning_curve_png(r, rows)
    if uri is None:
        missing.append(LEARNING_CURVE)
        out.append(f"<p>{html.escape(f'{mat}: learning curve (Fig. 2A / S4 equivalent)')}: not recorded by this run "
                   "(no test RMSE of the refitted models)</p>")
    else:
        tail = f"; omitted (RMSE null): {omitted}" if omitted else ""
        out.append(_img(uri, f"{mat}: learning curve (Fig. 2A / S4 equivalent): test RMSE of α against N_T on the α "
                             f"model's test frames, against {ref}: {values}{tail}"))
    if rows:
        shown = [{**row, "fraction_name": _fraction_name(float(row["fraction"])),
                  "D_change": None if row.get("D_change_cm2_s") is None else f"{row['D_change_cm2_s']:+.2e}"}
                 for row in rows]
        out.append(_table(shown, _CONVERGENCE))
    return out, missing


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
        without: dict[str, list[str]] = {}  # CONVERGENCE_FIGURES key -> the materials without its data
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
            section, missed = _convergence_section(con, r, meta)
            figures += section
            for k in missed:
                without.setdefault(k, []).append(str(r["material"]))
        parts += ["<h2>Known limits of these runs</h2>",
                  "<ul class=limits>" + "".join(f"<li>{html.escape(x)}</li>" for x in limits) + "</ul>"
                  if limits else "<p>none recorded</p>",
                  "<h2>Figures per material</h2>", *figures, "<h2>Not in this report</h2><ul>",
                  *(f"<li>{html.escape(f)}: needs {html.escape(why)}</li>" for f, why in NOT_RECORDED),
                  *(f"<li>{html.escape(f)}: needs {html.escape(why)}; not recorded by "
                    f"{html.escape(', '.join(without[k]))}</li>"
                    for k, (f, why) in CONVERGENCE_FIGURES.items() if k in without), "</ul>"]
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
