"""The paper's qualitative result, checked against a campaign's ranking, in numbers.

The paper (``../shared/SCIENCE.md``) finds: α-AgI and γ-Na₃PS₄ (liquid-like) with a clear
central peak; pristine Na₃SbS₄ (non-conducting) with none; W-doped Na₃SbS₄ with D above the
pristine one (doping activates hopping). :func:`paper_checks` states, for the materials of a
campaign built by those builders, whether each holds, and when one does not, what the run
measured that bears on it: the central-peak fraction against its threshold in block standard
errors, the two diffusivities against their combined error, the distilled potential's flag and
force error, the α reference method, the convergence note, the production length.

>>> rows = [
...     {"material": "AgI", "cp_fraction": 0.56, "cp_fraction_block_err": 0.02, "cp_threshold": 0.25,
...      "D_cm2_s": 4e-5, "D_err_cm2_s": 2e-6, "converged": True},
...     {"material": "P", "cp_fraction": 0.17, "cp_fraction_block_err": 0.01, "cp_threshold": 0.25,
...      "D_cm2_s": 4e-5, "D_err_cm2_s": 3e-6, "converged": True, "mlff_flagged": True}]
>>> metas = [{"structure": "AgI"}, {"structure": "gamma-Na3PS4", "reference_method": "dipole (not DFPT)"}]
>>> [(c.material, c.holds) for c in paper_checks(rows, metas, force_rmse_eV_A={"P": 0.121})]
[('AgI', 'yes'), ('P', 'no')]
>>> print(paper_checks(rows, metas, force_rmse_eV_A={"P": 0.121})[1].why[0])
cp_fraction 0.170 ± 0.010 is below the central-peak threshold 0.25 by 8.0 block standard errors
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: (builder names, what the paper finds). ``peak``: a clear central peak; ``no_peak``: none.
PEAK_EXPECTATIONS: tuple[tuple[tuple[str, ...], str, bool], ...] = (
    (("AgI",), "α-AgI (liquid-like): a clear central peak", True),
    (("gamma-Na3PS4",), "γ-Na₃PS₄ (liquid-like, PS₄ rotations): a clear central peak", True),
    (("Na3SbS4",), "pristine Na₃SbS₄ (non-conducting): no central peak", False),
)
#: (doped builder, pristine builder, what the paper finds)
DIFFUSIVITY_EXPECTATIONS: tuple[tuple[str, str, str], ...] = (
    ("Na3SbS4-W", "Na3SbS4", "W-doped Na₃SbS₄: D above the pristine one (doping activates hopping)"),
)
#: Upper end of the measured D(Na) of pristine Na₃SbS₄ at 300 K, 1–3e-8 cm²/s (SCIENCE.md; σ up to
#: 3 mS/cm, Zhang et al., Adv. Sci. 3, 1600089 (2016)).
NA3SBS4_D_KNOWN_CM2_S = 3e-8


@dataclass
class PaperCheck:
    """One expectation of the paper against a run: ``holds`` is ``yes``, ``no`` or ``tied``
    (within the errors); ``why`` lists what the run measured that bears on it."""

    expectation: str
    material: str
    measured: str
    holds: str
    why: list[str] = field(default_factory=list)


def _canonical(structure: Any) -> str | None:
    from ramanscreen.tasks.structures import resolve_name

    if not structure:
        return None
    try:
        return resolve_name(str(structure).split(":")[0])
    except Exception:  # noqa: BLE001 - a file path or an unknown name: no expectation
        return None


def _peak_numbers(row: Mapping[str, Any]) -> tuple[float, float, float]:
    """(value, block error, threshold) of the ranking's central-peak metric (cp_fraction by
    default): a ranking row carries its ``thresholds``; a plain row ``cp_threshold``."""
    used = row.get("thresholds")
    thr = float(used.cp_threshold) if used is not None else float(row["cp_threshold"])
    value = row.get("metric_value", row.get("cp_fraction"))
    err = row.get("metric_err", row.get("cp_fraction_block_err"))
    return float(value), float(err or 0.0), thr


def _context(row: Mapping[str, Any], meta: Mapping[str, Any], rmse: float | None) -> list[str]:
    from ramanscreen.tasks.mlff.snap import FORCE_RMSE_LIMIT_EV_A

    out = []
    if row.get("mlff_flagged"):
        tail = f" ({rmse:.3f} eV/Å against its teacher)" if rmse is not None else ""
        out.append(f"its distilled potential is flagged: held-out force RMSE above {FORCE_RMSE_LIMIT_EV_A:g} eV/Å{tail}")
    method = meta.get("reference_method")
    if method and "not DFPT" in str(method):
        out.append(f"α comes from {method}, not from DFPT (its measured gap is under the known limits)")
    if row.get("converged") is False:
        out.append(f"not converged: {row.get('convergence_note') or 'see the convergence rows'}")
    ps = meta.get("md_production_ps")
    if ps:
        out.append(f"production {float(ps):g} ps (the paper: 100–120 ps)")
    return out


def paper_checks(rows: Sequence[Mapping[str, Any]], metas: Sequence[Mapping[str, Any]], *,
                 force_rmse_eV_A: Mapping[str, float] | None = None) -> list[PaperCheck]:
    """The paper's expectations for the ranked ``rows`` (with their ``materials`` ``metas``, in
    the same order) whose builder the paper studied; other materials are skipped."""
    rmse = dict(force_rmse_eV_A or {})
    by_builder: dict[str, tuple[Mapping[str, Any], Mapping[str, Any]]] = {}
    for r, m in zip(rows, metas, strict=True):
        name = _canonical(m.get("structure"))
        if name is not None and name not in by_builder:
            by_builder[name] = (r, m)
    out: list[PaperCheck] = []
    for builders, what, wants_peak in PEAK_EXPECTATIONS:
        hit = next((by_builder[b] for b in builders if b in by_builder), None)
        if hit is None:
            continue
        r, m = hit
        cp, err, thr = _peak_numbers(r)
        n_err = abs(cp - thr) / err if err > 0 else float("inf")
        above = cp >= thr
        measured = f"cp_fraction {cp:.3f} ± {err:.3f} (threshold {thr:g}); D {float(r['D_cm2_s']):.2e} cm²/s"
        holds = "tied" if n_err < 1 else ("yes" if above == wants_peak else "no")
        why: list[str] = []
        if holds != "yes":
            side = "below" if not above else "above"
            why.append(f"cp_fraction {cp:.3f} ± {err:.3f} is {side} the central-peak threshold {thr:g} by "
                       f"{n_err:.1f} block standard errors")
            why += _context(r, m, rmse.get(str(r["material"])))
        if not wants_peak and float(r["D_cm2_s"]) > 10 * NA3SBS4_D_KNOWN_CM2_S:
            why.append(f"D {float(r['D_cm2_s']):.2e} cm²/s is {float(r['D_cm2_s']) / NA3SBS4_D_KNOWN_CM2_S:.0f}× "
                       "the upper end of the measured 1–3e-8 cm²/s: the run hops where experiment barely conducts")
        out.append(PaperCheck(what, str(r["material"]), measured, holds, why))
    for doped, pristine, what in DIFFUSIVITY_EXPECTATIONS:
        if doped not in by_builder or pristine not in by_builder:
            continue
        (rd, md), (rp, _mp) = by_builder[doped], by_builder[pristine]
        dd, ed = float(rd["D_cm2_s"]), float(rd.get("D_err_cm2_s") or 0.0)
        dp, ep = float(rp["D_cm2_s"]), float(rp.get("D_err_cm2_s") or 0.0)
        comb = (ed**2 + ep**2) ** 0.5
        n_err = abs(dd - dp) / comb if comb > 0 else float("inf")
        holds = "tied" if n_err < 1 else ("yes" if dd > dp else "no")
        measured = f"D {dd:.2e} ± {ed:.1e} ({rd['material']}) against {dp:.2e} ± {ep:.1e} cm²/s ({rp['material']})"
        why = []
        if holds != "yes":
            why.append(f"D of {rd['material']} is {'below' if dd < dp else 'above'} that of {rp['material']} by "
                       f"{n_err:.1f} combined standard errors ({dd / dp:.2f}×)")
            if dp > 10 * NA3SBS4_D_KNOWN_CM2_S:
                why.append(f"the pristine cell already hops (D {dp:.2e} cm²/s, {dp / NA3SBS4_D_KNOWN_CM2_S:.0f}× the "
                           "upper end of the measured 1–3e-8), so the distilled potential's barriers, not the "
                           "doping, set both")
            why += _context(rd, md, rmse.get(str(rd["material"])))
        out.append(PaperCheck(what, f"{rd['material']} vs {rp['material']}", measured, holds, why))
    return out


__all__ = ["DIFFUSIVITY_EXPECTATIONS", "NA3SBS4_D_KNOWN_CM2_S", "PEAK_EXPECTATIONS", "PaperCheck", "paper_checks"]
