"""Issue 11: bad inputs refused up front, in one line naming file, flag and fix, exit 2, and
nothing written where the outputs go. One table per command; each row is a case from the issue
(or a sibling in the same family) and the text its message must hold.

The CLI runs in this process (``ramanscreen.flows.cli.main``), as the console script runs it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from ramanscreen.flows.cli import main


def run(capsys, *args: str) -> tuple[int, str]:
    code = 0
    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def assert_refused(capsys, out_dir: Path, args: list[str], *needles: str) -> str:
    before = sorted(p.relative_to(out_dir) for p in out_dir.rglob("*"))
    code, err = run(capsys, *args)
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert sorted(p.relative_to(out_dir) for p in out_dir.rglob("*")) == before, "something was written"
    return lines[0]


# ------------------------------------------------------------------------------------ spectrum


@pytest.fixture
def alpha_txt(tmp_path) -> Path:
    from ramanscreen.tasks.spectra import write_alpha

    rng = np.random.default_rng(0)
    a = np.tile(np.eye(3), (64, 1, 1)) + 0.01 * rng.standard_normal((64, 3, 3))
    path = tmp_path / "in" / "a.txt"
    path.parent.mkdir()
    write_alpha(path, 0.5 * (a + a.transpose(0, 2, 1)), dt_fs=5.0)
    np.save(tmp_path / "in" / "arr.npy", a)
    shutil.copy(tmp_path / "in" / "arr.npy", tmp_path / "in" / "binary.txt")
    (tmp_path / "in" / "noise.dat").write_bytes(np.random.default_rng(1).bytes(3000))
    (tmp_path / "out").mkdir()
    return path


SPECTRUM_CASES = {
    # issue: "--stride 1e12 --sigma-cm1 0 writes a spectrum from 0 to 0" / "--stride 1e12 blames sigma_cm1"
    "stride leaves one frame, no smoothing": (["--stride", "1000000000000", "--sigma-cm1", "0"],
                                              ["a.txt: --stride: 1000000000000 leaves 1 of the file's 64 α samples",
                                               "at least 16", "use a stride of at most 4"]),
    "stride leaves one frame": (["--stride", "1000000000000"], ["--stride:", "a spectrum needs at least 16"]),
    "stride leaves too few frames": (["--stride", "5"], ["--stride: 5 leaves 13 of the file's 64"]),
    "stride zero": (["--stride", "0"], ["--stride: must be an integer >= 1"]),
    "negative omega_c": (["--omega-c-cm1", "-1"], ["--omega-c-cm1: must be > 0"]),
    "negative sigma": (["--sigma-cm1", "-1"], ["--sigma-cm1:"]),
    "window order": (["--omega-min-cm1", "60"], ["--omega-c-cm1: omega_c_cm1 = 50 must exceed omega_min_cm1 = 60"]),
    # range checks: every window edge inside (0, Nyquist) — α every 5 fs reaches 3336 cm⁻¹
    "low window beyond Nyquist": (["--omega-c-cm1", "4000", "--host-low-cm1", "4000", "--host-high-cm1", "5000"],
                                  ["a.txt: --omega-c-cm1: 4000 cm⁻¹ is not below the top frequency 3336 cm⁻¹ of α "
                                   "every 5 fs", "fix: a window below 3336 cm⁻¹"]),
    "host window beyond Nyquist": (["--host-low-cm1", "3400", "--host-high-cm1", "5000"],
                                   ["--host-low-cm1/--host-high-cm1: 3400 cm⁻¹ is not below the top frequency"]),
    "window above max_freq": (["--max-freq-cm1", "40"], ["--omega-c-cm1: 50 cm⁻¹ is not below the top frequency 40"]),
}


@pytest.mark.parametrize("case", SPECTRUM_CASES)
def test_spectrum_refuses(capsys, alpha_txt, case) -> None:
    extra, needles = SPECTRUM_CASES[case]
    out = alpha_txt.parent.parent / "out"
    assert_refused(capsys, out, ["spectrum", alpha_txt, "--out", out / "s.parquet", "--plot", *extra], *needles)


@pytest.mark.parametrize(("name", "needles"), [
    ("binary.txt", ["binary.txt: --input-format: is a binary file (a NumPy .npy array)", "rename it to .npy"]),
    ("noise.dat", ["noise.dat: --input-format: is a binary file (not text), not a 6-column α text file"]),
])
def test_spectrum_binary_file(capsys, alpha_txt, name, needles) -> None:
    out = alpha_txt.parent.parent / "out"
    assert_refused(capsys, out, ["spectrum", alpha_txt.parent / name, "--dt-fs", "5", "--out", out / "s.csv"],
                   *needles)


def test_spectrum_publishes_table_and_png_together(capsys, alpha_txt) -> None:
    out = alpha_txt.parent.parent / "out"
    (out / "s.parquet").mkdir()  # the table's path is blocked: the PNG must not appear either
    code, err = run(capsys, "spectrum", alpha_txt, "--out", out / "s.parquet", "--plot")
    errors = [ln for ln in err.splitlines() if ln.startswith("error: ")]  # (the descriptors warning aside)
    assert code == 2 and len(errors) == 1, err
    assert "--out: " in errors[0] and "s.parquet is a directory, so the output cannot be written there" in errors[0]
    assert sorted(p.name for p in out.iterdir()) == ["s.parquet"]
    (out / "s.parquet").rmdir()
    code, err = run(capsys, "spectrum", alpha_txt, "--out", out / "s.parquet", "--plot")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["s.parquet", "s.png"]


# ------------------------------------------------------------------------------------ transport

DUMP = """ITEM: TIMESTEP
{step}
ITEM: NUMBER OF ATOMS
3
ITEM: BOX BOUNDS pp pp pp
0.0 10.0
0.0 11.0
0.0 12.0
ITEM: ATOMS id type x y z
1 1 {x:.4f} 2.0 3.0
2 2 5.0 5.0 5.0
3 3 7.0 8.0 9.0
"""


@pytest.fixture
def dump(tmp_path) -> Path:
    path = tmp_path / "in" / "run.lammpstrj"
    path.parent.mkdir()
    path.write_text("".join(DUMP.format(step=k, x=1.0 + 0.01 * k) for k in range(20)))
    (tmp_path / "out").mkdir()
    return path


TRANSPORT_CASES = {
    # issue: "a short --type-map gives `list index out of range`"
    "short type map": (["--type-map", "Na", "--type-map", "P"],
                       ["run.lammpstrj: --type-map: names 2 elements (Na P) but the dump has atom types up to 3",
                        "give one element per type, 3 in all"]),
    "type map not elements": (["--type-map", "Na", "--type-map", "P", "--type-map", "Xx"],
                              ["--type-map: 'Xx' is not an element symbol"]),
    "stride zero": (["--type-map", "Na", "--type-map", "P", "--type-map", "S", "--stride", "0"], ["--stride:"]),
}


@pytest.mark.parametrize("case", TRANSPORT_CASES)
def test_transport_refuses(capsys, dump, case) -> None:
    extra, needles = TRANSPORT_CASES[case]
    out = dump.parent.parent / "out"
    assert_refused(capsys, out, ["transport", dump, "--species", "Na", "--temperature-k", "600", "--dt-fs", "1",
                                 "--input-format", "lammps-dump-text", "--out-dir", out, *extra], *needles)


def test_transport_blocked_json_leaves_no_parquet(capsys, tmp_path) -> None:
    """issue: "transport, when its JSON path is blocked, leaves the msd and vdos Parquet files"."""
    from ase import Atoms

    from ramanscreen.tasks.trajectory import Trajectory

    rng = np.random.default_rng(0)
    n, frames = 8, []
    pos = rng.uniform(0, 10, (n, 3))
    for _ in range(200):
        pos = pos + 0.05 * rng.standard_normal((n, 3))
        frames.append(Atoms(["Na"] * 4 + ["Cl"] * 4, positions=pos.copy(), cell=[10, 10, 10], pbc=True))
    traj = tmp_path / "in" / "nacl.traj"
    traj.parent.mkdir()
    Trajectory.from_atoms(frames, dt_fs=10.0).write(traj)
    out = tmp_path / "out"
    (out / "nacl.transport.json").mkdir(parents=True)  # something in the way
    assert_refused(capsys, out, ["transport", traj, "--species", "Na", "--temperature-k", "600", "--dt-fs", "10",
                                 "--out-dir", out],
                   "nacl.transport.json is a directory, so the output cannot be written there", "--out-dir")
    assert sorted(p.name for p in out.iterdir()) == ["nacl.transport.json"]


# ------------------------------------------------------------------------------------ reference


@pytest.mark.system("cp2k-data")
def test_reference_cp2k_without_executable_writes_nothing(capsys, tmp_path, monkeypatch) -> None:
    """issue: "reference -b cp2k without the executable leaves polar.inp"."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("RAMANSCREEN_SCRATCH_DIR", str(scratch))
    monkeypatch.setenv("RAMANSCREEN_CP2K_EXE", "no-such-cp2k.psmp")
    monkeypatch.setenv("RAMANSCREEN_REFERENCE_LAUNCHER", "")
    monkeypatch.setenv("RAMANSCREEN_MPIRUN", "")
    line = assert_refused(capsys, tmp_path, ["reference", "AgI", "--backend", "cp2k", "--select", "1",
                                             "--out", tmp_path / "o.extxyz"], "no-such-cp2k.psmp")
    assert "cp2k_exe" in line
    assert list(scratch.iterdir()) == []
    assert_refused(capsys, tmp_path, ["reference", "AgI", "--backend", "cp2k", "--select", "1",
                                      "--workdir", work, "--out", tmp_path / "o.extxyz"], "no-such-cp2k.psmp")
    assert list(work.iterdir()) == []


# ------------------------------------------------------------------------------------ md: trusted calculators


MD_CASES = {
    # issue: "--calculator ase:os:system with --calc-kw command=… ran the shell command"
    "os.system with a command": (["--calculator", "ase:os:system", "--calc-kw", "command=touch {canary}"],
                                 ["--calc-kw: calculator keyword 'command' would name a program to run"]),
    "os.system as a calculator": (["--calculator", "ase:os:system", "--calc-kw", "x=1"],
                                  ["--calculator: 'ase:os:system' does not name an ASE calculator",
                                   "not a subclass of ase.calculators.calculator.BaseCalculator"]),
    "subprocess as a calculator": (["--calculator", "ase:subprocess:run"], ["does not name an ASE calculator"]),
    "a program through --calc-kw": (["--calculator", "ase:ase.calculators.lammpsrun:LAMMPS",
                                     "--calc-kw", "command=touch {canary}"],
                                    ["--calc-kw: calculator keyword 'command' would name a program to run"]),
    "not a module path": (["--calculator", "ase:os;rm:system"], ["--calculator: bad calculator spec"]),
    # issue: "md --dt-fs 1000": refused up front (the state-file side is test_md's)
    "negative dt": (["--calculator", "ase:ase.calculators.emt:EMT", "--dt-fs", "-1"], ["--dt-fs:"]),
}


@pytest.mark.parametrize("case", MD_CASES)
def test_md_refuses(capsys, tmp_path, case) -> None:
    extra, needles = MD_CASES[case]
    canary = tmp_path / "canary"
    out = tmp_path / "out"
    out.mkdir()
    args = [a.format(canary=canary) for a in extra]
    assert_refused(capsys, out, ["md", "AgI", "--steps", "4", "--temperature-k", "300", "--dt-fs", "2", "--out-dir", out, *args], *needles)
    assert not canary.exists(), "the shell command ran"


@pytest.mark.parametrize(("calculator", "options", "message"), [
    ('"ase:os:system"', "", "mlff.calculator: 'ase:os:system' does not name an ASE calculator"),
    ('"ase:ase.calculators.lammpsrun:LAMMPS"', 'options = { command = "touch /tmp/x" }',
     "mlff.options: calculator keyword 'command' would name a program to run"),
])
def test_campaign_mlff_is_a_trusted_calculator(capsys, tmp_path, calculator, options, message) -> None:
    """The same path through ``[mlff]`` of a campaign file: refused by validate, before anything runs."""
    toml = tmp_path / "c.toml"
    toml.write_text(f'name = "c"\nresults_root = "{tmp_path / "results"}"\n[mlff]\ncalculator = {calculator}\n{options}\n'
                    '[[materials]]\nname = "AgI"\nstructure = "AgI"\nmobile = ["Ag"]\ntemperature_k = 600\n')
    line = assert_refused(capsys, tmp_path, ["validate", toml], message)
    assert str(toml) in line


def test_campaign_refuses_a_structure_file_that_lost_atoms(capsys, tmp_path) -> None:
    """The same CIF in a campaign: `validate` (and so `screen`) refuses it naming the material's
    structure key; `allow_charged = true` in that material lets it through."""
    import ase.io
    from ase import Atoms

    lost = Atoms("Na6P2S4", cell=[8, 8, 8], pbc=True, scaled_positions=np.random.default_rng(0).random((12, 3)))
    ase.io.write(tmp_path / "Na3PS4.cif", lost)
    body = (f'name = "c"\nresults_root = "{tmp_path / "results"}"\n'
            '[spectrum]\nomega_min_cm1 = 40.0\nomega_c_cm1 = 100.0\nhost_window_cm1 = [100.0, 1000.0]\n'
            '[[materials]]\nname = "nps"\nstructure = "Na3PS4.cif"\nmobile = ["Na"]\ntemperature_k = 600\n')
    toml = tmp_path / "c.toml"
    toml.write_text(body)
    line = assert_refused(capsys, tmp_path / "results", ["validate", toml],
                          "materials[0].structure: Na3PS4.cif: Na6P2S4 is not charge balanced (formal charge +8",
                          "set allow_charged = true in this material")
    assert str(toml) in line
    toml.write_text(body + "allow_charged = true\n")
    assert main(["validate", str(toml)]) in (None, 0)  # typer returns None on success
    assert "ok:" in capsys.readouterr().out


def test_deployment_parameters_cannot_name_new_code(tmp_path) -> None:
    """A deployment's campaign_file (editable in the UI) must be one of the repository's reviewed files."""
    from ramanscreen.flows.campaign import deployed_campaign_file, scheduled_campaign
    from ramanscreen.tasks.common import InputError

    repo = Path(__file__).resolve().parents[1]
    assert deployed_campaign_file("deployments/campaigns/quick.toml", repo=repo) == \
        repo / "deployments" / "campaigns" / "quick.toml"
    mine = tmp_path / "mine.toml"
    mine.write_text('name = "x"\n[mlff]\ncalculator = "ase:ase.calculators.emt:EMT"\n')
    for bad in (str(mine), "deployments/campaigns/../../pyproject.toml", "deployments/prefect.yaml"):
        with pytest.raises(InputError, match="campaign_file: a deployment runs only the campaign files") as info:
            deployed_campaign_file(bad, repo=repo)
        assert "deployments/campaigns/quick.toml" in str(info.value)
    with pytest.raises(InputError, match="campaign_file"):
        scheduled_campaign.fn(str(mine))


def test_entry_point_calculators_join_the_registry(tmp_path, monkeypatch) -> None:
    """A package declares a calculator under the ``ramanscreen.calculators`` entry-point group."""
    import sys

    from ramanscreen.tasks.md import get_calculator

    pkg = tmp_path / "site"
    (pkg / "mycalc_pkg").mkdir(parents=True)
    (pkg / "mycalc_pkg" / "__init__.py").write_text(
        "from ase.calculators.emt import EMT\n\ndef factory(properties=(), **kw):\n    return EMT(**kw)\n")
    dist = pkg / "mycalc_pkg-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mycalc-pkg\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[ramanscreen.calculators]\nmyemt = mycalc_pkg:factory\n")
    monkeypatch.syspath_prepend(str(pkg))
    calc = get_calculator("myemt")
    assert type(calc).__name__ == "EMT"
    assert "mycalc_pkg" in sys.modules


# ------------------------------------------------------------------------------------ physics sanity


def test_md_refuses_a_structure_that_lost_atoms(capsys, tmp_path) -> None:
    """issue: "A CIF missing its last atom rows (Na6P2S4, formal charge +8) runs MD without a word"."""
    import warnings

    import ase.io
    from ase import Atoms

    from ramanscreen.tasks.structures import check_charge_balance

    lost = Atoms("Na6P2S4", cell=[8, 8, 8], pbc=True, scaled_positions=np.random.default_rng(0).random((12, 3)))
    cif = tmp_path / "Na3PS4.cif"
    ase.io.write(cif, lost)
    out = tmp_path / "out"
    out.mkdir()
    assert_refused(capsys, out, ["md", cif, "--temperature-k", "300", "--dt-fs", "2", "--steps", "4",
                                 "--calculator", "ase:ase.calculators.emt:EMT", "--out-dir", out],
                   "Na3PS4.cif: STRUCTURE: Na6P2S4 is not charge balanced (formal charge +8 with Na+1 P+5 S-2",
                   "--allow-charged")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_charge_balance(lost, file=cif, allow_charged=True)
    assert any("not charge balanced" in str(w.message) for w in caught)
    from ase.build import bulk

    check_charge_balance(bulk("Cu", cubic=True))  # a metal: nothing to balance
    check_charge_balance(Atoms("Li3P", cell=[5, 5, 5], pbc=True))  # P-3, not the table's +5


@pytest.fixture
def tiny_dataset(tmp_path) -> Path:
    import ase.io

    from ramanscreen.tasks.structures import build_structure

    frames = []
    for k in range(3):
        a = build_structure("AgI", n_atoms=16, seed=k)
        a.info["polarizability"] = (np.eye(3) * (10.0 + k)).ravel().tolist()
        a.info["alpha_method"] = "embedded-dipole (test)"
        frames.append(a)
    path = tmp_path / "in" / "ref.extxyz"
    path.parent.mkdir()
    ase.io.write(path, frames, format="extxyz")
    (tmp_path / "out").mkdir()
    return path


@pytest.mark.parametrize(("extra", "needles"), [
    # issue: "alpha fit on 3 frames reports R² from one test frame"
    ([], ["ref.extxyz: --n-train: 3 reference frames; a model needs at least 4"]),
    (["--n-train", "2"], ["--n-train: 3 reference frames; a model needs at least 4"]),
])
def test_alpha_fit_refuses_too_few_frames(capsys, tiny_dataset, extra, needles) -> None:
    out = tiny_dataset.parent.parent / "out"
    assert_refused(capsys, out, ["alpha", "fit", tiny_dataset, "--committee", "0", "--out", out / "m.mts", *extra],
                   *needles)


def test_alpha_fit_publishes_model_sidecar_and_parity_together(capsys, tmp_path) -> None:
    """The model, its JSON sidecar and the parity PNG, or none: a directory where the PNG goes
    leaves no model behind; without it all three appear, the sidecar naming the weights file."""
    import json

    import ase.io

    from ramanscreen.tasks.structures import build_structure

    frames = []
    for k in range(8):
        a = build_structure("AgI", n_atoms=16, seed=k)
        a.info["polarizability"] = (np.eye(3) * (10.0 + 0.1 * k)).ravel().tolist()
        a.info["alpha_method"] = "embedded-dipole (test)"
        frames.append(a)
    data = tmp_path / "ref.extxyz"
    ase.io.write(data, frames, format="extxyz")
    out = tmp_path / "out"
    (out / "m.parity.png").mkdir(parents=True)
    args = ["alpha", "fit", data, "--committee", "0", "--n-train", "4", "--out", out / "m.mts"]
    assert_refused(capsys, out, args, "m.parity.png is a directory, so the output cannot be written there")
    (out / "m.parity.png").rmdir()
    code, err = run(capsys, *args)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["m.json", "m.mts", "m.parity.png"]
    assert json.loads((out / "m.json").read_text())["weights_file"] == "m.mts"


def test_alpha_fit_split_minimum_is_one_setting() -> None:
    from ramanscreen.tasks.common import InputError
    from ramanscreen.tasks.polarizability import ModelSettings

    s = ModelSettings()
    s.check_split(8, 4)  # 4 + 4
    s.check_split(5, 5)  # no test set: no metrics, allowed
    with pytest.raises(InputError, match="5 training frames of 8 leave 3 test frames; test R² needs at least 4"):
        s.check_split(8, 5)


# ------------------------------------------------------------------------------------ campaigns


def test_screen_with_an_unwritable_results_root(capsys, tmp_path, monkeypatch) -> None:
    """issue: "A read-only results_root gives a bare PermissionError with no field and no fix".
    /sys refuses new directories even to root, as a read-only mount would."""
    repo = Path(__file__).resolve().parents[1]
    toml = tmp_path / "c.toml"
    text = (repo / "deployments" / "campaigns" / "quick.toml").read_text()
    toml.write_text(text.replace('results_root = "results"', 'results_root = "/sys/ramanscreen-results"', 1))
    assert "/sys/ramanscreen-results" in toml.read_text()
    monkeypatch.delenv("RAMANSCREEN_RESULTS_ROOT", raising=False)
    line = assert_refused(capsys, tmp_path, ["screen", toml],
                          "--results-root: cannot write the results root /sys/ramanscreen-results",
                          "fix: choose a writable results root")
    assert line.startswith(f"error: {toml}: ")
    assert not Path("/sys/ramanscreen-results").exists()


def test_md_that_blows_up_says_failed_in_its_state_file(capsys, tmp_path) -> None:
    """issue: "md --dt-fs 1000 blows up and leaves a state file that still says running"."""
    import json

    import ase.io
    from ase.build import bulk

    cu = tmp_path / "cu.extxyz"
    ase.io.write(cu, bulk("Cu", cubic=True).repeat(2))
    out = tmp_path / "run"
    code, err = run(capsys, "md", cu, "--temperature-k", "300", "--dt-fs", "1000", "--steps", "40", "--equil-steps",
                    "0", "--calculator", "ase:ase.calculators.emt:EMT", "--out-dir", out, "--quiet")
    assert code == 2 and "error: --dt-fs: MD blew up at step 1" in err, err
    state = json.loads((out / "md.state.json").read_text())
    assert state["status"] == "failed"
    assert "MD blew up at step 1 (non-finite temperature)" in state["reason"]
    assert not (out / "md.traj").exists() and not (out / "md.json").exists()


@pytest.mark.system("cp2k-data")
def test_reference_scratch_is_per_run_and_removed_on_failure(capsys, tmp_path, monkeypatch) -> None:
    """issue: "... leaves polar.inp, also in a shared scratch folder": a failing code run (here
    /bin/false as the CP2K executable) leaves no scratch behind, unless --keep-work."""
    scratch = tmp_path / "scratch"
    monkeypatch.setenv("RAMANSCREEN_SCRATCH_DIR", str(scratch))
    monkeypatch.setenv("RAMANSCREEN_CP2K_EXE", "/bin/false")
    monkeypatch.setenv("RAMANSCREEN_REFERENCE_LAUNCHER", "")
    monkeypatch.setenv("RAMANSCREEN_MPIRUN", "")
    args = ["reference", "AgI", "--backend", "cp2k", "--select", "1", "--out", tmp_path / "o.extxyz"]
    code, err = run(capsys, *args)
    assert code != 0 and "exited with code 1" in err, err
    assert list(scratch.iterdir()) == [] and not (tmp_path / "o.extxyz").exists()
    code, err = run(capsys, *args, "--keep-work")
    assert code != 0
    (kept,) = scratch.iterdir()
    assert kept.name.startswith("reference-cp2k-") and (kept / "frame_00000" / "polar.inp").is_file()
    assert f"kept the scratch folder {kept}" in err
