"""The material flow: one (structure, temperature) from MD to Parquet.

Order (each arrow a Prefect task on the Dask cluster, all cached on their inputs):

    structure → MD (one task, checkpointed; with [mlff] distil: distil → validate → LAMMPS MD)
      → pick N snapshots → transport (MSD, D, σ, VDOS), beside the references
      → reference α (one task per snapshot, or per [reference] frames_per_task of them for a
        cheap backend; fanned out, retried with backoff)
      → reference α of the first [reference] series_frames α samples (Fig. 2D; after those)
      → fit the λ-SOAP committee
      → predict α over the sampled frames (chunks, in parallel)
      → Raman spectrum + committee band + block error + descriptors ┐
      → convergence (¼, ½ of the run and of N_T)                    ┤
      → ML vs reference spectrum of the series frames (Fig. 2D)     ┴→ Parquet

:func:`screen_material` submits this graph onto the task runner of the *current* flow run, so
the campaign flow can run several materials at once (one thread each) over one shared Dask
cluster. :func:`material_flow` wraps it as a flow of its own for screening a single material.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import dask
from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger

from ramanscreen.flows.cluster import on_pool
from ramanscreen.flows.config import Campaign, Material
from ramanscreen.flows.progress import report, track
from ramanscreen.flows.stages import artifact_key, configure_caching, write_task
from ramanscreen.tasks.convergence import MIN_SERIES_FRAMES
from ramanscreen.tasks.results import run_pressure_gpa


def material_workdir(campaign: Campaign, material: Material) -> Path:
    """``<results_root>/work/<campaign>/<material>/<run_id>``: MD, references, model, plots."""
    return campaign.results_root / "work" / campaign.name / material.name / material.fingerprint(campaign)


def md_settings(campaign: Campaign, material: Material) -> dict[str, Any]:
    """Keyword arguments of ``ramanscreen.tasks.md.MDSettings`` for this material (plain data:
    they are a task input, hashed for the cache key)."""
    return dataclasses.asdict(material.md)


def distil_settings(campaign: Campaign, material: Material) -> dict[str, Any]:
    """The ``DistilSettings`` of this material's distilled potential, as plain data (a task
    input): :meth:`ramanscreen.tasks.mlff.DistilSettings.for_run` of the campaign's ``[mlff]``
    and the material's MD settings."""
    from ramanscreen.tasks.mlff import DistilSettings

    return DistilSettings.for_run(campaign.mlff, material.md).to_dict()


def refuse_message(material: Material, validation: dict[str, Any]) -> tuple[str, str]:
    """Why a campaign with ``[mlff] refuse_flagged = true`` stops this material, and the fix."""
    from ramanscreen.tasks.mlff import FORCE_RMSE_LIMIT_EV_A

    return (f"{material.name}: the distilled potential ({validation['method']}) has a held-out force RMSE of "
            f"{validation['force_rmse_eV_A']:.3f} eV/Å against its teacher, above the {FORCE_RMSE_LIMIT_EV_A:g} eV/Å "
            f"limit, and refuse_flagged is true",
            "set refuse_flagged = false to screen it flagged, or distil = false to run MD with the calculator itself")


def _chunks(n_stored: int, stride: int, chunk_frames: int) -> list[tuple[int, int]]:
    """Stored-frame ranges ``[start, stop)`` of at most ``chunk_frames`` α samples each."""
    n_alpha = len(range(0, n_stored, stride))
    per = max(1, chunk_frames)
    return [(k * stride, min(n_stored, (k + per) * stride)) for k in range(0, n_alpha, per)]


def run_record(campaign: Campaign, material: Material, structure: dict[str, Any], fit: dict[str, Any],
               md_res: dict[str, Any] | None = None) -> dict[str, Any]:
    """The materials row of a run: what was simulated (the MD's label: a distilled potential
    is named as such, not DFT; the production cell, after NPT its equilibrated density), and
    the windows and thresholds it was screened with (the views and the ranking read them)."""
    md = material.md
    spectrum, ranking = campaign.spectrum, campaign.ranking
    cell = (md_res or {}).get("cell") or {}
    lengths = cell.get("cell_lengths_A") or [None, None, None]
    return {
        "formula": structure["formula"],
        "temperature_k": material.temperature_k,
        "n_atoms": structure["n_atoms"],
        "mobile_species": material.mobile[0],
        "mlff": campaign.mlff.md_label,
        "phase": material.label or material.name,
        "md_engine": (md_res or {}).get("engine"),
        "npt_equilibrated": cell.get("npt"),
        "density_g_cm3": cell.get("density_g_cm3"),
        "volume_A3": cell.get("volume_A3"),
        "cell_a_A": lengths[0], "cell_b_A": lengths[1], "cell_c_A": lengths[2],
        "reference_method": fit["method"],
        "n_train": fit["n_train"],
        "md_dt_fs": float(md.dt_fs),
        "md_equil_ps": md.equil_steps * md.dt_fs / 1000.0,
        "md_production_ps": md.steps * md.dt_fs / 1000.0,
        "alpha_stride": int(md.write_every * md.alpha_stride),
        "pressure_gpa": float(md.pressure_gpa) if md.controls_pressure else None,
        "structure": material.structure,
        "omega_min_cm1": spectrum.omega_min_cm1,
        "omega_c_cm1": spectrum.omega_c_cm1,
        "host_low_cm1": spectrum.host_window_cm1[0],
        "host_high_cm1": spectrum.host_window_cm1[1],
        "rank_metric": ranking.metric,
        "d_liquid_cm2_s": ranking.d_liquid_cm2_s,
        "d_hopping_cm2_s": ranking.d_hopping_cm2_s,
        "cp_threshold": ranking.cp_threshold,
        "converge_max_l2": ranking.converge_max_l2,
        "converge_max_cp_change": ranking.converge_max_cp_change,
        "converge_max_D_rel_change": ranking.converge_max_D_rel_change,
        "tie_sigmas": ranking.tie_sigmas,
        "settings": {"material": material.name, "label": material.label, "md": dataclasses.asdict(md),
                     "mlff": dataclasses.asdict(campaign.mlff), "reference": dataclasses.asdict(campaign.reference),
                     "model": dataclasses.asdict(campaign.model), "spectrum": dataclasses.asdict(spectrum),
                     "transport": dataclasses.asdict(campaign.transport), "ranking": dataclasses.asdict(ranking),
                     "mobile": list(material.mobile), "campaign_file": str(campaign.source), "quick": campaign.quick,
                     "md_run": {k: (md_res or {}).get(k) for k in ("engine", "method", "potential", "cell",
                                                                   "refinement_rounds", "ms_per_step")}},
    }


def screen_material(campaign: Campaign, material: Material, stage_tasks: dict[str, Any],
                    priority_boost: float = 0.0) -> dict[str, Any]:
    """Submit one material's tasks on the current flow's task runner and wait for the result.

    ``priority_boost`` (in [0, 1)) is added to the Dask priority of the material's long MD-pool
    tasks (distillation, production MD): among materials queued for the same pool the higher
    boost starts first, without passing a task of a higher base priority (the campaign gives
    the costliest material the highest boost: longest first).

    ``stage_tasks`` are the cached tasks from :func:`ramanscreen.flows.stages.configure_caching`.
    Returns a summary (descriptors, D, where the spectrum PNG is) and creates the material's
    markdown artifact. Each stage it enters is reported to the terminal's progress board
    (:mod:`ramanscreen.flows.progress`), if one is watching.
    """
    logger = get_run_logger()
    run_id = material.fingerprint(campaign)
    wd = material_workdir(campaign, material)
    wd.mkdir(parents=True, exist_ok=True)
    name = material.name
    ref = campaign.reference
    md = material.md
    logger.info("%s: run %s in %s", name, run_id, wd)

    track(name, md_state=wd / "md" / "md.state.json", total_ps=md.total_steps * md.dt_fs / 1000.0)
    report(name, "structure")
    with on_pool("md"):
        structure = stage_tasks["structure"].submit(name, material.structure, material.n_atoms, md.seed, str(wd))
    validation_rows = force_parity = None
    if campaign.mlff.distil:
        validation_rows, force_parity, md_future = _distilled_md(campaign, material, stage_tasks, structure, wd, priority_boost)
    else:
        # MD last in the queue: a worker that frees up takes the short downstream tasks of a
        # material whose MD is done before it starts another material's long MD
        with on_pool("md"), dask.annotate(priority=-10 + priority_boost):
            md_future = stage_tasks["md"].submit(name, structure, md_settings(campaign, material), str(wd / "md"),
                                                 artifact_key("md-progress", campaign.name, name))
    report(name, "md")
    md_res = md_future.result()
    structure_res = structure.result()
    logger.info("%s: MD (%s) done, %d stored frames, %s", name, md_res.get("method"), md_res["n_frames"],
                _cell_text(md_res.get("cell") or {}))

    from ramanscreen.flows.stages import select_task

    report(name, "reference", f"0/{ref.n_snapshots}")
    with on_pool("reference"):
        frames = select_task.submit(name, md_res, ref.n_snapshots, ref.selection, ref.seed).result()
    reference = stage_tasks["reference"].with_options(
        retries=ref.retries,
        retry_delay_seconds=[ref.retry_delay_s * 2**k for k in range(ref.retries)] or 0,
        retry_jitter_factor=0.5 if ref.retries else None,
    )
    with on_pool("reference"):
        refs = [reference.submit(name, md_res["traj_path"], batch, ref.backend, dict(ref.options),
                                 [str(wd / "reference" / f"frame_{f:06d}") for f in batch],
                                 str(batch[0]) if len(batch) == 1 else f"{batch[0]}+{len(batch) - 1}")
                for batch in ref.batches(frames)]
    # Fig. 2D: the reference α of the first series_frames α samples, queued after the N_T snapshots
    # (the fit waits for those, not for these)
    series = ref.series(md_res["n_frames"], int(md.alpha_stride))
    if len(series) < MIN_SERIES_FRAMES:
        if series:
            logger.info("%s: %d α samples for the reference α series, fewer than %d: no Fig. 2D", name, len(series),
                        MIN_SERIES_FRAMES)
        series = []
    series_task = reference.with_options(task_run_name="reference-series[{material}:{label}]")
    with on_pool("reference"), dask.annotate(priority=-1):
        series_refs = [series_task.submit(name, md_res["traj_path"], batch, ref.backend, dict(ref.options),
                                          [str(wd / "reference_series" / f"frame_{f:06d}") for f in batch],
                                          f"{batch[0]}+{len(batch) - 1}")
                       for batch in ref.series_batches(series)]
    # transport needs only the MD: it runs on the ml pool while the references are computed
    with on_pool("ml"):
        transport = stage_tasks["transport"].submit(name, md_res["traj_path"], structure_res["symbols"],
                                                    material.temperature_k, dataclasses.asdict(campaign.transport))
    ref_results: list[dict[str, Any]] = []
    for r in refs:
        ref_results.extend(r.result())
        report(name, "reference", f"{len(ref_results)}/{len(frames)}")

    model = campaign.model
    report(name, "fit", f"N_T = {ref.n_train}, committee {model.committee}")
    with on_pool("ml"):
        fit = stage_tasks["fit"].submit(name, md_res["traj_path"], ref_results, ref.n_train,
                                        dataclasses.asdict(model.hypers), model.committee, model.seed,
                                        str(wd / "model" / "alpha_model"), model.search_budget_s)
        fit_res = fit.result()
        stride = int(md.alpha_stride)
        chunks = _chunks(md_res["n_frames"], stride, campaign.prediction.chunk_frames)
        report(name, "predict", f"{len(range(0, md_res['n_frames'], stride))} α samples, {len(chunks)} chunks")
        preds = [stage_tasks["predict"].submit(name, fit_res["model_path"], md_res["traj_path"], a, b, stride,
                                               str(wd / "alpha" / f"chunk_{a:08d}_{b:08d}.npz"), md_res["alpha_dt_fs"],
                                               fit_res.get("subsets_path"))
                 for a, b in chunks]
        spectrum = stage_tasks["spectrum"].submit(name, preds, md_res["alpha_dt_fs"],
                                                  dataclasses.asdict(campaign.spectrum), str(wd))
    for p in preds:
        p.result()
    report(name, "analysis", "spectrum, descriptors, transport")
    spec_res, trans_res = spectrum.result(), transport.result()
    report(name, "analysis", "convergence: ¼ and ½ of the run and of N_T")
    with on_pool("ml"):
        conv_res = stage_tasks["convergence"].submit(
            name, preds, md_res["alpha_dt_fs"], md_res["traj_path"], fit_res, material.mobile[0],
            material.temperature_k, trans_res.D_cm2_s.get(material.mobile[0]), dataclasses.asdict(campaign.spectrum),
            dataclasses.asdict(campaign.transport)).result()

    ref_spec_res = None
    if series_refs:
        report(name, "analysis", f"ML vs reference spectrum of {len(series)} α samples (Fig. 2D)")
        series_results: list[dict[str, Any]] = []
        for r in series_refs:
            series_results.extend(r.result())
        with on_pool("ml"):
            ref_spec_res = stage_tasks["reference_spectrum"].submit(
                name, preds, series_results, series, md_res["alpha_dt_fs"],
                dataclasses.asdict(campaign.spectrum)).result()

    report(name, "parquet")
    meta = run_record(campaign, material, structure_res, fit_res, md_res)
    with on_pool("ml"):
        write_task.submit(str(campaign.results_root), campaign.name, name, run_id, meta, spec_res, trans_res,
                          fit_res, validation_rows, convergence=conv_res, force_parity=force_parity,
                          reference_spectrum=ref_spec_res).result()

    mobile = material.mobile[0]
    summary = {
        "material": name, "run_id": run_id, "formula": structure_res["formula"], "temperature_k": material.temperature_k,
        "n_atoms": structure_res["n_atoms"], "mobile": mobile, "D_cm2_s": trans_res.D_cm2_s.get(mobile),
        "D_err_cm2_s": trans_res.D_err_cm2_s.get(mobile), "sigma_S_cm": trans_res.sigma_S_cm.get(mobile),
        "pressure_gpa": run_pressure_gpa(meta["pressure_gpa"]), "descriptors": spec_res["descriptors"],
        "ml_metrics": fit_res["metrics"], "spectrum_png": spec_res["png"], "workdir": str(wd),
        "n_alpha": spec_res["n_alpha"], "n_frames": md_res["n_frames"],
        "fit_window_ps": [trans_res.fit_start_ps, trans_res.fit_end_ps],
        "md_label": campaign.mlff.md_label, "cell": md_res.get("cell"),
        "mlff_flagged": None if validation_rows is None else any(r["flagged"] for r in validation_rows),
        "mlff_force_rmse_eV_A": None if validation_rows is None else validation_rows[0]["force_rmse_eV_A"],
        "reference_spectrum": None if ref_spec_res is None else {
            k: ref_spec_res[k] for k in ("n_frames", "l2_difference", "cp_fraction_ml", "cp_fraction_reference")},
    }
    create_markdown_artifact(markdown=material_markdown(campaign, material, summary),
                             key=artifact_key(campaign.name, name), description=f"{name}: descriptors and plots")
    logger.info("%s: written to Parquet (run %s)", name, run_id)
    report(name, "done", f"D({mobile}) = {_num(summary['D_cm2_s'])} cm²/s")
    return summary


def _distilled_md(campaign: Campaign, material: Material, stage_tasks: dict[str, Any], structure: Any,
                  wd: Path, priority_boost: float = 0.0) -> tuple[list[dict[str, Any]], dict[str, Any] | None, Any]:
    """Distil → validate → (refuse a flagged potential if the campaign says so) → submit the
    production MD in LAMMPS. Returns the ``mlff_validation`` rows, the ``force_parity`` columns
    and the MD future."""
    from ramanscreen.tasks.common import InputError

    logger = get_run_logger()
    name, mlff = material.name, campaign.mlff
    report(name, "distil", f"teacher {mlff.calculator}")
    # distillations last in the md pool's queue: a freed worker first takes the production MD of
    # a material already distilled, so its α and analysis start on the other pools sooner
    with on_pool("md"), dask.annotate(priority=-10 + priority_boost):
        distilled = stage_tasks["distil"].submit(name, structure, distil_settings(campaign, material),
                                                 str(wd / "mlff")).result()
    logger.info("%s: %s fitted (twojmax %d, held-out force RMSE %.3f eV/Å) in %.0f s", name, distilled["method"],
                distilled["twojmax"], (distilled["holdout_errors"] or {}).get("force_rmse_eV_A", float("nan")),
                distilled["wall_s"])
    report(name, "validate", distilled["method"])
    # short (held-out errors and a run as long as the teacher MD): on the ml pool, so it never
    # waits behind another material's distillation
    with on_pool("ml"):
        validation = stage_tasks["validate"].submit(name, distilled, list(material.mobile), mlff.compare_dynamics,
                                                    str(wd / "mlff" / "validation")).result()
    logger.info("%s: validation: force RMSE %.3f eV/Å%s (%.0f s)", name, validation["force_rmse_eV_A"],
                ", FLAGGED" if validation["flagged"] else "", validation["wall_s"])
    if validation["flagged"] and mlff.refuse_flagged:
        message, fix = refuse_message(material, validation)
        raise InputError(message, file=campaign.source, field="mlff.refuse_flagged", fix=fix)
    refine = mlff.refine_rounds is None or mlff.refine_rounds > 0
    with on_pool("md"), dask.annotate(priority=-5 + priority_boost):
        md_future = stage_tasks["lammps_md"].submit(name, structure, distilled, md_settings(campaign, material),
                                                    refine, str(wd / "md"),
                                                    artifact_key("md-progress", campaign.name, name))
    return validation["rows"], validation.get("force_parity"), md_future


def _cell_text(cell: dict[str, Any]) -> str:
    if not cell:
        return "cell unknown"
    text = f"density {cell['density_g_cm3']:.4g} g/cm³, V = {cell['volume_A3']:.5g} Å³"
    if cell.get("npt"):
        text += f" (mean cell of an NPT equilibration at {cell['pressure_gpa']:g} GPa)"
    return text


def _num(x: Any) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    if isinstance(x, float):
        return f"{x:.3g}"
    return str(x)


def material_markdown(campaign: Campaign, material: Material, s: dict[str, Any]) -> str:
    """The material's artifact: settings, transport, ML metrics, descriptors, spectrum path."""
    md = material.md
    lines = [
        f"# {material.name} ({s['formula']}, {material.temperature_k:g} K)",
        "",
        f"campaign **{campaign.name}**, run id `{s['run_id']}`, {s['n_atoms']} atoms, "
        f"{md.steps} × {md.dt_fs:g} fs production ({md.steps * md.dt_fs / 1000:g} ps) after "
        f"{md.equil_steps} equilibration steps, MD by `{campaign.mlff.md_label}`, {_cell_text(s.get('cell') or {})}, "
        f"reference `{campaign.reference.backend}`, N_T = {campaign.reference.n_train}, "
        f"{s['n_alpha']} α samples; D fitted over {_num(s['fit_window_ps'][0])}–{_num(s['fit_window_ps'][1])} ps.",
        "",
        "| quantity | value |",
        "|---|---|",
        f"| D({s['mobile']}) (cm²/s) | {_num(s['D_cm2_s'])} ± {_num(s['D_err_cm2_s'])} |",
    ]
    if s.get("mlff_flagged") is not None:
        lines.append(f"| distilled potential force RMSE vs teacher (eV/Å) | {_num(s['mlff_force_rmse_eV_A'])}"
                     f"{' (flagged)' if s['mlff_flagged'] else ''} |")
    rs = s.get("reference_spectrum")
    if rs:
        lines.append(f"| ML vs reference spectrum, {rs['n_frames']} α samples (Fig. 2D): L2 / cp_fraction ML / "
                     f"reference | {_num(rs['l2_difference'])} / {_num(rs['cp_fraction_ml'])} / "
                     f"{_num(rs['cp_fraction_reference'])} |")
    for k, v in s["ml_metrics"].items():
        lines.append(f"| α model {k} | {_num(v)} |")
    for k, v in s["descriptors"].items():
        lines.append(f"| {k} | {_num(v)} |")
    lines += ["", f"Spectrum PNG: `{s['spectrum_png']}`", "", f"Work directory: `{s['workdir']}`", ""]
    return "\n".join(lines)


@flow(name="ramanscreen-material", flow_run_name="{material_name}")
def material_flow(campaign_file: str, material_name: str, quick: bool = False) -> dict[str, Any]:
    """Screen one material of a campaign file on this flow's task runner."""
    from ramanscreen.flows.config import load_campaign
    from ramanscreen.tasks.common import InputError

    campaign = load_campaign(campaign_file, quick=quick)
    by_name = {m.name: m for m in campaign.materials}
    if material_name not in by_name:
        raise InputError(f"no material {material_name!r}", file=campaign_file, field="materials",
                         fix=f"use one of {', '.join(by_name)}")
    return screen_material(campaign, by_name[material_name], configure_caching(campaign.results_root))
