"""Validation of a distilled potential as data: the rows of the ``mlff_validation`` table.

Per material (one row per mobile species):

* force and energy RMSE and MAE (and stress RMSE) of the distilled potential against the
  teacher on held-out frames at the campaign T (the tail of the teacher MD, never fitted);
* D and VDOS of a short teacher run against a distilled LAMMPS run on the same cell, from the
  same start, at the same T, dt and length (:func:`compare_dynamics`); the VDOS comparison is
  the overlap ∫ min(g_teacher, g_distilled) dω of the unit-area spectra (1 = identical);
* ``flagged``: the held-out force RMSE exceeds :data:`FORCE_RMSE_LIMIT_EV_A` (0.1 eV/Å, the
  paper's criterion against DFT). Every row carries the method label (distilled, not DFT).

>>> sorted(VALIDATION_COLUMNS)[:3]
['D_distilled_cm2_s', 'D_ratio', 'D_teacher_cm2_s']
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from ramanscreen.tasks.common import InputError, write_table
from ramanscreen.tasks.mlff.lammps_md import LammpsMDSettings, run_lammps_md
from ramanscreen.tasks.mlff.snap import FORCE_RMSE_LIMIT_EV_A, SnapPotential, error_stats
from ramanscreen.tasks.results import COLUMNS as RESULT_COLUMNS

#: Column -> description (units in the names): the ``mlff_validation`` table of the results
#: (:data:`ramanscreen.tasks.results.COLUMNS`, defined there once), plus the material name.
VALIDATION_COLUMNS: dict[str, str] = {"material": "material name",
                                      **{k: v[2] for k, v in RESULT_COLUMNS["mlff_validation"].items()}}


def vdos_overlap(freq_cm1: np.ndarray, g1: np.ndarray, g2: np.ndarray) -> float:
    """∫ min(g1, g2) dω of two spectra normalised to unit area (1: identical, 0: disjoint).

    >>> w = np.linspace(0, 100, 101)
    >>> round(vdos_overlap(w, np.exp(-(w - 50) ** 2 / 50), np.exp(-(w - 50) ** 2 / 50)), 6)
    1.0
    """
    g1 = np.clip(np.asarray(g1, float), 0, None)
    g2 = np.clip(np.asarray(g2, float), 0, None)
    a1, a2 = np.trapezoid(g1, freq_cm1), np.trapezoid(g2, freq_cm1)
    if a1 <= 0 or a2 <= 0:
        return float("nan")
    return float(np.trapezoid(np.minimum(g1 / a1, g2 / a2), freq_cm1))


def compare_dynamics(
    atoms: Atoms,
    potential: SnapPotential,
    teacher_traj: str | os.PathLike[str],
    workdir: str | os.PathLike[str],
    *,
    species: Sequence[str],
) -> dict[str, Any]:
    """Run the distilled potential like the teacher run (same start, T, dt, length, stride) and
    compare D of ``species`` and the VDOS of every species."""
    from ramanscreen.tasks.trajectory import Trajectory
    from ramanscreen.tasks.transport import analyze_transport

    teacher_traj = Path(teacher_traj)
    meta_path = teacher_traj.with_suffix(".json")
    if not meta_path.is_file():
        raise InputError("the teacher run has no sidecar .json", file=meta_path, fix="give a run made by ramanscreen md")
    tm = json.loads(meta_path.read_text())
    ensemble = tm.get("ensemble") or "nvt-nhc"
    settings = LammpsMDSettings(
        temperature_k=float(tm["temperature_k"]), dt_fs=float(tm["dt_fs"]), steps=int(tm["steps"]),
        equil_steps=int(tm.get("equil_steps") or 0), ensemble="npt" if ensemble == "npt" else "nvt-nhc",
        pressure_gpa=float(tm.get("pressure_gpa") or 0.0), write_every=int(tm["write_every"]),
        checkpoint_every=max(int(tm["write_every"]), 500), seed=int(tm.get("seed") or 0))
    res = run_lammps_md(atoms, potential, settings, workdir)
    t_traj, d_traj = Trajectory.from_file(teacher_traj), Trajectory.from_file(res.traj_path)
    elements = sorted(set(t_traj.symbols))
    # a short run: fit D over [10 %, 50 %] of it (at least two frames in), the same window for both
    duration_ps = t_traj.duration_fs * 1e-3
    start_ps = max(0.1 * duration_ps, 2 * t_traj.dt_fs * 1e-3)
    kw = dict(temperature_k=settings.temperature_k, method="blocks", drift="system", fit_start_ps=start_ps,
              fit_end_ps=max(0.5 * duration_ps, 2 * start_ps))
    with warnings.catch_warnings():  # a run this short has no block error bars; D is a sanity check here
        warnings.simplefilter("ignore", UserWarning)
        t_res = analyze_transport(t_traj, species=elements, **kw)
        d_res = analyze_transport(d_traj, species=elements, **kw)
    overlaps = {el: vdos_overlap(t_res.freq_cm1, t_res.vdos[el], np.interp(t_res.freq_cm1, d_res.freq_cm1,
                                                                            d_res.vdos[el])) for el in elements}
    counts = {el: t_traj.symbols.count(el) for el in elements}
    weighted = float(sum(overlaps[e] * counts[e] for e in elements) / sum(counts.values()))
    return {
        "comparison_ps": settings.steps * settings.dt_fs * 1e-3, "distilled_traj": str(res.traj_path),
        "teacher_traj": str(teacher_traj),
        "D_teacher_cm2_s": {s: t_res.D_cm2_s[s] for s in species},
        "D_distilled_cm2_s": {s: d_res.D_cm2_s[s] for s in species},
        "vdos_overlap": overlaps, "vdos_overlap_all": weighted,
        "ms_per_step": res.metadata.get("ms_per_step"),
    }


def validation_rows(
    material: str,
    potential: SnapPotential,
    holdout: Sequence[Atoms],
    *,
    species: Sequence[str],
    dynamics: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Rows of ``mlff_validation`` for one material (one per species in ``species``).

    ``dynamics``: the output of :func:`compare_dynamics` (D and VDOS columns are None without it).
    """
    if not holdout:
        raise InputError("no held-out frames to validate on", field="holdout", fix="keep a holdout fraction")
    err = error_stats(potential, holdout)
    teacher = potential.info.get("teacher") or {}
    rows = []
    for sp in species:
        d_t = d_d = ov = None
        if dynamics is not None:
            d_t = dynamics["D_teacher_cm2_s"].get(sp)
            d_d = dynamics["D_distilled_cm2_s"].get(sp)
            ov = dynamics["vdos_overlap"].get(sp)
        rows.append({
            "material": material, "method": potential.method,
            "teacher": teacher.get("model") or teacher.get("spec") or teacher.get("name"),
            "temperature_k": potential.info.get("temperature_k"), "n_atoms": len(holdout[0]),
            "n_train_frames": potential.info.get("n_train_frames"), "n_holdout_frames": err.n_frames,
            "twojmax": potential.settings.twojmax, "quadratic": potential.settings.quadratic,
            "force_rmse_eV_A": err.force_rmse_eV_A, "force_mae_eV_A": err.force_mae_eV_A,
            "energy_rmse_meV_atom": err.energy_rmse_meV_atom, "energy_mae_meV_atom": err.energy_mae_meV_atom,
            "stress_rmse_GPa": err.stress_rmse_GPa, "force_rms_teacher_eV_A": err.force_rms_teacher_eV_A,
            "force_rmse_limit_eV_A": FORCE_RMSE_LIMIT_EV_A,
            "flagged": bool(err.force_rmse_eV_A > FORCE_RMSE_LIMIT_EV_A),
            "species": sp, "comparison_ps": None if dynamics is None else dynamics["comparison_ps"],
            "D_teacher_cm2_s": d_t, "D_distilled_cm2_s": d_d,
            "D_ratio": (d_d / d_t) if (d_t and d_d is not None and d_t > 0) else None,
            "vdos_overlap": ov, "vdos_overlap_all": None if dynamics is None else dynamics["vdos_overlap_all"],
            "refinement_rounds": int(potential.info.get("refinement_round", 0)),
            "potential": None if potential.path is None else str(potential.path),
        })
    return rows


def write_validation_table(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Write rows as the ``mlff_validation`` table (Parquet or CSV by suffix), atomically."""
    if not rows:
        raise InputError("no validation rows to write", field="rows")
    cols = {k: [r.get(k) for r in rows] for k in VALIDATION_COLUMNS}
    import pyarrow as pa

    table_cols = {k: pa.array(v) for k, v in cols.items()}
    return write_table(table_cols, path, metadata={"table": "mlff_validation",
                                                   "force_rmse_limit_eV_A": str(FORCE_RMSE_LIMIT_EV_A),
                                                   "note": "distilled potentials, not DFT"})


__all__ = ["VALIDATION_COLUMNS", "compare_dynamics", "validation_rows", "vdos_overlap", "write_validation_table"]
