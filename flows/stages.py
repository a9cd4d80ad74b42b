"""Thin Prefect tasks around the stage functions of ``tasks/`` (no science here).

Every task takes plain, JSON-able arguments (paths as strings, settings as dicts) and returns
small plain values or numpy arrays, so that

* Prefect can hash the inputs for the cache key (:func:`cache_policy`: inputs + the task's
  source + a digest of the science modules it calls), and
* the results persist under the results root (:func:`configure_caching`), so a re-run of a
  finished campaign recomputes nothing and a re-run of an interrupted one resumes at the first
  unfinished task (MD additionally resumes *inside* a run from ``ramanscreen.tasks.md``'s checkpoints).

Tasks run on Dask workers; each stage's tasks are submitted inside
``ramanscreen.flows.cluster.on_pool(stage)`` by ``flows/material.py`` so they land on the right pool.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from prefect import task
from prefect.cache_policies import INPUTS, TASK_SOURCE, CachePolicy
from prefect.tasks import exponential_backoff

#: Science modules each stage's results depend on (their source is part of the cache key). A
#: package stands for every file in it (``ramanscreen.tasks.reference`` = base, backends, ...).
STAGE_MODULES: dict[str, tuple[str, ...]] = {
    "structure": ("ramanscreen.tasks.structures",),
    "md": ("ramanscreen.tasks.md", "ramanscreen.tasks.structures"),
    "distil": ("ramanscreen.tasks.mlff", "ramanscreen.tasks.md", "ramanscreen.tasks.structures"),
    "validate": ("ramanscreen.tasks.mlff", "ramanscreen.tasks.md", "ramanscreen.tasks.transport",
                 "ramanscreen.tasks.trajectory", "ramanscreen.tasks.results", "ramanscreen.tasks.parity"),
    "lammps_md": ("ramanscreen.tasks.mlff", "ramanscreen.tasks.md", "ramanscreen.tasks.structures"),
    "reference": ("ramanscreen.tasks.reference", "ramanscreen.tasks.settings"),
    "fit": ("ramanscreen.tasks.polarizability", "ramanscreen.tasks.parity"),
    "predict": ("ramanscreen.tasks.polarizability",),
    "spectrum": ("ramanscreen.tasks.spectra", "ramanscreen.tasks.polarizability"),
    "transport": ("ramanscreen.tasks.transport", "ramanscreen.tasks.trajectory"),
    "convergence": ("ramanscreen.tasks.convergence", "ramanscreen.tasks.spectra", "ramanscreen.tasks.transport",
                    "ramanscreen.tasks.trajectory", "ramanscreen.tasks.polarizability"),
    "reference_spectrum": ("ramanscreen.tasks.convergence", "ramanscreen.tasks.spectra"),
}
#: Modules every stage depends on.
COMMON_MODULES = ("ramanscreen.tasks.common", "ramanscreen.tasks.schema")


def module_files(name: str) -> list[Path]:
    """The source files of module ``name``: the file itself, or every ``.py`` file of a package.

    >>> [p.name for p in module_files("ramanscreen.tasks.common")]
    ['common.py']
    >>> "cp2k.py" in {p.name for p in module_files("ramanscreen.tasks.reference")}
    True
    """
    import importlib

    mod = importlib.import_module(name)
    paths = getattr(mod, "__path__", None)
    if paths is None:
        return [Path(mod.__file__ or "")]
    return sorted(p for d in paths for p in Path(d).rglob("*.py"))


@cache
def source_digest(modules: tuple[str, ...]) -> str:
    """SHA-256 (16 hex) of the source files of ``modules`` (packages: all their files) plus
    :data:`COMMON_MODULES`."""
    h = hashlib.sha256()
    for name in sorted({*modules, *COMMON_MODULES}):
        for path in module_files(name):
            h.update(f"{name}:{path.name}".encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


@dataclass
class CodeVersion(CachePolicy):
    """Cache-key part: the source of the science modules a stage calls (``STAGE_MODULES``),
    so editing ``tasks/md.py`` invalidates cached MD but not cached spectra inputs upstream."""

    modules: tuple[str, ...] = field(default_factory=tuple)

    def compute_key(self, task_ctx, inputs, flow_parameters, **kwargs):
        return source_digest(tuple(self.modules))


def cache_policy(stage: str, key_storage: str | Path) -> CachePolicy:
    """Inputs + task source + science-code version, with cache records under ``key_storage``."""
    return (INPUTS + TASK_SOURCE + CodeVersion(modules=STAGE_MODULES[stage])).configure(key_storage=str(key_storage))


def result_storage_block(results_root: Path):
    """A ``LocalFileSystem`` block under ``<results_root>/_prefect/results``, saved on the
    current Prefect server (Prefect requires saved blocks for result storage)."""
    from prefect.filesystems import LocalFileSystem

    base = (Path(results_root) / "_prefect" / "results").resolve()
    base.mkdir(parents=True, exist_ok=True)
    name = "ramanscreen-results-" + hashlib.sha256(str(base).encode()).hexdigest()[:12]
    block = LocalFileSystem(basepath=str(base))
    block.save(name, overwrite=True)
    return LocalFileSystem.load(name)


def configure_caching(results_root: Path) -> dict[str, Any]:
    """Every stage task with persisted results and input-keyed caching under ``results_root``."""
    storage = result_storage_block(results_root)
    keys = (Path(results_root) / "_prefect" / "cache-keys").resolve()
    keys.mkdir(parents=True, exist_ok=True)
    return {
        stage: t.with_options(cache_policy=cache_policy(stage, keys), result_storage=storage, persist_result=True)
        for stage, t in STAGE_TASKS.items()
    }


def artifact_key(*parts: str) -> str:
    """A Prefect artifact key (lowercase letters, digits, dashes) from ``parts``."""
    text = "-".join(parts).lower()
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", text)).strip("-")[:120]


def artifact_rows(rows: Sequence[dict[str, Any]], keys: Sequence[str] | None = None, *,
                  significant: int | None = 4) -> list[dict[str, Any]]:
    """Rows for a Prefect table artifact: ``keys`` of each row (default: all its keys), floats
    to ``significant`` digits (None: as they are), NaN and ±inf as null (not JSON: the UI would
    not render the table).

    >>> artifact_rows([{"a": 0.123456, "b": float("nan"), "c": "x"}], ["a", "b"])
    [{'a': 0.1235, 'b': None}]
    """
    import math

    def value(v: Any) -> Any:
        if not isinstance(v, float):
            return v
        if not math.isfinite(v):
            return None
        return v if significant is None else float(f"{v:.{significant}g}")

    return [{k: value(r.get(k)) for k in (keys if keys is not None else r)} for r in rows]


# ----------------------------------------------------------------------------- structure


@task(name="structure", task_run_name="structure[{material}]")
def structure_task(material: str, spec: str, n_atoms: int | None, seed: int, workdir: str) -> dict[str, Any]:
    """Build or read the starting structure and write it to ``workdir/structure.extxyz``."""
    from ramanscreen.tasks.structures import load_structure, write_structure

    atoms = load_structure(spec, n_atoms=n_atoms, seed=seed)
    path = write_structure(atoms, Path(workdir) / "structure.extxyz")
    return {"path": str(path), "formula": atoms.get_chemical_formula(mode="metal"), "n_atoms": len(atoms),
            "symbols": sorted(set(atoms.get_chemical_symbols()))}


# ------------------------------------------------------------------------------------ MD


class _ArtifactProgress:
    """``run_md``'s plain ``progress(step, total, ps_per_day)`` callback → a Prefect progress
    artifact, updated at most every ``every_s`` seconds (and at the end)."""

    def __init__(self, key: str, description: str, every_s: float = 3.0) -> None:
        from prefect.artifacts import create_progress_artifact

        self.every_s = every_s
        self.last = 0.0
        self.id = create_progress_artifact(progress=0.0, key=key, description=description)

    def __call__(self, step: int, total: int, ps_per_day: float) -> None:
        now = time.monotonic()
        if step < total and now - self.last < self.every_s:
            return
        self.last = now
        from prefect.artifacts import update_progress_artifact

        try:
            update_progress_artifact(self.id, progress=100.0 * step / max(total, 1),
                                     description=f"MD step {step}/{total}, {ps_per_day:.2f} ps/day")
        except Exception:  # noqa: BLE001 - the UI is informative; never fail a run over it
            pass


@task(name="md", task_run_name="md[{material}]")
def md_task(material: str, structure: dict[str, Any], settings: dict[str, Any], workdir: str,
            progress_key: str) -> dict[str, Any]:
    """Run (or resume from its checkpoint, or return the finished) MD in ``workdir``."""
    from ase.io import read

    from ramanscreen.tasks.md import MDSettings, run_md, run_npt_then_nvt

    atoms = read(structure["path"])
    s = MDSettings(**settings)
    progress = _progress(progress_key, f"MD of {material}: {s.total_steps} steps of {s.dt_fs:g} fs")

    def run(a, st, wd, carry_velocities):  # ASE draws velocities at T: the NPT ones are not carried over
        return run_md(a, st, wd, progress=progress)

    res, cell = run_npt_then_nvt(atoms, s, workdir, run)
    return _md_summary(res, s, cell, engine="ase")


def _progress(key: str, description: str) -> _ArtifactProgress | None:
    try:
        return _ArtifactProgress(key, description)
    except Exception:  # noqa: BLE001 - no artifact (e.g. no API) is no reason to stop the MD
        return None


def _md_summary(res: Any, s: Any, cell: dict[str, Any], *, engine: str) -> dict[str, Any]:
    n_frames = int(res.metadata.get("n_frames") or _count_traj(res.traj_path))
    return {"traj_path": str(res.traj_path), "meta_path": str(res.metadata_path), "n_frames": n_frames,
            "frame_dt_fs": float(s.dt_fs * s.write_every), "alpha_dt_fs": float(s.alpha_dt_fs),
            "wall_s": res.metadata.get("wall_time_s"), "cell": cell, "engine": engine,
            "method": res.metadata.get("method") or res.metadata.get("model"),
            "ms_per_step": res.metadata.get("ms_per_step")}


# ---------------------------------------------------------------- distilled potential (LAMMPS)


@task(name="distil", task_run_name="distil[{material}]")
def distil_task(material: str, structure: dict[str, Any], settings: dict[str, Any], workdir: str) -> dict[str, Any]:
    """Fit (or return the already fitted) SNAP for ``material`` from its teacher: training data
    from a teacher MD at the campaign's T (and P), rattled and strained frames; resumable."""
    from ase.io import read

    from ramanscreen.tasks.mlff import DistilSettings, distil

    atoms = read(structure["path"])
    atoms.info["material"] = material
    t0 = time.perf_counter()
    res = distil(atoms, DistilSettings.from_dict(settings), workdir)
    pot = res.potential
    return {"workdir": str(res.workdir), "potential": str(pot.path), "method": pot.method,
            "teacher_traj": None if res.data.teacher_traj is None else str(res.data.teacher_traj),
            "twojmax": pot.settings.twojmax, "holdout_errors": pot.info.get("holdout_errors"),
            "flagged": bool(pot.info.get("flagged")), "wall_s": time.perf_counter() - t0}


@task(name="validate-mlff", task_run_name="validate[{material}]")
def validate_task(material: str, distilled: dict[str, Any], species: list[str], compare: bool,
                  workdir: str) -> dict[str, Any]:
    """The ``mlff_validation`` rows of a distilled potential: errors against the teacher on the
    held-out frames and, with ``compare``, D and VDOS of a distilled run against the teacher run;
    and the ``force_parity`` columns (its held-out force components against the teacher's, Fig. S1)."""
    from ramanscreen.tasks.mlff import compare_dynamics, load_distilled, start_structure, validation_rows
    from ramanscreen.tasks.parity import force_parity_rows

    t0 = time.perf_counter()
    res = load_distilled(distilled["workdir"], potential=distilled["potential"])
    dyn = None
    if compare and res.data.teacher_traj is not None:
        dyn = compare_dynamics(start_structure(res.workdir), res.potential, res.data.teacher_traj, workdir,
                               species=species)
    rows = validation_rows(material, res.potential, res.data.holdout, species=species, dynamics=dyn)
    parity = force_parity_rows(res.potential, res.data.holdout)
    return {"rows": rows, "force_parity": parity, "flagged": any(r["flagged"] for r in rows),
            "method": res.potential.method, "force_rmse_eV_A": rows[0]["force_rmse_eV_A"],
            "wall_s": time.perf_counter() - t0}


def lammps_settings(s: Any, *, keep_velocities: bool = False):
    """The :class:`~ramanscreen.tasks.mlff.LammpsMDSettings` of an ``MDSettings`` (same fields)."""
    from ramanscreen.tasks.mlff import LammpsMDSettings

    return LammpsMDSettings(temperature_k=s.temperature_k, dt_fs=s.dt_fs, steps=s.steps, equil_steps=s.equil_steps,
                            ensemble=s.ensemble, pressure_gpa=s.pressure_gpa, write_every=s.write_every,
                            alpha_stride=s.alpha_stride, checkpoint_every=s.checkpoint_every, seed=s.seed,
                            tdamp_fs=s.tdamp_fs, pdamp_fs=s.pdamp_fs, keep_velocities=keep_velocities)


@task(name="lammps-md", task_run_name="lammps-md[{material}]")
def lammps_md_task(material: str, structure: dict[str, Any], distilled: dict[str, Any], settings: dict[str, Any],
                   refine: bool, workdir: str, progress_key: str) -> dict[str, Any]:
    """Production MD of the distilled potential in LAMMPS (NPT equilibration first when the
    settings ask for it; the NPT velocities carry over), with on-the-fly refinement when
    ``refine``; resumes from its checkpoints. The trajectory is the project's format."""
    from ase.io import read

    from ramanscreen.tasks.md import MDSettings, run_npt_then_nvt
    from ramanscreen.tasks.mlff import load_distilled, run_lammps_md

    atoms = read(structure["path"])
    atoms.info["material"] = material
    s = MDSettings(**settings)
    res = load_distilled(distilled["workdir"], potential=distilled["potential"])
    refiner = res.refiner(Path(workdir) / "refine") if refine else None
    progress = _progress(progress_key, f"LAMMPS MD of {material}: {s.total_steps} steps of {s.dt_fs:g} fs")

    def run(a, st, wd, carry_velocities):
        return run_lammps_md(a, res.potential, lammps_settings(st, keep_velocities=carry_velocities), wd,
                             progress=progress, refiner=refiner)

    try:
        md, cell = run_npt_then_nvt(atoms, s, workdir, run)
    finally:
        if refiner is not None:
            refiner.close()
    out = _md_summary(md, s, cell, engine="lammps")
    out["potential"] = md.metadata.get("potential")
    out["refinement_rounds"] = 0 if refiner is None else refiner.n_rounds
    return out


def _count_traj(path: Path | str) -> int:
    from ase.io.trajectory import Trajectory

    with Trajectory(str(path)) as traj:
        return len(traj)


def _read_frames(traj_path: str, indices: Sequence[int]) -> list:
    from ase.io.trajectory import Trajectory

    with Trajectory(traj_path) as traj:
        return [traj[int(i)] for i in indices]


# ----------------------------------------------------------------------------- snapshots


@task(name="select-snapshots", task_run_name="select[{material}]")
def select_task(material: str, md: dict[str, Any], n: int, method: str, seed: int) -> list[int]:
    """Indices of ``n`` stored MD frames for reference calculations."""
    from ramanscreen.tasks.reference import select_snapshots

    if method == "fps":
        frames = _read_frames(md["traj_path"], range(md["n_frames"]))
        return [int(i) for i in select_snapshots(frames, n, method="fps", seed=seed)]
    return [int(i) for i in select_snapshots(md["n_frames"], n, method=method, seed=seed)]


# ----------------------------------------------------------------------------- reference


@task(name="reference", task_run_name="reference[{material}:{label}]")
def reference_task(material: str, traj_path: str, frames: list[int], backend: str, options: dict[str, Any],
                   workdirs: list[str], label: str) -> list[dict[str, Any]]:
    """Reference α (3x3, Å³) of stored MD frames (one, or a batch of ``[reference]
    frames_per_task`` for a cheap backend), one workdir each. ``label``: the run's name."""
    from ramanscreen.tasks.reference import get_backend

    calc = get_backend(backend, **options)
    out = []
    for frame, atoms, workdir in zip(frames, _read_frames(traj_path, frames), workdirs, strict=True):
        res = calc.compute(atoms, workdir=workdir)
        out.append({"frame": int(frame), "alpha_A3": np.asarray(res.alpha_A3, dtype=float).tolist(),
                    "method": res.method, "md_step": int(atoms.info.get("md_step", -1))})
    return out


def reference_with_retries(retries: int, delay_s: float):
    """The reference task with ``retries`` and exponential backoff (DFT non-convergence, lost node)."""
    delays = exponential_backoff(backoff_factor=max(delay_s, 0.0))(retries) if retries else 0
    return reference_task.with_options(retries=retries, retry_delay_seconds=delays, retry_jitter_factor=0.5)


# ------------------------------------------------------------------------------------ ML


@task(name="fit-alpha", task_run_name="fit[{material}]")
def fit_task(material: str, traj_path: str, references: list[dict[str, Any]], n_train: int,
             hypers: dict[str, Any], committee: int, seed: int, model_path: str,
             search_budget_s: float = 0.0) -> dict[str, Any]:
    """Fit the λ-SOAP committee on ``n_train`` references; test on the rest (R², RMSE). The split
    is :func:`ramanscreen.tasks.polarizability.train_test_split`, the one ``alpha fit`` uses;
    ``search_budget_s`` > 0 chooses the hypers by CV first (``[model] search_budget_s``).

    Also refits the model on ¼ and ½ of its training frames
    (:func:`ramanscreen.tasks.convergence.fit_training_subsets`), saved at
    ``<model_path>_subsets``, with the test metrics of every fraction (the learning curve): the
    prediction tasks evaluate those refits in the same pass (the training-set convergence).

    ``parity``: the ``alpha_parity`` columns (:func:`ramanscreen.tasks.parity.alpha_parity_rows`):
    reference and predicted α of every test frame, the predictions the metrics were computed
    from (None without test frames)."""
    from ramanscreen.tasks.convergence import fit_training_subsets
    from ramanscreen.tasks.parity import alpha_parity_rows
    from ramanscreen.tasks.polarizability import AlphaModel, SOAPHypers, alpha_metrics, train_test_split

    train_idx, test_idx = train_test_split(len(references), n_train, seed=seed)
    train = [references[i] for i in train_idx]
    test = [references[i] for i in test_idx]
    frames = _read_frames(traj_path, [r["frame"] for r in train])
    alpha = np.array([r["alpha_A3"] for r in train])
    model = AlphaModel.fit(frames, alpha, hypers=SOAPHypers(**hypers), n_committee=committee, seed=seed,
                           method=train[0]["method"], search_budget_s=search_budget_s)
    model.save(model_path)
    nan = float("nan")
    metrics = {"r2_diag": nan, "r2_offdiag": nan, "rmse_diag_A3": nan, "rmse_offdiag_A3": nan}
    tframes = _read_frames(traj_path, [r["frame"] for r in test]) if test else None
    talpha = np.array([r["alpha_A3"] for r in test]) if test else None
    parity = None
    if tframes is not None:
        pred, committee_A3 = model.predict_with_committee(tframes)
        metrics = alpha_metrics(talpha, pred)
        parity = alpha_parity_rows([r["frame"] for r in test], talpha, pred, committee_A3,
                                   reference_method=train[0]["method"], md_steps=[r.get("md_step", -1) for r in test])
    metrics["n_test"] = len(test)
    subsets = fit_training_subsets(model, frames, alpha, test_frames=tframes, test_alpha_A3=talpha, seed=seed)
    subsets_path = None
    if subsets.model is not None:
        subsets_path = f"{model_path}_subsets"
        subsets.model.save(subsets_path)
    return {"model_path": str(model_path), "metrics": metrics, "n_train": len(train),
            "method": train[0]["method"], "subsets_path": subsets_path, "subsets": subsets.to_dict(),
            "parity": parity}


@task(name="predict-alpha", task_run_name="predict[{material}:{start}-{stop}]")
def predict_task(material: str, model_path: str, traj_path: str, start: int, stop: int, stride: int,
                 out_path: str, dt_fs: float, subsets_path: str | None = None) -> dict[str, Any]:
    """α (n,3,3) and the committee's α (m,n,3,3) of stored frames ``start:stop:stride``, written
    to ``out_path`` (``.npz`` with ``dt_fs``, the time between the α samples, atomically); with
    ``subsets_path`` (the training-subset refits of :func:`fit_task`) also their α (k,n,3,3) as
    ``subsets_A3``, from the same density evaluation. Returns the path and a digest of the
    arrays, so the spectrum task's cache key depends on the values, not on how the arrays travelled."""
    from ramanscreen.tasks.common import atomic_path
    from ramanscreen.tasks.polarizability import predict_frames

    frames = _read_frames(traj_path, range(start, stop, stride))
    # the model path: loaded once per worker process; committee is (0, n, 3, 3) without members
    if subsets_path:
        alpha, committee, subsets = predict_frames(model_path, frames, committee=True, extra=subsets_path)
    else:
        alpha, committee = predict_frames(model_path, frames, committee=True)
        subsets = np.zeros((0, len(alpha), 3, 3))
    alpha = np.ascontiguousarray(alpha, dtype=np.float64)
    committee = np.ascontiguousarray(committee, dtype=np.float64)
    subsets = np.ascontiguousarray(subsets, dtype=np.float64)
    with atomic_path(out_path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, alpha_A3=alpha, committee_A3=committee, subsets_A3=subsets, dt_fs=np.float64(dt_fs))
    digest = hashlib.sha256(alpha.tobytes() + committee.tobytes() + subsets.tobytes()).hexdigest()[:24]
    return {"path": str(out_path), "sha256": digest, "n": int(len(alpha))}


def _load_chunks(chunks: list[dict[str, Any]], *, subsets: bool = False):
    """The α series and the committee's α series of the prediction chunks, concatenated; with
    ``subsets`` also the training-subset refits' α series (k, n, 3, 3; k = 0 without them)."""
    alphas, committees, subs = [], [], []
    for c in chunks:
        with np.load(c["path"]) as z:
            alphas.append(z["alpha_A3"])
            committees.append(z["committee_A3"])
            if subsets:
                subs.append(z["subsets_A3"] if "subsets_A3" in z.files else np.zeros((0, len(z["alpha_A3"]), 3, 3)))
    committee = np.concatenate(committees, axis=1) if committees[0].shape[0] else None
    if subsets:
        return np.concatenate(alphas), committee, np.concatenate(subs, axis=1)
    return np.concatenate(alphas), committee


# ----------------------------------------------------------------------------- analysis


@task(name="spectrum", task_run_name="spectrum[{material}]")
def spectrum_task(material: str, chunks: list[dict[str, Any]], alpha_dt_fs: float,
                  settings: dict[str, Any], workdir: str) -> dict[str, Any]:
    """Raman spectrum of the predicted α series (a ``RamanSpectrum``, unchanged), committee band,
    block (sub-trajectory) standard error, central-peak descriptors (with ``cp_fraction_block_err``),
    the α series as text (with its dt_fs) and a PNG."""
    from ramanscreen.tasks.spectra import (
        SpectrumSettings,
        block_uncertainty,
        central_peak_descriptors,
        plot_spectrum,
        raman_spectrum,
        spectrum_band,
        write_alpha_txt,
    )

    s = SpectrumSettings(**settings)
    alpha, committee = _load_chunks(chunks)
    spec = raman_spectrum(alpha, alpha_dt_fs, **s.spectrum_kwargs())
    band = None
    if committee is not None:
        _, lo, hi = spectrum_band(committee, alpha_dt_fs, percentiles=s.band_percentiles, **s.spectrum_kwargs())
        band = (lo, hi)
    blocks = block_uncertainty(alpha, alpha_dt_fs, freq_cm1=spec.freq_cm1, **s.block_kwargs())
    desc = {**central_peak_descriptors(spec, **s.descriptor_kwargs()), **blocks.descriptors()}
    wd = Path(workdir)
    write_alpha_txt(wd / "alpha.txt", alpha, dt_fs=alpha_dt_fs)
    png = plot_spectrum(spec, wd / "spectrum.png", band=band, title=f"{material}: ML Raman spectrum")
    return {"spectrum": spec, "band": band, "block_err": blocks.intensity_err, "block_note": blocks.note,
            "descriptors": desc, "png": str(png), "n_alpha": int(len(alpha)), "df_cm1": float(spec.df_cm1)}


@task(name="transport", task_run_name="transport[{material}]")
def transport_task(material: str, traj_path: str, species: list[str], temperature_k: float,
                   settings: dict[str, Any]):
    """MSD, D ± error, σ, α₂, VDOS of every species in ``species``: the ``TransportResult``, unchanged."""
    from ramanscreen.tasks.trajectory import Trajectory
    from ramanscreen.tasks.transport import TransportSettings, analyze_transport

    traj = Trajectory.from_file(traj_path)
    return analyze_transport(traj, species=species, temperature_k=temperature_k,
                             **TransportSettings(**settings).analysis_kwargs())


@task(name="convergence", task_run_name="convergence[{material}]")
def convergence_task(material: str, chunks: list[dict[str, Any]], alpha_dt_fs: float, traj_path: str,
                     fit: dict[str, Any], mobile: str, temperature_k: float, d_full_cm2_s: float | None,
                     spectrum_settings: dict[str, Any], transport_settings: dict[str, Any]) -> dict[str, Any]:
    """Convergence as data (Figs. S5–S12): spectra, cp_fraction and D of the first ¼ and ½ of the
    run and of the α model refitted on ¼ and ½ of its N_T training frames (the refits of
    :func:`fit_task`, whose α series the prediction chunks hold), against the full run (whose D,
    ``d_full_cm2_s``, the transport task computed): the ``convergence`` rows and
    ``convergence_spectra``."""
    from ramanscreen.tasks.convergence import convergence_study
    from ramanscreen.tasks.spectra import SpectrumSettings
    from ramanscreen.tasks.trajectory import Trajectory
    from ramanscreen.tasks.transport import TransportSettings

    alpha, _, subsets = _load_chunks(chunks, subsets=True)
    info = fit.get("subsets") or {"fractions": [], "test_metrics": {}}
    fractions = [float(f) for f in info["fractions"]]
    if len(subsets) != len(fractions):
        raise ValueError(f"{material}: the prediction chunks hold {len(subsets)} subset series, the fit "
                         f"{len(fractions)} refits")
    res = convergence_study(alpha, alpha_dt_fs, settings=SpectrumSettings(**spectrum_settings),
                            traj=Trajectory.from_file(traj_path), mobile=mobile, temperature_k=temperature_k,
                            d_full_cm2_s=d_full_cm2_s, transport=TransportSettings(**transport_settings),
                            subset_alpha_A3=dict(zip(fractions, subsets, strict=True)), n_train=int(fit["n_train"]),
                            test_metrics={float(k): v for k, v in info["test_metrics"].items()})
    return {"rows": res.rows, "spectra": res.spectra_table()}


@task(name="reference-spectrum", task_run_name="reference-spectrum[{material}]")
def reference_spectrum_task(material: str, chunks: list[dict[str, Any]], references: list[dict[str, Any]],
                            frames: list[int], alpha_dt_fs: float, settings: dict[str, Any]) -> dict[str, Any]:
    """Fig. 2D: the spectrum of the ML-predicted α of the first ``len(frames)`` α samples (the
    prediction chunks' series) against the spectrum of the reference α of the same stored
    frames (``references``, from :func:`reference_task`), same spectrum settings
    (:func:`ramanscreen.tasks.convergence.compare_reference_spectrum`): the ``reference_spectrum``
    columns. ``frames`` are the α samples' stored frames (0, stride, 2·stride, …)."""
    from ramanscreen.tasks.convergence import compare_reference_spectrum
    from ramanscreen.tasks.spectra import SpectrumSettings

    by_frame = {int(r["frame"]): r for r in references}
    missing = [f for f in frames if f not in by_frame]
    if missing:
        raise ValueError(f"{material}: no reference α for series frames {missing[:5]}")
    alpha, _ = _load_chunks(chunks)
    if len(alpha) < len(frames):
        raise ValueError(f"{material}: {len(alpha)} predicted α samples, fewer than the {len(frames)} series frames")
    ref = np.array([by_frame[f]["alpha_A3"] for f in frames], dtype=float)
    methods = sorted({str(by_frame[f]["method"]) for f in frames})
    res = compare_reference_spectrum(alpha[:len(frames)], ref, alpha_dt_fs, reference_method=", ".join(methods),
                                     settings=SpectrumSettings(**settings))
    stride = int(frames[1] - frames[0]) if len(frames) > 1 else 1
    return {"table": res.table(first_frame=int(frames[0]), frame_stride=stride), "l2_difference": res.l2_difference,
            "cp_fraction_ml": res.cp_fraction_ml, "cp_fraction_reference": res.cp_fraction_reference,
            "n_frames": res.n_frames, "note": res.note}


# ------------------------------------------------------------------------------- results


def spectrum_columns(spectrum: dict[str, Any]) -> dict[str, Any]:
    """The spectra table of a :func:`spectrum_task` result: every ``RamanSpectrum`` column plus
    the committee band and the block standard error."""
    import dataclasses

    cols = dataclasses.asdict(spectrum["spectrum"])
    if spectrum.get("band") is not None:
        cols["band_low"], cols["band_high"] = spectrum["band"]
    if spectrum.get("block_err") is not None:
        cols["intensity_block_err"] = spectrum["block_err"]
    return cols


@task(name="write-results", task_run_name="parquet[{material}]")
def write_task(results_root: str, campaign: str, material: str, run_id: str, meta: dict[str, Any],
               spectrum: dict[str, Any], transport: Any, fit: dict[str, Any],
               mlff_validation: list[dict[str, Any]] | None = None,
               convergence: dict[str, Any] | None = None,
               force_parity: dict[str, Any] | None = None,
               reference_spectrum: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write (or atomically replace) the run's Parquet tables keyed by (campaign, material, run_id).
    The stage results go in as they come (``write_run`` takes the spectrum and the
    ``TransportResult`` whole), so every documented column is filled; the α parity rows come
    with the fit (``fit["parity"]``), the force parity with the validation, the Fig. 2D spectra
    with :func:`reference_spectrum_task` (None: no reference α series)."""
    from ramanscreen.tasks.results import write_run

    rec = write_run(results_root, campaign, material, run_id, meta=meta, spectrum=spectrum_columns(spectrum),
                    transport=transport, descriptors=spectrum["descriptors"], ml_metrics=fit["metrics"],
                    msd=transport, vdos=transport, mlff_validation=mlff_validation,
                    convergence=(convergence or {}).get("rows"), convergence_spectra=(convergence or {}).get("spectra"),
                    alpha_parity=fit.get("parity"), force_parity=force_parity,
                    reference_spectrum=(reference_spectrum or {}).get("table"))
    return {"write_id": rec.write_id, "rows": dict(rec.rows)}


#: The cached stage tasks by stage name (write_task is deliberately not cached: it is cheap
#: and idempotent, and re-writing replaces the run's rows instead of duplicating them).
STAGE_TASKS = {
    "structure": structure_task,
    "md": md_task,
    "distil": distil_task,
    "validate": validate_task,
    "lammps_md": lammps_md_task,
    "reference": reference_task,
    "fit": fit_task,
    "predict": predict_task,
    "spectrum": spectrum_task,
    "transport": transport_task,
    "convergence": convergence_task,
    "reference_spectrum": reference_spectrum_task,
}
