"""``ramanscreen alpha``: fit the λ-SOAP polarizability model, predict α along a trajectory,
and draw its learning curve (paper Fig. 2A–C)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from ramanscreen.flows.cli import app
from ramanscreen.tasks.common import InputError, atomic_path, write_table

alpha_app = typer.Typer(no_args_is_help=True, add_completion=False, rich_markup_mode="rich")
app.add_typer(
    alpha_app,
    name="alpha",
    help="λ-SOAP model of the polarizability: fit on reference α, predict along MD, learning curve.",
)
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def _hypers(cutoff_a: float, max_radial: int, max_angular: int, width_a: float):
    from ramanscreen.tasks.polarizability import SOAPHypers

    return SOAPHypers(cutoff_A=cutoff_a, max_radial=max_radial, max_angular=max_angular, width_A=width_a)


_CUTOFF = typer.Option(5.0, "--cutoff-a", help="SOAP cutoff radius (Å).")
_MAX_RADIAL = typer.Option(5, "--max-radial", help="Largest radial index (max_radial+1 GTO functions).")
_MAX_ANGULAR = typer.Option(4, "--max-angular", help="Largest l of the density expansion (≥ 1).")
_WIDTH = typer.Option(0.4, "--width-a", help="Gaussian width of the atomic density (Å).")


def _progress() -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), console=err, transient=True,
    )


def _model_out(path: Path) -> Path:
    if path.suffix not in ("", ".mts"):
        raise InputError(f"model path must end in .mts (or have no suffix), got {path.name!r}", field="--out",
                         fix="use e.g. --out agi_alpha.mts (a .json sidecar is written next to it)")
    return path


@alpha_app.command("fit")
def fit(
    dataset: Path = typer.Argument(..., help="extxyz with info['polarizability'] (9 numbers, Å³) and info['alpha_method']."),
    n_train: int | None = typer.Option(None, "--n-train", help="Training frames, drawn at random; the rest is the test set (default: 80 %)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the train/test split, CV folds and bootstrap."),
    out_path: Path = typer.Option(..., "--out", "-o", help="Model file MODEL.mts (+ MODEL.json sidecar)."),
    n_committee: int = typer.Option(8, "--n-committee", help="Bootstrap committee members (0: none, ≥ 2 for an uncertainty)."),
    parity: Path | None = typer.Option(None, "--parity", help="Parity-plot PNG of the test set (default: MODEL.parity.png when there is a test set)."),
    cutoff_a: float = _CUTOFF,
    max_radial: int = _MAX_RADIAL,
    max_angular: int = _MAX_ANGULAR,
    width_a: float = _WIDTH,
) -> None:
    """Fit the λ-SOAP ridge model of α and report R²/RMSE on the held-out frames."""
    from ramanscreen.tasks.polarizability import AlphaModel, alpha_metrics, plot_parity, read_training_set

    out_path = _model_out(out_path)
    hypers = _hypers(cutoff_a, max_radial, max_angular, width_a)
    frames, alpha, method = read_training_set(dataset)
    n = len(frames)
    n_train = int(round(0.8 * n)) if n_train is None else n_train
    if not 2 <= n_train <= n:
        raise InputError(f"--n-train {n_train} is not within 2..{n} (frames in the dataset)", file=dataset,
                         field="--n-train", fix=f"use at most {n}")
    order = np.random.default_rng(seed).permutation(n)
    train, test = np.sort(order[:n_train]), np.sort(order[n_train:])
    with err.status(f"fitting on {n_train} frames (featurising, CV, {n_committee} bootstrap members)…"):
        model = AlphaModel.fit([frames[i] for i in train], alpha[train], hypers=hypers, n_committee=n_committee,
                               seed=seed, method=method)
    metrics = None
    if len(test):
        test_frames = [frames[i] for i in test]
        pred, committee = model.predict_with_committee(test_frames)
        metrics = alpha_metrics(alpha[test], pred)
        model.meta["test_metrics"] = {**metrics, "n_test": len(test)}
        if committee.shape[0]:
            model.meta["test_metrics"]["committee_std_A3"] = float(committee.std(axis=0).mean())
    model.meta["dataset"] = str(dataset)
    mts, side = model.save(out_path)
    written = [mts, side]
    if metrics is not None:
        parity = parity or mts.with_name(mts.name.removesuffix(".mts") + ".parity.png")
        plot_parity(alpha[test], pred, parity, title=f"{dataset.name}: {len(test)} test frames ({method})")
        written.append(parity)

    table = Table(title=f"λ-SOAP α model of {dataset.name} ({method})")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_row("training / test frames", f"{n_train} / {len(test)}")
    table.add_row("elements", " ".join(_symbols(model.elements)))
    table.add_row("regularisation λ=0 / λ=2 (relative)",
                  f"{model.meta['reg_relative']['0']:.1e} / {model.meta['reg_relative']['2']:.1e}")
    table.add_row("CV RMSE per atom λ=0 / λ=2 (Å³)",
                  f"{model.meta['cv_rmse_per_atom_A3']['0']:.3g} / {model.meta['cv_rmse_per_atom_A3']['2']:.3g}")
    if metrics is not None:
        table.add_row("test R² diagonal / off-diagonal", f"{metrics['r2_diag']:.4f} / {metrics['r2_offdiag']:.4f}")
        table.add_row("test RMSE diagonal / off-diagonal (Å³)",
                      f"{metrics['rmse_diag_A3']:.4g} / {metrics['rmse_offdiag_A3']:.4g}")
        if "committee_std_A3" in model.meta["test_metrics"]:
            table.add_row("committee σ (mean, Å³), calibration factor",
                          f"{model.meta['test_metrics']['committee_std_A3']:.3g}, {model.committee_scale:.2f}")
    else:
        table.add_row("test metrics", "none: every frame was used for training")
    out.print(table)
    out.print("wrote " + ", ".join(str(p) for p in written))


@alpha_app.command("predict")
def predict(
    model_path: Path = typer.Argument(..., help="Model written by `ramanscreen alpha fit` (MODEL.mts with MODEL.json)."),
    trajectory: Path = typer.Argument(..., help="MD trajectory (ASE .traj, extxyz, XDATCAR, vasprun.xml, ...)."),
    stride: int = typer.Option(1, "--stride", help="Predict every n-th stored frame (paper: every 10th MD step)."),
    out_path: Path = typer.Option(..., "--out", "-o", help="α series: .npy (n,3,3) or .txt (6 columns xx yy zz xy yz zx, Å³)."),
    committee_out: Path | None = typer.Option(None, "--committee-out", help="Also write the committee's α series (m,n,3,3) as .npy, for the spectrum band."),
    chunk: int = typer.Option(64, "--chunk", help="Frames per chunk (memory bound)."),
    fmt: str | None = typer.Option(None, "--format", help="ASE format name if the file name does not tell."),
) -> None:
    """Predict α for every ``stride``-th frame of a trajectory, streamed in chunks."""
    from ramanscreen.tasks.polarizability import AlphaModel, frame_uncertainty_A3, predict_trajectory
    from ramanscreen.tasks.spectra import write_alpha_txt

    if out_path.suffix not in (".npy", ".txt"):
        raise InputError(f"unknown output format {out_path.suffix!r}", field="--out", fix="use .npy or .txt")
    if committee_out is not None and committee_out.suffix != ".npy":
        raise InputError("committee output must be .npy", field="--committee-out", fix="use e.g. alpha_committee.npy")
    model = AlphaModel.load(model_path)
    if committee_out is not None and model.n_committee < 2:
        raise InputError(f"the model has {model.n_committee} committee members", file=model_path,
                         field="--committee-out", fix="refit with --n-committee 8")
    with _progress() as bar:
        result = predict_trajectory(model, trajectory, stride=stride, chunk=chunk, progress=bar,
                                    committee=committee_out is not None, fmt=fmt)
    alpha, committee = result if committee_out is not None else (result, None)
    if out_path.suffix == ".txt":
        write_alpha_txt(out_path, alpha)
    else:
        with atomic_path(out_path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, alpha)
    if committee is not None:
        with atomic_path(committee_out) as tmp, open(tmp, "wb") as fh:
            np.save(fh, committee)
    summary = (f"{len(alpha)} frames (stride {stride}) of {trajectory.name}: mean tr(α)/3 = "
               f"{np.trace(alpha, axis1=1, axis2=2).mean() / 3:.4g} Å³ ({model.meta.get('alpha_method', '?')})")
    if committee is not None:
        sigma = frame_uncertainty_A3(committee)
        summary += f"; committee σ per frame: mean {sigma.mean():.3g} Å³, max {sigma.max():.3g} Å³"
    out.print(summary)
    out.print("wrote " + ", ".join(str(p) for p in [out_path, committee_out] if p is not None))


@alpha_app.command("learning-curve")
def learning_curve_cmd(
    dataset: Path = typer.Argument(..., help="extxyz α dataset (as for `alpha fit`)."),
    sizes: str = typer.Option(..., "--sizes", help="Training sizes, comma separated, e.g. 10,20,40,80."),
    repeats: int = typer.Option(3, "--repeats", help="Random training draws per size."),
    out_prefix: Path = typer.Option(..., "--out", "-o", help="Writes PREFIX.csv (table) and PREFIX.png (Fig. 2A)."),
    n_test: int | None = typer.Option(None, "--n-test", help="Held-out test frames (default: a quarter)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the test split and the draws."),
    cutoff_a: float = _CUTOFF,
    max_radial: int = _MAX_RADIAL,
    max_angular: int = _MAX_ANGULAR,
    width_a: float = _WIDTH,
) -> None:
    """Test R² and RMSE (diagonal, off-diagonal) against training-set size."""
    from ramanscreen.tasks.polarizability import learning_curve, read_training_set

    try:
        size_list = [int(s) for s in sizes.split(",") if s.strip()]
    except ValueError:
        raise InputError(f"cannot read sizes {sizes!r}", field="--sizes", fix="write e.g. --sizes 10,20,40") from None
    if repeats < 1:
        raise InputError(f"--repeats must be ≥ 1, got {repeats}", field="--repeats")
    hypers = _hypers(cutoff_a, max_radial, max_angular, width_a)
    frames, alpha, method = read_training_set(dataset)
    with _progress() as bar:
        task = bar.add_task("fitting", total=len(set(size_list)) * repeats)
        curve = learning_curve(frames, alpha, size_list, repeats=repeats, n_test=n_test, hypers=hypers, seed=seed,
                               progress=lambda done, total: bar.update(task, completed=done))
    summary = curve.summary()
    csv_path = out_prefix.with_name(out_prefix.name + ".csv")
    png_path = out_prefix.with_name(out_prefix.name + ".png")
    write_table(summary, csv_path)
    curve.plot(png_path, title=f"{dataset.name} ({method}), {curve.n_test} test frames, {repeats} repeats")
    table = Table(title=f"learning curve of {dataset.name} ({curve.n_test} test frames, mean ± std of {repeats})")
    for col in ("N_train", "R² diag", "R² off-diag", "RMSE diag (Å³)", "RMSE off-diag (Å³)"):
        table.add_column(col, justify="right")
    for i, size in enumerate(summary["n_train"]):
        table.add_row(
            str(size),
            *(f"{summary[f'{k}_mean'][i]:.3f} ± {summary[f'{k}_std'][i]:.3f}" for k in ("r2_diag", "r2_offdiag")),
            *(f"{summary[f'{k}_mean'][i]:.3g} ± {summary[f'{k}_std'][i]:.2g}" for k in ("rmse_diag_A3", "rmse_offdiag_A3")),
        )
    out.print(table)
    out.print(f"wrote {csv_path}, {png_path}")


def _symbols(numbers: list[int]) -> list[str]:
    from ase.data import chemical_symbols

    return [chemical_symbols[z] for z in numbers]
