"""``ramanscreen transport``: MSD, diffusivity, conductivity and VDOS of an MD trajectory."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from ramanscreen.flows.cli import app
from ramanscreen.tasks.common import InputError, save_figure, staged, write_table


def _parse_charges(items: list[str] | None) -> dict[str, float]:
    charges: dict[str, float] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError
            charges[name.strip()] = float(value)
        except ValueError:
            raise InputError(f"cannot read charge {item!r}", field="--charge", fix="write e.g. --charge Na=1") from None
    return charges


def _opt(name: str, flag: str | None = None):
    """A typer option whose default and help come from ``TransportSettings`` (one definition)."""
    from ramanscreen.tasks.schema import default, help_text
    from ramanscreen.tasks.transport import TransportSettings

    return typer.Option(default(TransportSettings, name), flag or "--" + name.replace("_", "-"),
                        help=help_text(TransportSettings, name))


@app.command()
def transport(
    trajectory: Path = typer.Argument(..., help="MD trajectory: extxyz, ASE .traj, XDATCAR, vasprun.xml, LAMMPS dump."),
    species: list[str] = typer.Option(..., "--species", "-s", help="Species to analyse (repeat: --species Na --species S)."),
    temperature_k: float = typer.Option(..., "--temperature-k", help="MD temperature in K (Nernst–Einstein)."),
    dt_fs: float | None = typer.Option(
        None, "--dt-fs", help="Time between the file's stored frames in fs (MD step × write interval); only for files "
                              "that do not record it (a value contradicting the file is refused)."),
    out_dir: Path = typer.Option(Path("."), "--out-dir", help="Directory for <name>.transport.json and the Parquet tables."),
    input_format: str | None = typer.Option(None, "--input-format", help="ASE format name if the file name does not tell (e.g. lammps-dump-text)."),
    type_map: list[str] | None = typer.Option(None, "--type-map", help="LAMMPS dumps: element of type 1, 2, ... (repeat)."),
    index: str = typer.Option(":", "--index", help="ASE frame selection, e.g. '1000:' to drop equilibration."),
    stride: int = typer.Option(1, "--stride", help="Use every n-th stored frame (time between frames × n)."),
    drift: str = _opt("drift"),
    framework_species: list[str] | None = typer.Option(None, "--framework", help="Framework species for --drift framework (default: all non-analysed species)."),
    charge: list[str] | None = typer.Option(None, "--charge", help="Formal charge override, e.g. --charge Na=1."),
    fit_start_ps: float | None = _opt("fit_start_ps"),
    fit_end_ps: float | None = _opt("fit_end_ps"),
    min_fit_start_ps: float = _opt("min_fit_start_ps"),
    method: str = _opt("method"),
    n_blocks: int = _opt("n_blocks"),
    plot: bool = typer.Option(False, "--plot", help="Also write MSD/α₂ and VDOS PNGs."),
) -> None:
    """Diffusivity, Nernst–Einstein conductivity, VDOS and hopping descriptors from an MD trajectory."""
    from ramanscreen.tasks.trajectory import Trajectory
    from ramanscreen.tasks.transport import analyze_transport

    if stride < 1:
        raise InputError(f"must be ≥ 1, got {stride}", field="--stride", fix="use every n-th frame, n ≥ 1")
    traj = Trajectory.from_file(trajectory, dt_fs=dt_fs, fmt=input_format, index=index, type_map=type_map or None)
    if stride != 1:
        traj = traj.every(stride)
    result = analyze_transport(
        traj, species=species, temperature_k=temperature_k, drift=drift, framework_species=framework_species or None,
        charges=_parse_charges(charge), fit_start_ps=fit_start_ps, fit_end_ps=fit_end_ps,
        min_fit_start_ps=min_fit_start_ps, method=method, n_blocks=n_blocks,
    )
    stem = trajectory.name.split(".")[0] or "trajectory"
    meta = {"source": str(trajectory), "drift_removal": result.drift_removal, "units": "time_ps, msd_A2, freq_cm1, vdos 1/cm-1"}
    figures = _figures(result) if plot else {}
    with staged(out_dir) as st:  # all of them or none: a blocked JSON path leaves no Parquet behind
        write_table(result.msd_table(), st.path(out_dir / f"{stem}.msd.parquet"), metadata=meta)
        write_table(result.vdos_table(), st.path(out_dir / f"{stem}.vdos.parquet"), metadata=meta)
        for name, fig in figures.items():
            save_figure(fig, st.path(out_dir / f"{stem}.{name}.png"), dpi=150)
        st.path(out_dir / f"{stem}.transport.json").write_text(result.to_json() + "\n")
    _summary(result, out_dir / f"{stem}.transport.json")


def _summary(result, json_path: Path) -> None:
    table = Table(title=f"transport of {result.source} ({result.n_frames} frames, {result.duration_ps:.3g} ps)")
    for col in ("species", "N", "D (cm²/s)", "σ (S/cm)", "MSD exponent", "α₂ peak (t/ps)", "VDOS(0)"):
        table.add_column(col, justify="right")
    for s in result.species:
        sig = result.sigma_S_cm[s]
        table.add_row(
            s, str(result.n_atoms[s]),
            f"{result.D_cm2_s[s]:.3e} ± {result.D_err_cm2_s[s]:.1e}",
            "–" if sig is None else f"{sig:.3e} ± {result.sigma_err_S_cm[s]:.1e}",
            f"{result.msd_exponent[s]:.2f}",
            f"{result.alpha2_peak[s]:.2f} ({result.alpha2_peak_time_ps[s]:.3g})",
            f"{result.vdos0[s]:.2e}",
        )
    console = Console()
    console.print(table)
    console.print(f"fit window {result.fit_start_ps:.3g}–{result.fit_end_ps:.3g} ps; {result.D_method}", markup=False)
    console.print(f"drift removed: {result.drift_removal}; velocities: {result.velocity_source}", markup=False)
    console.print(f"wrote {json_path}", markup=False)


def _figures(result) -> dict:
    from ramanscreen.tasks.common import new_figure

    fig = new_figure(figsize=(10, 4))
    ax1, ax2 = fig.subplots(1, 2)
    for s in result.species:
        ax1.loglog(result.time_ps, result.msd_A2[s], label=s)
        ax2.semilogx(result.time_ps, result.alpha2[s], label=s)
    ax1.axvspan(result.fit_start_ps, result.fit_end_ps, color="0.9", label="fit window")
    ax1.set(xlabel="t (ps)", ylabel="MSD (Å²)", title="mean squared displacement")
    ax2.set(xlabel="t (ps)", ylabel="α₂(t)", title="non-Gaussian parameter")
    ax1.legend()
    fig.tight_layout()
    fig2 = new_figure(figsize=(6, 4))
    ax = fig2.subplots()
    for s in result.species:
        ax.plot(result.freq_cm1, result.vdos[s], label=s)
    ax.set(xlabel="frequency (cm⁻¹)", ylabel="VDOS (1/cm⁻¹, unit area)", title="VDOS per species")
    ax.legend()
    fig2.tight_layout()
    return {"msd": fig, "vdos": fig2}
