"""Peak fitting on synthetic spectra with known peaks (every profile, a baseline, noise),
on a spectrum the project computes, the regression, and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow.csv as pacsv
import pytest

from ramanscreen.tasks import peaks as pk
from ramanscreen.tasks.common import CM1_PER_INV_FS, InputError


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "ramanscreen.flows", *args], capture_output=True, text=True)


@pytest.mark.parametrize("profile", pk.PROFILES)
def test_known_peaks_on_a_sloped_baseline_with_noise(profile):
    rng = np.random.default_rng(1)
    x = np.linspace(100, 1000, 1801)
    truth = [(400.0, 12.0, 50.0), (520.0, 20.0, 30.0), (640.0, 16.0, 80.0)]  # centre, FWHM, area
    y = 5.0 + 0.004 * x
    for c, w, a in truth:
        if profile == "gaussian":
            y = y + pk.gaussian(x, a, c, w / 2.3548200450309493)
        elif profile == "lorentzian":
            y = y + pk.lorentzian(x, a, c, w / 2)
        else:
            y = y + pk.voigt(x, a, c, w / 4.5, w / 4.5)
    y = y + rng.normal(0, 0.02, x.size)
    fit = pk.fit_peaks(x, y, pk.PeakSettings(profile=profile, baseline="poly", baseline_order=1, prominence=0.1))
    assert fit.fit_ok and fit.n_peaks == 3 and fit.r2 > 0.99
    t = fit.table
    for k, (c, w, a) in enumerate(truth):
        assert abs(t["position_cm1"][k] - c) < max(4 * t["position_err_cm1"][k], 0.05)
        assert t["fwhm_cm1"][k] == pytest.approx(w if profile != "voigt" else
                                                 0.5346 * 2 * w / 4.5 + np.sqrt(0.2166 * (2 * w / 4.5) ** 2 + (2.3548 * w / 4.5) ** 2),
                                                 rel=0.05)
        assert t["area"][k] == pytest.approx(a, rel=0.08)
        assert t["position_err_cm1"][k] > 0 and t["area_err"][k] > 0


def test_empty_and_bad_ranges():
    x = np.linspace(0, 100, 200)
    fit = pk.fit_peaks(x, np.zeros_like(x), pk.PeakSettings(baseline="none"))
    assert fit.n_peaks == 0
    with pytest.raises(InputError, match="points"):
        pk.fit_peaks(x, x, pk.PeakSettings(range_cm1=(500, 600)))
    with pytest.raises(InputError, match="profile"):
        pk.PeakSettings(profile="pearson7")


def test_peaks_of_a_computed_spectrum(tmp_path):
    """α oscillating at 400 and 640 cm⁻¹ → the project's Raman spectrum → peaks at 400 and 640."""
    from ramanscreen.tasks.spectra import raman_spectrum, write_spectrum

    dt_fs = 2.0
    t = np.arange(8192) * dt_fs
    rng = np.random.default_rng(0)
    a = np.zeros((t.size, 3, 3))
    for nu, amp in ((400.0, 1.0), (640.0, 0.6)):
        w = 2 * np.pi * nu / CM1_PER_INV_FS
        a[:, 0, 0] += amp * np.cos(w * t)
        a[:, 0, 1] += 0.5 * amp * np.cos(w * t + 0.3)
    a[:, 1, 0] = a[:, 0, 1]
    a += rng.normal(0, 1e-3, a.shape)
    a = 0.5 * (a + a.transpose(0, 2, 1))
    csv, parquet = write_spectrum(raman_spectrum(a, dt_fs, sigma_cm1=4.0), tmp_path / "run")
    out = tmp_path / "peaks.csv"
    r = _cli("peaks", str(parquet), "--out", str(out), "--profile", "gaussian", "--baseline", "none",
             "--range-cm1", "100", "1000", "--plot", str(tmp_path / "fit.png"))
    assert r.returncode == 0, r.stderr
    tab = pacsv.read_csv(out).to_pydict()
    pos = sorted(tab["position_cm1"])
    assert len(pos) == 2 and pos[0] == pytest.approx(400, abs=1.0) and pos[1] == pytest.approx(640, abs=1.0)
    # σ = 4 cm⁻¹ smoothing of a line: FWHM ≈ 2.3548 · 4 cm⁻¹
    assert np.median(tab["fwhm_cm1"]) == pytest.approx(2.3548 * 4.0, rel=0.15)
    assert (tmp_path / "fit.png").read_bytes()[1:4] == b"PNG"
    r = _cli("peaks", "fit", str(csv), "--out", str(tmp_path / "p2.csv"), "--column", "intensity_parallel",
             "--baseline", "none", "--range-cm1", "100", "1000")
    assert r.returncode == 0, r.stderr


def test_regression_recovers_coefficients_and_cv_r2(tmp_path):
    rng = np.random.default_rng(3)
    n = 16
    pos = rng.uniform(630, 660, n)
    fwhm = rng.uniform(10, 30, n)
    logs = -3.0 + 0.05 * (pos - 640) - 0.04 * (fwhm - 20) + rng.normal(0, 0.02, n)
    r = pk.linear_regression(np.column_stack([pos, fwhm]), logs, ["pos_640", "fwhm_640"])
    assert r.coefficients["pos_640"] == pytest.approx(0.05, abs=0.01)
    assert r.coefficients["fwhm_640"] == pytest.approx(-0.04, abs=0.01)
    assert r.r2 > 0.95 and 0.9 < r.cv_r2 <= r.r2 and r.cv_scheme == "leave-one-out"
    # pure noise: the cross-validated R² says so (≤ 0), whatever the in-sample R²
    rn = pk.linear_regression(rng.normal(size=(12, 3)), rng.normal(size=12), ["a", "b", "c"])
    assert rn.cv_r2 < 0.2
    with pytest.raises(InputError, match="features"):
        pk.linear_regression(rng.normal(size=(4, 3)), rng.normal(size=4), ["a", "b", "c"])
    table = tmp_path / "f.csv"
    lines = ["material,sigma_S_cm,pos_640,fwhm_640"] + [f"m{i},{10 ** logs[i]:.6e},{pos[i]},{fwhm[i]}" for i in range(n)]
    table.write_text("\n".join(lines) + "\n")
    res = _cli("peaks", "regress", str(table), "--target", "sigma_S_cm", "--out", str(tmp_path / "r.json"))
    assert res.returncode == 0, res.stderr
    summary = json.loads((tmp_path / "r.json").read_text())
    assert summary["transform"] == "log10" and summary["cv_r2"] > 0.9 and "cross-validated R²" in res.stdout


def test_features_from_a_manifest(tmp_path):
    x = np.linspace(100, 1000, 901)
    rows = ["spectrum,sigma_S_cm"]
    for i, c in enumerate((630.0, 640.0, 650.0, 660.0)):
        y = pk.gaussian(x, 40.0, c, 6.0) + pk.gaussian(x, 20.0, 400.0, 8.0)
        p = tmp_path / f"s{i}.csv"
        p.write_text("freq_cm1,intensity\n" + "\n".join(f"{a},{b}" for a, b in zip(x, y, strict=True)) + "\n")
        rows.append(f"{p.name},{10 ** (-4 + 0.05 * (c - 640)):.4e}")
    man = tmp_path / "manifest.csv"
    man.write_text("\n".join(rows) + "\n")
    r = _cli("peaks", "features", str(man), "--band", "640", "--band", "400", "--out", str(tmp_path / "feat.csv"),
             "--baseline", "none", "--profile", "gaussian")
    assert r.returncode == 0, r.stderr
    f = pacsv.read_csv(tmp_path / "feat.csv").to_pydict()
    np.testing.assert_allclose(f["pos_640"], [630, 640, 650, 660], atol=0.2)
    np.testing.assert_allclose(f["area_frac_640"], 40 / 60, rtol=0.02)


def test_regression_on_a_results_roots_computed_runs(tmp_path):
    """``peaks regress ROOT --computed`` takes every computed run of the screening view: its σ,
    its cp_fraction and the band features of its own computed spectrum, labelled as MD values."""
    from synthetic_results import SYNTHETIC, write_synthetic

    from ramanscreen.analytics.db import connect

    root = tmp_path / "results"
    for name in SYNTHETIC:
        write_synthetic(root, "rep", name)
    cols = pk.computed_features(root, [350.0], 30.0, pk.PeakSettings(baseline="none", profile="gaussian"))
    con = connect(root)
    try:
        want = dict(con.execute("SELECT material, cp_fraction FROM screening").fetchall())
    finally:
        con.close()
    assert sorted(cols["material"]) == sorted(SYNTHETIC)
    assert dict(zip(cols["material"], cols["cp_fraction"], strict=True)) == pytest.approx(want)
    pos = dict(zip(cols["material"], cols["pos_350"], strict=True))
    # the antimonides' synthetic SbS4 band at 350 cm⁻¹ is found; AgI and Na3PS4 have none near it
    assert pos["Na3SbS4"] == pytest.approx(350.0, abs=1.0) and pos["Na3SbS4-W"] == pytest.approx(350.0, abs=1.0)
    assert np.isnan(pos["AgI"])
    res = _cli("peaks", "regress", str(root), "--computed", "--band", "350", "--feature", "cp_fraction",
               "--out", str(tmp_path / "r.json"))
    assert res.returncode == 0, res.stderr
    assert "4 computed runs" in res.stdout and "not measurements" in res.stdout
    summary = json.loads((tmp_path / "r.json").read_text())
    assert summary["n"] == 4 and summary["features"] == ["cp_fraction"] and summary["coefficients"]["cp_fraction"] > 0
