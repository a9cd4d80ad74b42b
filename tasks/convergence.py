"""Convergence as data (Grumet et al., Figs. S5–S12): the spectrum, cp_fraction and D of
shorter runs and of smaller training sets, each against the full run.

Two tests, each at the fractions :data:`FRACTIONS` (¼, ½, full):

* ``trajectory_length`` (Figs. S9–S12): the spectrum of the first ¼ and ½ of the α series
  (:func:`ramanscreen.tasks.spectra.raman_spectrum`, same settings) and D of the mobile species
  from the first ¼ and ½ of the stored trajectory
  (:func:`ramanscreen.tasks.transport.analyze_transport`, same settings);
* ``training_set`` (Figs. S5–S8): the α model refitted on the first N_T/4 and N_T/2 frames of a
  seeded shuffle of its N_T training frames (nested subsets, not biased to early MD times; the
  same λ-SOAP hypers, ridge grid and seed, no committee), predicting the same α frames; D is
  a property of the MD alone and is not recomputed (null).

For each (test, fraction) a row records

* ``spectrum_l2_change``: the relative L2 distance between the *unit-area* spectra over the
  run's cp_fraction window [omega_min_cm1, host end] (the shorter run's spectrum linearly
  interpolated onto the full run's grid):
  ‖I_sub/A_sub − I_full/A_full‖₂ / ‖I_full/A_full‖₂, with A = ∫ I dν̃ and ‖f‖₂² = ∫ f² dν̃
  (trapezoid rule). It measures a change of *shape*, not of overall scale (intensities are in
  arbitrary units);
* ``cp_fraction`` and ``cp_fraction_change`` (subset − full), the ``fraction_below_omega_c``
  descriptor of :func:`ramanscreen.tasks.spectra.central_peak_descriptors` on each spectrum;
* ``D_cm2_s`` and ``D_change_cm2_s`` (subset − full) for the length test;
* ``rmse_diag_A3`` and ``rmse_offdiag_A3`` for the training test: the refitted model's RMSE on the
  α model's test frames (the learning curve of Figs. 2A/S4; the full fraction is the model itself);
* ``note``: why a value is missing (e.g. a quarter of a short run is too coarse for the windows).

:func:`compare_reference_spectrum` (Fig. 2D) compares the ML-predicted spectrum with the spectrum
of the *reference* α of the same consecutive α frames (``[reference] series_frames``, affordable
for the embedded dipole model): the ``reference_spectrum`` table.

:func:`assess_convergence` turns the rows into the ranking's ``converged`` flag under the
thresholds of :class:`ramanscreen.analytics.ranking.Thresholds` (``[ranking]``): the ½ rows of
both tests are checked (the ¼ rows are data for the figures).

Everything is vectorised: the sub-series spectra are one rfft each, the two refitted models are
fitted on one feature matrix of the training frames (:func:`fit_training_subsets`, in the
campaign's fit task) and stacked as extra weight rows beside the model's own, so the campaign's
prediction task gets their α series from the same density evaluation of the α frames (the fast
path of :class:`AlphaModel`): the convergence task never passes over the trajectory again.

>>> import numpy as np
>>> from ramanscreen.tasks.spectra import SpectrumSettings
>>> rng = np.random.default_rng(0)
>>> a = rng.normal(size=(8192, 3, 3)); a = a + a.transpose(0, 2, 1)
>>> s = SpectrumSettings(omega_min_cm1=20.0, omega_c_cm1=100.0, host_window_cm1=(100.0, 1000.0))
>>> res = length_convergence(a, 10.0, settings=s)
>>> [(r["fraction"], r["n_alpha"]) for r in res.rows]
[(0.25, 2048), (0.5, 4096), (1.0, 8192)]
>>> bool(res.rows[2]["spectrum_l2_change"] == 0.0 and res.rows[0]["spectrum_l2_change"] > 0.0)
True
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ramanscreen.tasks.common import InputError
from ramanscreen.tasks.spectra import (
    MIN_FRAMES,
    RamanSpectrum,
    SpectrumSettings,
    central_peak_descriptors,
    on_grid,
    raman_spectrum,
    window_fraction,
)

#: The shortest reference α series compared (fewer samples: no spectrum; :data:`ramanscreen.tasks.spectra.MIN_FRAMES`).
MIN_SERIES_FRAMES = MIN_FRAMES
#: Fractions of the trajectory and of N_T the campaign computes (the paper's ¼, ½, full).
FRACTIONS = (0.25, 0.5, 1.0)
#: The fraction whose rows decide ``converged`` (its change to the full run).
CHECKED_FRACTION = 0.5
LENGTH = "trajectory_length"
TRAINING = "training_set"
TESTS = (LENGTH, TRAINING)


@dataclass
class ConvergenceResult:
    """Rows of the ``convergence`` table and the spectra they were computed from (each on the
    full run's grid ``freq_cm1``, keyed by (test, fraction))."""

    freq_cm1: np.ndarray
    rows: list[dict[str, Any]] = field(default_factory=list)
    spectra: dict[tuple[str, float], np.ndarray] = field(default_factory=dict)

    def extend(self, other: ConvergenceResult) -> ConvergenceResult:
        """Both results' rows and spectra (the same full-run grid)."""
        if not np.array_equal(self.freq_cm1, other.freq_cm1):
            raise ValueError("convergence results on different frequency grids")
        return ConvergenceResult(self.freq_cm1, [*self.rows, *other.rows], {**self.spectra, **other.spectra})

    def spectra_table(self) -> dict[str, np.ndarray]:
        """Long-format columns of the ``convergence_spectra`` table: test, fraction, freq_cm1, intensity."""
        keys = list(self.spectra)
        n = len(self.freq_cm1)
        return {
            "test": np.repeat(np.array([k[0] for k in keys], dtype=object), n).astype(str),
            "fraction": np.repeat(np.array([k[1] for k in keys], dtype=np.float64), n),
            "freq_cm1": np.tile(self.freq_cm1, len(keys)),
            "intensity": np.concatenate([self.spectra[k] for k in keys]) if keys else np.zeros(0),
        }


def spectrum_l2_change(
    full: RamanSpectrum | tuple[Any, Any],
    freq_cm1: Any,
    intensity: Any,
    *,
    omega_min_cm1: float = SpectrumSettings.omega_min_cm1,
    host_window_cm1: tuple[float, float] = SpectrumSettings.host_window_cm1,
) -> float:
    """Relative L2 distance of the unit-area spectrum (``freq_cm1``, ``intensity``) from the
    unit-area ``full`` spectrum over [omega_min_cm1, host end] on the full spectrum's grid (see the
    module docstring). ``full`` is a :class:`RamanSpectrum` or (freq_cm1, intensity). NaN if an
    area is not positive.

    >>> nu = np.linspace(0.0, 1000.0, 1001)
    >>> peak = np.exp(-0.5 * ((nu - 300.0) / 20.0) ** 2)
    >>> round(spectrum_l2_change((nu, peak), nu, 3.0 * peak), 12)   # a change of scale is no change of shape
    0.0
    >>> other = np.exp(-0.5 * ((nu - 500.0) / 20.0) ** 2)   # a 10% second peak: 0.1·√2/1.1
    >>> round(spectrum_l2_change((nu, peak), nu, peak + 0.1 * other), 3)
    0.129
    """
    f_full, i_full = ((full.freq_cm1, full.intensity) if isinstance(full, RamanSpectrum) else full)
    nu = np.asarray(f_full, dtype=np.float64)
    top = min(float(host_window_cm1[1]), float(nu[-1]))
    sel = (nu >= omega_min_cm1) & (nu <= top)
    x = nu[sel]
    ref = np.asarray(i_full, dtype=np.float64)[sel]
    sub = on_grid(freq_cm1, intensity, nu)[sel]
    a_ref, a_sub = float(np.trapezoid(ref, x)), float(np.trapezoid(sub, x))
    if not (a_ref > 0 and a_sub > 0):
        return float("nan")
    d = sub / a_sub - ref / a_ref
    return float(math.sqrt(np.trapezoid(d * d, x) / np.trapezoid((ref / a_ref) ** 2, x)))


@dataclass(frozen=True)
class ReferenceSpectrumComparison:
    """The ML-predicted and the reference spectrum of the same α frames (Fig. 2D), and how they differ.

    ``intensity_ml`` and ``intensity_reference`` are on one grid ``freq_cm1`` and divided by the
    *same* number, the reference spectrum's area over the cp_fraction window [omega_min_cm1,
    host end] (so the reference has unit area there and an amplitude error of the ML α shows).
    ``l2_difference`` = ‖I_ml − I_ref‖₂ / ‖I_ref‖₂ over that window (trapezoid rule), on these
    commonly normalised intensities; ``l2_shape_difference`` the scale-free
    :func:`spectrum_l2_change` (each spectrum at unit area). ``cp_fraction_ml`` /
    ``cp_fraction_reference``: the ``fraction_below_omega_c`` formula
    (:func:`ramanscreen.tasks.spectra.window_fraction`) on each. ``note``: set when the series is
    too short or too coarse for the windows (:meth:`SpectrumSettings.check_sampling`'s reason):
    the numbers are then computed all the same, on the bins there are.
    """

    freq_cm1: np.ndarray
    intensity_ml: np.ndarray
    intensity_reference: np.ndarray
    l2_difference: float
    l2_shape_difference: float
    cp_fraction_ml: float
    cp_fraction_reference: float
    n_frames: int
    duration_ps: float
    reference_method: str
    note: str | None = None

    def table(self, **extra: Any) -> dict[str, Any]:
        """Columns of the ``reference_spectrum`` table: one row per frequency bin, the metrics
        (and ``extra`` scalars, e.g. ``first_frame``) repeated on every row."""
        n = len(self.freq_cm1)
        scalars = {"l2_difference": self.l2_difference, "l2_shape_difference": self.l2_shape_difference,
                   "cp_fraction_ml": self.cp_fraction_ml, "cp_fraction_reference": self.cp_fraction_reference,
                   "n_frames": self.n_frames, "duration_ps": self.duration_ps,
                   "reference_method": self.reference_method, "note": self.note, **extra}
        return {"freq_cm1": np.asarray(self.freq_cm1, dtype=np.float64),
                "intensity_ml": np.asarray(self.intensity_ml, dtype=np.float64),
                "intensity_reference": np.asarray(self.intensity_reference, dtype=np.float64),
                **{k: [v] * n for k, v in scalars.items()}}


def compare_reference_spectrum(
    ml_alpha_A3: Any,
    reference_alpha_A3: Any,
    dt_fs: float,
    *,
    reference_method: str,
    settings: SpectrumSettings | None = None,
) -> ReferenceSpectrumComparison:
    """Fig. 2D: the Raman spectrum of the ML-predicted α series against the spectrum of the
    reference α of the *same* frames (both (n, 3, 3) in Å³, ``dt_fs`` apart), with the same
    spectrum settings (:func:`ramanscreen.tasks.spectra.raman_spectrum`, the campaign's ``settings``).

    Identical series give L2 = 0 and equal cp_fraction; ML α = c · reference α scales the
    intensity by c², so L2 = |c² − 1| while the shape (and cp_fraction) is unchanged:

    >>> rng = np.random.default_rng(0)
    >>> a = rng.normal(size=(512, 3, 3)); a = a + a.transpose(0, 2, 1)
    >>> s = SpectrumSettings(omega_min_cm1=20.0, omega_c_cm1=100.0, host_window_cm1=(100.0, 1000.0))
    >>> same = compare_reference_spectrum(a, a, 10.0, reference_method="ref", settings=s)
    >>> same.l2_difference, same.cp_fraction_ml == same.cp_fraction_reference, same.note
    (0.0, True, None)
    >>> big = compare_reference_spectrum(1.1 * a, a, 10.0, reference_method="ref", settings=s)
    >>> round(big.l2_difference, 12), round(big.l2_shape_difference, 12), round(big.cp_fraction_ml - big.cp_fraction_reference, 12)
    (0.21, 0.0, 0.0)
    """
    s = settings if settings is not None else SpectrumSettings()
    ml = np.asarray(ml_alpha_A3, dtype=np.float64)
    ref = np.asarray(reference_alpha_A3, dtype=np.float64)
    if ml.shape != ref.shape:
        raise InputError(f"the ML α series has shape {ml.shape}, the reference series {ref.shape}",
                         field="reference_alpha_A3", fix="give the reference α of exactly the ML series' frames")
    note = None
    try:
        s.check_sampling(dt_fs, len(ref))
    except InputError as exc:
        if len(ref) < MIN_SERIES_FRAMES:
            raise
        note = f"{len(ref)} α samples ({len(ref) * dt_fs / 1000.0:.3g} ps): {exc.message}"
    sp_ml = raman_spectrum(ml, dt_fs, **s.spectrum_kwargs())
    sp_ref = raman_spectrum(ref, dt_fs, **s.spectrum_kwargs())
    nu = np.asarray(sp_ref.freq_cm1)
    top = min(float(s.host_window_cm1[1]), float(nu[-1]))
    sel = (nu >= s.omega_min_cm1) & (nu <= top)
    area = float(np.trapezoid(sp_ref.intensity[sel], nu[sel])) if sel.sum() > 1 else 0.0
    scale = area if area > 0 else 1.0
    i_ml, i_ref = sp_ml.intensity / scale, sp_ref.intensity / scale
    norm = float(np.trapezoid(i_ref[sel] ** 2, nu[sel])) if sel.sum() > 1 else 0.0
    l2 = (float(math.sqrt(np.trapezoid((i_ml[sel] - i_ref[sel]) ** 2, nu[sel]) / norm)) if norm > 0
          else float("nan"))
    shape = spectrum_l2_change(sp_ref, sp_ml.freq_cm1, sp_ml.intensity, omega_min_cm1=s.omega_min_cm1,
                               host_window_cm1=s.host_window_cm1)
    cp = window_fraction(nu, np.stack([sp_ml.intensity, sp_ref.intensity]), **s.descriptor_kwargs())
    return ReferenceSpectrumComparison(freq_cm1=nu, intensity_ml=i_ml, intensity_reference=i_ref, l2_difference=l2,
                                       l2_shape_difference=shape, cp_fraction_ml=float(cp[0]),
                                       cp_fraction_reference=float(cp[1]), n_frames=int(len(ref)),
                                       duration_ps=len(ref) * dt_fs / 1000.0, reference_method=str(reference_method),
                                       note=note)


def _cp_fraction(spec: RamanSpectrum, settings: SpectrumSettings) -> float:
    return float(central_peak_descriptors(spec, **settings.descriptor_kwargs())["fraction_below_omega_c"])


def _spectrum_row(test: str, fraction: float, alpha: np.ndarray, dt_fs: float, settings: SpectrumSettings,
                  full: RamanSpectrum, cp_full: float) -> tuple[dict[str, Any], np.ndarray | None]:
    """The spectrum columns of one row, and the spectrum on the full grid (None: not computed)."""
    row: dict[str, Any] = {"test": test, "fraction": float(fraction), "n_alpha": int(len(alpha)),
                           "duration_ps": len(alpha) * dt_fs / 1000.0, "spectrum_l2_change": None,
                           "cp_fraction": None, "cp_fraction_change": None, "note": None}
    try:
        settings.check_sampling(dt_fs, len(alpha))
    except InputError as exc:
        row["note"] = f"{len(alpha)} α samples ({row['duration_ps']:.3g} ps): {exc.message}"
        return row, None
    spec = raman_spectrum(alpha, dt_fs, **settings.spectrum_kwargs())
    cp = _cp_fraction(spec, settings)
    row["spectrum_l2_change"] = spectrum_l2_change(full, spec.freq_cm1, spec.intensity,
                                                   omega_min_cm1=settings.omega_min_cm1,
                                                   host_window_cm1=settings.host_window_cm1)
    row["cp_fraction"], row["cp_fraction_change"] = cp, cp - cp_full
    return row, on_grid(spec.freq_cm1, spec.intensity, full.freq_cm1)


def _full(alpha: np.ndarray, dt_fs: float, settings: SpectrumSettings) -> tuple[RamanSpectrum, float]:
    settings.check_sampling(dt_fs, len(alpha))
    spec = raman_spectrum(alpha, dt_fs, **settings.spectrum_kwargs())
    return spec, _cp_fraction(spec, settings)


def length_convergence(
    alpha_A3: Any,
    dt_fs: float,
    *,
    settings: SpectrumSettings | None = None,
    traj: Any = None,
    mobile: str | None = None,
    temperature_k: float | None = None,
    transport: Any = None,
    d_full_cm2_s: float | None = None,
    fractions: Sequence[float] = FRACTIONS,
) -> ConvergenceResult:
    """The ``trajectory_length`` rows: the spectrum of the first ``fraction`` of the α series
    (n, 3, 3), ``dt_fs`` apart, against the whole; with ``traj`` (the stored
    :class:`~ramanscreen.tasks.trajectory.Trajectory` the α series was sampled from), also D of
    ``mobile`` from its first ``fraction`` at ``temperature_k`` with ``transport``
    (:class:`~ramanscreen.tasks.transport.TransportSettings`). The fraction 1 row is the full run;
    ``d_full_cm2_s``, the full run's D already computed with the same settings, saves its
    recomputation.
    """
    from ramanscreen.tasks.transport import TransportSettings, analyze_transport

    settings = settings or SpectrumSettings()
    alpha = np.asarray(alpha_A3, dtype=np.float64)
    full, cp_full = _full(alpha, dt_fs, settings)
    out = ConvergenceResult(full.freq_cm1)
    d_full: float | None = None
    t_settings = transport or TransportSettings()
    for f in sorted(fractions, reverse=True):  # the full run first: its D is the reference
        n = len(alpha) if f >= 1.0 else int(f * len(alpha))
        row, spec = _spectrum_row(LENGTH, f, alpha[:n], dt_fs, settings, full, cp_full)
        row.update({"species": mobile, "D_cm2_s": None, "D_change_cm2_s": None})
        if f >= 1.0 and d_full_cm2_s is not None and math.isfinite(d_full_cm2_s):
            row["D_cm2_s"] = d_full = float(d_full_cm2_s)
        elif traj is not None and mobile is not None:
            m = len(traj) if f >= 1.0 else int(f * len(traj))
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # e.g. "fit window too long for two blocks"
                    res = analyze_transport(traj[:m], species=[mobile], temperature_k=float(temperature_k or 0.0),
                                            **t_settings.analysis_kwargs())
                d = res.D_cm2_s[mobile]
                row["D_cm2_s"] = None if d is None or not math.isfinite(d) else float(d)
            except (InputError, ValueError, np.linalg.LinAlgError) as exc:  # a diagnostic: recorded, not fatal
                msg = exc.message if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
                row["note"] = "; ".join(x for x in (row["note"], f"D from {m} frames: {msg}") if x)
            if f >= 1.0:
                d_full = row["D_cm2_s"]
            elif row["D_cm2_s"] is not None and d_full is not None:
                row["D_change_cm2_s"] = row["D_cm2_s"] - d_full
        if f >= 1.0 and row["D_cm2_s"] is not None:
            row["D_change_cm2_s"] = 0.0
        out.rows.append(row)
        if spec is not None:
            out.spectra[(LENGTH, float(f))] = spec
    out.rows.sort(key=lambda r: r["fraction"])
    return out


def refit_subsets(model: Any, train_frames: Sequence, train_alpha_A3: Any, sizes: Sequence[int], *,
                  seed: int | None = None) -> tuple[Any, list[np.ndarray]]:
    """One :class:`~ramanscreen.tasks.polarizability.AlphaModel` whose weight rows are ``model``
    refitted on the first ``sizes[k]`` frames of a seeded shuffle of its training frames
    (nested subsets; the model's hypers, ridge grid and seed; no committee), and the training
    indices of each row. The λ-SOAP features of the training frames are computed once for every
    refit; ``stacked._all_models(frames)`` then predicts every row through one density evaluation.
    """
    from ramanscreen.tasks.polarizability import AlphaModel, RidgeSettings, _features_chunked

    alpha = np.asarray(train_alpha_A3, dtype=np.float64)
    seed = int(model.meta.get("seed", 0)) if seed is None else int(seed)
    ridge = RidgeSettings.from_dict(model.meta["ridge"]) if model.meta.get("ridge") else RidgeSettings()
    featurizer = model.featurizer
    X0, X2 = _features_chunked(featurizer, list(train_frames))
    order = np.random.default_rng(seed).permutation(len(train_frames))
    fitted, subsets = [], []
    for k in sizes:
        idx = np.sort(order[: int(k)])
        fitted.append(AlphaModel._fit_features(
            X0[idx], X2[idx], alpha[idx], frames=[train_frames[i] for i in idx], hypers=model.hypers,
            elements=list(model.elements), n_committee=0, seed=seed, method=model.meta.get("alpha_method", "unknown"),
            ridge=ridge, featurizer=featurizer))
        subsets.append(idx)
    stacked = AlphaModel(
        hypers=model.hypers, elements=list(model.elements),
        weights={lam: np.concatenate([m.weights[lam][:1] for m in fitted]) for lam in (0, 2)},
        intercept_A3=np.concatenate([m.intercept_A3[:1] for m in fitted]),
        meta={**model.meta, "n_committee": len(fitted) - 1},
    )
    stacked.__dict__["_featurizer"] = featurizer
    return stacked, subsets


def _floor(min_train_frames: int | None) -> int:
    from ramanscreen.tasks.polarizability import ModelSettings

    return ModelSettings.min_train_frames if min_train_frames is None else int(min_train_frames)


def training_subset_sizes(n_train: int, fractions: Sequence[float] = FRACTIONS,
                          min_train_frames: int | None = None) -> tuple[dict[float, int], list[float]]:
    """The training-set size of every fraction of ``n_train`` and the fractions below 1 that are
    refitted (those leaving at least ``min_train_frames``, default
    ``ModelSettings.min_train_frames``).

    >>> training_subset_sizes(300)
    ({0.25: 75, 0.5: 150, 1.0: 300}, [0.25, 0.5])
    >>> training_subset_sizes(8)
    ({0.25: 2, 0.5: 4, 1.0: 8}, [0.5])
    """
    floor = _floor(min_train_frames)
    sizes = {float(f): (int(n_train) if f >= 1.0 else int(f * n_train)) for f in fractions}
    return sizes, [f for f in sizes if f < 1.0 and sizes[f] >= floor]


@dataclass
class TrainingSubsets:
    """The α model refitted on nested fractions of its training set (:func:`fit_training_subsets`):
    one stacked model (a weight row per refitted fraction, in ``fractions`` order), the size of
    every fraction and, when test frames were given, the test metrics of every fraction
    (:func:`ramanscreen.tasks.polarizability.alpha_metrics`; the full fraction is the campaign's
    model), the learning curve of Figs. 2A/S4."""

    model: Any
    fractions: list[float]
    sizes: dict[float, int]
    test_metrics: dict[float, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (a flow's task output); the stacked model is saved separately."""
        return {"fractions": list(self.fractions), "sizes": {str(k): v for k, v in self.sizes.items()},
                "test_metrics": {str(k): v for k, v in self.test_metrics.items()}}


def fit_training_subsets(model: Any, train_frames: Sequence, train_alpha_A3: Any, *,
                         test_frames: Sequence | None = None, test_alpha_A3: Any = None,
                         fractions: Sequence[float] = FRACTIONS, min_train_frames: int | None = None,
                         seed: int | None = None) -> TrainingSubsets:
    """``model`` refitted on N_T·fraction of its training frames (:func:`refit_subsets`) for every
    fraction below 1 that leaves enough frames (:func:`training_subset_sizes`), and with test
    frames the test metrics of each refit and of ``model`` itself. The stacked model predicts every
    refit through one density evaluation, so the campaign's prediction task computes their α
    series beside the model's own (no second pass over the trajectory)."""
    from ramanscreen.tasks.polarizability import alpha_metrics

    sizes, refit = training_subset_sizes(len(train_frames), fractions, min_train_frames)
    stacked = None
    if refit:
        stacked, _ = refit_subsets(model, train_frames, train_alpha_A3, [sizes[f] for f in refit], seed=seed)
    out = TrainingSubsets(stacked, refit, sizes)
    if test_frames is not None and len(test_frames) >= 1:
        true = np.asarray(test_alpha_A3, dtype=np.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the test frames' size against a subset's training range
            if stacked is not None:
                preds = stacked._all_models(list(test_frames))
                out.test_metrics.update({f: alpha_metrics(true, preds[k]) for k, f in enumerate(refit)})
            out.test_metrics[1.0] = alpha_metrics(true, model.predict(list(test_frames)))
    return out


def training_convergence(
    alpha_A3: Any,
    dt_fs: float,
    *,
    model: Any = None,
    frames: Sequence | None = None,
    train_frames: Sequence | None = None,
    train_alpha_A3: Any = None,
    subset_alpha_A3: dict[float, Any] | None = None,
    n_train: int | None = None,
    test_metrics: dict[float, dict[str, float]] | None = None,
    settings: SpectrumSettings | None = None,
    fractions: Sequence[float] = FRACTIONS,
    min_train_frames: int | None = None,
) -> ConvergenceResult:
    """The ``training_set`` rows: the campaign's α model (it gave the α series ``alpha_A3``)
    refitted on N_T·fraction of its training frames, each refit predicting α at the same frames,
    whose spectrum is compared with the full model's. Fractions that leave fewer than
    ``min_train_frames`` (default: ``ModelSettings.min_train_frames``) frames get a note.

    Either the refits' α series are given (``subset_alpha_A3``: fraction → (n, 3, 3), with
    ``n_train``; what the campaign's prediction task computed from the stacked model of
    :func:`fit_training_subsets`), or they are computed here from ``model`` (fitted on
    ``train_frames`` with α ``train_alpha_A3``) and the α ``frames``. ``test_metrics`` (fraction →
    :func:`~ramanscreen.tasks.polarizability.alpha_metrics`) add the learning curve's
    ``rmse_diag_A3`` / ``rmse_offdiag_A3`` to the rows.
    """
    settings = settings or SpectrumSettings()
    alpha = np.asarray(alpha_A3, dtype=np.float64)
    predicted: dict[float, np.ndarray] = {}
    if subset_alpha_A3 is not None:
        if n_train is None:
            raise InputError("n_train is needed with subset_alpha_A3", field="n_train", fix="pass the model's N_T")
        predicted = {float(f): np.asarray(a, dtype=np.float64) for f, a in subset_alpha_A3.items()}
        n_t = int(n_train)
    else:
        if model is None or frames is None or train_frames is None:
            raise InputError("give subset_alpha_A3, or model, frames and train_frames", field="model",
                             fix="pass the refits' α series or the model and its data")
        if len(frames) != len(alpha):
            raise InputError(f"{len(frames)} frames but {len(alpha)} α samples", field="frames",
                             fix="pass the frames the α series was predicted at")
        n_t = len(train_frames)
    sizes, refit = training_subset_sizes(n_t, fractions, min_train_frames)
    floor = _floor(min_train_frames)
    if subset_alpha_A3 is None and refit:
        assert train_frames is not None and frames is not None  # checked above
        stacked, _ = refit_subsets(model, train_frames, train_alpha_A3, [sizes[f] for f in refit])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the frames' size against the subsets' training range
            preds = stacked._all_models(list(frames))
        predicted = {f: preds[k] for k, f in enumerate(refit)}
    full, cp_full = _full(alpha, dt_fs, settings)
    out = ConvergenceResult(full.freq_cm1)
    for f in sorted(sizes):
        if f >= 1.0:
            row, spec = _spectrum_row(TRAINING, f, alpha, dt_fs, settings, full, cp_full)
        elif f in predicted:
            row, spec = _spectrum_row(TRAINING, f, predicted[f], dt_fs, settings, full, cp_full)
        else:
            row = {"test": TRAINING, "fraction": float(f), "n_alpha": int(len(alpha)),
                   "duration_ps": len(alpha) * dt_fs / 1000.0, "spectrum_l2_change": None, "cp_fraction": None,
                   "cp_fraction_change": None,
                   "note": f"N_T × {f:g} = {sizes[f]} training frames, fewer than the {floor} a fit needs"}
            spec = None
        m = (test_metrics or {}).get(f, {})
        row.update({"n_train": sizes[f], "species": None, "D_cm2_s": None, "D_change_cm2_s": None,
                    "rmse_diag_A3": m.get("rmse_diag_A3"), "rmse_offdiag_A3": m.get("rmse_offdiag_A3")})
        out.rows.append(row)
        if spec is not None:
            out.spectra[(TRAINING, float(f))] = spec
    return out


def assess_convergence(
    rows: Sequence[dict[str, Any]],
    *,
    max_l2: float,
    max_cp_change: float,
    max_D_rel_change: float,
    d_floor_cm2_s: float,
    fraction: float = CHECKED_FRACTION,
) -> tuple[bool | None, str]:
    """(converged, why) from a run's ``convergence`` rows: at ``fraction`` (½) of both the
    trajectory and N_T, the spectrum's L2 change must be ≤ ``max_l2``, |Δcp_fraction| ≤
    ``max_cp_change`` and, for the trajectory, |ΔD| ≤ ``max_D_rel_change`` · max(|D_full|,
    ``d_floor_cm2_s``) (the floor keeps a D that is noise around 0 from failing on its own
    relative change). A missing value (a sub-run too short for the windows) is not converged.
    No rows at all: (None, why).

    >>> rows = [{"test": "trajectory_length", "fraction": 0.5, "spectrum_l2_change": 0.05, "cp_fraction_change": 0.01,
    ...          "D_cm2_s": 1.2e-5, "D_change_cm2_s": 2e-6},
    ...         {"test": "trajectory_length", "fraction": 1.0, "D_cm2_s": 1.0e-5},
    ...         {"test": "training_set", "fraction": 0.5, "spectrum_l2_change": 0.3, "cp_fraction_change": 0.0}]
    >>> assess_convergence(rows, max_l2=0.2, max_cp_change=0.05, max_D_rel_change=0.5, d_floor_cm2_s=1e-7)
    (False, 'training_set ½: spectrum L2 change 0.3 > 0.2')
    """
    if not rows:
        return None, "no convergence data (run written before the convergence table)"
    half = "½" if fraction == 0.5 else f"{fraction:g}"
    reasons: list[str] = []
    for test in TESTS:
        at = [r for r in rows if r.get("test") == test and abs(float(r.get("fraction") or 0) - fraction) < 1e-9]
        if not at:
            reasons.append(f"{test} {half}: not computed")
            continue
        r = at[0]
        l2, dcp = r.get("spectrum_l2_change"), r.get("cp_fraction_change")
        if l2 is None or dcp is None or not (math.isfinite(l2) and math.isfinite(dcp)):
            reasons.append(f"{test} {half}: no spectrum ({r.get('note') or 'not computed'})")
            continue
        if l2 > max_l2:
            reasons.append(f"{test} {half}: spectrum L2 change {l2:.3g} > {max_l2:g}")
        if abs(dcp) > max_cp_change:
            reasons.append(f"{test} {half}: cp_fraction change {dcp:+.3g}, |Δ| > {max_cp_change:g}")
        if test == LENGTH:
            full = [x for x in rows if x.get("test") == LENGTH and float(x.get("fraction") or 0) >= 1.0]
            d_full = full[0].get("D_cm2_s") if full else None
            dd = r.get("D_change_cm2_s")
            if dd is None or d_full is None or not (math.isfinite(dd) and math.isfinite(d_full)):
                reasons.append(f"{test} {half}: no D ({r.get('note') or 'not computed'})")
            else:
                scale = max(abs(d_full), d_floor_cm2_s)
                if abs(dd) > max_D_rel_change * scale:
                    reasons.append(f"{test} {half}: D change {dd:+.2e} cm²/s, |Δ| > {max_D_rel_change:g} × "
                                   f"{scale:.2e}")
    if reasons:
        return False, "; ".join(reasons)
    return True, f"{half} of the trajectory and of N_T within the thresholds"


def convergence_study(
    alpha_A3: Any,
    dt_fs: float,
    *,
    settings: SpectrumSettings,
    traj: Any = None,
    mobile: str | None = None,
    temperature_k: float | None = None,
    transport: Any = None,
    d_full_cm2_s: float | None = None,
    model: Any = None,
    frames: Sequence | None = None,
    train_frames: Sequence | None = None,
    train_alpha_A3: Any = None,
    subset_alpha_A3: dict[float, Any] | None = None,
    n_train: int | None = None,
    test_metrics: dict[float, dict[str, float]] | None = None,
) -> ConvergenceResult:
    """Both tests of one run (:func:`length_convergence`, then :func:`training_convergence` when
    the refits' α series, or the model, the α frames and the training data, are given): the rows
    of the ``convergence`` table and the spectra of ``convergence_spectra``."""
    out = length_convergence(alpha_A3, dt_fs, settings=settings, traj=traj, mobile=mobile,
                             temperature_k=temperature_k, transport=transport, d_full_cm2_s=d_full_cm2_s)
    if subset_alpha_A3 is not None or (model is not None and frames is not None and train_frames is not None):
        out = out.extend(training_convergence(alpha_A3, dt_fs, model=model, frames=frames, train_frames=train_frames,
                                              train_alpha_A3=train_alpha_A3, subset_alpha_A3=subset_alpha_A3,
                                              n_train=n_train, test_metrics=test_metrics, settings=settings))
        n_t = int(n_train) if n_train is not None else len(train_frames or ())
        for r in out.rows:
            r.setdefault("n_train", n_t)
    return out


__all__ = [
    "CHECKED_FRACTION",
    "FRACTIONS",
    "LENGTH",
    "TESTS",
    "TRAINING",
    "ConvergenceResult",
    "ReferenceSpectrumComparison",
    "TrainingSubsets",
    "assess_convergence",
    "compare_reference_spectrum",
    "convergence_study",
    "length_convergence",
    "refit_subsets",
    "spectrum_l2_change",
    "training_convergence",
    "fit_training_subsets",
    "training_subset_sizes",
]
