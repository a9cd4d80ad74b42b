"""``ramanscreen explore FILE``: the closed loop (surrogate → proposals → material flows) as a Prefect flow."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from ramanscreen.flows.cli import app

out = Console(highlight=False, soft_wrap=False, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False)


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def state_tables(state_dir: Path, target: str) -> tuple[Table, Table]:
    """Rich tables of the loop state in ``state_dir``: every proposal, and every refit."""
    import pyarrow.parquet as pq

    props = pq.read_table(state_dir / "proposals.parquet").to_pylist() if (state_dir / "proposals.parquet").is_file() else []
    rounds = pq.read_table(state_dir / "rounds.parquet").to_pylist() if (state_dir / "rounds.parquet").is_file() else []
    t1 = Table(title=f"proposals ({target}: MLFF-MD, not DFT)", title_justify="left")
    for col in ("id", "formula", "T (K)", "P (GPa)", "by", "pred. mean ± std (log10)", "status", target):
        t1.add_column(col)
    for p in props:
        pred = "—" if not math.isfinite(p["predicted_mean"]) else f"{p['predicted_mean']:.2f} ± {p['predicted_std']:.2f}"
        value = _fmt(p["value"]) if p["status"] == "done" else (p["note"] or "")[:60]
        t1.add_row(p["proposal_id"], p["formula"], f"{p['temperature_k']:.0f}", f"{p['pressure_gpa']:.3g}",
                   p["acquisition"], pred, p["status"], value)
    t2 = Table(title="refits of the surrogate", title_justify="left")
    for col in ("round", "n_train", "kernel", "CV RMSE", "CV MAE", "±1σ", "±2σ", "max pool std", "stop"):
        t2.add_column(col)
    for r in rounds:
        t2.add_row(str(r["round"]), str(r["n_train"]), str(r.get("kernel") or "—")[:40], _fmt(r.get("cv_rmse")),
                   _fmt(r.get("cv_mae")), _fmt(r.get("cv_within_1sigma")), _fmt(r.get("cv_within_2sigma")),
                   _fmt(r.get("max_pool_std")), r.get("stop_reason") or "")
    return t1, t2


@app.command()
def explore(
    explore_file: Path = typer.Argument(..., help="Exploration file: a campaign file with an \\[explore] table, "
                                        "e.g. deployments/campaigns/llzo.toml."),
    quick: bool = typer.Option(False, "--quick", help="Apply the file's \\[quick] and \\[quick.explore] profiles."),
    results_root: Path | None = typer.Option(None, "--results-root", "-r", help="Results root (default: the file's "
                                              "results_root; RAMANSCREEN_RESULTS_ROOT also overrides it)."),
    keep_ui: bool = typer.Option(False, "--keep-ui", help="Leave the local Prefect server (and its UI) running at the end."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Library logs on the terminal too, not only in the log file."),
) -> None:
    """Closed-loop exploration of \\[explore.space] (composition x, T, P): a Latin-hypercube design,
    then rounds of material runs → GP surrogate refit → next batch by the acquisition function,
    until the budget or the target uncertainty stops it.

    Each round is a Prefect subflow (artifacts: proposals, surrogate parity plot); the material
    runs are the campaign's flows on its Dask cluster, their results one campaign in the results
    root. The loop state (proposals.parquet, rounds.parquet) is under
    <results_root>/explore/<name>/; a re-run after a kill continues where it stopped and redoes
    no finished material run.
    """
    from ramanscreen.flows.explore import load_exploration, run_explore
    from ramanscreen.flows.progress import ProgressBoard
    from ramanscreen.flows.terminal import begin_cli_run, log_path_for, run_under_board
    from ramanscreen.tasks.common import check_writable_dir

    t0 = begin_cli_run(results_root)
    expl = load_exploration(explore_file, quick=quick)  # one-line error + exit 2 before anything starts
    check_writable_dir(expl.results_root, file=explore_file, field="results_root", what="results root")
    board = ProgressBoard()  # each round's materials appear as the round starts
    board.log_path = None if verbose else log_path_for(expl.results_root, expl.name)
    s = expl.settings
    title = (f"explore {expl.name!r}: {expl.space.formula_template}, budget {s.budget} runs "
             f"({s.initial_points} initial, batches of {s.batch_size})" + (" (quick profile)" if quick else ""))

    run = run_under_board(board, title, lambda announce: run_explore(explore_file, quick=quick, keep_ui=keep_ui,
                                                                      on_server=announce),
                          out=out, err=err, t0=t0,
                          error_lines=(f"loop state so far: {expl.state_dir} (a re-run continues from it)",))
    res = run.result
    if run.ui_url and run.flow_run_id:
        out.print(f"flow run: {run.ui_url}/runs/flow-run/{run.flow_run_id}")
    for table in state_tables(expl.state_dir, s.target):
        out.print(table)
    out.print(f"stopped: {res['stop_reason']}; {res['n_done']} runs done, {res['n_failed']} failed, "
              f"{res['rounds']} refits in {time.monotonic() - t0:.0f} s")
    out.print(f"loop state: {expl.state_dir}; material results: campaign {expl.name!r} under {expl.results_root}")
    if keep_ui and run.ui_url:
        out.print(f"the Prefect server keeps running at {run.ui_url}")
