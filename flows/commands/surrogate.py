"""``ramanscreen surrogate fit|predict``: the GP surrogate of log10 σ (or D, or a modulus)
from composition, temperature and pressure (docs/second-framework.md)."""

from __future__ import annotations

import warnings
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from ramanscreen.flows.cli import app
from ramanscreen.tasks.common import InputError, write_table
from ramanscreen.tasks.surrogate import KERNEL_FAMILIES, RESULTS_ROWS, SurrogateSettings

surrogate_app = typer.Typer(no_args_is_help=True, add_completion=False, rich_markup_mode="rich")
app.add_typer(surrogate_app, name="surrogate",
              help="GP surrogate of a property (σ, D, elastic moduli) from composition, T and P.")
out = Console(highlight=False, soft_wrap=True)
_DEFAULTS = SurrogateSettings()


@surrogate_app.command("fit")
def fit(
    table: Path = typer.Argument(..., help="CSV/Parquet with formula, temperature_k, [pressure_gpa] and the target; or a campaign results root."),
    target: str = typer.Option("sigma_S_cm", "--target", help="Target column (sigma_S_cm, D_cm2_s, bulk_modulus_vrh_gpa, ...)."),
    out_file: Path = typer.Option(..., "--out", "-o", help="MODEL.joblib; beside it MODEL.json, MODEL.cv.csv, MODEL.trials.csv, MODEL.parity.png."),
    transform: str | None = typer.Option(None, "--transform", help="log10 | identity (default: log10 for sigma*/D_*, identity otherwise)."),
    n_trials: int = typer.Option(_DEFAULTS.n_trials, "--n-trials", help="Bayesian-optimisation trials (optuna TPE) over kernel family, ARD, length scale, noise."),
    cv_folds: int = typer.Option(_DEFAULTS.cv_folds, "--cv-folds", help="Folds of the grouped (by formula) cross-validation."),
    families: list[str] | None = typer.Option(None, "--family", help=f"Kernel families to search (repeat; default all: {', '.join(KERNEL_FAMILIES)})."),
    no_ard: bool = typer.Option(False, "--no-ard", help="Only isotropic length scales."),
    seed: int = typer.Option(_DEFAULTS.seed, "--seed", help="Seed of the CV split, the optimiser and the GP."),
    rows: str = typer.Option(RESULTS_ROWS[0], "--rows", help="Rows of a results root: all | computed (screening view) | experimental (imported spectra with a measured σ)."),
) -> None:
    """Fit the surrogate; report CV MAE/RMSE (log10 units for σ, D) and ±1σ/±2σ calibration."""
    from ramanscreen.tasks.surrogate import fit_surrogate, model_paths, read_property_table, save_model

    paths = model_paths(out_file)
    settings = SurrogateSettings(n_trials=n_trials, cv_folds=cv_folds, seed=seed,
                                 families=tuple(families) if families else KERNEL_FAMILIES, allow_ard=not no_ard)
    data = read_property_table(table, results_rows=rows)
    for note in data.notes:
        out.print(f"note: {note}", markup=False)
    model, report = fit_surrogate(data, target, settings, transform=transform)
    save_model(model, out_file, report)
    cv = report.metrics
    unit = "log10 units" if model.transform == "log10" else "target units"
    t = Table(title=f"GP surrogate of {target} ({model.transform}) from {table}", show_header=False)
    t.add_column("quantity")
    t.add_column("value", justify="right")
    t.add_row("rows fitted / compositions", f"{cv['n']} / {cv['n_compositions']}")
    t.add_row("left out: censored / missing", f"{cv['n_censored']} / {cv['n_missing']}")
    t.add_row(f"CV ({cv['n_folds']}-fold, grouped by formula) MAE", f"{cv['mae']:.3f} {unit}")
    t.add_row("CV RMSE", f"{cv['rmse']:.3f} {unit}")
    t.add_row("held-out within ±1σ / ±2σ", f"{cv['within_1sigma']:.0%} / {cv['within_2sigma']:.0%} (ideal 68 % / 95 %)")
    t.add_row("kernel (fitted)", model.kernel)
    t.add_row("wrote", ", ".join(str(p) for p in paths.values()))
    out.print(t)


@surrogate_app.command("predict")
def predict(
    model_file: Path = typer.Argument(..., help="MODEL.joblib from `ramanscreen surrogate fit`."),
    table: Path = typer.Argument(..., help="CSV/Parquet with formula, temperature_k, [pressure_gpa]; or a results root."),
    out_file: Path = typer.Option(..., "--out", "-o", help="Predictions (.csv or .parquet): mean ± std (transformed) and the 95 % interval."),
) -> None:
    """Predict the target with its standard deviation for every row of TABLE."""
    from ramanscreen.tasks.surrogate import load_model, predict_table, read_property_table

    if out_file.suffix not in (".csv", ".parquet"):
        raise InputError(f"unknown output format {out_file.suffix!r}", field="--out", fix="use .csv or .parquet")
    model = load_model(model_file)
    data = read_property_table(table)
    for note in data.notes:
        out.print(f"note: {note}", markup=False)
    lo_t, hi_t = model.info.get("train_temperature_k", [None, None])
    if lo_t is not None and ((data.temperature_k < lo_t).any() or (data.temperature_k > hi_t).any()):
        warnings.warn(f"some temperatures lie outside the training range {lo_t:g}–{hi_t:g} K: extrapolation",
                      UserWarning, stacklevel=1)
    cols = predict_table(model, data)
    write_table(cols, out_file, metadata={"model": str(model_file), "target": model.target,
                                          "provenance": "GP surrogate prediction, not a measurement or DFT"})
    out.print(f"wrote {out_file} ({len(data)} rows; {model.target} from {model_file})", markup=False)
