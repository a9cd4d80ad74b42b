"""Distilled SNAP potentials in real LAMMPS: descriptors against pair_style snap, fits, production
MD (NVT, NPT, trajectory format, a real SIGKILL and resume), on-the-fly refinement, validation
rows, the CLI; EMT as the fast teacher, and one real CHGNet distillation on a tiny cell."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.lj import LennardJones
from ase.io import read, write

from ramanscreen.tasks.common import InputError
from ramanscreen.tasks.md import MDSettings, run_md
from ramanscreen.tasks.mlff.data import TrainingSettings, label_frames, rattled
from ramanscreen.tasks.mlff.distil import DistilSettings, distil, load_distilled
from ramanscreen.tasks.mlff.engine import EV_A3_TO_BAR, LammpsSystem
from ramanscreen.tasks.mlff.lammps_md import LammpsMDSettings, run_lammps_md
from ramanscreen.tasks.mlff.refine import RefineSettings
from ramanscreen.tasks.mlff.snap import (
    FORCE_RMSE_LIMIT_EV_A,
    SnapPotential,
    SnapSettings,
    error_stats,
    fit_snap,
    method_label,
)
from ramanscreen.tasks.mlff.validate import compare_dynamics, validation_rows, write_validation_table
from ramanscreen.tasks.trajectory import Trajectory
from ramanscreen.tasks.transport import analyze_transport

EMT_SPEC = "ase:ase.calculators.emt:EMT"
REPO = Path(__file__).resolve().parents[1]
FAST_SNAP = SnapSettings(twojmax=4, cutoff_A=4.5, committee_size=4)


def cuau() -> Atoms:
    a = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    a[0].symbol = "Au"
    a[9].symbol = "Au"
    return a


@pytest.fixture(scope="module")
def emt_fit(tmp_path_factory):
    """A tiny real distillation: EMT teacher MD at 800 K on 32 atoms, rattled + strained frames."""
    work = tmp_path_factory.mktemp("emt_fit")
    ts = TrainingSettings(teacher=EMT_SPEC, temperature_k=800, dt_fs=2.0, md_steps=120, equil_steps=20,
                          sample_every=4, n_rattled=4, n_strained=4)
    res = distil(cuau(), DistilSettings(training=ts, snap=FAST_SNAP, refine=RefineSettings(max_rounds=2)), work)
    return res


class CountingEMT(EMT):
    """EMT that counts its evaluations."""

    calls = 0

    def calculate(self, *args, **kwargs):
        type(self).calls += 1
        super().calculate(*args, **kwargs)


def test_teacher_md_frames_are_labelled_once_with_the_runs_own_results(tmp_path):
    """The MD frames' labels are the forces the integrator used (equal to a fresh evaluation to
    1e-9), and making the set costs one teacher call per MD step plus one per extra frame only."""
    from ramanscreen.tasks.mlff.data import generate_training_data

    ts = TrainingSettings(teacher=EMT_SPEC, temperature_k=800, dt_fs=2.0, md_steps=40, equil_steps=10,
                          sample_every=4, n_rattled=3, n_strained=2)
    CountingEMT.calls = 0
    data = generate_training_data(cuau(), ts, tmp_path, calculator=CountingEMT())
    md_frames = [a for a in data.train + data.holdout if a.info["source"].startswith("md")]
    assert len(md_frames) == ts.n_md_frames
    # velocity Verlet / NHC: one force call per step, plus the initial one; extra frames one each
    assert CountingEMT.calls <= ts.equil_steps + ts.md_steps + 2 + ts.n_rattled + ts.n_strained
    for a in md_frames:
        b = a.copy()
        b.calc = EMT()
        assert abs(b.get_potential_energy() - a.get_potential_energy()) < 1e-9
        np.testing.assert_allclose(b.get_forces(), a.get_forces(), atol=1e-9)
    traj = read(data.teacher_traj, ":")
    assert all(f.calc is not None and "forces" in f.calc.results for f in traj)
    # an ordinary production run stores no labels (its file stays small)
    res = run_md(cuau(), MDSettings(temperature_k=300, steps=4, calculator=EMT_SPEC), tmp_path / "plain")
    assert all(f.calc is None for f in read(res.traj_path, ":"))


def test_rows_times_coefficients_reproduce_lammps_pair_snap(tmp_path):
    """Energies, forces and stresses predicted from the compute snap rows equal what a stock
    LAMMPS pair_style snap (+ ZBL) gives, for linear and quadratic SNAP, on a rotated triclinic cell;
    with the pair-spline term (pair_style table) to the table's interpolation error."""
    rng = np.random.default_rng(1)
    base = cuau()
    frames = []
    for k in range(8):
        a = base.copy()
        a.rattle(0.08, seed=k)
        eps = rng.uniform(-0.03, 0.03, (3, 3))
        a.set_cell(a.cell.array @ (np.eye(3) + 0.5 * (eps + eps.T)), scale_atoms=True)
        frames.append(a)
    frames = label_frames(frames, EMT())
    probe = frames[-1].copy()
    rot = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    rot *= np.sign(np.linalg.det(rot))
    probe.set_cell(probe.cell.array @ rot.T, scale_atoms=True)  # a cell LAMMPS must rotate
    for quadratic, pair_cutoff in ((False, 0.0), (True, 0.0), (False, 6.0), (True, 5.0)):
        pot = fit_snap(frames, SnapSettings(twojmax=4, cutoff_A=4.5, quadratic=quadratic,
                                            pair_cutoff_A=pair_cutoff)).potential
        assert (pot.pair_coefficients is not None) == bool(pair_cutoff)
        pot.write(tmp_path / f"q{int(quadratic)}p{pair_cutoff:g}")
        assert SnapPotential.load(pot.path).fingerprint() == pot.fingerprint()
        pred = pot.predict([probe])[0]
        with LammpsSystem(probe, pot.elements) as s:
            s.lmp.commands_list([*pot.pair_commands(), "thermo_style custom step pe pxx pyy pzz pyz pxz pxy",
                                 "run 0 post no"])
            e = s.lmp.get_thermo("pe")
            f = s.frame.to_ase(s.gather("f"))
            p = np.array([s.lmp.get_thermo(k) for k in ("pxx", "pyy", "pzz", "pyz", "pxz", "pxy")]) / EV_A3_TO_BAR
            p_mat = np.array([[p[0], p[5], p[4]], [p[5], p[1], p[3]], [p[4], p[3], p[2]]])
            sig = -(s.frame.rotation @ p_mat @ s.frame.rotation.T)
        # exact for the SNAP; the pair term runs from a 6000-point table (spacing 1e-3 Å)
        tol = 1e-6 if pair_cutoff else 1e-9
        assert pred.get_potential_energy() == pytest.approx(e, abs=10 * tol)
        np.testing.assert_allclose(pred.get_forces(), f, atol=tol)
        np.testing.assert_allclose(pred.get_stress(voigt=False), sig, atol=tol)
        # the fit itself is close to the teacher it was fitted to
        assert error_stats(pot, frames).force_rmse_eV_A < 0.1


def test_written_potential_runs_in_stock_lammps_via_its_include_file(emt_fit, tmp_path):
    pot = emt_fit.potential
    files = pot.files(pot.path.parent)
    assert all(files[k].is_file() for k in ("snapcoeff", "snapparam", "lmp", "json"))
    doc = json.loads(files["json"].read_text())
    assert doc["method"] == method_label("emt") == "snap-distilled-from-emt (not DFT)"
    assert doc["elements"] == ["Cu", "Au"] and set(doc["reference_energies_eV"]) == {"Cu", "Au"}
    assert doc["teacher"]["model"] == "ase.calculators.emt:EMT"
    assert doc["holdout_errors"]["force_rmse_eV_A"] < FORCE_RMSE_LIMIT_EV_A and doc["flagged"] is False
    assert doc["training"]["sources"]["rattled"] == 4 and doc["training"]["sources"]["strained"] == 4
    # a plain LAMMPS input: read the include file from its own directory
    a = cuau()
    with LammpsSystem(a, pot.elements) as s:
        cwd = os.getcwd()
        os.chdir(files["lmp"].parent)
        try:
            s.lmp.commands_list([f"include {files['lmp'].name}", "run 0 post no"])
        finally:
            os.chdir(cwd)
        e = s.lmp.get_thermo("pe")
    assert e == pytest.approx(pot.predict([a])[0].get_potential_energy(), abs=1e-8)
    assert SnapPotential.load(pot.path.parent).fingerprint() == pot.fingerprint()


def test_nvt_run_is_the_projects_trajectory_format(emt_fit, tmp_path):
    s = LammpsMDSettings(temperature_k=600, dt_fs=2.0, steps=1200, equil_steps=200, write_every=5,
                         checkpoint_every=300, seed=3)
    res = run_lammps_md(cuau(), emt_fit.potential, s, tmp_path / "run")
    assert not list((tmp_path / "run").glob("md.ckpt*")) and not (tmp_path / "run" / "md.traj.part").exists()
    traj = Trajectory.from_file(res.traj_path)
    assert len(traj) == 1200 // 5 + 1 and traj.dt_fs == 10.0
    assert traj.md_step.tolist() == list(range(0, 1201, 5))
    assert traj.velocities_A_fs is not None
    p_tot = np.einsum("i,fij->fj", traj.masses_amu, traj.velocities_A_fs)
    assert np.abs(p_tot).max() < 1e-9  # total momentum zeroed at the start, kept by Nosé–Hoover
    m = res.metadata
    assert 500 < m["temperature_mean_k"] < 700 and m["method"] == "snap-distilled-from-emt (not DFT)"
    # the sidecar has every key the ASE engine writes
    ase_run = run_md(cuau(), MDSettings(temperature_k=600, steps=4, calculator=EMT_SPEC), tmp_path / "ase")
    assert set(ase_run.metadata) <= set(m), set(ase_run.metadata) - set(m)
    fr = read(res.traj_path, ":")
    assert fr[3].info["md_step"] == 15 and fr[3].info["time_fs"] == 30.0 and np.isfinite(fr[3].info["epot_eV"])
    # the unwrapped positions continue smoothly (no jumps by a cell vector)
    assert np.abs(np.diff(traj.positions_A, axis=0)).max() < 1.0
    tr = analyze_transport(traj, species=["Au"], temperature_k=600, method="blocks")
    assert np.isfinite(tr.D_cm2_s["Au"]) and tr.vdos["Au"].size > 0
    # a second call returns the finished run; other settings in the same place are refused
    assert run_lammps_md(cuau(), emt_fit.potential, s, tmp_path / "run").metadata["finished_utc"] == m["finished_utc"]
    with pytest.raises(InputError, match="finished run with other settings"):
        run_lammps_md(cuau(), emt_fit.potential, LammpsMDSettings(temperature_k=300, steps=10), tmp_path / "run")


def test_npt_holds_the_pressure_and_compresses(emt_fit, tmp_path):
    vols, press = {}, {}
    for p_gpa in (0.0, 8.0):
        s = LammpsMDSettings(temperature_k=300, dt_fs=2.0, steps=2000, equil_steps=1000, ensemble="npt",
                             pressure_gpa=p_gpa, write_every=20, checkpoint_every=500, pdamp_fs=400.0)
        m = run_lammps_md(cuau(), emt_fit.potential, s, tmp_path / f"p{p_gpa:g}").metadata
        vols[p_gpa], press[p_gpa] = m["volume_mean_A3"], m["pressure_mean_gpa"]
        assert m["pressure_mean_gpa"] == pytest.approx(p_gpa, abs=1.0), m["pressure_mean_gpa"]
        traj = Trajectory.from_file(tmp_path / f"p{p_gpa:g}" / "md.traj")
        assert np.ptp(traj.volumes_A3) > 0  # the cell breathes
    assert vols[8.0] < 0.98 * vols[0.0]


def _mlff_cli(args: list[str], **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "ramanscreen.flows", "mlff", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_failed_lammps_run_says_failed_with_its_reason(emt_fit, tmp_path):
    """A run that blows up leaves md.state.json at "failed" with the reason, not "running"."""
    s = LammpsMDSettings(temperature_k=20000, dt_fs=40.0, steps=2000, write_every=10, checkpoint_every=200)
    with pytest.raises(InputError) as err:
        run_lammps_md(cuau(), emt_fit.potential, s, tmp_path / "run")
    state = json.loads((tmp_path / "run" / "md.state.json").read_text())
    assert state["status"] == "failed" and state["reason"] and state["reason"] in str(err.value)
    assert not (tmp_path / "run" / "md.traj").exists()


def test_sigkilled_lammps_run_resumes_without_gap_or_duplicate(emt_fit, tmp_path):
    poscar = tmp_path / "POSCAR"
    write(poscar, cuau(), format="vasp")
    steps, every = 4000, 10
    out = tmp_path / "run"
    args = ["md", str(poscar), "--potential", str(emt_fit.potential.path), "--temperature-k", "700", "--dt-fs", "2",
            "--steps", str(steps), "--write-every", str(every), "--checkpoint-every", "200", "--quiet",
            "--out-dir", str(out)]
    proc = _mlff_cli(args)
    ckpt = out / "md.ckpt.json"
    deadline = time.time() + 120
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)  # run on past the checkpoint
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "md.traj").exists() and (out / "md.traj.part").exists()
    step_ckpt = json.loads(ckpt.read_text())["step"]
    assert 0 < step_ckpt < steps
    before = read(out / "md.traj.part", ":")
    kept = [f for f in before if f.info["md_step"] <= step_ckpt]
    done = _mlff_cli(args)
    _, err = done.communicate(timeout=600)
    assert done.returncode == 0, err
    final = read(out / "md.traj", ":")
    assert [f.info["md_step"] for f in final] == list(range(0, steps + 1, every))  # no gap, no duplicate
    np.testing.assert_array_equal(np.array([f.positions for f in final[: len(kept)]]),
                                  np.array([f.positions for f in kept]))
    jump = np.abs(final[len(kept)].positions - final[len(kept) - 1].positions).max()
    typical = np.abs(final[2].positions - final[1].positions).max()
    assert jump < 5 * typical
    meta = json.loads((out / "md.json").read_text())
    assert meta["n_resumes"] == 1 and meta["n_frames"] == steps // every + 1


def test_refinement_rounds_are_recorded_and_bounded(emt_fit, tmp_path):
    # production far hotter than the training MD: the committee spread grows, the teacher is asked
    ref = emt_fit.refiner(tmp_path / "refine", RefineSettings(max_rounds=2, threshold_factor=1.0,
                                                              threshold_min_eV_A=1e-6))
    s = LammpsMDSettings(temperature_k=1400, dt_fs=2.0, steps=1200, write_every=20, checkpoint_every=200, seed=5)
    res = run_lammps_md(cuau(), emt_fit.potential, s, tmp_path / "run", refiner=ref)
    ext = res.metadata["extrapolation"]
    assert ext["n_rounds"] == 2 and ext["max_rounds"] == 2 and ext["n_above_threshold"] >= 2
    assert ext["n_checks"] == 6 and ext["threshold_eV_A"] == pytest.approx(ref.threshold)
    rec = json.loads((tmp_path / "refine" / "refine.json").read_text())
    assert [r["round"] for r in rec["rounds"]] == [1, 2]
    for r in rec["rounds"]:
        assert r["frames_added"] == 3 and r["measure_eV_A"] > r["threshold_eV_A"]
        assert r["holdout_force_rmse_after_eV_A"] > 0 and Path(r["potential"]).is_file() and r["wall_time_s"] > 0
    assert rec["rounds"][1]["n_train"] == rec["rounds"][0]["n_train"] + 3
    assert [p.get("round") for p in res.metadata["potentials"]] == [None, 1, 2]
    assert len(read(tmp_path / "refine" / "added.extxyz", ":")) == 6
    # a new refiner on the same record continues from the last round's potential
    again = emt_fit.refiner(tmp_path / "refine", RefineSettings(max_rounds=2))
    assert again.n_rounds == 2 and again.potential.path == Path(rec["rounds"][1]["potential"])


def test_validation_rows_and_table(emt_fit, tmp_path):
    res = load_distilled(emt_fit.workdir)
    dyn = compare_dynamics(cuau(), res.potential, res.data.teacher_traj, tmp_path / "val", species=["Au"])
    assert dyn["comparison_ps"] == pytest.approx(0.24)
    rows = validation_rows("CuAu", res.potential, res.data.holdout, species=["Au"], dynamics=dyn)
    (row,) = rows
    assert row["method"] == "snap-distilled-from-emt (not DFT)" and row["flagged"] is False
    assert 0 < row["force_rmse_eV_A"] < FORCE_RMSE_LIMIT_EV_A and row["n_holdout_frames"] == len(res.data.holdout)
    assert row["D_teacher_cm2_s"] > 0 and row["D_distilled_cm2_s"] > 0 and 0.5 < row["vdos_overlap"] <= 1.0
    write_validation_table(rows, tmp_path / "mlff_validation.parquet")
    t = pq.read_table(tmp_path / "mlff_validation.parquet")
    assert t.num_rows == 1 and t.schema.metadata[b"table"] == b"mlff_validation"
    assert t.column("force_rmse_eV_A")[0].as_py() == pytest.approx(row["force_rmse_eV_A"])
    # against frames of another teacher (Lennard-Jones) the same potential is far off: flagged
    lj = label_frames(rattled(res.data.holdout, 3, 0.02, np.random.default_rng(0)),
                      LennardJones(sigma=2.3, epsilon=0.4, rc=6.0))
    (bad,) = validation_rows("CuAu", res.potential, lj, species=["Au"])
    assert bad["force_rmse_eV_A"] > FORCE_RMSE_LIMIT_EV_A and bad["flagged"] is True and bad["D_ratio"] is None


def test_user_labelled_extxyz_as_training(emt_fit, tmp_path):
    frames = [*emt_fit.data.train, *emt_fit.data.holdout]
    write(tmp_path / "dft.xyz", frames)
    six = SnapSettings(twojmax=6, cutoff_A=4.5, committee_size=3)
    res = distil(None, DistilSettings(training=TrainingSettings(teacher="file", temperature_k=800), snap=six,
                                      training_file=str(tmp_path / "dft.xyz")), tmp_path / "fit")
    assert res.potential.info["teacher"]["name"] == "file" and res.potential.method.startswith("snap-distilled-from-file")
    assert res.potential.info["holdout_errors"]["force_rmse_eV_A"] < FORCE_RMSE_LIMIT_EV_A
    # model selection: twojmax 4 first, kept only if it meets 90 % of the limit
    tried = res.potential.info["model_selection"]["tried"]
    assert tried[0]["twojmax"] == 4
    four_ok = tried[0]["holdout_force_rmse_eV_A"] <= 0.9 * FORCE_RMSE_LIMIT_EV_A
    assert res.potential.settings.twojmax == (4 if four_ok else 6) and len(tried) == (1 if four_ok else 2)
    write(tmp_path / "bare.xyz", [cuau()])
    with pytest.raises(InputError, match="no energy or forces"):
        distil(None, DistilSettings(training=TrainingSettings(teacher="file"), training_file=str(tmp_path / "bare.xyz")),
               tmp_path / "fit2")


def test_cli_fit_validate_and_bad_input(tmp_path):
    fit_dir = tmp_path / "fit"
    done = _mlff_cli(["fit", "AgI", "--n-atoms", "8", "--temperature-k", "-5", "--out-dir", str(fit_dir)])
    _, err = done.communicate(timeout=120)
    assert done.returncode == 2 and err.count("\n") == 1 and "--temperature-k" in err and not fit_dir.exists()
    bad_pot = tmp_path / "pot.snap.json"
    bad_pot.write_text("{}")
    done = _mlff_cli(["md", "AgI", "--n-atoms", "8", "--potential", str(bad_pot), "--temperature-k", "500",
                      "--dt-fs", "10", "--steps", "10", "--out-dir", str(tmp_path / "md")])
    _, err = done.communicate(timeout=120)
    assert done.returncode == 2 and err.count("\n") == 1 and "potential" in err and not (tmp_path / "md").exists()
    poscar = tmp_path / "POSCAR"
    write(poscar, cuau(), format="vasp")
    done = _mlff_cli(["fit", str(poscar), "--teacher", EMT_SPEC, "--temperature-k", "700", "--md-steps", "60",
                      "--equil-steps", "10", "--sample-every", "3", "--n-rattled", "2", "--n-strained", "2",
                      "--twojmax", "4", "--cutoff-a", "4.5", "--quiet", "--out-dir", str(fit_dir)])
    out, err = done.communicate(timeout=300)
    assert done.returncode == 0, err
    assert "snap-distilled-from-emt (not DFT)" in out and "held-out force RMSE" in out
    done = _mlff_cli(["validate", str(fit_dir), "--species", "Au", "--out", str(tmp_path / "v.csv")])
    out, err = done.communicate(timeout=300)
    assert done.returncode == 0, err
    assert "mlff_validation" in out and (tmp_path / "v.csv").read_text().startswith('"material"')
    # the wrong element set for this potential: one line, exit 2, nothing written
    done = _mlff_cli(["md", "AgI", "--n-atoms", "8", "--potential", str(fit_dir), "--temperature-k", "500",
                      "--dt-fs", "10", "--steps", "10", "--out-dir", str(tmp_path / "md2")])
    _, err = done.communicate(timeout=120)
    assert done.returncode == 2 and "covers Cu, Au" in err and not (tmp_path / "md2").exists()


def test_chgnet_teacher_distils_a_tiny_cell(tmp_path):
    from ramanscreen.tasks.structures import build_structure

    atoms = build_structure("AgI", n_atoms=8)
    ts = TrainingSettings(teacher="chgnet", temperature_k=500, dt_fs=10.0, md_steps=24, equil_steps=4, sample_every=2,
                          n_rattled=2, n_strained=2, num_threads=1)
    res = distil(atoms, DistilSettings(training=ts, snap=SnapSettings(twojmax=4, committee_size=3)), tmp_path)
    pot = res.potential
    assert pot.method == "snap-distilled-from-chgnet (not DFT)" and pot.info["teacher"]["model"] == "CHGNet 0.3.0"
    assert pot.elements == ["Ag", "I"] and np.isfinite(pot.info["holdout_errors"]["force_rmse_eV_A"])
    assert all(np.isfinite(read(tmp_path / "train.extxyz", ":")[k].get_stress()).all() for k in range(3))
    md = run_lammps_md(atoms, pot, LammpsMDSettings(temperature_k=500, dt_fs=10.0, steps=50, write_every=5), tmp_path / "md")
    assert md.metadata["n_frames"] == 11 and md.metadata["model"] == "snap-distilled-from-chgnet (not DFT)"


def test_pair_spline_rows_are_the_gradients_of_its_energy():
    """The pair term's force and virial rows are −∂E/∂r and −σV of its energy rows (central
    differences), its splines vanish at the cutoff, and a pair never close enough gets none."""
    from ramanscreen.tasks.mlff.pair import PairBasis

    basis = PairBasis(["Na", "S"], {"Na-Na": 2.5, "Na-S": 2.3, "S-S": 5.6}, cutoff_A=6.0, knot_A=0.25)
    assert basis.splined == ["Na-Na", "Na-S"]  # S–S starts 0.4 Å below the cutoff: no spline
    assert all(" S-S " not in line for line in basis.pair_coeffs("t.table"))
    atoms = bulk("NaCl", "rocksalt", a=5.6).repeat(2)
    atoms.symbols[atoms.symbols == "Cl"] = "S"
    atoms.rattle(0.1, seed=1)
    coef = np.random.default_rng(0).normal(size=basis.n_columns) * 0.01
    rot = np.eye(3)
    energy, forces, virial = basis.rows(atoms, rot)

    def e_of(a):
        return basis.rows(a, rot)[0] @ coef

    h = 1e-5
    for ia, ax in ((0, 0), (3, 2), (7, 1)):
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[ia, ax] += h
        minus.positions[ia, ax] -= h
        assert (forces @ coef)[3 * ia + ax] == pytest.approx(-(e_of(plus) - e_of(minus)) / (2 * h), abs=1e-8)
    for (p, q), v in (((0, 0), 0), ((1, 2), 3), ((0, 1), 5)):
        eps = np.zeros((3, 3))
        eps[p, q] = eps[q, p] = 1.0 if p == q else 0.5

        def strained(sign, eps=eps):
            x = atoms.copy()
            x.set_cell(atoms.cell.array @ (np.eye(3) + sign * h * eps), scale_atoms=True)
            return e_of(x)

        assert (virial @ coef)[v] == pytest.approx(-(strained(1) - strained(-1)) / (2 * h), abs=1e-7)
    val, der = basis.basis("Na-S", np.array([5.9999, 6.0, 7.0]))
    assert np.abs(val).max() < 1e-9 and np.abs(der).max() < 1e-5
