"""Issue 13 items 3 and 4: the block (statistical) error of the spectrum and of cp_fraction,
convergence as data (¼, ½, full run and N_T), and the ranking's ``converged`` and ``tied_with``.

Synthetic α series with known statistics (white noise; Ornstein–Uhlenbeck, i.e. a relaxational
central peak) and real λ-SOAP fits on small rattled cells; results through the real writer and
DuckDB views.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.signal

from ramanscreen.analytics.db import connect
from ramanscreen.analytics.ranking import Thresholds, ranking
from ramanscreen.tasks.common import CM1_PER_INV_FS, InputError
from ramanscreen.tasks.convergence import (
    LENGTH,
    TRAINING,
    assess_convergence,
    length_convergence,
    refit_subsets,
    training_convergence,
)
from ramanscreen.tasks.results import write_run
from ramanscreen.tasks.spectra import (
    SpectrumSettings,
    block_uncertainty,
    central_peak_descriptors,
    raman_spectrum,
)
from ramanscreen.tasks.trajectory import Trajectory

REPO = Path(__file__).resolve().parents[1]
DT_FS = 10.0
#: Windows of the OU tests: the relaxation corner (~27 cm⁻¹ for τ = 200 fs) lies inside the low window.
OU = SpectrumSettings(sigma_cm1=20.0, omega_min_cm1=10.0, omega_c_cm1=60.0, host_window_cm1=(60.0, 1000.0), n_blocks=8)


def _symmetric(x: np.ndarray) -> np.ndarray:
    """(..., n, 6) channels → α (..., n, 3, 3) = 10·I + the symmetric matrix of the channels."""
    a = np.zeros((*x.shape[:-1], 3, 3))
    for k, (i, j) in enumerate(((0, 0), (1, 1), (2, 2), (0, 1), (1, 2), (2, 0))):
        a[..., i, j] += x[..., k]
        if i != j:
            a[..., j, i] += x[..., k]
    return a + 10.0 * np.eye(3)


def ou_alpha(n: int, *, tau_fs: float = 200.0, seed: int = 0, batch: tuple[int, ...] = ()) -> np.ndarray:
    """α whose six components are independent Ornstein–Uhlenbeck processes (relaxation time τ)."""
    phi = np.exp(-DT_FS / tau_fs)
    eps = np.random.default_rng(seed).normal(size=(*batch, n, 6))
    return _symmetric(scipy.signal.lfilter([1.0], [1.0, -phi], eps, axis=-2))


# ------------------------------------------------------------------------ block uncertainty


def test_block_error_of_white_noise_falls_as_one_over_sqrt_n() -> None:
    """White-noise α: the smoothed periodogram's relative scatter is ∝ √(Δν̃/σ) ∝ 1/√N, so the
    block standard error of the intensity at 4N frames is half of that at N (σ ≫ block bin).
    One run's ratio scatters by ~7% (16 blocks, ~20 independent σ-wide pieces of the window), so
    four independent pairs are averaged."""
    s = SpectrumSettings(sigma_cm1=20.0, omega_min_cm1=20.0, omega_c_cm1=100.0, host_window_cm1=(100.0, 1600.0),
                         n_blocks=16)
    ratios = []
    for seed in range(4):
        rel = {}
        for n in (16384, 65536):
            a = _symmetric(np.random.default_rng([seed, n]).normal(size=(n, 6)))
            full = raman_spectrum(a, DT_FS, **s.spectrum_kwargs())
            b = block_uncertainty(a, DT_FS, freq_cm1=full.freq_cm1, **s.block_kwargs())
            win = (full.freq_cm1 >= 100.0) & (full.freq_cm1 <= 1600.0)
            rel[n] = float(np.sqrt(np.mean((b.intensity_err[win] / full.intensity[win]) ** 2)))
            assert np.isfinite(b.cp_fraction_err) and b.cp_fraction_err > 0 and b.note == ""
        ratios.append(rel[16384] / rel[65536])
    assert np.mean(ratios) == pytest.approx(2.0, rel=0.1), ratios


def test_block_error_matches_the_scatter_of_independent_runs() -> None:
    """40 independent OU runs: the spread of their full-run cp_fraction is what the block error
    of a single run predicts (a calibrated 1σ, not merely a number that shrinks)."""
    runs = ou_alpha(8192, seed=1, batch=(40,))
    cps, errs = [], []
    for a in runs:  # 40 runs, each one batched rfft
        full = raman_spectrum(a, DT_FS, **OU.spectrum_kwargs())
        cps.append(central_peak_descriptors(full, **OU.descriptor_kwargs())["fraction_below_omega_c"])
        errs.append(block_uncertainty(a, DT_FS, freq_cm1=full.freq_cm1, **OU.block_kwargs()).cp_fraction_err)
    ratio = np.std(cps, ddof=1) / np.sqrt(np.mean(np.square(errs)))
    assert 0.7 < ratio < 1.4, ratio
    assert 0.1 < np.mean(cps) < 0.9  # a real central peak (≈ 0.19 here), not a degenerate window


def test_block_cp_fractions_are_the_descriptor_of_each_block() -> None:
    a = ou_alpha(4096, seed=2)
    b = block_uncertainty(a, DT_FS, n_blocks=4, **{k: v for k, v in OU.block_kwargs().items() if k != "n_blocks"})
    for k in range(4):
        sp = raman_spectrum(a[k * 1024:(k + 1) * 1024], DT_FS, **OU.spectrum_kwargs())
        d = central_peak_descriptors(sp, **OU.descriptor_kwargs())["fraction_below_omega_c"]
        assert b.cp_fraction_blocks[k] == pytest.approx(d, rel=1e-12)
    assert b.cp_fraction_err == pytest.approx(np.std(b.cp_fraction_blocks, ddof=1) / 2.0)


def test_blocks_too_short_give_nan_and_say_why() -> None:
    a = ou_alpha(400, seed=3)
    b = block_uncertainty(a, DT_FS, **OU.block_kwargs())  # 8 blocks of 50 samples: 67 cm⁻¹ bins
    assert np.isnan(b.cp_fraction_err) and "too short for the windows" in b.note
    assert np.isfinite(b.intensity_err).all()  # the spectrum's own error still stands
    tiny = block_uncertainty(a[:100], DT_FS, **OU.block_kwargs())
    assert np.isnan(tiny.intensity_err).all() and "at least 16" in tiny.note
    with pytest.raises(InputError, match="n_blocks"):
        block_uncertainty(a, DT_FS, n_blocks=1)
    with pytest.raises(InputError, match="n_blocks"):
        SpectrumSettings(n_blocks=1)


# ------------------------------------------------------------------------ convergence


def random_walk(n_frames: int, d_cm2_s: float, *, seed: int = 0) -> Trajectory:
    """32 Li on a 3-D random walk with tracer diffusivity ``d_cm2_s`` among 32 fixed O, 10 fs apart."""
    rng = np.random.default_rng(seed)
    step = np.sqrt(2.0 * d_cm2_s * 10.0 * DT_FS)  # Å per axis per frame (1 cm²/s = 10 Å²/fs)
    li = np.cumsum(rng.normal(0.0, step, (n_frames, 32, 3)), axis=0) + rng.uniform(0, 20, (1, 32, 3))
    o = np.broadcast_to(rng.uniform(0, 20, (1, 32, 3)), (n_frames, 32, 3))
    pos = np.concatenate([li, o], axis=1)
    return Trajectory(symbols=["Li"] * 32 + ["O"] * 32, numbers=np.array([3] * 32 + [8] * 32),
                      masses_amu=np.array([6.94] * 32 + [16.0] * 32), positions_A=pos,
                      cells_A=np.broadcast_to(np.eye(3) * 200.0, (n_frames, 3, 3)).copy(),
                      pbc=np.array([True] * 3), dt_fs=DT_FS, velocities_A_fs=None,
                      time_fs=np.arange(n_frames) * DT_FS)


def _assess(rows):
    t = Thresholds()
    return assess_convergence(rows, max_l2=t.converge_max_l2, max_cp_change=t.converge_max_cp_change,
                              max_D_rel_change=t.converge_max_D_rel_change, d_floor_cm2_s=t.d_hopping_cm2_s)


def test_a_long_stationary_run_converges_in_spectrum_and_d() -> None:
    from ramanscreen.tasks.transport import TransportSettings

    a = ou_alpha(16384, seed=4)
    traj = random_walk(4001, 1e-5, seed=4)
    res = length_convergence(a, DT_FS, settings=OU, traj=traj, mobile="Li", temperature_k=500.0,
                             transport=TransportSettings(method="blocks"))
    rows = {r["fraction"]: r for r in res.rows}
    assert [r["test"] for r in res.rows] == [LENGTH] * 3 and rows[0.5]["n_alpha"] == 8192
    assert rows[1.0]["spectrum_l2_change"] == 0.0 and rows[1.0]["cp_fraction_change"] == 0.0
    assert rows[1.0]["D_cm2_s"] == pytest.approx(1e-5, rel=0.2)
    assert 0 < rows[0.5]["spectrum_l2_change"] < 0.2 and abs(rows[0.5]["cp_fraction_change"]) < 0.05
    assert abs(rows[0.5]["D_change_cm2_s"]) < 0.5e-5
    # the spectra of every fraction are stored on the full run's grid
    table = res.spectra_table()
    assert len(table["freq_cm1"]) == 3 * len(res.freq_cm1)
    # with the training test missing the run is not called converged, and says so
    converged, why = _assess(res.rows)
    assert converged is False and why == "training_set ½: not computed"
    converged, why = _assess([*res.rows, {"test": TRAINING, "fraction": 0.5, "spectrum_l2_change": 0.01,
                                          "cp_fraction_change": 0.0}])
    assert converged is True, why


def test_a_spectrum_that_changes_halfway_is_not_converged() -> None:
    a = ou_alpha(16384, seed=5)
    t = np.arange(16384) * DT_FS
    nu0 = 300.0 / CM1_PER_INV_FS
    a[8192:, 0, 1] += 3.0 * np.cos(2 * np.pi * nu0 * t[8192:])  # a mode (α std ≈ 3.2) that appears in the second half
    a[8192:, 1, 0] = a[8192:, 0, 1]
    res = length_convergence(a, DT_FS, settings=OU)
    half = next(r for r in res.rows if r["fraction"] == 0.5)
    assert half["spectrum_l2_change"] > 0.2
    converged, why = _assess([*res.rows, {"test": TRAINING, "fraction": 0.5, "spectrum_l2_change": 0.0,
                                          "cp_fraction_change": 0.0}])
    assert converged is False and "trajectory_length ½: spectrum L2 change" in why


def test_a_short_trajectory_is_flagged_not_converged() -> None:
    """600 α samples pass the windows; their half and quarter do not (bins too coarse)."""
    a = ou_alpha(600, seed=6)
    s = SpectrumSettings(sigma_cm1=4.0, omega_min_cm1=15.0, omega_c_cm1=60.0, host_window_cm1=(60.0, 1000.0))
    res = length_convergence(a, DT_FS, settings=s)
    rows = {r["fraction"]: r for r in res.rows}
    assert rows[0.5]["spectrum_l2_change"] is None and "must lie above the first two bins" in rows[0.5]["note"]
    assert (LENGTH, 0.5) not in res.spectra and (LENGTH, 1.0) in res.spectra
    converged, why = _assess([*res.rows, {"test": TRAINING, "fraction": 0.5, "spectrum_l2_change": 0.0,
                                          "cp_fraction_change": 0.0}])
    assert converged is False and why.startswith("trajectory_length ½: no spectrum (300 α samples")


def test_d_far_from_the_full_run_fails_but_noise_around_zero_does_not() -> None:
    base = [{"test": TRAINING, "fraction": 0.5, "spectrum_l2_change": 0.0, "cp_fraction_change": 0.0},
            {"test": LENGTH, "fraction": 0.5, "spectrum_l2_change": 0.0, "cp_fraction_change": 0.0}]
    fast = [*base, {"test": LENGTH, "fraction": 1.0, "D_cm2_s": 1e-5}]
    fast[1] = {**fast[1], "D_change_cm2_s": 6e-6}
    assert _assess(fast)[0] is False and "D change +6.00e-06" in _assess(fast)[1]
    fast[1] = {**fast[1], "D_change_cm2_s": -4e-6}
    assert _assess(fast) == (True, "½ of the trajectory and of N_T within the thresholds")
    # non-conducting: D = 1e-10 ± 3e-9 is noise below d_hopping_cm2_s, not a change
    slow = [*base, {"test": LENGTH, "fraction": 1.0, "D_cm2_s": 1e-10}]
    slow[1] = {**slow[1], "D_change_cm2_s": 3e-9}
    assert _assess(slow)[0] is True
    assert _assess([]) == (None, "no convergence data (run written before the convergence table)")


@pytest.fixture(scope="module")
def nacl_model():
    """A real λ-SOAP model of dipole-model α on rattled NaCl cells (the module doctest's system)."""
    from ase.build import bulk

    from ramanscreen.tasks.polarizability import AlphaModel, SOAPHypers
    from ramanscreen.tasks.reference import get_backend

    rng = np.random.default_rng(0)
    frames = []
    for _ in range(40):
        f = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
        f.positions += rng.normal(0, 0.15, f.positions.shape)
        frames.append(f)
    truth = np.array([get_backend("dipole").compute(f).alpha_A3 for f in frames[:16]])
    hypers = SOAPHypers(cutoff_A=4.0, max_radial=2, max_angular=2)
    model = AlphaModel.fit(frames[:16], truth, hypers=hypers, n_committee=2, seed=3)
    return model, frames, truth, hypers


def test_refits_reuse_the_features_and_equal_plain_fits(nacl_model) -> None:
    from ramanscreen.tasks.polarizability import AlphaModel, RidgeSettings

    model, frames, truth, hypers = nacl_model
    stacked, subsets = refit_subsets(model, frames[:16], truth, [4, 8])
    assert [len(s) for s in subsets] == [4, 8] and set(subsets[0]) <= set(subsets[1])  # nested
    both = stacked._all_models(frames[16:])
    for k, idx in enumerate(subsets):
        plain = AlphaModel.fit([frames[i] for i in idx], truth[idx], hypers=hypers, n_committee=0, seed=3,
                               ridge=RidgeSettings())
        np.testing.assert_allclose(both[k], plain.predict(frames[16:]), rtol=1e-8, atol=1e-8)


def test_training_subsets_give_rows_and_spectra(nacl_model) -> None:
    model, frames, truth, _ = nacl_model
    alpha = model.predict(frames)  # the "trajectory": 40 frames 100 fs apart (8.3 cm⁻¹ bins)
    s = SpectrumSettings(sigma_cm1=0.0, omega_min_cm1=18.0, omega_c_cm1=60.0, host_window_cm1=(60.0, 160.0))
    res = training_convergence(alpha, 100.0, model=model, frames=frames, train_frames=frames[:16],
                               train_alpha_A3=truth, settings=s, min_train_frames=5)
    rows = {r["fraction"]: r for r in res.rows}
    assert [rows[f]["n_train"] for f in (0.25, 0.5, 1.0)] == [4, 8, 16]
    assert rows[0.25]["spectrum_l2_change"] is None and "fewer than the 5" in rows[0.25]["note"]
    assert rows[0.5]["spectrum_l2_change"] > 0 and rows[1.0]["spectrum_l2_change"] == 0.0
    assert rows[0.5]["D_cm2_s"] is None  # D is the MD's, not the α model's
    assert set(res.spectra) == {(TRAINING, 0.5), (TRAINING, 1.0)}


def test_subset_refits_predicted_in_one_pass_give_the_same_rows(nacl_model, tmp_path) -> None:
    """The campaign's path (refits fitted once in the fit task, their α from the prediction pass)
    gives the rows and spectra of the recomputing path, plus the learning curve's test RMSE."""
    from ramanscreen.tasks.convergence import fit_training_subsets
    from ramanscreen.tasks.polarizability import alpha_metrics, predict_frames

    model, frames, truth, _ = nacl_model
    s = SpectrumSettings(sigma_cm1=0.0, omega_min_cm1=18.0, omega_c_cm1=60.0, host_window_cm1=(60.0, 160.0))
    from ramanscreen.tasks.reference import get_backend

    held_out = frames[16:24]
    test_truth = np.array([get_backend("dipole").compute(f).alpha_A3 for f in held_out])
    subs = fit_training_subsets(model, frames[:16], truth, test_frames=held_out, test_alpha_A3=test_truth,
                                min_train_frames=5)
    assert subs.fractions == [0.5] and subs.sizes == {0.25: 4, 0.5: 8, 1.0: 16}
    subs.model.save(tmp_path / "sub")
    model.save(tmp_path / "m")
    alpha, committee, extra = predict_frames(tmp_path / "m", frames, committee=True, extra=tmp_path / "sub")
    np.testing.assert_allclose(alpha, model.predict(frames), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(committee, model.predict_committee(frames), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(extra[0], subs.model.predict(frames), rtol=1e-10, atol=1e-10)
    assert subs.test_metrics[0.5] == alpha_metrics(test_truth, subs.model.predict(held_out))
    fast = training_convergence(alpha, 100.0, subset_alpha_A3={0.5: extra[0]}, n_train=16,
                                test_metrics=subs.test_metrics, settings=s, min_train_frames=5)
    slow = training_convergence(alpha, 100.0, model=model, frames=frames, train_frames=frames[:16],
                                train_alpha_A3=truth, settings=s, min_train_frames=5)
    for a, b in zip(fast.rows, slow.rows, strict=True):
        for k in ("fraction", "n_train", "note"):
            assert a[k] == b[k]
        for k in ("spectrum_l2_change", "cp_fraction"):
            assert (a[k] is None and b[k] is None) or a[k] == pytest.approx(b[k], rel=1e-9)
    rows = {r["fraction"]: r for r in fast.rows}
    assert rows[0.5]["rmse_diag_A3"] == subs.test_metrics[0.5]["rmse_diag_A3"] > 0
    assert rows[0.25]["rmse_diag_A3"] is None  # not refitted: too few frames
    assert rows[0.5]["rmse_diag_A3"] > rows[1.0]["rmse_diag_A3"]  # half the training set: a larger held-out error
    for k in fast.spectra:
        np.testing.assert_allclose(fast.spectra[k], slow.spectra[k], rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------------ results and ranking


STEP = np.arange(0.0, 1000.0 + 1e-9, 1.0)


def _write(root, name: str, cp_amp: float, err: float | None, *, l2_half: float = 0.05, d: float = 1e-5) -> None:
    """A run with a step spectrum (amplitude ``cp_amp`` up to 50 cm⁻¹), a block error and convergence rows."""
    conv = [{"test": t, "fraction": f, "n_alpha": int(4000 * f), "n_train": 60, "spectrum_l2_change": 0.0 if f == 1
             else (l2_half if f == 0.5 else 0.3), "cp_fraction_change": 0.0, "species": "Na",
             "D_cm2_s": d if t == LENGTH else None, "D_change_cm2_s": 0.0 if t == LENGTH else None,
             "note": None if t == LENGTH else "D from the same MD"}
            for t in (LENGTH, TRAINING) for f in (0.25, 0.5, 1.0)]
    spectra = {"test": [LENGTH] * len(STEP), "fraction": [0.5] * len(STEP), "freq_cm1": STEP,
               "intensity": np.where(STEP <= 50, cp_amp, 1.0)}
    desc = {"fraction_below_omega_c": 0.0}
    if err is not None:
        desc["cp_fraction_block_err"] = err
    write_run(root, "ties", name, "r1",
              meta=dict(formula=name, temperature_k=600.0, n_atoms=64, mlff="f", reference_method="ref", n_train=60,
                        mobile_species="Na"),
              spectrum={"freq_cm1": STEP, "intensity": np.where(STEP <= 50, cp_amp, 1.0),
                        "intensity_block_err": np.full(len(STEP), 0.1)},
              transport=[{"species": "Na", "D_cm2_s": d}], descriptors=desc, convergence=conv,
              convergence_spectra=spectra)


@pytest.fixture(scope="module")
def tie_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ties")
    _write(root, "A", 12.0, 0.02)              # cp ≈ 0.37
    _write(root, "B", 11.0, 0.02)              # cp ≈ 0.35: within A's interval
    _write(root, "C", 4.0, 0.01, l2_half=0.4)  # cp ≈ 0.16: apart, and its half run differs
    return root


def test_overlapping_intervals_are_tied_and_unconverged_runs_flagged(tie_root) -> None:
    con = connect(tie_root)
    try:
        rows = ranking(con, "ties")
        n_conv = con.execute("SELECT count(*) FROM convergence").fetchone()[0]
        n_spec = con.execute("SELECT count(*) FROM convergence_spectra").fetchone()[0]
        err = dict(con.execute("SELECT material, cp_fraction_block_err FROM screening").fetchall())
        tight = ranking(con, "ties", thresholds=Thresholds(tie_sigmas=0.1))
    finally:
        con.close()
    assert n_conv == 18 and n_spec == 3 * len(STEP) and err == {"A": 0.02, "B": 0.02, "C": 0.01}
    by = {r["material"]: r for r in rows}
    assert [r["material"] for r in rows] == ["A", "B", "C"]
    assert by["A"]["tied_with"] == ["B"] and by["B"]["tied_with"] == ["A"] and by["C"]["tied_with"] == []
    assert by["A"]["metric_err"] == 0.02
    assert by["A"]["converged"] is True and by["B"]["converged"] is True
    assert by["C"]["converged"] is False and by["C"]["rank"] == 3  # flagged, still ranked
    assert "trajectory_length ½: spectrum L2 change 0.4 > 0.2" in by["C"]["convergence_note"]
    # narrower intervals (0.1 s.e.) no longer overlap: |0.37 − 0.35| > 0.1 × (0.02 + 0.02)
    assert all(r["tied_with"] == [] for r in tight)


def test_cli_rank_says_which_runs_are_tied_and_unconverged(tie_root, tmp_path) -> None:
    out = subprocess.run([sys.executable, "-m", "ramanscreen.flows", "rank", "-r", str(tie_root), "--campaign", "ties",
                          "--out-dir", str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    assert "tied (cp_fraction intervals overlap; their order is not significant): A = B" in out.stdout
    assert ("not converged: C (trajectory_length ½: spectrum L2 change 0.4 > 0.2; "
            "training_set ½: spectrum L2 change 0.4 > 0.2)") in out.stdout
    assert "converged: at ½ the trajectory and ½ N_T, spectrum L2 change ≤ 0.2" in out.stdout
    md = (tmp_path / "ranking.md").read_text()
    assert "tied with" in md and "A = B" in md
    loose = subprocess.run([sys.executable, "-m", "ramanscreen.flows", "rank", "-r", str(tie_root), "--campaign",
                            "ties", "--converge-max-l2", "0.5", "--out-dir", str(tmp_path / "loose")],
                           capture_output=True, text=True, timeout=300, cwd=REPO,
                           env={**os.environ, "PYTHONPATH": str(REPO)})
    assert loose.returncode == 0, loose.stderr
    assert "not converged" not in loose.stdout


def test_bad_convergence_rows_are_refused(tmp_path) -> None:
    meta = dict(formula="X", temperature_k=300, n_atoms=8, mlff="f", reference_method="ref", n_train=4)
    row = {"test": LENGTH, "fraction": 0.5}
    with pytest.raises(InputError, match=r"convergence.fraction: a \(test, fraction\) appears twice"):
        write_run(tmp_path, "c", "X", "r1", meta=meta, convergence=[row, row])
    with pytest.raises(InputError, match="convergence.test: unknown test 'length'"):
        write_run(tmp_path, "c", "X", "r1", meta=meta, convergence=[{"test": "length", "fraction": 0.5}])
    with pytest.raises(InputError, match="fractions must lie in"):
        write_run(tmp_path, "c", "X", "r1", meta=meta, convergence=[{"test": LENGTH, "fraction": 2.0}])
    assert not (tmp_path / "materials").exists()  # nothing written


def test_cli_spectrum_writes_the_block_error(tmp_path) -> None:
    import pyarrow.parquet as pq

    from ramanscreen.tasks.spectra import write_alpha_txt

    write_alpha_txt(tmp_path / "a.txt", ou_alpha(8192, seed=7), dt_fs=DT_FS)
    out = subprocess.run([sys.executable, "-m", "ramanscreen.flows", "spectrum", str(tmp_path / "a.txt"), "--sigma-cm1",
                          "20", "--omega-min-cm1", "10", "--omega-c-cm1", "60", "--host-low-cm1", "60", "--n-blocks", "8",
                          "-o", str(tmp_path / "s.parquet")], capture_output=True, text=True, timeout=300, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"})
    assert out.returncode == 0, out.stderr
    t = pq.read_table(tmp_path / "s.parquet")
    err = t.column("intensity_block_err").to_numpy()
    assert np.isfinite(err[1:]).all() and (err[1:] > 0).all()
    assert "block s.e. of that fraction (8 × 10.2 ps)" in out.stdout
