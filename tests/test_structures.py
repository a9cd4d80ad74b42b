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
    build_structure,
    formal_charge,
    load_structure,
    min_distance_A,
    place_on_sites,
    supercell_to,
    write_structure,
)

EXPECTED = {
    # name: (n_atoms, formula) at the paper's sizes
    "AgI": (128, "Ag64I64"),
    "Na3SbS4": (128, "Na48S64Sb16"),
    "Na3SbS4-W": (127, "Na47S64Sb15W"),
    "Na3PS4": (256, "Na96P32S128"),
    "LLZO": (192, "La24Li56O96Zr16"),
}

#: Shortest cation-anion bond expected in each material (Å, from the cited structures).
BONDS = {
    "AgI": [("Ag", "I", 2.83)],
    "Na3SbS4": [("Sb", "S", 2.33)],
    "Na3SbS4-W": [("Sb", "S", 2.33), ("W", "S", 2.33)],
    "Na3PS4": [("P", "S", 2.06)],
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


def test_w_doping_removes_the_na_nearest_to_w():
    atoms = build_structure("Na3SbS4-W")
    w = int(np.flatnonzero(atoms.numbers == 74)[0])
    host = build_structure("Na3SbS4")
    d_host = host.get_distances(w, np.flatnonzero(host.numbers == 11), mic=True).min()
    d_doped = atoms.get_distances(w, np.flatnonzero(atoms.numbers == 11), mic=True)
    # one Na at the shortest host distance is gone
    n_host = np.isclose(host.get_distances(w, np.flatnonzero(host.numbers == 11), mic=True), d_host, atol=1e-3).sum()
    assert np.isclose(d_doped, d_host, atol=1e-3).sum() == n_host - 1


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
    assert load_structure("gamma-Na3PS4", n_atoms=16).get_chemical_formula() == "Na6P2S8"


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
