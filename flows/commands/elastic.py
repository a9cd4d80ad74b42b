"""``ramanscreen elastic``: C_ij by finite strains with an ASE calculator, VRH moduli, Born stability."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from ramanscreen.flows.cli import app
from ramanscreen.tasks.elastic import DEFAULT_FMAX_EV_A, DEFAULT_STRAIN

out = Console(highlight=False, soft_wrap=True)


@app.command()
def elastic(
    structures: list[str] = typer.Argument(..., help="Structure files (CIF/POSCAR/extxyz) or builder names; each should be relaxed."),
    calculator: str = typer.Option("chgnet", "--calculator", help="chgnet | sevenn | ase:module:Class (e.g. ase:ase.calculators.emt:EMT)."),
    out_file: Path = typer.Option(..., "--out", "-o", help="Table of C_ij, moduli and stability, one row per structure (.parquet or .csv)."),
    strain: float = typer.Option(DEFAULT_STRAIN, "--strain", help="Strain amplitude δ of the ± deformations."),
    relax_ions: bool = typer.Option(False, "--relax-ions", help="Relax the ions at each strained cell (relaxed-ion C_ij)."),
    fmax_ev_a: float = typer.Option(DEFAULT_FMAX_EV_A, "--fmax-ev-a", help="Force threshold of the ionic relaxation (eV/Å)."),
) -> None:
    """Elastic tensor, bulk/shear/Young's moduli (Voigt–Reuss–Hill) and Born stability (not DFT: the calculator's)."""
    from ramanscreen.tasks.elastic import elastic_tensor, write_elastic_table
    from ramanscreen.tasks.md import check_elements, get_calculator
    from ramanscreen.tasks.structures import load_structure

    calc = get_calculator(calculator, properties=("energy", "forces", "stress"))
    results = []
    for s in structures:
        atoms = load_structure(s)
        check_elements(atoms, calc, calculator)
        res = elastic_tensor(atoms, calc, strain=strain, relax_ions=relax_ions, fmax_ev_a=fmax_ev_a,
                             calculator_name=calculator)
        results.append(res)
        _summary(s, res)
    write_elastic_table(results, out_file, source=", ".join(structures))
    out.print(f"wrote {out_file}", markup=False)


def _summary(name: str, r) -> None:
    t = Table(title=f"{name}: {r.formula} ({r.n_atoms} atoms), {r.calculator} — not DFT", show_header=False)
    t.add_column("quantity")
    t.add_column("value", justify="right")
    c = r.c_gpa
    t.add_row("C11 C22 C33 (GPa)", f"{c[0, 0]:.1f} {c[1, 1]:.1f} {c[2, 2]:.1f}")
    t.add_row("C12 C13 C23 (GPa)", f"{c[0, 1]:.1f} {c[0, 2]:.1f} {c[1, 2]:.1f}")
    t.add_row("C44 C55 C66 (GPa)", f"{c[3, 3]:.1f} {c[4, 4]:.1f} {c[5, 5]:.1f}")
    m = r.moduli
    t.add_row("K V/R/H (GPa)", f"{m['bulk_modulus_voigt_gpa']:.1f} / {m['bulk_modulus_reuss_gpa']:.1f} / {m['bulk_modulus_vrh_gpa']:.1f}")
    t.add_row("G V/R/H (GPa)", f"{m['shear_modulus_voigt_gpa']:.1f} / {m['shear_modulus_reuss_gpa']:.1f} / {m['shear_modulus_vrh_gpa']:.1f}")
    t.add_row("E, ν (Hill)", f"{m['youngs_modulus_vrh_gpa']:.1f} GPa, {m['poisson_ratio_vrh']:.3f}")
    born = "stable" if r.born_stable else f"UNSTABLE (min eigenvalue {r.eigenvalues_gpa.min():.2f} GPa)"
    t.add_row("Born (C positive definite)", born)
    if r.born_cubic is not None:
        t.add_row("Born, cubic form", ", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in r.born_cubic.items()))
    t.add_row("residual stress (max |σ|)", f"{abs(r.residual_stress_gpa).max():.3f} GPa"
              + ("  ← relax the structure first" if abs(r.residual_stress_gpa).max() > 0.5 else ""))
    out.print(t)
