"""Ion transport from an MD trajectory: MSD, diffusivity, conductivity, VDOS, hopping descriptors.

Conventions (see ``docs/transport.md`` for the full text):

* Positions are unwrapped frame to frame (:func:`unwrap_positions`), then the centre-of-mass
  drift of a reference group is removed (:func:`remove_drift`; default: the *framework*, i.e.
  every atom not of an analysed species, mass-weighted).
* MSD(t) per species with every time origin, by FFT (:func:`msd_fft`, O(F log F)).
* D = slope / 6 of MSD(t) over the diffusive window, by default [10 %, 50 %] of one fifth of
  the run (one block), i.e. [2 %, 10 %] of the run.  Standard error from kinisi's Bayesian
  regression (default) or from block averaging over five blocks.
* σ = n q² D / (k_B T) (Nernst–Einstein, Haven ratio 1), n from the mean cell volume.
* VDOS per species from the velocity power spectrum (Welch, Hann window), normalised to unit
  area over ν ≥ 0 in cm⁻¹.
* Units are in the names: ``dt_fs``, ``time_ps``, ``msd_A2``, ``D_cm2_s``, ``sigma_S_cm``,
  ``freq_cm1``.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> walk = np.cumsum(rng.normal(0.0, 0.1, (2000, 50, 3)), axis=0)   # 0.01 Å² per step and axis
>>> msd = msd_fft(walk)
>>> round(float(msd[100] / 100), 3)  # 3 · 0.01 Å² per step
0.03
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import scipy.constants as const
import scipy.fft

from ramanscreen.tasks.common import CM1_PER_INV_FS, CM2_PER_S_PER_A2_PER_FS, InputError
from ramanscreen.tasks.schema import check, setting
from ramanscreen.tasks.trajectory import Trajectory

#: Formal charges (units of e) used by the Nernst–Einstein conductivity unless overridden.
FORMAL_CHARGES: dict[str, float] = {
    "H": 1, "Li": 1, "Na": 1, "K": 1, "Rb": 1, "Cs": 1, "Ag": 1, "Cu": 1, "Tl": 1,
    "Mg": 2, "Ca": 2, "Zn": 2, "Sr": 2, "Ba": 2,
    "F": -1, "Cl": -1, "Br": -1, "I": -1, "O": -2, "S": -2, "Se": -2,
}
#: Fewest frames an analysis accepts.
MIN_FRAMES = 16

DriftMode = Literal["framework", "system", "none"]
DMethod = Literal["kinisi", "blocks"]


# ============================================================================ settings
@dataclass(frozen=True)
class TransportSettings:
    """How transport is analysed (the campaign's ``[transport]``); the defaults of
    :func:`analyze_transport`.

    >>> TransportSettings().fit_window_fs(duration_fs=4000.0, dt_fs=2.0)
    (80.0, 400.0)
    >>> TransportSettings(min_fit_start_ps=0.5).fit_window_fs(duration_fs=4000.0, dt_fs=2.0)
    (500.0, 1000.0)
    >>> TransportSettings(method="magic")
    Traceback (most recent call last):
    ...
    ramanscreen.tasks.common.InputError: method: 'magic' is not one of kinisi, blocks (fix: ...)
    """

    method: str = setting("kinisi", doc="D and its error: kinisi (Bayesian regression) or blocks (OLS fit + "
                          "block averaging)", choices=("kinisi", "blocks"))
    drift: str = setting("framework", doc="centre-of-mass drift removed before the MSD: framework, system or none",
                         choices=("framework", "system", "none"))
    n_blocks: int = setting(5, doc="blocks of the run: the default fit window is 10–50 % of one block, and "
                            "blocks give the error of the blocks method", ge=1)
    min_fit_start_ps: float = setting(0.0, doc="earliest start of the default MSD fit window (after the "
                                      "ballistic/caged regime; capped at a quarter of the run)", unit="ps", ge=0)
    fit_start_ps: float | None = setting(None, doc="start of the MSD fit window (none: the default window)",
                                         unit="ps", ge=0)
    fit_end_ps: float | None = setting(None, doc="end of the fit window of the blocks method (none: default; "
                                       "kinisi fits to the end of the run)", unit="ps", gt=0)
    n_lags: int = setting(200, doc="log-spaced lags of the stored MSD and α₂ curves", ge=2)
    vdos_resolution_cm1: float = setting(2.0, doc="VDOS bin spacing (Welch segment length)", unit="cm⁻¹", gt=0)
    vdos0_max_cm1: float = setting(5.0, doc="VDOS(ω→0) is the mean VDOS up to this frequency", unit="cm⁻¹", gt=0)
    seed: int = setting(0, doc="seed of kinisi's sampler")

    def __post_init__(self) -> None:
        check(self)
        if self.fit_start_ps is not None and self.fit_end_ps is not None and not self.fit_end_ps > self.fit_start_ps:
            raise InputError(f"fit_end_ps = {self.fit_end_ps:g} must exceed fit_start_ps = {self.fit_start_ps:g}",
                             field="fit_end_ps", fix="choose start < end")

    def analysis_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`analyze_transport`."""
        return {k: getattr(self, k) for k in ("method", "drift", "n_blocks", "min_fit_start_ps", "fit_start_ps",
                                               "fit_end_ps", "n_lags", "vdos_resolution_cm1", "vdos0_max_cm1",
                                               "seed")}

    def fit_window_fs(self, duration_fs: float, dt_fs: float) -> tuple[float, float]:
        """The MSD fit window (start, end) in fs of a run of ``duration_fs`` sampled every ``dt_fs``.

        Default: 10 % and 50 % of one block (the run / ``n_blocks``); ``min_fit_start_ps`` moves
        the default start later (at most to a quarter of the run) and the end to at least twice
        the start. Raises :class:`InputError` (field ``fit_start_ps``) when the window does not
        fit in the run.
        """
        block_fs = duration_fs / max(1, self.n_blocks)
        start_fs = 0.1 * block_fs if self.fit_start_ps is None else self.fit_start_ps * 1e3
        if self.fit_start_ps is None and self.min_fit_start_ps > 0:
            start_fs = min(max(start_fs, self.min_fit_start_ps * 1e3), 0.25 * duration_fs)
        end_fs = (min(max(0.5 * block_fs, 2.0 * start_fs), duration_fs) if self.fit_end_ps is None
                  else self.fit_end_ps * 1e3)
        if not (0 <= start_fs < end_fs <= duration_fs) or end_fs - start_fs < 2 * dt_fs:
            raise InputError(
                f"fit window [{start_fs / 1e3:g}, {end_fs / 1e3:g}] ps does not fit in the {duration_fs / 1e3:g} ps run",
                field="fit_start_ps", fix="choose 0 ≤ start < end ≤ the run length, or a longer run",
            )
        return start_fs, end_fs

    def check_run(self, n_frames: int, dt_fs: float) -> None:
        """Raise :class:`InputError` if a run of ``n_frames`` stored frames ``dt_fs`` apart is too
        short to analyse (field ``n_frames``) or for the fit window (``fit_start_ps``)."""
        if n_frames < MIN_FRAMES:
            raise InputError(f"{n_frames} stored frames; transport needs at least {MIN_FRAMES}", field="n_frames",
                             fix="a longer trajectory")
        self.fit_window_fs((n_frames - 1) * dt_fs, dt_fs)


# ============================================================================ primitives
def unwrap_positions(
    positions_A: np.ndarray, cells_A: np.ndarray, pbc: Sequence[bool] | np.ndarray = (True, True, True)
) -> np.ndarray:
    """Unwrap positions across periodic boundaries (works for NPT/triclinic cells).

    Each frame-to-frame displacement is reduced to its minimum image in the fractional
    coordinates of the *later* frame's cell and the reduced displacements are summed (the
    "TOR" scheme of von Bülow, Bullerjahn & Hummer, J. Chem. Phys. 153, 021101 (2020), also used
    by kinisi), so a changing cell does not add spurious displacement.  Requires every atom
    to move less than half a cell between stored frames.

    Args:
        positions_A: (F, N, 3) Cartesian positions in Å, wrapped or not.
        cells_A: (F, 3, 3) cell vectors as rows, Å (or (3, 3) for a fixed cell).
        pbc: which of the three cell directions are periodic.

    Returns:
        (F, N, 3) unwrapped positions in Å; frame 0 is unchanged.

    >>> cell = np.eye(3) * 10.0
    >>> pos = np.array([[[9.5, 0, 0]], [[0.5, 0, 0]], [[1.5, 0, 0]]])   # crosses x = 10
    >>> unwrap_positions(pos, cell)[:, 0, 0].tolist()
    [9.5, 10.5, 11.5]
    """
    pos = np.asarray(positions_A, dtype=float)
    cells = np.asarray(cells_A, dtype=float)
    if cells.ndim == 2:
        cells = np.broadcast_to(cells, (pos.shape[0], 3, 3))
    periodic = np.asarray(pbc, dtype=bool)
    if pos.shape[0] < 2 or not periodic.any():
        return pos.copy()
    step = np.diff(pos, axis=0)                                   # (F-1, N, 3)
    if np.any(np.abs(np.linalg.det(cells[1:])) < 1e-12):
        raise InputError("a frame has a singular (flat or missing) cell; cannot unwrap", field="cell",
                         fix="write full 3D cells, or mark the trajectory non-periodic")
    inv = np.linalg.inv(cells[1:])                                # (F-1, 3, 3)
    frac = np.einsum("fnj,fjk->fnk", step, inv)
    frac -= np.where(periodic, np.round(frac), 0.0)
    step = np.einsum("fnk,fkj->fnj", frac, cells[1:])
    out = np.empty_like(pos)
    out[0] = pos[0]
    np.cumsum(step, axis=0, out=out[1:])
    out[1:] += pos[0]
    return out


def remove_drift(positions_A: np.ndarray, masses_amu: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Subtract the displacement of the reference atoms' centre of mass from every atom.

    Args:
        positions_A: (F, N, 3) *unwrapped* positions, Å.
        masses_amu: (N,) masses (the centre of mass is mass-weighted).
        reference: indices (or a boolean mask) of the atoms whose centre of mass is held fixed.

    >>> pos = np.zeros((3, 2, 3)); pos[:, :, 0] = np.arange(3)[:, None] * 0.5   # both drift
    >>> remove_drift(pos, np.ones(2), np.array([1]))[:, 0, 0].tolist()
    [0.0, 0.0, 0.0]
    """
    pos = np.asarray(positions_A, dtype=float)
    m = np.asarray(masses_amu, dtype=float)[reference]
    com = np.einsum("fnj,n->fj", pos[:, reference], m) / m.sum()
    return pos - (com - com[0])[:, None, :]


def msd_fft(positions_A: np.ndarray, *, atoms_per_block: int | None = None) -> np.ndarray:
    """Mean squared displacement, averaged over atoms and all time origins, by FFT.

    MSD(m) = ⟨|r(τ+m) − r(τ)|²⟩ over τ = 0 … F−1−m and all atoms, computed as
    S1(m) − 2·S2(m) where S2 is the position autocorrelation (zero-padded FFT) and S1 comes
    from prefix sums of |r|² (Calandrini et al., Collection SFN 12, 201 (2011)).  O(F log F)
    per coordinate; atoms are processed in blocks so memory stays near 50 MB.

    Args:
        positions_A: (F, N, 3) unwrapped positions in Å (or (F, 3) for one atom).
        atoms_per_block: atoms per FFT block (default: about 4·10⁶ numbers per block).

    Returns:
        (F,) MSD in Å² at lags 0 … F−1 frames.

    >>> r = np.arange(5.0)[:, None, None] * np.array([1.0, 0.0, 0.0])   # ballistic, 1 Å/frame
    >>> msd_fft(r).round(10).tolist()
    [0.0, 1.0, 4.0, 9.0, 16.0]
    """
    pos = np.asarray(positions_A, dtype=float)
    if pos.ndim == 2:
        pos = pos[:, None, :]
    n_frames, n_atoms, _ = pos.shape
    nfft = scipy.fft.next_fast_len(2 * n_frames, real=True)
    block = atoms_per_block or max(1, int(4e6 // (3 * n_frames)))
    s2 = np.zeros(n_frames)
    s1 = np.zeros(n_frames)
    lag = np.arange(n_frames)
    for a0 in range(0, n_atoms, block):  # blocks of atoms bound memory; not a per-atom loop
        x = pos[:, a0:a0 + block].reshape(n_frames, -1)
        x = x - x.mean(axis=0)                       # MSD is shift-invariant; improves accuracy
        spec = scipy.fft.rfft(x, n=nfft, axis=0)
        acf = scipy.fft.irfft(spec.real**2 + spec.imag**2, n=nfft, axis=0)[:n_frames]
        s2 += acf.sum(axis=1)
        sq = (x * x).sum(axis=1)
        prefix = np.concatenate([[0.0], np.cumsum(sq)])
        s1 += prefix[n_frames - lag] + (prefix[n_frames] - prefix[lag])
    counts = (n_frames - lag) * n_atoms
    msd = (s1 - 2.0 * s2) / counts
    msd[0] = 0.0
    return np.maximum(msd, 0.0)


def displacement_moments(
    positions_A: np.ndarray, lags: np.ndarray, *, max_origins: int = 1000
) -> tuple[np.ndarray, np.ndarray]:
    """⟨|Δr|²⟩ and ⟨|Δr|⁴⟩ at the given lags (frames), by direct differences.

    Vectorised over origins and atoms; at most ``max_origins`` evenly strided time origins per
    lag (all origins when there are fewer).  Used for the non-Gaussian parameter.

    >>> r = np.arange(6.0)[:, None, None] * np.array([1.0, 0.0, 0.0])
    >>> [m.tolist() for m in displacement_moments(r, np.array([1, 2]))]
    [[1.0, 4.0], [1.0, 16.0]]
    """
    pos = np.asarray(positions_A, dtype=float)
    n_frames = pos.shape[0]
    m2 = np.empty(len(lags))
    m4 = np.empty(len(lags))
    for k, lag in enumerate(np.asarray(lags, dtype=int)):  # loop over lags only
        stride = max(1, (n_frames - lag) // max_origins)
        d = pos[lag::stride][: len(range(0, n_frames - lag, stride))] - pos[: n_frames - lag: stride]
        r2 = np.einsum("fnj,fnj->fn", d, d)
        m2[k] = r2.mean()
        m4[k] = (r2 * r2).mean()
    return m2, m4


def non_gaussian_alpha2(msd_A2: np.ndarray, m4_A4: np.ndarray, dim: int = 3) -> np.ndarray:
    """α₂(t) = d·⟨Δr⁴⟩ / ((d+2)·⟨Δr²⟩²) − 1 (0 for Gaussian displacements; 3D: 3⟨r⁴⟩/5⟨r²⟩² − 1).

    >>> non_gaussian_alpha2(np.array([3.0]), np.array([15.0])).tolist()   # Gaussian: ⟨r⁴⟩ = 5/3 ⟨r²⟩²
    [0.0]
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        return dim * np.asarray(m4_A4) / ((dim + 2) * np.asarray(msd_A2) ** 2) - 1.0


def fit_msd_line(time_fs: np.ndarray, msd_A2: np.ndarray, start_fs: float, end_fs: float, dim: int = 3) -> float:
    """D in cm²/s from an ordinary least-squares line MSD = 2·d·D·t + c over [start_fs, end_fs].

    >>> t = np.arange(100.0)
    >>> round(fit_msd_line(t, 6 * 1e-4 * t + 0.3, 10, 50), 12)   # 1e-4 Å²/fs
    1e-05
    """
    sel = (time_fs >= start_fs) & (time_fs <= end_fs)
    if sel.sum() < 2:
        return float("nan")
    slope = np.polyfit(time_fs[sel], msd_A2[sel], 1)[0]
    return float(slope / (2 * dim) * CM2_PER_S_PER_A2_PER_FS)


def nernst_einstein_S_cm(D_cm2_s: float, n_ions: int, volume_A3: float, charge_e: float, temperature_k: float) -> float:
    """σ = n (z e)² D / (k_B T) in S/cm (Haven ratio 1); n = n_ions / volume.

    >>> round(nernst_einstein_S_cm(1e-5, 64, 64 * 40.0, 1, 300.0), 3)   # 1 ion per 40 Å³
    1.549
    """
    n_cm3 = n_ions / (volume_A3 * 1e-24)
    q = charge_e * const.e
    return float(n_cm3 * q * q * D_cm2_s / (const.k * temperature_k))


def vdos_welch(
    velocities_A_fs: np.ndarray, dt_fs: float, *, resolution_cm1: float = 2.0, forward_difference: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Velocity density of states of a group of atoms, normalised to unit area (1/cm⁻¹).

    Welch's averaged periodogram (Hann window, 50 % overlap, no detrending so the ω→0 limit
    keeps the diffusive contribution) of every atom and Cartesian component, summed.  The
    segment length gives a bin spacing of ``resolution_cm1`` (capped by the trajectory
    length).  With ``forward_difference=True`` the velocities are (r[k+1] − r[k])/dt and the
    sinc² response of that difference is divided out (exact for band-limited motion).

    Returns:
        (freq_cm1, vdos) with ∫ vdos d(freq_cm1) = 1 over 0 … Nyquist.

    >>> t = np.arange(4096) * 1.0                                  # fs
    >>> v = np.cos(2 * np.pi * 0.01 * t)[:, None, None] * np.ones((1, 2, 3))   # 0.01 fs⁻¹
    >>> f, g = vdos_welch(v, 1.0, resolution_cm1=10.0)
    >>> bool(abs(f[np.argmax(g)] - 0.01 * CM1_PER_INV_FS) < 10.0)
    True
    """
    v = np.asarray(velocities_A_fs, dtype=float)
    n = v.shape[0]
    nperseg = int(min(n, math.ceil(CM1_PER_INV_FS / (resolution_cm1 * dt_fs))))
    import scipy.signal  # heavy (~1 s): only where the VDOS is computed

    freq_inv_fs, psd = scipy.signal.welch(
        v.reshape(n, -1), fs=1.0 / dt_fs, window="hann", nperseg=nperseg, detrend=False, axis=0, scaling="density"
    )
    power = psd.sum(axis=1)
    # scipy's one-sided density does not double the 0 (and Nyquist) bins; double them so every
    # bin is the continuous one-sided density, whose ν→0 limit is the diffusive value
    power[0] *= 2.0
    if nperseg % 2 == 0:
        power[-1] *= 2.0
    if forward_difference:
        power = power / np.maximum(np.sinc(freq_inv_fs * dt_fs) ** 2, 1e-12)
    freq_cm1 = freq_inv_fs * CM1_PER_INV_FS
    area = np.trapezoid(power, freq_cm1)
    return freq_cm1, power / area if area > 0 else power


# ============================================================================ the analysis
@dataclass
class TransportResult:
    """Transport of the analysed species of one trajectory (per-species values are dicts).

    Curves: ``time_ps`` (log-spaced lags up to half the run) with ``msd_A2``, ``alpha2`` and
    ``msd_slope`` (d log MSD / d log t) per species; ``freq_cm1`` with ``vdos`` per species.
    """

    source: str
    species: list[str]
    temperature_k: float
    dt_fs: float
    n_frames: int
    duration_ps: float
    n_atoms: dict[str, int]
    charge_e: dict[str, float | None]
    D_cm2_s: dict[str, float]
    D_err_cm2_s: dict[str, float]
    sigma_S_cm: dict[str, float | None]
    sigma_err_S_cm: dict[str, float | None]
    msd_exponent: dict[str, float]
    alpha2_peak: dict[str, float]
    alpha2_peak_time_ps: dict[str, float]
    vdos0: dict[str, float]
    fit_start_ps: float
    fit_end_ps: float
    D_method: str
    drift_removal: str
    drift_reference: list[str]
    velocity_source: str
    vdos0_window_cm1: tuple[float, float]
    volume_A3: float
    time_ps: np.ndarray = field(repr=False)
    msd_A2: dict[str, np.ndarray] = field(repr=False)
    alpha2: dict[str, np.ndarray] = field(repr=False)
    msd_slope: dict[str, np.ndarray] = field(repr=False)
    freq_cm1: np.ndarray = field(repr=False)
    vdos: dict[str, np.ndarray] = field(repr=False)

    _CURVES = ("time_ps", "msd_A2", "alpha2", "msd_slope", "freq_cm1", "vdos")

    def to_dict(self) -> dict:
        """Scalars and per-species values (no curves), NaN → None, ready for JSON."""
        out = {k: v for k, v in self.__dict__.items() if k not in self._CURVES}
        out["vdos0_window_cm1"] = list(self.vdos0_window_cm1)
        return _clean(out)

    def to_json(self) -> str:
        """The :meth:`to_dict` content as an indented JSON string."""
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    def msd_table(self) -> dict[str, np.ndarray]:
        """Long-format columns: species, time_ps, msd_A2, alpha2, msd_slope."""
        n = len(self.time_ps)
        return {
            "species": np.repeat(np.array(self.species, dtype=object), n).astype(str),
            "time_ps": np.tile(self.time_ps, len(self.species)),
            "msd_A2": np.concatenate([self.msd_A2[s] for s in self.species]),
            "alpha2": np.concatenate([self.alpha2[s] for s in self.species]),
            "msd_slope": np.concatenate([self.msd_slope[s] for s in self.species]),
        }

    def vdos_table(self) -> dict[str, np.ndarray]:
        """Long-format columns: species, freq_cm1, vdos (1/cm⁻¹, unit area per species)."""
        n = len(self.freq_cm1)
        return {
            "species": np.repeat(np.array(self.species, dtype=object), n).astype(str),
            "freq_cm1": np.tile(self.freq_cm1, len(self.species)),
            "vdos": np.concatenate([self.vdos[s] for s in self.species]),
        }


def _clean(obj):
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def analyze_transport(
    traj: Trajectory,
    *,
    species: Sequence[str] | str,
    temperature_k: float,
    drift: DriftMode | str = TransportSettings.drift,
    framework_species: Sequence[str] | None = None,
    charges: Mapping[str, float] | None = None,
    fit_start_ps: float | None = TransportSettings.fit_start_ps,
    fit_end_ps: float | None = TransportSettings.fit_end_ps,
    min_fit_start_ps: float = TransportSettings.min_fit_start_ps,
    method: DMethod | str = TransportSettings.method,
    n_blocks: int = TransportSettings.n_blocks,
    n_lags: int = TransportSettings.n_lags,
    vdos_resolution_cm1: float = TransportSettings.vdos_resolution_cm1,
    vdos0_max_cm1: float = TransportSettings.vdos0_max_cm1,
    seed: int = TransportSettings.seed,
) -> TransportResult:
    """MSD, D ± error, σ, VDOS and hopping descriptors for each species in ``species``.

    Args:
        traj: the trajectory (positions as stored; they are unwrapped here).
        species: chemical symbols to analyse, e.g. ``["Na"]``.
        temperature_k: temperature for the Nernst–Einstein conductivity, K.
        drift: centre-of-mass drift removal.  ``"framework"`` (default) holds fixed the
            mass-weighted centre of mass of the framework: ``framework_species`` if given,
            else every atom whose species is not analysed (falls back to ``"system"`` if
            there is none); ``"system"`` uses all atoms; ``"none"`` removes nothing.
        framework_species: species forming the framework for ``drift="framework"``.
        charges: formal charges in e, overriding :data:`FORMAL_CHARGES`; a species with no
            charge gets σ = None.
        fit_start_ps, fit_end_ps: diffusive window of the MSD fit; default 10 % and 50 % of a
            block (the run divided by ``n_blocks``), i.e. 2 % and 10 % of the run with five
            blocks: skips ballistic/caged motion and stops where every block still has many
            independent time origins, so full-run and block fits share one window.
        min_fit_start_ps: earliest default start of the fit window (capped at a quarter of the
            run; the default end becomes at least twice the start). Short runs need it: 2 % of
            a 4 ps run lies in the ballistic/caged regime, where a fit gave D(Na) of
            γ-Na₃PS₄ at 900 K ten times too low (kinisi) or three times too high (blocks);
            starting at 0.5 ps gave the MSD's long-time slope.
        method: ``"kinisi"`` (default): D and its standard error are the mean and standard
            deviation of kinisi's Bayesian-regression posterior (MSD covariance model,
            window [fit_start, end of run]); ``"blocks"``: OLS fit of the FFT MSD over
            [fit_start, fit_end], standard error = std(D of ``n_blocks`` contiguous
            blocks, each fitted over the same window) / √n_blocks.
        n_lags: number of log-spaced lags of the output curves (up to half the run).
        vdos_resolution_cm1: VDOS bin spacing (Welch segment length).
        vdos0_max_cm1: VDOS(ω→0) is the mean of the VDOS over bins 0 … ``vdos0_max_cm1``
            (at least two bins).
        seed: random seed for kinisi's sampler.

    Raises:
        InputError: unknown species, fewer than 16 frames, bad temperature or window.
    """
    if isinstance(species, str):
        species = [species]
    species = list(dict.fromkeys(species))
    src = traj.source
    present = sorted(set(traj.symbols))
    if not species:
        raise InputError("no species given", file=src, field="species", fix=f"choose from {', '.join(present)}")
    unknown = [s for s in species if s not in present]
    if unknown:
        raise InputError(
            f"species {', '.join(unknown)} not in the trajectory (present: {', '.join(present)})",
            file=src, field="species", fix=f"choose from {', '.join(present)}",
        )
    if not (np.isfinite(traj.dt_fs) and traj.dt_fs > 0):
        raise InputError("the time between frames is unknown", file=src, field="dt_fs",
                         fix="give the time between stored frames")
    if not (np.isfinite(temperature_k) and temperature_k > 0):
        raise InputError(f"temperature must be > 0 K, got {temperature_k}", field="temperature_k",
                         fix="give the MD temperature in K")
    settings = TransportSettings(method=method, drift=drift, n_blocks=n_blocks, min_fit_start_ps=min_fit_start_ps,
                                 fit_start_ps=fit_start_ps, fit_end_ps=fit_end_ps, n_lags=n_lags,
                                 vdos_resolution_cm1=vdos_resolution_cm1, vdos0_max_cm1=vdos0_max_cm1, seed=seed)
    try:
        settings.check_run(len(traj), float(traj.dt_fs))
    except InputError as exc:
        raise InputError(exc.message, file=src, field="frames" if exc.field == "n_frames" else exc.field,
                         fix=exc.fix) from None

    dt = float(traj.dt_fs)
    n_frames = len(traj)
    duration_fs = (n_frames - 1) * dt
    start_fs, end_fs = settings.fit_window_fs(duration_fs, dt)

    # --- unwrap, then remove the reference centre-of-mass drift
    symbols = np.asarray(traj.symbols)
    pos = unwrap_positions(traj.positions_A, traj.cells_A, traj.pbc)
    ref_species: list[str]
    if drift == "framework":
        ref_species = list(framework_species) if framework_species else [s for s in present if s not in species]
        bad = [s for s in ref_species if s not in present]
        if bad:
            raise InputError(f"framework species {', '.join(bad)} not in the trajectory (present: {', '.join(present)})",
                             file=src, field="framework_species", fix=f"choose from {', '.join(present)}")
        mode_text = "framework centre of mass"
        if not ref_species:
            ref_species, mode_text = present, "system centre of mass (no framework atoms)"
    elif drift == "system":
        ref_species, mode_text = present, "system centre of mass"
    else:
        ref_species, mode_text = [], "none"
    ref_mask = np.isin(symbols, ref_species)
    velocities = traj.velocities_A_fs
    if ref_mask.any():
        pos = remove_drift(pos, traj.masses_amu, ref_mask)
        if velocities is not None:
            m = traj.masses_amu[ref_mask]
            vcom = np.einsum("fnj,n->fj", velocities[:, ref_mask], m) / m.sum()
            velocities = velocities - vcom[:, None, :]
    drift_text = mode_text if not ref_species else f"{mode_text}: {', '.join(ref_species)}"

    # --- curves on log-spaced lags up to half the run
    max_lag = max(2, (n_frames - 1) // 2)
    lags = np.unique(np.round(np.geomspace(1, max_lag, n_lags)).astype(int))
    time_fs_all = np.arange(n_frames) * dt
    charges_all = {**FORMAL_CHARGES, **(dict(charges) if charges else {})}
    volume = float(traj.volumes_A3.mean()) if np.all(traj.pbc) else float("nan")

    if velocities is not None:
        velocity_source = "trajectory velocities"
    else:
        velocity_source = "forward differences of unwrapped positions (sinc² response removed)"

    out: dict[str, dict] = {k: {} for k in (
        "n", "q", "D", "Derr", "sig", "sigerr", "beta", "a2pk", "a2t", "v0", "msd", "a2", "slope", "vdos")}
    freq_cm1: np.ndarray | None = None
    kinisi_text: str | None = None
    for s in species:  # a handful of species; all work inside is vectorised
        idx = np.flatnonzero(symbols == s)
        p = pos[:, idx]
        msd = msd_fft(p)
        if method == "kinisi":
            D, Derr, kinisi_text = _kinisi_D(p, s, dt, start_fs, seed)
            if D is None:
                method = "blocks"
        if method == "blocks":
            D = fit_msd_line(time_fs_all, msd, start_fs, end_fs)
            Derr = _block_error(p, dt, start_fs, end_fs, n_blocks)
        m2, m4 = displacement_moments(p, lags)
        a2 = non_gaussian_alpha2(m2, m4)
        msd_lags = msd[lags]
        with np.errstate(divide="ignore", invalid="ignore"):
            slope = np.gradient(np.log(msd_lags), np.log(lags * dt)) if len(lags) > 1 else np.full(1, np.nan)
        sel = (time_fs_all >= start_fs) & (time_fs_all <= end_fs) & (msd > 0)
        beta = float(np.polyfit(np.log(time_fs_all[sel]), np.log(msd[sel]), 1)[0]) if sel.sum() > 1 else float("nan")
        if velocities is not None:
            freq_cm1, g = vdos_welch(velocities[:, idx], dt, resolution_cm1=vdos_resolution_cm1)
        else:
            freq_cm1, g = vdos_welch(np.diff(p, axis=0) / dt, dt, resolution_cm1=vdos_resolution_cm1,
                                     forward_difference=True)
        low = freq_cm1 <= max(vdos0_max_cm1, freq_cm1[1] if len(freq_cm1) > 1 else 0.0)
        q = charges_all.get(s)
        sigma = None if q is None or not np.isfinite(volume) else nernst_einstein_S_cm(D, len(idx), volume, q, temperature_k)
        sigma_err = None if sigma is None or q is None else nernst_einstein_S_cm(Derr, len(idx), volume, q,
                                                                               temperature_k)
        finite = np.isfinite(a2)
        k_pk = int(np.nanargmax(np.where(finite, a2, -np.inf))) if finite.any() else 0
        for key, val in (("n", len(idx)), ("q", q), ("D", D), ("Derr", Derr), ("sig", sigma), ("sigerr", sigma_err),
                         ("beta", beta), ("a2pk", float(a2[k_pk])), ("a2t", float(lags[k_pk] * dt / 1e3)),
                         ("v0", float(g[low].mean())), ("msd", msd_lags), ("a2", a2), ("slope", slope), ("vdos", g)):
            out[key][s] = val

    assert freq_cm1 is not None  # there is at least one species
    if method == "kinisi":
        d_method = str(kinisi_text)
        end_fs = duration_fs
    else:
        d_method = f"OLS fit of FFT MSD; standard error from {n_blocks} blocks"
    return TransportResult(
        source=src, species=species, temperature_k=float(temperature_k), dt_fs=dt, n_frames=n_frames,
        duration_ps=duration_fs / 1e3, n_atoms=out["n"], charge_e=out["q"], D_cm2_s=out["D"],
        D_err_cm2_s=out["Derr"], sigma_S_cm=out["sig"], sigma_err_S_cm=out["sigerr"], msd_exponent=out["beta"],
        alpha2_peak=out["a2pk"], alpha2_peak_time_ps=out["a2t"], vdos0=out["v0"],
        fit_start_ps=start_fs / 1e3, fit_end_ps=end_fs / 1e3, D_method=d_method, drift_removal=drift_text,
        drift_reference=list(ref_species), velocity_source=velocity_source,
        vdos0_window_cm1=(0.0, float(max(vdos0_max_cm1, freq_cm1[1]))), volume_A3=volume,
        time_ps=lags * dt / 1e3, msd_A2=out["msd"], alpha2=out["a2"], msd_slope=out["slope"],
        freq_cm1=freq_cm1, vdos=out["vdos"],
    )


def _block_error(p: np.ndarray, dt: float, start_fs: float, end_fs: float, n_blocks: int) -> float:
    """Standard error of D (cm²/s): std of D fitted over the same window in contiguous blocks / √n.

    Every block must be at least twice as long as the window end, so fewer blocks are used
    when the window is long; fewer than two blocks → NaN.
    """
    n_frames = p.shape[0]
    n_blocks = min(n_blocks, int((n_frames - 1) * dt // (2 * end_fs)), n_frames // MIN_FRAMES)
    if n_blocks < 2:
        warnings.warn("fit window too long for two blocks: no standard error", stacklevel=3)
        return float("nan")
    length = n_frames // n_blocks
    t = np.arange(length) * dt
    ds = [fit_msd_line(t, msd_fft(p[b * length:(b + 1) * length]), start_fs, end_fs)
          for b in range(n_blocks)]  # loop over a few blocks
    return float(np.std(ds, ddof=1) / np.sqrt(n_blocks))


def _kinisi_D(p: np.ndarray, symbol: str, dt: float, start_fs: float, seed: int):
    """kinisi's Bayesian D (mean, std of posterior, cm²/s) for unwrapped, drift-corrected positions.

    The atoms are handed to kinisi in a huge box so that its unwrapping changes nothing, and with
    no drift atoms, so our drift removal is the only one.  kinisi fits from
    ``start_fs`` to the end of the run over ≤ 100 evenly spaced lags.
    """
    try:
        import scipp as sc
        from kinisi import __version__ as kv
        from kinisi.analyze import DiffusionAnalyzer
        from kinisi.displacement import calculate_msd
        from kinisi.parser import Parser
    except Exception as exc:  # noqa: BLE001 - kinisi is optional at run time
        warnings.warn(f"kinisi unavailable ({exc}); using block averaging", stacklevel=3)
        return None, None, None
    n_frames, n_atoms, _ = p.shape
    box = 10.0 * (np.ptp(p) + 100.0)
    frac = (p - p.min(axis=(0, 1)) + 0.25 * box) / box
    frac = np.concatenate([frac[:1], frac])  # kinisi's parsers repeat frame 0 (displacement origin)
    lattice = np.broadcast_to(np.eye(3) * box, (n_frames + 1, 3, 3))
    lags = np.unique(np.linspace(1, n_frames - 1, min(100, n_frames - 1)).astype(int))
    start = max(start_fs, lags[0] * dt)
    if (lags * dt >= start).sum() < 3:
        return None, None, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # What DiffusionAnalyzer.from_ase does, minus the per-frame ASE parsing (kinisi 2.1.0).
        parser = Parser(
            coords=sc.array(dims=["time", "particle", "dimension"], values=frac),
            latt=sc.array(dims=["time", "dimension1", "dimension2"], values=lattice, unit="angstrom"),
            time_step=sc.scalar(dt, unit="fs"), step_skip=sc.scalar(1),
            dt=sc.array(dims=["time interval"], values=lags * dt, unit="fs"),
            specie_indices=sc.array(dims=["particle"], values=np.arange(n_atoms)),
            drift_indices=sc.array(dims=["particle"], values=np.zeros(0, dtype=np.int64)),
        )
        ana = DiffusionAnalyzer(parser)
        ana._dg = calculate_msd(parser, progress=False)
        ana.diffusion(start_dt=sc.scalar(start, unit="fs"), progress=False,
                      random_state=np.random.RandomState(seed))
    samples = sc.to_unit(ana.D, "cm^2/s").values
    text = f"kinisi {kv} Bayesian regression (posterior mean ± std), window [fit_start, end of run]"
    return float(np.mean(samples)), float(np.std(samples)), text
