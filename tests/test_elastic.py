"""Elastic constants by finite strains: EMT Cu against EMT's own energy derivatives, VRH
formulas against the cubic closed forms, Born criteria, the table and the CLI."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.units import GPa

from ramanscreen.tasks import elastic as el
from ramanscreen.tasks.common import InputError


def _relaxed_cu():
    from ase.eos import EquationOfState

    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    vols, ens = [], []
    cell0 = atoms.get_cell()
    for s in np.linspace(0.98, 1.02, 9):
        a = atoms.copy()
        a.set_cell(cell0 * s, scale_atoms=True)
        a.calc = EMT()
        vols.append(a.get_volume())
        ens.append(a.get_potential_energy())
    eos = EquationOfState(vols, ens, eos="birchmurnaghan")
    v0, _e0, b0 = eos.fit()
    atoms.set_cell(cell0 * (v0 / atoms.get_volume()) ** (1 / 3), scale_atoms=True)
    return atoms, b0 / GPa


def _energy_second_derivative(atoms, strain_of_eta, eta=2e-3):
    """d²E/dη² / V (GPa) by a 5-point stencil of the energy along a strain path."""
    v = atoms.get_volume()
    es = []
    cell0 = np.asarray(atoms.get_cell())
    for k in (-2, -1, 0, 1, 2):
        a = atoms.copy()
        a.set_cell(cell0 @ (np.eye(3) + strain_of_eta(k * eta)), scale_atoms=True)
        a.calc = EMT()
        es.append(a.get_potential_energy())
    e = np.array(es)
    d2 = (-e[0] + 16 * e[1] - 30 * e[2] + 16 * e[3] - e[4]) / (12 * eta**2)
    return d2 / v / GPa


def test_emt_cu_stress_route_matches_energy_route():
    atoms, b_eos = _relaxed_cu()
    res = el.elastic_tensor(atoms, EMT(), strain=0.002)
    c = res.c_gpa
    assert res.cubic_form and res.born_stable and all(res.born_cubic.values())
    assert np.max(np.abs(res.residual_stress_gpa)) < 0.05
    c11, c12, c44 = c[0, 0], c[0, 1], c[3, 3]
    # bulk modulus: stress route (C11 + 2 C12)/3 vs the equation of state of the energy
    assert (c11 + 2 * c12) / 3 == pytest.approx(b_eos, rel=0.01)
    assert res.moduli["bulk_modulus_voigt_gpa"] == pytest.approx(res.moduli["bulk_modulus_reuss_gpa"], rel=1e-6)
    # C11 - C12 from a volume-conserving tetragonal strain: E/V = (C11 - C12) η² (+ O(η³))
    tet = _energy_second_derivative(atoms, lambda h: np.diag([h, -h, 0.0]))
    assert tet / 2 == pytest.approx(c11 - c12, rel=0.02)
    # C44 from a shear with engineering strain γ = 2η on yz: E/V = ½ C44 γ² = 2 C44 η²
    shear = _energy_second_derivative(atoms, lambda h: np.array([[0, 0, 0], [0, 0, h], [0, h, 0.0]]))
    assert shear / 4 == pytest.approx(c44, rel=0.02)


def test_vrh_cubic_closed_forms_and_born():
    c11, c12, c44 = 170.0, 120.0, 75.0
    c = np.zeros((6, 6))
    c[:3, :3] = c12
    c[range(3), range(3)] = c11
    c[range(3, 6), range(3, 6)] = c44
    m = el.vrh_moduli(c)
    assert m["bulk_modulus_voigt_gpa"] == pytest.approx((c11 + 2 * c12) / 3)
    assert m["shear_modulus_voigt_gpa"] == pytest.approx((c11 - c12 + 3 * c44) / 5)
    gr = 5 * (c11 - c12) * c44 / (4 * c44 + 3 * (c11 - c12))
    assert m["shear_modulus_reuss_gpa"] == pytest.approx(gr)
    k, g = m["bulk_modulus_vrh_gpa"], m["shear_modulus_vrh_gpa"]
    assert m["youngs_modulus_vrh_gpa"] == pytest.approx(9 * k * g / (3 * k + g))
    assert el.is_cubic_form(c) and all(el.born_cubic(c).values())
    bad = c.copy()
    bad[0, 1] = bad[1, 0] = bad[0, 2] = bad[2, 0] = bad[1, 2] = bad[2, 1] = 180.0  # C12 > C11
    assert not el.born_cubic(bad)["C11-C12>0"] and np.linalg.eigvalsh(bad).min() < 0


def test_table_and_cli(tmp_path):
    res = el.elastic_tensor(bulk("Al", "fcc", a=4.05, cubic=True), EMT(), relax_ions=True)
    path = el.write_elastic_table([res], tmp_path / "e.parquet", source="Al")
    t = pq.read_table(path)
    row = t.to_pylist()[0]
    assert row["c11_gpa"] > row["c12_gpa"] > 0 and row["born_stable"] and "not DFT" in row["provenance"]
    assert row["pressure_gpa"] == 0.0  # the cell as given (results.PRESSURE_GPA_DOC)
    assert b"not DFT" in t.schema.metadata[b"provenance"]
    cif = tmp_path / "cu.cif"
    bulk("Cu", "fcc", a=3.59, cubic=True).write(cif)
    out = tmp_path / "cli.parquet"
    r = subprocess.run([sys.executable, "-m", "ramanscreen.flows", "elastic", str(cif), "--calculator",
                        "ase:ase.calculators.emt:EMT", "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "not DFT" in r.stdout and pq.read_table(out).num_rows == 1
    with pytest.raises(InputError, match="strain"):
        el.elastic_tensor(bulk("Cu", cubic=True), EMT(), strain=0.2)
