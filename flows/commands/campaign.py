"""``ramanscreen screen CAMPAIGN``: run a screening campaign (Prefect flow on a Dask cluster)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import typer
from rich.console import Console

from ramanscreen.flows.cli import app

out = Console(highlight=False, soft_wrap=False, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False)


@app.command()
def screen(
    campaign: Path = typer.Argument(..., help="Campaign file, e.g. deployments/campaigns/default.toml."),
    quick: bool = typer.Option(False, "--quick", help="Apply the campaign's \\[quick] profile (tiny cells, short runs)."),
    results_root: Path | None = typer.Option(None, "--results-root", "-r", help="Results root (default: the campaign's "
                                              "results_root; RAMANSCREEN_RESULTS_ROOT also overrides it)."),
    keep_ui: bool = typer.Option(False, "--keep-ui", help="Leave the local Prefect server (and its UI) running at the end."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Library logs (Prefect, Dask, httpx) on the terminal "
                                 "too, instead of only in the log file."),
) -> None:
    """Screen every material of CAMPAIGN: MD → reference α → λ-SOAP → Raman + transport → Parquet → ranking.

    Shows a live table (one row per material: stage, MD progress in ps with ETA) and the Prefect
    UI link; library logs go to <results_root>/logs/<campaign>-<time>.log (printed), or also to
    the terminal with --verbose. Without PREFECT_API_URL a local Prefect server starts on
    127.0.0.1 and stops at the end unless --keep-ui. Re-running a finished campaign recomputes
    nothing; an interrupted one resumes at the first unfinished step.
    """

    from ramanscreen.flows.campaign import run_campaign
    from ramanscreen.flows.config import load_campaign
    from ramanscreen.flows.progress import ProgressBoard
    from ramanscreen.flows.terminal import begin_cli_run, log_path_for, run_under_board

    t0 = begin_cli_run(results_root)
    c = load_campaign(campaign, quick=quick)  # one-line error + exit 2 before anything starts
    from ramanscreen.tasks.common import check_writable_dir

    check_writable_dir(c.results_root, file=campaign, field="results_root", what="results root")
    board = ProgressBoard()
    for m in c.materials:
        board.add(m.name, total_ps=m.md.total_steps * m.md.dt_fs / 1000.0)
    board.log_path = None if verbose else log_path_for(c.results_root, c.name)
    title = f"campaign {c.name!r}: {len(c.materials)} materials" + (" (quick profile)" if quick else "")

    run = run_under_board(board, title, lambda announce: run_campaign(campaign, quick=quick, keep_ui=keep_ui,
                                                                       on_server=announce),
                          out=out, err=err, t0=t0)
    wall = time.monotonic() - t0
    c = run.campaign
    if run.ui_url and run.flow_run_id:
        out.print(f"flow run: {run.ui_url}/runs/flow-run/{run.flow_run_id}")
    from ramanscreen.flows.commands.analytics import rank

    rank(results_root=c.results_root, campaign=c.name, metric=None, d_liquid_cm2_s=None, d_hopping_cm2_s=None,
         cp_threshold=None, converge_max_l2=None, converge_max_cp_change=None, converge_max_D_rel_change=None,
         tie_sigmas=None, out_dir=None)
    out.print("spectrum plots:")
    for m in run.result["materials"]:
        out.print(f"  {m['material']}: {m['spectrum_png']}")
    out.print(f"campaign {c.name!r} finished in {wall:.0f} s; results under {c.results_root}")
    if keep_ui and run.ui_url:
        out.print(f"the Prefect server keeps running at {run.ui_url} (stop it with: kill <its pid>; "
                  f"log in {c.results_root / '_prefect' / 'server' / c.name / 'server.log'})")


@app.command()
def validate(
    campaign: Path = typer.Argument(..., help="Campaign file to check, e.g. deployments/campaigns/default.toml."),
) -> None:
    """Check CAMPAIGN completely — every key, type and bound, the cross-field checks (windows
    against each material's α sampling, reference snapshots against stored frames, the D fit
    window against the run) and its \\[quick] profile — without starting a server, a cluster or
    a calculation. Exit 0 when it is valid; otherwise one line naming the file, the key and the
    fix, and exit 2."""
    from ramanscreen.flows.config import validate_campaign

    campaigns = validate_campaign(campaign)
    for c in campaigns:
        mats = ", ".join(f"{m.name} ({m.temperature_k:g} K, {m.md.steps * m.md.dt_fs / 1000:g} ps)" for m in c.materials)
        profile = " [quick profile]" if c.quick else ""
        print(f"ok: {campaign}: campaign {c.name!r}{profile}: {len(c.materials)} materials: {mats}")
    from ramanscreen.flows.config import read_toml

    if "explore" in read_toml(campaign):
        from ramanscreen.flows.explore import load_exploration

        for quick in sorted({c.quick for c in campaigns}):
            e = load_exploration(campaign, quick=quick)
            profile = " [quick profile]" if quick else ""
            print(f"ok: {campaign}: exploration {e.name!r}{profile}: {e.space.formula_template}, "
                  f"budget {e.settings.budget} runs, corners of the space checked")


REPO = Path(__file__).resolve().parents[2]


@app.command()
def deploy(
    prefect_file: Path = typer.Option(REPO / "deployments" / "prefect.yaml", "--prefect-file",
                                      help="The prefect.yaml holding the campaign deployments."),
    pool: str = typer.Option("ramanscreen-process", "--pool", help="Process work pool the deployments use."),
) -> None:
    """Register the scheduled campaign deployments (deployments/prefect.yaml) on the Prefect server.

    Needs PREFECT_API_URL (a long-lived server: `prefect server start`). Creates the process work
    pool if it does not exist, then runs `prefect deploy --all`. Start a worker afterwards with
    `prefect worker start --pool ramanscreen-process`.
    """
    import os
    import subprocess

    from ramanscreen.flows.server import api_healthy, apply_offline_env
    from ramanscreen.tasks.common import InputError

    api_url = os.environ.get("PREFECT_API_URL")
    if not api_url:
        raise InputError("not set", field="PREFECT_API_URL",
                         fix="start a server (prefect server start) and export PREFECT_API_URL=http://127.0.0.1:4200/api")
    if not api_healthy(api_url, timeout_s=10):
        raise InputError(f"no healthy Prefect server at {api_url}", field="PREFECT_API_URL", fix="start it first")
    if not prefect_file.is_file():
        raise InputError("no such file", file=prefect_file, fix="give the path of deployments/prefect.yaml")
    apply_offline_env()
    prefect = [sys.executable, "-m", "prefect"]
    env = {**os.environ, "RAMANSCREEN_REPO": str(REPO)}
    inspect = subprocess.run([*prefect, "work-pool", "inspect", pool], capture_output=True, text=True, env=env)
    if inspect.returncode != 0:
        created = subprocess.run([*prefect, "work-pool", "create", pool, "--type", "process"], capture_output=True,
                                 text=True, env=env)
        if created.returncode != 0:
            raise RuntimeError(f"could not create work pool {pool}: {' '.join(created.stdout.split())[-300:]}")
        out.print(f"created process work pool {pool!r}")
    proc = subprocess.run([*prefect, "--no-prompt", "deploy", "--all", "--prefect-file", str(prefect_file.resolve())],
                          cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = " ".join((proc.stdout + proc.stderr).split())[-500:]
        raise RuntimeError(f"prefect deploy failed: {tail}")
    import re

    names = re.findall(r"Deployment '([^']+)' successfully created", proc.stdout)
    for name in names:
        out.print(f"deployed {name}")
    out.print(f"start a worker: prefect worker start --pool {pool}   (PREFECT_API_URL={api_url})")
