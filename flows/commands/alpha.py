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
from ramanscreen.tasks.common import InputError, staged, write_table

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


def _opt(cls_name: str, name: str, flag: str, *short: str):
    """A typer option whose default and help come from the settings dataclass ``cls_name`` of
    ``ramanscreen.tasks.polarizability`` (one definition for the CLI and the campaign)."""
    from ramanscreen.tasks import polarizability
    from ramanscreen.tasks.schema import default, help_text

    cls = getattr(polarizability, cls_name)
    return typer.Option(default(cls, name), flag, *short, help=help_text(cls, name))


_CUTOFF = _opt("SOAPHypers", "cutoff_A", "--cutoff-a")
_MAX_RADIAL = _opt("SOAPHypers", "max_radial", "--max-radial")
_MAX_ANGULAR = _opt("SOAPHypers", "max_angular", "--max-angular")
_WIDTH = _opt("SOAPHypers", "width_A", "--width-a")
#: Science-layer field names of SOAPHypers → the option names here (for error messages).
HYPER_FLAGS = {"cutoff_A": "--cutoff-a", "max_radial": "--max-radial", "max_angular": "--max-angular",
               "width_A": "--width-a"}


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
    seed: int = _opt("ModelSettings", "seed", "--seed"),
    out_path: Path = typer.Option(..., "--out", "-o", help="Model file MODEL.mts (+ MODEL.json sidecar)."),
    committee: int = _opt("ModelSettings", "committee", "--committee"),
    parity: Path | None = typer.Option(None, "--parity", help="Parity-plot PNG of the test set (default: MODEL.parity.png when there is a test set)."),
    cutoff_a: float = _CUTOFF,
    max_radial: int = _MAX_RADIAL,
    max_angular: int = _MAX_ANGULAR,
    width_a: float = _WIDTH,
    search_budget_s: float = _opt("ModelSettings", "search_budget_s", "--search-budget-s"),
) -> None:
    """Fit the λ-SOAP ridge model of α and report R²/RMSE on the held-out frames.

    The train/test split is the campaign's (ramanscreen.tasks.polarizability.train_test_split):
    the same dataset and seed give the same model as a campaign fit. With --search-budget-s S
    the hypers are chosen by k-fold CV over the training frames (starting from the hyper
    options given), in at most about S seconds; the sidecar records every candidate's CV score."""
    from ramanscreen.tasks.polarizability import (
        AlphaModel,
        alpha_metrics,
        plot_parity,
        read_training_set,
        train_test_split,
    )
    from ramanscreen.tasks.schema import prefixed

    out_path = _model_out(out_path)
    try:
        hypers = _hypers(cutoff_a, max_radial, max_angular, width_a)
    except InputError as exc:
        raise prefixed(exc, None, fields=HYPER_FLAGS) from None
    frames, alpha, method = read_training_set(dataset)
    n = len(frames)
    n_train = int(round(0.8 * n)) if n_train is None else n_train
    from ramanscreen.tasks.polarizability import ModelSettings

    ModelSettings().check_split(n, n_train, file=dataset)  # no R² from one test frame
    try:
        train, test = train_test_split(n, n_train, seed=seed)
    except InputError as exc:
        raise InputError(exc.message, file=dataset, field=exc.field, fix=exc.fix) from None
    if search_budget_s < 0:
        raise InputError(f"must be ≥ 0 s, got {search_budget_s:g}", field="--search-budget-s",
                         fix="use 0 (the hypers as given) or a budget in seconds, e.g. 120")
    searching = f"hyper search ≤ {search_budget_s:g} s, " if search_budget_s > 0 else ""
    with err.status(f"fitting on {n_train} frames ({searching}featurising, CV, {committee} bootstrap members)…"):
        model = AlphaModel.fit([frames[i] for i in train], alpha[train], hypers=hypers, n_committee=committee,
                               seed=seed, method=method, search_budget_s=search_budget_s)
    metrics = None
    if len(test):
        test_frames = [frames[i] for i in test]
        pred, committee = model.predict_with_committee(test_frames)
        metrics = alpha_metrics(alpha[test], pred)
        model.meta["test_metrics"] = {**metrics, "n_test": len(test)}
        if committee.shape[0]:
            model.meta["test_metrics"]["committee_std_A3"] = float(committee.std(axis=0).mean())
    model.meta["dataset"] = str(dataset)
    from ramanscreen.tasks.polarizability import _model_paths

    mts, side = _model_paths(out_path)
    written = [mts, side]
    with staged(mts.parent, field="out") as st:  # the model, its sidecar and the parity plot, or none
        model.save(st.group([mts, side]) / mts.name)
        if metrics is not None:
            parity = parity or mts.with_name(mts.name.removesuffix(".mts") + ".parity.png")
            plot_parity(alpha[test], pred, st.path(parity),
                        title=f"{dataset.name}: {len(test)} test frames ({method})")
            written.append(parity)

    table = Table(title=f"λ-SOAP α model of {dataset.name} ({method})")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_row("training / test frames", f"{n_train} / {len(test)}")
    table.add_row("elements", " ".join(_symbols(model.elements)))
    h = model.hypers
    table.add_row("λ-SOAP cutoff / max_radial / max_angular / width",
                  f"{h.cutoff_A:g} Å / {h.max_radial} / {h.max_angular} / {h.width_A:g} Å")
    if "hyper_search" in model.meta:
        rec = model.meta["hyper_search"]
        state = "converged" if rec["complete"] else "budget reached"
        table.add_row("hyper search (CV)", f"{len(rec['candidates'])} candidates in {rec['elapsed_s']:.0f} s "
                      f"of {rec['budget_s']:g} s, {state}; CV RMSE per atom {rec['cv_rmse_per_atom_A3']:.3g} Å³")
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
    stride: int = typer.Option(1, "--stride", help="Predict every n-th stored frame of the trajectory (paper: α every "
                               "10th MD step); the α file records the resulting spacing."),
    dt_fs: float | None = typer.Option(None, "--dt-fs", help="Time between the trajectory's stored frames in fs "
                                       "(needed only when the trajectory does not record it)."),
    out_path: Path = typer.Option(..., "--out", "-o", help="α series: .txt (6 columns xx yy zz xy yz zx, Å³, with a "
                                  "'# dt_fs' header), .npy (n,3,3) + .json sidecar, or .npz."),
    committee_out: Path | None = typer.Option(None, "--committee-out", help="Also write the committee's α series (m,n,3,3) as .npy, for the spectrum band."),
    chunk_frames: int = _opt("PredictionSettings", "chunk_frames", "--chunk-frames"),
    input_format: str | None = typer.Option(None, "--input-format", help="ASE format name if the file name does not tell."),
) -> None:
    """Predict α for every ``stride``-th frame of a trajectory, streamed in chunks.

    The α file states the time between its samples (frame spacing × stride), so
    `ramanscreen spectrum` needs no --dt-fs for it."""
    from ramanscreen.tasks.polarizability import AlphaModel, frame_uncertainty_A3, predict_trajectory
    from ramanscreen.tasks.spectra import write_alpha
    from ramanscreen.tasks.trajectory import frame_spacing_fs

    if out_path.suffix not in (".npy", ".txt", ".npz"):
        raise InputError(f"unknown output format {out_path.suffix!r}", field="--out", fix="use .txt, .npy or .npz")
    if committee_out is not None and committee_out.suffix != ".npy":
        raise InputError("committee output must be .npy", field="--committee-out", fix="use e.g. alpha_committee.npy")
    if stride < 1:
        raise InputError(f"must be ≥ 1, got {stride}", field="--stride", fix="predict every n-th stored frame, n ≥ 1")
    recorded = frame_spacing_fs(trajectory, fmt=input_format)
    if recorded is not None and dt_fs is not None and abs(recorded - dt_fs) > 1e-6 * recorded:
        raise InputError(f"{dt_fs:g} fs contradicts the trajectory, which records {recorded:g} fs between frames",
                         file=trajectory, field="--dt-fs", fix="leave --dt-fs out: the file records it")
    frame_dt = recorded if recorded is not None else dt_fs
    model = AlphaModel.load(model_path)
    if committee_out is not None and model.n_committee < 2:
        raise InputError(f"the model has {model.n_committee} committee members", file=model_path,
                         field="--committee-out", fix="refit with --committee 8")
    with _progress() as bar:
        result = predict_trajectory(model, trajectory, stride=stride, chunk=chunk_frames, progress=bar,
                                    committee=committee_out is not None, fmt=input_format)
    alpha, committee = result if committee_out is not None else (result, None)
    alpha_dt = None if frame_dt is None else frame_dt * stride
    meta = {"trajectory": str(trajectory), "stride": stride, "frame_dt_fs": frame_dt, "model": str(model_path),
            "alpha_method": model.meta.get("alpha_method")}
    write_alpha(out_path, alpha, dt_fs=alpha_dt, meta=meta)
    if committee is not None:
        write_alpha(committee_out, committee, dt_fs=alpha_dt, meta=meta, committee=True)
    spacing = f"{alpha_dt:g} fs apart" if alpha_dt is not None else "spacing unknown: give --dt-fs to spectrum"
    summary = (f"{len(alpha)} frames (stride {stride}, {spacing}) of {trajectory.name}: mean tr(α)/3 = "
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
    out_csv: Path = typer.Option(..., "--out", "-o", help="The table, CURVE.csv; the plot (Fig. 2A) goes to CURVE.png next to it."),
    n_test: int | None = typer.Option(None, "--n-test", help="Held-out test frames (default: a quarter)."),
    seed: int = _opt("ModelSettings", "seed", "--seed"),
    cutoff_a: float = _CUTOFF,
    max_radial: int = _MAX_RADIAL,
    max_angular: int = _MAX_ANGULAR,
    width_a: float = _WIDTH,
) -> None:
    """Test R² and RMSE (diagonal, off-diagonal) against training-set size."""
    from ramanscreen.tasks.polarizability import learning_curve, read_training_set
    from ramanscreen.tasks.schema import prefixed

    if out_csv.suffix != ".csv":
        raise InputError(f"the learning curve is written as CSV, got {out_csv.name!r}", field="--out",
                         fix="use e.g. --out curve.csv (the plot goes to curve.png)")
    try:
        size_list = [int(s) for s in sizes.split(",") if s.strip()]
    except ValueError:
        raise InputError(f"cannot read sizes {sizes!r}", field="--sizes", fix="write e.g. --sizes 10,20,40") from None
    if repeats < 1:
        raise InputError(f"--repeats must be ≥ 1, got {repeats}", field="--repeats")
    try:
        hypers = _hypers(cutoff_a, max_radial, max_angular, width_a)
    except InputError as exc:
        raise prefixed(exc, None, fields=HYPER_FLAGS) from None
    frames, alpha, method = read_training_set(dataset)
    with _progress() as bar:
        task = bar.add_task("fitting", total=len(set(size_list)) * repeats)
        curve = learning_curve(frames, alpha, size_list, repeats=repeats, n_test=n_test, hypers=hypers, seed=seed,
                               progress=lambda done, total: bar.update(task, completed=done))
    summary = curve.summary()
    csv_path = out_csv
    png_path = out_csv.with_suffix(".png")
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
