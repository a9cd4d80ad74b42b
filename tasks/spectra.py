"""Raman spectra from polarizability time series (Grumet et al., Supplement eqs. S1–S3).

Given α(t) (Å³, one symmetric 3x3 tensor per sample, ``dt_fs`` apart) this module computes

* the isotropic invariant   a²(ω) = 1/9 ∫dt e^{-iωt} ⟨tr α̇(τ) tr α̇(τ+t)⟩_τ            (S2)
* the anisotropic invariant γ²(ω) = 3 ∫dt e^{-iωt} ⟨Σ_{xy,yz,zx} α̇_ij α̇_ij⟩
  + 1/2 ∫dt e^{-iωt} ⟨Σ_{(xx,yy),(yy,zz),(zz,xx)} (α̇_ii−α̇_jj)(α̇_ii−α̇_jj)⟩            (S3)
* the orientation-averaged intensity I(ω) ∝ (ω_in−ω)⁴/ω · (45a²+7γ²)/45               (S1)
  and its polarised parts I_∥ ∝ (…)(45a²+4γ²)/45, I_⊥ ∝ (…)3γ²/45 (so I = I_∥ + I_⊥),
  and the depolarisation ratio ρ = I_⊥/I_∥ (0 for a purely isotropic α, 3/4 for a traceless one).

How it is computed (exact and O(N log N)):

* One BLAS pass maps α to its spherical components: Y0 = tr α/3 (λ = 0) and five λ = 2
  combinations of the symmetric part, scaled so that a² = ω² (dt/N)|Ŷ0|² and
  γ² = ω² (dt/N) Σ_{r=1..5}|Ŷr|² reproduce S2 and S3 term by term (see :func:`_decompose`).
  Each of the six rows is Fourier transformed once (``rfft``); the mean is removed by zeroing
  bin 0, which is the only bin the mean enters.
* Wiener–Khinchin: the periodogram ``dt/N |X_k|²`` at the N Fourier frequencies is *exactly*
  the Fourier transform of the biased (multiple-time-origin, 1/N-normalised) *linear*
  autocorrelation, so no zero padding is needed and no autocorrelation is ever formed.
* The derivative is exact: |FT[α̇]|² = ω²|FT[α]|² with ω the angular frequency in rad/fs.
  No finite difference (a central difference keeps only sinc² of the power: ~25% at
  1000 cm⁻¹ for 10 fs sampling). A pure cosine therefore gives a²/ω² (the α power) of the same
  height at any frequency up to Nyquist.

Units and normalisation:

* ``a2`` and ``gamma2`` are two-sided spectral densities of α̇ in Å⁶ fs⁻¹ (time integral in fs of
  an autocorrelation in Å⁶ fs⁻²). Parseval: ∫_{-∞}^{∞} a² df = ⟨(tr α̇)²⟩/9 with f in fs⁻¹
  (f = ν̃ / CM1_PER_INV_FS); on the one-sided grid returned here that is Σ_k w_k a²_k / (N dt)
  with w_k = 2 for bins 1…N/2−1 and 1 for ω = 0 and Nyquist.
* Intensities are in arbitrary units: the prefactor is (1 − ν̃/ν̃_in)⁴ / ν̃ with ν̃ in cm⁻¹,
  i.e. (ν̃_in−ν̃)⁴/ν̃ divided by the constant ν̃_in⁴ (ν̃_in = 10⁷/laser_nm cm⁻¹).

ω = 0: the mean of every component is removed, so every |FT|² vanishes at ω = 0 and a², γ²
(which carry ω²) are 0 there; the intensities carry ω²/ω = ω, so their ω = 0 bin is 0 (the
limit for a finite spectral density). With the Bose factor the ω = 0 bin is also set to 0.
Low-frequency descriptors therefore always use a window starting above the first bins.

Smoothing: convolution with a Gaussian whose *standard deviation* is ``sigma_cm1`` (default
4 cm⁻¹, as in the paper), applied to a², γ², I_∥ and I_⊥ on the Fourier grid (I = I_∥ + I_⊥).
At ω = 0 a² and γ² are continued as even functions of ω and the intensities (∝ ω·S(ω) at small
ω, like χ'') as odd functions, so the smoothed I(0) stays 0; at the Nyquist end the spectrum is
continued as an even function (the periodogram is symmetric about Nyquist). When
``max_freq_cm1`` cuts the range, real data beyond the cut feed the smoothing. For long series
(σ ≥ 16 Fourier bins) the smoothed spectrum is returned on every step-th bin, ≥ 8 points per σ:
exact samples of the same band-limited function (``decimate=False`` keeps every bin).

Bose–Einstein factor (optional, ``temperature_k``): the smoothed I, I_∥, I_⊥ are multiplied by
n(ν̃)+1 = 1/(1 − exp(−hcν̃/k_B T)). The paper omits it (classical spectra).

Example — a cosine at 100 cm⁻¹ gives a peak there:

>>> import numpy as np
>>> from ramanscreen.tasks.common import CM1_PER_INV_FS
>>> dt_fs, n = 5.0, 4096
>>> t_fs = np.arange(n) * dt_fs
>>> nu0 = round(100.0 / (CM1_PER_INV_FS / (n * dt_fs))) * CM1_PER_INV_FS / (n * dt_fs)
>>> alpha = np.zeros((n, 3, 3)); alpha[:] = 10.0 * np.eye(3)
>>> alpha[:, 0, 1] = alpha[:, 1, 0] = 0.5 * np.cos(2 * np.pi * nu0 / CM1_PER_INV_FS * t_fs)
>>> sp = raman_spectrum(alpha, dt_fs)
>>> bool(abs(sp.freq_cm1[np.argmax(sp.intensity)] - nu0) < sp.df_cm1)
True
>>> round(float(np.nanmax(sp.depolarization_ratio)), 3)  # traceless α: ρ = 3/4
0.75
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.fft as sfft

from ramanscreen.tasks.common import (
    CM1_PER_INV_FS,
    InputError,
    atomic_path,
    atomic_write,
    refuse_binary,
    save_figure,
    write_table,
)
from ramanscreen.tasks.schema import check, setting

#: Fewest α frames accepted (a spectrum from fewer is meaningless).
MIN_FRAMES = 16
#: Order of the columns of the 6-column text format (Egger group's MD-Raman tool).
ALPHA_COLUMNS = ("xx", "yy", "zz", "xy", "yz", "zx")
#: (row, column) of each of the six independent components, in ``ALPHA_COLUMNS`` order.
_IJ = ((0, 0), (1, 1), (2, 2), (0, 1), (1, 2), (2, 0))
#: α is symmetric if max|α − αᵀ| ≤ SYMMETRY_RTOL · max|α| over the series; beyond: warn.
SYMMETRY_RTOL = 1e-5
#: Table columns written by :func:`write_spectrum` (in this order).
SPECTRUM_COLUMNS = (
    "freq_cm1",
    "intensity",
    "intensity_parallel",
    "intensity_perpendicular",
    "a2",
    "gamma2",
    "depolarization_ratio",
)
#: Smoothed spectra are returned with at least this many points per σ (see ``decimate``).
POINTS_PER_SIGMA = 8
#: Gaussian kernels are truncated at this many standard deviations (relative weight < 1e-14).
_TRUNCATE = 8.0
#: Version of the spectrum conventions written into the Parquet metadata.
CONVENTIONS_VERSION = "1"


@dataclass(frozen=True)
class SpectrumSettings:
    """How a spectrum and its central-peak descriptors are computed (the campaign's ``[spectrum]``).

    The defaults of :func:`raman_spectrum`, :func:`spectrum_band` and
    :func:`central_peak_descriptors` are these fields. Checked on construction: the windows are
    ordered ``0 < omega_min_cm1 < omega_c_cm1 <= host_window_cm1[0] < host_window_cm1[1]`` and
    the band percentiles lie in [0, 100], increasing. :meth:`check_sampling` checks them against
    an α series' length and spacing before anything runs.

    >>> SpectrumSettings().omega_c_cm1
    50.0
    >>> SpectrumSettings(band_percentiles=(16, 150))
    Traceback (most recent call last):
    ...
    ramanscreen.tasks.common.InputError: band_percentiles: must be >= 0 and <= 100, got (16.0, 150.0) (fix: ...)
    >>> s = SpectrumSettings(omega_min_cm1=20.0, omega_c_cm1=60.0, host_window_cm1=(80.0, 1000.0))
    >>> s.check_sampling(dt_fs=20.0, n_frames=201)  # 4 ps of α: 8.3 cm⁻¹ bins
    >>> s.check_sampling(dt_fs=20.0, n_frames=101)
    Traceback (most recent call last):
    ...
    ramanscreen.tasks.common.InputError: n_frames: 101 α samples 20 fs apart give 16.5 cm⁻¹ bins: omega_min_cm1 = 20 must lie above the first two bins (33 cm⁻¹) (fix: a longer α series (more than 3.34 ps) or a higher omega_min_cm1)
    """

    sigma_cm1: float = setting(4.0, doc="standard deviation of the Gaussian smoothing (0: none; the paper: 4)",
                               unit="cm⁻¹", ge=0)
    laser_nm: float = setting(532.0, doc="laser wavelength, for the (ω_in − ω)⁴ prefactor", unit="nm", gt=0)
    max_freq_cm1: float | None = setting(None, doc="highest frequency kept (none: up to Nyquist)", unit="cm⁻¹",
                                         gt=0)
    band_percentiles: tuple[float, float] = setting(
        (16.0, 84.0), doc="committee band: lower and upper percentile of the members' spectra", ge=0, le=100)
    omega_min_cm1: float = setting(5.0, doc="lower edge of the low-frequency (central-peak) window; above the "
                                   "first two frequency bins, because of the 1/ω prefactor", unit="cm⁻¹", gt=0)
    omega_c_cm1: float = setting(50.0, doc="upper edge ω_c of the low-frequency window", unit="cm⁻¹", gt=0)
    host_window_cm1: tuple[float, float] = setting(
        (60.0, 1000.0), doc="host window (lattice and molecular peaks): start and end", unit="cm⁻¹", ge=0)
    n_blocks: int = setting(4, doc="contiguous blocks of the α series whose spectra give the statistical (block) "
                            "standard error of the spectrum and of cp_fraction, beside the committee band", ge=2)

    def __post_init__(self) -> None:
        check(self)
        lo, hi = self.band_percentiles
        if not lo < hi:
            raise InputError(f"expected two increasing percentiles, got {list(self.band_percentiles)}",
                             field="band_percentiles", fix="e.g. [16, 84] (mean ± 1σ for a Gaussian spread)")
        if not self.omega_c_cm1 > self.omega_min_cm1:
            raise InputError(f"omega_c_cm1 = {self.omega_c_cm1:g} must exceed omega_min_cm1 = {self.omega_min_cm1:g}",
                             field="omega_c_cm1", fix="widen the low-frequency window")
        h_lo, h_hi = self.host_window_cm1
        if not (self.omega_c_cm1 <= h_lo < h_hi):
            raise InputError(f"the host window {list(self.host_window_cm1)} must be increasing and start at or above "
                             f"omega_c_cm1 = {self.omega_c_cm1:g}", field="host_window_cm1",
                             fix="e.g. [60, 1000] cm⁻¹ for omega_c_cm1 = 50")

    def spectrum_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`raman_spectrum` / :func:`spectrum_band`."""
        return {"laser_nm": self.laser_nm, "sigma_cm1": self.sigma_cm1, "max_freq_cm1": self.max_freq_cm1}

    def descriptor_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`central_peak_descriptors`."""
        return {"omega_min_cm1": self.omega_min_cm1, "omega_c_cm1": self.omega_c_cm1,
                "host_window_cm1": self.host_window_cm1}

    def block_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`block_uncertainty` (spectrum and windows included)."""
        return {**self.spectrum_kwargs(), **self.descriptor_kwargs(), "n_blocks": self.n_blocks}

    def top_cm1(self, dt_fs: float) -> float:
        """Highest frequency of a spectrum of α samples ``dt_fs`` apart: Nyquist, or
        ``max_freq_cm1`` if lower (cm⁻¹)."""
        top = CM1_PER_INV_FS / (2.0 * dt_fs)
        return top if self.max_freq_cm1 is None else min(top, self.max_freq_cm1)

    def check_range(self, dt_fs: float) -> None:
        """Raise :class:`InputError` if a window edge is not inside (0, top), where top is the
        Nyquist frequency of α samples ``dt_fs`` apart (or ``max_freq_cm1`` if lower): the field
        named is the first edge beyond it.

        >>> SpectrumSettings(omega_c_cm1=900.0, host_window_cm1=(900.0, 1000.0)).check_range(dt_fs=20.0)
        Traceback (most recent call last):
        ...
        ramanscreen.tasks.common.InputError: omega_c_cm1: 900 cm⁻¹ is not below the top frequency 834 cm⁻¹ of α every 20 fs (fix: a window below 834 cm⁻¹, or α sampled more often)
        """
        top = self.top_cm1(dt_fs)
        for field, value in (("omega_min_cm1", self.omega_min_cm1), ("omega_c_cm1", self.omega_c_cm1),
                             ("host_window_cm1", self.host_window_cm1[0])):
            if not value < top:
                raise InputError(f"{value:g} cm⁻¹ is not below the top frequency {top:.0f} cm⁻¹ of α every {dt_fs:g} fs",
                                 field=field, fix=f"a window below {top:.0f} cm⁻¹, or α sampled more often")

    def check_sampling(self, dt_fs: float, n_frames: int) -> None:
        """Raise :class:`InputError` if an α series of ``n_frames`` samples ``dt_fs`` apart cannot
        give these windows: too few frames (field ``n_frames``), bins too coarse for the low
        window (``n_frames``), or a Nyquist frequency below the windows (``dt_fs``).

        The check uses the frequency grid :func:`raman_spectrum` will produce, so what passes
        here passes :func:`central_peak_descriptors` later.
        """
        top = self.top_cm1(dt_fs)
        h_lo = self.host_window_cm1[0]
        if h_lo >= top:
            raise InputError(f"α every {dt_fs:g} fs reaches only {top:.0f} cm⁻¹, not the host window starting at "
                             f"{h_lo:g} cm⁻¹", field="dt_fs", fix="sample α more often (a smaller spacing)")
        if n_frames < MIN_FRAMES:
            raise InputError(f"{n_frames} α samples; a spectrum needs at least {MIN_FRAMES}", field="n_frames",
                             fix="a longer α series")
        df = CM1_PER_INV_FS / (n_frames * dt_fs)
        if not self.omega_min_cm1 > 2.0 * df:
            need_ps = 2.0 * CM1_PER_INV_FS / self.omega_min_cm1 / 1000.0
            raise InputError(f"{n_frames} α samples {dt_fs:g} fs apart give {df:.3g} cm⁻¹ bins: omega_min_cm1 = "
                             f"{self.omega_min_cm1:g} must lie above the first two bins ({2 * df:.3g} cm⁻¹)",
                             field="n_frames", fix=f"a longer α series (more than {need_ps:.3g} ps) or a higher "
                             "omega_min_cm1")
        freq = frequency_grid(n_frames, dt_fs, sigma_cm1=self.sigma_cm1, max_freq_cm1=self.max_freq_cm1)
        n_low = int(((freq >= self.omega_min_cm1) & (freq <= self.omega_c_cm1)).sum())
        if n_low < 3:
            raise InputError(f"the low window {self.omega_min_cm1:g}–{self.omega_c_cm1:g} cm⁻¹ holds {n_low} of the "
                             f"{df:.3g} cm⁻¹ bins of {n_frames} α samples {dt_fs:g} fs apart, fewer than 3",
                             field="n_frames", fix="a longer α series or a wider window (omega_c_cm1)")


def _second_radiation_constant_cm_k() -> float:
    """hc/k_B in cm·K (≈ 1.4388), from ASE's CODATA constants."""
    from ase import units

    return units._hplanck * units._c * 100.0 / units._k


# --------------------------------------------------------------------------------------------
# α input / output
# --------------------------------------------------------------------------------------------


def _detect_format(path: Path, fmt: str | None) -> str:
    if fmt is not None:
        fmt = fmt.lower()
        aliases = {"txt": "txt", "text": "txt", "dat": "txt", "npy": "npy", "npz": "npz", "extxyz": "extxyz",
                   "xyz": "extxyz"}
        if fmt not in aliases:
            raise InputError(
                f"unknown α format {fmt!r}", file=path, field="format", fix="use one of txt, npy, npz, extxyz"
            )
        return aliases[fmt]
    suffix = path.suffix.lower()
    if suffix in (".npy", ".npz"):
        return suffix[1:]
    if suffix in (".xyz", ".extxyz"):
        return "extxyz"
    return "txt"


_DT_HEADER = re.compile(r"^#\s*dt_fs\s*[=:]\s*([-+0-9.eE]+)\s*$")


def _txt_dt_fs(path: Path) -> float | None:
    """The ``# dt_fs = X`` line among the leading comment lines of an α text file, if any."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if not line.startswith("#"):
                break
            m = _DT_HEADER.match(line.strip())
            if m:
                return _stated_dt(m.group(1), path)
    return None


def _stated_dt(value: Any, path: Path) -> float:
    try:
        dt = float(value)
    except (TypeError, ValueError):
        dt = float("nan")
    if not (math.isfinite(dt) and dt > 0):
        raise InputError(f"states dt_fs = {value!r}, not a positive number of fs", file=path, field="dt_fs",
                         fix="correct the file's dt_fs record")
    return dt


def alpha_sidecar(path: str | os.PathLike[str]) -> Path:
    """The JSON sidecar of a ``.npy`` α file (``alpha.npy`` → ``alpha.json``), holding its ``dt_fs``."""
    return Path(path).with_suffix(".json")


def _npy_dt_fs(path: Path) -> float | None:
    side = alpha_sidecar(path)
    if not side.is_file():
        return None
    try:
        meta = json.loads(side.read_text())
    except (ValueError, UnicodeDecodeError):
        raise InputError("unreadable sidecar", file=side, field="dt_fs", fix="rewrite it or delete it") from None
    return _stated_dt(meta["dt_fs"], side) if isinstance(meta, dict) and meta.get("dt_fs") is not None else None


def _data_line_numbers(path: Path) -> list[int]:
    """1-based line numbers of the data lines (not blank, not '#' comments). Error path only."""
    numbers = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, start=1):
            if line.split("#", 1)[0].strip():
                numbers.append(lineno)
    return numbers


def _first_bad_text_line(path: Path) -> tuple[int, str]:
    """Find the first data line that is not six numbers. Error path only."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, start=1):
            fields = line.split("#", 1)[0].split()
            if not fields:
                continue
            if len(fields) != 6:
                return lineno, f"{len(fields)} columns instead of 6 ({' '.join(ALPHA_COLUMNS)})"
            try:
                [float(f) for f in fields]
            except ValueError:
                return lineno, "a value that is not a number"
    return 0, "unreadable content"


def _read_txt(path: Path) -> np.ndarray:
    refuse_binary(path, what="a 6-column α text file (xx yy zz xy yz zx)", field="input_format")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data"
            data = np.loadtxt(path, comments="#", ndmin=2, dtype=np.float64)
    except (ValueError, UnicodeDecodeError):
        lineno, what = _first_bad_text_line(path)
        raise InputError(
            f"has {what}",
            file=path,
            field=f"line {lineno}",
            fix="each line must hold the six numbers xx yy zz xy yz zx (Å³); '#' starts a comment",
        ) from None
    if data.size == 0:
        data = np.zeros((0, 6))
    if data.shape[1] != 6:
        lineno = _data_line_numbers(path)[0]
        raise InputError(
            f"has {data.shape[1]} columns instead of 6 ({' '.join(ALPHA_COLUMNS)})",
            file=path,
            field=f"line {lineno}",
            fix="write one frame per line as xx yy zz xy yz zx (Å³), or pass a .npy of shape (n, 3, 3)",
        )
    bad = ~np.isfinite(data).all(axis=1)
    if bad.any():
        frame = int(np.argmax(bad))
        lineno = _data_line_numbers(path)[frame]
        raise InputError(
            f"non-finite value (NaN or inf) in frame {frame}",
            file=path,
            field=f"line {lineno}",
            fix="remove or recompute that frame",
        )
    alpha = np.empty((data.shape[0], 3, 3))
    for c, (i, j) in enumerate(_IJ):
        alpha[:, i, j] = data[:, c]
        alpha[:, j, i] = data[:, c]
    return alpha


def _read_npy(path: Path) -> np.ndarray:
    try:
        alpha = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise InputError(
            f"not a readable .npy array ({' '.join(str(exc).split())})",
            file=path,
            field="npy",
            fix="save α with numpy.save as a float array of shape (n, 3, 3)",
        ) from None
    if alpha.ndim != 3 or alpha.shape[1:] != (3, 3) or not np.issubdtype(alpha.dtype, np.number):
        raise InputError(
            f"array has shape {alpha.shape} and dtype {alpha.dtype}, expected numbers of shape (n, 3, 3)",
            file=path,
            field="shape",
            fix="save α as a float array of shape (n_frames, 3, 3) in Å³",
        )
    return np.asarray(alpha, dtype=np.float64)


def _read_npz(path: Path) -> tuple[np.ndarray, float | None]:
    try:
        with np.load(path, allow_pickle=False) as z:
            if "alpha_A3" not in z.files:
                raise InputError(f"no 'alpha_A3' array (has {', '.join(z.files) or 'none'})", file=path,
                                 field="alpha_A3", fix="store α as alpha_A3 (n, 3, 3) and the spacing as dt_fs")
            alpha = np.asarray(z["alpha_A3"], dtype=np.float64)
            dt = _stated_dt(z["dt_fs"].item(), path) if "dt_fs" in z.files else None
    except (ValueError, OSError) as exc:
        raise InputError(f"not a readable .npz archive ({' '.join(str(exc).split())})", file=path, field="npz",
                         fix="save α with numpy.savez(alpha_A3=..., dt_fs=...)") from None
    if alpha.ndim != 3 or alpha.shape[1:] != (3, 3):
        raise InputError(f"alpha_A3 has shape {alpha.shape}, expected (n, 3, 3)", file=path, field="shape",
                         fix="save α as a float array of shape (n_frames, 3, 3) in Å³")
    return alpha, dt


def _read_extxyz(path: Path) -> np.ndarray:
    import ase.io

    try:
        frames = ase.io.read(path, index=":", format="extxyz")
    except Exception as exc:  # noqa: BLE001 - ASE raises many types for unreadable files
        raise InputError(
            f"not a readable extxyz file ({type(exc).__name__}: {' '.join(str(exc).split())})",
            file=path,
            field="extxyz",
            fix="write frames with ase.io.write(..., format='extxyz') and info['polarizability']",
        ) from None
    values = []
    for k, atoms in enumerate(frames):  # one dict lookup per frame: I/O, not a hot path
        value = atoms.info.get("polarizability")
        arr = None if value is None else np.asarray(value, dtype=np.float64).ravel()
        if arr is None or arr.size != 9:
            raise InputError(
                f"frame {k} has no 9-number 'polarizability' in its info",
                file=path,
                field="polarizability",
                fix="store α (Å³, row-major 3x3) as atoms.info['polarizability'] in every frame",
            )
        values.append(arr)
    return np.asarray(values, dtype=np.float64).reshape(-1, 3, 3)


#: Rows of the spherical decomposition applied to the 9 row-major components of α (see
#: :func:`_decompose`): the λ=0 part tr α/3, the five λ=2 parts scaled so that
#: γ²/(ω² · dt/N) = Σ_r |FT Y_r|², and the three antisymmetric parts (for the symmetry check).
_S3, _H = math.sqrt(3.0), 0.5
_DECOMPOSE = np.array(
    [
        # xx      xy      xz      yx      yy      yz      zx      zy      zz
        [1 / 3, 0, 0, 0, 1 / 3, 0, 0, 0, 1 / 3],  # Y0 = tr α / 3           → a² = ω² c |Ŷ0|²
        [_S3 * _H, 0, 0, 0, -_S3 * _H, 0, 0, 0, 0],  # Y1 = √3/2 (xx − yy)
        [_H, 0, 0, 0, _H, 0, 0, 0, -1.0],  # Y2 = (xx + yy − 2 zz)/2
        [0, _S3 * _H, 0, _S3 * _H, 0, 0, 0, 0, 0],  # Y3 = √3 (xy + yx)/2
        [0, 0, 0, 0, 0, _S3 * _H, 0, _S3 * _H, 0],  # Y4 = √3 (yz + zy)/2
        [0, 0, _S3 * _H, 0, 0, 0, _S3 * _H, 0, 0],  # Y5 = √3 (zx + xz)/2   → γ² = ω² c Σ_{1..5}|Ŷr|²
        [0, 1.0, 0, -1.0, 0, 0, 0, 0, 0],  # xy − yx
        [0, 0, 0, 0, 0, 1.0, 0, -1.0, 0],  # yz − zy
        [0, 0, -1.0, 0, 0, 0, 1.0, 0, 0],  # zx − xz
    ]
)


def _raise_if_nonfinite(alpha: np.ndarray, *, file: str | os.PathLike[str] | None, field: str) -> None:
    """Raise :class:`InputError` naming the first frame (and member) of α (..., n, 3, 3) with NaN/inf."""
    finite = np.isfinite(alpha).all(axis=(-2, -1))  # (..., n)
    if not finite.all():
        idx = np.unravel_index(int(np.argmin(finite.ravel())), finite.shape)
        frame = int(idx[-1])
        member = f" of member {int(idx[0])}" if finite.ndim > 1 else ""
        raise InputError(
            f"non-finite value (NaN or inf) in frame {frame}{member}",
            file=file,
            field=f"frame {frame}",
            fix="remove or recompute that frame",
        )


def _decompose(
    alpha: np.ndarray, *, file: str | os.PathLike[str] | None, field: str, check_finite: bool = True
) -> tuple[np.ndarray, bool]:
    """Validate α (..., n, 3, 3) and return its spherical components Y (..., 6, n) (time last).

    One BLAS pass maps the 9 row-major components to tr α/3 (λ=0), five λ=2 combinations and
    three antisymmetric differences. Why: |Ŷ0|² gives a² and Σ_{r=1..5}|Ŷr|² gives γ² directly
    (eq. S3 expands to 3Σ_off|α̇_ij|² + ½Σ_pairs|α̇_ii−α̇_jj|² = 3Σ_off + (3/2)(|E1|²+|E2|²) with
    E1, E2 an orthonormal traceless basis of the diagonal), the symmetric part of α is used
    (the λ=1, antisymmetric part carries no Raman signal here), and rows come out contiguous
    in time for the FFT. Also checks NaN/inf (naming the frame; ``check_finite=False`` leaves
    that to the caller, who must then check Y or what it computes from Y) and warns about
    asymmetry. Returns (Y, symmetric) with ``symmetric`` true when α was exactly symmetric.
    """
    n = alpha.shape[-3]
    flat = alpha.reshape(alpha.shape[:-3] + (n, 9))
    with np.errstate(invalid="ignore", over="ignore"):
        comps = np.matmul(_DECOMPOSE, np.swapaxes(flat, -1, -2))  # (..., 9, n)
    if check_finite and not np.isfinite(comps.sum()):
        _raise_if_nonfinite(alpha, file=file, field=field)
    asym = comps[..., 6:, :]
    asym_max = max(float(asym.max()), -float(asym.min()))
    if asym_max > 0.0:
        scale = max(abs(float(flat.max())), abs(float(flat.min())))
        tol = SYMMETRY_RTOL * scale
        if asym_max > tol:
            per_frame = np.abs(asym).max(axis=-2).reshape(-1, n)
            worst = int(np.argmax(per_frame) % n)
            n_bad = int((per_frame > tol).any(axis=0).sum())
            where = f"{file}: " if file is not None else ""
            warnings.warn(
                f"{where}α is not symmetric in {n_bad} of {n} frames (worst: frame {worst}, "
                f"|α−αᵀ| = {asym_max:.3g} Å³ > {tol:.3g} Å³); using the symmetric part (α+αᵀ)/2",
                UserWarning,
                stacklevel=3,
            )
    return comps[..., :6, :], asym_max == 0.0


def _check_shape(alpha: np.ndarray, *, file: str | os.PathLike[str] | None, field: str, batch: int) -> None:
    want = "(n_frames, 3, 3)" if batch == 0 else "(members, n_frames, 3, 3)"
    if alpha.ndim != 3 + batch or alpha.shape[-2:] != (3, 3) or (batch and alpha.shape[0] < 1):
        raise InputError(
            f"α has shape {alpha.shape}, expected {want}", file=file, field=field,
            fix="pass one 3x3 tensor (Å³) per frame",
        )
    if alpha.shape[-3] < MIN_FRAMES:
        raise InputError(
            f"only {alpha.shape[-3]} frames; a spectrum needs at least {MIN_FRAMES}",
            file=file,
            field="frames",
            fix="provide a longer α time series",
        )


def validate_alpha(alpha_A3: Any, *, file: str | os.PathLike[str] | None = None, field: str = "alpha") -> np.ndarray:
    """Check an α series and return it as a symmetric float array (n, 3, 3) in Å³.

    Raises :class:`~ramanscreen.tasks.common.InputError` for a wrong shape, NaN/inf (naming the frame) or
    fewer than :data:`MIN_FRAMES` frames. A tensor that is not symmetric beyond
    :data:`SYMMETRY_RTOL` (relative to the largest |α_ij| of the series) gives a warning; the
    series is always returned symmetrised, (α + αᵀ)/2.

    >>> a = np.tile(np.eye(3), (16, 1, 1)); a[:, 0, 1] = 1.0  # α_xy = 1, α_yx = 0
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as w:
    ...     warnings.simplefilter("always")
    ...     s = validate_alpha(a)
    >>> len(w), float(s[0, 0, 1]), float(s[0, 1, 0])
    (1, 0.5, 0.5)
    """
    alpha = np.asarray(alpha_A3, dtype=np.float64)
    _check_shape(alpha, file=file, field=field, batch=0)
    _, symmetric = _decompose(alpha, file=file, field=field)
    if symmetric:
        return np.ascontiguousarray(alpha)
    return np.ascontiguousarray(0.5 * (alpha + alpha.transpose(0, 2, 1)))


@dataclass(frozen=True)
class AlphaSeries:
    """An α time series as read from a file: α (n, 3, 3) in Å³, symmetric, and the time between
    samples the file states (``dt_fs``; None when it does not)."""

    alpha_A3: np.ndarray
    dt_fs: float | None
    source: str

    def spacing_fs(self, given_dt_fs: float | None = None, *, stride: int = 1) -> float:
        """The time between the samples used (every ``stride``-th): the file's ``dt_fs``, or
        ``given_dt_fs`` when the file states none. A ``given_dt_fs`` that contradicts the file
        is refused (field ``dt_fs``), so is a file without one when none is given.

        >>> AlphaSeries(np.zeros((80, 3, 3)), 10.0, "a.txt").spacing_fs(stride=5)
        50.0
        >>> AlphaSeries(np.zeros((16, 3, 3)), 10.0, "a.txt").spacing_fs(2.0)
        Traceback (most recent call last):
        ...
        ramanscreen.tasks.common.InputError: a.txt: dt_fs: 2 fs contradicts the file, which states 10 fs between α samples (fix: leave it out: the file states it)
        >>> AlphaSeries(np.zeros((64, 3, 3)), 10.0, "a.txt").spacing_fs(stride=10)
        Traceback (most recent call last):
        ...
        ramanscreen.tasks.common.InputError: a.txt: stride: 10 leaves 7 of the file's 64 α samples; a spectrum needs at least 16 (fix: use a stride of at most 4)
        """
        dt = self.dt_fs
        if given_dt_fs is not None:
            given = _check_positive(given_dt_fs, "dt_fs", "give the time between the file's α samples, in fs")
            if dt is not None and not math.isclose(given, dt, rel_tol=1e-6):
                raise InputError(f"{given:g} fs contradicts the file, which states {dt:g} fs between α samples",
                                 file=self.source, field="dt_fs", fix="leave it out: the file states it")
            dt = given
        if dt is None:
            raise InputError("the file does not state the time between its α samples", file=self.source,
                             field="dt_fs", fix="give it (fs between consecutive α samples of the file)")
        if int(stride) != stride or stride < 1:
            raise InputError(f"must be an integer >= 1, got {stride!r}", field="stride")
        n = len(self.alpha_A3)
        kept = -(-n // int(stride))
        if kept < MIN_FRAMES <= n:
            raise InputError(f"{stride} leaves {kept} of the file's {n} α samples; a spectrum needs at least "
                             f"{MIN_FRAMES}", file=self.source, field="stride",
                             fix=f"use a stride of at most {(n - 1) // (MIN_FRAMES - 1)}")
        return float(dt) * int(stride)


def read_alpha_series(path: str | os.PathLike[str], *, fmt: str | None = None) -> AlphaSeries:
    """Read an α series and the time between its samples, where the file states it: a
    ``# dt_fs = X`` header line (text), the ``dt_fs`` field of an ``.npz``, the JSON sidecar of
    an ``.npy`` (:func:`alpha_sidecar`), evenly spaced ``info["time_fs"]`` (extxyz).

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "alpha.txt"
    >>> _ = write_alpha(p, np.tile(np.eye(3), (16, 1, 1)), dt_fs=50.0)
    >>> s = read_alpha_series(p)
    >>> s.alpha_A3.shape, s.dt_fs
    ((16, 3, 3), 50.0)
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("no such file", file=path, field="path", fix="check the α file name")
    kind = _detect_format(path, fmt)
    dt: float | None = None
    if kind == "txt":
        alpha, dt = _read_txt(path), _txt_dt_fs(path)
    elif kind == "npy":
        alpha, dt = _read_npy(path), _npy_dt_fs(path)
    elif kind == "npz":
        alpha, dt = _read_npz(path)
    else:
        alpha, dt = _read_extxyz(path), _extxyz_dt_fs(path)
    return AlphaSeries(validate_alpha(alpha, file=path), dt, str(path))


def _extxyz_dt_fs(path: Path) -> float | None:
    import ase.io

    frames = ase.io.read(path, index="0:2", format="extxyz")
    times = [a.info.get("time_fs") for a in (frames if isinstance(frames, list) else [frames])]
    if len(times) == 2 and times[0] is not None and times[1] is not None:
        return _stated_dt(float(times[1]) - float(times[0]), path)
    return None


def read_alpha(path: str | os.PathLike[str], *, fmt: str | None = None) -> np.ndarray:
    """Read an α time series (Å³) as a symmetric array of shape (n, 3, 3).

    Formats (``fmt`` or by suffix): ``txt`` — six columns ``xx yy zz xy yz zx`` per line, one
    frame per line, ``#`` comments (any suffix other than the two below); ``npy`` — an array of
    shape (n, 3, 3); ``extxyz`` (``.xyz``/``.extxyz``) — frames whose ``atoms.info
    ["polarizability"]`` holds 9 numbers (row-major 3x3).

    Bad input raises :class:`~ramanscreen.tasks.common.InputError` naming the line (text) or frame; see
    :func:`validate_alpha` for the checks shared by all formats.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "alpha.txt"
    >>> a = np.tile(np.diag([10.0, 11.0, 12.0]), (16, 1, 1)); a[:, 0, 1] = a[:, 1, 0] = 0.25
    >>> write_alpha_txt(p, a)
    >>> b = read_alpha(p)
    >>> b.shape, bool(np.allclose(a, b))
    ((16, 3, 3), True)
    """
    return read_alpha_series(path, fmt=fmt).alpha_A3


def write_alpha_txt(path: str | os.PathLike[str], alpha_A3: Any, *, dt_fs: float | None = None) -> None:
    """Write α (n, 3, 3) in Å³ as the 6-column text format ``xx yy zz xy yz zx``, atomically,
    with a ``# dt_fs = X`` header line when the time between samples is known.

    Off-diagonal columns hold the symmetric part ((α_ij + α_ji)/2). Validated first (see
    :func:`validate_alpha`), so nothing is written for bad input.
    """
    alpha = validate_alpha(alpha_A3, file=path)
    header = " ".join(ALPHA_COLUMNS) + "   (polarizability, Å^3)"
    if dt_fs is not None:
        header += f"\ndt_fs = {_check_positive(dt_fs, 'dt_fs', 'the time between α samples, fs')!r}"
    cols = np.stack([alpha[:, i, j] for i, j in _IJ], axis=1)
    with atomic_write(path, "w") as fh:
        np.savetxt(fh, cols, fmt="%.12e", header=header)


def write_alpha(path: str | os.PathLike[str], alpha_A3: Any, *, dt_fs: float | None = None,
                meta: Mapping[str, Any] | None = None, committee: bool = False) -> Path:
    """Write an α series with the time between its samples, in the format of the suffix: ``.txt``
    (6 columns + ``# dt_fs`` header), ``.npy`` (+ the JSON sidecar :func:`alpha_sidecar` with
    ``dt_fs`` and ``meta``) or ``.npz`` (``alpha_A3`` and ``dt_fs``). ``committee``: α of shape
    (m, n, 3, 3), ``.npy`` only. Atomic.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    arr = np.ascontiguousarray(np.asarray(alpha_A3, dtype=np.float64))
    if committee:
        _check_shape(arr, file=path, field="alpha_committee", batch=1)
        if suffix != ".npy":
            raise InputError("a committee series is written as .npy", file=path, field="path", fix="name it *.npy")
    if dt_fs is not None:
        dt_fs = _check_positive(dt_fs, "dt_fs", "the time between α samples, fs")
    if suffix == ".txt":
        write_alpha_txt(path, arr, dt_fs=dt_fs)
    elif suffix == ".npy":
        if not committee:
            arr = validate_alpha(arr, file=path)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, arr)
        with atomic_write(alpha_sidecar(path), "w") as fh:
            json.dump({"dt_fs": dt_fs, "shape": list(arr.shape), "units": "alpha in A^3, dt_fs in fs",
                       **dict(meta or {})}, fh, indent=2, default=str)
    elif suffix == ".npz":
        arr = validate_alpha(arr, file=path)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            extra: dict[str, Any] = {"dt_fs": np.float64(dt_fs)} if dt_fs is not None else {}
            np.savez(fh, alpha_A3=arr, **extra)
    else:
        raise InputError(f"unknown α output format {path.suffix!r}", file=path, field="path",
                         fix="use .txt, .npy or .npz")
    return path


# --------------------------------------------------------------------------------------------
# The spectrum
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RamanSpectrum:
    """A Raman spectrum on the Fourier grid ν̃_k = k / (N dt) in cm⁻¹, k = 0, 1, … (or on every
    step-th of those bins for a long, smoothed series; see :func:`raman_spectrum`'s ``decimate``).

    Arrays (all the same length): ``freq_cm1``; ``intensity`` (I = I_∥ + I_⊥, arbitrary units),
    ``intensity_parallel``, ``intensity_perpendicular``; ``a2``, ``gamma2`` (Å⁶ fs⁻¹, smoothed);
    ``depolarization_ratio`` (I_⊥/I_∥, NaN where I_∥ = 0). Metadata: ``dt_fs`` (time between α
    samples), ``n_frames``, ``laser_nm``, ``sigma_cm1``, ``temperature_k`` (None: no Bose
    factor), ``max_freq_cm1`` (None: up to Nyquist).
    """

    freq_cm1: np.ndarray
    intensity: np.ndarray
    intensity_parallel: np.ndarray
    intensity_perpendicular: np.ndarray
    a2: np.ndarray
    gamma2: np.ndarray
    depolarization_ratio: np.ndarray
    dt_fs: float
    n_frames: int
    laser_nm: float
    sigma_cm1: float
    temperature_k: float | None = None
    max_freq_cm1: float | None = None

    @property
    def df_cm1(self) -> float:
        """Frequency resolution (bin width) in cm⁻¹: CM1_PER_INV_FS / (n_frames · dt_fs)."""
        return CM1_PER_INV_FS / (self.n_frames * self.dt_fs)

    @property
    def grid_step_cm1(self) -> float:
        """Spacing of ``freq_cm1``: ``df_cm1``, or a multiple of it for a decimated smoothed spectrum."""
        return float(self.freq_cm1[1] - self.freq_cm1[0])

    @property
    def nyquist_cm1(self) -> float:
        """Nyquist frequency in cm⁻¹: CM1_PER_INV_FS / (2 dt_fs)."""
        return CM1_PER_INV_FS / (2.0 * self.dt_fs)

    def metadata(self) -> dict[str, str]:
        """Settings and conventions as strings (for Parquet schema metadata)."""
        return {
            "ramanscreen.kind": "raman_spectrum",
            "ramanscreen.conventions_version": CONVENTIONS_VERSION,
            "dt_fs": repr(self.dt_fs),
            "n_frames": str(self.n_frames),
            "laser_nm": repr(self.laser_nm),
            "sigma_cm1": repr(self.sigma_cm1),
            "smoothing": "Gaussian convolution, sigma_cm1 is the standard deviation",
            "temperature_k": "none" if self.temperature_k is None else repr(self.temperature_k),
            "bose_factor": "none" if self.temperature_k is None else "n(w)+1 = 1/(1-exp(-hc nu/kT))",
            "max_freq_cm1": "none" if self.max_freq_cm1 is None else repr(self.max_freq_cm1),
            "df_cm1": repr(self.df_cm1),
            "grid_step_cm1": repr(self.grid_step_cm1),
            "units": json.dumps(
                {
                    "freq_cm1": "cm^-1",
                    "a2": "A^6 fs^-1 (two-sided spectral density of d alpha/dt)",
                    "gamma2": "A^6 fs^-1",
                    "intensity": "arbitrary: (1-nu/nu_in)^4/nu[cm^-1] * (45 a2 + 7 gamma2)/45",
                }
            ),
            "omega0": "mean removed; a2 = gamma2 = 0 and all intensities 0 at freq 0",
        }


def _check_positive(value: Any, field: str, fix: str, *, allow_zero: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{value!r} is not a number", field=field, fix=fix) from None
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise InputError(f"must be {'≥ 0' if allow_zero else '> 0'}, got {value!r}", field=field, fix=fix)
    return v


def _output_step(sigma_bins: float, decimate: bool) -> int:
    """Output every ``step``-th bin: ⌊σ/(POINTS_PER_SIGMA bins)⌋ when decimating, else 1."""
    if not decimate or sigma_bins < 4.0:
        return 1
    step = int(sigma_bins // POINTS_PER_SIGMA)
    return 1 if step < 2 else int(sfft.prev_fast_len(step, real=True))  # 2·3·5-smooth: fast FFT lengths


def _smoothing_layout(m: int, sigma_bins: float, step: int = 1) -> tuple[int, int]:
    """(pad, buffer length) for smoothing rows of ``m`` bins with a Gaussian of ``sigma_bins``.

    ``pad`` and the length are multiples of ``step`` so that decimated samples fall on bins.
    """
    if sigma_bins <= 0:
        return 0, m
    pad = int(math.ceil(_TRUNCATE * sigma_bins)) + 1
    pad = -(-pad // step) * step
    if pad > m - 1:
        raise InputError(
            f"the smoothing kernel ({_TRUNCATE:g}σ = {pad} bins) is wider than the spectrum ({m} bins)",
            field="sigma_cm1",
            fix="use a smaller sigma_cm1 or a longer α series",
        )
    length = m + 2 * pad
    if sigma_bins < 4.0:
        return pad, length
    return pad, step * sfft.next_fast_len(-(-length // step), real=True)


@functools.lru_cache(maxsize=8)
def _twiddle(length: int, n_q: int, step: int) -> np.ndarray:
    """exp(−2πi q r / length) for q < n_q, r < step (read-only, cached)."""
    tw = np.exp((-2j * np.pi / length) * np.outer(np.arange(n_q), np.arange(step)))
    tw.setflags(write=False)
    return tw


def _smooth_buffer(
    buf: np.ndarray, m: int, pad: int, sigma_bins: float, odd: np.ndarray, step: int = 1
) -> np.ndarray:
    """Smooth rows whose data sit in ``buf[..., pad:pad+m]``; return bins 0, step, 2 step, … < m.

    Fills the ends first: even continuation beyond bin 0 (odd where ``odd``, with bin 0 := 0)
    and even continuation beyond the last bin; anything further out is zero. With ``step`` > 1
    (FFT path only) the smoothed rows are evaluated only at every ``step``-th bin, by an inverse
    FFT of length L/step of the kernel-filtered transform: exact, because the filtered transform
    is below exp(−π²σ²/(2 step²)) < 1e−130 beyond the smaller Nyquist (step ≤ σ/8 bins).
    """
    if pad == 0:
        return buf[..., :m]
    rows = buf.reshape(-1, buf.shape[-1])
    odd = np.broadcast_to(odd, buf.shape[:-1]).reshape(-1)
    rows[:, :pad] = rows[:, 2 * pad : pad : -1]  # y(−k) = y(k)
    rows[:, pad + m : 2 * pad + m] = rows[:, (pad + m - 2) - np.arange(pad)]  # even about the last bin
    rows[:, 2 * pad + m :] = 0.0
    if odd.any():
        rows[odd, :pad] *= -1.0  # y(−k) = −y(k)
        rows[odd, pad] = 0.0
    length = rows.shape[-1]
    if sigma_bins >= 4.0:
        q = np.arange(length // 2 + 1) / length
        kernel_ft = np.exp(-2.0 * np.pi**2 * sigma_bins**2 * q * q)
        n_small = length // step
        n_q = n_small // 2 + 1
        if step == 1:
            ft = np.fft.rfft(rows, axis=-1)
        else:
            # Only the transform's first n_q coefficients are needed (pruned FFT, exact): with
            # j = i·step + r, F_q = Σ_r e^{−2πi q r/L} G_r(q), G_r = rfft over i of x[i·step + r].
            g = np.fft.rfft(rows.reshape(rows.shape[0], n_small, step), axis=1)  # (rows, n_q, step)
            ft = np.einsum("kqr,qr->kq", g, _twiddle(length, n_q, step))
        ft = ft[:, :n_q] * kernel_ft[:n_q]
        out = np.fft.irfft(ft, n=n_small, axis=-1)
        if step > 1:
            out *= 1.0 / step  # irfft normalises by 1/n_small, the full transform by 1/length
        out = out[:, pad // step : pad // step + (m - 1) // step + 1]
    else:
        from scipy.ndimage import correlate1d

        r = np.arange(-pad, pad + 1)
        w = np.exp(-0.5 * (r / sigma_bins) ** 2)
        out = correlate1d(rows, w / w.sum(), axis=-1, mode="constant")[:, pad : pad + m]
    out[odd, 0] = 0.0  # exact for an odd continuation
    return out.reshape(buf.shape[:-1] + (out.shape[-1],))


def gaussian_smooth(
    y: np.ndarray, sigma_bins: float, *, odd_at_zero: np.ndarray | bool = False
) -> np.ndarray:
    """Convolve each row of ``y`` (last axis = frequency bins from ω = 0) with a Gaussian.

    ``sigma_bins`` is the standard deviation in bins. Beyond bin 0 a row is continued as an even
    function, or an odd one where ``odd_at_zero`` is true (bin 0 is then taken as 0); beyond the
    last bin as an even function. Kernels of σ ≥ 4 bins are applied by FFT with the exact
    Gaussian transform exp(−2π²σ²q²) (aliasing < 1e−100); narrower ones directly with the
    sampled, normalised Gaussian. Both are truncated at 8σ (relative weight < 1e−14 beyond).
    The area under a peak far from the ends is preserved.

    >>> y = np.zeros(201); y[100] = 1.0
    >>> s = gaussian_smooth(y, 10.0)
    >>> round(float(s.sum()), 12), int(np.argmax(s)), round(float(s[100] * 10 * np.sqrt(2 * np.pi)), 6)
    (1.0, 100, 1.0)
    """
    y = np.asarray(y, dtype=np.float64)
    m = y.shape[-1]
    pad, length = _smoothing_layout(m, sigma_bins)
    if pad == 0:
        return y.copy()
    buf = np.empty(y.shape[:-1] + (length,))
    buf[..., pad : pad + m] = y
    return _smooth_buffer(buf, m, pad, sigma_bins, np.asarray(odd_at_zero, dtype=bool))


def _output_bins(n: int, dt_fs: float, *, sigma_cm1: float, max_freq_cm1: float | None,
                 decimate: bool) -> tuple[int, int]:
    """(last Fourier bin kept, output step) of the spectrum of ``n`` α samples ``dt_fs`` apart."""
    df_cm1 = CM1_PER_INV_FS / (n * dt_fs)
    nyquist_bin = n // 2
    if max_freq_cm1 is None:
        k_out = nyquist_bin
    else:
        k_out = min(nyquist_bin, int(math.floor(max_freq_cm1 / df_cm1 + 1e-9)))
        if k_out < 2:
            raise InputError(
                f"max_freq_cm1 = {max_freq_cm1} keeps fewer than 3 frequency bins (bin width {df_cm1:.4g} cm⁻¹)",
                field="max_freq_cm1",
                fix="raise max_freq_cm1 or use a longer α series",
            )
    return k_out, _output_step(sigma_cm1 / df_cm1, decimate)


def frequency_grid(n_frames: int, dt_fs: float, *, sigma_cm1: float = SpectrumSettings.sigma_cm1,
                   max_freq_cm1: float | None = None, decimate: bool = True) -> np.ndarray:
    """The ``freq_cm1`` axis :func:`raman_spectrum` returns for ``n_frames`` α samples ``dt_fs`` apart.

    >>> frequency_grid(256, 10.0)[:3].round(3).tolist()
    [0.0, 13.03, 26.06]
    """
    k_out, step = _output_bins(n_frames, dt_fs, sigma_cm1=sigma_cm1, max_freq_cm1=max_freq_cm1, decimate=decimate)
    return np.arange(0, k_out + 1, step) * (CM1_PER_INV_FS / (n_frames * dt_fs))


def _spectra_arrays(
    alpha: np.ndarray,
    dt_fs: float,
    *,
    laser_nm: float,
    sigma_cm1: float,
    temperature_k: float | None,
    max_freq_cm1: float | None,
    decimate: bool = True,
    field: str = "alpha",
) -> dict[str, np.ndarray]:
    """Core: α of shape (..., n, 3, 3) → spectra arrays of shape (..., n_bins). Vectorised."""
    n = alpha.shape[-3]
    df_cm1 = CM1_PER_INV_FS / (n * dt_fs)
    nyquist_bin = n // 2
    k_out, step = _output_bins(n, dt_fs, sigma_cm1=sigma_cm1, max_freq_cm1=max_freq_cm1, decimate=decimate)
    nu_in = 1e7 / laser_nm
    if k_out * df_cm1 >= nu_in:
        raise InputError(
            f"the spectrum reaches {k_out * df_cm1:.0f} cm⁻¹, beyond the laser frequency {nu_in:.0f} cm⁻¹",
            field="laser_nm",
            fix="use a shorter laser wavelength or set max_freq_cm1 below the laser frequency",
        )
    sigma_bins = sigma_cm1 / df_cm1
    k_in = min(nyquist_bin, k_out + int(math.ceil(_TRUNCATE * sigma_bins)) + 2) if sigma_bins > 0 else k_out
    m_in = k_in + 1
    pad, length = _smoothing_layout(m_in, sigma_bins, step)

    # One BLAS pass: validated spherical components (..., 6, n); one rfft pass over the six.
    comps, _ = _decompose(alpha, file=None, field=field, check_finite=False)
    spec = np.fft.rfft(comps, axis=-1)[..., :m_in]
    del comps
    spec[..., 0] = 0.0  # the mean only enters bin 0: zeroing it removes the mean exactly
    power = np.abs(spec)
    del spec
    power *= power  # |Ŷr|², (..., 6, m_in)
    p_iso = power[..., 0, :]  # |Ŷ0|²
    p_aniso = power[..., 1:, :].sum(axis=-2)  # Σ_{r=1..5} |Ŷr|²
    if not np.isfinite(p_iso.sum() + p_aniso.sum()):  # NaN/inf anywhere in α reaches every bin
        _raise_if_nonfinite(alpha, file=None, field=field)

    k = np.arange(m_in, dtype=np.float64)
    nu = k * df_cm1
    # Exact derivative ω² (rad/fs)² times the periodogram normalisation dt/N (two-sided density).
    w2c = k * k
    w2c *= (2.0 * np.pi / (n * dt_fs)) ** 2 * (dt_fs / n)
    # (ν̃_in−ν̃)⁴/ν̃ / ν̃_in⁴ ; 0 at ω = 0
    pref = np.zeros(m_in)
    laser = 1.0 - nu[1:] / nu_in
    laser *= laser
    laser *= laser
    np.divide(laser, nu[1:], out=pref[1:])
    batch = alpha.shape[:-3]
    buf = np.empty(batch + (4, length))
    core = buf[..., pad : pad + m_in]
    np.multiply(p_iso, w2c, out=core[..., 0, :])  # a²
    np.multiply(p_aniso, w2c, out=core[..., 1, :])  # γ²
    np.multiply(core[..., 0, :], pref, out=core[..., 2, :])  # prefactor · a²
    np.multiply(core[..., 1, :], pref, out=core[..., 3, :])  # prefactor · γ²
    del power, p_iso, p_aniso
    odd = np.array([False, False, True, True])
    n_out = k_out // step + 1
    smooth = _smooth_buffer(buf, m_in, pad, sigma_bins, odd, step)[..., :n_out]
    nu = nu[: k_out + 1 : step]
    a2_s, g2_s, pa2_s, pg2_s = (smooth[..., r, :] for r in range(4))
    i_par = pa2_s + (4.0 / 45.0) * pg2_s
    i_perp = (3.0 / 45.0) * pg2_s
    if temperature_k is not None:
        x = _second_radiation_constant_cm_k() * nu[1:] / temperature_k
        bose = np.zeros(n_out)
        bose[1:] = -1.0 / np.expm1(-x)  # n + 1 = 1/(1 − e^{−x})
        i_par *= bose
        i_perp *= bose
    i_par[..., 0] = 0.0
    i_perp[..., 0] = 0.0
    total = i_par + i_perp
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = i_perp / i_par
    rho[~(i_par > 0)] = np.nan
    return {
        "freq_cm1": nu,
        "intensity": total,
        "intensity_parallel": i_par,
        "intensity_perpendicular": i_perp,
        "a2": np.ascontiguousarray(a2_s),
        "gamma2": np.ascontiguousarray(g2_s),
        "depolarization_ratio": rho,
    }


def _validate_settings(
    dt_fs: Any, laser_nm: Any, sigma_cm1: Any, temperature_k: Any, max_freq_cm1: Any
) -> tuple[float, float, float, float | None, float | None]:
    dt = _check_positive(dt_fs, "dt_fs", "give the time between α samples in fs (MD step × stride)")
    laser = _check_positive(laser_nm, "laser_nm", "give the laser wavelength in nm, e.g. 532")
    sigma = _check_positive(sigma_cm1, "sigma_cm1", "give the Gaussian standard deviation in cm⁻¹ (0: none)", allow_zero=True)
    temp = None if temperature_k is None else _check_positive(temperature_k, "temperature_k", "give T in K, or omit it")
    fmax = None if max_freq_cm1 is None else _check_positive(max_freq_cm1, "max_freq_cm1", "give a frequency in cm⁻¹, or omit it")
    return dt, laser, sigma, temp, fmax


def raman_spectrum(
    alpha_A3: Any,
    dt_fs: float,
    *,
    laser_nm: float = SpectrumSettings.laser_nm,
    sigma_cm1: float = SpectrumSettings.sigma_cm1,
    temperature_k: float | None = None,
    max_freq_cm1: float | None = SpectrumSettings.max_freq_cm1,
    decimate: bool = True,
) -> RamanSpectrum:
    """Raman spectrum (eqs. S1–S3) of an α series of shape (n, 3, 3) in Å³ sampled ``dt_fs`` apart.

    ``dt_fs`` is the time between α samples (MD step × stride). ``sigma_cm1`` is the standard
    deviation of the Gaussian smoothing (0: none). ``temperature_k`` multiplies the intensities
    by the Bose–Einstein factor n(ω)+1. ``max_freq_cm1`` cuts the output range (default: up to
    Nyquist). ``decimate``: when σ spans at least 2 × POINTS_PER_SIGMA Fourier bins (long
    series), return every step-th bin, step = ⌊σ/(POINTS_PER_SIGMA Δν̃)⌋, i.e. at least
    POINTS_PER_SIGMA = 8 points per σ — exact samples of the same smoothed spectrum (it is
    band-limited), and not 10⁵ rows of redundant values. ``False`` keeps every Fourier bin.
    See the module docstring for the conventions (units, ω = 0, smoothing ends).

    >>> rng = np.random.default_rng(0)
    >>> a = rng.normal(size=(256, 3, 3)); a = a + a.transpose(0, 2, 1)
    >>> sp = raman_spectrum(a, 10.0)
    >>> sp.freq_cm1.shape, float(sp.intensity[0]), sp.n_frames
    ((129,), 0.0, 256)
    """
    dt, laser, sigma, temp, fmax = _validate_settings(dt_fs, laser_nm, sigma_cm1, temperature_k, max_freq_cm1)
    alpha = np.asarray(alpha_A3, dtype=np.float64)
    _check_shape(alpha, file=None, field="alpha", batch=0)
    arrays = _spectra_arrays(
        alpha, dt, laser_nm=laser, sigma_cm1=sigma, temperature_k=temp, max_freq_cm1=fmax, decimate=bool(decimate)
    )
    return RamanSpectrum(
        **arrays, dt_fs=dt, n_frames=alpha.shape[0], laser_nm=laser, sigma_cm1=sigma, temperature_k=temp, max_freq_cm1=fmax
    )


def spectrum_band(
    alpha_committee_A3: Any,
    dt_fs: float,
    *,
    percentiles: tuple[float, float] = SpectrumSettings.band_percentiles,
    **kwargs: Any,
) -> tuple[RamanSpectrum, np.ndarray, np.ndarray]:
    """Committee spectrum and its confidence band from α of shape (m, n, 3, 3) (m members).

    Each member's spectrum is computed (vectorised over members, one rfft pass). Returns the
    committee-mean spectrum (every array is the mean over members of that quantity; the
    depolarisation ratio is recomputed from the mean I_⊥ and I_∥) and the pointwise
    16th and 84th percentiles over members of the total intensity (``percentiles``; for a
    Gaussian spread they are mean ± 1 standard deviation). The band is pointwise per
    frequency bin, not a simultaneous band. ``kwargs`` go to :func:`raman_spectrum`.

    >>> rng = np.random.default_rng(1)
    >>> a = rng.normal(size=(4, 128, 3, 3)); a = a + np.swapaxes(a, -1, -2)
    >>> mean, lo, hi = spectrum_band(a, 10.0)
    >>> bool(np.all(lo <= hi)), lo.shape == mean.intensity.shape
    (True, True)
    """
    alpha = np.asarray(alpha_committee_A3, dtype=np.float64)
    _check_shape(alpha, file=None, field="alpha_committee", batch=1)
    dt, laser, sigma, temp, fmax = _validate_settings(
        dt_fs,
        kwargs.pop("laser_nm", SpectrumSettings.laser_nm),
        kwargs.pop("sigma_cm1", SpectrumSettings.sigma_cm1),
        kwargs.pop("temperature_k", None),
        kwargs.pop("max_freq_cm1", SpectrumSettings.max_freq_cm1),
    )
    decimate = bool(kwargs.pop("decimate", True))
    if kwargs:
        raise TypeError(f"unexpected keyword arguments: {sorted(kwargs)}")
    n = alpha.shape[1]
    arrays = _spectra_arrays(
        alpha, dt, laser_nm=laser, sigma_cm1=sigma, temperature_k=temp, max_freq_cm1=fmax, decimate=decimate,
        field="alpha_committee",
    )
    lo, hi = np.percentile(arrays["intensity"], list(percentiles), axis=0)
    mean = {key: (val if key == "freq_cm1" else val.mean(axis=0)) for key, val in arrays.items()}
    i_par = mean["intensity_parallel"]
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = mean["intensity_perpendicular"] / i_par
    rho[~(i_par > 0)] = np.nan
    mean["depolarization_ratio"] = rho
    sp = RamanSpectrum(
        **mean, dt_fs=dt, n_frames=n, laser_nm=laser, sigma_cm1=sigma, temperature_k=temp, max_freq_cm1=fmax
    )
    return sp, lo, hi


# --------------------------------------------------------------------------------------------
# Central-peak descriptors
# --------------------------------------------------------------------------------------------


def central_peak_descriptors(
    spectrum: RamanSpectrum,
    *,
    omega_c_cm1: float = SpectrumSettings.omega_c_cm1,
    omega_min_cm1: float = SpectrumSettings.omega_min_cm1,
    host_window_cm1: tuple[float, float] = SpectrumSettings.host_window_cm1,
) -> dict[str, float]:
    """Descriptors of the low-frequency (central-peak) Raman intensity, from ``spectrum.intensity``.

    Windows (all explicit, in cm⁻¹; the upper ends are clipped to the spectrum's range):

    * low window  L = [omega_min_cm1, omega_c_cm1] — starts above ω = 0 because of the 1/ω
      prefactor; ``omega_min_cm1`` (default 5) must lie above the first two bins;
    * host window H = ``host_window_cm1`` (default 60–1000), where the lattice/molecular peaks are;
    * total window  [omega_min_cm1, H_high].

    Returns
      ``fraction_below_omega_c`` = ∫_L I dν̃ / ∫_total I dν̃ (trapezoid rule);
      ``low_to_host_ratio`` = mean of I over L / max of I over H (strongest host peak);
      ``low_peak_to_host_ratio`` = max of I over L / max of I over H;
      ``low_freq_loglog_slope`` = least-squares slope of ln I against ln ν̃ over L (≈ +1 below a
      relaxational band, ≈ −1 above it; steep and positive where there is no central peak);
      ``host_peak_cm1``, ``host_peak_intensity``, and the window edges used.

    >>> nu = np.arange(0, 1001, 0.5)
    >>> relax = nu / (1 + (nu / 20.0) ** 2)  # central peak at 20 cm⁻¹: the window straddles it, slope ≈ 0
    >>> host = 30 * np.exp(-0.5 * ((nu - 350) / 5) ** 2)
    >>> z = np.zeros_like(nu)
    >>> sp = RamanSpectrum(nu, relax + host, relax + host, z, z, z, z, dt_fs=1.0, n_frames=66713,
    ...                    laser_nm=532.0, sigma_cm1=0.0)
    >>> d = central_peak_descriptors(sp)
    >>> round(d["host_peak_cm1"]), d["low_peak_to_host_ratio"] > 0.3, round(d["low_freq_loglog_slope"], 1)
    (350, True, 0.0)
    """
    nu = np.asarray(spectrum.freq_cm1)
    inten = np.asarray(spectrum.intensity)
    if len(nu) < 3:
        raise InputError("the spectrum has fewer than 3 bins", field="spectrum", fix="use a longer α series")
    df = float(nu[1] - nu[0])
    top = float(nu[-1])
    w_min = float(omega_min_cm1)
    w_c = float(omega_c_cm1)
    h_lo, h_hi = (float(v) for v in host_window_cm1)
    if not w_min > 2.0 * df:
        raise InputError(
            f"omega_min_cm1 = {w_min} is not above the first two bins (bin width {df:.4g} cm⁻¹)",
            field="omega_min_cm1",
            fix=f"use omega_min_cm1 > {2 * df:.4g} or a longer α series",
        )
    if not w_c > w_min:
        raise InputError(f"omega_c_cm1 = {w_c} must exceed omega_min_cm1 = {w_min}", field="omega_c_cm1", fix="widen the window")
    if not (w_c <= h_lo < h_hi) or h_lo >= top:
        raise InputError(
            f"host window {host_window_cm1} must start at or above omega_c_cm1 = {w_c}, be increasing, "
            f"and start below the top of the spectrum ({top:.0f} cm⁻¹)",
            field="host_window_cm1",
            fix="choose e.g. (60, 1000) cm⁻¹",
        )
    h_hi = min(h_hi, top)
    low = (nu >= w_min) & (nu <= w_c)
    host = (nu >= h_lo) & (nu <= h_hi)
    total = (nu >= w_min) & (nu <= h_hi)
    if low.sum() < 3 or host.sum() < 1:
        raise InputError(
            f"the low window [{w_min}, {w_c}] cm⁻¹ holds fewer than 3 bins (bin width {df:.4g} cm⁻¹)",
            field="omega_c_cm1",
            fix="widen the window or use a longer α series",
        )
    i_low, nu_low = inten[low], nu[low]
    host_i = inten[host]
    k_host = int(np.argmax(host_i))
    host_max = float(host_i[k_host])
    int_low = float(np.trapezoid(i_low, nu_low))
    floor = max(float(np.abs(inten[total]).max()), 1e-300) * 1e-12
    slope = float(np.polyfit(np.log(nu_low), np.log(np.maximum(i_low, floor)), 1)[0])
    nan = float("nan")
    return {
        "fraction_below_omega_c": float(window_fraction(nu, inten, omega_min_cm1=w_min, omega_c_cm1=w_c,
                                                        host_window_cm1=(h_lo, h_hi))),
        "low_to_host_ratio": float(i_low.mean()) / host_max if host_max > 0 else nan,
        "low_peak_to_host_ratio": float(i_low.max()) / host_max if host_max > 0 else nan,
        "low_freq_loglog_slope": slope,
        "low_window_integral": int_low,
        "host_peak_cm1": float(nu[host][k_host]),
        "host_peak_intensity": host_max,
        "omega_min_cm1": w_min,
        "omega_c_cm1": w_c,
        "host_low_cm1": h_lo,
        "host_high_cm1": h_hi,
    }


def window_fraction(
    freq_cm1: Any,
    intensity: Any,
    *,
    omega_min_cm1: float = SpectrumSettings.omega_min_cm1,
    omega_c_cm1: float = SpectrumSettings.omega_c_cm1,
    host_window_cm1: tuple[float, float] = SpectrumSettings.host_window_cm1,
) -> np.ndarray:
    """cp_fraction of one or many spectra on one grid: ∫ I over [omega_min, omega_c] divided by
    ∫ I over [omega_min, host end] (host end clipped to the grid's top), both by the trapezoid
    rule over the bins inside — the formula of :func:`central_peak_descriptors`'
    ``fraction_below_omega_c``, vectorised over the leading axes of ``intensity`` (..., n_bins).
    NaN where the total is not positive. No window checks: see :meth:`SpectrumSettings.check_sampling`.

    >>> nu = np.arange(0.0, 101.0)
    >>> window_fraction(nu, np.ones((2, 101)), omega_min_cm1=10, omega_c_cm1=30, host_window_cm1=(30, 90)).tolist()
    [0.25, 0.25]
    """
    nu = np.asarray(freq_cm1, dtype=np.float64)
    inten = np.asarray(intensity, dtype=np.float64)
    top = min(float(host_window_cm1[1]), float(nu[-1]))
    low = (nu >= omega_min_cm1) & (nu <= omega_c_cm1)
    total = (nu >= omega_min_cm1) & (nu <= top)
    num = np.trapezoid(inten[..., low], nu[low], axis=-1)
    den = np.trapezoid(inten[..., total], nu[total], axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def on_grid(freq_from_cm1: Any, values: Any, freq_to_cm1: Any) -> np.ndarray:
    """Spectra ``values`` (..., n_from) sampled on ``freq_from_cm1`` (increasing), linearly
    interpolated onto ``freq_to_cm1`` (held constant beyond the ends). A smoothed spectrum is
    band-limited, so this is how a shorter run's spectrum (coarser Fourier grid) is compared
    bin by bin with the full run's.

    >>> on_grid([0.0, 2.0], [[0.0, 4.0]], [0.0, 1.0, 2.0]).tolist()
    [[0.0, 2.0, 4.0]]
    """
    x = np.asarray(freq_from_cm1, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    xt = np.asarray(freq_to_cm1, dtype=np.float64)
    # one vectorised interpolation for every leading index: the bracketing bins and weights are shared
    j = np.clip(np.searchsorted(x, xt, side="right") - 1, 0, len(x) - 2)
    w = np.clip((xt - x[j]) / (x[j + 1] - x[j]), 0.0, 1.0)
    return y[..., j] * (1.0 - w) + y[..., j + 1] * w


@dataclass(frozen=True)
class BlockUncertainty:
    """The statistical (sub-trajectory) uncertainty of a spectrum, beside the committee band.

    The α series is cut into ``n_blocks`` contiguous blocks of ``block_frames`` samples (the
    remainder at the end is left out); each block's spectrum is computed with the same settings
    and interpolated onto ``freq_cm1`` (the full run's grid). ``intensity_err`` is the standard
    error of the mean over the blocks, std(ddof=1)/√n_blocks, per bin; ``cp_fraction_err`` the
    same for the blocks' cp_fraction (:func:`window_fraction`, the run's windows), NaN with a
    ``note`` when a block is too short for the windows. For a series much longer than its
    correlation time the full run's spectrum scatters by about this much around its expectation.
    """

    n_blocks: int
    block_frames: int
    block_ps: float
    freq_cm1: np.ndarray
    intensity_blocks: np.ndarray
    intensity_err: np.ndarray
    cp_fraction_blocks: np.ndarray
    cp_fraction_err: float
    note: str = ""

    def descriptors(self) -> dict[str, float]:
        """The per-run numbers stored with the central-peak descriptors."""
        return {"cp_fraction_block_err": self.cp_fraction_err,
                "cp_fraction_block_mean": float(np.mean(self.cp_fraction_blocks)) if self.cp_fraction_blocks.size
                else float("nan"),
                "block_n": float(self.n_blocks), "block_ps": self.block_ps}


def block_uncertainty(
    alpha_A3: Any,
    dt_fs: float,
    *,
    freq_cm1: Any = None,
    n_blocks: int = SpectrumSettings.n_blocks,
    laser_nm: float = SpectrumSettings.laser_nm,
    sigma_cm1: float = SpectrumSettings.sigma_cm1,
    max_freq_cm1: float | None = SpectrumSettings.max_freq_cm1,
    temperature_k: float | None = None,
    omega_min_cm1: float = SpectrumSettings.omega_min_cm1,
    omega_c_cm1: float = SpectrumSettings.omega_c_cm1,
    host_window_cm1: tuple[float, float] = SpectrumSettings.host_window_cm1,
) -> BlockUncertainty:
    """Block (sub-trajectory) standard error of the spectrum of α (n, 3, 3) and of its cp_fraction.

    All blocks go through one batched rfft pass (:func:`raman_spectrum`'s core). ``freq_cm1``
    is the grid of the result (default: the grid :func:`raman_spectrum` gives the whole series).
    Blocks shorter than :data:`MIN_FRAMES` give NaN everywhere; blocks too short for the
    windows (:meth:`SpectrumSettings.check_sampling`) a NaN ``cp_fraction_err``; ``note`` says why.

    >>> rng = np.random.default_rng(0)
    >>> a = rng.normal(size=(4096, 3, 3)); a = a + a.transpose(0, 2, 1)
    >>> b = block_uncertainty(a, 10.0, n_blocks=4, omega_min_cm1=20.0, omega_c_cm1=100.0, host_window_cm1=(100.0, 1000.0))
    >>> b.block_frames, b.intensity_err.shape == b.freq_cm1.shape, bool(0 < b.cp_fraction_err < 0.01)
    (1024, True, True)
    """
    dt, laser, sigma, temp, fmax = _validate_settings(dt_fs, laser_nm, sigma_cm1, temperature_k, max_freq_cm1)
    alpha = np.asarray(alpha_A3, dtype=np.float64)
    _check_shape(alpha, file=None, field="alpha", batch=0)
    n_b = int(n_blocks)
    if n_b < 2:
        raise InputError(f"n_blocks = {n_blocks!r}; a standard error needs at least 2 blocks", field="n_blocks",
                         fix="use n_blocks >= 2, e.g. 4")
    n = alpha.shape[0]
    grid = (frequency_grid(n, dt, sigma_cm1=sigma, max_freq_cm1=fmax) if freq_cm1 is None
            else np.asarray(freq_cm1, dtype=np.float64))
    length = n // n_b
    nan_bins = np.full(grid.shape, np.nan)
    if length < MIN_FRAMES:
        return BlockUncertainty(n_b, length, length * dt / 1000.0, grid, np.full((n_b, len(grid)), np.nan), nan_bins,
                                np.full(n_b, np.nan), float("nan"),
                                f"{n_b} blocks of {length} α samples: a spectrum needs at least {MIN_FRAMES}")
    blocks = alpha[: n_b * length].reshape(n_b, length, 3, 3)
    arrays = _spectra_arrays(blocks, dt, laser_nm=laser, sigma_cm1=sigma, temperature_k=temp, max_freq_cm1=fmax,
                             field="alpha")
    inten = on_grid(arrays["freq_cm1"], arrays["intensity"], grid)
    err = inten.std(axis=0, ddof=1) / math.sqrt(n_b)
    note = ""
    cp = np.full(n_b, np.nan)
    try:
        SpectrumSettings(sigma_cm1=sigma, laser_nm=laser, max_freq_cm1=fmax, omega_min_cm1=omega_min_cm1,
                         omega_c_cm1=omega_c_cm1, host_window_cm1=host_window_cm1).check_sampling(dt, length)
    except InputError as exc:
        note = f"blocks of {length * dt / 1000.0:.3g} ps are too short for the windows: {exc.message}"
    else:  # on the block's own grid, as the full run's descriptor is on its own
        cp = window_fraction(arrays["freq_cm1"], arrays["intensity"], omega_min_cm1=omega_min_cm1,
                             omega_c_cm1=omega_c_cm1, host_window_cm1=host_window_cm1)
    cp_err = float(np.std(cp, ddof=1) / math.sqrt(n_b)) if np.isfinite(cp).all() else float("nan")
    return BlockUncertainty(n_b, length, length * dt / 1000.0, grid, inten, err, cp, cp_err, note)


# --------------------------------------------------------------------------------------------
# Tables and plots
# --------------------------------------------------------------------------------------------


def spectrum_table(spectrum: RamanSpectrum) -> dict[str, np.ndarray]:
    """The spectrum as named 1-D columns (:data:`SPECTRUM_COLUMNS`).

    >>> z = np.zeros(3)
    >>> sp = RamanSpectrum(np.arange(3.0), z, z, z, z, z, z, dt_fs=1.0, n_frames=4, laser_nm=532.0, sigma_cm1=4.0)
    >>> list(spectrum_table(sp))[:3]
    ['freq_cm1', 'intensity', 'intensity_parallel']
    """
    return {name: np.asarray(getattr(spectrum, name), dtype=np.float64) for name in SPECTRUM_COLUMNS}


def write_spectrum(
    spectrum: RamanSpectrum,
    prefix: str | os.PathLike[str],
    *,
    extra_metadata: Mapping[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write ``<prefix>.csv`` and ``<prefix>.parquet`` atomically; return both paths.

    The Parquet schema metadata carries :meth:`RamanSpectrum.metadata` plus ``extra_metadata``
    (values that are not strings are stored as JSON).

    >>> import tempfile, pathlib, pyarrow.parquet as pq
    >>> a = np.random.default_rng(0).normal(size=(64, 3, 3)); a = a + a.transpose(0, 2, 1)
    >>> csv, parquet = write_spectrum(raman_spectrum(a, 10.0), pathlib.Path(tempfile.mkdtemp()) / "run")
    >>> pq.read_schema(parquet).metadata[b"sigma_cm1"], csv.name
    (b'4.0', 'run.csv')
    """
    prefix = Path(prefix)
    columns = spectrum_table(spectrum)
    meta = spectrum.metadata()
    for key, value in (extra_metadata or {}).items():
        meta[key] = value if isinstance(value, str) else json.dumps(value)
    csv_path = Path(f"{prefix}.csv")
    pq_path = Path(f"{prefix}.parquet")
    write_table(columns, pq_path, metadata=meta)
    write_table(columns, csv_path)
    return csv_path, pq_path


def plot_spectrum(
    spectrum: RamanSpectrum,
    path: str | os.PathLike[str],
    *,
    inset_max_cm1: float = 150.0,
    band: tuple[np.ndarray, np.ndarray] | None = None,
    title: str | None = None,
) -> Path:
    """Plot I, I_∥ and I_⊥ over the full range, with an inset magnifying 0–``inset_max_cm1``.

    ``band`` = (low, high) arrays (e.g. from :func:`spectrum_band`) is drawn as a shaded area.
    Written atomically (PNG, or any format matplotlib infers from the suffix); uses the Agg
    canvas directly, so no pyplot state and no display are involved.

    >>> import tempfile, pathlib
    >>> a = np.random.default_rng(0).normal(size=(512, 3, 3)); a = a + a.transpose(0, 2, 1)
    >>> png = plot_spectrum(raman_spectrum(a, 10.0), pathlib.Path(tempfile.mkdtemp()) / "s.png")
    >>> png.read_bytes()[1:4]
    b'PNG'
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    nu = spectrum.freq_cm1
    step = max(1, len(nu) // 20000) if spectrum.grid_step_cm1 * len(nu) / 20000 < spectrum.sigma_cm1 / 4 else 1
    sl = slice(None, None, step)
    fig = Figure(figsize=(7.5, 4.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if band is not None:
        ax.fill_between(nu[sl], band[0][sl], band[1][sl], color="C0", alpha=0.25, lw=0, label="committee band")
    ax.plot(nu[sl], spectrum.intensity[sl], color="C0", lw=1.2, label="total (45a²+7γ²)")
    ax.plot(nu[sl], spectrum.intensity_parallel[sl], color="C1", lw=0.8, ls="--", label="parallel (45a²+4γ²)")
    ax.plot(nu[sl], spectrum.intensity_perpendicular[sl], color="C2", lw=0.8, ls=":", label="perpendicular (3γ²)")
    ax.set_xlim(0, nu[-1])
    ax.set_ylim(bottom=0)
    ax.set_xlabel("Raman shift (cm$^{-1}$)")
    ax.set_ylabel("intensity (arb. units)")
    temp = "" if spectrum.temperature_k is None else f", Bose T = {spectrum.temperature_k:g} K"
    ax.set_title(title or f"Raman spectrum (σ = {spectrum.sigma_cm1:g} cm$^{{-1}}$, {spectrum.laser_nm:g} nm{temp})", fontsize=10)
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    x_max = min(inset_max_cm1, float(nu[-1]))
    low = nu <= x_max
    if low.sum() >= 3:
        ins = ax.inset_axes((0.58, 0.45, 0.4, 0.5))
        if band is not None:
            ins.fill_between(nu[low], band[0][low], band[1][low], color="C0", alpha=0.25, lw=0)
        ins.plot(nu[low], spectrum.intensity[low], color="C0", lw=1.0)
        ins.plot(nu[low], spectrum.intensity_perpendicular[low], color="C2", lw=0.7, ls=":")
        ins.set_xlim(0, x_max)
        y_top = float(np.nanmax(spectrum.intensity[low])) if band is None else float(np.nanmax(band[1][low]))
        ins.set_ylim(0, y_top * 1.05 if y_top > 0 else 1.0)
        ins.text(0.97, 0.93, f"0–{x_max:g} cm$^{{-1}}$", transform=ins.transAxes, ha="right", va="top", fontsize=8)
        ins.tick_params(labelsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


__all__ = [
    "ALPHA_COLUMNS",
    "MIN_FRAMES",
    "SPECTRUM_COLUMNS",
    "AlphaSeries",
    "BlockUncertainty",
    "RamanSpectrum",
    "SpectrumSettings",
    "alpha_sidecar",
    "block_uncertainty",
    "frequency_grid",
    "central_peak_descriptors",
    "gaussian_smooth",
    "on_grid",
    "plot_spectrum",
    "raman_spectrum",
    "read_alpha",
    "read_alpha_series",
    "spectrum_band",
    "spectrum_table",
    "validate_alpha",
    "write_alpha",
    "write_alpha_txt",
    "window_fraction",
    "write_spectrum",
]
