"""``ramanscreen structure``: write a built cell in any ASE format, and check it against the
published crystallographic data (space group, lattice, nearest-neighbour distances) and,
optionally, the MLFF's residual pressure after a short relaxation."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from ramanscreen.flows.cli import app
from ramanscreen.tasks.common import InputError

console = Console(highlight=False, soft_wrap=True)


@app.command()
def structure(
    name: str = typer.Argument(..., help="Builder name or alias (AgI, Na3SbS4, Na3SbS4-W, Na3PS4, gamma-Na3PS4, "
                               "LLZO, LLZO-Ta, LLZO-Al, LLZO-Ga; a doped garnet with its dopant fraction as "
                               "LLZO-Ta:x=0.25 or as its formula, Li6.75La3Zr1.75Ta0.25O12) or a structure file."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output file in any format ASE writes, chosen by "
                                         "the suffix (.cif, .xyz = extxyz, .traj, POSCAR, .pdb, ...)."),
    n_atoms: int | None = typer.Option(None, "--n-atoms", help="Supercell size (default: the paper's)."),
    seed: int = typer.Option(0, "--seed", help="Seed for disordered sublattices (AgI, LLZO and its doped cells, W vacancy, γ PS4)."),
    density_g_cm3: float | None = typer.Option(None, "--density-g-cm3", help="gamma-Na3PS4 only: starting density "
                                               "(default: the builder's γ estimate)."),
    check: bool = typer.Option(False, "--check", help="Print space group, lattice constants and nearest-neighbour "
                               "distances against the published data (exit 1 if any is out of bounds)."),
    calculator: str | None = typer.Option(None, "--calculator", help="With --check: also relax the positions with "
                                          "this MLFF (chgnet, sevenn, ase:module:Class) and report the pressure."),
    relax_steps: int = typer.Option(40, "--relax-steps", help="With --calculator: at most this many FIRE steps."),
    fmt: str | None = typer.Option(None, "--format", help="ASE format name if the suffix does not tell."),
) -> None:
    """Write a built structure to a file and/or check it against published data."""
    from ramanscreen.tasks.structures import (
        PUBLISHED,
        check_structure,
        formal_charge,
        load_structure,
        min_distance_A,
        relax_check,
        resolve_name,
        write_structure,
    )

    if out is None and not check:
        raise InputError("nothing to do", field="out", fix="give --out FILE and/or --check")
    options = {} if density_g_cm3 is None else {"density_g_cm3": density_g_cm3}
    if options and resolve_name(name) != "gamma-Na3PS4":
        raise InputError("--density-g-cm3 applies to gamma-Na3PS4 only", field="density_g_cm3",
                         fix="drop --density-g-cm3 or build gamma-Na3PS4")
    if options:
        from ramanscreen.tasks.structures import build_structure

        atoms = build_structure(name, n_atoms=n_atoms, seed=seed, **options)
    else:
        atoms = load_structure(name, n_atoms=n_atoms, seed=seed)
    if out is not None:
        write_structure(atoms, out, fmt=fmt)
        console.print(f"{out}: {atoms.get_chemical_formula()} ({len(atoms)} atoms), charge {formal_charge(atoms):+d}, "
                  f"min distance {min_distance_A(atoms):.2f} Å")
    if not check:
        return
    canonical = resolve_name(name)
    if canonical is None or canonical not in PUBLISHED:
        raise InputError(f"--check compares a builder with its published data; {name!r} is not a builder",
                         field="structure", fix=f"use one of {', '.join(PUBLISHED)}")
    rows = check_structure(atoms, canonical)
    table = Table(title=f"{canonical}: {atoms.get_chemical_formula()} vs published data")
    for col in ("quantity", "built", "published", ""):
        table.add_column(col)
    for r in rows:
        table.add_row(r.quantity, r.value, r.reference, "ok" if r.ok else "[red]OUT[/]")
    ref = PUBLISHED[canonical]
    ok = all(r.ok for r in rows)
    if calculator is not None:
        rc = relax_check(atoms, calculator, steps=relax_steps)
        table.add_row(f"pressure as built, {rc.model} (GPa)", f"{rc.pressure0_GPa:+.3f}", "", "")
        p_ok = abs(rc.pressure_GPa) <= ref.max_pressure_GPa
        e_ok = -rc.energy_change_meV_atom <= ref.max_relax_meV_atom
        table.add_row(f"pressure after {rc.steps} steps (GPa)", f"{rc.pressure_GPa:+.3f}",
                      f"|P| <= {ref.max_pressure_GPa:g}", "ok" if p_ok else "[red]OUT[/]")
        table.add_row("relaxation energy (meV/atom)", f"{rc.energy_change_meV_atom:+.1f}",
                      f">= -{ref.max_relax_meV_atom:g}", "ok" if e_ok else "[red]OUT[/]")
        ok = ok and p_ok and e_ok
    console.print(table)
    if "phase" in atoms.info:
        console.print(f"phase: {atoms.info['phase']}")
    console.print(f"source: {ref.source}")
    if not ok:
        raise typer.Exit(1)
