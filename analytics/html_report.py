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
* from the ``alpha_parity`` table: Fig. 2B/2C — reference against predicted α of the model's
  test frames, diagonal and off-diagonal panels with their R² and RMSE;
* from the ``force_parity`` table (distilled potentials): Fig. S1 — held-out force components of
  the distilled potential against its teacher (not DFT), one colour per element, each element's
  RMSE over all held-out components in the legend;
* from the ``convergence`` and ``convergence_spectra`` tables (:mod:`ramanscreen.tasks.convergence`):
  Figs. S5–S8 — the spectra of the α model refitted on ¼, ½ and all of N_T, overlaid; Figs.
  S9–S12 — the spectra of the first ¼, ½ and all of the trajectory; Fig. 2A / S4 — the learning
  curve, test RMSE of the refits against N_T; the convergence rows as a table, with the
  ranking's ``converged`` flag and its reason.

* from the ``reference_spectrum`` table: Fig. 2D — the ML-predicted and the reference spectrum of
  the same α frames overlaid (log intensity), with their L2 difference and both cp_fractions,
  labelled with the reference method (not DFPT for the embedded model);

A figure whose data the run did not record (Fig. 2D of a run without a reference α series; the
parity and convergence figures of a run written without them) is listed under "Not in this report" with the
reason, never drawn from anything else. Every number that does not
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
NOT_RECORDED: tuple[tuple[str, str], ...] = ()
ALPHA_PARITY, FORCE_PARITY = "alpha_parity", "force_parity"
REFERENCE_SPECTRUM = "reference_spectrum"
#: Fig. 2D, drawn from the ``reference_spectrum`` table: (figure, what it needs). A run without its
#: rows lists it under "Not in this report", as :data:`PARITY_FIGURES` does.
REFERENCE_FIGURES = {
    REFERENCE_SPECTRUM: ("Fig. 2D ML vs reference spectrum",
                         "a reference α(t) series on the first α samples of the trajectory (reference_spectrum, "
                         "[reference] series_frames > 0: the default only for the embedded dipole model, 0 for the "
                         "DFT backends; none for a run written before that table)"),
}
#: The parity figures, by the table they are drawn from: (figure, what it needs). A run without
#: that table's rows lists them under "Not in this report", as :data:`CONVERGENCE_FIGURES` does.
PARITY_FIGURES = {
    ALPHA_PARITY: ("Fig. 2B/2C parity plots",
                   "reference and predicted α of the α model's test frames (alpha_parity; none for a run written "
                   "before that table or whose model had no test frames)"),
    FORCE_PARITY: ("Fig. S1 force parity",
                   "held-out force components of a distilled potential against its teacher (force_parity; none "
                   "when the MD ran on the calculator itself, whose forces are not compared with anything)"),
}
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


def _fetch_nullable(con: Any, sql: str, key: tuple[str, str, str]) -> dict[str, np.ndarray]:
    """Like :func:`_fetch`, with NULL kept: numbers as float arrays with NaN, others as object
    arrays with None."""
    out = {}
    for k, v in con.execute(sql, list(key)).fetchnumpy().items():
        ma = np.ma.asarray(v)
        out[k] = (np.ma.filled(ma.astype(float), np.nan) if ma.dtype.kind in "fiub"
                  else np.array(ma.tolist(), dtype=object))
    return out


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


def _alpha_parity_png(con: Any, r: dict[str, Any]) -> tuple[str, str] | None:
    """Fig. 2B/2C: reference against predicted α of the test frames, diagonal and off-diagonal
    panels with R² and RMSE recomputed from the rows (the recorded test metrics); the image and
    its caption, or None without rows."""
    from ramanscreen.tasks.parity import COMPONENT_NAMES, DIAGONAL, OFF_DIAGONAL, parity_metrics

    d = _fetch_nullable(con, "SELECT frame, component, kind, alpha_reference_A3, alpha_predicted_A3, alpha_committee_std_A3, "
                    "reference_method FROM alpha_parity WHERE campaign = $1 AND material = $2 AND run_id = $3 "
                    "ORDER BY frame, component", _key(r))
    if d["frame"].size == 0:
        return None
    m = parity_metrics(d)
    ref = ", ".join(sorted({str(x) for x in d["reference_method"] if x is not None}))
    t, p, comp, std = d["alpha_reference_A3"], d["alpha_predicted_A3"], d["component"], d["alpha_committee_std_A3"]
    fig = new_figure(figsize=(7.6, 3.6), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, kind, name, fig_name in ((axes[0], DIAGONAL, "diag", "2B"), (axes[1], OFF_DIAGONAL, "offdiag", "2C")):
        sel = d["kind"] == kind
        for k, c in enumerate(COMPONENT_NAMES):
            cs = sel & (comp == c)
            if not cs.any():
                continue
            if np.isfinite(std[cs]).any():
                ax.errorbar(t[cs], p[cs], yerr=np.nan_to_num(std[cs]), fmt="none", ecolor=f"C{k}", alpha=0.3, lw=0.6)
            ax.scatter(t[cs], p[cs], s=8, color=f"C{k}", alpha=0.7, label=c)
        if sel.any():
            lo, hi = float(min(t[sel].min(), p[sel].min())), float(max(t[sel].max(), p[sel].max()))
            pad = 0.05 * (hi - lo or 1.0)
            ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k-", lw=0.8)
            ax.legend(fontsize=7, loc="upper left")
        ax.text(0.97, 0.03, f"R² = {_num(m[f'r2_{name}'], '.3f')}\nRMSE = {_num(m[f'rmse_{name}_A3'])} Å³",
                transform=ax.transAxes, ha="right", va="bottom", fontsize=8,
                bbox={"facecolor": "white", "edgecolor": "0.7", "alpha": 0.9})
        ax.set_xlabel("reference α (Å³)")
        ax.set_ylabel("predicted α (Å³)")
        ax.set_title(f"{kind} (Fig. {fig_name})", fontsize=9)
    fig.suptitle(f"{r['material']}: α model on its test frames", fontsize=9)
    n_frames = len(np.unique(d["frame"]))
    caption = (f"{r['material']}: α parity (Fig. 2B/2C equivalent) on {n_frames} test frames, reference {ref}: "
               f"diagonal R² {_num(m['r2_diag'], '.3f')}, RMSE {_num(m['rmse_diag_A3'])} Å³; off-diagonal R² "
               f"{_num(m['r2_offdiag'], '.3f')}, RMSE {_num(m['rmse_offdiag_A3'])} Å³"
               + ("; error bars: committee standard deviation" if np.isfinite(std).any() else ""))
    return _png(fig), caption


def _force_parity_png(con: Any, r: dict[str, Any]) -> tuple[str, str] | None:
    """Fig. S1: the distilled potential's held-out force components against its teacher's, one
    colour per element, each element's RMSE (over all its held-out components) in the legend;
    the image and its caption, or None without rows."""
    d = _fetch_nullable(con, "SELECT element, force_teacher_eV_A, force_distilled_eV_A, force_rmse_element_eV_A, "
                    "n_components_element, method, teacher FROM force_parity WHERE campaign = $1 AND material = $2 "
                    "AND run_id = $3 ORDER BY element, frame, atom, component", _key(r))
    if d["element"].size == 0:
        return None
    method = ", ".join(sorted({str(x) for x in d["method"] if x is not None}))
    teacher = ", ".join(sorted({str(x) for x in d["teacher"] if x is not None})) or "its teacher"
    t, p = d["force_teacher_eV_A"], d["force_distilled_eV_A"]
    fig = new_figure(figsize=(4.8, 4.0), layout="constrained")
    ax = fig.subplots()
    parts, sq, count = [], 0.0, 0
    for k, el in enumerate(sorted(set(d["element"].tolist()))):
        sel = d["element"] == el
        rmse, n_all = d["force_rmse_element_eV_A"][sel][0], d["n_components_element"][sel][0]
        # the full held-out set's RMSE; a row without it: the shown components'
        rmse_el = float(rmse) if np.isfinite(rmse) else float(np.sqrt(np.mean((p[sel] - t[sel]) ** 2)))
        n_el = int(n_all) if np.isfinite(n_all) else int(sel.sum())
        sq, count = sq + rmse_el**2 * n_el, count + n_el
        ax.scatter(t[sel], p[sel], s=4, color=f"C{k}", alpha=0.5, lw=0,
                   label=f"{el}: RMSE {rmse_el:.3f} eV/Å")
        parts.append(f"{el} {rmse_el:.3f} eV/Å ({int(sel.sum())} of {n_el} components shown)")
    lo, hi = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
    ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
    ax.set_xlabel(f"teacher force, {teacher} (eV/Å)")
    ax.set_ylabel("distilled SNAP force (eV/Å)")
    ax.legend(fontsize=7, loc="upper left", markerscale=3)
    total = math.sqrt(sq / count) if count else float("nan")
    ax.set_title(f"{r['material']}: held-out forces (Fig. S1), RMSE {total:.3f} eV/Å", fontsize=9)
    caption = (f"{r['material']}: force parity (Fig. S1 equivalent) of {method} against its teacher {teacher} on "
               f"held-out teacher frames (the reference is the teacher, not DFT unless the teacher is): RMSE {total:.3f} eV/Å over all components; per element "
               + "; ".join(parts))
    return _png(fig), caption


def _reference_spectrum_png(con: Any, r: dict[str, Any]) -> tuple[str, str] | None:
    """Fig. 2D: the ML-predicted and the reference spectrum of the same α frames overlaid (both
    divided by the reference's area over the cp_fraction window, log intensity axis, the ω → 0
    bins below the run's ``cp_lo_cm1`` left out), with the L2 difference and both cp_fractions;
    the image and its caption, or None without rows."""
    d = _fetch_nullable(con, "SELECT freq_cm1, intensity_ml, intensity_reference, l2_difference, l2_shape_difference, "
                        "cp_fraction_ml, cp_fraction_reference, n_frames, duration_ps, reference_method, note "
                        "FROM reference_spectrum WHERE campaign = $1 AND material = $2 AND run_id = $3 "
                        "ORDER BY freq_cm1", _key(r))
    if d["freq_cm1"].size == 0:
        return None
    f, ml, ref = d["freq_cm1"], d["intensity_ml"], d["intensity_reference"]
    method = ", ".join(sorted({str(x) for x in d["reference_method"] if x is not None}))
    label = method if "dfpt" in method.lower() else f"{method} (not DFPT)"
    lo = r.get("cp_lo_cm1") or float(f[min(1, f.size - 1)])
    top = float(min(r.get("cp_top_cm1") or math.inf, f.max()))
    keep = (f >= lo) & (f <= top) & (ml > 0) & (ref > 0)
    fig = new_figure(figsize=(6.4, 3.2), layout="constrained")
    ax = fig.subplots()
    if r.get("cp_hi_cm1") is not None:
        ax.axvspan(lo, r["cp_hi_cm1"], color="0.88", zorder=0, label="central-peak window")
    ax.plot(f[keep], ref[keep], color="k", lw=1.3, label=f"reference: {label}")
    ax.plot(f[keep], ml[keep], color="C0", lw=1.0, label="ML-predicted α")
    ax.set_yscale("log")
    ax.set_xlim(0, top)
    ax.set_xlabel("Raman shift (cm⁻¹)")
    ax.set_ylabel("intensity (reference area = 1)")
    ax.legend(fontsize=7)
    n, ps = int(d["n_frames"][0]), float(d["duration_ps"][0])
    ax.set_title(f"{r['material']}: ML vs reference spectrum, same {n} α frames (Fig. 2D)", fontsize=9)
    note = next((str(x) for x in d["note"] if x is not None), None)
    caption = (f"{r['material']}: ML-predicted against reference spectrum (Fig. 2D equivalent) on the same {n} α "
               f"samples ({_num(ps)} ps from the start of production), same spectrum settings; reference: {label}: "
               f"L2 difference {_num(d['l2_difference'][0])} (shape only {_num(d['l2_shape_difference'][0])}), "
               f"cp_fraction ML {_num(d['cp_fraction_ml'][0])}, reference {_num(d['cp_fraction_reference'][0])}"
               + (f"; {note}" if note else ""))
    return _png(fig), caption


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
        if "dipole" in ref.lower():  # its measured gap to DFT (tasks/data/dipole_vs_dft)
            from ramanscreen.tasks.reference.compare import dipole_gap_line

            gap = dipole_gap_line()
            if gap:
                out.append(gap)
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


def _paper_section(rows: list[dict[str, Any]], metas: list[dict[str, Any]],
                   validation: list[dict[str, Any]]) -> list[str]:
    """The paper's qualitative result against this run (:mod:`ramanscreen.analytics.paper_check`):
    a table, and for every expectation that does not hold what the run measured that bears on it."""
    from ramanscreen.analytics.paper_check import paper_checks

    rmse = {str(v["material"]): float(v["force_rmse_eV_A"]) for v in validation
            if v.get("force_rmse_eV_A") is not None}
    checks = paper_checks(rows, metas, force_rmse_eV_A=rmse)
    if not checks:
        return []
    out = ["<h2>Against the paper's qualitative result</h2>",
           _table([{"expectation": c.expectation, "material": c.material, "measured": c.measured, "holds": c.holds}
                   for c in checks], [("expectation", "the paper finds"), ("material", "material"),
                                      ("measured", "this run"), ("holds", "holds here")])]
    for c in checks:
        if c.why:
            out.append(f"<p>What bears on it, for {html.escape(c.material)}:</p><ul class=limits>"
                       + "".join(f"<li>{html.escape(w)}</li>" for w in c.why) + "</ul>")
    return out


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
        parts += _paper_section(rows, run_metas, vrows)
        if vrows:
            parts += ["<h2>Distilled potentials against their teacher (not DFT)</h2>",
                      _table(vrows, [("material", "material"), *_VALIDATION])]
        limits: list[str] = []
        figures: list[str] = []
        without: dict[str, list[str]] = {}  # CONVERGENCE_FIGURES / PARITY_FIGURES key -> materials without its data
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
            for table, draw in ((REFERENCE_SPECTRUM, _reference_spectrum_png), (ALPHA_PARITY, _alpha_parity_png),
                                (FORCE_PARITY, _force_parity_png)):
                drawn = draw(con, r)
                if drawn is None:
                    without.setdefault(table, []).append(str(r["material"]))
                    name = {**PARITY_FIGURES, **REFERENCE_FIGURES}[table][0]
                    figures.append(f"<p>{html.escape(str(r['material']))}: {html.escape(name)} "
                                   "equivalent: not recorded by this run</p>")
                else:
                    figures.append(_img(*drawn))
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
                    for k, (f, why) in (*REFERENCE_FIGURES.items(), *PARITY_FIGURES.items(),
                                        *CONVERGENCE_FIGURES.items()) if k in without),
                  "</ul>"]
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
