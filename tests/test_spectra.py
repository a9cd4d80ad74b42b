"""Raman spectra (tasks/spectra.py, ``ramanscreen spectrum``) against analytic answers.

Conventions used in the derivations below (see docs/spectra.md): for N samples dt apart, the
two-sided spectral density of a series x is S_k = dt/N |X_k|² (X = DFT of x − mean);
a² = ω² S_{tr α}/9, γ² = ω² [3 Σ_off S_ij + ½ Σ_pairs S_{ii−jj}], ω = 2πν̃/CM1_PER_INV_FS in rad/fs;
I = p(ν̃)(45a²+7γ²)/45 with p(ν̃) = (1 − ν̃/ν̃_in)⁴/ν̃.
A cosine A cos(ω₀t) exactly on bin k₀ has |X_k0| = AN/2, so S_k0 = dt N A²/4.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from scipy.signal import lfilter
from scipy.spatial.transform import Rotation

from ramanscreen.tasks.common import CM1_PER_INV_FS, InputError
from ramanscreen.tasks.spectra import (
    MIN_FRAMES,
    RamanSpectrum,
    central_peak_descriptors,
    gaussian_smooth,
    plot_spectrum,
    raman_spectrum,
    read_alpha,
    spectrum_band,
    spectrum_table,
    write_alpha_txt,
    write_spectrum,
)

IJ = ((0, 0), (1, 1), (2, 2), (0, 1), (1, 2), (2, 0))
NU_IN_532 = 1e7 / 532.0


def omega_rad_fs(nu_cm1):
    return 2.0 * np.pi * np.asarray(nu_cm1) / CM1_PER_INV_FS


def on_bin(nu_cm1: float, n: int, dt_fs: float) -> float:
    df = CM1_PER_INV_FS / (n * dt_fs)
    return round(nu_cm1 / df) * df


def alpha_from_components(comps: np.ndarray, base: np.ndarray | None = None) -> np.ndarray:
    """(…, 6, n) components xx yy zz xy yz zx → (…, n, 3, 3) symmetric α (plus a constant ``base``)."""
    shape = comps.shape[:-2] + (comps.shape[-1], 3, 3)
    a = np.zeros(shape) if base is None else np.broadcast_to(base, shape).copy()
    for c, (i, j) in enumerate(IJ):
        a[..., i, j] += comps[..., c, :]
        if i != j:
            a[..., j, i] += comps[..., c, :]
    return a


def ou(rng: np.random.Generator, shape: tuple[int, ...], n: int, dt_fs: float, tau_fs: float) -> np.ndarray:
    """Ornstein–Uhlenbeck samples (unit variance, relaxation time tau), exact AR(1) update."""
    phi = np.exp(-dt_fs / tau_fs)
    burn = int(10 * tau_fs / dt_fs)
    noise = rng.standard_normal(shape + (n + burn,)) * np.sqrt(1.0 - phi**2)
    return lfilter([1.0], [1.0, -phi], noise, axis=-1)[..., burn:]


def one_sided_weights(n: int, m: int) -> np.ndarray:
    """Weights turning a one-sided sum over rfft bins 0..m-1 into the two-sided sum."""
    w = np.full(m, 2.0)
    w[0] = 1.0
    if n % 2 == 0 and m == n // 2 + 1:
        w[-1] = 1.0
    return w


# ----------------------------------------------------------------------------------- peaks


@pytest.mark.parametrize("sigma_cm1", [0.0, 4.0])
def test_cosine_gives_peak_at_its_frequency_within_one_bin(sigma_cm1: float) -> None:
    n, dt = 8192, 4.0
    nu0 = 123.4  # deliberately between bins
    t = np.arange(n) * dt
    a = np.tile(np.diag([20.0, 21.0, 22.0]), (n, 1, 1))
    a[:, 0, 0] += 0.3 * np.cos(omega_rad_fs(nu0) * t)
    sp = raman_spectrum(a, dt, sigma_cm1=sigma_cm1)
    assert abs(sp.freq_cm1[np.argmax(sp.intensity)] - nu0) <= sp.df_cm1
    assert abs(sp.freq_cm1[np.argmax(sp.a2)] - nu0) <= sp.df_cm1


@pytest.mark.parametrize("bin_offset", [0.0, 0.3])
def test_exact_derivative_same_alpha_power_at_100_cm1_and_80pct_nyquist(bin_offset: float) -> None:
    """The quantity compared: a²(ν̃)/ω² at the peak of the smoothed spectrum, i.e. the smoothed
    isotropic α power (a central difference would keep only sinc²(ωdt) = 5.5% of it at 80% of
    Nyquist). For A cos on xx, ∫_{-∞}^{∞} S_{trα} df = A²/2, so a²/ω² carries A²/36 on the
    positive side; a Gaussian of σ_f = σ/CM1 spreads it to a peak A²/(36 σ_f √(2π)).
    Both lines sit at the same offset from a bin; an off-bin line leaks ≈ 2/(π² σ_bins) of its
    power beyond the Gaussian (≈ 2% here), the same at both frequencies."""
    n, dt, amp, sigma = 16384, 5.0, 0.2, 4.0
    nyquist = CM1_PER_INV_FS / (2 * dt)
    df = CM1_PER_INV_FS / (n * dt)
    t = np.arange(n) * dt
    expected = amp**2 / (36.0 * (sigma / CM1_PER_INV_FS) * np.sqrt(2 * np.pi))
    heights = []
    for nu0 in (on_bin(100.0, n, dt) + bin_offset * df, on_bin(0.8 * nyquist, n, dt) + bin_offset * df):
        a = np.tile(np.eye(3) * 30.0, (n, 1, 1))
        a[:, 0, 0] += amp * np.cos(omega_rad_fs(nu0) * t + 0.3)
        sp = raman_spectrum(a, dt, sigma_cm1=sigma)
        sel = sp.freq_cm1 > 10.0
        heights.append(np.max(sp.a2[sel] / omega_rad_fs(sp.freq_cm1[sel]) ** 2))
    assert heights[1] == pytest.approx(heights[0], rel=0.01)
    tol = 0.005 if bin_offset == 0 else 0.025
    assert heights[0] == pytest.approx(expected, rel=tol)
    assert heights[1] == pytest.approx(expected, rel=tol)


def test_two_lines_have_the_derived_intensity_ratio() -> None:
    """Isotropic line A cos(ω₁t)·1 and off-diagonal line B cos(ω₂t) on xy, both on bins.

    a²(ω₁) = ω₁² dt N A²/4 (Y0 = tr α/3 = A cos), γ²(ω₂) = 3 ω₂² dt N B²/4, so
    I₁/I₂ = p₁ a² / (p₂ · 7γ²/45) = (A/B)² · (45/21) · (ν̃₁/ν̃₂) · ((ν̃_in−ν̃₁)/(ν̃_in−ν̃₂))⁴.
    Smoothing multiplies both isolated lines by the same kernel centre weight."""
    n, dt, amp_a, amp_b = 16384, 4.0, 0.4, 0.3
    nu1, nu2 = on_bin(210.0, n, dt), on_bin(520.0, n, dt)
    t = np.arange(n) * dt
    a = np.tile(np.eye(3) * 15.0, (n, 1, 1))
    a += (amp_a * np.cos(omega_rad_fs(nu1) * t))[:, None, None] * np.eye(3)
    a[:, 0, 1] += amp_b * np.cos(omega_rad_fs(nu2) * t)
    a[:, 1, 0] = a[:, 0, 1]
    ratio = (amp_a / amp_b) ** 2 * (45.0 / 21.0) * (nu1 / nu2) * ((NU_IN_532 - nu1) / (NU_IN_532 - nu2)) ** 4

    raw = raman_spectrum(a, dt, sigma_cm1=0.0)
    k1, k2 = np.argmin(abs(raw.freq_cm1 - nu1)), np.argmin(abs(raw.freq_cm1 - nu2))
    p1 = (1 - nu1 / NU_IN_532) ** 4 / nu1
    assert raw.a2[k1] == pytest.approx(omega_rad_fs(nu1) ** 2 * dt * n * amp_a**2 / 4, rel=1e-9)
    assert raw.gamma2[k2] == pytest.approx(3 * omega_rad_fs(nu2) ** 2 * dt * n * amp_b**2 / 4, rel=1e-9)
    assert raw.intensity[k1] == pytest.approx(p1 * raw.a2[k1], rel=1e-9)
    assert raw.intensity[k1] / raw.intensity[k2] == pytest.approx(ratio, rel=1e-9)

    smooth = raman_spectrum(a, dt)  # σ = 4 cm⁻¹
    assert smooth.intensity[k1] / smooth.intensity[k2] == pytest.approx(ratio, rel=1e-6)
    # the isotropic line is fully polarised, the traceless one has ρ = 3/4
    assert smooth.depolarization_ratio[k1] == pytest.approx(0.0, abs=1e-9)
    assert smooth.depolarization_ratio[k2] == pytest.approx(0.75, rel=1e-9)


# ------------------------------------------------------------------------------ invariants


def test_isotropic_alpha_has_zero_perpendicular_spectrum(rng: np.random.Generator) -> None:
    n, dt = 4096, 10.0
    x = ou(rng, (), n, dt, 200.0)
    a = (40.0 + x)[:, None, None] * np.eye(3)
    sp = raman_spectrum(a, dt)
    assert sp.intensity.max() > 0
    assert np.abs(sp.gamma2).max() <= 1e-12 * sp.a2.max()
    assert np.abs(sp.intensity_perpendicular).max() <= 1e-12 * sp.intensity.max()
    assert np.nanmax(sp.depolarization_ratio) <= 1e-12


def test_fixed_rotation_leaves_spectra_unchanged(rng: np.random.Generator) -> None:
    n, dt = 4096, 10.0
    comps = ou(rng, (6,), n, dt, 150.0) * np.array([1.0, 0.7, 0.5, 0.3, 0.2, 0.4])[:, None]
    a = alpha_from_components(comps, base=np.diag([30.0, 33.0, 36.0]))
    rot = Rotation.random(random_state=7).as_matrix()
    b = np.einsum("ij,njk,lk->nil", rot, a, rot)
    sa, sb = raman_spectrum(a, dt), raman_spectrum(b, dt)
    for name in ("intensity", "intensity_parallel", "intensity_perpendicular", "a2", "gamma2"):
        x, y = getattr(sa, name), getattr(sb, name)
        np.testing.assert_allclose(y, x, rtol=1e-8, atol=1e-12 * x.max())


def test_ornstein_uhlenbeck_relaxational_band_peaks_at_1_over_tau() -> None:
    """OU α(t) with relaxation time τ: S_α(ω) = 2σ²τ/(1+ω²τ²), so
    I(ν̃) ∝ p(ν̃) ω² S_α ∝ (1−ν̃/ν̃_in)⁴ · ν̃/(1+(ν̃/ν̃_c)²) with ν̃_c = CM1/(2πτ).
    ν̃/(1+(ν̃/ν̃_c)²) is symmetric in ln ν̃ about ln ν̃_c, where it is maximal; the laser factor
    shifts the maximum by −4ν̃_c²/ν̃_in (< 0.1 cm⁻¹ here). A quadratic fit of ln I in ln ν̃ over
    the symmetric window [ν̃_c/3, 3ν̃_c] (weights uniform in ln ν̃) locates the maximum."""
    rng = np.random.default_rng(2024)
    dt, tau, n, members = 2.0, 250.0, 2**16, 16
    alpha = alpha_from_components(ou(rng, (members, 6), n, dt, tau), base=10.0 * np.eye(3))
    mean, lo, hi = spectrum_band(alpha, dt, sigma_cm1=0.0)
    nu_c = CM1_PER_INV_FS / (2 * np.pi * tau)
    theory_max = nu_c * (1 - 4 * nu_c / NU_IN_532)
    sel = (mean.freq_cm1 > nu_c / 3) & (mean.freq_cm1 < 3 * nu_c)
    c2, c1, _ = np.polyfit(np.log(mean.freq_cm1[sel]), np.log(mean.intensity[sel]), 2, w=mean.freq_cm1[sel] ** -0.5)
    assert c2 < 0  # a maximum, not a minimum
    # statistical scatter of this estimator over seeds: ≈ 2% (one standard deviation)
    assert np.exp(-c1 / (2 * c2)) == pytest.approx(theory_max, rel=0.08)
    # and the smoothed spectrum rises from 0 into that band: below ν̃_c/4 it is still increasing
    smooth = raman_spectrum(alpha[0], dt)
    assert smooth.intensity[0] == 0.0
    low = smooth.freq_cm1 < nu_c / 4
    assert np.all(np.diff(smooth.intensity[low]) > 0)
    assert np.all(lo <= hi)


# ------------------------------------------------------------------------- normalisation


@pytest.mark.parametrize("n", [1000, 1001])
def test_parseval_alpha_power_sums_to_variances(rng: np.random.Generator, n: int) -> None:
    """Σ_k (two-sided) a²/ω² Δf = var(tr α)/9 and
    Σ_k γ²/ω² Δf = 3 Σ_off var α_ij + ½ Σ_pairs var(α_ii − α_jj), exactly (Δf = 1/(N dt))."""
    dt = 7.0
    comps = rng.standard_normal((6, n)) + 5.0
    a = alpha_from_components(comps)
    sp = raman_spectrum(a, dt, sigma_cm1=0.0)
    k = np.arange(1, len(sp.freq_cm1))
    w = one_sided_weights(n, len(sp.freq_cm1))[1:]
    df = 1.0 / (n * dt)
    w2 = omega_rad_fs(sp.freq_cm1[1:]) ** 2
    xx, yy, zz, xy, yz, zx = comps
    assert np.sum(w * sp.a2[k] / w2) * df == pytest.approx(np.var(xx + yy + zz) / 9, rel=1e-10)
    aniso = 3 * (np.var(xy) + np.var(yz) + np.var(zx)) + 0.5 * (np.var(xx - yy) + np.var(yy - zz) + np.var(zz - xx))
    assert np.sum(w * sp.gamma2[k] / w2) * df == pytest.approx(aniso, rel=1e-10)


def test_parseval_derivative_power_and_smoothing_preserve_the_integral() -> None:
    """For band-limited α (cosines on bins) ∫ a² df = ⟨(tr α̇)²⟩/9 with α̇ analytic, before and
    after smoothing (the Gaussian has unit area)."""
    n, dt = 8192, 5.0
    t = np.arange(n) * dt
    lines = [(on_bin(150.0, n, dt), 0.3), (on_bin(700.0, n, dt), 0.1), (on_bin(1500.0, n, dt), 0.05)]
    tr = sum(amp * np.cos(omega_rad_fs(nu) * t) for nu, amp in lines)
    tr_dot = sum(-amp * omega_rad_fs(nu) * np.sin(omega_rad_fs(nu) * t) for nu, amp in lines)
    a = (20.0 + tr / 3.0)[:, None, None] * np.eye(3)
    df = 1.0 / (n * dt)
    for sigma in (0.0, 4.0):
        sp = raman_spectrum(a, dt, sigma_cm1=sigma)
        w = one_sided_weights(n, len(sp.freq_cm1))
        assert np.sum(w * sp.a2) * df == pytest.approx(np.mean(tr_dot**2) / 9, rel=1e-8)


def test_gaussian_smoothing_is_a_unit_area_gaussian_with_sigma_as_standard_deviation() -> None:
    y = np.zeros(4001)
    y[2000] = 1.0
    for sigma_bins in (2.5, 40.0):  # direct and FFT paths
        s = gaussian_smooth(y, sigma_bins)
        x = np.arange(4001) - 2000
        assert s.sum() == pytest.approx(1.0, rel=1e-9)
        assert np.sqrt(np.sum(s * x**2)) == pytest.approx(sigma_bins, rel=1e-3)
        np.testing.assert_allclose(s[1990:2011], np.exp(-0.5 * (x[1990:2011] / sigma_bins) ** 2) / (sigma_bins * np.sqrt(2 * np.pi)), rtol=2e-3)
    # odd continuation at ω = 0: a linear ramp stays linear and 0 at bin 0
    ramp = np.arange(400.0)
    s = gaussian_smooth(ramp, 20.0, odd_at_zero=True)
    np.testing.assert_allclose(s[:300], ramp[:300], atol=1e-9)


def test_bose_factor_is_n_plus_one() -> None:
    n, dt, temp = 4096, 10.0, 300.0
    rng = np.random.default_rng(5)
    a = alpha_from_components(ou(rng, (6,), n, dt, 100.0), base=np.eye(3))
    plain, bose = raman_spectrum(a, dt), raman_spectrum(a, dt, temperature_k=temp)
    c2 = 1.438776877  # second radiation constant hc/k_B in cm K (CODATA)
    nu = plain.freq_cm1[1:]
    np.testing.assert_allclose(bose.intensity[1:], plain.intensity[1:] / (1 - np.exp(-c2 * nu / temp)), rtol=1e-6)
    np.testing.assert_allclose(bose.a2, plain.a2)
    assert bose.intensity[0] == 0.0


def test_max_freq_cut_matches_the_full_spectrum(rng: np.random.Generator) -> None:
    n, dt = 8192, 5.0
    a = alpha_from_components(ou(rng, (6,), n, dt, 80.0), base=np.eye(3))
    full, cut = raman_spectrum(a, dt), raman_spectrum(a, dt, max_freq_cm1=600.0)
    assert cut.freq_cm1[-1] <= 600.0 < cut.freq_cm1[-1] + cut.df_cm1
    m = len(cut.freq_cm1)
    np.testing.assert_allclose(cut.intensity, full.intensity[:m], rtol=1e-7, atol=1e-9 * full.intensity.max())


@pytest.mark.parametrize("max_freq_cm1", [None, 500.0])
def test_decimated_output_samples_the_full_grid_spectrum_exactly(rng: np.random.Generator, max_freq_cm1) -> None:
    """A long smoothed series is returned on every step-th Fourier bin (≥ 8 points per σ); those
    are the same numbers as on the full grid (the smoothed spectrum is band-limited)."""
    n, dt = 2**17, 20.0
    a = alpha_from_components(ou(rng, (6,), n, dt, 300.0), base=np.eye(3))
    a[:, 0, 0] += 0.05 * np.cos(omega_rad_fs(on_bin(350.0, n, dt) + 0.004) * np.arange(n) * dt)
    full = raman_spectrum(a, dt, max_freq_cm1=max_freq_cm1, decimate=False)
    dec = raman_spectrum(a, dt, max_freq_cm1=max_freq_cm1)
    step = int(round(dec.grid_step_cm1 / full.df_cm1))
    assert step > 1 and dec.grid_step_cm1 <= dec.sigma_cm1 / 8
    np.testing.assert_allclose(dec.freq_cm1, full.freq_cm1[::step], rtol=1e-12)
    for name in ("intensity", "intensity_parallel", "intensity_perpendicular", "a2", "gamma2"):
        x = getattr(full, name)[::step]
        np.testing.assert_allclose(getattr(dec, name), x, rtol=1e-9, atol=1e-12 * x.max(), err_msg=name)


def test_committee_band_is_vectorised_and_has_the_percentiles(rng: np.random.Generator) -> None:
    """Members s_m·α have intensities s_m²·I, so the band is I times the percentiles of s_m²."""
    n, dt = 2048, 10.0
    a = alpha_from_components(ou(rng, (6,), n, dt, 100.0))
    scales = np.array([0.8, 0.9, 1.0, 1.1, 1.3])
    committee = scales[:, None, None, None] * a
    mean, lo, hi = spectrum_band(committee, dt)
    single = raman_spectrum(a, dt)
    s2 = scales**2
    np.testing.assert_allclose(mean.intensity, s2.mean() * single.intensity, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(lo, np.percentile(s2, 16) * single.intensity, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(hi, np.percentile(s2, 84) * single.intensity, rtol=1e-9, atol=1e-14)
    each = [raman_spectrum(c, dt).gamma2 for c in committee]
    np.testing.assert_allclose(mean.gamma2, np.mean(each, axis=0), rtol=1e-9, atol=1e-14)


# ----------------------------------------------------------------------------- descriptors


def _synthetic(nu: np.ndarray, inten: np.ndarray) -> RamanSpectrum:
    z = np.zeros_like(nu)
    return RamanSpectrum(nu, inten, inten, z, z, z, z, dt_fs=1.0, n_frames=2 * (len(nu) - 1), laser_nm=532.0, sigma_cm1=0.0)


def test_central_peak_descriptors_on_analytic_spectra() -> None:
    nu = np.arange(0.0, 1200.0, 0.25)
    flat = central_peak_descriptors(_synthetic(nu, np.ones_like(nu)))
    assert flat["fraction_below_omega_c"] == pytest.approx((50 - 5) / (1000 - 5), rel=1e-12)
    assert flat["low_freq_loglog_slope"] == pytest.approx(0.0, abs=1e-9)
    power_law = np.zeros_like(nu)
    power_law[1:] = nu[1:] ** -0.7
    power = central_peak_descriptors(_synthetic(nu, power_law), omega_min_cm1=8.0)
    assert power["low_freq_loglog_slope"] == pytest.approx(-0.7, rel=1e-9)
    host = 2.0 + 50.0 * np.exp(-0.5 * ((nu - 350.0) / 3.0) ** 2)
    d = central_peak_descriptors(_synthetic(nu, host))
    assert d["host_peak_cm1"] == 350.0
    assert d["low_to_host_ratio"] == pytest.approx(2.0 / 52.0, rel=1e-9)
    with pytest.raises(InputError, match="omega_min_cm1"):
        central_peak_descriptors(_synthetic(nu, host), omega_min_cm1=0.4)  # inside the first two bins
    with pytest.raises(InputError, match="host_window_cm1"):
        central_peak_descriptors(_synthetic(nu, host), host_window_cm1=(40.0, 500.0))  # overlaps [5, 50]


# ---------------------------------------------------------------------------------- formats


def test_alpha_formats_round_trip(tmp_path: Path, rng: np.random.Generator) -> None:
    import ase
    import ase.io

    a = alpha_from_components(rng.standard_normal((6, 20)), base=10 * np.eye(3))
    write_alpha_txt(tmp_path / "a.txt", a)
    text = (tmp_path / "a.txt").read_text()
    (tmp_path / "b.dat").write_text("# a comment line\n" + text.replace("\n", "  # trailing\n", 3))
    np.save(tmp_path / "a.npy", a)
    frames = []
    for k in range(len(a)):
        atoms = ase.Atoms("H", positions=[[0, 0, 0]], cell=[5, 5, 5], pbc=True)
        atoms.info["polarizability"] = a[k].ravel()
        frames.append(atoms)
    ase.io.write(tmp_path / "a.xyz", frames, format="extxyz")
    for name in ("a.txt", "b.dat", "a.npy", "a.xyz"):
        np.testing.assert_allclose(read_alpha(tmp_path / name), a, rtol=1e-11, err_msg=name)


def test_table_and_plot_outputs(tmp_path: Path, rng: np.random.Generator) -> None:
    import pyarrow.parquet as pq

    a = alpha_from_components(ou(rng, (6,), 2048, 10.0, 100.0), base=np.eye(3))
    sp = raman_spectrum(a, 10.0, temperature_k=500.0)
    csv, parquet = write_spectrum(sp, tmp_path / "run", extra_metadata={"central_peak": {"x": 1.0}})
    table = pq.read_table(parquet)
    cols = ["freq_cm1", "intensity", "intensity_parallel", "intensity_perpendicular", "a2", "gamma2"]
    assert table.column_names[:6] == cols
    meta = {k.decode(): v.decode() for k, v in table.schema.metadata.items()}
    assert meta["sigma_cm1"] == "4.0" and meta["temperature_k"] == "500.0" and meta["laser_nm"] == "532.0"
    np.testing.assert_allclose(table.column("intensity").to_numpy(), sp.intensity)
    assert csv.read_text().splitlines()[0].startswith('"freq_cm1","intensity"')
    assert set(spectrum_table(sp)) >= set(cols)
    png = plot_spectrum(sp, tmp_path / "run.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -------------------------------------------------------------------------------- bad input


def test_api_rejects_bad_input() -> None:
    good = np.tile(np.eye(3), (MIN_FRAMES, 1, 1))
    with pytest.raises(InputError, match="at least 16"):
        raman_spectrum(good[:15], 1.0)
    bad = good.copy()
    bad[7, 2, 2] = np.inf
    with pytest.raises(InputError, match="frame 7"):
        raman_spectrum(bad, 1.0)
    committee = np.stack([good] * 3)
    committee[2, 5, 0, 1] = np.nan
    with pytest.raises(InputError, match="frame 5 of member 2"):
        spectrum_band(committee, 1.0)
    with pytest.raises(InputError, match="dt_fs"):
        raman_spectrum(good, 0.0)
    with pytest.raises(InputError, match="shape"):
        raman_spectrum(np.zeros((20, 6)), 1.0)
    asym = good + np.random.default_rng(0).normal(0, 0.1, good.shape)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sym = raman_spectrum(asym, 1.0)
    assert any("not symmetric" in str(w.message) for w in caught)
    np.testing.assert_allclose(sym.intensity, raman_spectrum(0.5 * (asym + asym.transpose(0, 2, 1)), 1.0).intensity)


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ramanscreen.flows", "spectrum", *args], capture_output=True, text=True, timeout=120, cwd=cwd
    )


def _good_rows(n: int) -> list[str]:
    return [f"{10 + 0.1 * np.sin(k)} 11 12 {0.01 * k % 0.3} 0 0" for k in range(n)]


@pytest.mark.parametrize(
    ("case", "content", "args", "needle"),
    [
        ("columns", "\n".join(_good_rows(10) + ["1 2 3 4 5"] + _good_rows(10)), ["--dt-fs", "2"], "line 11"),
        ("nan", "# header\n" + "\n".join(_good_rows(5) + ["10 11 nan 0 0 0"] + _good_rows(20)), ["--dt-fs", "2"], "line 7"),
        ("inf", "\n".join(_good_rows(5) + ["10 11 12 inf 0 0"] + _good_rows(20)), ["--dt-fs", "2"], "frame 5"),
        ("short", "\n".join(_good_rows(15)), ["--dt-fs", "2"], "at least 16"),
        ("no-dt", "\n".join(_good_rows(40)), [], "--dt-fs: the file does not state the time between its α samples"),
        ("contradicting dt", "# dt_fs = 20.0\n" + "\n".join(_good_rows(40)), ["--dt-fs", "2"],
         "--dt-fs: 2 fs contradicts the file, which states 20 fs"),
        ("bad percentile window", "\n".join(_good_rows(40)), ["--dt-fs", "2", "--omega-c-cm1", "3"], "--omega-c-cm1"),
    ],
)
def test_cli_bad_input_is_one_line_and_writes_nothing(tmp_path: Path, case: str, content: str, args: list[str], needle: str) -> None:
    src = tmp_path / f"{case.replace(' ', '-')}.txt"
    src.write_text(content + "\n")
    out = tmp_path / "out" / "s.parquet"
    res = run_cli(str(src), *args, "--out", str(out), "--plot", cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), res.stderr
    assert needle in lines[0], lines[0]
    assert "Traceback" not in res.stderr
    assert not out.parent.exists() or not any(out.parent.iterdir())


def test_cli_nonsymmetric_warns_then_succeeds(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    a = alpha_from_components(ou(rng, (6,), 4096, 20.0, 300.0), base=10 * np.eye(3))
    a[:, 0, 1] += 0.05  # α_xy ≠ α_yx
    np.save(tmp_path / "asym.npy", a)
    res = run_cli("asym.npy", "--dt-fs", "20", "--out", "res/asym.parquet", "--plot", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    warn = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(warn) == 1 and warn[0].startswith("warning:") and "not symmetric" in warn[0]
    assert sorted(p.name for p in (tmp_path / "res").iterdir()) == ["asym.parquet", "asym.png"]
    assert "fraction of I in" in res.stdout
    assert pq.read_schema(tmp_path / "res" / "asym.parquet").metadata[b"dt_fs"] == b"20.0"


def test_alpha_files_carry_their_spacing_and_stride_means_every_nth_sample(tmp_path: Path) -> None:
    """A file that states its dt needs no --dt-fs; --stride k uses every k-th sample (dt × k), for
    every format that carries the spacing."""
    from ramanscreen.tasks.spectra import read_alpha_series, write_alpha

    rng = np.random.default_rng(4)
    a = alpha_from_components(ou(rng, (6,), 1024, 20.0, 300.0), base=10 * np.eye(3))
    for name in ("a.txt", "a.npy", "a.npz"):
        write_alpha(tmp_path / name, a, dt_fs=5.0)
        series = read_alpha_series(tmp_path / name)
        assert series.dt_fs == 5.0 and series.alpha_A3.shape == (1024, 3, 3), name
        assert series.spacing_fs(stride=2) == 10.0
    assert (tmp_path / "a.json").is_file()  # the .npy's sidecar
    res = run_cli("a.npz", "--stride", "2", "--out", "s.csv", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    direct = raman_spectrum(a[::2], 10.0)
    import csv

    rows = list(csv.DictReader((tmp_path / "s.csv").open()))
    np.testing.assert_allclose([float(r["freq_cm1"]) for r in rows], direct.freq_cm1)
    np.testing.assert_allclose([float(r["intensity"]) for r in rows], direct.intensity, rtol=1e-10)
    assert "× 10 fs" in res.stdout
