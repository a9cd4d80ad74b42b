"""The explore flow: the closed loop of :mod:`ramanscreen.tasks.explore` on the real stack.

An *exploration file* is a campaign file with an ``[explore]`` table (``deployments/campaigns/llzo.toml``):

.. code-block:: toml

    [explore]
    n_atoms = 192                       # the cell of every run (a multiple of 192 for the garnets)
    mobile = ["Li"]
    [explore.space]                     # tasks.explore.DesignSpace
    formula_template = "Li{7-x}La3Zr{2-x}Ta{x}O12"
    x_range = [0.0, 1.0]
    x_step = 0.125                      # one Ta per conventional cell
    temperature_k = [473.0, 673.0]
    pressure_gpa = [0.01, 0.5]
    [explore.loop]                      # tasks.explore.ExploreSettings
    initial_points = 4
    batch_size = 2
    budget = 8

Every other section (``[md]``, ``[reference]``, ``[model]``, ``[cluster]`` ...) is the campaign's,
and each proposed point (x, T, P) becomes one material of it, built from the formula the design
space writes (``structure = "Li6.75La3Zr1.75Ta0.25O12"``), at that T and P, named by its
proposal id (``r001-000``). ``[[materials]]`` is ignored here (``ramanscreen screen`` runs it).
``[quick.explore]`` patches ``[explore]`` under ``--quick``, as ``[quick]`` patches the rest.

:func:`explore_flow` (``ramanscreen explore FILE``) runs one Prefect subflow per round,
:func:`explore_round`: the round's material flows on the Dask cluster through the campaign
machinery (:func:`ramanscreen.flows.campaign.screen_materials`), each value recorded as it
finishes, then the surrogate refit and the next batch proposed, with the round's proposals and
the surrogate's parity plot as artifacts. The results of every round are one campaign,
``explore.name`` (default ``<name>-explore``), in the results root; the loop state
(``proposals.parquet``, ``rounds.parquet``, ``space.json``, the surrogate of each round) is in
``<results_root>/explore/<explore name>/``. A re-run after a kill evaluates only proposals still
``proposed``, and their finished stages come from the task cache: no finished material run is redone.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import datetime as _dt
import logging
import math
import os
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.logging import get_run_logger

from ramanscreen.flows.config import MD_KEYS, Campaign, apply_quick, deep_merge, parse_campaign, read_toml
from ramanscreen.flows.stages import artifact_key, artifact_rows
from ramanscreen.tasks.common import InputError
from ramanscreen.tasks.explore import DesignSpace, ExploreLoop, ExploreSettings, Proposal
from ramanscreen.tasks.schema import prefixed

log = logging.getLogger(__name__)

#: Keys of the ``[explore]`` table.
EXPLORE_KEYS = ("name", "n_atoms", "mobile", "space", "loop")
#: Targets a material run produces (keys of its summary, ``flows/material.py``).
RUN_TARGETS = ("sigma_S_cm", "D_cm2_s")


@dataclasses.dataclass(frozen=True)
class Exploration:
    """A validated exploration file (see the module docstring)."""

    name: str
    space: DesignSpace
    settings: ExploreSettings
    n_atoms: int | None
    mobile: tuple[str, ...]
    campaign_data: dict[str, Any]
    source: Path
    quick: bool
    probe: Campaign  # the campaign part, validated on the corners of the design space

    @property
    def results_root(self) -> Path:
        return self.probe.results_root

    @property
    def state_dir(self) -> Path:
        return self.results_root / "explore" / self.name

    def loop(self) -> ExploreLoop:
        """The loop on its persisted state (created on first use)."""
        return ExploreLoop(self.space, self.settings, self.state_dir)

    def round_campaign(self, proposals: list[Proposal]) -> Campaign:
        """The campaign that evaluates ``proposals`` (one material each), fully validated."""
        return _campaign_of(self.campaign_data, self.source, proposals, self.n_atoms, self.mobile)


def _campaign_of(campaign_data: dict[str, Any], source: Path, proposals: list[Proposal], n_atoms: int | None,
                 mobile: tuple[str, ...]) -> Campaign:
    """The campaign of ``campaign_data`` whose materials are ``proposals``: each named by its id,
    built from its formula, at its T and P."""
    data = copy.deepcopy(campaign_data)
    data["materials"] = [{"name": p.proposal_id, "structure": p.formula, "temperature_k": p.temperature_k,
                          "pressure_gpa": p.pressure_gpa, "mobile": list(mobile), "label": p.formula,
                          **({} if n_atoms is None else {"n_atoms": n_atoms})} for p in proposals]
    return parse_campaign(data, file=source)


#: With a continuous x (``x_step = 0``), the probe also builds the cell at this fraction of the
#: x range: a composition no cell grid favours, so a family that needs ``x_step`` is told so at load.
_GENERIC_X_FRACTION = 0.382


def _probe_points(space: DesignSpace) -> list[Proposal]:
    """The points :func:`load_exploration` validates: every x the space can propose (each multiple
    of ``x_step``; without one, both ends and a generic interior x) at the lowest T and P, and the
    corners of the T–P box at the lowest x."""
    lo, hi = space.x_range
    if space.x_step > 0:
        k0, k1 = math.ceil(lo / space.x_step - 1e-9), math.floor(hi / space.x_step + 1e-9)
        xs = [round(k * space.x_step, space.x_decimals) for k in range(k0, min(k1, k0 + 256) + 1)]
    else:
        xs = sorted({lo, hi, round(lo + _GENERIC_X_FRACTION * (hi - lo), space.x_decimals)})
    (t0, t1), (p0, p1) = space.temperature_k, space.pressure_gpa
    pts = [(x, t0, p0) for x in xs] + [(xs[0], t, p) for t in (t0, t1) for p in (p0, p1) if (t, p) != (t0, p0)]
    return [Proposal(proposal_id=f"probe-{k}", round=-1, x=x, temperature_k=t, pressure_gpa=p,
                     formula=space.formula(x), acquisition="probe") for k, (x, t, p) in enumerate(dict.fromkeys(pts))]


def load_exploration(path: str | os.PathLike[str], *, quick: bool = False) -> Exploration:
    """Read and validate an exploration file (with ``quick``: its ``[quick]`` and ``[quick.explore]``
    applied). Every error is one :class:`InputError` naming the file and the TOML key, raised
    before anything starts: the design space, the loop settings, and the campaign settings on
    every corner of the space (structure, cell size, the cross-field checks of a campaign)."""
    path = Path(path)
    data = read_toml(path)
    if "explore" not in data:
        raise InputError("no [explore] table", file=path, field="explore",
                         fix="add [explore] with [explore.space] and [explore.loop] (docs/second-framework.md)")
    explore = data.pop("explore")
    if not isinstance(explore, dict):
        raise InputError("expected a table", file=path, field="explore", fix="write it as [explore]")
    quick_table = data.get("quick")
    quick_explore: Any = {}
    if isinstance(quick_table, dict) and "explore" in quick_table:
        quick_table = dict(quick_table)
        quick_explore = quick_table.pop("explore")
        data["quick"] = quick_table
        if not isinstance(quick_explore, dict):
            raise InputError("expected a table", file=path, field="quick.explore", fix="write it as [quick.explore]")
    for where, table in (("explore", explore), ("quick.explore", quick_explore)):
        unknown = sorted(set(table) - set(EXPLORE_KEYS))
        if unknown:
            raise InputError(f"unknown key {unknown[0]!r}", file=path, field=f"{where}.{unknown[0]}",
                             fix=f"use {', '.join(EXPLORE_KEYS)}")
    if quick:
        explore = deep_merge(explore, quick_explore)

    def sub(key: str) -> dict[str, Any]:
        value = explore.get(key, {})
        if not isinstance(value, dict):
            raise InputError("expected a table", file=path, field=f"explore.{key}", fix=f"write it as [explore.{key}]")
        return value

    if "space" not in explore:
        raise InputError("missing", file=path, field="explore.space",
                         fix='add [explore.space] with formula_template, x_range, temperature_k, pressure_gpa')
    try:
        space = DesignSpace.from_mapping(sub("space"), file=path)
    except InputError as exc:
        raise prefixed(exc, "explore.space", file=path) from None
    try:
        settings = ExploreSettings.from_mapping(sub("loop"), file=path)
    except InputError as exc:
        raise prefixed(exc, "explore.loop", file=path) from None
    if settings.target not in RUN_TARGETS:
        raise InputError(f"a material run does not produce {settings.target!r}", file=path, field="explore.loop.target",
                         fix=f"use one of {', '.join(RUN_TARGETS)}")
    mobile = explore.get("mobile")
    if not (isinstance(mobile, list) and mobile and all(isinstance(s, str) for s in mobile)):
        raise InputError(f"expected a list of element symbols, got {mobile!r}", file=path, field="explore.mobile",
                         fix='name the mobile species, e.g. mobile = ["Li"]')
    n_atoms = explore.get("n_atoms")
    if n_atoms is not None and (not isinstance(n_atoms, int) or isinstance(n_atoms, bool) or n_atoms < 1):
        raise InputError(f"expected a positive integer, got {n_atoms!r}", file=path, field="explore.n_atoms",
                         fix="e.g. n_atoms = 192 (one conventional garnet cell)")

    # the [quick] profile, applied once here: the round campaigns are plain campaigns
    campaign_data = apply_quick(data, file=path) if quick else copy.deepcopy(data)
    campaign_data.pop("quick", None)
    name = explore.get("name") or f"{campaign_data.get('name', path.stem)}-explore"
    if not isinstance(name, str):
        raise InputError(f"expected a name, got {name!r}", file=path, field="explore.name", fix='e.g. name = "llzo-explore"')
    campaign_data["name"] = name
    from ramanscreen.tasks.structures import resolve_name

    probes = _probe_points(space)
    for c in probes:
        if resolve_name(c.formula) is None:
            raise InputError(f"{c.formula!r} (x = {c.x:g}) is not a structure a builder makes", file=path,
                             field="explore.space.formula_template",
                             fix="use a family the builders know, e.g. Li{7-x}La3Zr{2-x}Ta{x}O12 (tasks/structures.py)")
    try:
        probe = _campaign_of(campaign_data, path.resolve(), probes, n_atoms, tuple(mobile))
    except InputError as exc:
        field = exc.field or ""
        if not field.startswith("materials["):
            raise
        c = probes[int(field[len("materials["):field.index("]")])]
        key = field[field.index("]") + 2:]
        head = key.split(".")[0]
        where = {"n_atoms": "explore.n_atoms", "mobile": "explore.mobile", "temperature_k": "explore.space.temperature_k",
                 "pressure_gpa": "explore.space.pressure_gpa"}.get(head, f"md.{head}" if head in MD_KEYS else "explore.space")
        fix = exc.fix
        if key.startswith("structure") and space.x_step == 0 and c.x not in space.x_range:
            where, fix = "explore.space.x_step", f"set x_step to what the cell holds ({exc.fix})"
        elif key.startswith("structure"):
            where = "explore.space.x_step" if space.x_step > 0 else "explore.space.x_range"
        raise InputError(f"at x = {c.x:g}, T = {c.temperature_k:g} K, P = {c.pressure_gpa:g} GPa ({c.formula}): "
                         f"{key}: {exc.message}", file=path, field=where, fix=fix) from None
    return Exploration(name=name, space=space, settings=settings, n_atoms=n_atoms, mobile=tuple(mobile),
                       campaign_data=campaign_data, source=path.resolve(), quick=quick, probe=probe)


def _num(v: Any) -> str:
    return "—" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.4g}"


def proposal_rows(proposals: list[Proposal]) -> list[dict[str, Any]]:
    """JSON-ready rows of ``proposals`` (a table artifact; NaN as null)."""
    keys = ("proposal_id", "round", "formula", "x", "temperature_k", "pressure_gpa", "acquisition", "predicted_mean",
            "predicted_std", "status", "value", "note")
    return artifact_rows([dataclasses.asdict(p) for p in proposals], keys)


def _value(summary: dict[str, Any], target: str) -> tuple[float | None, str]:
    v = summary.get(target)
    if v is None or not math.isfinite(float(v)):
        return None, f"the run gave no {target}"
    if float(v) <= 0:
        return None, f"non-positive {target} = {float(v):.3g} (no diffusion resolved in this run)"
    return float(v), ""


def _round_artifacts(expl: Exploration, loop: ExploreLoop, rnd: int):
    """The callback of ``next_round``: save the refit surrogate (with its parity plot) and publish it."""

    def callback(model, row: dict[str, Any]) -> None:
        from ramanscreen.tasks.surrogate import model_paths, save_model

        path = expl.state_dir / "surrogate" / f"round_{rnd:03d}.joblib"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_model(model, path, loop.last_report)
        png = model_paths(path)["parity"]
        image = ""
        if png.is_file():
            image = f"\n\n![parity](data:image/png;base64,{base64.b64encode(png.read_bytes()).decode('ascii')})\n"
        text = (f"# {expl.name}: surrogate after round {rnd}\n\n"
                f"{row['n_train']} evaluations, kernel `{row.get('kernel')}`; CV RMSE {_num(row.get('cv_rmse'))}, "
                f"MAE {_num(row.get('cv_mae'))} (log10 units), within ±1σ {_num(row.get('cv_within_1sigma'))}, "
                f"±2σ {_num(row.get('cv_within_2sigma'))}; largest predictive std over the pool "
                f"{_num(row.get('max_pool_std'))}.\n\nValues are MLFF-MD results ({expl.probe.mlff.md_label}), "
                f"not DFT or experiment.\n\nParity plot (held-out CV predictions): `{png}`{image}")
        create_markdown_artifact(markdown=text, key=artifact_key("explore-surrogate", expl.name),
                                 description=f"{expl.name}: surrogate parity after round {rnd}")

    return callback


def _round_name() -> str:
    from prefect.runtime import flow_run

    return f"round-{int(flow_run.parameters.get('round_index', 0)):03d}"


@flow(name="ramanscreen-explore-round", flow_run_name=_round_name, log_prints=True)
def explore_round(explore_file: str, quick: bool = False, round_index: int = 0) -> dict[str, Any]:
    """One round: evaluate the pending proposals of ``round_index`` (the material flows on the
    Dask cluster), record each value as its run finishes, refit the surrogate and propose the
    next batch. Artifacts: the round's proposals (table) and the surrogate's parity plot."""
    from ramanscreen.flows.campaign import screen_materials
    from ramanscreen.flows.stages import configure_caching

    logger = get_run_logger()
    expl = load_exploration(explore_file, quick=quick)
    loop = expl.loop()
    pending = loop.pending()
    target = expl.settings.target
    if pending:
        campaign = expl.round_campaign(pending)
        logger.info("%s round %d: %d material runs (%s)", expl.name, round_index, len(pending),
                    ", ".join(p.formula + f" {p.temperature_k:.0f} K {p.pressure_gpa:.3g} GPa" for p in pending))

        def done(material, summary: dict[str, Any] | None, failure: str | None) -> None:
            if summary is None:
                loop.record(material.name, None, status="failed", note=(failure or "failed")[:300])
                return
            value, why = _value(summary, target)
            if value is None:
                loop.record(material.name, None, status="failed", note=why)
            else:
                loop.record(material.name, value, note=f"run {summary['run_id']}")

        screen_materials(campaign, configure_caching(campaign.results_root), on_done=done)
        evaluated = [p for p in loop.state.proposals if p.proposal_id in {q.proposal_id for q in pending}]
        create_table_artifact(table=proposal_rows(evaluated), key=artifact_key("explore-evaluated", expl.name),
                              description=f"{expl.name}: round {round_index} evaluations ({target}, MLFF-MD, not DFT)")
    batch = loop.next_round(callback=_round_artifacts(expl, loop, round_index + 1))  # refit r+1 after round r
    if batch:
        create_table_artifact(table=proposal_rows(batch), key=artifact_key("explore-proposals", expl.name),
                              description=f"{expl.name}: proposals of round {batch[0].round} ({expl.settings.acquisition})")
    stop = loop.state.stop_reason
    if stop:
        logger.info("%s: stopped: %s", expl.name, stop)
    return {"round": round_index, "evaluated": len(pending), "proposed": [p.proposal_id for p in batch],
            "stop_reason": stop}


def _flow_run_name() -> str:
    from prefect.runtime import flow_run

    params = flow_run.parameters
    stem = Path(str(params.get("explore_file", "explore"))).stem
    quick = "-quick" if params.get("quick") else ""
    return f"{stem}{quick}-explore-{_dt.datetime.now(_dt.UTC):%Y%m%d-%H%M%S}"


@flow(name="ramanscreen-explore", flow_run_name=_flow_run_name, log_prints=True)
def explore_flow(explore_file: str, quick: bool = False, scheduler_address: str | None = None) -> dict[str, Any]:
    """The closed loop of ``explore_file``: the Latin-hypercube design, then one
    :func:`explore_round` subflow per round until the budget or the target uncertainty stops it.
    ``scheduler_address``: the Dask scheduler the rounds' material flows run on (None: a
    temporary cluster from the file's ``[cluster]`` table per round)."""
    from ramanscreen.flows.cluster import make_task_runner

    logger = get_run_logger()
    expl = load_exploration(explore_file, quick=quick)
    runner = make_task_runner(scheduler_address if scheduler_address else expl.probe.cluster)
    loop = expl.loop()
    if not loop.state.proposals:
        first = loop.next_round()
        logger.info("%s: Latin-hypercube design of %d points", expl.name, len(first))
        create_table_artifact(table=proposal_rows(first), key=artifact_key("explore-proposals", expl.name),
                              description=f"{expl.name}: the initial Latin-hypercube design")
    while not loop.finished:
        pending = loop.pending()
        rnd = max((p.round for p in pending), default=loop.state.last_round)
        explore_round.with_options(task_runner=runner)(str(expl.source), quick=quick, round_index=rnd)
        loop = expl.loop()  # the round wrote the state
        if not loop.pending() and not loop.finished:
            raise RuntimeError(f"{expl.name}: round {rnd} neither proposed a batch nor stopped")
    rows = loop.state.rounds
    create_table_artifact(table=artifact_rows(rows, significant=None), key=artifact_key("explore-rounds", expl.name),
                          description=f"{expl.name}: every refit (CV metrics, pool uncertainty, stop reason)")
    done = loop.state.by_status("done")
    return {"name": expl.name, "state_dir": str(expl.state_dir), "results_root": str(expl.results_root),
            "n_done": len(done), "n_failed": len(loop.state.by_status("failed")), "rounds": len(rows),
            "stop_reason": loop.state.stop_reason}


@dataclasses.dataclass
class ExploreRun:
    """What :func:`run_explore` returns."""

    exploration: Exploration
    result: dict[str, Any]
    ui_url: str | None
    flow_run_id: str | None


def run_explore(explore_file: str | os.PathLike[str], *, quick: bool = False, keep_ui: bool = False,
                on_server=None) -> ExploreRun:
    """Validate the file, start the Prefect server (unless ``PREFECT_API_URL`` is set) and the
    Dask cluster (:func:`ramanscreen.flows.campaign.campaign_infrastructure`), run
    :func:`explore_flow` on it, and tear both down (``keep_ui`` keeps the server)."""
    from ramanscreen.flows.campaign import campaign_infrastructure

    expl = load_exploration(explore_file, quick=quick)  # bad input fails here, before anything starts
    with campaign_infrastructure(expl.probe, keep_ui=keep_ui, on_server=on_server) as (running, ui):
        state = explore_flow(str(expl.source), quick=quick, scheduler_address=running.address, return_state=True)
        flow_run_id = str(state.state_details.flow_run_id) if state.state_details else None
        result = state.result()  # raises if the flow failed
    return ExploreRun(exploration=expl, result=result, ui_url=ui, flow_run_id=flow_run_id)


__all__ = ["EXPLORE_KEYS", "ExploreRun", "Exploration", "explore_flow", "explore_round", "load_exploration",
           "proposal_rows", "run_explore"]
