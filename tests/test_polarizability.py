"""λ-SOAP polarizability model: equivariance, invariance, persistence, learning, bad input.

The data come from the embedded Thole point-dipole reference model (ramanscreen.tasks.reference) on
disordered 16-atom α-AgI cells, so the targets are anisotropic, geometry-dependent and
physically shaped, not a function the model was built around.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
from ase import Atoms
from scipy.spatial.transform import Rotation

from ramanscreen.tasks.common import InputError
from ramanscreen.tasks.polarizability import (
    AlphaModel,
    HyperSearch,
    RidgeSettings,
    SOAPHypers,
    alpha_metrics,
    alpha_to_spherical,
    frame_uncertainty_A3,
    iter_trajectory_chunks,
    learning_curve,
    predict_frames,
    predict_trajectory,
    read_training_set,
    search_hypers,
    spherical_to_alpha,
)

N_FRAMES = 64
N_TRAIN = 40


def _agi_frames(n: int, seed: int) -> list[Atoms]:
    from ramanscreen.tasks.structures import build_structure

    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n):
        atoms = build_structure("AgI", n_atoms=16, seed=seed * 1000 + k)
        atoms.positions += rng.normal(0.0, 0.25, atoms.positions.shape)
        frames.append(atoms)
    return frames


@pytest.fixture(scope="module")
def dataset() -> tuple[list[Atoms], np.ndarray, str]:
    from ramanscreen.tasks.reference import get_backend

    backend = get_backend("dipole")
    frames = _agi_frames(N_FRAMES, seed=1)
    results = [backend.compute(a) for a in frames]
    return frames, np.array([r.alpha_A3 for r in results]), results[0].method


@pytest.fixture(scope="module")
def model(dataset) -> AlphaModel:
    frames, alpha, method = dataset
    return AlphaModel.fit(frames[:N_TRAIN], alpha[:N_TRAIN], n_committee=6, seed=3, method=method)


@pytest.fixture(scope="module")
def dataset_file(dataset, tmp_path_factory):
    from ramanscreen.tasks.reference import ReferenceResult, write_alpha_dataset

    frames, alpha, method = dataset
    path = tmp_path_factory.mktemp("alpha") / "agi.extxyz"
    write_alpha_dataset(frames, [ReferenceResult(a, method) for a in alpha], path)
    return path


def _rotate(atoms: Atoms, R: np.ndarray) -> Atoms:
    out = atoms.copy()
    out.set_cell(atoms.cell.array @ R.T, scale_atoms=False)
    out.positions = atoms.positions @ R.T
    return out


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


# --------------------------------------------------------------------- λ decomposition


def test_spherical_round_trip_and_trace(rng) -> None:
    a = rng.normal(size=(7, 3, 3))
    a = a + a.transpose(0, 2, 1)
    a0, a2 = alpha_to_spherical(a)
    assert a0.shape == (7, 1) and a2.shape == (7, 5)
    np.testing.assert_allclose(spherical_to_alpha(a0, a2), a, atol=1e-13)
    # λ=0 carries exactly the trace: |a0| = tr(α)/√3; λ=2 is traceless.
    np.testing.assert_allclose(np.abs(a0[:, 0]), np.abs(np.trace(a, axis1=1, axis2=2)) / np.sqrt(3), rtol=1e-12)
    np.testing.assert_allclose(np.trace(spherical_to_alpha(np.zeros_like(a0), a2), axis1=1, axis2=2), 0, atol=1e-13)
    # The λ=2 components rotate with a Wigner matrix: their norm is rotation invariant.
    R = Rotation.random(random_state=4).as_matrix()
    _, a2r = alpha_to_spherical(R @ a @ R.T)
    np.testing.assert_allclose(np.linalg.norm(a2r, axis=1), np.linalg.norm(a2, axis=1), rtol=1e-12)


def test_metrics_analytic() -> None:
    true = np.array([np.diag([1.0, 2.0, 3.0]) + k * (np.ones((3, 3)) - np.eye(3)) for k in range(5)])
    pred = true + 0.5 * np.eye(3)  # diagonal off by exactly 0.5, off-diagonal exact
    m = alpha_metrics(true, pred)
    assert m["rmse_diag_A3"] == pytest.approx(0.5)
    assert m["rmse_offdiag_A3"] == 0.0 and m["r2_offdiag"] == 1.0
    pooled = true[:, [0, 1, 2], [0, 1, 2]].ravel()
    assert m["r2_diag"] == pytest.approx(1 - 0.25 * pooled.size / np.sum((pooled - pooled.mean()) ** 2))


# --------------------------------------------------------------------------- symmetry


def test_rotated_structure_gives_rotated_alpha(model, dataset) -> None:
    frames = dataset[0][N_TRAIN:N_TRAIN + 4]
    pred = model.predict(frames)
    committee = model.predict_committee(frames)
    for k, seed in enumerate([0, 1, 2, 3]):
        R = Rotation.random(random_state=seed).as_matrix()
        if k == 3:
            R = -R  # an improper rotation: α is a true tensor, σ=+1 features are inversion-even
        rot = model.predict([_rotate(frames[k], R)])[0]
        assert _rel(rot, R @ pred[k] @ R.T) < 1e-10
        rot_c = model.predict_committee([_rotate(frames[k], R)])[:, 0]
        assert _rel(rot_c, np.einsum("ab,mbc,dc->mad", R, committee[:, k], R)) < 1e-10


def test_permuted_atoms_give_same_alpha(model, dataset) -> None:
    atoms = dataset[0][N_TRAIN + 1]
    perm = np.random.default_rng(7).permutation(len(atoms))
    assert _rel(model.predict([atoms[perm]])[0], model.predict([atoms])[0]) < 1e-12


def test_fast_path_matches_plain_features(model, dataset) -> None:
    frames = dataset[0][N_TRAIN:]
    fast, plain = model.predict(frames), model.predict_plain(frames)
    assert _rel(fast, plain) < 1e-10
    # All committee members too (the fast path contracts each member's weights).
    y0, y2 = model._spherical_plain(frames)
    np.testing.assert_allclose(model._all_models(frames), spherical_to_alpha(y0, y2), rtol=0, atol=1e-10 * np.abs(plain).max())


def test_supercell_and_mixed_cells(model, dataset) -> None:
    """α is extensive: a 2x supercell of a cell predicts exactly twice its α (with a
    warning, as 32 atoms lie outside the 16-atom training range); frames of different
    cells and sizes train together."""
    atoms = dataset[0][N_TRAIN + 2]
    with pytest.warns(UserWarning, match="trained on 16–16"):
        double = model.predict([atoms.repeat((1, 1, 2))])[0]
    assert _rel(double, 2 * model.predict([atoms])[0]) < 1e-10
    frames, alpha, _ = dataset
    mixed = frames[:20] + [f.repeat((2, 1, 1)) for f in frames[20:30]]
    mixed_alpha = np.concatenate([alpha[:20], 2 * alpha[20:30]])
    hypers = SOAPHypers(max_radial=3, max_angular=2)
    m = AlphaModel.fit(mixed, mixed_alpha, hypers=hypers, n_committee=0)
    assert m.meta["n_atoms_range"] == [16, 32]
    # A doubled cell carries exactly the information of the cell (features and α per atom are the
    # same), so training on the doubled cells gives the model trained on the originals.
    plain = AlphaModel.fit(frames[:30], alpha[:30], hypers=hypers, n_committee=0)
    test = frames[40:44]
    assert _rel(m.predict(test), plain.predict(test)) < 1e-8
    # ... and unseen frames of either size: a doubled test cell gets twice the α of the cell
    big = m.predict([f.repeat((1, 2, 1)) for f in test])
    assert _rel(big, 2 * m.predict(test)) < 1e-10
    metrics = alpha_metrics(alpha[40:44], m.predict(test))
    assert metrics["r2_diag"] > 0.8 and metrics["r2_offdiag"] > 0.8, metrics  # the paper's criterion


# ------------------------------------------------------------------------ persistence


def test_save_load_predicts_identically_and_refits_exactly(model, dataset, tmp_path) -> None:
    frames, alpha, method = dataset
    mts, side = model.save(tmp_path / "agi")
    assert mts.name == "agi.mts" and side.name == "agi.json"
    meta = json.loads(side.read_text())
    assert meta["elements"] == [47, 53] and meta["meta"]["alpha_method"] == method
    assert meta["meta"]["n_train"] == N_TRAIN and meta["meta"]["featomic_version"] == "0.6.7"
    loaded = AlphaModel.load(tmp_path / "agi.mts")
    test = frames[N_TRAIN:]
    np.testing.assert_array_equal(loaded.predict(test), model.predict(test))
    np.testing.assert_array_equal(loaded.predict_committee(test), model.predict_committee(test))
    refit = loaded.refit(frames[:N_TRAIN], alpha[:N_TRAIN])
    for lam in (0, 2):
        np.testing.assert_array_equal(refit.weights[lam], model.weights[lam])
    np.testing.assert_array_equal(refit.intercept_A3, model.intercept_A3)
    # A weights file from other hyperparameters is refused, not silently misread.
    other = AlphaModel.fit(frames[:10], alpha[:10], hypers=SOAPHypers(max_radial=2, max_angular=2), n_committee=0)
    other.save(tmp_path / "other")
    (tmp_path / "other.json").write_text(side.read_text())
    with pytest.raises(InputError, match="do not match"):
        AlphaModel.load(tmp_path / "other.mts")


# ----------------------------------------------------------------- accuracy, committee


def _test_rmse(m: AlphaModel, frames, alpha) -> np.ndarray:
    got = alpha_metrics(alpha, m.predict(frames))
    return np.array([got["rmse_diag_A3"], got["rmse_offdiag_A3"]])


def test_cv_regularisation_beats_deliberately_bad_ones(dataset) -> None:
    """The CV-chosen regularisation must beat, on held-out frames, fits forced to a far too
    strong and a far too weak one (each λ)."""
    frames, alpha, _ = dataset
    hypers = SOAPHypers(max_radial=4, max_angular=3)
    fit = AlphaModel.fit(frames[:N_TRAIN], alpha[:N_TRAIN], hypers=hypers, n_committee=0)
    chosen = fit.meta["reg_relative"]
    good = _test_rmse(fit, frames[N_TRAIN:], alpha[N_TRAIN:])
    for bad in (10.0, 1e-13):
        forced = AlphaModel.fit(frames[:N_TRAIN], alpha[:N_TRAIN], hypers=hypers, n_committee=0,
                                ridge=RidgeSettings(reg_grid=(bad,)))
        assert forced.meta["reg_relative"] == {"0": bad, "2": bad}
        worse = _test_rmse(forced, frames[N_TRAIN:], alpha[N_TRAIN:])
        assert np.all(good < worse), (chosen, bad, good, worse)


@pytest.mark.parametrize("lam", [0, 2])
def test_closed_form_leave_one_out_equals_refitting(lam) -> None:
    """The closed-form leave-one-structure-out error equals refitting without each structure,
    with the unpenalised per-species intercepts (λ=0) refitted too."""
    from ramanscreen.tasks.polarizability import _cv_folds, _LambdaProblem

    rng = np.random.default_rng(7)
    n, n_mu, p = 14, 2 * lam + 1, 9
    X = rng.normal(size=(n, n_mu, p))
    y = X @ rng.normal(size=p) + 0.3 * rng.normal(size=(n, n_mu))
    counts = rng.integers(1, 6, size=(n, 3)).astype(float)
    C = counts / counts.sum(axis=1, keepdims=True) if lam == 0 else None
    if C is not None:
        y = y + C @ np.array([[1.0], [-2.0], [0.5]])
    prob = _LambdaProblem(X, y, C, RidgeSettings(reg_grid=(1e-4, 1e-2, 1.0, 10.0)))
    folds = _cv_folds(n, 0, seed=0)
    assert len(folds) == n
    np.testing.assert_allclose(prob.cv_sq_err(folds), prob.cv_sq_err(folds, closed_form=False), rtol=1e-8)


def test_global_feature_scaling_beats_per_column_scaling(dataset) -> None:
    """The fix of format 2: one RMS per λ block instead of one per feature column. On held-out
    frames the per-column scaling (the old default) is clearly worse, both components."""
    frames, alpha, _ = dataset
    fits = {mode: AlphaModel.fit(frames[:N_TRAIN], alpha[:N_TRAIN], n_committee=0,
                                 ridge=RidgeSettings(feature_scaling=mode)) for mode in ("global", "column")}
    rmse = {mode: _test_rmse(m, frames[N_TRAIN:], alpha[N_TRAIN:]) for mode, m in fits.items()}
    assert np.all(rmse["global"] < 0.9 * rmse["column"]), rmse


def test_per_species_intercepts_of_an_additive_target_are_recovered() -> None:
    """α = (Σ_s b_s N_s)·I on cells of varying composition: the unpenalised per-species λ=0
    intercepts must come out as b_s, and the prediction exact on new compositions. (One
    intercept per atom, whatever the element, cannot fit this target.)"""
    from ase.build import bulk

    rng = np.random.default_rng(4)
    b = {11: 1.7, 17: 3.3}
    frames = []
    for _ in range(24):
        atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=True).repeat((2, 1, 1))
        del atoms[rng.choice(len(atoms), size=int(rng.integers(0, 5)), replace=False).tolist()]
        atoms.positions += rng.normal(0.0, 0.1, atoms.positions.shape)
        frames.append(atoms)
    alpha = np.array([sum(b[int(z)] for z in f.numbers) * np.eye(3) for f in frames])
    model = AlphaModel.fit(frames[:16], alpha[:16], hypers=SOAPHypers(max_radial=3, max_angular=2), n_committee=3)
    # stored in the λ=0 component (α₀ = −tr α/√3), stated in the sidecar as isotropic α per atom
    np.testing.assert_allclose(model.intercept_A3[0], -np.sqrt(3.0) * np.array([b[11], b[17]]), rtol=1e-8)
    assert model.meta["intercept_per_species_A3"] == pytest.approx({"11": b[11], "17": b[17]}, rel=1e-8)
    np.testing.assert_allclose(model.predict(frames[16:]), alpha[16:], rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(model.predict_plain(frames[16:]), alpha[16:], rtol=1e-8, atol=1e-8)


def test_one_stoichiometry_gives_one_common_intercept(model) -> None:
    """AgI cells all have Ag:I = 1:1, so the species cannot be told apart: both intercepts are
    the same per-atom value (the format-1 model), not an arbitrary split."""
    assert model.intercept_A3.shape == (1 + model.n_committee, 2)
    np.testing.assert_allclose(model.intercept_A3[:, 0], model.intercept_A3[:, 1], rtol=1e-12)


def test_format_1_sidecar_still_loads(model, dataset, tmp_path) -> None:
    frames, _, _ = dataset
    _, side = model.save(tmp_path / "old")
    data = json.loads(side.read_text())
    per_atom = [row[0] for row in data.pop("intercept_per_species_A3")]
    data.update(format_version=1, intercept_per_atom_A3=per_atom)
    data["meta"]["ridge"].pop("feature_scaling")
    side.write_text(json.dumps(data))
    old = AlphaModel.load(tmp_path / "old.mts")
    np.testing.assert_allclose(old.predict(frames[N_TRAIN:]), model.predict(frames[N_TRAIN:]), rtol=1e-12)
    assert old.refit(frames[:12], dataset[1][:12]).meta["ridge"]["feature_scaling"] == "column"


def test_hyper_search_chooses_by_cv_within_its_budget(dataset) -> None:
    frames, alpha, _ = dataset
    # a deliberately bad start: a 2.5 Å cutoff sees hardly any Ag–I neighbour (2.8 Å)
    start = SOAPHypers(cutoff_A=2.5, max_radial=1, max_angular=2)
    grid = HyperSearch(cutoff_A=(2.5, 4.5), max_radial=(1, 3), max_angular=(2,), width_A=(0.4,))
    fit = AlphaModel.fit(frames[:24], alpha[:24], hypers=start, n_committee=0, search_budget_s=300, search=grid)
    rec = fit.meta["hyper_search"]
    assert rec["complete"] and rec["start"] == dataclasses.asdict(start) and "_chosen_features" not in rec
    scores = {json.dumps(c["hypers"], sort_keys=True): c["cv_rmse_per_atom_A3"] for c in rec["candidates"]}
    assert len(scores) == len(rec["candidates"]) >= 3  # no candidate scored twice
    accepted = [c for c in rec["candidates"] if c["accepted"]]
    assert accepted[0]["hypers"] == rec["start"] and accepted[-1]["hypers"] == rec["chosen"]
    # each adopted candidate improved the CV score by more than its standard error
    assert all(b["cv_rmse_per_atom_A3"] < a["cv_rmse_per_atom_A3"] and b["gain_over_se"] > 1
               for a, b in zip(accepted, accepted[1:], strict=False))
    assert rec["cv_rmse_per_atom_A3"] == accepted[-1]["cv_rmse_per_atom_A3"]
    assert rec["chosen"]["cutoff_A"] == 4.5, rec["candidates"]
    assert dataclasses.asdict(fit.hypers) == rec["chosen"]
    # the model is the fixed-hypers fit at the chosen hypers, bit for bit
    again = AlphaModel.fit(frames[:24], alpha[:24], hypers=fit.hypers, n_committee=0)
    np.testing.assert_array_equal(again.weights[2], fit.weights[2])
    json.dumps(fit.meta)  # the record goes to the JSON sidecar
    # A budget spent by the first candidate: the start only, flagged incomplete.
    tiny = search_hypers(frames[:24], alpha[:24], start=start, budget_s=1e-3, search=grid)
    assert len(tiny["candidates"]) == 1 and not tiny["complete"] and tiny["chosen"] == dataclasses.asdict(start)
    with pytest.raises(InputError, match="search_budget_s"):
        AlphaModel.fit(frames[:24], alpha[:24], search_budget_s=-1.0)




def test_learning_curve_improves_with_n(dataset) -> None:
    frames, alpha, _ = dataset
    curve = learning_curve(frames, alpha, [6, 16, 44], repeats=2, n_test=16, seed=5)
    s = curve.summary()
    assert list(s["n_train"]) == [6, 16, 44]
    for name in ("r2_diag", "r2_offdiag"):
        assert s[f"{name}_mean"][0] < s[f"{name}_mean"][1] < s[f"{name}_mean"][2], s
    for name in ("rmse_diag_A3", "rmse_offdiag_A3"):
        assert s[f"{name}_mean"][2] < 0.7 * s[f"{name}_mean"][0], s
    assert s["r2_diag_mean"][2] > 0.8 and s["r2_offdiag_mean"][2] > 0.8, s


def test_committee_uncertainty_tracks_error(model, dataset) -> None:
    frames, alpha, _ = dataset
    test = frames[N_TRAIN:]
    pred, committee = predict_frames(model, test, committee=True)
    np.testing.assert_array_equal(pred, model.predict(test))
    assert committee.shape == (6, len(test), 3, 3)
    sigma = committee.std(axis=0)
    err = np.abs(pred - alpha[N_TRAIN:])
    assert np.all(sigma > 0) and np.isfinite(model.committee_scale) and model.committee_scale > 0
    # Calibrated on out-of-bag residuals, the spread is of the size of the test error.
    ratio = np.sqrt(np.mean(err**2)) / np.sqrt(np.mean(sigma**2))
    assert 0.3 < ratio < 3.0, ratio
    per_frame = frame_uncertainty_A3(committee)
    np.testing.assert_allclose(per_frame, np.sqrt(np.mean(sigma**2, axis=(1, 2))), rtol=1e-12)


def test_model_pickles_for_workers_and_loads_by_path(model, dataset, tmp_path) -> None:
    import pickle

    frames = dataset[0][N_TRAIN:N_TRAIN + 3]
    expected = model.predict(frames)  # populates the featomic caches, which must not be pickled
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(model)).predict(frames), expected)
    model.save(tmp_path / "m")
    np.testing.assert_array_equal(predict_frames(tmp_path / "m.mts", frames), expected)


def test_stream_trajectory_in_chunks(model, dataset, tmp_path) -> None:
    import ase.io

    frames = dataset[0][N_TRAIN:N_TRAIN + 11]
    path = tmp_path / "md.traj"
    ase.io.write(path, frames)
    chunks = list(iter_trajectory_chunks(path, stride=2, chunk=4))
    assert [len(c) for c in chunks] == [4, 2]
    alpha = predict_trajectory(model, path, stride=2, chunk=4)
    np.testing.assert_allclose(alpha, model.predict(frames[::2]), rtol=0, atol=1e-12 * np.abs(alpha).max())


# --------------------------------------------------------------------------- bad input


def test_unseen_element_is_an_error(model, dataset) -> None:
    atoms = dataset[0][0].copy()
    atoms.symbols[0] = "Cu"
    with pytest.raises(InputError, match="Cu not in the training set"):
        model.predict([atoms])


def test_dataset_without_alpha_and_mixed_methods(dataset_file, tmp_path) -> None:
    import ase.io

    frames = ase.io.read(dataset_file, index=":")
    del frames[3].info["polarizability"]
    bad = tmp_path / "no_alpha.extxyz"
    ase.io.write(bad, frames, format="extxyz")
    with pytest.raises(InputError, match="frame 3 has no 'polarizability'"):
        read_training_set(bad)
    frames = ase.io.read(dataset_file, index=":")
    frames[5].info["alpha_method"] = "cp2k-dfpt"
    mixed = tmp_path / "mixed.extxyz"
    ase.io.write(mixed, frames, format="extxyz")
    with pytest.raises(InputError, match="mix α methods"):
        read_training_set(mixed)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ramanscreen.flows", "alpha", *args], capture_output=True, text=True, timeout=300)


def test_cli_fit_predict_and_errors(dataset_file, dataset, tmp_path) -> None:
    import ase.io

    from ramanscreen.tasks.spectra import read_alpha

    model_path = tmp_path / "agi.mts"
    res = _cli("fit", str(dataset_file), "--n-train", "48", "--seed", "1", "--out", str(model_path),
               "--committee", "4", "--max-radial", "4", "--max-angular", "3")
    assert res.returncode == 0, res.stderr
    assert "test R² diagonal" in res.stdout
    side = json.loads((tmp_path / "agi.json").read_text())
    assert side["meta"]["test_metrics"]["n_test"] == 16 and side["hypers"]["max_radial"] == 4
    assert (tmp_path / "agi.parity.png").stat().st_size > 0

    traj = tmp_path / "md.extxyz"
    ase.io.write(traj, dataset[0][:40], format="extxyz")  # 20 frames at stride 2
    res = _cli("predict", str(model_path), str(traj), "--stride", "2", "--out", str(tmp_path / "alpha.txt"),
               "--committee-out", str(tmp_path / "committee.npy"), "--chunk-frames", "3", "--dt-fs", "5")
    assert res.returncode == 0, res.stderr
    alpha = read_alpha(tmp_path / "alpha.txt")
    # the α file states its spacing: stored frames 5 fs apart, every 2nd of them
    from ramanscreen.tasks.spectra import read_alpha_series

    assert read_alpha_series(tmp_path / "alpha.txt").dt_fs == 10.0
    assert json.loads((tmp_path / "committee.json").read_text())["dt_fs"] == 10.0
    expected = AlphaModel.load(model_path).predict(ase.io.read(traj, index="::2"))  # extxyz rounds positions
    np.testing.assert_allclose(alpha, expected, rtol=1e-10)
    assert np.load(tmp_path / "committee.npy").shape == (4, 20, 3, 3)

    # Bad input: one line, exit 2, nothing written.
    frames = ase.io.read(dataset_file, index=":")
    for f in frames:
        f.info.pop("polarizability")
    bare = tmp_path / "bare.extxyz"
    ase.io.write(bare, frames, format="extxyz")
    res = _cli("fit", str(bare), "--out", str(tmp_path / "bad.mts"))
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "polarizability" in res.stderr and not (tmp_path / "bad.mts").exists()
    res = _cli("predict", str(model_path), str(traj), "--out", str(tmp_path / "alpha.csv"))
    assert res.returncode == 2 and not (tmp_path / "alpha.csv").exists()
    res = _cli("fit", str(dataset_file), "--search-budget-s", "-5", "--out", str(tmp_path / "neg.mts"))
    assert res.returncode == 2 and "--search-budget-s" in res.stderr and not (tmp_path / "neg.mts").exists()
