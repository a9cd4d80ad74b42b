"""Elastic constants by finite strains, Voigt–Reuss–Hill moduli and Born stability.

For each of the six Voigt strain components ε_j (1 = xx, 2 = yy, 3 = zz, 4 = 2ε_yz, 5 = 2ε_xz,
6 = 2ε_xy) the reference cell is deformed by ±δ, ``cell' = cell · (I + ε)``, atoms move with
it (homogeneous strain; with ``relax_ions`` they are then relaxed at fixed cell), and the
stress σ_i (ASE's Voigt order xx, yy, zz, yz, xz, xy, tension positive) is taken from the
calculator. Central differences give

    C_ij = (σ_i(+δ e_j) − σ_i(−δ e_j)) / (2δ)          (GPa),

symmetrised as (C + Cᵀ)/2 (the asymmetry is reported). The stress of the unstrained cell is
reported too: a structure that is not relaxed has a residual stress and its C_ij are those of
a pre-stressed crystal.

Moduli (GPa), with S = C⁻¹:

    K_V = [(C11+C22+C33) + 2(C12+C13+C23)] / 9
    G_V = [(C11+C22+C33) − (C12+C13+C23) + 3(C44+C55+C66)] / 15
    K_R = 1 / [(S11+S22+S33) + 2(S12+S13+S23)]
    G_R = 15 / [4(S11+S22+S33) − 4(S12+S13+S23) + 3(S44+S55+S66)]
    K_H = (K_V+K_R)/2,  G_H = (G_V+G_R)/2,  E = 9KG/(3K+G),  ν = (3K−2G)/(2(3K+G))

Born stability (Mouhat & Coudert, Phys. Rev. B 90, 224104 (2014)): the crystal is
mechanically stable when C is positive definite (all eigenvalues > 0); for cubic symmetry
this is C11 − C12 > 0, C11 + 2C12 > 0, C44 > 0, also reported when C has the cubic form.

The numbers come from whatever calculator is used (an MLFF, EMT, ...): they are **not DFT**,
and every table says which model made them.

>>> from ase.build import bulk
>>> from ase.calculators.emt import EMT
>>> res = elastic_tensor(bulk("Cu", "fcc", a=3.59, cubic=True), EMT())
>>> res.cubic_form, res.born_stable
(True, True)
>>> round(res.moduli["bulk_modulus_vrh_gpa"])  # EMT Cu: (C11 + 2 C12)/3
134
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ramanscreen.tasks.common import InputError, write_table
from ramanscreen.tasks.results import BUILT_DENSITY_PRESSURE_GPA

#: Default strain amplitude δ (dimensionless) and ionic-relaxation force threshold (eV/Å).
DEFAULT_STRAIN = 0.005
DEFAULT_FMAX_EV_A = 0.01
#: Relative tolerance for "C has the cubic form".
CUBIC_TOLERANCE = 0.02
_VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))


def voigt_strain_matrix(j: int, delta: float) -> np.ndarray:
    """Symmetric strain tensor for Voigt component ``j`` (0-based) of engineering amplitude ``delta``.

    >>> float(voigt_strain_matrix(3, 0.01)[1, 2])
    0.005
    """
    eps = np.zeros((3, 3))
    a, b = _VOIGT[j]
    if a == b:
        eps[a, a] = delta
    else:
        eps[a, b] = eps[b, a] = delta / 2.0
    return eps


@dataclasses.dataclass
class ElasticResult:
    """C_ij (GPa, 6×6 Voigt), moduli, stability, and how they were computed."""

    c_gpa: np.ndarray
    formula: str
    n_atoms: int
    calculator: str
    strain: float
    relax_ions: bool
    residual_stress_gpa: np.ndarray
    asymmetry_gpa: float
    moduli: dict[str, float]
    eigenvalues_gpa: np.ndarray
    born_stable: bool
    cubic_form: bool
    born_cubic: dict[str, bool] | None
    volume_A3: float
    density_g_cm3: float

    def row(self) -> dict[str, Any]:
        """One table row: C_ij (upper triangle), moduli, stability flags, settings."""
        out: dict[str, Any] = {"formula": self.formula, "n_atoms": self.n_atoms, "volume_A3": self.volume_A3,
                               "density_g_cm3": self.density_g_cm3}
        for i in range(6):
            for j in range(i, 6):
                out[f"c{i + 1}{j + 1}_gpa"] = float(self.c_gpa[i, j])
        out.update(self.moduli)
        out["min_eigenvalue_gpa"] = float(self.eigenvalues_gpa.min())
        out["born_stable"] = bool(self.born_stable)
        out["cubic_form"] = bool(self.cubic_form)
        out["born_cubic_stable"] = None if self.born_cubic is None else bool(all(self.born_cubic.values()))
        # the cell as given (PRESSURE_GPA_DOC): its nominal pressure; the model's stress is the residual
        out["pressure_gpa"] = BUILT_DENSITY_PRESSURE_GPA
        out["max_residual_stress_gpa"] = float(np.max(np.abs(self.residual_stress_gpa)))
        out["asymmetry_gpa"] = float(self.asymmetry_gpa)
        out["strain"] = self.strain
        out["relax_ions"] = self.relax_ions
        out["calculator"] = self.calculator
        out["method"] = "finite strain ±δ, central difference of the stress"
        out["provenance"] = f"model ({self.calculator}), not DFT"
        return out


def _stress_gpa(atoms) -> np.ndarray:
    from ase.units import GPa

    return np.asarray(atoms.get_stress(voigt=True), dtype=float) / GPa


def _relax(atoms, fmax: float, steps: int) -> None:
    from ase.optimize import BFGS

    opt = BFGS(atoms, logfile=None)
    opt.run(fmax=fmax, steps=steps)


def elastic_tensor(atoms, calculator, *, strain: float = DEFAULT_STRAIN, relax_ions: bool = False,
                   fmax_ev_a: float = DEFAULT_FMAX_EV_A, max_steps: int = 200, calculator_name: str | None = None,
                   ) -> ElasticResult:
    """C_ij of ``atoms`` with ``calculator`` by ±``strain`` finite strains (see the module docstring)."""
    if not 0 < strain < 0.05:
        raise InputError(f"must be in (0, 0.05), got {strain}", field="strain", fix="use e.g. 0.005")
    if not all(atoms.pbc):
        raise InputError("the structure is not periodic in all three directions", field="structure",
                         fix="elastic constants need a bulk crystal with pbc=True")
    ref = atoms.copy()
    ref.calc = calculator
    residual = _stress_gpa(ref)
    cell0 = np.asarray(ref.get_cell())
    c = np.zeros((6, 6))
    for j in range(6):
        stresses = []
        for sign in (1.0, -1.0):
            a = ref.copy()
            a.calc = calculator
            deform = np.eye(3) + voigt_strain_matrix(j, sign * strain)
            a.set_cell(cell0 @ deform, scale_atoms=True)
            if relax_ions:
                _relax(a, fmax_ev_a, max_steps)
            stresses.append(_stress_gpa(a))
        c[:, j] = (stresses[0] - stresses[1]) / (2.0 * strain)
    asym = float(np.max(np.abs(c - c.T)))
    c = 0.5 * (c + c.T)
    moduli = vrh_moduli(c)
    eig = np.linalg.eigvalsh(c)
    cubic = is_cubic_form(c)
    name = calculator_name or getattr(calculator, "ramanscreen_info", {}).get("model") or type(calculator).__name__
    mass_g = float(np.sum(ref.get_masses())) / 6.02214076e23
    vol = float(ref.get_volume())
    return ElasticResult(
        c_gpa=c, formula=ref.get_chemical_formula(mode="hill", empirical=False), n_atoms=len(ref),
        calculator=str(name), strain=strain, relax_ions=relax_ions, residual_stress_gpa=residual,
        asymmetry_gpa=asym, moduli=moduli, eigenvalues_gpa=eig, born_stable=bool(eig.min() > 0),
        cubic_form=cubic, born_cubic=born_cubic(c) if cubic else None, volume_A3=vol,
        density_g_cm3=mass_g / (vol * 1e-24),
    )


def vrh_moduli(c_gpa: np.ndarray) -> dict[str, float]:
    """Voigt, Reuss and Hill bulk and shear moduli, Young's modulus, Poisson ratio, Pugh K/G.

    >>> c = np.zeros((6, 6)); c[:3, :3] = 60.0; c[range(3), range(3)] = 170.0; c[range(3, 6), range(3, 6)] = 75.0
    >>> m = vrh_moduli(c)
    >>> round(m["bulk_modulus_voigt_gpa"], 3), round(m["shear_modulus_voigt_gpa"], 3)
    (96.667, 67.0)
    """
    c = np.asarray(c_gpa, dtype=float)
    kv = (c[0, 0] + c[1, 1] + c[2, 2] + 2.0 * (c[0, 1] + c[0, 2] + c[1, 2])) / 9.0
    gv = (c[0, 0] + c[1, 1] + c[2, 2] - (c[0, 1] + c[0, 2] + c[1, 2]) + 3.0 * (c[3, 3] + c[4, 4] + c[5, 5])) / 15.0
    try:
        s = np.linalg.inv(c)
        kr = 1.0 / (s[0, 0] + s[1, 1] + s[2, 2] + 2.0 * (s[0, 1] + s[0, 2] + s[1, 2]))
        gr = 15.0 / (4.0 * (s[0, 0] + s[1, 1] + s[2, 2]) - 4.0 * (s[0, 1] + s[0, 2] + s[1, 2])
                     + 3.0 * (s[3, 3] + s[4, 4] + s[5, 5]))
    except np.linalg.LinAlgError:
        kr = gr = float("nan")
    kh, gh = 0.5 * (kv + kr), 0.5 * (gv + gr)
    e = 9.0 * kh * gh / (3.0 * kh + gh)
    nu = (3.0 * kh - 2.0 * gh) / (2.0 * (3.0 * kh + gh))
    return {
        "bulk_modulus_voigt_gpa": float(kv), "bulk_modulus_reuss_gpa": float(kr), "bulk_modulus_vrh_gpa": float(kh),
        "shear_modulus_voigt_gpa": float(gv), "shear_modulus_reuss_gpa": float(gr), "shear_modulus_vrh_gpa": float(gh),
        "youngs_modulus_vrh_gpa": float(e), "poisson_ratio_vrh": float(nu), "pugh_ratio_vrh": float(kh / gh),
    }


def is_cubic_form(c_gpa: np.ndarray, tol: float = CUBIC_TOLERANCE) -> bool:
    """True when C has the cubic pattern (C11=C22=C33, C12=C13=C23, C44=C55=C66, rest 0) within ``tol``·max|C|."""
    c = np.asarray(c_gpa)
    scale = tol * float(np.max(np.abs(c)))
    groups = [[(0, 0), (1, 1), (2, 2)], [(0, 1), (0, 2), (1, 2)], [(3, 3), (4, 4), (5, 5)]]
    for g in groups:
        vals = [c[i, j] for i, j in g]
        if max(vals) - min(vals) > scale:
            return False
    mask = np.ones((6, 6), bool)
    mask[:3, :3] = False
    mask[range(3, 6), range(3, 6)] = False
    return bool(np.all(np.abs(c[mask]) <= scale))


def born_cubic(c_gpa: np.ndarray) -> dict[str, bool]:
    """The cubic Born criteria, each by name.

    >>> born_cubic(np.diag([1, 1, 1, 1, 1, 1.0]))
    {'C11-C12>0': True, 'C11+2C12>0': True, 'C44>0': True}
    """
    c = np.asarray(c_gpa)
    c11 = (c[0, 0] + c[1, 1] + c[2, 2]) / 3.0
    c12 = (c[0, 1] + c[0, 2] + c[1, 2]) / 3.0
    c44 = (c[3, 3] + c[4, 4] + c[5, 5]) / 3.0
    return {"C11-C12>0": bool(c11 - c12 > 0), "C11+2C12>0": bool(c11 + 2 * c12 > 0), "C44>0": bool(c44 > 0)}


def write_elastic_table(results: list[ElasticResult], path: str | os.PathLike[str], *, source: str = "") -> Path:
    """One row per structure to Parquet (or CSV); the footer names the model (not DFT)."""
    if not results:
        raise InputError("no elastic results to write", field="structures", fix="pass at least one structure")
    rows = [r.row() for r in results]
    keys = list(rows[0])
    columns = {k: [row[k] for row in rows] for k in keys}
    meta = {"ramanscreen.kind": "elastic", "units": json.dumps({"c*_gpa": "GPa", "*_gpa": "GPa", "volume_A3": "Å^3"}),
            "provenance": "elastic constants from the named calculator (MLFF/EMT), not DFT", "source": source}
    return write_table(columns, path, metadata=meta)


__all__ = [
    "DEFAULT_FMAX_EV_A",
    "DEFAULT_STRAIN",
    "ElasticResult",
    "born_cubic",
    "elastic_tensor",
    "is_cubic_form",
    "voigt_strain_matrix",
    "vrh_moduli",
    "write_elastic_table",
]
