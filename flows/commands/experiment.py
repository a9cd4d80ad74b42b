"""``ramanscreen experiment import|compare``: experimental Raman spectra (text, JCAMP-DX, SPC,
Renishaw WDF) and their comparison with a computed spectrum."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from ramanscreen.flows.cli import app
from ramanscreen.tasks.common import InputError, atomic_write, write_table
from ramanscreen.tasks.experiment import COMPARE_BASELINE, COMPARE_GRID_CM1, COMPARE_RANGE_CM1, MATCH_TOLERANCE_CM1

experiment_app = typer.Typer(no_args_is_help=True, add_completion=False, rich_markup_mode="rich")
app.add_typer(experiment_app, name="experiment", help="Experimental Raman spectra: import (text, JCAMP-DX, SPC, WDF) and compare.")
out = Console(highlight=False, soft_wrap=True)
_FMT = typer.Option(None, "--input-format", help="text | parquet | jcamp | spc | wdf, if the suffix does not tell.")


@experiment_app.command("import")
def import_(
    file: Path = typer.Argument(..., help="Experimental spectrum (.csv/.txt two columns, .jdx/.dx JCAMP-DX, .spc, .wdf)."),
    out_file: Path | None = typer.Option(None, "--out", "-o", help="Output with columns freq_cm1, intensity (.csv, or .parquet with metadata)."),
    fmt: str | None = _FMT,
    index: int | None = typer.Option(None, "--index", help="Which spectrum of a multi-spectrum file (default: their mean)."),
    baseline: str = typer.Option("none", "--baseline", help="Baseline removal: none | poly | asls | arpls (pybaselines)."),
    normalize: str = typer.Option("none", "--normalize", help="none | max (peak = 1) | area (unit integral)."),
    range_cm1: tuple[float, float] | None = typer.Option(None, "--range-cm1", help="Keep only LO HI cm⁻¹."),
    results_root: Path | None = typer.Option(None, "--results-root", help="Store the spectrum in this results root's experimental_spectra table (instead of, or besides, --out)."),
    material: str | None = typer.Option(None, "--material", help="Material name it joins the computed runs on (required with --results-root)."),
    campaign: str | None = typer.Option(None, "--campaign", help="Campaign it belongs to (default: none, it joins every campaign's run of the material)."),
    formula: str | None = typer.Option(None, "--formula", help="Formula of the sample (default: the material name)."),
    temperature_k: float | None = typer.Option(None, "--temperature-k", help="Measurement temperature, K."),
    pressure_gpa: float | None = typer.Option(None, "--pressure-gpa", help="Measurement pressure, GPa."),
    sigma_s_cm: float | None = typer.Option(None, "--sigma-s-cm", help="Measured ionic conductivity, S/cm (makes the row training data)."),
    source: str | None = typer.Option(None, "--source", help="Where the spectrum comes from (default: the file's path)."),
    spectrum_id: str | None = typer.Option(None, "--spectrum-id", help="Key within (material, campaign); default the file name. Same key: replaced."),
) -> None:
    """Read an experimental spectrum and write it as freq_cm1, intensity (a file, a results root, or both)."""
    import hashlib

    from ramanscreen.tasks.experiment import process, read_spectrum, write_spectrum_table
    from ramanscreen.tasks.results import experimental_spectrum_id, write_experimental_spectrum

    if out_file is None and results_root is None:
        raise InputError("nowhere to write the spectrum", field="--out", fix="pass --out FILE.csv or --results-root DIR")
    if results_root is not None and material is None:
        raise InputError("--results-root needs the material", field="--material", fix="pass --material NAME (as in the campaign)")
    if out_file is not None and out_file.suffix not in (".csv", ".parquet"):  # before anything is written
        raise InputError(f"unknown table format {out_file.suffix!r}", field="--out", fix="use .csv or .parquet")
    spec = read_spectrum(file, fmt, index=index)
    spec = process(spec, baseline=baseline, normalize=normalize,
                   range_cm1=(None, None) if range_cm1 is None else (range_cm1[0], range_cm1[1]))
    written = []
    if results_root is not None:
        assert material is not None
        meta = {"formula": formula or material, "temperature_k": temperature_k, "pressure_gpa": pressure_gpa,
                "sigma_S_cm": sigma_s_cm, "source": source or str(file), "file": file.name,
                "file_sha256": hashlib.sha256(file.read_bytes()).hexdigest(), "format": spec.fmt,
                "baseline": baseline, "normalisation": normalize}
        path = write_experimental_spectrum(results_root, material, freq_cm1=spec.freq_cm1, intensity=spec.intensity,
                                           meta=meta, campaign=campaign,
                                           spectrum_id=spectrum_id or experimental_spectrum_id(file))
        written.append(str(path))
    if out_file is not None:
        write_spectrum_table(spec, out_file)
        written.append(str(out_file))
    sel = spec.metadata.get("selection", "")
    out.print(f"wrote {', '.join(written)}: {len(spec.freq_cm1)} points, {spec.freq_cm1[0]:g}–{spec.freq_cm1[-1]:g} cm⁻¹ "
              f"({spec.fmt}{', ' + sel if sel else ''}; baseline {baseline}, normalise {normalize})", markup=False)


@experiment_app.command("compare")
def compare(
    experimental: Path = typer.Argument(..., help="Experimental spectrum (any format `experiment import` reads)."),
    computed: Path = typer.Argument(..., help="Computed spectrum (the project's spectrum CSV/Parquet, or any readable format)."),
    out_file: Path = typer.Option(..., "--out", "-o", help="Peak-matching table FILE.csv (or .parquet); beside it FILE.png (overlay) and FILE.json (score, settings)."),
    range_cm1: tuple[float, float] = typer.Option(COMPARE_RANGE_CM1, "--range-cm1", help="Range of the comparison, cm⁻¹."),
    grid_cm1: float = typer.Option(COMPARE_GRID_CM1, "--grid-cm1", help="Step of the common grid, cm⁻¹."),
    baseline: str = typer.Option(COMPARE_BASELINE, "--baseline", help="Baseline removed from the experimental spectrum: none | poly | asls | arpls."),
    computed_baseline: str = typer.Option("none", "--computed-baseline", help="Baseline removed from the computed spectrum."),
    tolerance_cm1: float = typer.Option(MATCH_TOLERANCE_CM1, "--tolerance-cm1", help="Peaks farther apart are not matched."),
    fmt: str | None = _FMT,
) -> None:
    """Pearson similarity on a common grid and a peak-matching table with shifts (computed − experiment)."""
    from ramanscreen.tasks.experiment import compare_spectra, plot_comparison, read_spectrum

    exp = read_spectrum(experimental, fmt)
    comp = read_spectrum(computed)
    cmp = compare_spectra(exp, comp, range_cm1=range_cm1, grid_step_cm1=grid_cm1, baseline=baseline,
                          computed_baseline=computed_baseline, tolerance_cm1=tolerance_cm1)
    if out_file.suffix not in (".csv", ".parquet"):
        raise InputError(f"unknown table format {out_file.suffix!r}", field="--out", fix="use e.g. --out comparison.csv")
    stem = out_file.with_suffix("")
    png = plot_comparison(cmp, f"{stem}.png", labels=(experimental.name, computed.name))
    write_table(cmp.matches, out_file)
    summary = {"experimental": str(experimental), "computed": str(computed), "pearson_r": cmp.pearson_r,
               "range_cm1": list(cmp.range_cm1), "grid_step_cm1": cmp.grid_step_cm1, "n_points": cmp.n_points,
               "n_matched": int(sum(cmp.matches["matched"])), "mean_abs_shift_cm1": cmp.mean_abs_shift_cm1,
               **cmp.settings}
    with atomic_write(f"{stem}.json", "w") as fh:
        json.dump(summary, fh, indent=2)
        fh.write("\n")
    t = Table(title=f"Pearson r = {cmp.pearson_r:.3f} over {cmp.range_cm1[0]:g}–{cmp.range_cm1[1]:g} cm⁻¹ "
                    f"(grid {cmp.grid_step_cm1:g} cm⁻¹, baseline {baseline})")
    for c in ("experiment (cm⁻¹)", "computed (cm⁻¹)", "shift (cm⁻¹)"):
        t.add_column(c, justify="right")
    for e, c, d in zip(cmp.matches["experimental_position_cm1"], cmp.matches["computed_position_cm1"],
                       cmp.matches["shift_cm1"], strict=True):
        t.add_row(f"{e:.1f}", f"{c:.1f}", f"{d:+.1f}")
    out.print(t)
    out.print(f"wrote {out_file}, {png}, {stem}.json", markup=False)
