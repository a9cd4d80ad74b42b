"""MD stage: settings, outputs, centre of mass, checkpoint/resume (including a real SIGKILL),
calculators (a few real CHGNet and SevenNet steps), imports, force check, bad input via the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.io import read, write

from ramanscreen.tasks.common import InputError
from ramanscreen.tasks.md import (
    MDSettings,
    check_time_step,
    force_check,
    get_calculator,
    import_md,
    run_md,
)
from ramanscreen.tasks.structures import build_structure
from ramanscreen.tasks.trajectory import Trajectory

EMT_SPEC = "ase:ase.calculators.emt:EMT"
REPO = Path(__file__).resolve().parents[1]


def cu(n: int = 2) -> Atoms:
    return bulk("Cu", "fcc", a=3.61, cubic=True).repeat(n)


def emt_settings(**kw) -> MDSettings:
    base = dict(temperature_k=600.0, dt_fs=2.0, steps=40, write_every=4, checkpoint_every=10,
                calculator=EMT_SPEC, seed=7)
    base.update(kw)
    return MDSettings(**base)


class CrashingEMT(EMT):
    """EMT that dies after ``n`` force calls, like a node failure in the middle of a run."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n
        self.ramanscreen_info = {"model": "EMT", "model_version": None}

    def calculate(self, *args, **kwargs):
        self.n -= 1
        if self.n < 0:
            raise KeyboardInterrupt("simulated crash")
        super().calculate(*args, **kwargs)


def frames(path: Path) -> list[Atoms]:
    return read(path, index=":")


# ------------------------------------------------------------------------------------------
def test_settings_validation_and_time_step_warning(tmp_path):
    for kw, field in [({"temperature_k": 0}, "temperature_k"), ({"temperature_k": -5}, "temperature_k"),
                      ({"dt_fs": 0}, "dt_fs"), ({"dt_fs": -1}, "dt_fs"), ({"steps": 0}, "steps"),
                      ({"ensemble": "nve"}, "ensemble"), ({"write_every": 0}, "write_every")]:
        with pytest.raises(InputError) as exc:
            MDSettings(**kw).validate()
        assert exc.value.field == field
    assert check_time_step(Atoms("LiLa"), 5.0) is not None  # 5 fs with Li: warn
    assert check_time_step(Atoms("LiLa"), 1.0) is None
    assert check_time_step(build_structure("AgI"), 10.0) is None  # the paper's AgI step
    with pytest.warns(UserWarning, match="large for Li"):
        run_md(Atoms("Li2", positions=[[0, 0, 0], [1.5, 1.5, 1.5]], cell=[3, 3, 3], pbc=True),
               MDSettings(dt_fs=8.0, steps=1, calculator="ase:ase.calculators.lj:LennardJones"), tmp_path)


def test_run_writes_frames_sidecar_and_reads_back(tmp_path):
    s = emt_settings(equil_steps=6)
    res = run_md(cu(), s, tmp_path)
    assert res.traj_path == tmp_path / "md.traj" and res.metadata_path == tmp_path / "md.json"
    assert not (tmp_path / "md.traj.part").exists() and not (tmp_path / "md.ckpt.npz").exists()
    fr = frames(res.traj_path)
    assert [f.info["md_step"] for f in fr] == list(range(0, 41, 4))
    assert [f.info["time_fs"] for f in fr] == [8.0 * k for k in range(11)]
    assert all(np.abs(f.get_velocities()).sum() > 0 for f in fr)
    meta = json.loads(res.metadata_path.read_text())
    for key in ("calculator", "model", "model_version", "temperature_k", "dt_fs", "steps", "seed",
                "wall_time_s", "alpha_stride", "write_every", "equil_steps"):
        assert key in meta
    assert meta["alpha_dt_fs"] == 2.0 * 4 * 10 and meta["n_frames"] == 11
    traj = Trajectory.from_file(res.traj_path)
    assert traj.dt_fs == 8.0 and traj.velocities_A_fs is not None and len(traj) == 11
    # a second call returns the finished run; other settings in the same place are refused
    again = run_md(cu(), s, tmp_path)
    assert again.metadata["finished_utc"] == meta["finished_utc"]
    with pytest.raises(InputError, match="finished run with other settings"):
        run_md(cu(), emt_settings(temperature_k=300), tmp_path)


@pytest.mark.parametrize("ensemble", ["nvt-nhc", "langevin"])
def test_centre_of_mass_stays_put(tmp_path, ensemble):
    atoms = cu(2)
    atoms.positions += np.random.default_rng(0).normal(0, 0.05, atoms.positions.shape)
    res = run_md(atoms, emt_settings(ensemble=ensemble, steps=150, write_every=10, temperature_k=800), tmp_path)
    fr = frames(res.traj_path)
    masses = fr[0].get_masses()
    com = np.array([(f.positions * masses[:, None]).sum(0) / masses.sum() for f in fr])
    p_tot = np.array([f.get_momenta().sum(0) for f in fr])
    assert np.abs(p_tot).max() < 1e-8
    assert np.abs(com - com[0]).max() < 1e-8
    # the atoms themselves did move
    assert np.abs(fr[-1].positions - fr[0].positions).max() > 0.05


@pytest.mark.parametrize("ensemble", ["nvt-nhc", "langevin", "npt"])
def test_crash_and_resume_reproduces_uninterrupted_run(tmp_path, ensemble):
    kw = dict(ensemble=ensemble, steps=40, equil_steps=6, pressure_gpa=2.0)
    ref = run_md(cu(), emt_settings(**kw), tmp_path / "ref")
    work = tmp_path / "crash"
    with pytest.raises(KeyboardInterrupt):
        # 1 probe call, then one per step: dies in step 35, after the checkpoint at step 30
        run_md(cu(), emt_settings(**kw), work, calculator=CrashingEMT(1 + 34))
    assert not (work / "md.traj").exists()  # nothing looks complete
    assert (work / "md.traj.part").exists() and (work / "md.ckpt.npz").exists()
    n_part = len(frames(work / "md.traj.part"))
    # production steps 0..28 (34 - 6 equilibration) every 4; frame 28 lies past the checkpoint (p = 24)
    assert n_part == 8
    res = run_md(cu(), emt_settings(**kw), work)
    assert res.metadata["n_resumes"] == 1
    a, b = frames(ref.traj_path), frames(res.traj_path)
    assert [f.info["md_step"] for f in b] == list(range(0, 41, 4))  # no gap, no duplicate
    np.testing.assert_allclose(np.array([f.positions for f in b]), np.array([f.positions for f in a]), atol=1e-10)
    np.testing.assert_allclose(np.array([f.get_momenta() for f in b]), np.array([f.get_momenta() for f in a]), atol=1e-10)
    if ensemble == "npt":
        assert not np.allclose(b[-1].cell.array, b[0].cell.array)


def _md_cli(args: list[str], **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "ramanscreen.flows", "md", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _checkpoint_step(ckpt: Path) -> int | None:
    try:
        with np.load(ckpt) as z:
            return int(json.loads(str(z["meta"]))["step"])
    except (OSError, ValueError, KeyError):  # not written yet
        return None


def _last_stored_step(part: Path) -> int | None:
    from ase.io.trajectory import Trajectory as AseTrajectory

    try:
        with AseTrajectory(str(part)) as tr:
            return int(tr[len(tr) - 1].info["md_step"]) if len(tr) else None
    except Exception:  # noqa: BLE001 - the writer is appending right now; look again
        return None


def test_sigkilled_cli_run_resumes_without_gap_or_duplicate(tmp_path):
    poscar = tmp_path / "POSCAR"
    write(poscar, cu(2), format="vasp")
    steps, every, equil = 1500, 10, 0
    args = [str(poscar), "--temperature-k", "500", "--dt-fs", "2", "--steps", str(steps), "--write-every", str(every),
            "--checkpoint-every", "250", "--calculator", EMT_SPEC, "--seed", "3", "--quiet", "--out-dir", str(tmp_path / "run")]
    out = tmp_path / "run"
    proc = _md_cli(args)
    ckpt = out / "md.ckpt.npz"
    deadline = time.time() + 120
    # kill as soon as the partial trajectory holds frames written after the last checkpoint: the
    # resumed run must drop exactly those (a real condition, not a guess at how fast MD runs)
    while proc.poll() is None and time.time() < deadline:
        step_ckpt, last = _checkpoint_step(ckpt), _last_stored_step(out / "md.traj.part")
        if step_ckpt is not None and last is not None and last - equil > step_ckpt:
            break
        time.sleep(0.01)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "md.traj").exists() and (out / "md.traj.part").exists()
    step_ckpt = _checkpoint_step(ckpt)
    assert step_ckpt is not None and 0 < step_ckpt < steps
    before = frames(out / "md.traj.part")
    kept = [f for f in before if f.info["md_step"] <= step_ckpt]
    assert len(before) > len(kept), "the kill came before any frame past the checkpoint"
    done = _md_cli(args)
    _, err = done.communicate(timeout=600)
    assert done.returncode == 0, err
    final = frames(out / "md.traj")
    assert [f.info["md_step"] for f in final] == list(range(0, steps + 1, every))  # no gap, no duplicate
    # the frames up to the checkpoint are the killed run's own; the rest continue from them
    np.testing.assert_array_equal(np.array([f.positions for f in final[: len(kept)]]),
                                  np.array([f.positions for f in kept]))
    jump = np.abs(final[len(kept)].positions - final[len(kept) - 1].positions).max()
    typical = np.abs(final[2].positions - final[1].positions).max()
    assert jump < 5 * typical
    meta = json.loads((out / "md.json").read_text())
    assert meta["n_resumes"] == 1 and meta["n_frames"] == steps // every + 1


def test_chgnet_few_real_steps(tmp_path):
    calls = []
    atoms = build_structure("Na3SbS4", n_atoms=16)
    res = run_md(atoms, MDSettings(temperature_k=300, dt_fs=2.0, steps=3, calculator="chgnet", num_threads=1),
                 tmp_path, progress=lambda *a: calls.append(a))
    m = res.metadata
    assert m["model"] == "CHGNet 0.3.0" and m["packages"]["chgnet"].startswith("0.4")
    assert calls[-1][:2] == (3, 3)
    fr = frames(res.traj_path)
    assert len(fr) == 4 and all(np.isfinite(f.info["epot_eV"]) for f in fr)
    # energy-and-forces only in NVT (no stress, no magmoms computed)
    assert get_calculator("chgnet").ramanscreen_info["task"] == "ef"


def test_sevenn_few_real_steps(tmp_path):
    atoms = build_structure("AgI", n_atoms=8)
    res = run_md(atoms, MDSettings(temperature_k=500, dt_fs=10.0, steps=2, calculator="sevenn", num_threads=1),
                 tmp_path)
    assert res.metadata["model"] == "SevenNet 7net-0" and res.metadata["n_frames"] == 3


def test_import_md_round_trip(tmp_path):
    run = run_md(cu(), emt_settings(steps=12, write_every=3), tmp_path / "run")
    src = frames(run.traj_path)
    for f in src:
        f.info = {}
    write(tmp_path / "user.xyz", src)  # extxyz keeps momenta, not time
    with pytest.raises(InputError):
        import_md(tmp_path / "user.xyz", tmp_path / "imp.traj")  # no dt_fs, no time_fs
    res = import_md(tmp_path / "user.xyz", tmp_path / "imp.traj", dt_fs=6.0)
    a, b = Trajectory.from_file(run.traj_path), Trajectory.from_file(res.traj_path)
    assert b.dt_fs == a.dt_fs == 6.0 and np.array_equal(b.md_step, np.arange(5))
    np.testing.assert_allclose(b.positions_A, a.positions_A, atol=1e-6)  # extxyz keeps 8 decimals
    np.testing.assert_allclose(b.velocities_A_fs, a.velocities_A_fs, atol=1e-6)
    meta = json.loads((tmp_path / "imp.json").read_text())
    assert meta["n_frames"] == 5 and meta["frame_dt_fs"] == 6.0 and meta["has_velocities"]
    assert 100 < meta["temperature_k"] < 2000
    write(tmp_path / "XDATCAR", src, format="vasp-xdatcar")
    res2 = import_md(tmp_path / "XDATCAR", tmp_path / "xd.traj", dt_fs=6.0, temperature_k=600)
    assert Trajectory.from_file(res2.traj_path).velocities_A_fs is None
    np.testing.assert_allclose(Trajectory.from_file(res2.traj_path).positions_A, a.positions_A, atol=1e-5)


def test_force_check_rmse_and_plot(tmp_path):
    ref = []
    rng = np.random.default_rng(0)
    for k in range(3):
        a = cu()
        a.rattle(0.05, seed=k)
        a.calc = EMT()
        f = a.get_forces()
        a.calc = None
        noise = rng.choice([-0.1, 0.1], size=f.shape)  # |error| exactly 0.1 eV/Å on every component
        a.arrays["forces"] = f + noise
        ref.append(a)
    write(tmp_path / "ref.xyz", ref)
    res = force_check(tmp_path / "ref.xyz", EMT_SPEC, plot_path=tmp_path / "parity.png")
    assert res.rmse_eV_A == pytest.approx(0.1, abs=1e-6) and res.n_frames == 3 and res.n_atoms_total == 96
    assert (tmp_path / "parity.png").stat().st_size > 1000
    write(tmp_path / "noforces.xyz", cu())
    with pytest.raises(InputError, match="no reference forces"):
        force_check(tmp_path / "noforces.xyz", EMT_SPEC)


# ------------------------------------------------------------------------------------------
# bad input through the CLI: one line, exit 2, no trajectory that looks complete
def _cli(argv, capsys) -> tuple[int, str]:
    from ramanscreen.flows.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    return exc.value.code, capsys.readouterr().err


@pytest.fixture
def cu_poscar(tmp_path) -> Path:
    p = tmp_path / "POSCAR"
    write(p, cu(), format="vasp")
    return p


BAD = {
    # science-layer errors name the field; the CLI shows the flag
    "temperature": (["--temperature-k", "0"], "--temperature-k: must be > 0 K, got 0"),
    "negative dt": (["--dt-fs", "-1"], "--dt-fs: must be > 0 fs, got -1"),
    "unknown ensemble": (["--ensemble", "nve"], "--ensemble: 'nve' is not one of nvt-nhc, langevin, npt"),
    "overlap": (["--structure", "overlap"], "below 0.5 Å"),
    "unreadable": (["--structure", "garbage"], "unreadable structure file"),
    "element not covered": (["--structure", "es", "--calculator", "chgnet"], "does not cover Es"),
    "calculator offline": (["--calculator", "chgnet", "--calc-kw", "model=9.9.9"], "could not load offline"),
    "ase calculator missing": (["--calculator", "ase:no_such_module:Calc"], "could not load offline"),
    "element not in EMT": (["--structure", "na3ps4"], "cannot evaluate this structure"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_one_line_exit_2_nothing_complete(case, tmp_path, cu_poscar, capsys):
    extra, message = BAD[case]
    structure = str(cu_poscar)
    extra = list(extra)
    if "--structure" in extra:
        kind = extra.pop(extra.index("--structure") + 1)
        extra.remove("--structure")
        if kind == "overlap":
            a = cu()
            a.positions[1] = a.positions[0] + [0.2, 0, 0]
            write(tmp_path / "bad.xyz", a)
            structure = str(tmp_path / "bad.xyz")
        elif kind == "garbage":
            (tmp_path / "bad.cif").write_text("this is not a crystal\n")
            structure = str(tmp_path / "bad.cif")
        elif kind == "es":
            write(tmp_path / "es.xyz", bulk("Es", "fcc", a=5.0, cubic=True))
            structure = str(tmp_path / "es.xyz")
        elif kind == "na3ps4":
            structure = "Na3PS4"
    opts = {"--temperature-k": "300", "--dt-fs": "2", "--steps": "3", "--calculator": EMT_SPEC}
    argv = ["md", structure, "--out-dir", str(tmp_path / "out"), "--quiet", "--n-atoms", "16"] if structure == "Na3PS4" \
        else ["md", structure, "--out-dir", str(tmp_path / "out"), "--quiet"]
    i = 0
    while i < len(extra):
        opts[extra[i]] = extra[i + 1]
        i += 2
    for k, v in opts.items():
        if k == "--calc-kw":
            continue
        argv += [k, v]
    if "--calc-kw" in opts:
        argv += ["--calc-kw", opts["--calc-kw"]]
    code, err = _cli(argv, capsys)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], err
    assert not (tmp_path / "out" / "md.traj").exists()
    assert not (tmp_path / "out" / "md.traj.part").exists()


@pytest.mark.slow
@pytest.mark.parametrize("calculator", ["chgnet", "sevenn"])
@pytest.mark.parametrize("name", ["AgI", "Na3SbS4", "Na3SbS4-W", "Na3PS4", "LLZO"])
def test_cli_md_every_builder_every_bundled_mlff(name, calculator, tmp_path, capsys):
    """The paper's cells at full size, two steps each, through the CLI."""
    code, err = None, ""
    from ramanscreen.flows.cli import main

    try:
        main(["md", name, "--temperature-k", "300", "--dt-fs", "2", "--steps", "2", "--calculator", calculator,
              "--num-threads", "2", "--quiet", "--out-dir", str(tmp_path)])
    except SystemExit as exc:
        code, err = exc.code, capsys.readouterr().err
    assert code in (None, 0), err
    meta = json.loads((tmp_path / "md.json").read_text())
    assert meta["n_frames"] == 3 and meta["calculator"] == calculator
    assert np.isfinite(meta["temperature_mean_k"])


def test_force_check_reads_outcars_and_import_reads_vasprun(tmp_path):
    from vasp_formats import write_outcar, write_vasprun  # VASP's own layouts (tests/vasp_formats.py)

    outcars, rms = [], []
    for k in range(2):
        a = cu()
        a.rattle(0.05, seed=10 + k)
        outcars.append(write_outcar(tmp_path / f"OUTCAR_{k}", a, np.eye(3) * 5.0))  # its forces are all zero
        a.calc = EMT()
        rms.append(np.mean(a.get_forces() ** 2))
    res = force_check(outcars, EMT_SPEC)
    assert res.n_frames == 2 and res.rmse_eV_A == pytest.approx(np.sqrt(np.mean(rms)), rel=1e-4)
    run = run_md(cu(), emt_settings(steps=8, write_every=4), tmp_path / "run")
    imp = import_md(write_vasprun(tmp_path / "vasprun.xml", frames(run.traj_path)), tmp_path / "v.traj", dt_fs=8.0)
    t = Trajectory.from_file(imp.traj_path)
    assert len(t) == 3 and t.dt_fs == 8.0
    diff = t.positions_A - Trajectory.from_file(run.traj_path).positions_A  # vasprun holds wrapped positions
    diff -= 7.22 * np.round(diff / 7.22)
    assert np.abs(diff).max() < 1e-4
