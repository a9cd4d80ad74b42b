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
    "LLZO-Ta": (188, "La24Li52O96Ta4Zr12"),  # x = 0.5: Li6.5La3Zr1.5Ta0.5O12
    "LLZO-Al": (188, "Al2La24Li50O96Zr16"),  # x = 0.25: Li6.25Al0.25La3Zr2O12
    "LLZO-Ga": (188, "Ga2La24Li50O96Zr16"),
}

#: Shortest cation-anion bond expected in each material (Å, from the cited structures).
BONDS = {
    "AgI": [("Ag", "I", 2.83)],
    "Na3SbS4": [("Sb", "S", 2.33)],
    "Na3SbS4-W": [("Sb", "S", 2.33), ("W", "S", 2.33)],
    "Na3PS4": [("P", "S", 2.06)],
    "gamma-Na3PS4": [("P", "S", 2.05)],
    "LLZO": [("Zr", "O", 2.11), ("La", "O", 2.53)],
    # the doped cells at their (smaller) lattice constants; the dopant on its host site, unrelaxed
    "LLZO-Ta": [("Zr", "O", 2.10), ("Ta", "O", 2.10), ("La", "O", 2.52)],
    "LLZO-Al": [("Zr", "O", 2.11), ("Al", "O", 1.91), ("La", "O", 2.52)],
    "LLZO-Ga": [("Zr", "O", 2.11), ("Ga", "O", 1.91), ("La", "O", 2.52)],
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
RELAX_SIZES = {"AgI": 32, "Na3SbS4": 16, "Na3SbS4-W": 31, "Na3PS4": 16, "gamma-Na3PS4": 64, "LLZO": 192,
               "LLZO-Ta": 192, "LLZO-Al": 192, "LLZO-Ga": 192}


#: Builders whose check fails as measured, kept visible (strict: the case fails once it passes).
RELAX_KNOWN_FAILURES = {
    "LLZO": "measured 2026-12-02: CHGNet leaves 1.77 GPa (from 3.75) after 40 steps on the 192-atom cubic cell, "
            "above the stated 1.5 GPa bound (an unmeasured estimate); not resolved",
    # measured 2026-12-02 (CHGNet 0.3.0, 40 FIRE steps, cell fixed at the published-data lattice, seed 0,
    # 188 atoms): the doped garnets share the pristine cell's excess pressure; energies within bounds
    "LLZO-Ta": "measured 2026-12-02: CHGNet leaves 1.95 GPa (from 2.32), -42 meV/atom, on Li6.5La3Zr1.5Ta0.5O12 "
               "at a = 12.95 A; above the 1.5 GPa bound, as pristine LLZO; not resolved",
    "LLZO-Al": "measured 2026-12-02: CHGNet leaves 2.67 GPa (from 3.76), -51 meV/atom, on Li6.25Al0.25La3Zr2O12 "
               "at a = 12.968 A; above the 1.5 GPa bound; not resolved",
    "LLZO-Ga": "measured 2026-12-02: CHGNet leaves 2.75 GPa (from 3.99), -44 meV/atom, on Li6.25Ga0.25La3Zr2O12 "
               "at a = 12.975 A; above the 1.5 GPa bound; not resolved",
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


# ---------------------------------------------------------------------------------------------
# doped cubic LLZO
# ---------------------------------------------------------------------------------------------
DOPED = ("LLZO-Ta", "LLZO-Al", "LLZO-Ga")


@pytest.mark.parametrize("name, x", [("LLZO-Ta", 0.25), ("LLZO-Ta", 0.5), ("LLZO-Ta", 0.75), ("LLZO-Al", 0.125),
                                     ("LLZO-Al", 0.25), ("LLZO-Ga", 0.25), ("LLZO-Ga", 0.5)])
def test_doped_garnet_is_charge_balanced_with_the_dopant_on_its_site(name, x):
    from ramanscreen.tasks.structures import GARNET_DOPANTS, LLZO_TET_MIN_DIST_A, _llzo_frame_and_li_sites

    d = GARNET_DOPANTS[name]
    atoms = build_structure(f"{name}:x={x}", seed=2)
    sym = np.array(atoms.get_chemical_symbols())
    counts = {el: int((sym == el).sum()) for el in ("Li", "La", "Zr", "O", d.element)}
    # one conventional cell = 8 formula units; Li from charge balance: 7 - x (Ta), 7 - 3x (Al, Ga)
    assert counts["Li"] == round(8 * (7 - d.li_removed * x)) and counts[d.element] == round(8 * x)
    assert counts["La"] == 24 and counts["O"] == 96 and counts["Zr"] == round(8 * (2 - (x if d.site == "16a" else 0)))
    assert formal_charge(atoms) == 0
    assert atoms.info["x"] == x and atoms.info["dopant_site"] == d.site
    # every dopant sits on a site of its host sublattice (16a Zr or 24d Li) of the parent cell
    host, sites, tet, _octa, _ = _llzo_frame_and_li_sites(1, atoms.info["lattice_A"])
    targets = host.positions[np.array(host.get_chemical_symbols()) == "Zr"] if d.site == "16a" else sites.positions[tet]
    from ase.geometry import get_distances

    _, dist = get_distances(atoms.positions[sym == d.element], targets, cell=atoms.cell, pbc=True)
    assert np.allclose(dist.min(axis=1), 0.0, atol=1e-6)
    if d.site == "24d":  # no Li in a face-sharing 96h (1.60 Å) nor on a 24d of a shared cage (3.98 Å)
        _, d_li = get_distances(atoms.positions[sym == d.element], atoms.positions[sym == "Li"], cell=atoms.cell, pbc=True)
        assert d_li.min() >= 2.0 - 1e-9
        _, d_tet = get_distances(atoms.positions[sym == d.element], sites.positions[tet], cell=atoms.cell, pbc=True)
        li_on_tet = np.isclose(get_distances(atoms.positions[sym == "Li"], sites.positions[tet], cell=atoms.cell,
                                             pbc=True)[1], 0.0, atol=1e-6).any(axis=0)
        assert (d_tet[:, li_on_tet] >= LLZO_TET_MIN_DIST_A).all()


def test_doped_garnet_sites_are_the_lowest_ewald_energy_and_reproducible():
    """The built cell is the candidate of lowest electrostatic energy, recomputed from the built
    atoms with pymatgen's independent Ewald sum; a seed reproduces it; more candidates never end higher."""
    from pymatgen.analysis.ewald import EwaldSummation
    from pymatgen.io.ase import AseAtomsAdaptor

    from ramanscreen.tasks.structures import GARNET_SITE_METHOD, OXIDATION_STATES

    a = build_structure("LLZO-Ga", seed=4)
    energies = a.info["candidate_energies_eV"]
    assert a.info["site_choice"] == GARNET_SITE_METHOD and len(energies) == 24
    assert a.info["ewald_energy_eV"] == min(energies) == energies[a.info["chosen_candidate"]]
    assert max(energies) - min(energies) > 1.0  # the candidates differ: the choice matters (eV per cell)
    structure = AseAtomsAdaptor.get_structure(a)
    structure.add_oxidation_state_by_element({el: OXIDATION_STATES[el] for el in set(a.get_chemical_symbols())})
    assert EwaldSummation(structure).total_energy == pytest.approx(a.info["ewald_energy_eV"], abs=2e-3)
    again = build_structure("LLZO-Ga", seed=4)
    assert np.array_equal(a.positions, again.positions) and a.get_chemical_symbols() == again.get_chemical_symbols()
    assert not np.array_equal(a.positions, build_structure("LLZO-Ga", seed=5).positions)
    one = build_structure("LLZO-Ga", seed=4, candidates=1)
    assert one.info["ewald_energy_eV"] >= a.info["ewald_energy_eV"]  # the first candidate is among the 24


def test_doped_garnet_names_formulas_and_bad_fractions():
    from ramanscreen.tasks.structures import (
        GARNET_DOPANTS,
        check_structure_spec,
        garnet_formula,
        parse_structure_spec,
        resolve_name,
        snap_garnet_fraction,
    )

    assert parse_structure_spec("LLZO-Ta:x=0.25") == ("LLZO-Ta", {"x": 0.25})
    assert parse_structure_spec("Al-LLZO:y=0.25") == ("LLZO-Al", {"x": 0.25})
    assert parse_structure_spec("Ga0.25Li6.25La3Zr2O12") == ("LLZO-Ga", {"x": 0.25})  # any element order
    assert resolve_name("Li7La3Zr2O12") == "LLZO" and resolve_name("Li6.5La3Zr1.4Ta0.5O12") is None  # not balanced
    for name in DOPED:
        x = GARNET_DOPANTS[name].default_x
        built = build_structure(garnet_formula(name, x))  # the formula unit is a structure name
        assert built.info["material"] == name and built.info["formula"] == garnet_formula(name, x)
    # n_atoms: the doped cell's own size, or parent cells (multiples of 192)
    assert len(build_structure("LLZO-Ta:x=0.25", n_atoms=190)) == 190
    assert len(build_structure("LLZO-Ta:x=0.25", n_atoms=192)) == 190
    assert snap_garnet_fraction("LLZO-Ta", 0.3) == 0.25 and snap_garnet_fraction("LLZO-Ga", 0.3, n_cells=2) == 0.3125
    bad = [("LLZO-Ta:x=0.3", None, "x", "multiple of 0.125"), ("LLZO-Al:x=0.5", None, "x", "0 <= x <= 0.39"),
           ("LLZO-Ga:x=abc", None, "structure", "not a number"), ("LLZO-Ta:z=1", None, "structure", "cannot read"),
           ("AgI:x=0.1", None, "structure", "no composition parameter"), ("LLZO-Al", 190, "n_atoms", "188, 376")]
    for spec, n, field, text in bad:
        with pytest.raises(InputError, match=text) as info:
            check_structure_spec(spec, n)
        assert info.value.field == field
        with pytest.raises(InputError, match=text):
            build_structure(spec, n_atoms=n)


def test_doped_garnet_lattice_follows_published_data_and_the_check_can_fail():
    """a(x) is linear from the parent (Awaka 2011) through the dopant's published point; a
    composition outside the published spread (Ta x = 1) shows OUT rather than passing."""
    from ramanscreen.tasks.structures import LLZO_A, garnet_lattice_A

    ta = [garnet_lattice_A("LLZO-Ta", x) for x in (0.0, 0.25, 0.5, 0.75)]
    assert ta[0] == LLZO_A and np.all(np.diff(ta) < 0)  # Ta5+ (0.64 Å) is smaller than Zr4+ (0.72 Å)
    for name, x in (("LLZO-Ta", 0.25), ("LLZO-Ta", 0.5), ("LLZO-Al", 0.25), ("LLZO-Ga", 0.125), ("LLZO-Ga", 0.25)):
        rows = check_structure(build_structure(f"{name}:x={x}"), name)
        assert all(r.ok for r in rows), [r for r in rows if not r.ok]
    rows = {r.quantity: r for r in check_structure(build_structure("LLZO-Ta:x=1.0"), "LLZO-Ta")}
    assert not rows["a (A)"].ok and rows["space group (La+Zr+O sublattice)"].ok
    # a dopant that is too close to O fails its bound
    squeezed = build_structure("LLZO-Al", lattice_A=12.0 + 0.6)
    assert not {r.quantity: r for r in check_structure(squeezed, "LLZO-Al")}["a (A)"].ok


def test_ewald_matrix_against_pymatgen():
    from pymatgen.analysis.ewald import EwaldSummation
    from pymatgen.io.ase import AseAtomsAdaptor

    from ramanscreen.tasks.structures import OXIDATION_STATES, ewald_site_matrix

    for atoms in (build_structure("Na3SbS4", n_atoms=16), build_structure("LLZO-Ta", seed=0)):
        q = np.array([OXIDATION_STATES[s] for s in atoms.get_chemical_symbols()], float)
        mine = q @ ewald_site_matrix(atoms.positions, atoms.cell.array) @ q
        structure = AseAtomsAdaptor.get_structure(atoms)
        structure.add_oxidation_state_by_element({el: OXIDATION_STATES[el] for el in set(atoms.get_chemical_symbols())})
        assert mine == pytest.approx(EwaldSummation(structure).total_energy, abs=2e-3)


def test_explore_design_space_formulas_build_and_featurise():
    """The explore framework's formulas are structure names, and the surrogate featurises what was built."""
    from ramanscreen.tasks.explore import DesignSpace
    from ramanscreen.tasks.structures import GARNET_DOPANTS
    from ramanscreen.tasks.surrogate import composition_features

    for name in DOPED:
        d = GARNET_DOPANTS[name]
        space = DesignSpace(d.formula_template, (0.0, d.max_x), (298.0, 573.0), (0.01, 0.5))
        formula = space.formula(0.25)
        atoms = build_structure(formula)
        assert atoms.info["material"] == name and atoms.info["x"] == 0.25 and formal_charge(atoms) == 0
        from pymatgen.core import Composition

        assert Composition(atoms.get_chemical_formula()).fractional_composition.almost_equals(
            Composition(formula).fractional_composition)
        # the results tables record the cell's formula (mode="metal"): the same descriptors as the formula unit
        elements = ["Li", "La", "Zr", "O", d.element]
        cell_feats = composition_features(atoms.get_chemical_formula(mode="metal"), elements)
        unit_feats = composition_features(formula, elements)
        assert cell_feats.keys() == unit_feats.keys() and all(np.isfinite(v) for v in cell_feats.values())
        assert [cell_feats[k] for k in cell_feats] == pytest.approx([unit_feats[k] for k in cell_feats], rel=1e-9)


def test_cli_structure_builds_and_checks_a_doped_garnet(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "ramanscreen.flows", "structure", "LLZO-Ta:x=0.25", "--check",
                          "--out", str(tmp_path / "t.xyz")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "Ia-3d (230)" in out.stdout and "shortest Ta-O" in out.stdout and "OUT" not in out.stdout
    back = load_structure(tmp_path / "t.xyz")
    assert back.get_chemical_formula() == "La24Li54O96Ta2Zr14"
    bad = subprocess.run([sys.executable, "-m", "ramanscreen.flows", "structure", "LLZO-Ta:x=0.3", "--check"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "multiple of 0.125" in bad.stderr, bad.stderr
