"""``ramanscreen md`` / ``import-md`` / ``force-check``: the MD stage (``structure`` is in structure.py)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from ramanscreen.flows.cli import app
from ramanscreen.tasks.common import InputError

out = Console(highlight=False, soft_wrap=True)


def _parse_kwargs(items: list[str] | None) -> dict:
    """``KEY=VALUE`` pairs; values are read as JSON when they parse (numbers, true, lists)."""
    kwargs: dict = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"cannot read {item!r}", field="--calc-kw", fix="write KEY=VALUE, e.g. --calc-kw model=0.3.0")
        try:
            kwargs[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            kwargs[key.strip()] = value
    from ramanscreen.tasks.md import refuse_command_options

    refuse_command_options(kwargs, field="--calc-kw")
    return kwargs


def _md_opt(name: str, flag: str | None = None, *, required: bool = False, **kw):
    """A typer option whose default and help come from ``MDSettings`` (one definition)."""
    from ramanscreen.tasks.md import MDSettings
    from ramanscreen.tasks.schema import default, help_text

    flag = flag or "--" + name.replace("_", "-")
    return typer.Option(... if required else default(MDSettings, name), flag, help=help_text(MDSettings, name), **kw)


@app.command()
def md(
    structure: str = typer.Argument(..., help="Builder name (AgI, Na3SbS4, Na3SbS4-W, Na3PS4, gamma-Na3PS4, LLZO) or a CIF/POSCAR/extxyz file."),
    temperature_k: float = _md_opt("temperature_k", required=True),
    dt_fs: float = _md_opt("dt_fs", required=True),
    steps: int = _md_opt("steps", required=True),
    out_dir: Path = typer.Option(..., "--out-dir", help="Run directory (md.traj + md.json when done; rerun to resume)."),
    equil_steps: int = _md_opt("equil_steps"),
    ensemble: str = _md_opt("ensemble"),
    pressure_gpa: float = _md_opt("pressure_gpa"),
    calculator: str = _md_opt("calculator"),
    calc_kw: list[str] | None = typer.Option(None, "--calc-kw", help="Calculator keyword KEY=VALUE (repeat)."),
    write_every: int = _md_opt("write_every"),
    alpha_stride: int = _md_opt("alpha_stride"),
    checkpoint_every: int = _md_opt("checkpoint_every"),
    seed: int = _md_opt("seed"),
    n_atoms: int | None = typer.Option(None, "--n-atoms", help="Supercell size (builder default: the paper's)."),
    num_threads: int | None = _md_opt("num_threads"),
    restart: bool = typer.Option(False, "--restart", help="Discard a partial or finished run in --out-dir and start over."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    allow_charged: bool = typer.Option(False, "--allow-charged", help="Run a structure that no set of common oxidation "
                                       "states makes neutral (a warning instead of an error)."),
) -> None:
    """Run MLFF molecular dynamics: equilibrate, then store positions + velocities every k steps."""
    from ramanscreen.tasks.md import MDSettings, RichProgress, run_md
    from ramanscreen.tasks.structures import load_structure

    settings = MDSettings(
        temperature_k=temperature_k, dt_fs=dt_fs, steps=steps, equil_steps=equil_steps, ensemble=ensemble,
        pressure_gpa=pressure_gpa, write_every=write_every, alpha_stride=alpha_stride,
        checkpoint_every=checkpoint_every, seed=seed, calculator=calculator,
        calculator_kwargs=_parse_kwargs(calc_kw), num_threads=num_threads,
    )
    atoms = load_structure(structure, n_atoms=n_atoms, seed=seed)
    from ramanscreen.tasks.structures import check_charge_balance, resolve_name

    check_charge_balance(atoms, file=None if resolve_name(structure) and not Path(structure).is_file() else structure,
                         allow_charged=allow_charged)
    with RichProgress(f"MD {atoms.get_chemical_formula()} {temperature_k:g} K", disable=quiet) as bar:
        result = run_md(atoms, settings, out_dir, progress=bar, restart=restart)
    m = result.metadata
    resumed = f", resumed {m['n_resumes']}x" if m.get("n_resumes") else ""
    out.print(
        f"{result.traj_path}: {m['n_frames']} frames, {m['duration_ps']:.3g} ps of {m['formula']} with {m['model']}, "
        f"<T> = {m['temperature_mean_k']:.1f} K, {m['ps_per_day']:.1f} ps/day{resumed}"
    )


@app.command("import-md")
def import_md_cmd(
    trajectory: Path = typer.Argument(..., help="Your MD: vasprun.xml, XDATCAR, extxyz, LAMMPS dump, ASE .traj."),
    out_traj: Path = typer.Option(..., "--out", "-o", help="Output .traj (a sidecar .json is written next to it)."),
    dt_fs: float | None = typer.Option(None, "--dt-fs", help="Time between the file's stored frames in fs "
                                       "(needed unless the file records it)."),
    temperature_k: float | None = typer.Option(None, "--temperature-k", help="MD temperature in K (recorded)."),
    alpha_stride: int = _md_opt("alpha_stride"),
    input_format: str | None = typer.Option(None, "--input-format", help="ASE format name if the file name does not tell."),
    type_map: list[str] | None = typer.Option(None, "--type-map", help="LAMMPS dumps: element of type 1, 2, ... (repeat)."),
) -> None:
    """Convert MD you already ran into ramanscreen's trajectory + metadata files."""
    from ramanscreen.tasks.md import import_md

    res = import_md(trajectory, out_traj, dt_fs=dt_fs, fmt=input_format, type_map=type_map or None,
                    temperature_k=temperature_k, alpha_stride=alpha_stride)
    m = res.metadata
    out.print(f"{res.traj_path}: {m['n_frames']} frames of {m['formula']}, {m['frame_dt_fs']:g} fs apart")


@app.command("force-check")
def force_check_cmd(
    reference: list[Path] = typer.Argument(..., help="Reference forces: extxyz with forces, VASP OUTCARs or vasprun.xml."),
    calculator: str = _md_opt("calculator"),
    calc_kw: list[str] | None = typer.Option(None, "--calc-kw", help="Calculator keyword KEY=VALUE (repeat)."),
    plot: Path = typer.Option(Path("force_parity.png"), "--out", "-o", help="Parity plot (PNG; the numbers go to "
                              "the .json next to it)."),
    num_threads: int | None = _md_opt("num_threads"),
) -> None:
    """Force RMSE of the MLFF against reference forces, with a parity plot (paper Fig. S1)."""
    from ramanscreen.tasks.common import atomic_write
    from ramanscreen.tasks.md import force_check

    res = force_check([str(p) for p in reference], calculator, plot_path=plot,
                      calculator_kwargs=_parse_kwargs(calc_kw), num_threads=num_threads)
    with atomic_write(plot.with_suffix(".json"), "w") as fh:
        json.dump(res.summary(), fh, indent=2)
    per = ", ".join(f"{k} {v:.3f}" for k, v in res.rmse_by_element_eV_A.items())
    out.print(f"force RMSE {res.rmse_eV_A:.3f} eV/Å over {res.n_frames} frames ({per}); plot: {plot}")
