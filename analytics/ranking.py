"""Rank materials by Raman central-peak intensity against diffusivity, and classify conduction.

Classification of a run from its mobile species' tracer diffusivity ``D`` (cm²/s), with the
defaults of :class:`Thresholds`:

* ``liquid-like``     D ≥ 5e-6   (α-AgI 500 K ≈ 2.8e-5, γ/cubic Na₃PS₄ 900 K ≈ 1.4e-5)
* ``hopping``         1e-7 ≤ D < 5e-6   (W-doped Na₃SbS₄: ~1 hop / 5 ps per cell ≈ 1e-6)
* ``non-conducting``  D < 1e-7   (Na₃SbS₄ 300 K ≈ 0)

and, separately, ``central_peak = metric ≥ cp_threshold`` (default: ``cp_fraction ≥ 0.25``),
where ``cp_fraction`` is the share of the Raman intensity of the run's window
[omega_min_cm1, host end] lying below omega_c_cm1 (``central_peak`` view; the windows are the
campaign's ``[spectrum]``, recorded with the run). The paper's claim is that the two agree:
``consistent`` is true when (class is liquid-like) == central_peak. All thresholds are
heuristics for ranking, not fitted to the results.

Two further columns say how far a row can be trusted:

* ``converged`` (:func:`ramanscreen.tasks.convergence.assess_convergence`): at half the
  trajectory and at half N_T the spectrum's L2 change is ≤ ``converge_max_l2`` (0.2), its
  cp_fraction moves by ≤ ``converge_max_cp_change`` (0.05), and D (half trajectory) by ≤
  ``converge_max_D_rel_change`` (0.5) × max(|D|, ``d_hopping_cm2_s``). A run that fails is
  ranked *and flagged* (``converged = False`` with ``convergence_note`` saying which change
  was too large); a run without convergence data has ``converged = None``.
* ``tied_with``: the runs whose cp_fraction interval, value ± ``tie_sigmas`` (1) × the block
  standard error ``cp_fraction_block_err`` (``ramanscreen.tasks.spectra.block_uncertainty``),
  overlaps this run's: their order in the ranking is not significant. Only for the cp_fraction
  metrics (``cp_fraction``, ``fraction_below_omega_c``); a run without a block error counts as
  its bare value. A run records the metric and thresholds its
campaign set (``[ranking]``); :func:`ranking` uses those unless given others
(``ramanscreen rank --metric/--d-liquid-cm2-s/--d-hopping-cm2-s/--cp-threshold``).

>>> Thresholds().classify(2.8e-5), Thresholds().classify(1e-6), Thresholds().classify(0.0)
('liquid-like', 'hopping', 'non-conducting')
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

import duckdb

from ramanscreen.tasks.common import InputError
from ramanscreen.tasks.schema import check, setting

#: Up to this many runs the Spearman p-value is exact (all n! permutations).
EXACT_P_MAX_N = 8

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

LIQUID, HOPPING, NONCONDUCTING, UNKNOWN = "liquid-like", "hopping", "non-conducting", "unknown"


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """The ranking's metric and classification thresholds (the campaign's ``[ranking]``; see the
    module docstring). Every run records the ones it was screened with (``materials`` table),
    and :func:`ranking` uses those unless told otherwise.

    >>> Thresholds(d_liquid_cm2_s=1e-7, d_hopping_cm2_s=1e-6)
    Traceback (most recent call last):
    ...
    ramanscreen.tasks.common.InputError: d_hopping_cm2_s: must be below d_liquid_cm2_s (1e-07), got 1e-06 (fix: e.g. 1e-7 below 5e-6)
    """

    #: What the ranking orders by and ``cp_threshold`` applies to.
    metric: str = setting("cp_fraction", doc="central-peak metric: cp_fraction (share of the intensity of the run's "
                          "own [omega_min, host end] window below omega_c, from the stored spectrum) or a "
                          "descriptors column")
    #: D of the mobile species at or above which conduction is called liquid-like, cm²/s.
    d_liquid_cm2_s: float = setting(5e-6, doc="D at or above which conduction is liquid-like", unit="cm²/s", gt=0)
    #: D at or above which (and below ``d_liquid_cm2_s``) it is called hopping, cm²/s.
    d_hopping_cm2_s: float = setting(1e-7, doc="D at or above which (below d_liquid_cm2_s) conduction is hopping; "
                                     "below it, non-conducting", unit="cm²/s", gt=0)
    #: Central-peak metric at or above which a run is said to show a central peak.
    cp_threshold: float = setting(0.25, doc="metric value at or above which a run shows a central peak", ge=0)
    #: Convergence (``convergence`` table; checked at half the run and at half N_T).
    converge_max_l2: float = setting(0.2, doc="converged: largest relative L2 change of the unit-area spectrum at "
                                     "half the trajectory and at half N_T", gt=0)
    converge_max_cp_change: float = setting(0.05, doc="converged: largest absolute change of cp_fraction at half the "
                                            "trajectory and at half N_T", gt=0)
    converge_max_D_rel_change: float = setting(0.5, doc="converged: largest absolute change of D at half the trajectory, "
                                               "relative to max(abs D, d_hopping_cm2_s)", gt=0)
    #: Ties: cp_fraction intervals of value ± tie_sigmas block standard errors that overlap.
    tie_sigmas: float = setting(1.0, doc="half-width of a run's cp_fraction interval in block standard errors; "
                                "runs whose intervals overlap are tied", ge=0)

    def __post_init__(self) -> None:
        check(self)
        if not _IDENT.match(self.metric):
            raise InputError(f"{self.metric!r} is not a column name", field="metric",
                             fix="use cp_fraction or a central-peak descriptor such as fraction_below_omega_c")
        if not self.d_hopping_cm2_s < self.d_liquid_cm2_s:
            raise InputError(f"must be below d_liquid_cm2_s ({self.d_liquid_cm2_s:g}), got {self.d_hopping_cm2_s:g}",
                             field="d_hopping_cm2_s", fix="e.g. 1e-7 below 5e-6")

    def classify(self, d_cm2_s: float | None) -> str:
        """Conduction class from the mobile species' D (``unknown`` when D is missing)."""
        if d_cm2_s is None or (isinstance(d_cm2_s, float) and math.isnan(d_cm2_s)):
            return UNKNOWN
        if d_cm2_s >= self.d_liquid_cm2_s:
            return LIQUID
        if d_cm2_s >= self.d_hopping_cm2_s:
            return HOPPING
        return NONCONDUCTING

    def describe(self, metric: str | None = None) -> str:
        """One line stating the thresholds, for tables and plot captions."""
        metric = metric or self.metric
        return (
            f"liquid-like: D ≥ {self.d_liquid_cm2_s:.0e} cm²/s; hopping: {self.d_hopping_cm2_s:.0e} ≤ D < "
            f"{self.d_liquid_cm2_s:.0e}; non-conducting: D < {self.d_hopping_cm2_s:.0e}; "
            f"central peak: {metric} ≥ {self.cp_threshold:g}"
        )

    def describe_convergence(self) -> str:
        """One line stating the convergence and tie rules.

        >>> Thresholds().describe_convergence()
        'converged: at ½ the trajectory and ½ N_T, spectrum L2 change ≤ 0.2, |Δcp_fraction| ≤ 0.05, |ΔD| ≤ 0.5 × max(|D|, 1e-07 cm²/s); tied: cp_fraction ± 1 block s.e. overlap'
        """
        return (f"converged: at ½ the trajectory and ½ N_T, spectrum L2 change ≤ {self.converge_max_l2:g}, "
                f"|Δcp_fraction| ≤ {self.converge_max_cp_change:g}, |ΔD| ≤ {self.converge_max_D_rel_change:g} × "
                f"max(|D|, {self.d_hopping_cm2_s:.0e} cm²/s); tied: cp_fraction ± {self.tie_sigmas:g} block s.e. "
                "overlap")

    def assess(self, rows: list[dict[str, Any]]) -> tuple[bool | None, str]:
        """(converged, why) of a run's ``convergence`` rows under these thresholds."""
        from ramanscreen.tasks.convergence import assess_convergence

        return assess_convergence(rows, max_l2=self.converge_max_l2, max_cp_change=self.converge_max_cp_change,
                                  max_D_rel_change=self.converge_max_D_rel_change, d_floor_cm2_s=self.d_hopping_cm2_s)


def _metric_sql(con: duckdb.DuckDBPyConnection, metric: str) -> tuple[str, str]:
    """SQL join + expression for the ranking metric: a ``screening`` column or a descriptor."""
    if not _IDENT.match(metric):
        raise InputError(f"{metric!r} is not a column name", field="metric", fix="e.g. cp_fraction")
    screening_cols = {r[0] for r in con.execute("DESCRIBE screening").fetchall()}
    if metric in screening_cols:
        return "", f's."{metric}"'
    desc_cols = {r[0] for r in con.execute("DESCRIBE descriptors").fetchall()}
    if metric in desc_cols:
        return (
            'LEFT JOIN descriptors d ON d.campaign = s.campaign AND d.material = s.material AND d.run_id = s.run_id',
            f'd."{metric}"',
        )
    options = sorted({"cp_fraction"} | (desc_cols - {"campaign", "material", "run_id", "write_id", "schema_version"}))
    raise InputError(f"unknown ranking metric {metric!r}", field="metric", fix=f"use one of {', '.join(options)}")


def _recorded_metric(con: duckdb.DuckDBPyConnection, campaign: str | None) -> str:
    """The metric the selected runs were screened with (their ``rank_metric``), or the default."""
    where = "WHERE campaign = $1" if campaign is not None else ""
    found = [r[0] for r in con.execute(f"SELECT DISTINCT rank_metric FROM materials {where} ORDER BY 1",
                                       [campaign] if campaign is not None else []).fetchall() if r[0] is not None]
    if len(found) > 1:
        raise InputError(f"the runs were screened with different ranking metrics ({', '.join(found)})",
                         field="metric", fix="choose one metric, or rank one campaign at a time")
    return found[0] if found else Thresholds.metric


#: Thresholds a run records in its materials row (the ``screening`` columns of the same names).
RECORDED = ("d_liquid_cm2_s", "d_hopping_cm2_s", "cp_threshold", "converge_max_l2", "converge_max_cp_change",
            "converge_max_D_rel_change", "tie_sigmas")
#: Metrics whose value the block standard error ``cp_fraction_block_err`` applies to.
CP_METRICS = ("cp_fraction", "fraction_below_omega_c")


def _run_thresholds(row: dict[str, Any], metric: str) -> Thresholds:
    """The thresholds a run recorded (the defaults for what it did not record)."""
    default = Thresholds()
    return Thresholds(
        metric=metric,
        d_liquid_cm2_s=row.get("d_liquid_cm2_s") or default.d_liquid_cm2_s,
        d_hopping_cm2_s=row.get("d_hopping_cm2_s") or default.d_hopping_cm2_s,
        **{k: getattr(default, k) if row.get(k) is None else row[k] for k in RECORDED[2:]},
    )


def _convergence_rows(con: duckdb.DuckDBPyConnection) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    """The ``convergence`` rows of every committed run, by (campaign, material, run_id)."""
    cur = con.execute("SELECT campaign, material, run_id, test, fraction, spectrum_l2_change, cp_fraction_change, "
                      "D_cm2_s, D_change_cm2_s, note FROM convergence ORDER BY campaign, material, run_id, test, fraction")
    names = [d[0] for d in cur.description]
    out: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for rec in cur.fetchall():
        r = dict(zip(names, rec, strict=True))
        out.setdefault((r.pop("campaign"), r.pop("material"), r.pop("run_id")), []).append(r)
    return out


def mark_ties(rows: list[dict[str, Any]]) -> None:
    """Set ``tied_with`` on every ranking row: the runs (``material``, or ``campaign/material``
    when several campaigns are ranked) whose interval ``metric_value ± tie_sigmas × metric_err``
    overlaps this row's; a missing error counts as 0, a missing value is never tied. None when
    the metric is not a cp_fraction (the block error does not apply).

    >>> rows = [{"campaign": "c", "material": m, "metric": "cp_fraction", "metric_value": v, "metric_err": e,
    ...          "thresholds": Thresholds()} for m, v, e in (("A", 0.50, 0.02), ("B", 0.47, 0.02), ("C", 0.30, 0.01))]
    >>> mark_ties(rows)
    >>> [(r["material"], r["tied_with"]) for r in rows]
    [('A', ['B']), ('B', ['A']), ('C', [])]
    """
    several = len({r["campaign"] for r in rows}) > 1
    label = [f"{r['campaign']}/{r['material']}" if several else r["material"] for r in rows]
    for i, a in enumerate(rows):
        if a["metric"] not in CP_METRICS:
            a["tied_with"] = None
            continue
        ties = []
        for j, b in enumerate(rows):
            if i == j or a["metric_value"] is None or b["metric_value"] is None:
                continue
            half = (a["thresholds"].tie_sigmas * (a.get("metric_err") or 0.0)
                    + b["thresholds"].tie_sigmas * (b.get("metric_err") or 0.0))
            if abs(a["metric_value"] - b["metric_value"]) <= half and half > 0:
                ties.append(label[j])
        a["tied_with"] = ties


def tie_groups(rows: list[dict[str, Any]]) -> list[list[str]]:
    """The ties of a ranking as groups of runs next to each other in rank order (a chain A–B–C,
    where only neighbours overlap, is one group), for the one-line statement under the table.

    >>> tie_groups([{"material": "A", "tied_with": ["B"]}, {"material": "B", "tied_with": ["A"]},
    ...             {"material": "C", "tied_with": []}])
    [['A', 'B']]
    """
    several = len({r.get("campaign") for r in rows}) > 1
    label = [f"{r['campaign']}/{r['material']}" if several else r["material"] for r in rows]
    groups: list[list[str]] = []
    for i, r in enumerate(rows):
        if not r.get("tied_with"):
            continue
        if groups and i > 0 and label[i - 1] in groups[-1] and set(r["tied_with"]) & set(groups[-1]):
            groups[-1].append(label[i])
        else:
            groups.append([label[i]])
    return [g for g in groups if len(g) > 1]


def ranking(
    con: duckdb.DuckDBPyConnection,
    campaign: str | None = None,
    *,
    metric: str | None = None,
    thresholds: Thresholds | None = None,
) -> list[dict[str, Any]]:
    """One dict per committed run, ordered by the central-peak ``metric`` (highest first).

    ``metric`` is ``cp_fraction`` (from the stored spectrum, ``central_peak`` view, each run's
    own windows) or the name of any column of the ``descriptors`` table (e.g. a
    ``central_peak_descriptors`` output); default: ``thresholds.metric`` when thresholds are
    given, else the metric the runs recorded. ``thresholds`` classify every run; default: the
    thresholds each run recorded. Keys of each row: ``rank, campaign, material, run_id, formula,
    temperature_k, mobile_species, D_cm2_s, D_err_cm2_s, sigma_S_cm, metric, metric_value,
    cp_fraction, cp_fraction_band_low, cp_fraction_band_high, cp_lo_cm1, cp_hi_cm1, cp_top_cm1,
    r2_diag, r2_offdiag, n_train, mlff, mlff_flagged, conduction, central_peak, consistent,
    metric_err, cp_fraction_block_err, converged, convergence_note, tied_with, thresholds`` (the
    :class:`Thresholds` used). ``metric_err`` is the block standard error of a cp_fraction metric
    (None for other metrics); ``converged``, ``convergence_note`` and ``tied_with`` are described
    in the module docstring: a run that is not converged is flagged, not left out. ``mlff`` is what drove the MD (a distilled
    potential is labelled as such, not DFT); ``mlff_flagged`` is true when its held-out force
    RMSE against the teacher exceeds ``tasks.mlff.FORCE_RMSE_LIMIT_EV_A`` (None: no distilled
    potential). Runs without a spectrum or transport rank last, class ``unknown``.
    """
    if metric is None:
        metric = thresholds.metric if thresholds is not None else _recorded_metric(con, campaign)
    join, expr = _metric_sql(con, metric)
    where = "WHERE s.campaign = $1" if campaign is not None else ""
    sql = f"""
        SELECT s.campaign, s.material, s.run_id, s.formula, s.temperature_k, s.mobile_species,
               s.D_cm2_s, s.D_err_cm2_s, s.sigma_S_cm, {expr} AS metric_value, s.cp_fraction,
               s.cp_fraction_band_low, s.cp_fraction_band_high, s.cp_lo_cm1, s.cp_hi_cm1, s.cp_top_cm1,
               s.cp_fraction_block_err, s.r2_diag, s.r2_offdiag, s.n_train, s.mlff, s.mlff_flagged,
               {", ".join(f"s.{k}" for k in RECORDED)}
        FROM screening s {join} {where}
        ORDER BY metric_value DESC NULLS LAST, s.D_cm2_s DESC NULLS LAST, s.campaign, s.material, s.run_id
    """
    try:
        cur = con.execute(sql, [campaign] if campaign is not None else [])
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, r, strict=False)) for r in cur.fetchall()]
        convergence = _convergence_rows(con)
    except duckdb.Error as exc:
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        raise InputError(f"cannot read the results: {first}", field="ranking",
                         fix="reconnect (the session predates a rewrite) or re-run the damaged material") from None
    if campaign is not None and not rows:
        known = [r[0] for r in con.execute("SELECT DISTINCT campaign FROM materials ORDER BY 1").fetchall()]
        raise InputError(f"no committed runs for campaign {campaign!r}", field="campaign",
                         fix=f"use one of {', '.join(known)}" if known else "run the campaign first")
    out = []
    for i, r in enumerate(rows, start=1):
        value = r.pop("metric_value")
        recorded = {k: r.pop(k) for k in RECORDED}
        used = dataclasses.replace(thresholds, metric=metric) if thresholds is not None else \
            _run_thresholds(recorded, metric)
        cls = used.classify(r["D_cm2_s"])
        peak = None if value is None else bool(value >= used.cp_threshold)
        consistent = None if (peak is None or cls == UNKNOWN) else (cls == LIQUID) == peak
        converged, why = used.assess(convergence.get((r["campaign"], r["material"], r["run_id"]), []))
        out.append({"rank": i, **r, "metric": metric, "metric_value": value,
                    "metric_err": r["cp_fraction_block_err"] if metric in CP_METRICS else None,
                    "conduction": cls, "central_peak": peak, "consistent": consistent,
                    "converged": converged, "convergence_note": why, "thresholds": used})
    mark_ties(out)
    return out


def common_thresholds(rows: list[dict[str, Any]]) -> Thresholds:
    """The thresholds of a ranking (those of its first run; :class:`Thresholds` if it is empty)."""
    return rows[0]["thresholds"] if rows else Thresholds()


@dataclasses.dataclass(frozen=True)
class RankSummary:
    """Spearman correlation between the central-peak metric and D over the ranked runs."""

    n: int
    spearman_rho: float | None
    spearman_p: float | None
    note: str

    def line(self, metric: str = "cp_fraction") -> str:
        if self.spearman_rho is None:
            return f"Spearman({metric}, D): n/a ({self.note})"
        return f"Spearman({metric}, D) = {self.spearman_rho:+.3f} (p = {self.spearman_p:.3g}, n = {self.n})"


def summarize(rows: list[dict[str, Any]]) -> RankSummary:
    """Spearman rank correlation of ``metric_value`` with ``D_cm2_s`` (scipy).

    Needs at least three runs with both numbers; D ≤ 0 is kept (ranks only need the order).

    >>> rows = [{"metric_value": v, "D_cm2_s": d} for v, d in [(0.6, 3e-5), (0.4, 1e-5), (0.1, 1e-6), (0.05, 0.0)]]
    >>> s = summarize(rows)
    >>> s.spearman_rho, round(s.spearman_p, 4)  # exact: 2 of the 4! = 24 orderings have |rho| = 1
    (1.0, 0.0833)
    """
    from scipy.stats import spearmanr

    pairs = [(r["metric_value"], r["D_cm2_s"]) for r in rows
             if r.get("metric_value") is not None and r.get("D_cm2_s") is not None
             and math.isfinite(r["metric_value"]) and math.isfinite(r["D_cm2_s"])]
    n = len(pairs)
    if n < 3:
        return RankSummary(n, None, None, f"needs ≥ 3 runs with both numbers, have {n}")
    xs, ys = zip(*pairs, strict=False)
    if len(set(xs)) == 1 or len(set(ys)) == 1:
        return RankSummary(n, None, None, "one of the two columns is constant")
    rho = float(spearmanr(xs, ys).statistic)
    if n <= EXACT_P_MAX_N:
        # Exact two-sided permutation p-value over all n! pairings (the t approximation
        # scipy uses by default is poor for a handful of materials, and gives p = 0 at |rho| = 1).
        return RankSummary(n, rho, _exact_spearman_p(xs, ys, rho), "exact permutation p")
    return RankSummary(n, rho, float(spearmanr(xs, ys).pvalue), "t-approximation p")


def _exact_spearman_p(xs, ys, rho: float) -> float:
    """Two-sided p: the share of all n! pairings whose |rho| reaches the observed |rho|."""
    import itertools

    import numpy as np
    from scipy.stats import rankdata

    rx, ry = rankdata(xs), rankdata(ys)
    perms = np.array(list(itertools.permutations(range(len(ry)))))
    ry_p = ry[perms]
    rxc = rx - rx.mean()
    ryc = ry_p - ry_p.mean(axis=1, keepdims=True)
    r = (ryc @ rxc) / (np.sqrt((rxc**2).sum()) * np.sqrt((ryc**2).sum(axis=1)))
    return float(np.mean(np.abs(r) >= abs(rho) - 1e-12))
