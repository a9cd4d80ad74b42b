"""Raman peak fitting (positions, FWHM, heights, areas with uncertainties) and the
multi-linear regression of log10 σ on peak features.

Peak fitting, for computed and experimental spectra alike:

1. optional range cut (``range_cm1``) and baseline subtraction (:func:`estimate_baseline`:
   a modified polynomial or pybaselines' asymmetric least squares);
2. detection with :func:`scipy.signal.find_peaks` at a prominence of ``prominence`` × the
   largest baselined intensity, peaks at least ``min_distance_cm1`` apart, the
   ``max_peaks`` most prominent kept;
3. one joint least-squares fit (:func:`scipy.optimize.curve_fit`) of a sum of Gaussian,
   Lorentzian or Voigt profiles, each parametrised by its area A, centre ν₀ and width(s):

   * Gaussian  A/(σ√(2π)) exp(−(ν−ν₀)²/2σ²),              FWHM = 2√(2 ln 2) σ
   * Lorentzian A γ/(π((ν−ν₀)² + γ²)),                    FWHM = 2γ
   * Voigt     A · V(ν−ν₀; σ, γ) (scipy.special.voigt_profile), FWHM ≈ 0.5346 f_L + √(0.2166 f_L² + f_G²)
     (Olivero & Longbothum, JQSRT 17, 233 (1977); f_L = 2γ, f_G = 2√(2 ln 2) σ).

Uncertainties are one standard error from the fit covariance (scaled by the residual variance),
propagated to FWHM and height through the Jacobian.

>>> x = np.linspace(100, 900, 1601)
>>> y = 5 * gaussian(x, 2.0, 400.0, 6.0) + 3 * gaussian(x, 1.0, 640.0, 8.0)
>>> fit = fit_peaks(x, y, PeakSettings(profile="gaussian", baseline="none"))
>>> [round(p) for p in fit.table["position_cm1"]]
[400, 640]
>>> [round(w, 2) for w in fit.table["fwhm_cm1"]]
[14.13, 18.84]
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ramanscreen.tasks.common import InputError

PROFILES = ("gaussian", "lorentzian", "voigt")
BASELINES = ("none", "poly", "asls", "arpls")
_FWHM_G = 2.0 * math.sqrt(2.0 * math.log(2.0))


@dataclasses.dataclass(frozen=True)
class PeakSettings:
    """Every default of peak detection and fitting, defined once (CLI and flows read them here).

    ``prominence`` is relative to the largest baselined intensity in the range;
    ``baseline_order`` is the polynomial degree for ``baseline="poly"``; ``baseline_lam`` and
    ``baseline_p`` the smoothness and asymmetry of asls/arpls.
    """

    profile: str = "voigt"
    baseline: str = "poly"
    baseline_order: int = 3
    baseline_lam: float = 1e5
    baseline_p: float = 0.01
    prominence: float = 0.05
    min_distance_cm1: float = 5.0
    max_peaks: int = 15
    range_cm1: tuple[float | None, float | None] = (None, None)

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise InputError(f"unknown profile {self.profile!r}", field="profile", fix=f"use one of {', '.join(PROFILES)}")
        if self.baseline not in BASELINES:
            raise InputError(f"unknown baseline {self.baseline!r}", field="baseline",
                             fix=f"use one of {', '.join(BASELINES)}")
        if not 0 < self.prominence < 1:
            raise InputError(f"must be in (0, 1), got {self.prominence}", field="prominence",
                             fix="a fraction of the largest intensity, e.g. 0.05")
        if self.max_peaks < 1:
            raise InputError(f"must be ≥ 1, got {self.max_peaks}", field="max_peaks", fix="e.g. 15")


# --------------------------------------------------------------------------------------------
# Profiles
# --------------------------------------------------------------------------------------------


def gaussian(x: np.ndarray, area: float, center: float, sigma: float) -> np.ndarray:
    return area / (sigma * math.sqrt(2.0 * math.pi)) * np.exp(-0.5 * ((x - center) / sigma) ** 2)


def lorentzian(x: np.ndarray, area: float, center: float, gamma: float) -> np.ndarray:
    return area * gamma / (math.pi * ((x - center) ** 2 + gamma**2))


def voigt(x: np.ndarray, area: float, center: float, sigma: float, gamma: float) -> np.ndarray:
    from scipy.special import voigt_profile

    return area * voigt_profile(x - center, sigma, gamma)


_N_PARAMS = {"gaussian": 3, "lorentzian": 3, "voigt": 4}
_FUNCS: dict[str, Any] = {"gaussian": gaussian, "lorentzian": lorentzian, "voigt": voigt}


def _fwhm(profile: str, p: np.ndarray) -> float:
    if profile == "gaussian":
        return _FWHM_G * p[2]
    if profile == "lorentzian":
        return 2.0 * p[2]
    fl, fg = 2.0 * p[3], _FWHM_G * p[2]
    return 0.5346 * fl + math.sqrt(0.2166 * fl**2 + fg**2)


def _height(profile: str, p: np.ndarray) -> float:
    return float(_FUNCS[profile](np.array([p[1]]), *p)[0])


def _propagate(f, p: np.ndarray, cov: np.ndarray) -> float:
    """Standard error of f(p) from the covariance of p (central-difference Jacobian)."""
    if not np.all(np.isfinite(cov)):
        return float("nan")
    jac = np.empty(len(p))
    for k in range(len(p)):
        h = 1e-6 * max(abs(p[k]), 1e-6)
        up, dn = p.copy(), p.copy()
        up[k] += h
        dn[k] -= h
        jac[k] = (f(up) - f(dn)) / (2 * h)
    return float(math.sqrt(max(jac @ cov @ jac, 0.0)))


# --------------------------------------------------------------------------------------------
# Baseline
# --------------------------------------------------------------------------------------------


def estimate_baseline(x: np.ndarray, y: np.ndarray, method: str = "poly", *, order: int = 3, lam: float = 1e5,
                      p: float = 0.01) -> np.ndarray:
    """Baseline of ``y`` on ``x``: ``poly`` (pybaselines modpoly, iterative polynomial of
    ``order``), ``asls`` / ``arpls`` (pybaselines, smoothness ``lam``, asymmetry ``p`` for asls),
    ``none`` (zeros).

    >>> x = np.linspace(0, 1, 201); y = 2 + 3 * x + gaussian(x, 0.05, 0.5, 0.01)
    >>> b = estimate_baseline(x, y, "poly", order=1)
    >>> bool(abs(b[0] - 2) < 0.05 and abs(b[-1] - 5) < 0.05)
    True
    """
    if method == "none":
        return np.zeros_like(y, dtype=float)
    from pybaselines import Baseline

    fitter = Baseline(x_data=np.asarray(x, dtype=float))
    if method == "poly":
        base, _ = fitter.modpoly(y, poly_order=order)
    elif method == "asls":
        base, _ = fitter.asls(y, lam=lam, p=p)
    elif method == "arpls":
        base, _ = fitter.arpls(y, lam=lam)
    else:
        raise InputError(f"unknown baseline {method!r}", field="baseline", fix=f"use one of {', '.join(BASELINES)}")
    return np.asarray(base, dtype=float)


# --------------------------------------------------------------------------------------------
# Fitting
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class PeakFit:
    """Fitted peaks (``table``: one entry per peak) plus the curves the fit saw."""

    table: dict[str, list[Any]]
    freq_cm1: np.ndarray
    intensity: np.ndarray  # in the range, before baseline subtraction
    baseline: np.ndarray
    model: np.ndarray  # fitted sum of profiles (baseline not included)
    r2: float
    fit_ok: bool
    settings: PeakSettings

    @property
    def n_peaks(self) -> int:
        return len(self.table["position_cm1"])


def _cut(x: np.ndarray, y: np.ndarray, rng: tuple[float | None, float | None]) -> tuple[np.ndarray, np.ndarray]:
    lo = -np.inf if rng[0] is None else rng[0]
    hi = np.inf if rng[1] is None else rng[1]
    sel = (x >= lo) & (x <= hi)
    if sel.sum() < 8:
        raise InputError(f"only {int(sel.sum())} points in {lo:g}–{hi:g} cm⁻¹", field="range_cm1",
                         fix="widen the range or pass a spectrum that covers it")
    return x[sel], y[sel]


def fit_peaks(freq_cm1: Any, intensity: Any, settings: PeakSettings | None = None) -> PeakFit:
    """Detect and fit peaks (see the module docstring). Raises :class:`InputError` for too few
    points; a spectrum without any peak above the prominence gives an empty table."""
    from scipy.optimize import curve_fit
    from scipy.signal import find_peaks, peak_widths

    s = settings or PeakSettings()
    x_all = np.asarray(freq_cm1, dtype=float)
    y_all = np.asarray(intensity, dtype=float)
    order = np.argsort(x_all)
    x, y = _cut(x_all[order], y_all[order], s.range_cm1)
    base = estimate_baseline(x, y, s.baseline, order=s.baseline_order, lam=s.baseline_lam, p=s.baseline_p)
    yb = y - base
    dx = float(np.median(np.diff(x)))
    top = float(np.max(yb))
    empty: dict[str, list[Any]] = {k: [] for k in _COLUMNS[s.profile]}
    if not top > 0:
        return PeakFit(empty, x, y, base, np.zeros_like(x), float("nan"), True, s)
    idx, props = find_peaks(yb, prominence=s.prominence * top, distance=max(1, round(s.min_distance_cm1 / dx)))
    if len(idx) == 0:
        return PeakFit(empty, x, y, base, np.zeros_like(x), float("nan"), True, s)
    keep = np.sort(np.argsort(props["prominences"])[::-1][: s.max_peaks])
    idx, prom = idx[keep], props["prominences"][keep]
    widths = np.maximum(peak_widths(yb, idx, rel_height=0.5)[0] * dx, 2 * dx)
    f = _FUNCS[s.profile]
    npar = _N_PARAMS[s.profile]
    p0, lo, hi = [], [], []
    span = float(x[-1] - x[0])
    for i, w in zip(idx, widths, strict=True):
        h = max(float(yb[i]), 1e-12 * top)
        c = float(x[i])
        if s.profile == "gaussian":
            p0 += [h * w * 1.0645, c, w / _FWHM_G]
        elif s.profile == "lorentzian":
            p0 += [h * w * 1.5708, c, w / 2.0]
        else:
            p0 += [h * w * 1.3, c, w / (2 * _FWHM_G), w / 4.0]
        lo += [0.0, c - w, dx / 10.0] + ([dx / 10.0] if npar == 4 else [])
        hi += [np.inf, c + w, span] + ([span] if npar == 4 else [])
        if npar == 4:
            lo[-1] = 1e-6 * dx  # a Voigt may become purely Gaussian
    n = len(idx)

    def total(xx, *pars):
        out = np.zeros_like(xx)
        for k in range(n):
            out += f(xx, *pars[k * npar:(k + 1) * npar])
        return out

    fit_ok = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            popt, pcov = curve_fit(total, x, yb, p0=np.array(p0), bounds=(np.array(lo), np.array(hi)), maxfev=20000)
    except (RuntimeError, ValueError) as exc:
        warnings.warn(f"peak fit did not converge ({exc}); reporting the detected peaks with initial estimates",
                      UserWarning, stacklevel=2)
        popt, pcov, fit_ok = np.array(p0), np.full((len(p0), len(p0)), np.nan), False
    model = total(x, *popt)
    ss_res = float(np.sum((yb - model) ** 2))
    ss_tot = float(np.sum((yb - yb.mean()) ** 2))
    table: dict[str, list[Any]] = {k: [] for k in _COLUMNS[s.profile]}
    for k in range(n):
        p = popt[k * npar:(k + 1) * npar]
        cov = pcov[k * npar:(k + 1) * npar, k * npar:(k + 1) * npar]
        err = np.sqrt(np.clip(np.diag(cov), 0, None)) if np.all(np.isfinite(cov)) else np.full(npar, np.nan)
        table["peak"].append(k + 1)
        table["position_cm1"].append(float(p[1]))
        table["position_err_cm1"].append(float(err[1]))
        table["fwhm_cm1"].append(float(_fwhm(s.profile, p)))
        table["fwhm_err_cm1"].append(_propagate(lambda q: _fwhm(s.profile, q), p, cov))
        table["height"].append(_height(s.profile, p))
        table["height_err"].append(_propagate(lambda q: _height(s.profile, q), p, cov))
        table["area"].append(float(p[0]))
        table["area_err"].append(float(err[0]))
        table["prominence"].append(float(prom[k]))
        if s.profile == "voigt":
            table["gaussian_sigma_cm1"].append(float(p[2]))
            table["lorentzian_gamma_cm1"].append(float(p[3]))
        table["profile"].append(s.profile)
    return PeakFit(table, x, y, base, model, 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan"), fit_ok, s)


_BASE_COLUMNS = ["peak", "position_cm1", "position_err_cm1", "fwhm_cm1", "fwhm_err_cm1", "height", "height_err",
                 "area", "area_err", "prominence"]
_COLUMNS = {
    "gaussian": [*_BASE_COLUMNS, "profile"],
    "lorentzian": [*_BASE_COLUMNS, "profile"],
    "voigt": [*_BASE_COLUMNS, "gaussian_sigma_cm1", "lorentzian_gamma_cm1", "profile"],
}


def plot_peak_fit(fit: PeakFit, path, *, title: str | None = None):
    """The spectrum, baseline, fitted sum and each peak (PNG, Agg canvas, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ramanscreen.tasks.common import save_figure

    fig = Figure(figsize=(7.5, 4.2), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(fit.freq_cm1, fit.intensity, color="0.3", lw=1.0, label="spectrum")
    ax.plot(fit.freq_cm1, fit.baseline, color="C1", lw=0.8, ls="--", label=f"baseline ({fit.settings.baseline})")
    ax.plot(fit.freq_cm1, fit.baseline + fit.model, color="C3", lw=1.0, label=f"fit ({fit.settings.profile}), R² = {fit.r2:.3f}")
    for pos in fit.table["position_cm1"]:
        ax.axvline(pos, color="C0", lw=0.5, alpha=0.6)
    ax.set_xlabel("Raman shift (cm$^{-1}$)")
    ax.set_ylabel("intensity (input units)")
    ax.set_title(title or f"{fit.n_peaks} peaks", fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return save_figure(fig, path)


# --------------------------------------------------------------------------------------------
# Features and regression
# --------------------------------------------------------------------------------------------


def band_features(table: Mapping[str, Sequence[Any]], bands_cm1: Sequence[float], window_cm1: float = 30.0
                  ) -> dict[str, float]:
    """Features of the fitted peak nearest each band centre (within ``window_cm1``):
    ``pos_<b>`` (cm⁻¹), ``fwhm_<b>`` (cm⁻¹) and ``area_frac_<b>`` (its share of the total fitted
    area); NaN when no peak lies in the window.

    >>> t = {"position_cm1": [398.0, 641.0], "fwhm_cm1": [10.0, 20.0], "area": [1.0, 3.0]}
    >>> band_features(t, [640])
    {'pos_640': 641.0, 'fwhm_640': 20.0, 'area_frac_640': 0.75}
    """
    pos = np.asarray(table["position_cm1"], dtype=float)
    fwhm = np.asarray(table["fwhm_cm1"], dtype=float)
    area = np.asarray(table["area"], dtype=float)
    total = float(area.sum()) if len(area) else float("nan")
    out: dict[str, float] = {}
    for b in bands_cm1:
        tag = f"{b:g}".replace(".", "p")
        d = np.abs(pos - b)
        if len(d) and d.min() <= window_cm1:
            k = int(np.argmin(d))
            out[f"pos_{tag}"], out[f"fwhm_{tag}"] = float(pos[k]), float(fwhm[k])
            out[f"area_frac_{tag}"] = float(area[k] / total) if total > 0 else float("nan")
        else:
            out[f"pos_{tag}"] = out[f"fwhm_{tag}"] = out[f"area_frac_{tag}"] = float("nan")
    return out


@dataclasses.dataclass
class RegressionResult:
    """Multi-linear regression y = β₀ + Σ βᵢ xᵢ of the (transformed) target on features."""

    target: str
    transform: str
    features: list[str]
    intercept: float
    coefficients: dict[str, float]
    coefficient_errors: dict[str, float]
    standardized_coefficients: dict[str, float]
    r2: float
    cv_r2: float
    cv_rmse: float
    cv_scheme: str
    n: int
    oof_prediction: np.ndarray
    y: np.ndarray

    def summary(self) -> dict[str, Any]:
        return {"target": self.target, "transform": self.transform, "n": self.n, "features": self.features,
                "intercept": self.intercept, "coefficients": self.coefficients,
                "coefficient_errors": self.coefficient_errors,
                "standardized_coefficients": self.standardized_coefficients, "r2": self.r2, "cv_r2": self.cv_r2,
                "cv_rmse": self.cv_rmse, "cv_scheme": self.cv_scheme}


def linear_regression(X: np.ndarray, y: np.ndarray, features: Sequence[str], *, target: str = "y",
                      transform: str = "identity", cv_folds: int | None = None, seed: int = 0) -> RegressionResult:
    """OLS fit (scikit-learn) with coefficient standard errors and a cross-validated R².

    The CV R² is 1 − Σ(y − ŷ_oof)² / Σ(y − ȳ)² over out-of-fold predictions ŷ_oof from
    leave-one-out (n ≤ 20) or ``cv_folds``-fold CV; it can be negative (worse than the mean).

    >>> rng = np.random.default_rng(0); X = rng.normal(size=(30, 2)); y = 1 + 2 * X[:, 0] - X[:, 1]
    >>> r = linear_regression(X, y, ["a", "b"])
    >>> round(r.coefficients["a"], 6), round(r.cv_r2, 6)
    (2.0, 1.0)
    """
    from sklearn.linear_model import LinearRegression
    from sklearn.model_selection import KFold, LeaveOneOut

    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    n, p = X.shape
    if n < p + 2:
        raise InputError(f"{n} rows for {p} features: a linear fit with a held-out check needs ≥ {p + 2}",
                         field="features", fix="select fewer features (--feature) or add rows")
    model = LinearRegression().fit(X, y)
    resid = y - model.predict(X)
    dof = n - p - 1
    design = np.column_stack([np.ones(n), X])
    try:
        cov = (resid @ resid / dof) * np.linalg.inv(design.T @ design) if dof > 0 else np.full((p + 1, p + 1), np.nan)
        se = np.sqrt(np.clip(np.diag(cov), 0, None))[1:]
    except np.linalg.LinAlgError:
        se = np.full(p, np.nan)
    if cv_folds is None and n <= 20:
        splitter, scheme = LeaveOneOut(), "leave-one-out"
    else:
        k = min(cv_folds or 5, n)
        splitter, scheme = KFold(n_splits=k, shuffle=True, random_state=seed), f"{k}-fold"
    oof = np.empty(n)
    for train, test in splitter.split(X):
        oof[test] = LinearRegression().fit(X[train], y[train]).predict(X[test])
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(resid @ resid) / ss_tot if ss_tot > 0 else float("nan")
    cv_r2 = 1.0 - float(np.sum((y - oof) ** 2)) / ss_tot if ss_tot > 0 else float("nan")
    sx = X.std(axis=0, ddof=0)
    sy = y.std(ddof=0)
    coef = {f: float(c) for f, c in zip(features, model.coef_, strict=True)}
    return RegressionResult(
        target=target, transform=transform, features=list(features), intercept=float(model.intercept_),
        coefficients=coef, coefficient_errors={f: float(e) for f, e in zip(features, se, strict=True)},
        standardized_coefficients={f: float(c * s / sy) if sy > 0 else float("nan")
                                   for f, c, s in zip(features, model.coef_, sx, strict=True)},
        r2=r2, cv_r2=cv_r2, cv_rmse=float(np.sqrt(np.mean((y - oof) ** 2))), cv_scheme=scheme, n=n,
        oof_prediction=oof, y=y,
    )


def experimental_features(results_root: Any, bands_cm1: Sequence[float], window_cm1: float = 30.0,
                          settings: PeakSettings | None = None) -> dict[str, list[Any]]:
    """Training rows for the regression from a results root: every imported experimental
    spectrum with a measured σ (the ``experimental_conductivity`` view), its peaks fitted
    (:func:`fit_peaks`) and the :func:`band_features` of ``bands_cm1``. Columns: ``campaign,
    material, spectrum_id, formula, temperature_k, pressure_gpa, sigma_S_cm`` and the features."""
    from ramanscreen.analytics.db import connect
    from ramanscreen.tasks.common import InputError

    con = connect(results_root)
    try:
        keys = ["campaign", "material", "spectrum_id", "formula", "temperature_k", "pressure_gpa", "sigma_S_cm"]
        rows = con.execute(f"SELECT {', '.join(keys)} FROM experimental_conductivity "
                           "ORDER BY material, campaign NULLS FIRST, spectrum_id").fetchall()
        bins = con.execute(
            "SELECT e.material, e.campaign, e.spectrum_id, list(e.freq_cm1 ORDER BY e.freq_cm1), "
            "list(e.intensity ORDER BY e.freq_cm1) FROM experimental_spectra e "
            "JOIN experimental_conductivity c ON e.material = c.material AND e.spectrum_id = c.spectrum_id "
            "AND e.campaign IS NOT DISTINCT FROM c.campaign GROUP BY ALL").fetchall()
    finally:
        con.close()
    if not rows:
        raise InputError("no experimental spectra with a measured conductivity", file=results_root,
                         fix="import some with `ramanscreen experiment import FILE --results-root R --material M "
                             "--sigma-s-cm S`")
    spectra = {(c, m, i): (x, y) for m, c, i, x, y in bins}
    return _with_band_features(keys, rows, spectra, bands_cm1, window_cm1, settings)


def _with_band_features(keys: Sequence[str], rows: Sequence[Sequence[Any]],
                        spectra: Mapping[tuple[Any, Any, Any], tuple[Any, Any]], bands_cm1: Sequence[float],
                        window_cm1: float, settings: PeakSettings | None) -> dict[str, list[Any]]:
    """Columns ``keys`` of ``rows`` plus the :func:`band_features` of each row's spectrum, looked up
    in ``spectra`` by the row's first three values (frequencies and intensities as lists)."""
    cols: dict[str, list[Any]] = {k: [r[j] for r in rows] for j, k in enumerate(keys)}
    for n, r in enumerate(rows):
        x, y = spectra[(r[0], r[1], r[2])]
        table = fit_peaks(np.asarray(x, float), np.asarray(y, float), settings).table
        for k, v in band_features(table, bands_cm1, window_cm1).items():
            cols.setdefault(k, [float("nan")] * len(rows))[n] = v
    return cols


def computed_features(results_root: Any, bands_cm1: Sequence[float], window_cm1: float = 30.0,
                      settings: PeakSettings | None = None) -> dict[str, list[Any]]:
    """Training rows for the regression from a results root's *computed* runs: every run of the
    ``screening`` view with a σ, its Raman spectrum's peaks fitted (:func:`fit_peaks`), the
    :func:`band_features` of ``bands_cm1`` and the run's ``cp_fraction``. Columns: ``campaign,
    material, run_id, formula, temperature_k, pressure_gpa, sigma_S_cm, cp_fraction, mlff,
    reference_method`` and the features. These are MD values (the ``mlff`` and
    ``reference_method`` columns say which), not measurements."""
    from ramanscreen.analytics.db import connect
    from ramanscreen.tasks.common import InputError

    con = connect(results_root)
    try:
        keys = ["campaign", "material", "run_id", "formula", "temperature_k", "pressure_gpa", "sigma_S_cm",
                "cp_fraction", "mlff", "reference_method"]
        rows = con.execute(f"SELECT {', '.join(keys)} FROM screening WHERE sigma_S_cm IS NOT NULL "
                           "ORDER BY campaign, material, run_id").fetchall()
        bins = con.execute(
            "SELECT s.campaign, s.material, s.run_id, list(s.freq_cm1 ORDER BY s.freq_cm1), "
            "list(s.intensity ORDER BY s.freq_cm1) FROM spectra s GROUP BY ALL").fetchall()
    finally:
        con.close()
    if not rows:
        raise InputError("no computed runs with a conductivity", file=results_root,
                         fix="run a campaign into this results root (ramanscreen screen FILE -r ROOT)")
    spectra = {(c, m, r): (x, y) for c, m, r, x, y in bins}
    return _with_band_features(keys, rows, spectra, bands_cm1, window_cm1, settings)


__all__ = [
    "BASELINES",
    "computed_features",
    "PROFILES",
    "PeakFit",
    "PeakSettings",
    "RegressionResult",
    "band_features",
    "estimate_baseline",
    "experimental_features",
    "fit_peaks",
    "gaussian",
    "linear_regression",
    "lorentzian",
    "plot_peak_fit",
    "voigt",
]
