"""Ranking plots: central peak vs D (log axis), and a Fig. 3-style stacked spectra overlay.

Both write PNGs atomically (temporary name, then rename) from a ``matplotlib.figure.Figure``
with its own Agg canvas, so they run headless and never touch pyplot or the caller's backend.

>>> import tempfile, pathlib
>>> rows = [{"material": "AgI", "temperature_k": 500.0, "D_cm2_s": 2.8e-5, "D_err_cm2_s": 3e-6,
...          "metric": "cp_fraction", "metric_value": 0.6, "conduction": "liquid-like"},
...         {"material": "Na3SbS4", "temperature_k": 300.0, "D_cm2_s": 0.0, "metric": "cp_fraction",
...          "metric_value": 0.03, "conduction": "non-conducting"}]
>>> png = scatter_cp_vs_d(rows, pathlib.Path(tempfile.mkdtemp()) / "cp_vs_D.png")
>>> png.read_bytes()[:4]
b'\x89PNG'
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from ramanscreen.analytics.ranking import HOPPING, LIQUID, NONCONDUCTING, UNKNOWN, RankSummary, Thresholds
from ramanscreen.tasks.common import new_figure, save_figure

CLASS_COLORS = {LIQUID: "tab:red", HOPPING: "tab:orange", NONCONDUCTING: "tab:blue", UNKNOWN: "tab:gray"}


def _label(r: dict[str, Any]) -> str:
    t = r.get("temperature_k")
    return f"{r['material']} {t:.0f} K" if t is not None else str(r["material"])


def _windows_text(rows: list[dict[str, Any]], *, full: bool = True) -> str:
    """The central-peak window(s) of the ranked runs, e.g. ``20–60 of 20–1000 cm⁻¹``."""
    wins = sorted({(r.get("cp_lo_cm1"), r.get("cp_hi_cm1"), r.get("cp_top_cm1")) for r in rows
                   if r.get("cp_hi_cm1") is not None})
    if not wins:
        return "windows not recorded"
    if len(wins) > 1:
        return "each run's own window"
    lo, hi, top = wins[0]
    return f"{lo:g}–{hi:g} of {lo:g}–{top:g} cm⁻¹" if full else f"{lo:g}–{hi:g} cm⁻¹"


def scatter_cp_vs_d(
    rows: list[dict[str, Any]],
    path: str | os.PathLike[str],
    *,
    summary: RankSummary | None = None,
    thresholds: Thresholds | None = None,
) -> Path:
    """Scatter of the central-peak metric against the mobile species' D on a log axis.

    Points are coloured by conduction class, with D error bars and the committee band of
    ``cp_fraction`` as vertical bars when known. D ≤ 0 (or below the plotted floor) is drawn
    at the floor as a left-pointing triangle, an upper bound. Threshold lines are dashed.
    """
    thresholds = thresholds or (rows[0].get("thresholds") if rows else None) or Thresholds()
    pts = [r for r in rows if r.get("metric_value") is not None and r.get("D_cm2_s") is not None]
    positive = [r["D_cm2_s"] for r in pts if r["D_cm2_s"] > 0]
    floor = min([*positive, thresholds.d_hopping_cm2_s]) / 10
    fig = new_figure(figsize=(6.4, 4.6), layout="constrained")
    ax = fig.subplots()
    seen: set[str] = set()
    for r in pts:
        d, y = r["D_cm2_s"], r["metric_value"]
        color = CLASS_COLORS.get(r["conduction"], "k")
        label = r["conduction"] if r["conduction"] not in seen else None
        seen.add(r["conduction"])
        if d <= floor:
            ax.scatter([floor], [y], marker="<", s=60, color=color, label=label, zorder=3)
            x = floor
        else:
            err = r.get("D_err_cm2_s")
            xerr = None
            if err is not None and math.isfinite(err) and err > 0:
                xerr = [[min(err, d - floor * 1.0001)], [err]]
            yerr = None
            if r.get("metric") == "cp_fraction" and r.get("cp_fraction_band_low") is not None \
                    and r.get("cp_fraction_band_high") is not None:
                lo, hi = sorted((r["cp_fraction_band_low"], r["cp_fraction_band_high"]))
                yerr = [[max(y - lo, 0.0)], [max(hi - y, 0.0)]]
            ax.errorbar([d], [y], xerr=xerr, yerr=yerr, fmt="o", ms=7, color=color, label=label,
                        capsize=3, zorder=3)
            x = d
        ax.annotate(_label(r), (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlim(floor / 2, max([*positive, thresholds.d_liquid_cm2_s]) * 5)
    for d in (thresholds.d_hopping_cm2_s, thresholds.d_liquid_cm2_s):
        ax.axvline(d, ls="--", lw=0.8, color="0.5")
    ax.axhline(thresholds.cp_threshold, ls=":", lw=0.8, color="0.5")
    metric = pts[0]["metric"] if pts else "cp_fraction"
    ax.set_xlabel("D of the mobile species (cm²/s)")
    ax.set_ylabel(f"central-peak fraction ({_windows_text(pts)})" if metric == "cp_fraction"
                  else f"central-peak metric: {metric}")
    title = "Raman central peak vs diffusivity"
    if summary is not None:
        title += "\n" + summary.line(metric)
    ax.set_title(title, fontsize=10)
    if seen:
        ax.legend(fontsize=8, loc="best")
    if not pts:
        ax.text(0.5, 0.5, "no run has both a spectrum and D", transform=ax.transAxes, ha="center")
    return save_figure(fig, path, dpi=150)


def spectra_overlay(
    con: duckdb.DuckDBPyConnection,
    rows: list[dict[str, Any]],
    path: str | os.PathLike[str],
    *,
    low_max_cm1: float | None = None,
) -> Path:
    """Stacked Raman spectra of the ranked runs, in the style of the paper's Fig. 3.

    Left: the full range; right: 0–``low_max_cm1`` cm⁻¹ magnified (default: 150 cm⁻¹, or 1.5 ×
    the widest central-peak window), each spectrum rescaled to its own maximum in that region,
    the factor against the left panel printed as ×k: ×1 means the strongest feature is at low
    frequency, with each run's own central-peak window (``cp_lo_cm1``–``cp_hi_cm1`` of the
    ranking rows) shaded behind its trace. Spectra are normalised to their maximum above the
    window start (the ω → 0 bin is excluded), offset vertically in ranking order, the committee
    band shaded where stored.
    """
    his = [r["cp_hi_cm1"] for r in rows if r.get("cp_hi_cm1") is not None]
    if low_max_cm1 is None:
        low_max_cm1 = max([150.0, *(1.5 * h for h in his)])
    fig = new_figure(figsize=(9.0, 1.6 + 1.3 * max(len(rows), 1)), layout="constrained")
    ax_full, ax_low = fig.subplots(1, 2, gridspec_kw={"width_ratios": [2.2, 1]})
    plotted = 0
    for i, r in enumerate(rows):
        data = con.execute(
            "SELECT freq_cm1, intensity, band_low, band_high FROM spectra "
            "WHERE campaign = $1 AND material = $2 AND run_id = $3 ORDER BY freq_cm1",
            [r["campaign"], r["material"], r["run_id"]],
        ).fetchnumpy()
        f = np.asarray(data["freq_cm1"], dtype=float)
        if f.size == 0:
            continue
        y = np.asarray(data["intensity"], dtype=float)
        band = None
        if not np.ma.is_masked(data["band_low"]) and not np.ma.is_masked(data["band_high"]):
            band = (np.asarray(data["band_low"], dtype=float), np.asarray(data["band_high"], dtype=float))
        offset = len(rows) - 1 - i  # the top-ranked run on top
        color = CLASS_COLORS.get(r.get("conduction"), "k")
        lo = r.get("cp_lo_cm1") or float(f[1] if f.size > 1 else f[0])
        if r.get("cp_hi_cm1") is not None:
            ax_low.fill_between([lo, r["cp_hi_cm1"]], offset - 0.05, offset + 0.95, color="0.88", lw=0, zorder=0)
        keep = f >= lo
        scales = []
        plotted += 1
        for ax, sel in ((ax_full, keep), (ax_low, keep & (f <= low_max_cm1))):
            if not sel.any():
                continue
            scale = float(np.max(y[sel])) or 1.0
            scales.append(scale)
            ax.plot(f[sel], y[sel] / scale * 0.9 + offset, color=color, lw=1.0)
            if band is not None:
                ax.fill_between(f[sel], band[0][sel] / scale * 0.9 + offset, band[1][sel] / scale * 0.9 + offset,
                                color=color, alpha=0.25, lw=0)
        ax_full.text(0.99, offset + 0.55, f"{_label(r)} ({r.get('conduction', '')})", ha="right", fontsize=8,
                     transform=ax_full.get_yaxis_transform())
        if len(scales) == 2:  # how much the low-frequency trace is magnified against the full one
            ax_low.text(0.98, offset + 0.75, f"×{scales[0] / scales[1]:.3g}", ha="right", fontsize=8,
                        transform=ax_low.get_yaxis_transform())
    if not plotted:
        ax_full.text(0.5, 0.5, "no stored spectra", transform=ax_full.transAxes, ha="center")
        ax_full.set_xlim(0, 1000)
    ax_full.set_xlabel("Raman shift (cm⁻¹)")
    ax_low.set_xlabel("Raman shift (cm⁻¹)")
    ax_full.set_ylabel("intensity (normalised, offset)")
    ax_low.set_title(f"low frequency, magnified (shaded: {_windows_text(rows, full=False)})", fontsize=9)
    ax_full.set_title("Raman spectra (band: ML committee)", fontsize=9)
    ax_low.set_xlim(0, low_max_cm1)
    for ax in (ax_full, ax_low):
        ax.set_yticks([])
        ax.set_ylim(-0.1, max(len(rows), 1) + 0.1)
    return save_figure(fig, path, dpi=150)
