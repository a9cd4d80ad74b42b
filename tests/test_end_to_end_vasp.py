"""End to end on real-format VASP data: import-vasp → alpha fit → alpha predict → spectrum.

The data are written in VASP's own layouts (tests/vasp_formats.py): an XDATCAR of a short
AgI "MD" (two vibrational patterns at 50 and 150 cm⁻¹ plus thermal-like noise, 10 fs
apart) and, for 30 randomly chosen frames, LEPSILON OUTCARs holding those positions and the
ε∞ of the embedded dipole model (some gzipped). Everything after writing runs through the
CLI, as a user would. The check: the spectrum from the ML-predicted α matches the spectrum
of the exact (model) α on every frame.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk, sort
from vasp_formats import write_outcar, write_xdatcar

from ramanscreen.tasks.reference import DipoleModel, epsilon_from_alpha, read_alpha_dataset, select_snapshots
from ramanscreen.tasks.spectra import write_alpha_txt

C_CM_PER_FS = 2.99792458e-5
DT_FS = 10.0
N_FRAMES = 200
MODES_CM1 = (50.0, 150.0)


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([sys.executable, "-m", "ramanscreen.flows", *map(str, args)], capture_output=True, text=True,
                         timeout=300, cwd=cwd)
    assert out.returncode == 0, f"ramanscreen {' '.join(map(str, args))}\n{out.stdout}\n{out.stderr}"
    return out


def synthetic_md():
    base = sort(bulk("AgI", "zincblende", a=6.50, cubic=True).repeat((2, 2, 1)))
    n = len(base)
    rng = np.random.default_rng(7)
    patterns = []
    for _ in MODES_CM1:
        e = rng.normal(size=(n, 3))
        e -= e.mean(axis=0)
        patterns.append(e / np.linalg.norm(e))
    amplitudes, phases = (0.35, 0.25), (0.3, 1.1)
    frames = []
    for k in range(N_FRAMES):
        t = k * DT_FS
        a = base.copy()
        for amp, e, f, ph in zip(amplitudes, patterns, MODES_CM1, phases, strict=False):
            a.positions += amp * e * np.cos(2 * np.pi * f * C_CM_PER_FS * t + ph)
        a.positions += rng.normal(0.0, 0.01, (n, 3))
        frames.append(a)
    return frames


def read_spectrum(csv: Path) -> tuple[np.ndarray, np.ndarray]:
    import pyarrow.csv as pacsv

    table = pacsv.read_csv(csv)
    return np.asarray(table["freq_cm1"]), np.asarray(table["intensity"])


def test_vasp_files_through_fit_predict_spectrum(tmp_path: Path) -> None:
    frames = synthetic_md()
    write_xdatcar(tmp_path / "XDATCAR", frames, first_step=1, every=1)
    model = DipoleModel()
    alpha_true = np.array([model.compute(a).alpha_A3 for a in frames])

    chosen = select_snapshots(len(frames), 30, seed=0)
    for n, k in enumerate(chosen):
        eps = epsilon_from_alpha(alpha_true[k], frames[k].get_volume())
        name = "OUTCAR.gz" if n % 3 == 0 else "OUTCAR"
        write_outcar(tmp_path / "dfpt" / f"snap_{n:02d}" / name, frames[k], eps, gz=name.endswith(".gz"))

    # 1. import: every OUTCAR matched to its XDATCAR configuration by positions
    run_cli("import-vasp", "--md", "XDATCAR", "dfpt", "--out", "ref.extxyz", cwd=tmp_path)
    ds = read_alpha_dataset(tmp_path / "ref.extxyz")
    assert len(ds) == 30
    steps = ds.md_steps
    assert sorted(steps.tolist()) == sorted((chosen + 1).tolist())  # XDATCAR counts from 1
    assert np.allclose(ds.alpha_A3, alpha_true[steps - 1], atol=2e-3)  # ε printed with 6 decimals
    assert all("vasp-dfpt" in m for m in ds.methods)

    # 2. fit, 3. predict every frame of the XDATCAR, 4. spectra of predicted and exact α
    fit = run_cli("alpha", "fit", "ref.extxyz", "--n-train", "26", "--committee", "0", "--out", "model.mts",
                  cwd=tmp_path)
    assert "R²" in fit.stdout
    # an XDATCAR does not record its time step: give it once; the α file then states its spacing
    run_cli("alpha", "predict", "model.mts", "XDATCAR", "--dt-fs", DT_FS, "--out", "pred.txt", cwd=tmp_path)
    pred = np.loadtxt(tmp_path / "pred.txt")
    assert pred.shape == (N_FRAMES, 6)
    write_alpha_txt(tmp_path / "exact.txt", alpha_true, dt_fs=float(DT_FS))
    exact6 = np.loadtxt(tmp_path / "exact.txt")
    fluct = exact6 - exact6.mean(axis=0)
    resid = pred - exact6
    assert np.sqrt(np.mean(resid**2)) < 0.2 * np.sqrt(np.mean(fluct**2))  # the ML α follows the motion

    run_cli("spectrum", "pred.txt", "--out", "ml.csv", cwd=tmp_path)  # no --dt-fs: the files state it
    run_cli("spectrum", "exact.txt", "--out", "exact.csv", cwd=tmp_path)
    f_ml, i_ml = read_spectrum(tmp_path / "ml.csv")
    f_ex, i_ex = read_spectrum(tmp_path / "exact.csv")
    assert np.allclose(f_ml, f_ex)
    window = (f_ex > 20) & (f_ex < 400)
    peak = f_ex[window][np.argmax(i_ex[window])]
    assert f_ml[window][np.argmax(i_ml[window])] == pytest.approx(peak)
    assert min(abs(peak - m) for m in MODES_CM1) < 15.0  # the driven vibration, within resolution
    assert np.corrcoef(i_ml[window], i_ex[window])[0, 1] > 0.95
