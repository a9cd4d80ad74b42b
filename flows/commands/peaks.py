"""``ramanscreen peaks``: fit Raman peaks of a spectrum (the default command), build per-band
peak features for several spectra (``peaks features``), and regress log10 σ on them
(``peaks regress``)."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np
import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from ramanscreen.flows.cli import app
from ramanscreen.tasks.common import InputError, atomic_write, write_table
from ramanscreen.tasks.peaks import BASELINES, PROFILES, PeakSettings

_D = PeakSettings()
out = Console(highlight=False, soft_wrap=True)


class _DefaultFit(TyperGroup):
    """``ramanscreen peaks SPECTRUM ...`` means ``ramanscreen peaks fit SPECTRUM ...``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["fit", *args]
        return super().parse_args(ctx, args)


peaks_app = typer.Typer(cls=_DefaultFit, no_args_is_help=True, add_completion=False, rich_markup_mode="rich")
app.add_typer(peaks_app, name="peaks",
              help="Raman peak fitting (positions, FWHM, areas), band features, and the regression of log10 σ on them.")


def _settings(profile, baseline, baseline_order, prominence, min_distance_cm1, max_peaks, range_cm1) -> PeakSettings:
    rng = (None, None) if range_cm1 is None else (float(range_cm1[0]), float(range_cm1[1]))
    return PeakSettings(profile=profile, baseline=baseline, baseline_order=baseline_order, prominence=prominence,
                        min_distance_cm1=min_distance_cm1, max_peaks=max_peaks, range_cm1=rng)


_PROFILE = typer.Option(_D.profile, "--profile", help=f"Peak profile: {' | '.join(PROFILES)}.")
_BASELINE = typer.Option(_D.baseline, "--baseline", help=f"Baseline: {' | '.join(BASELINES)} (poly: iterative polynomial).")
_ORDER = typer.Option(_D.baseline_order, "--baseline-order", help="Polynomial degree for --baseline poly.")
_PROM = typer.Option(_D.prominence, "--prominence", help="Detection threshold: prominence as a fraction of the largest intensity.")
_DIST = typer.Option(_D.min_distance_cm1, "--min-distance-cm1", help="Smallest distance between detected peaks (cm⁻¹).")
_MAXP = typer.Option(_D.max_peaks, "--max-peaks", help="Keep at most this many (the most prominent) peaks.")
_RANGE = typer.Option(None, "--range-cm1", help="Fit only LO HI cm⁻¹, e.g. --range-cm1 100 1000.")
_FMT = typer.Option(None, "--input-format", help="Spectrum format if the suffix does not tell: text | parquet | jcamp | spc | wdf.")


@peaks_app.command("fit")
def fit(
    spectrum: Path = typer.Argument(..., help="A spectrum: the project's spectrum CSV/Parquet, a freq_cm1,intensity CSV, or any format `experiment import` reads."),
    out_file: Path = typer.Option(..., "--out", "-o", help="Peak table (.csv or .parquet)."),
    column: str = typer.Option("intensity", "--column", help="Intensity column of a project spectrum table (e.g. intensity_parallel)."),
    profile: str = _PROFILE, baseline: str = _BASELINE, baseline_order: int = _ORDER, prominence: float = _PROM,
    min_distance_cm1: float = _DIST, max_peaks: int = _MAXP,
    range_cm1: tuple[float, float] | None = _RANGE, fmt: str | None = _FMT,
    plot: Path | None = typer.Option(None, "--plot", help="Also write a PNG of the fit."),
) -> None:
    """Detect and fit peaks: positions, FWHM (cm⁻¹), heights and areas, each with its standard error."""
    from ramanscreen.tasks.peaks import fit_peaks, plot_peak_fit

    x, y = _read(spectrum, column, fmt)
    s = _settings(profile, baseline, baseline_order, prominence, min_distance_cm1, max_peaks, range_cm1)
    res = fit_peaks(x, y, s)
    meta = {"source": str(spectrum), "settings": json.dumps({k: v for k, v in vars(s).items()}),
            "r2": repr(res.r2), "fit_ok": str(res.fit_ok), "units": "position/fwhm cm^-1; height, area in input units"}
    write_table(res.table, out_file, metadata=meta)
    if plot is not None:
        plot_peak_fit(res, plot, title=f"{spectrum.name}: {res.n_peaks} {s.profile} peaks")
    t = Table(title=f"{res.n_peaks} {s.profile} peaks in {spectrum} (baseline {s.baseline}, R² = {res.r2:.4f})")
    for c in ("#", "position (cm⁻¹)", "FWHM (cm⁻¹)", "height", "area"):
        t.add_column(c, justify="right")
    tb = res.table
    for k in range(res.n_peaks):
        t.add_row(str(tb["peak"][k]), f"{tb['position_cm1'][k]:.2f} ± {tb['position_err_cm1'][k]:.2f}",
                  f"{tb['fwhm_cm1'][k]:.2f} ± {tb['fwhm_err_cm1'][k]:.2f}", f"{tb['height'][k]:.4g}",
                  f"{tb['area'][k]:.4g} ± {tb['area_err'][k]:.2g}")
    out.print(t)
    out.print(f"wrote {out_file}" + (f", {plot}" if plot else ""), markup=False)


def _read(path: Path, column: str, fmt: str | None):
    from ramanscreen.tasks.experiment import detect_format, read_spectrum

    kind = detect_format(path, fmt)
    if column != "intensity" and kind in ("text", "parquet"):
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq

        table = pq.read_table(path) if kind == "parquet" else pacsv.read_csv(path)
        for c in ("freq_cm1", column):
            if c not in table.column_names:
                raise InputError(f"no '{c}' column", file=path, field="--column", fix=f"columns: {', '.join(table.column_names)}")
        return np.asarray(table.column("freq_cm1"), float), np.asarray(table.column(column), float)
    s = read_spectrum(path, fmt)
    return s.freq_cm1, s.intensity


@peaks_app.command("features")
def features(
    manifest: Path = typer.Argument(..., help="CSV with a 'spectrum' column (paths, relative to the manifest) plus any targets (sigma_S_cm, ...)."),
    bands: list[float] = typer.Option(..., "--band", help="Band centre in cm⁻¹ whose nearest peak gives pos_/fwhm_/area_frac_ features (repeat)."),
    window_cm1: float = typer.Option(30.0, "--window-cm1", help="A band's peak must lie within this distance of its centre."),
    out_file: Path = typer.Option(..., "--out", "-o", help="Feature table (.csv or .parquet): the manifest's columns plus the features."),
    profile: str = _PROFILE, baseline: str = _BASELINE, baseline_order: int = _ORDER, prominence: float = _PROM,
    min_distance_cm1: float = _DIST, max_peaks: int = _MAXP, range_cm1: tuple[float, float] | None = _RANGE,
) -> None:
    """Fit every spectrum of MANIFEST and tabulate the peak features of the chosen bands."""
    import pyarrow.csv as pacsv

    from ramanscreen.tasks.peaks import band_features, fit_peaks

    table = pacsv.read_csv(manifest)
    if "spectrum" not in table.column_names:
        raise InputError("no 'spectrum' column", file=manifest, field="spectrum", fix="list one spectrum file per row")
    cols = {k: table.column(k).to_pylist() for k in table.column_names}
    s = _settings(profile, baseline, baseline_order, prominence, min_distance_cm1, max_peaks, range_cm1)
    feats: dict[str, list[float]] = {}
    for i, rel in enumerate(cols["spectrum"]):
        path = Path(rel) if Path(rel).is_absolute() else manifest.parent / rel
        x, y = _read(path, "intensity", None)
        f = band_features(fit_peaks(x, y, s).table, bands, window_cm1)
        for k, v in f.items():
            feats.setdefault(k, [float("nan")] * len(cols["spectrum"]))[i] = v
    write_table({**cols, **feats}, out_file, metadata={"bands_cm1": json.dumps(list(bands)), "window_cm1": repr(window_cm1)})
    missing = {k: sum(np.isnan(v)) for k, v in feats.items() if np.isnan(v).any()}
    out.print(f"wrote {out_file}: {len(cols['spectrum'])} spectra × {len(feats)} features"
              + (f"; no peak in the window for {missing}" if missing else ""), markup=False)


@peaks_app.command("regress")
def regress(
    features_table: Path = typer.Argument(..., help="CSV/Parquet with the target column and numeric feature columns (e.g. from `peaks features`); or a results root: its experimental spectra with a measured σ, fitted, with the --band features."),
    target: str = typer.Option("sigma_S_cm", "--target", help="Target column."),
    feature: list[str] | None = typer.Option(None, "--feature", help="Feature column (repeat; default: every numeric column but the target, T and P)."),
    transform: str | None = typer.Option(None, "--transform", help="log10 | identity (default: log10 for sigma*/D_*)."),
    out_file: Path | None = typer.Option(None, "--out", "-o", help="Write the coefficients and R² as JSON."),
    bands: list[float] | None = typer.Option(None, "--band", help="With a results root: band centre in cm⁻¹ giving pos_/fwhm_/area_frac_ features (repeat)."),
    window_cm1: float = typer.Option(30.0, "--window-cm1", help="With a results root: a band's peak must lie within this distance of its centre."),
    computed: bool = typer.Option(False, "--computed", help="With a results root: its computed runs (MD σ, the computed spectra's band features and cp_fraction) instead of the imported experimental spectra."),
    profile: str = _PROFILE, baseline: str = _BASELINE, baseline_order: int = _ORDER, prominence: float = _PROM,
    min_distance_cm1: float = _DIST, max_peaks: int = _MAXP, range_cm1: tuple[float, float] | None = _RANGE,
) -> None:
    """Multi-linear regression of (log10) TARGET on peak features: coefficients ± SE, R², cross-validated R²."""
    from ramanscreen.tasks.peaks import computed_features, experimental_features, linear_regression
    from ramanscreen.tasks.surrogate import _read_columns, apply_transform, default_transform

    if features_table.is_dir():
        if not bands:
            raise InputError("a results root needs the bands to build features from", file=features_table,
                             field="--band", fix="pass --band CM1 for each band, e.g. --band 250 --band 640")
        s = _settings(profile, baseline, baseline_order, prominence, min_distance_cm1, max_peaks, range_cm1)
        if computed:
            cols = computed_features(features_table, bands, window_cm1, s)
            labels = sorted({f"{m} / {r}" for m, r in zip(cols["mlff"], cols["reference_method"], strict=True)})
            out.print(f"note: {len(cols['material'])} computed runs from {features_table}: σ from MD and α "
                      f"({'; '.join(labels)}), not measurements", markup=False)
        else:
            cols = experimental_features(features_table, bands, window_cm1, s)
            out.print(f"note: {len(cols['material'])} experimental spectra with a measured σ from {features_table}",
                      markup=False)
    else:
        cols = _read_columns(features_table)
    if target not in cols:
        raise InputError(f"no target column '{target}'", file=features_table, field="--target", fix=f"columns: {', '.join(cols)}")
    transform = transform or default_transform(target)
    skip = {target, "temperature_k", "pressure_gpa", "row", "peak", "campaign", "material", "spectrum_id", "run_id",
            "mlff", "reference_method", "formula"}
    if not feature:
        feature = [k for k, v in cols.items() if k not in skip and all(isinstance(x, (int, float)) or x is None for x in v)]
    for f in feature:
        if f not in cols:
            raise InputError(f"no feature column '{f}'", file=features_table, field="--feature", fix=f"columns: {', '.join(cols)}")
    try:
        X = np.array([[np.nan if v is None else float(v) for v in cols[f]] for f in feature], dtype=float).T
        yraw = np.array([np.nan if v is None else float(v) for v in cols[target]], dtype=float)
    except (TypeError, ValueError) as exc:
        raise InputError(f"non-numeric value: {exc}", file=features_table, field="--feature", fix="select numeric columns") from None
    ok = np.isfinite(X).all(axis=1) & np.isfinite(yraw)
    if transform == "log10":
        bad = ok & (yraw <= 0)
        if bad.any():
            raise InputError(f"row {int(np.argmax(bad)) + 1}: {target} = {yraw[bad][0]:g} is not positive", file=features_table,
                             field=target, fix="remove the row or use --transform identity")
    n_drop = int((~ok).sum())
    if n_drop:
        out.print(f"note: {n_drop} rows with a missing feature or target are left out", markup=False)
    r = linear_regression(X[ok], apply_transform(yraw[ok], transform), feature, target=target, transform=transform)
    t = Table(title=f"{'log10 ' if transform == 'log10' else ''}{target} = β₀ + Σ βᵢ xᵢ  (n = {r.n})")
    for c in ("term", "β", "± SE", "standardised β"):
        t.add_column(c, justify="right")
    t.add_row("intercept", f"{r.intercept:.4g}", "", "")
    for f in feature:
        t.add_row(f, f"{r.coefficients[f]:.4g}", f"{r.coefficient_errors[f]:.2g}", f"{r.standardized_coefficients[f]:.3f}")
    out.print(t)
    out.print(f"R² = {r.r2:.3f}; cross-validated R² ({r.cv_scheme}) = {r.cv_r2:.3f}; CV RMSE = {r.cv_rmse:.3f}", markup=False)
    if out_file is not None:
        with atomic_write(out_file, "w") as fh:
            json.dump(r.summary(), fh, indent=2)
            fh.write("\n")
        out.print(f"wrote {out_file}", markup=False)
