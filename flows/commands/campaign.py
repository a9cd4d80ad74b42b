"""``ramanscreen screen CAMPAIGN``: run a screening campaign (Prefect flow on a Dask cluster)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import typer
from rich.console import Console

from flows.cli import app

out = Console(highlight=False, soft_wrap=False, width=None if sys.stdout.isatty() else 200)


@app.command()
def screen(
    campaign: Path = typer.Argument(..., help="Campaign file, e.g. deployments/campaigns/default.toml."),
    quick: bool = typer.Option(False, "--quick", help="Apply the campaign's [quick] profile (tiny cells, short runs)."),
    keep_ui: bool = typer.Option(False, "--keep-ui", help="Leave the local Prefect server (and its UI) running at the end."),
) -> None:
    """Screen every material of CAMPAIGN: MD → reference α → λ-SOAP → Raman + transport → Parquet → ranking.

    Without PREFECT_API_URL a local Prefect server starts on 127.0.0.1 (UI address printed) and
    stops at the end unless --keep-ui. Re-running a finished campaign recomputes nothing; an
    interrupted one resumes at the first unfinished step.
    """
    from flows.campaign import run_campaign
    from flows.config import load_campaign

    load_campaign(campaign, quick=quick)  # one-line error + exit 2 before anything starts
    t0 = time.monotonic()

    def announce(ui: str | None) -> None:
        if ui:
            out.print(f"Prefect UI: {ui}  (server up after {time.monotonic() - t0:.0f} s)")

    run = run_campaign(campaign, quick=quick, keep_ui=keep_ui, on_server=announce)
    wall = time.monotonic() - t0
    c = run.campaign
    if run.ui_url and run.flow_run_id:
        out.print(f"flow run: {run.ui_url}/runs/flow-run/{run.flow_run_id}")
    from flows.commands.analytics import rank

    rank(results_root=c.results_root, campaign=c.name, metric="cp_fraction", d_liquid=5e-6, d_hopping=1e-7,
         cp_threshold=0.25, out_dir=None)
    out.print("spectrum plots:")
    for m in run.result["materials"]:
        out.print(f"  {m['material']}: {m['spectrum_png']}")
    out.print(f"campaign {c.name!r} finished in {wall:.0f} s; results under {c.results_root}")
    if keep_ui and run.ui_url:
        out.print(f"the Prefect server keeps running at {run.ui_url} (stop it with: kill <its pid>; "
                  f"log in {c.results_root / '_prefect' / 'server' / c.name / 'server.log'})")
