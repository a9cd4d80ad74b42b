"""``ramanscreen reference`` (α for structures with a chosen backend) and ``ramanscreen import-vasp``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ramanscreen.flows.cli import app
from ramanscreen.tasks.common import InputError

console = Console(highlight=False)


def _ref_default(name: str):
    from ramanscreen.tasks.reference import ReferenceSettings
    from ramanscreen.tasks.schema import default

    return default(ReferenceSettings, name)


def _read_frames(spec: str, n_atoms: int | None, seed: int) -> list:
    """All frames of a structure/trajectory file, or one structure from a builder name."""
    import ase.io

    path = Path(spec)
    if not path.is_file():
        from ramanscreen.tasks.structures import load_structure

        return [load_structure(spec, n_atoms=n_atoms, seed=seed)]
    try:
        frames = ase.io.read(path, index=":")
    except Exception as exc:  # noqa: BLE001 - ASE raises many types on bad files
        raise InputError(f"unreadable structure file ({' '.join(str(exc).split())[:160]})", file=path,
                         fix="give an extxyz, traj, CIF, POSCAR or XDATCAR file ASE can read") from None
    frames = [frames] if not isinstance(frames, list) else frames
    if not frames:
        raise InputError("file holds no structures", file=path)
    for k, a in enumerate(frames):
        a.calc = None
        a.info.setdefault("source", f"{path}@{k}")  # md_step only if the file carries it
    return frames


def _kpts(text: str | None) -> tuple[int, int, int] | None:
    if text is None:
        return None
    try:
        k = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        k = ()
    if len(k) != 3 or min(k) < 1:
        raise InputError(f"expected three positive integers, got {text!r}", field="--kpts", fix="e.g. --kpts 4,4,4")
    return k  # type: ignore[return-value]


@app.command()
def reference(
    structures: str = typer.Argument(..., help="Structure or trajectory file (all frames), or a builder name (e.g. AgI)."),
    backend: str = typer.Option(_ref_default("backend"), "--backend", help="dipole (embedded model, not DFPT) | cp2k | qe."),
    out: Path | None = typer.Option(None, "--out", "-o", help="α dataset to write (extxyz; default <name>.alpha.extxyz)."),
    select: int | None = typer.Option(None, "--select", help="Compute only N snapshots chosen by --selection."),
    selection: str = typer.Option(_ref_default("selection"), "--selection", help="random (as in the paper) | fps (farthest-point, SOAP)."),
    seed: int = typer.Option(0, "--seed", help="Seed for random selection and for builders."),
    n_atoms: int | None = typer.Option(None, "--n-atoms", help="Supercell size when STRUCTURES is a builder name."),
    workdir: Path | None = typer.Option(None, "--workdir", help="Where CP2K/QE run (one folder per frame)."),
    cutoff_ry: float | None = typer.Option(None, "--cutoff-ry", help="CP2K plane-wave cutoff (Ry)."),
    basis: str | None = typer.Option(None, "--basis", help="CP2K basis set name (default DZVP-MOLOPT-SR-GTH)."),
    ecutwfc_ry: float | None = typer.Option(None, "--ecutwfc-ry", help="QE wave-function cutoff (Ry)."),
    kpts: str | None = typer.Option(None, "--kpts", help="QE k-mesh, e.g. 4,4,4 (default from --kspacing)."),
    kspacing_inv_a: float | None = typer.Option(None, "--kspacing-inv-a", help="QE k-spacing in 1/Å (2π included)."),
    pseudo_dir: Path | None = typer.Option(None, "--pseudo-dir", help="QE pseudopotential directory (UPF files)."),
    keep_work: bool = typer.Option(False, "--keep-work", help="Keep this run's scratch folder (CP2K/QE inputs and "
                                   "outputs) when no --workdir is given; by default it is removed at the end."),
) -> None:
    """Reference polarizabilities α (Å³, whole cell) for structures, with the method stored per frame."""
    from ramanscreen.tasks.reference import compute_references, get_backend, select_snapshots, write_alpha_dataset

    options: dict = {}
    name = backend.lower()
    given = {"--cutoff-ry": cutoff_ry, "--basis": basis, "--ecutwfc-ry": ecutwfc_ry, "--kpts": kpts,
             "--kspacing-inv-a": kspacing_inv_a, "--pseudo-dir": pseudo_dir}
    allowed = {"dipole": set(), "cp2k": {"--cutoff-ry", "--basis"},
               "qe": {"--ecutwfc-ry", "--kpts", "--kspacing-inv-a", "--pseudo-dir"}}.get(name)
    if allowed is None:
        raise InputError(f"unknown backend {backend!r}", field="--backend", fix="use dipole, cp2k or qe")
    stray = sorted(k for k, v in given.items() if v is not None and k not in allowed)
    if stray:
        raise InputError(f"{', '.join(stray)} do not apply to backend {name}", field="--backend",
                         fix="drop them or choose the backend they belong to")
    if cutoff_ry is not None:
        options["cutoff_ry"] = cutoff_ry
    if basis is not None:
        options["basis"] = basis
    if ecutwfc_ry is not None:
        options["ecutwfc_ry"] = ecutwfc_ry
    if kpts is not None:
        options["kpts"] = _kpts(kpts)
    if kspacing_inv_a is not None:
        options["kspacing_inv_A"] = kspacing_inv_a
    if pseudo_dir is not None:
        options["pseudo_dir"] = pseudo_dir
    engine = get_backend(name, **options)

    frames = _read_frames(structures, n_atoms, seed)
    if select is not None:
        idx = select_snapshots(frames, select, method=selection, seed=seed)
        frames = [frames[i] for i in idx]
    if out is None:
        out = Path(f"{Path(structures).name.split('.')[0] or 'structures'}.alpha.extxyz")
    if out.suffix not in (".extxyz", ".xyz"):
        raise InputError("the α dataset is extxyz", file=out, field="--out", fix="name it *.extxyz")
    if name == "dipole":  # validate the whole input before the (fast) run
        for a in frames:
            engine.ion_polarizabilities(a.get_chemical_symbols())
    elif name == "cp2k":
        for a in frames:
            engine.write_input(a)
    else:
        for a in frames:
            engine.pw_input(a)

    scratch = None
    if workdir is None and name != "dipole":  # a scratch folder of this run only, removed at the end
        import tempfile

        from ramanscreen.tasks.common import check_writable_dir
        from ramanscreen.tasks.settings import get_settings

        base = check_writable_dir(get_settings().scratch_dir, field="scratch_dir", what="scratch folder")
        scratch = Path(tempfile.mkdtemp(prefix=f"reference-{name}-", dir=base))
    try:
        with Progress(TextColumn("[bold]α[/] " + name), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task("frames", total=len(frames))
            results = compute_references(frames, engine, workdir=workdir or scratch,
                                         progress=lambda done, total: bar.update(task, completed=done))
    finally:
        if scratch is not None:
            if keep_work:
                Console(stderr=True, soft_wrap=True).print(f"kept the scratch folder {scratch}", markup=False)
            else:
                import shutil

                shutil.rmtree(scratch, ignore_errors=True)
    write_alpha_dataset(frames, results, out)

    import numpy as np

    from ramanscreen.tasks.reference import epsilon_from_alpha

    eps = [np.trace(epsilon_from_alpha(r.alpha_A3, abs(a.cell.volume))) / 3 for a, r in zip(frames, results, strict=False)]
    console.print(f"wrote {len(frames)} frames to {out}")
    console.print(f"method: {engine.method}")
    console.print(f"mean tr(α)/3 = {np.mean([np.trace(r.alpha_A3) / 3 for r in results]):.4g} Å³ per cell; "
                  f"mean ε∞ = {np.mean(eps):.4g}")


@app.command("import-vasp")
def import_vasp_cmd(
    outcars: list[Path] = typer.Argument(None, help="DFPT OUTCARs (LEPSILON/LCALCEPS, .gz allowed) or folders with OUTCAR*."),
    outcar: list[Path] = typer.Option(None, "--outcar", help="Another OUTCAR (repeatable)."),
    md: Path | None = typer.Option(None, "--md", help="MD trajectory (XDATCAR or vasprun.xml) to match MD steps."),
    out: Path = typer.Option(Path("vasp_alpha.extxyz"), "--out", "-o", help="α dataset to write (extxyz)."),
    match_tol_A: float = typer.Option(0.05, "--match-tol-a", help="Max RMSD (Å) for an OUTCAR to match an MD frame."),
    dielectric_block: str = typer.Option("auto", "--dielectric-block", help="OUTCAR block ε∞ is read from: auto "
                                         "(LEPSILON 'in DFT', else LCALCEPS finite field), dft, finite-field, rpa, "
                                         "no-local-fields, independent-particle."),
) -> None:
    """Import VASP DFPT ε∞ (OUTCARs) as an α dataset: α = V (ε∞ − 1)/4π, MD step and dielectric block attached."""
    from ramanscreen.tasks.reference import import_vasp

    paths = [*(outcars or []), *(outcar or [])]
    if not paths:
        raise InputError("no OUTCAR given", field="outcar", fix="pass OUTCAR files (or --outcar FILE)")
    if out.suffix not in (".extxyz", ".xyz"):
        raise InputError("the α dataset is extxyz", file=out, field="--out", fix="name it *.extxyz")
    if not match_tol_A > 0:
        raise InputError(f"must be > 0, got {match_tol_A}", field="--match-tol-a")
    frames, results = import_vasp(paths, md=md, out=out, match_tol_A=match_tol_A, dielectric_block=dielectric_block)

    import numpy as np

    table = Table(title=f"{len(frames)} DFPT frames → {out}")
    for col in ("source", "atoms", "MD step", "matched by", "block", "ε∞ (tr/3)", "tr(α)/3 Å³"):
        table.add_column(col)
    for a, r in zip(frames, results, strict=False):
        eps = np.array(r.meta["epsilon_inf"])
        table.add_row(str(r.meta["source"]), str(len(a)), str(r.meta["md_step"]), r.meta["md_match"],
                      str(r.meta["dielectric_block"]),
                      f"{np.trace(eps) / 3:.4g}", f"{np.trace(r.alpha_A3) / 3:.4g}")
    console.print(table)
