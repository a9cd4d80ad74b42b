"""Reference α (fast tests): parsers on real layouts, the ε↔α convention, the embedded
Thole/Ewald dipole model (Clausius–Mossotti limit, equivariance, disorder), snapshot
selection, datasets, launcher command lines, VASP import and the CLI's one-line errors.

Real CP2K / QE runs live in tests/test_reference_dft.py (slow).
"""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, sort
from ase.units import Bohr
from scipy.spatial.transform import Rotation
from vasp_formats import outcar_text, write_outcar, write_vasprun, write_xdatcar

from ramanscreen.tasks.common import InputError
from ramanscreen.tasks.reference import (
    DIPOLE_MODEL_METHOD,
    Cp2kBackend,
    DipoleModel,
    QEBackend,
    ReferenceConvergenceError,
    ReferenceResult,
    alpha_from_epsilon,
    epsilon_from_alpha,
    get_backend,
    parse_cp2k_polarizability,
    parse_qe_dielectric,
    read_alpha_dataset,
    select_snapshots,
    write_alpha_dataset,
)
from ramanscreen.tasks.reference.vasp import (
    DIELECTRIC_BLOCKS,
    VASP_METHOD,
    import_vasp,
    parse_outcar_dielectric_blocks,
    parse_outcar_epsilon,
    parse_outcar_epsilon_block,
    read_outcar,
)

# ---------------------------------------------------------------------------------------
# Real output excerpts (CP2K 2023.1 on 8-atom Si, QE 6.7 ph.x on 2-atom Si, measured here)
# ---------------------------------------------------------------------------------------
CP2K_TAIL = """
  Total energy ground state:                                 -31.11614962799171

 POLAR| Starting polarizability calculation
 POLAR| Initialization of the polar environment
 POLAR| Self consistent optimization of the response wavefunctions


 POLAR| Response to the perturbation operator Berry phase_x

  Iteration    Method   Restart      Stepsize      Convergence         Time
  ------------------------------------------------------------------------------
        1        PCG       F         0.00E+00      0.6175716757        0.06
       11        PCG       F         0.11E+01      0.0000000018        4.70
  The linear solver converged in   11 iterations.

 POLAR| Response to the perturbation operator Berry phase_y
       11        PCG       F         0.12E+01      0.0000000019        2.91
  The linear solver converged in   11 iterations.

 POLAR| Response to the perturbation operator Berry phase_z
       11        PCG       F         0.12E+01      0.0000000019        3.32
  The linear solver converged in   11 iterations.
 POLAR| Polarizability tensor [a.u.]
 POLAR| xx,yy,zz          466.695687619281   466.695691313923   466.695825376449
 POLAR| xy,xz,yz           -0.000008014926     0.000006943413     0.000004113476
 POLAR| yx,zx,zy           -0.000007820776     0.000006652425     0.000003707925

 POLAR| Polarizability tensor [ang^3]
 POLAR| xx,yy,zz           69.157164908321    69.157165455811    69.157185321827
 POLAR| xy,xz,yz           -0.000001187689     0.000001028908     0.000000609554
 POLAR| yx,zx,zy           -0.000001158919     0.000000985788     0.000000549458

 ===============================================================================
                        ENDED LINRES CALCULATION
 ===============================================================================
"""

QE_PH_TAIL = """
     End of electric fields calculation

          Dielectric constant in cartesian axis 

          (      13.055491638      -0.000000000      -0.000000000 )
          (      -0.000000000      13.055491638      -0.000000000 )
          (      -0.000000000      -0.000000000      13.055491638 )

          Effective charges (d Force / dE) in cartesian axis

           atom      1   Si 
      Ex  (        0.00004        0.00000       -0.00000 )
"""


def disordered(atoms: Atoms, sigma_A: float, seed: int) -> Atoms:
    a = atoms.copy()
    a.positions += np.random.default_rng(seed).normal(0.0, sigma_A, a.positions.shape)
    return a


@pytest.fixture(scope="module")
def agi32() -> Atoms:
    return disordered(sort(bulk("AgI", "zincblende", a=6.50, cubic=True).repeat((2, 2, 1))), 0.15, 1)


# ---------------------------------------------------------------------------------------
# Parsers
# ---------------------------------------------------------------------------------------
def test_cp2k_block_is_not_matrix_rows() -> None:
    text = """
 POLAR| Polarizability tensor [ang^3]
 POLAR| xx,yy,zz           11.0    22.0    33.0
 POLAR| xy,xz,yz            1.2     1.3     2.3
 POLAR| yx,zx,zy            2.1     3.1     3.2
"""
    alpha = parse_cp2k_polarizability(text)
    assert alpha[0, 1] == 1.2 and alpha[1, 0] == 2.1
    assert alpha[0, 2] == 1.3 and alpha[2, 0] == 3.1
    assert alpha[1, 2] == 2.3 and alpha[2, 1] == 3.2
    assert alpha.diagonal().tolist() == [11.0, 22.0, 33.0]


def test_cp2k_real_output_ang3_block_and_units() -> None:
    older = CP2K_TAIL.replace("69.157164908321", "99.0")  # an earlier run in the same file
    alpha = parse_cp2k_polarizability(older + CP2K_TAIL)
    assert alpha[0, 0] == pytest.approx(69.157164908321, abs=1e-12)  # the last block, in Å^3
    assert alpha[1, 0] == pytest.approx(-0.000001158919)
    # the a.u. block and the Å^3 block are the same tensor: 1 a.u. = Bohr^3
    assert 466.695687619281 * Bohr**3 == pytest.approx(alpha[0, 0], rel=1e-7)
    Cp2kBackend.check_converged(CP2K_TAIL)  # three converged field directions: no error


def test_cp2k_missing_block_and_non_convergence() -> None:
    with pytest.raises(InputError, match="POLAR"):
        parse_cp2k_polarizability(CP2K_TAIL.split(" POLAR| Polarizability tensor [ang^3]")[0], file="x.out")
    with pytest.raises(ReferenceConvergenceError, match="SCF"):
        Cp2kBackend.check_converged("  outer SCF loop FAILED to converge after  10 iterations\n")
    one_missing = CP2K_TAIL.replace("  The linear solver converged in   11 iterations.\n", "", 1)
    with pytest.raises(ReferenceConvergenceError, match="linear response"):
        Cp2kBackend.check_converged(one_missing)


def test_qe_dielectric_block() -> None:
    first = QE_PH_TAIL.replace("13.055491638", "99.0")
    eps = parse_qe_dielectric(first + QE_PH_TAIL)
    assert np.allclose(eps, 13.055491638 * np.eye(3))
    with pytest.raises(InputError, match="Dielectric constant"):
        parse_qe_dielectric("     End of electric fields calculation\n")


def test_outcar_block_last_occurrence_and_distractors(tmp_path: Path) -> None:
    atoms = sort(bulk("AgI", "zincblende", a=6.5, cubic=True))
    eps = np.array([[5.1, 0.02, -0.01], [0.02, 5.2, 0.03], [-0.01, 0.03, 5.3]])
    text = outcar_text(atoms, eps, earlier_epsilon=2 * eps)
    assert np.allclose(parse_outcar_epsilon(text), eps, atol=1e-6)
    # gzipped file: structure from the OUTCAR's own positions
    path = write_outcar(tmp_path / "OUTCAR.gz", atoms, eps, gz=True)
    read_atoms, read_eps = read_outcar(path)
    assert read_atoms.get_chemical_symbols() == atoms.get_chemical_symbols()
    assert np.allclose(read_atoms.positions, atoms.positions, atol=1e-5)
    assert np.allclose(read_atoms.cell.array, atoms.cell.array, atol=1e-8)
    assert np.allclose(read_eps, eps, atol=1e-6)


def test_outcar_bad_inputs(tmp_path: Path) -> None:
    atoms = sort(bulk("AgI", "zincblende", a=6.5, cubic=True))
    no_block = write_outcar(tmp_path / "a" / "OUTCAR", atoms, np.eye(3), include_dielectric=False)
    with pytest.raises(InputError, match="MACROSCOPIC STATIC DIELECTRIC TENSOR") as exc:
        read_outcar(no_block)
    assert str(no_block) in str(exc.value)
    truncated = outcar_text(atoms, 5 * np.eye(3)).split("including local field effects in DFT)")[0]
    truncated += "including local field effects in DFT)\n ------\n   5.0  0.0\n"
    with pytest.raises(InputError, match="three rows"):
        parse_outcar_epsilon(truncated)
    garbage = tmp_path / "OUTCAR.gz"
    garbage.write_bytes(b"\x1f\x8b\x08not really gzip")
    with pytest.raises(InputError, match="cannot read"):
        read_outcar(garbage)
    with pytest.raises(InputError, match="not found"):
        read_outcar(tmp_path / "missing" / "OUTCAR")


# every dielectric block VASP writes, in the layouts of the runs that write them
@pytest.mark.parametrize("layout, block, expect_key, atol", [
    ("lepsilon", "auto", "dft", 1e-6),
    ("lepsilon", "no-local-fields", "no-local-fields", 1e-6),
    ("lepsilon", "independent-particle", "independent-particle", 1e-6),
    ("lepsilon-rpa", "rpa", "rpa", 1e-6),
    ("lcalceps", "auto", "finite-field", 1e-3),
    ("lcalceps-rpa", "auto", "finite-field", 1e-3),
    ("lcalceps-rpa", "no-local-fields", "no-local-fields", 1e-3),
    ("lcalceps-ibrion6", "auto", "finite-field", 1e-3),
])
def test_outcar_every_dielectric_block(tmp_path: Path, layout: str, block: str, expect_key: str, atol: float) -> None:
    from vasp_formats import LAYOUTS

    atoms = sort(bulk("AgI", "zincblende", a=6.5, cubic=True))
    eps = np.array([[5.1, 0.02, -0.01], [0.02, 5.2, 0.03], [-0.01, 0.03, 5.3]])
    text = outcar_text(atoms, eps, layout=layout, earlier_epsilon=2 * eps)
    key, got = parse_outcar_epsilon_block(text, block=block)
    factor = {DIELECTRIC_BLOCKS[k][0]: k for k in DIELECTRIC_BLOCKS}
    want = next(f for title, f, _ in LAYOUTS[layout] if factor[title] == expect_key)
    assert key == expect_key
    assert np.allclose(got, want * eps, atol=atol)
    # all blocks are seen, each the number of times it was written (+1 for the earlier copy)
    blocks = parse_outcar_dielectric_blocks(text)
    assert sorted(blocks) == sorted(factor[t] for t, _, _ in LAYOUTS[layout])
    # the value's block goes into the dataset
    path = write_outcar(tmp_path / "OUTCAR", atoms, eps, layout=layout)
    frames, results = import_vasp([path], out=tmp_path / "ds.extxyz", dielectric_block=block)
    assert frames[0].info["dielectric_block"] == expect_key and results[0].meta["dielectric_block"] == expect_key
    ds = read_alpha_dataset(tmp_path / "ds.extxyz")
    assert ds.frames[0].info["dielectric_block"] == expect_key
    assert (ds.methods[0] == VASP_METHOD) == (expect_key in ("dft", "finite-field"))
    assert np.allclose(ds.alpha_A3[0], alpha_from_epsilon(want * eps, atoms.get_volume()), atol=atol * atoms.get_volume())


def test_outcar_block_choice_errors() -> None:
    atoms = sort(bulk("AgI", "zincblende", a=6.5, cubic=True))
    rpa_only = outcar_text(atoms, 5 * np.eye(3), layout="lepsilon-rpa")
    # auto wants local fields in DFT / finite field: an RPA-only file says what it has
    with pytest.raises(InputError, match="blocks found: independent-particle, rpa") as exc:
        parse_outcar_epsilon_block(rpa_only)
    assert "dielectric_block = independent-particle | rpa" in str(exc.value)
    with pytest.raises(InputError, match="not an electronic dielectric tensor"):
        parse_outcar_epsilon_block(rpa_only, block="ionic")
    with pytest.raises(InputError, match="blocks found: finite-field"):
        parse_outcar_epsilon_block(outcar_text(atoms, 5 * np.eye(3), layout="lcalceps"), block="dft")
    # a finite-field header is not read as the DFPT one, nor the other way round
    ff = outcar_text(atoms, 5 * np.eye(3), layout="lcalceps")
    assert "dft" not in parse_outcar_dielectric_blocks(ff)
    assert "finite-field" not in parse_outcar_dielectric_blocks(outcar_text(atoms, 5 * np.eye(3)))


# ---------------------------------------------------------------------------------------
# Convention
# ---------------------------------------------------------------------------------------
def test_epsilon_alpha_convention() -> None:
    si = bulk("Si", "diamond", a=5.431, cubic=True)
    v = si.get_volume()
    eps = np.array([[12.0, 0.3, 0.0], [0.3, 13.0, 0.1], [0.0, 0.1, 14.0]])
    alpha = alpha_from_epsilon(eps, v)
    assert np.allclose(epsilon_from_alpha(alpha, v), eps, atol=1e-12)
    assert alpha[0, 0] == pytest.approx(v * 11.0 / (4 * np.pi))
    assert alpha[0, 1] == pytest.approx(v * 0.3 / (4 * np.pi))
    # CP2K's 8-atom Si α (Å^3, real run above) as ε: a semiconductor-like value
    eps_cp2k = epsilon_from_alpha(parse_cp2k_polarizability(CP2K_TAIL), v)
    assert 5.0 < eps_cp2k[0, 0] < 8.0
    # α is extensive: the same ε in a doubled cell gives twice the α
    assert np.allclose(alpha_from_epsilon(eps, 2 * v), 2 * alpha)


# ---------------------------------------------------------------------------------------
# Embedded dipole model
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("a_A", [2.6, 3.5, 5.0])
def test_dipole_model_is_clausius_mossotti_on_a_cubic_lattice(a_A: float) -> None:
    """One polarizable ion per simple-cubic cell: tin-foil Ewald + α = V(ε−1)/4π must give
    exactly the Lorentz local field, (ε−1)/(ε+2) = 4πα₀/3V."""
    alpha0 = 0.41
    atoms = Atoms("Na", positions=[[0.3, 0.1, 0.2]], cell=np.eye(3) * a_A, pbc=True)
    res = DipoleModel().compute(atoms)
    v = a_A**3
    expected = alpha0 / (1 - 4 * np.pi * alpha0 / (3 * v))
    assert np.allclose(res.alpha_A3, expected * np.eye(3), rtol=1e-7, atol=1e-9)
    eps = epsilon_from_alpha(res.alpha_A3, v)[0, 0]
    assert (eps - 1) / (eps + 2) == pytest.approx(4 * np.pi * alpha0 / (3 * v), rel=1e-7)


def test_dipole_model_independent_of_ewald_split(agi32: Atoms) -> None:
    a = DipoleModel(real_cutoff_A=8.0).compute(agi32).alpha_A3
    b = DipoleModel(real_cutoff_A=13.0).compute(agi32).alpha_A3
    assert np.allclose(a, b, rtol=1e-6, atol=1e-6)


def test_dipole_model_equivariant(agi32: Atoms) -> None:
    model = DipoleModel()
    alpha = model.compute(agi32).alpha_A3
    for seed in range(3):
        R = Rotation.random(random_state=seed).as_matrix()
        rotated = agi32.copy()
        rotated.set_cell(agi32.cell.array @ R.T, scale_atoms=False)
        rotated.positions = agi32.positions @ R.T
        assert np.abs(model.compute(rotated).alpha_A3 - R @ alpha @ R.T).max() < 1e-8
    shifted = agi32.copy()
    shifted.positions += [1.3, -0.7, 2.2]  # translation invariance
    assert np.abs(model.compute(shifted).alpha_A3 - alpha).max() < 1e-8


def test_dipole_model_permutation_invariant(agi32: Atoms) -> None:
    perm = np.random.default_rng(3).permutation(len(agi32))
    a = DipoleModel().compute(agi32).alpha_A3
    b = DipoleModel().compute(agi32[perm]).alpha_A3
    assert np.abs(a - b).max() < 1e-9


def test_dipole_model_responds_to_disorder_like_a_raman_active_mode() -> None:
    """Zincblende: the cubic crystal has isotropic α; shifting the Ag sublattice along z by δ
    (the Raman-active T2 optical phonon) makes α_xy ∝ δ and leaves α_xz = α_yz = 0."""
    base = sort(bulk("AgI", "zincblende", a=6.50, cubic=True))
    model = DipoleModel()
    a0 = model.compute(base).alpha_A3
    assert np.abs(a0 - a0[0, 0] * np.eye(3)).max() < 1e-8
    ag = np.array(base.get_chemical_symbols()) == "Ag"
    slopes = []
    for delta in (0.01, 0.02):
        moved = base.copy()
        moved.positions[ag, 2] += delta
        alpha = model.compute(moved).alpha_A3
        assert abs(alpha[0, 2]) < 1e-8 and abs(alpha[1, 2]) < 1e-8
        slopes.append(alpha[0, 1] / delta)
    assert abs(slopes[0]) > 1.0  # Å^3 per Å: a clear Raman tensor
    assert slopes[1] == pytest.approx(slopes[0], rel=0.02)  # linear in δ
    # random disorder gives a generic anisotropic, symmetric tensor
    dis = model.compute(disordered(base.repeat(2), 0.2, 0)).alpha_A3
    assert np.abs(dis - dis.T).max() < 1e-10
    assert np.abs(dis - np.diag(dis.diagonal())).max() > 0.1


def test_dipole_model_thole_keeps_close_ions_finite() -> None:
    """Without damping two I⁻ (6.43 Å³) 1.5 Å apart are past the polarisation catastrophe
    (4α²/r⁶ > 1); Thole's smearing keeps the response finite and positive."""
    pair = Atoms("I2", positions=[[0, 0, 0], [0, 0, 1.5]], cell=np.eye(3) * 30.0, pbc=True)
    assert 4 * 6.43**2 / 1.5**6 > 1
    alpha = DipoleModel().compute(pair).alpha_A3
    assert np.all(np.isfinite(alpha)) and np.all(np.linalg.eigvalsh(alpha) > 0)
    assert alpha[2, 2] > alpha[0, 0]  # a pair is more polarizable along its axis


def test_dipole_model_covers_campaign_elements_and_rejects_unknown() -> None:
    model = DipoleModel()
    values = model.ion_polarizabilities(["Ag", "I", "Na", "Sb", "W", "S", "P", "Li", "La", "Zr", "O"])
    assert np.all(values > 0)
    xe = Atoms("Xe", cell=np.eye(3) * 5, pbc=True)
    with pytest.raises(InputError, match="no polarizability for Xe"):
        model.compute(xe)
    assert DipoleModel(polarizabilities_A3={"Xe": 4.0}).compute(xe).alpha_A3[0, 0] > 4.0
    with pytest.raises(InputError, match="3D-periodic"):
        model.compute(Atoms("NaCl", positions=[[0, 0, 0], [2.8, 0, 0]]))


def test_dipole_model_on_128_atoms_is_labelled_and_sane() -> None:
    """A 128-atom disordered AgI snapshot (the paper's size) runs; ε∞ stays physical.
    (Its speed is reported by the developer, not asserted: no timed tests.)"""
    atoms = disordered(sort(bulk("AgI", "zincblende", a=6.50, cubic=True).repeat((4, 2, 2))), 0.1, 2)
    assert len(atoms) == 128
    res = DipoleModel().compute(atoms)
    assert res.method == DIPOLE_MODEL_METHOD and "not DFPT" in res.method
    eps = np.linalg.eigvalsh(epsilon_from_alpha(res.alpha_A3, atoms.get_volume()))
    assert np.all((eps > 3.0) & (eps < 6.0))


# ---------------------------------------------------------------------------------------
# Snapshot selection
# ---------------------------------------------------------------------------------------
def test_random_selection() -> None:
    idx = select_snapshots(100, 10, seed=4)
    assert len(set(idx.tolist())) == 10 and np.all(np.diff(idx) > 0)
    assert np.array_equal(idx, select_snapshots(100, 10, seed=4))
    assert not np.array_equal(idx, select_snapshots(100, 10, seed=5))
    with pytest.raises(InputError, match="only 5 frames"):
        select_snapshots(5, 6)
    with pytest.raises(InputError, match="unknown selection method"):
        select_snapshots(5, 2, method="kmeans")


def test_fps_covers_clusters_first() -> None:
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    feats = np.concatenate([c + rng.normal(0, 0.1, (20, 2)) for c in centres])
    first3 = select_snapshots(len(feats), 3, method="fps", features=feats)
    assert sorted(int(i) // 20 for i in first3) == [0, 1, 2]


def test_fps_with_soap_features_prefers_distinct_frames() -> None:
    base = sort(bulk("AgI", "zincblende", a=6.50, cubic=True))
    frames = [base.copy() for _ in range(4)] + [disordered(base, 0.3, s) for s in range(2)]
    idx = select_snapshots(frames, 3, method="fps", seed=0)
    assert {4, 5} <= set(idx.tolist())  # the two distinct snapshots before any duplicate


# ---------------------------------------------------------------------------------------
# Datasets and backends
# ---------------------------------------------------------------------------------------
def test_dataset_round_trip(tmp_path: Path, agi32: Atoms) -> None:
    frames = [agi32, disordered(agi32, 0.05, 9)]
    frames[0].info["md_step"] = 40
    results = [DipoleModel().compute(f) for f in frames]
    results[1] = ReferenceResult(results[1].alpha_A3, results[1].method, {**results[1].meta, "source": "x/OUTCAR", "md_step": 7})
    path = write_alpha_dataset(frames, results, tmp_path / "d.extxyz")
    ds = read_alpha_dataset(path)
    assert len(ds) == 2
    assert np.allclose(ds.alpha_A3, [r.alpha_A3 for r in results], rtol=1e-12)
    assert ds.methods == [DIPOLE_MODEL_METHOD] * 2
    assert ds.md_steps.tolist() == [40, 7] and ds.sources[1] == "x/OUTCAR"
    assert np.allclose(ds.frames[1].positions, frames[1].positions)


def test_dataset_bad_input_leaves_no_file(tmp_path: Path, agi32: Atoms) -> None:
    bad = ReferenceResult(np.full((3, 3), np.nan), "x")
    with pytest.raises(InputError, match="finite"):
        write_alpha_dataset([agi32], [bad], tmp_path / "d.extxyz")
    assert list(tmp_path.iterdir()) == []
    import ase.io

    ase.io.write(tmp_path / "plain.extxyz", agi32)
    with pytest.raises(InputError, match="no 'polarizability'"):
        read_alpha_dataset(tmp_path / "plain.extxyz")
    (tmp_path / "junk.extxyz").write_text("this is not\nan extxyz file\n")
    with pytest.raises(InputError, match="cannot read"):
        read_alpha_dataset(tmp_path / "junk.extxyz")


def test_get_backend() -> None:
    assert isinstance(get_backend("dipole"), DipoleModel)
    assert get_backend("CP2K", cutoff_ry=250).cutoff_ry == 250
    with pytest.raises(InputError, match="unknown reference backend"):
        get_backend("gaussian")
    with pytest.raises(InputError, match="unknown option"):
        get_backend("qe", cutoff_ry=3)


def test_launcher_command_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    cp2k = Cp2kBackend(launcher="srun", mpirun="")
    assert cp2k.command() == ["srun", "cp2k.psmp", "-i", "polar.inp", "-o", "polar.out"]
    monkeypatch.setenv("RAMANSCREEN_REFERENCE_LAUNCHER", "apptainer exec --bind /scratch img.sif")
    monkeypatch.setenv("RAMANSCREEN_MPIRUN", "mpirun --allow-run-as-root -np 4")
    assert Cp2kBackend().command() == [
        "apptainer", "exec", "--bind", "/scratch", "img.sif",
        "mpirun", "--allow-run-as-root", "-np", "4", "cp2k.psmp", "-i", "polar.inp", "-o", "polar.out",
    ]
    pw, ph = QEBackend(pw_exe="/opt/qe/pw.x").commands()
    assert pw[:5] == ["apptainer", "exec", "--bind", "/scratch", "img.sif"]
    assert pw[-3:] == ["/opt/qe/pw.x", "-in", "pw.in"] and ph[-3:] == ["ph.x", "-in", "ph.in"]


@pytest.mark.system("cp2k-data")
def test_cp2k_input_writer() -> None:
    pos = [[0, 0, 0], [3, 0, 0], [0, 3, 0], [0, 0, 2], [2, 2, 0], [4, 4, 4], [1, 4, 2], [4, 1, 2]]
    atoms = Atoms("La2ZrO5", positions=pos, cell=np.eye(3) * 6, pbc=True)  # 2·11 + 12 + 5·6 electrons
    text = Cp2kBackend(cutoff_ry=300).write_input(atoms)
    assert "BASIS_MOLOPT_UCL" in text  # La lives there
    assert "&KIND La\n      BASIS_SET DZVP-MOLOPT-SR-GTH-q11\n      POTENTIAL GTH-PBE-q11" in text
    for key in ("&LINRES", "&POLAR", "DO_RAMAN T", "PERIODIC_DIPOLE_OPERATOR T", "CUTOFF 300", "PERIODIC XYZ"):
        assert key in text
    assert "      A 6.0000000000 0.0000000000 0.0000000000" in text
    for sym in ["Ag", "I", "Na", "Sb", "W", "S", "P", "Li"]:
        assert sym in Cp2kBackend().kinds([sym])
    with pytest.raises(InputError, match="odd number of valence electrons"):
        Cp2kBackend().write_input(Atoms("Na", cell=np.eye(3) * 5, pbc=True))
    with pytest.raises(InputError, match="no NOPE basis"):
        Cp2kBackend(basis="NOPE").write_input(atoms)


def test_qe_inputs_and_pseudopotential_lookup(tmp_path: Path) -> None:
    for name in ("Si.pbe-n-rrkjus_psl.1.0.0.UPF", "S.pbe-nl-kjpaw.UPF", "Sb.pbe.UPF"):
        (tmp_path / name).write_text("<UPF/>")
    si = bulk("Si", "diamond", a=5.431)
    qe = QEBackend(pseudo_dir=tmp_path, ecutwfc_ry=25)
    pw = qe.pw_input(si)
    assert "Si.pbe-n-rrkjus_psl.1.0.0.UPF" in pw and "ecutwfc          = 25" in pw
    assert "occupations      = 'fixed'" in pw
    kline = pw.split("K_POINTS automatic")[1].split("\n")[1].split()
    assert [int(k) for k in kline[:3]] == list(qe.mesh(si)) and qe.mesh(si) == (9, 9, 9)  # ceil(2π√3/a / 0.25 Å⁻¹)
    assert "epsil=.true." in qe.ph_input() and "trans=.false." in qe.ph_input()
    with pytest.raises(InputError, match="no UPF pseudopotential for Na"):
        qe.pw_input(bulk("NaCl", "rocksalt", a=5.6))
    (tmp_path / "14-Si.nlcc.UPF").write_text("<UPF/>")
    with pytest.raises(InputError, match="several UPF files for Si"):
        qe.pw_input(si)
    assert "14-Si.nlcc.UPF" in QEBackend(pseudo_dir=tmp_path, pseudopotentials={"Si": "14-Si.nlcc.UPF"}).pw_input(si)


# ---------------------------------------------------------------------------------------
# VASP import and CLI
# ---------------------------------------------------------------------------------------
def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ramanscreen.flows", *args], capture_output=True, text=True, timeout=300, cwd=cwd)


def test_import_vasp_matches_md_steps(tmp_path: Path) -> None:
    base = sort(bulk("AgI", "zincblende", a=6.50, cubic=True))
    md = [disordered(base, 0.1, s) for s in range(6)]
    write_xdatcar(tmp_path / "XDATCAR", md, first_step=5, every=5)  # steps 5, 10, ..., 30
    model = DipoleModel()
    paths = []
    for k in (1, 4):
        eps = epsilon_from_alpha(model.compute(md[k]).alpha_A3, md[k].get_volume())
        paths.append(write_outcar(tmp_path / f"dfpt_{k:03d}" / "OUTCAR.gz", md[k], eps, gz=True))
    # an OUTCAR of a structure that is not in the MD: step from its file name, with a warning
    extra = disordered(base, 0.1, 99)
    paths.append(write_outcar(tmp_path / "OUTCAR.0077", extra, 5 * np.eye(3)))
    with pytest.warns(UserWarning, match="no MD frame matches"):
        frames, results = import_vasp(paths, md=tmp_path / "XDATCAR", out=tmp_path / "ds.extxyz")
    assert [r.meta["md_step"] for r in results] == [10, 25, 77]
    assert [r.meta["md_match"] for r in results] == ["positions", "positions", "file name"]
    ds = read_alpha_dataset(tmp_path / "ds.extxyz")
    assert ds.methods == [VASP_METHOD] * 3
    for k, i in enumerate((1, 4)):
        assert np.allclose(ds.alpha_A3[k], model.compute(md[i]).alpha_A3, atol=5e-4)
    assert ds.md_steps.tolist() == [10, 25, 77]


def test_import_vasp_with_vasprun_md(tmp_path: Path) -> None:
    base = sort(bulk("AgI", "zincblende", a=6.50, cubic=True))
    md = [disordered(base, 0.1, s) for s in range(4)]
    write_vasprun(tmp_path / "vasprun.xml", md)
    outcar = write_outcar(tmp_path / "OUTCAR", md[2], 4.0 * np.eye(3))
    _, results = import_vasp([outcar], md=tmp_path / "vasprun.xml")
    assert results[0].meta["md_step"] == 3 and results[0].meta["md_frame"] == 2  # vasprun steps count from 1


def test_cli_import_vasp_and_errors(tmp_path: Path) -> None:
    base = sort(bulk("AgI", "zincblende", a=6.50, cubic=True))
    good = write_outcar(tmp_path / "run1" / "OUTCAR", base, 4.5 * np.eye(3))
    out = run_cli("import-vasp", str(tmp_path / "run1"), "--out", str(tmp_path / "ok.extxyz"))
    assert out.returncode == 0, out.stderr
    ds = read_alpha_dataset(tmp_path / "ok.extxyz")
    assert ds.alpha_A3[0, 0, 0] == pytest.approx(base.get_volume() * 3.5 / (4 * np.pi), rel=1e-6)
    assert ds.md_steps.tolist() == [1]  # from the folder name run1

    bad = write_outcar(tmp_path / "run2" / "OUTCAR", base, np.eye(3), include_dielectric=False)
    target = tmp_path / "bad.extxyz"
    out = run_cli("import-vasp", str(good), "--outcar", str(bad), "--out", str(target))
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "run2/OUTCAR" in out.stderr and "DIELECTRIC" in out.stderr
    assert not target.exists()  # nothing written when any input is bad

    unreadable = tmp_path / "OUTCAR.gz"
    with gzip.open(unreadable, "wt") as fh:
        fh.write("MACROSCOPIC STATIC DIELECTRIC TENSOR (including local field effects in DFT)\n -----\n 1 2 3\n")
    out = run_cli("import-vasp", str(unreadable), "--out", str(target))
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and not target.exists()


def test_cli_reference_dipole_with_selection(tmp_path: Path) -> None:
    import ase.io

    base = sort(bulk("AgI", "zincblende", a=6.50, cubic=True))
    ase.io.write(tmp_path / "md.extxyz", [disordered(base, 0.1, s) for s in range(6)])
    out = run_cli("reference", str(tmp_path / "md.extxyz"), "--select", "3", "--selection", "fps",
                  "-o", str(tmp_path / "ref.extxyz"))
    assert out.returncode == 0, out.stderr
    ds = read_alpha_dataset(tmp_path / "ref.extxyz")
    assert len(ds) == 3 and set(ds.methods) == {DIPOLE_MODEL_METHOD}
    assert "not DFPT" in out.stdout

    bad = Atoms("XeAr", positions=[[0, 0, 0], [2, 2, 2]], cell=np.eye(3) * 5, pbc=True)
    ase.io.write(tmp_path / "xe.extxyz", bad)
    out = run_cli("reference", str(tmp_path / "xe.extxyz"), "-o", str(tmp_path / "xe.alpha.extxyz"))
    assert out.returncode == 2 and "Ar, Xe" in out.stderr and out.stderr.count("\n") == 1
    assert not (tmp_path / "xe.alpha.extxyz").exists()
    out = run_cli("reference", str(tmp_path / "md.extxyz"), "--backend", "qe", "--cutoff-ry", "300")
    assert out.returncode == 2 and "--cutoff-ry" in out.stderr
