"""Structure builders: composition, charge, distances, symmetry, supercells, file loading."""

from __future__ import annotations

import numpy as np
import pytest
import spglib
from ase.io import write
from ase.neighborlist import neighbor_list

from ramanscreen.tasks.common import InputError
from ramanscreen.tasks.structures import (
    BUILDERS,
    GAMMA_NA3PS4_DENSITY_G_CM3,
    NA3SBS4_BASIS,
    NA3SBS4_W_VACANCY_ENERGIES_MEV,
    PUBLISHED,
    build_structure,
    check_structure,
    formal_charge,
    load_structure,
    min_distance_A,
    place_on_sites,
    rank_w_vacancies,
    relax_check,
    supercell_to,
    w_vacancy_candidates,
    write_structure,
)

EXPECTED = {
    # name: (n_atoms, formula) at the paper's sizes
    "AgI": (128, "Ag64I64"),
    "Na3SbS4": (128, "Na48S64Sb16"),
    "Na3SbS4-W": (127, "Na47S64Sb15W"),
    "Na3PS4": (256, "Na96P32S128"),
    "gamma-Na3PS4": (256, "Na96P32S128"),
    "LLZO": (192, "La24Li56O96Zr16"),
}

#: Shortest cation-anion bond expected in each material (Å, from the cited structures).
BONDS = {
    "AgI": [("Ag", "I", 2.83)],
    "Na3SbS4": [("Sb", "S", 2.33)],
    "Na3SbS4-W": [("Sb", "S", 2.33), ("W", "S", 2.33)],
    "Na3PS4": [("P", "S", 2.06)],
    "gamma-Na3PS4": [("P", "S", 2.05)],
    "LLZO": [("Zr", "O", 2.11), ("La", "O", 2.53)],
}


def _spacegroup(atoms, symprec=1e-3) -> str:
    return spglib.get_spacegroup((atoms.cell[:], atoms.get_scaled_positions(), atoms.numbers), symprec=symprec)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_composition_charge_and_distances(name):
    atoms = build_structure(name, seed=3)
    n, formula = EXPECTED[name]
    assert len(atoms) == n
    assert atoms.get_chemical_formula() == formula
    assert formal_charge(atoms) == 0
    # no two atoms closer than a physical contact (Li-O is the shortest bond here, 1.78 Å)
    assert min_distance_A(atoms) > 1.7
    i, j, d = neighbor_list("ijd", atoms, 3.0)
    sym = np.array(atoms.get_chemical_symbols())
    for a, b, expected in BONDS[name]:
        mask = (sym[i] == a) & (sym[j] == b)
        assert mask.any(), f"no {a}-{b} bond below 3 Å"
        assert d[mask].min() == pytest.approx(expected, abs=0.02)


@pytest.mark.parametrize("name, sg", [("Na3SbS4", "P-42_1c (114)"), ("Na3PS4", "I-43m (217)")])
def test_ordered_phases_recover_space_group(name, sg):
    assert _spacegroup(build_structure(name)) == sg


def test_disordered_hosts_keep_their_frameworks():
    agi = build_structure("AgI")
    assert _spacegroup(agi[agi.numbers == 53]) == "Im-3m (229)"
    llzo = build_structure("LLZO")
    assert _spacegroup(llzo[llzo.numbers != 3]) == "Ia-3d (230)"
    # Ag sits on tetrahedral sites: four I at 2.83 Å each
    i, j, d = neighbor_list("ijd", agi, 3.0)
    ag = np.flatnonzero(agi.numbers == 47)
    counts = np.bincount(i[np.isin(i, ag) & (agi.numbers[j] == 53)], minlength=len(agi))[ag]
    assert (counts == 4).all()


def test_disorder_depends_on_seed_and_is_reproducible():
    a0, a0b, a1 = (build_structure("AgI", seed=s) for s in (0, 0, 1))
    assert np.array_equal(a0.positions, a0b.positions)
    assert not np.array_equal(a0.positions, a1.positions)
    assert min_distance_A(a1) >= 2.5 - 1e-9


def test_w_vacancy_is_the_recorded_lowest_energy_site():
    atoms = build_structure("Na3SbS4-W", seed=2)
    energies = atoms.info["vacancy_energies_meV"]
    assert energies == NA3SBS4_W_VACANCY_ENERGIES_MEV and min(energies.values()) == 0.0
    # one energy per symmetry-distinct Na site, and the vacancy is on the lowest
    _, cands = w_vacancy_candidates()
    assert sorted(energies) == sorted(c.label for c in cands)
    assert sum(c.multiplicity for c in cands) == 48
    best = min(energies, key=energies.get)
    assert atoms.info["vacancy_site"] == best
    host = build_structure("Na3SbS4")
    w = int(np.flatnonzero(atoms.numbers == 74)[0])
    d_best = next(c.distance_A for c in cands if c.label == best)
    d_host = np.sort(host.get_distances(w, np.flatnonzero(host.numbers == 11), mic=True))
    d_doped = np.sort(atoms.get_distances(w, np.flatnonzero(atoms.numbers == 11), mic=True))
    # exactly one Na at the chosen site's W-Na distance is gone
    assert np.isclose(d_host, d_best, atol=1e-3).sum() == np.isclose(d_doped, d_best, atol=1e-3).sum() + 1


@pytest.mark.slow
def test_w_vacancy_energies_recomputed_with_chgnet():
    """The recorded vacancy energies are what CHGNet gives (14 single points, ~3 min loaded)."""
    rows = rank_w_vacancies("chgnet", max_steps=0)
    got = {r["label"]: r["delta_meV"] for r in rows}
    assert min(got, key=got.get) == min(NA3SBS4_W_VACANCY_ENERGIES_MEV, key=NA3SBS4_W_VACANCY_ENERGIES_MEV.get)
    for label, e in NA3SBS4_W_VACANCY_ENERGIES_MEV.items():
        assert got[label] == pytest.approx(e, abs=5.0)


# ---------------------------------------------------------------------------------------------
# against published data
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_builders_match_published_data(name):
    atoms = build_structure(name, seed=1)
    rows = check_structure(atoms, name)
    bad = [r for r in rows if not r.ok]
    assert not bad, bad
    assert {r.quantity.split(" (")[0] for r in rows} >= {"space group", "a", "b", "c"}
    assert sum(r.quantity.startswith("shortest") for r in rows) == len(PUBLISHED[name].nn_bounds_A)


def test_published_bounds_catch_the_transposed_na3sbs4():
    """The S(8e) x/y transposition the builder once had puts Na 2.69 Å from S: the check fails."""
    from ase.spacegroup import crystal

    b = NA3SBS4_BASIS
    x, y, z = b["S"]
    wrong = crystal(["Na", "Na", "Sb", "S"], [b["Na1"], b["Na2"], b["Sb"], (y, x, z)], spacegroup=114,
                    cellpar=[7.1453, 7.1453, 7.2770, 90, 90, 90])
    rows = {r.quantity: r for r in check_structure(wrong, "Na3SbS4")}
    assert not rows["shortest Na-S (A)"].ok and float(rows["shortest Na-S (A)"].value) == pytest.approx(2.69, abs=0.01)
    assert rows["shortest Sb-S (A)"].ok and rows["space group"].ok  # bond length and symmetry alone miss it
    right = {r.quantity: r for r in check_structure(build_structure("Na3SbS4", n_atoms=16), "Na3SbS4")}
    assert float(right["shortest Na-S (A)"].value) == pytest.approx(2.88, abs=0.01)


def test_gamma_cell_density_disorder_and_label():
    a = build_structure("gamma-Na3PS4", n_atoms=64, seed=0)
    mass_g = a.get_masses().sum() / 6.02214076e23
    assert mass_g / (a.get_volume() * 1e-24) == pytest.approx(GAMMA_NA3PS4_DENSITY_G_CM3, rel=1e-6)
    assert GAMMA_NA3PS4_DENSITY_G_CM3 < 0.95 * 2.223  # below beta at room temperature (a volume jump)
    assert "gamma" in a.info["phase"] and "not the refined Fddd" in a.info["phase"]
    # the PS4 are turned at random: no two share an orientation (as they all do in beta)
    p = np.flatnonzero(a.numbers == 15)
    s = np.flatnonzero(a.numbers == 16)
    from ase.geometry import get_distances

    vec, dist = get_distances(a.positions[p], a.positions[s], cell=a.cell, pbc=True)
    bonds = [vec[k][dist[k] < 2.2] for k in range(len(p))]
    assert all(len(bv) == 4 for bv in bonds)
    first = np.array([bv[np.argmax(bv[:, 2])] for bv in bonds]) / 2.05  # the highest S of each PS4
    cos = first @ first.T
    assert np.abs(cos[np.triu_indices(len(p), 1)]).max() < 0.9999
    assert np.std(first, axis=0).min() > 0.1
    # reproducible by seed, different across seeds; the density is a parameter
    assert np.array_equal(a.positions, build_structure("gamma-Na3PS4", n_atoms=64, seed=0).positions)
    assert not np.array_equal(a.positions, build_structure("gamma-Na3PS4", n_atoms=64, seed=1).positions)
    dense = build_structure("gamma-Na3PS4", n_atoms=64, density_g_cm3=2.15)
    assert dense.get_volume() == pytest.approx(a.get_volume() * GAMMA_NA3PS4_DENSITY_G_CM3 / 2.15, rel=1e-9)
    with pytest.raises(InputError, match="density"):
        build_structure("gamma-Na3PS4", density_g_cm3=5.0)


#: Small cells for the MLFF relaxation check (each one is over a minute on the shared 2 cores).
RELAX_SIZES = {"AgI": 32, "Na3SbS4": 16, "Na3SbS4-W": 31, "Na3PS4": 16, "gamma-Na3PS4": 64, "LLZO": 192}


#: Builders whose check fails as measured, kept visible (strict: the case fails once it passes).
RELAX_KNOWN_FAILURES = {
    "LLZO": "measured 2026-12-02: CHGNet leaves 1.77 GPa (from 3.75) after 40 steps on the 192-atom cubic cell, "
            "above the stated 1.5 GPa bound (an unmeasured estimate); not resolved",
}


@pytest.mark.slow
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.xfail(reason=RELAX_KNOWN_FAILURES[n], strict=True))
                                  if n in RELAX_KNOWN_FAILURES else n for n in sorted(BUILDERS)])
def test_chgnet_relaxation_residual_pressure_and_energy(name):
    """A short CHGNet relaxation (positions, cell fixed) of a right structure changes its
    energy little and leaves a moderate pressure (bounds in PUBLISHED, docs/md.md)."""
    atoms = build_structure(name, n_atoms=RELAX_SIZES[name], seed=0)
    rc = relax_check(atoms, "chgnet", steps=40)
    ref = PUBLISHED[name]
    assert rc.energy_change_meV_atom <= 0.0
    assert -rc.energy_change_meV_atom <= ref.max_relax_meV_atom, rc
    assert abs(rc.pressure_GPa) <= ref.max_pressure_GPa, rc


def test_supercell_to_sizes_and_errors():
    cell = build_structure("Na3SbS4", n_atoms=16)
    sc = supercell_to(cell, 128)
    assert len(sc) == 128 and sc.info["supercell"] == [2, 2, 2]
    assert sc.get_chemical_formula() == "Na48S64Sb16"
    assert build_structure("AgI").info["supercell"] == [4, 4, 2]
    with pytest.raises(InputError, match="multiple of 16"):
        supercell_to(cell, 100)
    with pytest.raises(InputError, match="multiple of 4"):
        build_structure("AgI", n_atoms=130)


def test_place_on_sites_respects_distance_and_fails_cleanly():
    sites = np.random.default_rng(0).uniform(0, 10, (200, 3))
    idx = place_on_sites(sites, np.eye(3) * 10, 20, 1.5, seed=0)
    sub = sites[idx]
    from ase.geometry import get_distances

    _, d = get_distances(sub, cell=np.eye(3) * 10, pbc=True)
    assert d[np.triu_indices(len(sub), 1)].min() >= 1.5
    with pytest.raises(InputError, match="could not place"):
        place_on_sites(sites, np.eye(3) * 10, 199, 5.0, seed=0, max_tries=3)


def test_load_structure_files_and_names(tmp_path):
    atoms = build_structure("Na3PS4", n_atoms=16)
    for name in ("x.cif", "POSCAR", "x.xyz"):
        path = write_structure(atoms, tmp_path / name)
        back = load_structure(path)
        assert back.get_chemical_formula() == "Na6P2S8"
        assert np.allclose(back.cell.lengths(), atoms.cell.lengths(), atol=1e-4)
    assert len(load_structure(tmp_path / "POSCAR", n_atoms=128)) == 128
    assert load_structure("c-Na3PS4", n_atoms=16).get_chemical_formula() == "Na6P2S8"
    assert load_structure("γ-Na3PS4", n_atoms=64).info["material"] == "gamma-Na3PS4"


def test_load_structure_bad_inputs(tmp_path):
    bad = tmp_path / "broken.cif"
    bad.write_text("data_x\n_cell_length_a what\nloop_\n garbage\n")
    with pytest.raises(InputError, match="unreadable structure file"):
        load_structure(bad)
    with pytest.raises(InputError, match="no such structure file or builder"):
        load_structure(tmp_path / "missing.cif")
    molecule = tmp_path / "mol.xyz"
    from ase.build import molecule as mol

    write(molecule, mol("H2O"))
    with pytest.raises(InputError, match="not periodic"):
        load_structure(molecule)
    with pytest.raises(InputError, match="unknown structure"):
        build_structure("unobtainium")


def test_cli_structure_write_and_check(tmp_path):
    import subprocess
    import sys

    def run(*args):
        return subprocess.run([sys.executable, "-m", "ramanscreen.flows", "structure", *args],
                              capture_output=True, text=True, timeout=300)

    out = run("Na3SbS4", "--n-atoms", "16", "--out", str(tmp_path / "nss.pdb"), "--check")
    assert out.returncode == 0, out.stderr
    assert "P-42_1c (114)" in out.stdout and "shortest Na-S" in out.stdout and "OUT" not in out.stdout
    assert load_structure(tmp_path / "nss.pdb").get_chemical_formula() == "Na6S8Sb2"  # any ASE format
    out = run("gamma-Na3PS4", "--n-atoms", "64", "--density-g-cm3", "2.1", "--out", str(tmp_path / "g.xyz"))
    assert out.returncode == 0, out.stderr
    g = load_structure(tmp_path / "g.xyz")
    assert g.get_masses().sum() / 6.02214076e23 / (g.get_volume() * 1e-24) == pytest.approx(2.1, rel=1e-4)
    # one-line errors, exit 2: unknown suffix, nothing to do, density on the wrong builder
    for args, text in [(("AgI", "--out", str(tmp_path / "x.nonsense")), "--out"),
                       (("AgI",), "nothing to do"),
                       (("AgI", "--density-g-cm3", "2", "--check"), "--density-g-cm3")]:
        out = run(*args)
        assert out.returncode == 2 and out.stderr.count("\n") == 1 and text in out.stderr, out.stderr
    assert not (tmp_path / "x.nonsense").exists()
