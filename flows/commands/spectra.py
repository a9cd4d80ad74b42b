"""``ramanscreen spectrum``: Raman spectrum (eqs. S1–S3) and central-peak descriptors of an α series."""

from __future__ import annotations

import warnings
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from ramanscreen.flows.cli import app
from ramanscreen.tasks.common import InputError


def _output_prefix(alpha_file: Path, out: Path | None, out_dir: Path | None) -> Path:
    if out is not None and out_dir is not None:
        raise InputError("give --out or --out-dir, not both", field="--out", fix="drop one of them")
    if out is not None:
        return out
    stem = alpha_file.name.split(".")[0] or "alpha"
    return (out_dir or Path(".")) / f"{stem}.spectrum"


@app.command()
def spectrum(
    alpha_file: Path = typer.Argument(
        ..., help="α time series (Å³): 6-column text 'xx yy zz xy yz zx', .npy (n,3,3), or extxyz with info['polarizability']."
    ),
    dt_fs: float | None = typer.Option(None, "--dt-fs", help="MD time step in fs (required)."),
    stride: int = typer.Option(1, "--stride", help="α was stored every n-th MD step; time between α samples = dt-fs × stride."),
    laser_nm: float = typer.Option(532.0, "--laser-nm", help="Laser wavelength in nm, for the (ω_in−ω)⁴ factor."),
    sigma_cm1: float = typer.Option(4.0, "--sigma-cm1", help="Gaussian smoothing: the standard deviation σ in cm⁻¹ (0: none)."),
    temperature_k: float | None = typer.Option(
        None, "--temperature-k", help="Multiply by the Bose–Einstein factor n(ω)+1 at this T in K (default: none, as in the paper)."
    ),
    max_freq_cm1: float | None = typer.Option(None, "--max-freq-cm1", help="Highest frequency written (default: Nyquist)."),
    fmt: str | None = typer.Option(None, "--format", help="txt | npy | extxyz, if the suffix does not tell."),
    omega_c_cm1: float = typer.Option(50.0, "--omega-c-cm1", help="Upper edge ω_c of the low-frequency window for the descriptors."),
    out: Path | None = typer.Option(None, "--out", help="Output prefix: writes PREFIX.csv, PREFIX.parquet (and PREFIX.png)."),
    out_dir: Path | None = typer.Option(None, "--out-dir", "-o", help="Directory for <name>.spectrum.* (default: current directory)."),
    plot: bool = typer.Option(False, "--plot", help="Also write a PNG: full range plus an inset of the low-frequency region."),
    full_grid: bool = typer.Option(
        False, "--full-grid", help="Write every Fourier bin even when σ spans many bins (default: ≥ 8 exact points per σ)."
    ),
) -> None:
    """Raman spectrum (isotropic a², anisotropic γ², total/parallel/perpendicular) of an α time series."""
    from ramanscreen.tasks.spectra import (
        central_peak_descriptors,
        plot_spectrum,
        raman_spectrum,
        read_alpha,
        write_spectrum,
    )

    if dt_fs is None:
        raise InputError("required option not given", field="--dt-fs", fix="pass the MD time step, e.g. --dt-fs 2.0 (and --stride for the α interval)")
    if not dt_fs > 0:
        raise InputError(f"must be > 0, got {dt_fs}", field="--dt-fs", fix="pass the MD time step in fs, e.g. --dt-fs 2.0")
    if stride < 1:
        raise InputError(f"must be ≥ 1, got {stride}", field="--stride", fix="pass how many MD steps lie between α samples")
    prefix = _output_prefix(alpha_file, out, out_dir)
    alpha = read_alpha(alpha_file, fmt=fmt)
    spec = raman_spectrum(
        alpha, dt_fs * stride, laser_nm=laser_nm, sigma_cm1=sigma_cm1, temperature_k=temperature_k,
        max_freq_cm1=max_freq_cm1, decimate=not full_grid,
    )
    try:
        descriptors = central_peak_descriptors(spec, omega_c_cm1=omega_c_cm1)
    except InputError as exc:  # too coarse a resolution for the windows: the spectrum still stands
        warnings.warn(f"central-peak descriptors not computed: {exc}", UserWarning, stacklevel=1)
        descriptors = {}
    extra = {"source": str(alpha_file), "md_dt_fs": dt_fs, "stride": stride, "central_peak": descriptors}
    png = Path(f"{prefix}.png")
    if plot:
        plot_spectrum(spec, png)
    csv_path, pq_path = write_spectrum(spec, prefix, extra_metadata=extra)
    _summary(spec, descriptors, [csv_path, pq_path, *([png] if plot else [])], alpha_file)


def _summary(spec, descriptors: dict[str, float], paths: list[Path], alpha_file: Path) -> None:
    import numpy as np

    console = Console()
    table = Table(title=f"Raman spectrum of {alpha_file} ({spec.n_frames} frames × {spec.dt_fs:g} fs)", show_header=False)
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_row(
        "resolution / grid / range",
        f"{spec.df_cm1:.3g} / {spec.grid_step_cm1:.3g} cm⁻¹ / 0–{spec.freq_cm1[-1]:.0f} cm⁻¹",
    )
    table.add_row("smoothing σ, laser, Bose T", f"{spec.sigma_cm1:g} cm⁻¹, {spec.laser_nm:g} nm, "
                  + ("none" if spec.temperature_k is None else f"{spec.temperature_k:g} K"))
    k = int(np.argmax(spec.intensity))
    table.add_row("strongest peak", f"{spec.freq_cm1[k]:.1f} cm⁻¹")
    i_par = float(np.trapezoid(spec.intensity_parallel, spec.freq_cm1))
    i_perp = float(np.trapezoid(spec.intensity_perpendicular, spec.freq_cm1))
    table.add_row("integrated depolarisation ratio", f"{i_perp / i_par:.3f}" if i_par > 0 else "n/a")
    if descriptors:
        d = descriptors
        table.add_row(
            f"fraction of I in [{d['omega_min_cm1']:g}, {d['omega_c_cm1']:g}] cm⁻¹",
            f"{d['fraction_below_omega_c']:.3f} (of [{d['omega_min_cm1']:g}, {d['host_high_cm1']:.0f}])",
        )
        table.add_row(
            "low window / host peak", f"{d['low_to_host_ratio']:.3g} (host peak {d['host_peak_cm1']:.0f} cm⁻¹)"
        )
        table.add_row("low-frequency log-log slope", f"{d['low_freq_loglog_slope']:.2f}")
    for p in paths:
        table.add_row("wrote", str(p))
    console.print(table)
