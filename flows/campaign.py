"""The campaign flow: every material of a campaign file, concurrently, then the ranking.

:func:`campaign_flow` runs the materials' task graphs (``flows/material.py``) in threads of the
flow process, all submitting onto the flow's one Dask task runner, so MD of one material
overlaps with the reference calculations or the ML of another. It ends with the ranking
(analytics) as a Prefect table artifact and the report files (CSV, Markdown, PNGs).

:func:`run_campaign` is what ``ramanscreen screen`` calls: it starts a local Prefect server
unless ``PREFECT_API_URL`` is set (:mod:`ramanscreen.flows.server`), then the Dask cluster of the
campaign's ``[cluster]`` section (:mod:`ramanscreen.flows.cluster`) — in that order, so the workers inherit
``PREFECT_API_URL`` — and runs the flow with a task runner connected to that cluster.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as _dt
import logging
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.context import get_run_context
from prefect.logging import get_run_logger

from ramanscreen.flows import progress
from ramanscreen.flows.config import Campaign, load_campaign
from ramanscreen.flows.stages import artifact_key, artifact_rows, configure_caching
from ramanscreen.tasks.common import InputError

log = logging.getLogger(__name__)


def _flow_run_name() -> str:
    from prefect.runtime import flow_run

    params = flow_run.parameters
    stem = Path(str(params.get("campaign_file", "campaign"))).stem
    quick = "-quick" if params.get("quick") else ""
    return f"{stem}{quick}-{_dt.datetime.now(_dt.UTC):%Y%m%d-%H%M%S}"


def ranking_rows(campaign: Campaign) -> list[dict[str, Any]]:
    """The campaign's ranking from DuckDB over its Parquet results (``ramanscreen.analytics.ranking``)."""
    from ramanscreen.analytics.db import connect
    from ramanscreen.analytics.ranking import ranking

    con = connect(campaign.results_root)
    try:
        return ranking(con, campaign.name)  # the metric and thresholds each run recorded
    finally:
        con.close()


def _artifact_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keys = ("rank", "material", "formula", "temperature_k", "mobile_species", "D_cm2_s", "D_err_cm2_s",
            "metric", "metric_value", "cp_fraction", "cp_fraction_band_low", "cp_fraction_band_high", "cp_lo_cm1",
            "cp_hi_cm1", "cp_top_cm1", "conduction", "central_peak", "consistent", "r2_diag", "r2_offdiag", "n_train",
            "mlff", "mlff_flagged", "metric_err", "converged", "convergence_note", "tied_with")
    return artifact_rows(rows, keys)


def longest_first(materials) -> list[tuple[Any, float]]:
    """The materials, costliest first (:attr:`~ramanscreen.flows.config.Material.cost_atom_steps`),
    each with its Dask priority boost in [0, 1): the costliest the highest, so its distillation
    and production MD start first and the longest chain of the campaign does not start last.

    >>> from types import SimpleNamespace as M
    >>> [(m.name, b) for m, b in longest_first([M(name="AgI", cost_atom_steps=1), M(name="γ", cost_atom_steps=9)])]
    [('γ', 0.5), ('AgI', 0.0)]
    """
    order = sorted(materials, key=lambda m: -m.cost_atom_steps)
    n = len(order)
    return [(m, (n - 1 - k) / n) for k, m in enumerate(order)]


def screen_materials(campaign: Campaign, stage_tasks: dict[str, Any],
                     on_done: Callable[[Any, dict[str, Any] | None, str | None], None] | None = None,
                     ) -> tuple[list[dict[str, Any]], list[str]]:
    """Run every material of ``campaign`` concurrently on the current flow's task runner (one
    thread each, costliest first: :func:`longest_first`); the summaries of those that finished,
    in campaign order, and one line per failure. ``on_done(material, summary, failure)`` is
    called in this thread as each material's result is collected (summary None when it failed).
    Used by the campaign flow and by each round of the explore flow (:mod:`ramanscreen.flows.explore`)."""
    from ramanscreen.flows.material import material_workdir, screen_material

    logger = get_run_logger()
    board = progress.board()
    if board is not None:
        board.flow_run_id = str(get_run_context().flow_run.id)
        for m in campaign.materials:  # every material shows from the start, queued
            progress.track(m.name, md_state=material_workdir(campaign, m) / "md" / "md.state.json",
                           total_ps=m.md.total_steps * m.md.dt_fs / 1000.0)

    runner = get_run_context().task_runner
    if hasattr(runner, "client"):
        runner.client  # noqa: B018 - connect once here, not from several threads at once
    summaries: list[dict[str, Any]] = []
    failures: list[str] = []  # in the order the materials ended
    pool = ThreadPoolExecutor(max_workers=len(campaign.materials), thread_name_prefix="material")
    try:
        futures = {
            pool.submit(contextvars.copy_context().run, screen_material, campaign, m, stage_tasks, boost): m
            for m, boost in longest_first(campaign.materials)
        }
        finished: dict[str, dict[str, Any]] = {}
        for fut in as_completed(futures):  # as each material ends, not in campaign order
            m = futures[fut]
            try:
                finished[m.name] = fut.result()
            except Exception as exc:  # noqa: BLE001 - rank what finished, then fail the flow
                logger.error("%s failed: %s: %s", m.name, type(exc).__name__, exc)
                failures.append(f"{m.name}: {type(exc).__name__}: {' '.join(str(exc).split())}")
                progress.report(m.name, "failed", f"{type(exc).__name__}: {' '.join(str(exc).split())[:120]}")
                if on_done is not None:
                    on_done(m, None, failures[-1])
                continue
            if on_done is not None:
                on_done(m, finished[m.name], None)
        summaries = [finished[m.name] for m in campaign.materials if m.name in finished]
    finally:
        # on Ctrl-C/SIGTERM do not wait for the material threads: the caller closes the cluster,
        # which ends the tasks they wait for
        pool.shutdown(wait=False, cancel_futures=True)
    return summaries, failures


@flow(name="ramanscreen-campaign", flow_run_name=_flow_run_name, log_prints=True)
def campaign_flow(campaign_file: str, quick: bool = False) -> dict[str, Any]:
    """Screen every material of ``campaign_file`` concurrently, write Parquet, rank them."""
    logger = get_run_logger()
    campaign = load_campaign(campaign_file, quick=quick)
    logger.info("campaign %s: %d materials, results under %s", campaign.name, len(campaign.materials),
                campaign.results_root)
    stage_tasks = configure_caching(campaign.results_root)

    summaries, failures = screen_materials(campaign, stage_tasks)

    from ramanscreen.analytics.ranking import common_thresholds, summarize
    from ramanscreen.analytics.report import ranking_markdown, write_report

    report: dict[str, str] = {}
    rows: list[dict[str, Any]] = []
    if summaries:
        rows = ranking_rows(campaign)
        paths = write_report(campaign.results_root, campaign.name)
        report = {k: str(v) for k, v in paths.items()}
        used = common_thresholds(rows)
        create_table_artifact(table=_artifact_rows(rows), key=artifact_key("ranking", campaign.name),
                              description=f"Ranking of campaign {campaign.name} by {used.metric} vs D")
        create_markdown_artifact(
            markdown=f"# Ranking of {campaign.name}\n\n" + ranking_markdown(rows, summarize(rows), used)
            + f"\n\nScatter: `{report.get('scatter_png')}`\n\nSpectra: `{report.get('spectra_png')}`\n",
            key=artifact_key("ranking-report", campaign.name), description="ranking, Spearman and plots")
    if failures:
        raise RuntimeError(f"{len(failures)} of {len(campaign.materials)} materials failed: " + "; ".join(failures))
    return {"campaign": campaign.name, "results_root": str(campaign.results_root), "materials": summaries,
            "ranking": _artifact_rows(rows), "report": report}


@contextlib.contextmanager
def honest_ui(campaign: str) -> Iterator[list[str]]:
    """Before a campaign's flow runs: mark its earlier runs that a killed process left RUNNING as
    Crashed (:func:`ramanscreen.flows.crashed.mark_crashed_runs`), then tag every flow run, subflow
    and task started inside with the campaign and this process, so a later start can tell."""
    from prefect import tags

    from ramanscreen.flows.crashed import mark_crashed_runs, run_tags

    try:
        marked = mark_crashed_runs(campaign)
    except Exception as exc:  # noqa: BLE001 - the UI's bookkeeping never stops a campaign
        log.warning("could not check for crashed runs of %s: %s", campaign, exc)
        marked = []
    if marked:
        log.warning("marked %d earlier flow run(s) of %s Crashed: their process is gone", len(marked), campaign)
    with tags(*run_tags(campaign)):
        yield marked


@dataclass
class CampaignRun:
    """What :func:`run_campaign` returns."""

    campaign: Campaign
    result: dict[str, Any]
    ui_url: str | None
    flow_run_id: str | None


@contextlib.contextmanager
def campaign_infrastructure(campaign: Campaign, *, keep_ui: bool = False, on_server=None) -> Iterator[tuple[Any, str | None]]:
    """The local Prefect server (unless ``PREFECT_API_URL`` is set), then the Dask cluster of
    the campaign's ``[cluster]`` section — in that order, so the workers inherit
    ``PREFECT_API_URL`` — inside :func:`honest_ui`; yields ``(running_cluster, ui_url)`` and tears
    both down (``keep_ui`` keeps the server). ``on_server(ui_url)`` is called once the server is up."""
    from ramanscreen.flows.cluster import open_cluster
    from ramanscreen.flows.server import local_server
    from ramanscreen.tasks.common import check_writable_dir

    check_writable_dir(campaign.results_root, file=campaign.source, field="results_root", what="results root")
    campaign.results_root.mkdir(parents=True, exist_ok=True)
    home = campaign.results_root / "_prefect" / "server" / campaign.name
    with local_server(home, keep=keep_ui) as server:
        ui = server.ui_url if server else _ui_from_api(os.environ.get("PREFECT_API_URL", ""))
        if on_server is not None:
            on_server(ui)
        with open_cluster(campaign.cluster, file=str(campaign.source)) as running, honest_ui(campaign.name):
            yield running, ui


def run_campaign(campaign_file: str | os.PathLike[str], *, quick: bool = False, keep_ui: bool = False,
                 on_server=None) -> CampaignRun:
    """Validate the campaign, start the Prefect server (unless ``PREFECT_API_URL`` is set) and
    the Dask cluster (:func:`campaign_infrastructure`), run :func:`campaign_flow` on it, and tear
    both down (``keep_ui`` keeps the server). ``on_server(ui_url)`` is called once the server is up."""
    from ramanscreen.flows.cluster import make_task_runner

    campaign = load_campaign(campaign_file, quick=quick)  # bad input fails here, before anything starts
    with campaign_infrastructure(campaign, keep_ui=keep_ui, on_server=on_server) as (running, ui):
        state = campaign_flow.with_options(task_runner=make_task_runner(running))(
            str(campaign.source), quick=quick, return_state=True)
        flow_run_id = str(state.state_details.flow_run_id) if state.state_details else None
        result = state.result()  # raises if the flow failed
    return CampaignRun(campaign=campaign, result=result, ui_url=ui, flow_run_id=flow_run_id)


def _ui_from_api(api_url: str) -> str | None:
    if not api_url:
        return None
    return api_url[: -len("/api")] if api_url.rstrip("/").endswith("/api") else api_url


#: Where a deployment's campaign files live, relative to the deployed repository (the working
#: directory the pull step sets). Deployment parameters anyone with UI access can edit may only
#: pick one of these reviewed files: never a file of their own, which could name new code.
DEPLOYED_CAMPAIGNS = Path("deployments") / "campaigns"


def deployed_campaign_file(campaign_file: str | os.PathLike[str], repo: Path | None = None) -> Path:
    """``campaign_file`` (a deployment parameter) resolved inside ``<repo>/deployments/campaigns``,
    or a one-line :class:`InputError` naming the parameter (see docs/security.md).

    >>> deployed_campaign_file("/tmp/mine.toml", repo=Path("/srv/ramanscreen"))
    Traceback (most recent call last):
    ...
    ramanscreen.tasks.common.InputError: /tmp/mine.toml: campaign_file: a deployment runs only the campaign files of its repository's deployments/campaigns/ (fix: ...)
    """
    base = ((repo or Path.cwd()) / DEPLOYED_CAMPAIGNS).resolve()
    path = Path(campaign_file)
    resolved = (path if path.is_absolute() else (repo or Path.cwd()) / path).resolve()
    if base not in resolved.parents or resolved.suffix != ".toml":
        choices = ", ".join(str(DEPLOYED_CAMPAIGNS / p.name) for p in sorted(base.glob("*.toml"))) or "none found"
        raise InputError(f"a deployment runs only the campaign files of its repository's {DEPLOYED_CAMPAIGNS}/",
                         file=campaign_file, field="campaign_file",
                         fix=f"pick one of: {choices}; add a new campaign by committing it there")
    return resolved


@flow(name="ramanscreen-scheduled-campaign", flow_run_name=_flow_run_name)
def scheduled_campaign(campaign_file: str, quick: bool = False) -> dict[str, Any]:
    """Deployment entrypoint (``deployments/prefect.yaml``): start the campaign's Dask cluster
    from its ``[cluster]`` section and run :func:`campaign_flow` on it as a subflow.

    A Prefect worker runs this in a fresh process whose environment already holds
    ``PREFECT_API_URL``, so the Dask workers started here see the same server. A relative
    ``campaign_file`` is resolved against the working directory the deployment's pull step sets
    (the repository root).
    """
    from ramanscreen.flows.cluster import make_task_runner, open_cluster

    campaign = load_campaign(deployed_campaign_file(campaign_file), quick=quick)
    with open_cluster(campaign.cluster, file=str(campaign.source)) as running, honest_ui(campaign.name):
        return campaign_flow.with_options(task_runner=make_task_runner(running))(str(campaign.source), quick=quick)
