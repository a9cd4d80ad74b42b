"""Transport analysis against analytic answers: random walks, harmonic oscillators, hops, drift."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import scipy.constants as const
from ase import Atoms
from ase.io import write

from ramanscreen.tasks.common import CM1_PER_INV_FS, InputError
from ramanscreen.tasks.trajectory import Trajectory
from ramanscreen.tasks.transport import (
    analyze_transport,
    displacement_moments,
    msd_fft,
    non_gaussian_alpha2,
    unwrap_positions,
)

L_A = 14.0          # cubic box edge, Å
DT_FS = 2.0
D_A2_FS = 1e-4      # walk diffusivity: 1e-4 Å²/fs = 1e-5 cm²/s
D_CM2_S = D_A2_FS * 0.1


def _walk(rng, n_frames: int, n_atoms: int, d_a2_fs: float = D_A2_FS) -> np.ndarray:
    steps = rng.normal(0.0, np.sqrt(2 * d_a2_fs * DT_FS), (n_frames, n_atoms, 3))
    steps[0] = 0.0
    return rng.uniform(0, L_A, (n_atoms, 3)) + np.cumsum(steps, axis=0)


def _system(rng, n_frames: int = 2000, n_mobile: int = 96, n_frame: int = 32, *, drift_A_fs: float = 0.0,
            wrap: bool = True) -> Trajectory:
    """Na random walkers in a box of S atoms vibrating (white noise) around fixed sites."""
    na = _walk(rng, n_frames, n_mobile)
    s = rng.uniform(0, L_A, (n_frame, 3)) + rng.normal(0, 0.05, (n_frames, n_frame, 3))
    pos = np.concatenate([na, s], axis=1)
    pos += drift_A_fs * DT_FS * np.arange(n_frames)[:, None, None] * np.array([1.0, 0.5, -0.3])
    if wrap:
        pos = pos % L_A
    symbols = ["Na"] * n_mobile + ["S"] * n_frame
    return Trajectory(
        symbols=symbols, numbers=np.array([11] * n_mobile + [16] * n_frame),
        masses_amu=np.array([22.99] * n_mobile + [32.06] * n_frame), positions_A=pos,
        cells_A=np.broadcast_to(np.eye(3) * L_A, (n_frames, 3, 3)).copy(), pbc=np.ones(3, bool),
        dt_fs=DT_FS, velocities_A_fs=None, time_fs=np.arange(n_frames) * DT_FS, source="synthetic",
    )


# ----------------------------------------------------------------------------- primitives
def test_msd_fft_equals_direct_average_over_origins(rng) -> None:
    pos = np.cumsum(rng.normal(size=(300, 5, 3)), axis=0) + 50.0
    direct = np.array([np.mean(np.sum((pos[m:] - pos[: len(pos) - m]) ** 2, axis=-1)) for m in range(300)])
    np.testing.assert_allclose(msd_fft(pos), direct, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(msd_fft(pos, atoms_per_block=2), direct, rtol=1e-9, atol=1e-9)
    m2, m4 = displacement_moments(pos, np.array([1, 7, 150]))
    np.testing.assert_allclose(m2, direct[[1, 7, 150]], rtol=1e-12)


def test_unwrap_triclinic_recovers_the_walk(rng) -> None:
    cell = np.array([[9.0, 0.0, 0.0], [3.0, 8.0, 0.0], [1.0, -2.0, 10.0]])
    true = _walk(rng, 500, 20, d_a2_fs=2e-3)
    frac = true @ np.linalg.inv(cell)
    wrapped = (frac % 1.0) @ cell
    np.testing.assert_allclose(unwrap_positions(wrapped, cell), true - (true[0] - wrapped[0]), atol=1e-9)


def test_wrapped_walk_gives_the_unwrapped_msd(rng) -> None:
    seed = int(rng.integers(1 << 30))
    wrapped = _system(np.random.default_rng(seed), 800, wrap=True)
    plain = _system(np.random.default_rng(seed), 800, wrap=False)
    assert np.ptp(plain.positions_A) > L_A  # the walk does leave the box
    a = analyze_transport(wrapped, species="Na", temperature_k=300, method="blocks")
    b = analyze_transport(plain, species="Na", temperature_k=300, method="blocks")
    np.testing.assert_allclose(a.msd_A2["Na"], b.msd_A2["Na"], rtol=1e-9)
    assert a.D_cm2_s["Na"] == pytest.approx(b.D_cm2_s["Na"], rel=1e-9)


def test_unwrap_npt_cell_keeps_displacements_local(rng) -> None:
    # a fixed atom in scaled coordinates of a breathing cell never crosses; its unwrapped
    # path must stay within the cell-size change, not jump by box lengths
    n = 400
    scale = 1.0 + 0.02 * np.sin(np.arange(n) / 20.0)
    cells = scale[:, None, None] * np.eye(3) * 10.0
    frac = np.array([0.999, 0.001, 0.5]) + 0.003 * rng.standard_normal((n, 1, 3))
    wrapped = np.einsum("fnj,fjk->fnk", frac % 1.0, cells)
    un = unwrap_positions(wrapped, cells)
    assert np.abs(un - un[0]).max() < 0.6


# ----------------------------------------------------------------------------- diffusivity
def test_random_walk_diffusivity_within_10_percent(rng) -> None:
    res = analyze_transport(_system(rng, 3000, n_mobile=128), species=["Na", "S"], framework_species=["S"],
                            temperature_k=500, method="blocks")
    D, err = res.D_cm2_s["Na"], res.D_err_cm2_s["Na"]
    assert abs(D - D_CM2_S) < 0.1 * D_CM2_S
    assert 0 < err < 0.1 * D_CM2_S and abs(D - D_CM2_S) < 4 * err
    assert res.msd_exponent["Na"] == pytest.approx(1.0, abs=0.05)
    assert abs(res.msd_exponent["S"]) < 0.05 and abs(res.D_cm2_s["S"]) < 1e-3 * D_CM2_S  # caged: plateau
    assert np.nanmedian(res.msd_slope["Na"]) == pytest.approx(1.0, abs=0.1)
    assert abs(res.alpha2_peak["Na"]) < 0.05  # Gaussian displacements
    # Nernst–Einstein with z = +1 and the box's number density
    n_cm3 = 128 / (L_A**3 * 1e-24)
    assert res.sigma_S_cm["Na"] == pytest.approx(n_cm3 * const.e**2 * D / (const.k * 500), rel=1e-12)


def test_kinisi_and_block_estimates_agree(rng) -> None:
    traj = _system(rng, 1500, n_mobile=64)
    k = analyze_transport(traj, species="Na", temperature_k=300, method="kinisi", seed=3)
    b = analyze_transport(traj, species="Na", temperature_k=300, method="blocks")
    assert k.D_method.startswith("kinisi") and b.D_method.startswith("OLS")
    dk, db = k.D_cm2_s["Na"], b.D_cm2_s["Na"]
    ek, eb = k.D_err_cm2_s["Na"], b.D_err_cm2_s["Na"]
    assert abs(dk - D_CM2_S) < 0.15 * D_CM2_S and abs(db - D_CM2_S) < 0.15 * D_CM2_S
    assert abs(dk - db) < 3 * np.hypot(ek, eb)
    assert 1 / 4 < ek / eb < 4  # two independent error models, same order


def test_uniform_drift_is_removed(rng) -> None:
    seed = int(rng.integers(1 << 30))
    clean = analyze_transport(_system(np.random.default_rng(seed), 2000), species="Na", temperature_k=300,
                              method="blocks")
    drifting = _system(np.random.default_rng(seed), 2000, drift_A_fs=2e-3)  # every atom moves together
    # the walk's own D (same seed, no drift) is recovered; the walkers' own centre of mass
    # moves a little, so removing the system's centre of mass changes D by a few per cent
    for mode, rel in (("framework", 0.01), ("system", 0.05)):
        res = analyze_transport(drifting, species="Na", temperature_k=300, drift=mode, method="blocks")
        assert res.D_cm2_s["Na"] == pytest.approx(clean.D_cm2_s["Na"], rel=rel), mode
        assert mode in res.drift_removal
    assert clean.drift_removal == "framework centre of mass: S"
    assert abs(clean.D_cm2_s["Na"] - D_CM2_S) < 4 * clean.D_err_cm2_s["Na"]
    raw = analyze_transport(drifting, species="Na", temperature_k=300, drift="none", method="blocks")
    assert raw.D_cm2_s["Na"] > 5 * D_CM2_S and raw.drift_removal == "none"


# ----------------------------------------------------------------------------- vibrations
def _oscillators(rng, n_frames: int, freq_cm1: float, velocities: bool) -> Trajectory:
    n = 32
    t = np.arange(n_frames) * DT_FS
    omega = 2 * np.pi * freq_cm1 / CM1_PER_INV_FS          # rad/fs
    amp = rng.uniform(0.05, 0.15, (n, 3))
    phase = rng.uniform(0, 2 * np.pi, (n, 3))
    sites = rng.uniform(0, L_A, (n, 3))
    arg = omega * t[:, None, None] + phase
    pos = sites + amp * np.cos(arg)
    vel = -amp * omega * np.sin(arg)
    return Trajectory(
        symbols=["Ag"] * n, numbers=np.full(n, 47), masses_amu=np.full(n, 107.87), positions_A=pos % L_A,
        cells_A=np.broadcast_to(np.eye(3) * L_A, (n_frames, 3, 3)).copy(), pbc=np.ones(3, bool), dt_fs=DT_FS,
        velocities_A_fs=vel if velocities else None, time_fs=t, source="oscillators",
    )


@pytest.mark.parametrize("velocities", [True, False])
def test_harmonic_oscillators_no_diffusion_and_vdos_peak(rng, velocities) -> None:
    f0 = 250.0
    res = analyze_transport(_oscillators(rng, 4000, f0, velocities), species="Ag", temperature_k=500,
                            method="blocks", vdos_resolution_cm1=2.0)
    assert abs(res.D_cm2_s["Ag"]) < 0.02 * D_CM2_S  # bounded MSD: only the oscillation leaks into the slope
    f, g = res.freq_cm1, res.vdos["Ag"]
    assert abs(f[np.argmax(g)] - f0) <= (f[1] - f[0])
    assert np.trapezoid(g, f) == pytest.approx(1.0, rel=1e-9)
    assert res.vdos0["Ag"] < 1e-3 * g.max()
    assert ("trajectory" in res.velocity_source) == velocities


@pytest.mark.parametrize("velocities", [True, False])
def test_vdos_weights_near_nyquist_are_exact(rng, velocities) -> None:
    # two modes with equal velocity amplitude carry equal VDOS area; the high one sits at 60 %
    # of Nyquist, where an uncorrected forward difference would keep only sinc²(0.3) = 75 %
    n, n_frames = 16, 6000
    f_cm1 = np.array([400.0, 0.6 * CM1_PER_INV_FS / (2 * DT_FS)])
    omega = 2 * np.pi * f_cm1 / CM1_PER_INV_FS
    t = np.arange(n_frames) * DT_FS
    phase = rng.uniform(0, 2 * np.pi, (2, n, 3))
    v0 = 0.01  # Å/fs
    arg = omega[:, None, None, None] * t[None, :, None, None] + phase[:, None]
    pos = 5.0 + (v0 / omega[:, None, None, None] * np.sin(arg)).sum(axis=0)
    vel = (v0 * np.cos(arg)).sum(axis=0)
    traj = Trajectory(
        symbols=["Li"] * n, numbers=np.full(n, 3), masses_amu=np.full(n, 6.94), positions_A=pos,
        cells_A=np.broadcast_to(np.eye(3) * L_A, (n_frames, 3, 3)).copy(), pbc=np.ones(3, bool), dt_fs=DT_FS,
        velocities_A_fs=vel if velocities else None, time_fs=t,
    )
    res = analyze_transport(traj, species="Li", temperature_k=300, method="blocks", vdos_resolution_cm1=10.0,
                            drift="none")  # a centre-of-mass correction would remove a random share of each mode
    f, g = res.freq_cm1, res.vdos["Li"]
    areas = [np.trapezoid(np.where(np.abs(f - fk) < 100, g, 0.0), f) for fk in f_cm1]
    assert areas[1] / areas[0] == pytest.approx(1.0, rel=0.02)
    assert sum(areas) == pytest.approx(1.0, rel=0.02)


def test_vdos_zero_frequency_is_12D_over_v2(rng) -> None:
    # unit-area VDOS: g(0) = 4∫Z(t)dt = 12 D / ⟨v²⟩ (per fs), divided by CM1_PER_INV_FS for 1/cm⁻¹
    traj = _system(rng, 3000, wrap=False)
    vel = np.zeros_like(traj.positions_A)
    vel[:-1] = np.diff(traj.positions_A, axis=0) / DT_FS      # the walk's own (white) velocities
    traj = traj[:-1]
    traj.velocities_A_fs = vel[:-1]
    res = analyze_transport(traj, species="Na", temperature_k=300, method="blocks", drift="none")
    v2 = np.mean(np.sum(vel[:-1, :96] ** 2, axis=-1))
    expected = 12 * D_A2_FS / v2 / CM1_PER_INV_FS
    assert res.vdos0["Na"] == pytest.approx(expected, rel=0.1)
    assert res.velocity_source == "trajectory velocities"


def test_vdos_zero_frequency_separates_diffusion_from_vibration(rng) -> None:
    walk = analyze_transport(_system(rng, 2000), species="Na", temperature_k=300, method="blocks")
    vib = analyze_transport(_oscillators(rng, 2000, 250.0, False), species="Ag", temperature_k=300, method="blocks")
    assert walk.vdos0["Na"] > 100 * vib.vdos0["Ag"]


def test_hopping_gives_the_analytic_non_gaussian_parameter(rng) -> None:
    # lattice hops of length a along ±x, ±y, ±z with probability p per frame:
    # at one frame ⟨r²⟩ = p a², ⟨r⁴⟩ = p a⁴ → α₂ = 3/(5p) − 1
    p, a = 0.02, 2.0
    hops = (rng.random((20000, 64)) < p)
    axis = rng.integers(0, 3, hops.shape)
    sign = rng.choice([-1.0, 1.0], hops.shape)
    steps = np.zeros(hops.shape + (3,))
    np.put_along_axis(steps, axis[..., None], (hops * sign * a)[..., None], axis=-1)
    pos = np.cumsum(steps, axis=0)
    m2, m4 = displacement_moments(pos, np.array([1]), max_origins=20000)
    expected = 3 / (5 * p) - 1
    assert non_gaussian_alpha2(m2, m4)[0] == pytest.approx(expected, rel=0.05)


# ----------------------------------------------------------------------------- output + errors
def test_tables_and_json(rng) -> None:
    res = analyze_transport(_system(rng, 600), species=["Na", "S"], temperature_k=300, method="blocks",
                            charges={"S": -2})
    d = json.loads(res.to_json())
    assert d["species"] == ["Na", "S"] and d["charge_e"]["S"] == -2
    assert d["drift_removal"].startswith("system")  # no atoms left for a framework
    msd = res.msd_table()
    assert set(msd["species"]) == {"Na", "S"} and len(msd["time_ps"]) == 2 * len(res.time_ps)
    vd = res.vdos_table()
    assert len(vd["vdos"]) == 2 * len(res.freq_cm1)
    assert np.all(np.diff(res.time_ps) > 0)


def test_unknown_species_names_the_present_ones(rng) -> None:
    with pytest.raises(InputError) as exc:
        analyze_transport(_system(rng, 100), species="Li", temperature_k=300)
    assert "Li" in str(exc.value) and "Na, S" in str(exc.value)


def test_too_few_frames(rng) -> None:
    with pytest.raises(InputError, match="at least 16"):
        analyze_transport(_system(rng, 10), species="Na", temperature_k=300)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ramanscreen.flows", *args], capture_output=True, text=True, timeout=120)


def _write_plain_xyz(path, rng) -> None:
    traj = _system(rng, 64, n_mobile=8, n_frame=8)
    write(path, [Atoms(traj.symbols, positions=p, cell=traj.cells_A[0], pbc=True) for p in traj.positions_A],
          format="extxyz")


@pytest.mark.parametrize(
    "case, extra, message",
    [
        ("unknown species", ["--species", "Xe", "--dt-fs", "2"], "present: Na, S"),
        ("missing dt", ["--species", "Na"], "--dt-fs"),
        ("unreadable", ["--species", "Na", "--dt-fs", "2"], "cannot read trajectory"),
    ],
)
def test_cli_bad_input_one_line_no_output(tmp_path, rng, case, extra, message) -> None:
    traj = tmp_path / "run.xyz"
    if case == "unreadable":
        traj.write_bytes(b"\x89garbage\x00" * 40)
    else:
        _write_plain_xyz(traj, rng)
    out = tmp_path / "out"
    proc = _cli("transport", str(traj), "--temperature-k", "300", "--out-dir", str(out), *extra)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "run.xyz" in lines[0]
    assert not out.exists() or not any(out.iterdir())


def test_cli_writes_json_parquet_and_plots(tmp_path, rng) -> None:
    import pyarrow.parquet as pq

    traj = tmp_path / "run.xyz"
    _write_plain_xyz(traj, rng)
    out = tmp_path / "out"
    proc = _cli("transport", str(traj), "--species", "Na", "--dt-fs", "2", "--temperature-k", "300",
                "--out-dir", str(out), "--method", "blocks", "--plot")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "run.msd.parquet", "run.msd.png", "run.transport.json", "run.vdos.parquet", "run.vdos.png"]
    d = json.loads((out / "run.transport.json").read_text())
    assert d["dt_fs"] == 2.0 and d["drift_removal"] == "framework centre of mass: S"
    assert pq.read_table(out / "run.msd.parquet").column_names == ["species", "time_ps", "msd_A2", "alpha2", "msd_slope"]


@pytest.mark.parametrize("method", ["blocks", "kinisi"])
def test_min_fit_start_moves_the_default_window_past_the_ballistic_regime(rng, method) -> None:
    # 2001 frames × 2 fs = 4 ps: the default window starts at 2 % (80 fs); a 0.5 ps floor moves
    # it to [0.5, 1.0] ps, and the floor is capped at a quarter of a short run.
    traj = _system(rng, 2001)
    default = analyze_transport(traj, species="Na", temperature_k=300, method="blocks")
    assert default.fit_start_ps == pytest.approx(0.08)
    floored = analyze_transport(traj, species="Na", temperature_k=300, method=method, min_fit_start_ps=0.5)
    assert floored.fit_start_ps == pytest.approx(0.5)
    if method == "blocks":
        assert floored.fit_end_ps == pytest.approx(1.0)
    D, err = floored.D_cm2_s["Na"], floored.D_err_cm2_s["Na"]
    assert abs(D - D_CM2_S) < 0.25 * D_CM2_S and abs(D - D_CM2_S) < 4 * err
    short = analyze_transport(_system(rng, 501), species="Na", temperature_k=300, method="blocks",
                              min_fit_start_ps=0.5)
    assert short.fit_start_ps == pytest.approx(0.25)
