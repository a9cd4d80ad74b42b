"""``ramanscreen mlff fit | validate | md``: distilled SNAP potentials run in LAMMPS."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from ramanscreen.flows.cli import app
from ramanscreen.flows.commands.md import _parse_kwargs
from ramanscreen.tasks.common import InputError
from ramanscreen.tasks.mlff.data import TrainingSettings as _TS
from ramanscreen.tasks.mlff.snap import SnapSettings

mlff_app = typer.Typer(no_args_is_help=True, add_completion=False, rich_markup_mode="rich")
app.add_typer(mlff_app, name="mlff",
              help="Distilled force fields: fit a SNAP to a teacher (CHGNet, any ASE calculator or labelled "
                   "frames), validate it, run long MD with it in LAMMPS.")
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)

#: Elements ranked as the mobile species when --species is not given (first present wins).
_MOBILE = ("Li", "Na", "Ag", "Cu", "K")


def _species(elements: list[str], given: list[str] | None) -> list[str]:
    if given:
        unknown = [s for s in given if s not in elements]
        if unknown:
            raise InputError(f"species {', '.join(unknown)} not in the potential ({', '.join(elements)})",
                             field="--species", fix=f"choose from {', '.join(elements)}")
        return list(given)
    for el in _MOBILE:
        if el in elements:
            return [el]
    return list(elements)


@mlff_app.command("fit")
def fit(
    structure: str | None = typer.Argument(None, help="Builder name (AgI, Na3SbS4, ...) or a structure file; "
                                                      "not needed with --training."),
    temperature_k: float = typer.Option(..., "--temperature-k", help="Temperature of the teacher MD (K)."),
    dt_fs: float = typer.Option(_TS.dt_fs, "--dt-fs", help="Teacher MD time step (fs)."),
    out_dir: Path = typer.Option(..., "--out-dir", help="Distillation directory (rerun to resume)."),
    pressure_gpa: float | None = typer.Option(None, "--pressure-gpa", help="Teacher MD in NPT at this pressure (GPa)."),
    teacher: str = typer.Option(_TS.teacher, "--teacher", help="chgnet | sevenn | ase:module:Class."),
    teacher_kw: list[str] | None = typer.Option(None, "--teacher-kw", help="Teacher keyword KEY=VALUE (repeat)."),
    training: Path | None = typer.Option(None, "--training", help="Labelled extxyz (energy, forces, stress) "
                                                                  "to fit instead of running the teacher."),
    md_steps: int = typer.Option(_TS.md_steps, "--md-steps", help="Teacher MD production steps."),
    equil_steps: int = typer.Option(_TS.equil_steps, "--equil-steps", help="Teacher MD equilibration steps."),
    sample_every: int = typer.Option(_TS.sample_every, "--sample-every", help="Label every k-th teacher MD step."),
    n_rattled: int = typer.Option(_TS.n_rattled, "--n-rattled", help="Extra rattled frames."),
    n_strained: int = typer.Option(_TS.n_strained, "--n-strained", help="Extra strained frames."),
    twojmax: int = typer.Option(SnapSettings.twojmax, "--twojmax", help="SNAP band limit 2J (4, 6 or 8)."),
    quadratic: bool = typer.Option(False, "--quadratic/--linear", help="Quadratic or linear SNAP."),
    select: bool = typer.Option(True, "--select/--no-select",
                                help="Try twojmax 4 first and keep it when its held-out force RMSE is within 90 % "
                                     "of the 0.1 eV/Å limit (~3× faster MD)."),
    cutoff_a: float = typer.Option(SnapSettings.cutoff_A, "--cutoff-a", help="SNAP neighbour cutoff (Å)."),
    pair_cutoff_a: float = typer.Option(SnapSettings.pair_cutoff_A, "--pair-cutoff-a",
                                        help="Cutoff (Å) of the two-body spline fitted with the SNAP; 0: none."),
    n_atoms: int | None = typer.Option(None, "--n-atoms", help="Supercell size for a builder name."),
    seed: int = typer.Option(0, "--seed", help="Seed for MD velocities, rattling, straining, committee."),
    threads: int | None = typer.Option(None, "--threads", help="Teacher torch threads."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Distil a SNAP potential from a teacher and write it (LAMMPS files + provenance JSON)."""
    from ramanscreen.tasks.md import RichProgress
    from ramanscreen.tasks.mlff.data import FILE_TEACHER, TrainingSettings
    from ramanscreen.tasks.mlff.distil import DistilSettings, distil
    from ramanscreen.tasks.structures import load_structure

    ts = TrainingSettings(teacher=FILE_TEACHER if training else teacher, teacher_kwargs=_parse_kwargs(teacher_kw),
                          temperature_k=temperature_k, pressure_gpa=pressure_gpa, dt_fs=dt_fs, equil_steps=equil_steps,
                          md_steps=md_steps, sample_every=sample_every, n_rattled=n_rattled, n_strained=n_strained,
                          seed=seed, num_threads=threads)
    settings = DistilSettings(training=ts, snap=SnapSettings(twojmax=twojmax, quadratic=quadratic, cutoff_A=cutoff_a,
                                                             pair_cutoff_A=pair_cutoff_a, seed=seed),
                              training_file=None if training is None else str(training),
                              try_twojmax=(4,) if select else ())
    settings.validate()
    if structure is None and training is None:
        raise InputError("give a structure (for the teacher MD) or --training FILE", field="structure",
                         fix="e.g. ramanscreen mlff fit AgI --temperature-k 500 --dt-fs 10 --out-dir fits/agi")
    atoms = load_structure(structure, n_atoms=n_atoms, seed=seed) if structure is not None else None
    if training is not None:
        from ramanscreen.tasks.mlff.data import read_labelled

        read_labelled(training)  # a bad file is an error before anything is written
        calc = None
    else:
        from ramanscreen.tasks.md import check_elements
        from ramanscreen.tasks.mlff.data import teacher_calculator

        calc = teacher_calculator(ts)
        check_elements(atoms, calc, teacher)
    desc = f"teacher MD {atoms.get_chemical_formula() if atoms is not None else ''} {temperature_k:g} K"
    with RichProgress(desc, disable=quiet or training is not None) as bar:
        res = distil(atoms, settings, out_dir, calculator=calc, progress=bar)
    pot = res.potential
    ho = pot.info["holdout_errors"]
    flag = " [red]FLAGGED[/] (above {:.2g} eV/Å)".format(pot.info["force_rmse_limit_eV_A"]) if pot.info["flagged"] else ""
    out.print(f"{pot.path}: {pot.method}, {len(pot.elements)} elements, twojmax {pot.settings.twojmax} "
              f"{'quadratic' if pot.settings.quadratic else 'linear'}"
              f"{f' + pair spline to {pot.settings.pair_cutoff_A:g} Å' if pot.settings.pair_cutoff_A else ''}; held-out force RMSE {ho['force_rmse_eV_A']:.3f} "
              f"eV/Å (MAE {ho['force_mae_eV_A']:.3f}), energy RMSE {ho['energy_rmse_meV_atom']:.2f} meV/atom over "
              f"{ho['n_frames']} frames{flag}", markup=True)


@mlff_app.command("validate")
def validate(
    fit_dir: Path = typer.Argument(..., help="Distillation directory written by `ramanscreen mlff fit` (its --out-dir)."),
    out_table: Path = typer.Option(..., "--out", "-o", help="mlff_validation table (.parquet or .csv)."),
    material: str | None = typer.Option(None, "--material", help="Material name for the rows (default: formula)."),
    species: list[str] | None = typer.Option(None, "--species", "-s", help="Mobile species to compare D for (repeat)."),
    potential: Path | None = typer.Option(None, "--potential", help="A refined potential's .snap.json instead."),
    dynamics: bool = typer.Option(True, "--dynamics/--no-dynamics",
                                  help="Also run the distilled potential like the teacher MD and compare D and VDOS."),
) -> None:
    """Force/energy errors on held-out teacher frames, and D/VDOS of a distilled run vs the teacher run."""
    from ramanscreen.tasks.mlff.distil import load_distilled, start_structure
    from ramanscreen.tasks.mlff.validate import compare_dynamics, validation_rows, write_validation_table

    if out_table.suffix not in (".parquet", ".csv"):
        raise InputError(f"unknown table format {out_table.suffix!r}", file=out_table, field="--out",
                         fix="use .parquet or .csv")
    res = load_distilled(fit_dir, potential=potential)
    pot = res.potential
    sp = _species(pot.elements, species)
    name = material or pot.info.get("material") or pot.info.get("formula") or "".join(pot.elements)
    dyn = None
    if dynamics:
        if res.data.teacher_traj is None or not Path(res.data.teacher_traj).is_file():
            raise InputError("this distillation has no teacher run to compare with", file=fit_dir,
                             field="--dynamics", fix="pass --no-dynamics (training from a file has no teacher run)")
        dyn = compare_dynamics(start_structure(fit_dir), pot, res.data.teacher_traj, fit_dir / "validation", species=sp)
    rows = validation_rows(name, pot, res.data.holdout, species=sp, dynamics=dyn)
    write_validation_table(rows, out_table)
    table = Table(title=f"mlff_validation ({pot.method})")
    cols = ["material", "species", "force_rmse_eV_A", "force_mae_eV_A", "energy_rmse_meV_atom", "flagged",
            "D_teacher_cm2_s", "D_distilled_cm2_s", "vdos_overlap", "comparison_ps"]
    for c in cols:
        table.add_column(c)
    for r in rows:
        table.add_row(*[f"{r[c]:.3g}" if isinstance(r[c], float) else str(r[c]) for c in cols])
    out.print(table)
    out.print(f"{out_table}: {len(rows)} row(s)")


@mlff_app.command("md")
def md(
    structure: str = typer.Argument(..., help="Builder name (AgI, Na3SbS4, ...) or a structure file."),
    potential: Path = typer.Option(..., "--potential", "-p", help="The potential's .snap.json, or a distillation "
                                                                  "directory (its potential, and --refine from it)."),
    temperature_k: float = typer.Option(..., "--temperature-k", help="Temperature in K."),
    dt_fs: float = typer.Option(..., "--dt-fs", help="MD time step in fs."),
    steps: int = typer.Option(..., "--steps", help="Production steps."),
    out_dir: Path = typer.Option(..., "--out-dir", help="Run directory (md.traj + md.json when done; rerun to resume)."),
    equil_steps: int = typer.Option(0, "--equil-steps", help="Equilibration steps before production (not stored)."),
    ensemble: str = typer.Option("nvt-nhc", "--ensemble", help="nvt-nhc (fix nvt) | npt (fix npt iso)."),
    pressure_gpa: float = typer.Option(0.0, "--pressure-gpa", help="Pressure for --ensemble npt, GPa."),
    write_every: int = typer.Option(1, "--write-every", help="Store a frame every k production steps."),
    alpha_stride: int = typer.Option(10, "--alpha-stride", help="Predict α on every n-th stored frame (recorded)."),
    checkpoint_every: int = typer.Option(1000, "--checkpoint-every", help="Steps per LAMMPS chunk and checkpoint."),
    seed: int = typer.Option(0, "--seed", help="Seed for velocities."),
    n_atoms: int | None = typer.Option(None, "--n-atoms", help="Supercell size (builder default: the paper's)."),
    refine: bool = typer.Option(False, "--refine/--no-refine", help="On-the-fly refinement against the teacher "
                                                                    "(needs a distillation directory as --potential)."),
    max_rounds: int = typer.Option(3, "--max-rounds", help="Most refinement rounds."),
    restart: bool = typer.Option(False, "--restart", help="Discard a partial or finished run in --out-dir and start over."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Run MD with a distilled SNAP inside LAMMPS (NVT/NPT Nosé–Hoover), in the project's trajectory format."""
    from ramanscreen.tasks.md import RichProgress
    from ramanscreen.tasks.mlff.distil import load_distilled
    from ramanscreen.tasks.mlff.lammps_md import LammpsMDSettings, run_lammps_md
    from ramanscreen.tasks.mlff.refine import RefineSettings
    from ramanscreen.tasks.mlff.snap import SnapPotential
    from ramanscreen.tasks.structures import load_structure

    settings = LammpsMDSettings(temperature_k=temperature_k, dt_fs=dt_fs, steps=steps, equil_steps=equil_steps,
                                ensemble=ensemble, pressure_gpa=pressure_gpa, write_every=write_every,
                                alpha_stride=alpha_stride, checkpoint_every=checkpoint_every, seed=seed)
    settings.validate()
    atoms = load_structure(structure, n_atoms=n_atoms, seed=seed)
    refiner = None
    if potential.is_dir() and (potential / "potential").is_dir():
        distilled = load_distilled(potential)
        pot = distilled.potential
        if refine:
            rs = RefineSettings(max_rounds=max_rounds)
            rs.validate()
            refiner = distilled.refiner(out_dir / "refine", rs)
    else:
        if refine:
            raise InputError("refinement needs the distillation directory (training frames, teacher)",
                             field="--potential", fix="pass the --out-dir of ramanscreen mlff fit")
        pot = SnapPotential.load(potential)
    with RichProgress(f"LAMMPS MD {atoms.get_chemical_formula()} {temperature_k:g} K", disable=quiet) as bar:
        result = run_lammps_md(atoms, pot, settings, out_dir, progress=bar, restart=restart, refiner=refiner)
    m = result.metadata
    resumed = f", resumed {m['n_resumes']}x" if m.get("n_resumes") else ""
    ext = m.get("extrapolation") or {}
    rounds = f", {ext.get('n_rounds', 0)} refinement round(s)" if ext else ""
    out.print(f"{result.traj_path}: {m['n_frames']} frames, {m['duration_ps']:.3g} ps of {m['formula']} with "
              f"{m['model']}, <T> = {m['temperature_mean_k']:.1f} K, {m['ms_per_step']:.2f} ms/step{rounds}{resumed}")
