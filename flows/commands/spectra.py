"""``ramanscreen spectrum``: Raman spectrum (eqs. S1–S3) and central-peak descriptors of an α series."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from ramanscreen.flows.cli import app
from ramanscreen.tasks.common import InputError, staged, write_table
from ramanscreen.tasks.spectra import SpectrumSettings as SpectrumSettingsDefaults


def _opt(name: str, flag: str | None = None):
    """A typer option whose default and help come from ``SpectrumSettings`` (one definition)."""
    from ramanscreen.tasks.schema import default, help_text
    from ramanscreen.tasks.spectra import SpectrumSettings

    return typer.Option(default(SpectrumSettings, name), flag or "--" + name.replace("_", "-"),
                        help=help_text(SpectrumSettings, name))


def _output_path(alpha_file: Path, out: Path | None) -> Path:
    if out is None:
        stem = alpha_file.name.split(".")[0] or "alpha"
        return Path(f"{stem}.spectrum.parquet")
    if out.suffix not in (".parquet", ".csv"):
        raise InputError(f"the spectrum table is .parquet or .csv, got {out.name!r}", field="--out",
                         fix="use e.g. --out agi.spectrum.parquet")
    return out


@app.command()
def spectrum(
    alpha_file: Path = typer.Argument(
        ..., help="α time series (Å³): 6-column text 'xx yy zz xy yz zx', .npy (n,3,3), .npz, or extxyz with info['polarizability']."
    ),
    dt_fs: float | None = typer.Option(
        None, "--dt-fs", help="Time between the file's α samples in fs; only for files that do not state it "
                              "(a value contradicting the file is refused)."),
    stride: int = typer.Option(1, "--stride", help="Use every n-th α sample of the file (time between samples × n)."),
    laser_nm: float = _opt("laser_nm"),
    sigma_cm1: float = _opt("sigma_cm1"),
    temperature_k: float | None = typer.Option(
        None, "--temperature-k", help="Multiply by the Bose–Einstein factor n(ω)+1 at this T in K (default: none, as in the paper)."
    ),
    max_freq_cm1: float | None = _opt("max_freq_cm1"),
    input_format: str | None = typer.Option(None, "--input-format", help="txt | npy | npz | extxyz, if the suffix does not tell."),
    omega_min_cm1: float = _opt("omega_min_cm1"),
    omega_c_cm1: float = _opt("omega_c_cm1"),
    host_low_cm1: float = typer.Option(SpectrumSettingsDefaults.host_window_cm1[0], "--host-low-cm1",
                                       help="Start of the host window, cm⁻¹ (descriptors)."),
    host_high_cm1: float = typer.Option(SpectrumSettingsDefaults.host_window_cm1[1], "--host-high-cm1",
                                        help="End of the host window, cm⁻¹ (descriptors)."),
    n_blocks: int = _opt("n_blocks"),
    out: Path | None = typer.Option(None, "--out", "-o", help="The spectrum table: FILE.parquet (with the settings "
                                    "in its metadata) or FILE.csv (default: <name>.spectrum.parquet here); "
                                    "--plot writes FILE.png next to it."),
    plot: bool = typer.Option(False, "--plot", help="Also write a PNG: full range plus an inset of the low-frequency region."),
    full_grid: bool = typer.Option(
        False, "--full-grid", help="Write every Fourier bin even when σ spans many bins (default: ≥ 8 exact points per σ)."
    ),
) -> None:
    """Raman spectrum (isotropic a², anisotropic γ², total/parallel/perpendicular) of an α time series,
    with its block (sub-trajectory) standard error (column intensity_block_err) and that of cp_fraction."""
    from ramanscreen.tasks.schema import prefixed
    from ramanscreen.tasks.spectra import (
        SpectrumSettings,
        block_uncertainty,
        central_peak_descriptors,
        plot_spectrum,
        raman_spectrum,
        read_alpha_series,
        spectrum_table,
    )

    flags = {"host_window_cm1": "--host-low-cm1/--host-high-cm1"}
    try:
        settings = SpectrumSettings(sigma_cm1=sigma_cm1, laser_nm=laser_nm, max_freq_cm1=max_freq_cm1,
                                    omega_min_cm1=omega_min_cm1, omega_c_cm1=omega_c_cm1,
                                    host_window_cm1=(host_low_cm1, host_high_cm1), n_blocks=n_blocks)
    except InputError as exc:
        raise prefixed(exc, None, fields=flags) from None
    path = _output_path(alpha_file, out)
    series = read_alpha_series(alpha_file, fmt=input_format)
    alpha_dt = series.spacing_fs(dt_fs, stride=stride)
    alpha = series.alpha_A3[::stride]
    try:  # a window beyond the top frequency is an error, not a skipped descriptor
        settings.check_range(alpha_dt)
    except InputError as exc:
        raise prefixed(exc, None, file=alpha_file, fields=flags) from None
    spec = raman_spectrum(alpha, alpha_dt, temperature_k=temperature_k, decimate=not full_grid,
                          **settings.spectrum_kwargs())
    try:
        settings.check_sampling(alpha_dt, len(alpha))
        descriptors = central_peak_descriptors(spec, **settings.descriptor_kwargs())
    except InputError as exc:  # too coarse a resolution for the windows: the spectrum still stands
        warnings.warn(f"central-peak descriptors not computed: {exc}", UserWarning, stacklevel=1)
        descriptors = {}
    blocks = block_uncertainty(alpha, alpha_dt, freq_cm1=spec.freq_cm1, temperature_k=temperature_k,
                               **settings.block_kwargs())
    if descriptors:
        descriptors = {**descriptors, **blocks.descriptors()}
    extra = {"source": str(alpha_file), "alpha_dt_fs": alpha_dt, "stride": stride, "central_peak": descriptors}
    png = path.with_suffix(".png")
    meta = spec.metadata()
    for key, value in extra.items():
        meta[key] = value if isinstance(value, str) else json.dumps(value)
    with staged(path.parent, field="out") as st:  # the table and its PNG, or neither
        if plot:
            plot_spectrum(spec, st.path(png))
        columns = {**spectrum_table(spec), "intensity_block_err": blocks.intensity_err}
        write_table(columns, st.path(path), metadata=meta if path.suffix == ".parquet" else None)
    _summary(spec, descriptors, [path, *([png] if plot else [])], alpha_file, blocks)


def _summary(spec, descriptors: dict[str, float], paths: list[Path], alpha_file: Path, blocks=None) -> None:
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
    if blocks is not None:
        err = blocks.cp_fraction_err
        table.add_row(f"block s.e. of that fraction ({blocks.n_blocks} × {blocks.block_ps:.3g} ps)",
                      f"{err:.3f}" if err == err else f"n/a ({blocks.note})")
    for p in paths:
        table.add_row("wrote", str(p))
    console.print(table)
