"""Campaign results as hive-partitioned Parquet tables, written atomically and schema-versioned.

One *run* is one material simulated once in one campaign; it is keyed by
``(campaign, material, run_id)``. :func:`write_run` writes all thirteen tables of a run:

========== ====================================================== ======================
table      rows                                                   required columns
========== ====================================================== ======================
materials  one per run (the *commit record*, written last)        formula, temperature_k,
                                                                  n_atoms, mlff,
                                                                  reference_method, n_train
spectra    one per frequency bin                                  freq_cm1, intensity
transport  one per species                                        species, D_cm2_s
descriptors one per run, one column per central-peak descriptor   (any numeric names)
ml_metrics one per run                                            r2_diag, r2_offdiag,
                                                                  rmse_diag_A3,
                                                                  rmse_offdiag_A3
msd        one per (species, time)                                species, time_ps, msd_A2
vdos       one per (species, frequency)                           species, freq_cm1, vdos
mlff_validation one per mobile species (distilled potentials only) species, method,
                                                                  force_rmse_eV_A, flagged
convergence one per (test, fraction): ¼, ½, full trajectory / N_T  test, fraction
convergence_spectra one per (test, fraction, frequency bin)        test, fraction, freq_cm1,
                                                                  intensity
alpha_parity one per (alpha test frame, component): Fig. 2B/2C   frame, component, kind,
                                                                  alpha_reference_A3,
                                                                  alpha_predicted_A3,
                                                                  reference_method
force_parity one per held-out force component kept (bounded),    frame, atom, element,
           distilled potentials only: Fig. S1                     component, force_teacher_eV_A,
                                                                  force_distilled_eV_A, method
reference_spectrum one per frequency bin of the ML and the         freq_cm1, intensity_ml,
           reference spectrum of the same α frames: Fig. 2D       intensity_reference,
                                                                  n_frames, reference_method
========== ====================================================== ======================

Every row also carries ``campaign``, ``material``, ``run_id``, ``write_id`` and
``schema_version``; the Parquet footer carries ``ramanscreen.schema_version`` too.

Layout (hive partitions, readable by DuckDB, pyarrow, Polars, Spark)::

    <root>/<table>/campaign=<c>/material=<m>/run_id=<r>/<write_id>.parquet   # data tables
    <root>/materials/campaign=<c>/material=<m>/run_id=<r>/run.parquet        # commit record
    <root>/_locks/campaign=<c>/material=<m>/run_id=<r>.lock                  # writer lock

How a write stays atomic and idempotent:

1. Everything is validated in memory first; bad input raises :class:`InputError` and writes nothing.
2. A per-run ``flock`` is taken, so two writers of the *same* run serialize (different runs,
   e.g. two campaigns, never wait for each other).
3. Each data table goes to ``<write_id>.parquet`` through a hidden ``.tmp`` name, fsync, rename.
   ``write_id`` is fresh for every write, so these files never overwrite the committed ones.
4. The ``materials`` row, which names the ``write_id``, replaces ``run.parquet`` by one atomic
   rename. That rename is the commit: readers (``analytics/views.sql``) only show data rows
   whose ``write_id`` equals the committed one, so a crash before it leaves the previous
   version (or nothing) visible, and never a mix.
5. Files of other write ids for the same run (older versions, a crashed write's leftovers) are
   deleted once they have been superseded for :data:`STALE_GRACE_S` (the version just
   superseded gets its clock started by the commit), by the next write of the run or by
   :func:`vacuum` (``ramanscreen results vacuum``). So a reader that listed the files just
   before a commit can still open them, and storage stays bounded: one version per run, plus
   the superseded one during the grace period. A crash here leaves only invisible files.
6. A write whose content equals the committed version (same tables, bookkeeping aside: the
   ``ramanscreen.content_digest`` of the commit record) writes nothing.

Re-writing a run therefore replaces it: no duplicate rows, no lost rows.

>>> import tempfile, duckdb
>>> root = tempfile.mkdtemp()
>>> meta = dict(formula="AgI", temperature_k=500.0, n_atoms=128, mlff="chgnet",
...             reference_method="embedded", n_train=140, mobile_species="Ag")
>>> rec = write_run(root, "demo", "AgI", "T500", meta=meta,
...                 spectrum={"freq_cm1": [0.0, 10.0, 20.0], "intensity": [0.0, 2.0, 1.0]},
...                 transport=[{"species": "Ag", "D_cm2_s": 2.8e-5}, {"species": "I", "D_cm2_s": 1e-7}])
>>> rec = write_run(root, "demo", "AgI", "T500", meta=meta,   # a re-run replaces, never duplicates
...                 spectrum={"freq_cm1": [0.0, 10.0, 20.0], "intensity": [0.0, 2.0, 1.0]},
...                 transport=[{"species": "Ag", "D_cm2_s": 2.9e-5}, {"species": "I", "D_cm2_s": 1e-7}])
>>> committed_runs(root)
[('demo', 'AgI', 'T500')]
>>> wid = committed_write_id(root, "demo", "AgI", "T500")   # the files the commit names
>>> duckdb.sql(f"SELECT species, D_cm2_s FROM '{root}/transport/**/{wid}.parquet' ORDER BY 1").fetchall()
[('Ag', 2.9e-05), ('I', 1e-07)]
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import functools
import json
import math
import os
import re
import subprocess
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ramanscreen.tasks.common import InputError, atomic_write

#: Version of the table layout below. Bump it when a column changes meaning or type.
#: 2: the materials row records the spectral windows and the ranking thresholds of the run,
#: and the views compute ``cp_fraction`` from the run's own windows.
#: 3: ``pressure_gpa`` is 0 (not null) for a fixed-cell run (:data:`PRESSURE_GPA_DOC`), and every
#: table with one row per run or per (run, species) carries it (:data:`PRESSURE_TABLES`).
SCHEMA_VERSION = 3
#: Parquet footer key holding :data:`SCHEMA_VERSION`.
SCHEMA_VERSION_KEY = "ramanscreen.schema_version"

#: Superseded or orphaned files younger than this (seconds) are left for readers still using them.
STALE_GRACE_S = 60.0

KEY_COLUMNS = ("campaign", "material", "run_id")
#: Columns every row carries besides its own data.
BOOKKEEPING_COLUMNS = (*KEY_COLUMNS, "write_id", "schema_version")

#: Data tables (written first) in write order; ``materials`` is written last, as the commit.
DATA_TABLES = ("spectra", "transport", "descriptors", "ml_metrics", "msd", "vdos", "mlff_validation", "convergence",
               "convergence_spectra", "alpha_parity", "force_parity", "reference_spectrum")
TABLES = ("materials", *DATA_TABLES)
#: Tables added after runs were first written: a results root written before them lacks them.
OPTIONAL_TABLES = ("mlff_validation", "convergence", "convergence_spectra", "alpha_parity", "force_parity",
                   "reference_spectrum")
COMMIT_FILE = "run.parquet"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+\-]{0,127}$")
_COLUMN_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")

_F = pa.float64()
_I = pa.int64()
_S = pa.string()

#: What ``pressure_gpa`` means in every results table (the one definition; the column docs,
#: docs/results.md and the surrogate's rows use it).
PRESSURE_GPA_DOC = ("pressure P of the MD cell, GPa: the barostat target of an NPT production, or of the NPT "
                    "equilibration whose mean cell the NVT production ran at; 0 for a fixed cell at the density "
                    "it was built at (the builders use lattice constants measured at ambient pressure, so 0 is "
                    "nominal). Not the MLFF's virial pressure during the run")
#: ``pressure_gpa`` of a run that held no pressure: NVT at the built (ambient-pressure) density.
BUILT_DENSITY_PRESSURE_GPA = 0.0
#: Tables whose rows are per run or per (run, species): each row carries the run's ``pressure_gpa``
#: (the per-bin curves spectra, msd and vdos take it from ``materials`` by the run key).
PRESSURE_TABLES = ("materials", "transport", "descriptors", "ml_metrics", "mlff_validation")


def run_pressure_gpa(pressure_gpa: float | None) -> float:
    """The results' ``pressure_gpa`` of a run from the pressure it held (None: a fixed cell at
    its built density, :data:`BUILT_DENSITY_PRESSURE_GPA`). See :data:`PRESSURE_GPA_DOC`.

    >>> run_pressure_gpa(None), run_pressure_gpa(0.5)
    (0.0, 0.5)
    """
    if pressure_gpa is None:
        return BUILT_DENSITY_PRESSURE_GPA
    value = float(pressure_gpa)
    if not math.isfinite(value):
        raise InputError(f"must be a finite number, got {pressure_gpa!r}", field="materials.pressure_gpa",
                         fix="give the pressure in GPa, or none for a fixed cell at its built density")
    return value

#: The ``pressure_gpa`` column of the :data:`PRESSURE_TABLES` besides ``materials``.
_RUN_PRESSURE_COLUMN = (_F, False, "the run's pressure_gpa (materials; filled in by the writer), GPa")

#: Fixed columns of each table: name -> (arrow type, required?, unit / meaning).
COLUMNS: dict[str, dict[str, tuple[pa.DataType, bool, str]]] = {
    "materials": {
        "formula": (_S, True, "chemical formula of the simulated cell, e.g. Na3SbS4"),
        "temperature_k": (_F, True, "MD temperature, K"),
        "n_atoms": (_I, True, "atoms in the simulation cell"),
        "mobile_species": (_S, False, "element whose diffusion is ranked (default: largest D)"),
        "mlff": (_S, True, "force field that drove the MD"),
        "reference_method": (_S, True, "reference polarizability method (DFPT backend)"),
        "n_train": (_I, True, "N_T, reference structures the alpha model was trained on"),
        "md_dt_fs": (_F, False, "MD time step, fs"),
        "md_equil_ps": (_F, False, "equilibration length, ps"),
        "md_production_ps": (_F, False, "production length, ps"),
        "alpha_stride": (_I, False, "alpha predicted every n-th MD frame"),
        "pressure_gpa": (_F, False, PRESSURE_GPA_DOC + " (filled in: a run that gives none is a fixed cell, 0)"),
        "phase": (_S, False, "the material's label as the campaign names it (the phase, e.g. γ-Na3PS4)"),
        "npt_equilibrated": (pa.bool_(), False, "production ran NVT at the mean cell of an NPT equilibration at T, P"),
        "density_g_cm3": (_F, False, "mass density of the production cell, g/cm^3 (after NPT: the equilibrated one)"),
        "volume_A3": (_F, False, "volume of the production cell, A^3"),
        "cell_a_A": (_F, False, "production cell length a, A"),
        "cell_b_A": (_F, False, "production cell length b, A"),
        "cell_c_A": (_F, False, "production cell length c, A"),
        "md_engine": (_S, False, "what integrated the MD: ase (the calculator itself) or lammps (distilled SNAP)"),
        "structure": (_S, False, "builder name or structure file the run started from"),
        "code_version": (_S, False, "git describe of the code (filled in when omitted)"),
        "omega_min_cm1": (_F, False, "low-frequency (central-peak) window start the run used, cm^-1"),
        "omega_c_cm1": (_F, False, "low-frequency window end omega_c, cm^-1"),
        "host_low_cm1": (_F, False, "host window start, cm^-1"),
        "host_high_cm1": (_F, False, "host window end, cm^-1 (also the end of the cp_fraction total)"),
        "rank_metric": (_S, False, "central-peak metric the campaign ranks by (null: the ranking default)"),
        "d_liquid_cm2_s": (_F, False, "D threshold of liquid-like conduction the run was screened with, cm^2/s"),
        "d_hopping_cm2_s": (_F, False, "D threshold of hopping conduction, cm^2/s"),
        "cp_threshold": (_F, False, "metric value at or above which the run shows a central peak"),
        "converge_max_l2": (_F, False, "largest spectrum L2 change at half the run / half N_T of a converged run"),
        "converge_max_cp_change": (_F, False, "largest |cp_fraction change| at half the run / half N_T"),
        "converge_max_D_rel_change": (_F, False, "largest |D change| at half the run, relative to "
                                      "max(|D|, d_hopping_cm2_s)"),
        "tie_sigmas": (_F, False, "half-width of the cp_fraction interval of the ties, in block standard errors"),
        "settings_json": (_S, False, "any further settings, as JSON"),
        "created_at": (pa.timestamp("us", tz="UTC"), False, "commit time (UTC, filled in)"),
    },
    "spectra": {
        "freq_cm1": (_F, True, "Raman shift, cm^-1, strictly increasing"),
        "intensity": (_F, True, "orientation-averaged intensity 45a2+7g2 (arb. units)"),
        "band_low": (_F, False, "committee band, lower edge (same units)"),
        "band_high": (_F, False, "committee band, upper edge (same units)"),
        "intensity_block_err": (_F, False, "block (sub-trajectory) standard error of the intensity (same units)"),
        "intensity_parallel": (_F, False, "parallel-polarised intensity 45a2+4g2"),
        "intensity_perpendicular": (_F, False, "perpendicular-polarised intensity 3g2"),
        "a2": (_F, False, "isotropic invariant a^2(omega)"),
        "gamma2": (_F, False, "anisotropic invariant gamma^2(omega)"),
        "depolarization_ratio": (_F, False, "I_perp / I_par (null where I_par = 0)"),
    },
    "transport": {
        "species": (_S, True, "element symbol"),
        "D_cm2_s": (_F, True, "tracer diffusion coefficient, cm^2/s"),
        "D_err_cm2_s": (_F, False, "its standard error, cm^2/s"),
        "sigma_S_cm": (_F, False, "Nernst-Einstein conductivity, S/cm"),
        "alpha2_peak": (_F, False, "peak of the non-Gaussian parameter alpha_2"),
        "vdos0": (_F, False, "VDOS at omega -> 0 (arb. units)"),
        "sigma_err_S_cm": (_F, False, "standard error of sigma, S/cm"),
        "msd_exponent": (_F, False, "slope of log MSD vs log t in the fit window (1: diffusive)"),
        "alpha2_peak_time_ps": (_F, False, "lag time of the alpha_2 peak, ps"),
        "pressure_gpa": _RUN_PRESSURE_COLUMN,
    },
    "descriptors": {
        "pressure_gpa": _RUN_PRESSURE_COLUMN,
    },
    "ml_metrics": {
        "r2_diag": (_F, True, "R^2 of the diagonal alpha components on the test set"),
        "r2_offdiag": (_F, True, "R^2 of the off-diagonal components"),
        "rmse_diag_A3": (_F, True, "RMSE of the diagonal components, A^3"),
        "rmse_offdiag_A3": (_F, True, "RMSE of the off-diagonal components, A^3"),
        "n_train": (_I, False, "training structures (default: materials.n_train)"),
        "pressure_gpa": _RUN_PRESSURE_COLUMN,
    },
    "msd": {
        "species": (_S, True, "element symbol"),
        "time_ps": (_F, True, "lag time, ps"),
        "msd_A2": (_F, True, "mean squared displacement, A^2"),
        "alpha2": (_F, False, "non-Gaussian parameter alpha_2(t)"),
        "msd_slope": (_F, False, "d log MSD / d log t"),
    },
    "vdos": {
        "species": (_S, True, "element symbol"),
        "freq_cm1": (_F, True, "frequency, cm^-1"),
        "vdos": (_F, True, "atom-resolved vibrational density of states (arb. units)"),
    },
    # a distilled potential against its teacher (ramanscreen.tasks.mlff.validate); no rows when
    # the MD ran on the calculator itself
    "mlff_validation": {
        "species": (_S, True, "mobile species the D and VDOS columns compare"),
        "method": (_S, True, "how the potential was made (distilled from the teacher, not DFT)"),
        "teacher": (_S, False, "teacher model"),
        "temperature_k": (_F, False, "campaign temperature of the held-out frames and runs, K"),
        "n_atoms": (_I, False, "atoms in the cell"),
        "n_train_frames": (_I, False, "labelled frames fitted"),
        "n_holdout_frames": (_I, False, "held-out teacher frames"),
        "twojmax": (_I, False, "SNAP band limit"),
        "quadratic": (pa.bool_(), False, "quadratic SNAP"),
        "force_rmse_eV_A": (_F, True, "force RMSE vs the teacher on held-out frames, eV/A"),
        "force_mae_eV_A": (_F, False, "force MAE vs the teacher on held-out frames, eV/A"),
        "energy_rmse_meV_atom": (_F, False, "energy RMSE per atom vs the teacher on held-out frames, meV/atom"),
        "energy_mae_meV_atom": (_F, False, "energy MAE per atom vs the teacher on held-out frames, meV/atom"),
        "stress_rmse_GPa": (_F, False, "stress RMSE vs the teacher on held-out frames, GPa"),
        "force_rms_teacher_eV_A": (_F, False, "RMS of the teacher's held-out forces (scale of the RMSE), eV/A"),
        "force_rmse_limit_eV_A": (_F, False, "the flagging threshold, eV/A"),
        "flagged": (pa.bool_(), True, "force RMSE above the threshold"),
        "comparison_ps": (_F, False, "length of each of the two comparison runs, ps"),
        "D_teacher_cm2_s": (_F, False, "D of the species in the teacher run, cm^2/s"),
        "D_distilled_cm2_s": (_F, False, "D of the species in the distilled run, cm^2/s"),
        "D_ratio": (_F, False, "D distilled / D teacher"),
        "vdos_overlap": (_F, False, "overlap of the species' unit-area VDOS (1 = identical)"),
        "vdos_overlap_all": (_F, False, "atom-weighted VDOS overlap over all species"),
        "refinement_rounds": (_I, False, "on-the-fly refinement rounds of the potential"),
        "potential": (_S, False, "path of the potential's .snap.json"),
        "pressure_gpa": _RUN_PRESSURE_COLUMN,
    },
    # convergence as data (ramanscreen.tasks.convergence): no rows for runs written without it
    "convergence": {
        "test": (_S, True, "trajectory_length (the first fraction of the run) or training_set (the alpha model "
                 "refitted on fraction x N_T of its training frames)"),
        "fraction": (_F, True, "fraction of the trajectory or of N_T (0.25, 0.5, 1)"),
        "n_alpha": (_I, False, "alpha samples of the spectrum"),
        "duration_ps": (_F, False, "length of the alpha series, ps"),
        "n_train": (_I, False, "training frames of the alpha model"),
        "spectrum_l2_change": (_F, False, "relative L2 distance of the unit-area spectrum from the full run's, over "
                               "[omega_min_cm1, host end] on the full run's grid"),
        "cp_fraction": (_F, False, "cp_fraction (fraction_below_omega_c) of this spectrum"),
        "cp_fraction_change": (_F, False, "cp_fraction minus the full run's"),
        "species": (_S, False, "mobile species of D"),
        "D_cm2_s": (_F, False, "D of the mobile species from this part of the trajectory, cm^2/s (training_set: null)"),
        "D_change_cm2_s": (_F, False, "D minus the full run's, cm^2/s"),
        "rmse_diag_A3": (_F, False, "training_set: RMSE of the diagonal alpha components of this fraction's model "
                         "on the alpha model's test frames, A^3 (the learning curve; null without test frames)"),
        "rmse_offdiag_A3": (_F, False, "training_set: RMSE of the off-diagonal alpha components on the test "
                            "frames, A^3"),
        "note": (_S, False, "why a value is missing"),
    },
    "convergence_spectra": {
        "test": (_S, True, "trajectory_length or training_set"),
        "fraction": (_F, True, "fraction of the trajectory or of N_T"),
        "freq_cm1": (_F, True, "Raman shift, cm^-1 (the full run's grid), increasing within each (test, fraction)"),
        "intensity": (_F, True, "intensity 45a2+7g2 (arb. units, the full run's scale)"),
    },
    # parity data (ramanscreen.tasks.parity): the alpha model's test set (Fig. 2B/2C); no rows for runs
    # written without it or whose model had no test frames
    "alpha_parity": {
        "frame": (_I, True, "stored MD frame of the test structure (never in the model's training set)"),
        "md_step": (_I, False, "MD step of that frame"),
        "component": (_S, True, "Cartesian component of alpha: xx, yy, zz, xy, yz, zx"),
        "kind": (_S, True, "diagonal (xx, yy, zz; Fig. 2B) or off-diagonal (xy, yz, zx; Fig. 2C)"),
        "alpha_reference_A3": (_F, True, "reference alpha of the component (method: reference_method), A^3"),
        "alpha_predicted_A3": (_F, True, "lambda-SOAP model's prediction (the values ml_metrics pooled), A^3"),
        "alpha_committee_std_A3": (_F, False, "standard deviation of the calibrated committee, A^3 (null: no "
                                   "committee)"),
        "reference_method": (_S, True, "method of the reference alpha (not DFPT unless it says so)"),
    },
    # a distilled potential's held-out forces against its teacher (Fig. S1); no rows when the MD ran
    # on the calculator itself
    "force_parity": {
        "frame": (_I, True, "index of the held-out teacher frame (the tail of the teacher MD, never fitted)"),
        "atom": (_I, True, "atom index in the frame"),
        "element": (_S, True, "element symbol of the atom"),
        "component": (_S, True, "Cartesian component x, y or z (the cell's ASE frame)"),
        "force_teacher_eV_A": (_F, True, "the teacher's force component (column teacher), eV/A"),
        "force_distilled_eV_A": (_F, True, "the distilled potential's force component (column method), eV/A"),
        "force_rmse_element_eV_A": (_F, False, "force RMSE of the element over all its held-out components "
                                    "(not only the rows kept), eV/A"),
        "n_components_element": (_I, False, "held-out force components of the element (the rows are a "
                                 "deterministic subsample of them, at most tasks.parity.FORCE_PARITY_MAX_ROWS per run)"),
        "method": (_S, True, "the distilled potential (distilled from the teacher, not DFT)"),
        "teacher": (_S, False, "teacher model (as mlff_validation.teacher)"),
    },
    # the ML-predicted against the reference spectrum of the same consecutive alpha frames (Fig. 2D,
    # ramanscreen.tasks.convergence.compare_reference_spectrum); no rows with [reference] series_frames = 0
    "reference_spectrum": {
        "freq_cm1": (_F, True, "Raman shift, cm^-1 (the grid of both spectra), strictly increasing"),
        "intensity_ml": (_F, True, "spectrum of the ML-predicted alpha of the frames, divided by the reference "
                         "spectrum's area over [omega_min_cm1, host end] (the same number for both columns)"),
        "intensity_reference": (_F, True, "spectrum of the reference alpha of the same frames, same settings, "
                                "unit area over [omega_min_cm1, host end]"),
        "l2_difference": (_F, False, "||I_ml - I_ref||_2 / ||I_ref||_2 over [omega_min_cm1, host end] of the two "
                          "columns (scale errors included)"),
        "l2_shape_difference": (_F, False, "the same, each spectrum at unit area (shape only; as "
                                "convergence.spectrum_l2_change)"),
        "cp_fraction_ml": (_F, False, "fraction_below_omega_c of the ML spectrum"),
        "cp_fraction_reference": (_F, False, "fraction_below_omega_c of the reference spectrum"),
        "n_frames": (_I, True, "alpha samples in the series (both spectra)"),
        "duration_ps": (_F, False, "length of the series, ps"),
        "first_frame": (_I, False, "stored MD frame of the first alpha sample (0: the start of production)"),
        "frame_stride": (_I, False, "stored MD frames between consecutive alpha samples (md alpha_stride)"),
        "reference_method": (_S, True, "method of the reference alpha (not DFPT unless it says so)"),
        "note": (_S, False, "why the windows are not fully resolved by so short a series (null: they are)"),
    },
}
#: Tables whose rows may carry extra numeric columns beyond :data:`COLUMNS`.
_OPEN_TABLES = {"descriptors", "ml_metrics"}


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """What :func:`write_run` committed."""

    campaign: str
    material: str
    run_id: str
    write_id: str
    paths: dict[str, Path]
    rows: dict[str, int]


# --------------------------------------------------------------------------- validation


def _check_name(value: Any, field: str) -> str:
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise InputError(
            f"{value!r} cannot name a results partition",
            field=field,
            fix="use 1-128 characters from letters, digits and . _ + - (no spaces, '/' or '=')",
        )
    return value


def _as_mapping(obj: Any, field: str) -> Mapping[str, Any]:
    """Accept a mapping, a dataclass instance, or an object with attributes."""
    if isinstance(obj, Mapping):
        return obj
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if hasattr(obj, "__dict__"):
        return {k: v for k, v in vars(obj).items() if not k.startswith("_")}
    raise InputError(f"expected a mapping of columns, got {type(obj).__name__}", field=field)


def _float_array(value: Any, field: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise InputError("expected numbers", field=field) from None
    return arr


def _scalar_float(value: Any, field: str, allow_inf: bool = False) -> float | None:
    """A float, or None for a missing/NaN value; inf is an error unless ``allow_inf``."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return float(value)
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise InputError(f"expected a number, got {value!r}", field=field) from None
    if arr.size != 1:
        raise InputError(f"expected one number, got shape {arr.shape}", field=field)
    x = float(arr.reshape(()))
    if math.isnan(x):
        return None
    if not math.isfinite(x) and not allow_inf:
        raise InputError("infinite value", field=field, fix="store a finite number or NaN (stored as null)")
    return x


def _long_columns(obj: Any, table: str) -> dict[str, Any]:
    """Normalise long-format input to a dict of equal-length columns.

    Accepts ``{"species": [...], col: [...]}``, a list of row dicts, or
    ``{species: {col: value-or-array}}`` (per-species mapping).
    """
    if isinstance(obj, Sequence) and not isinstance(obj, (str, bytes)):
        rows = [_as_mapping(r, f"{table}[{i}]") for i, r in enumerate(obj)]
        names: list[str] = []
        for r in rows:
            names += [k for k in r if k not in names]
        return {k: [r.get(k) for r in rows] for k in names}
    mapping = _as_mapping(obj, table)
    if "species" in mapping or not mapping or not all(
        isinstance(v, Mapping) or dataclasses.is_dataclass(v) for v in mapping.values()
    ):
        return dict(mapping)
    blocks: list[tuple[str, int, dict[str, Any]]] = []
    names = ["species"]
    for species, sub in mapping.items():
        sub = {k: v for k, v in _as_mapping(sub, f"{table}.{species}").items() if k != "species"}
        lengths = {int(np.size(v)) for v in sub.values() if np.ndim(v) > 0}
        if len(lengths) > 1:
            raise InputError(f"columns of different lengths {sorted(lengths)}", field=f"{table}.{species}")
        n = lengths.pop() if lengths else 1
        blocks.append((str(species), n, sub))
        names += [k for k in sub if k not in names]
    cols: dict[str, list[Any]] = {k: [] for k in names}
    for species, n, sub in blocks:
        cols["species"] += [species] * n
        for k in names[1:]:
            v: Any = sub.get(k)
            cols[k] += list(np.ravel(v)) if np.ndim(v) > 0 else [v] * n
    return cols


def _transport_rows(obj: Any) -> Any:
    """Per-species rows from a ``TransportResult``-like object or its ``to_dict()``: ``species``
    is a list and each transport column a ``{species: value}`` mapping. Anything else is
    returned unchanged.

    >>> _transport_rows({"species": ["Na"], "D_cm2_s": {"Na": 1e-6}, "duration_ps": 8.0})
    [{'species': 'Na', 'D_cm2_s': 1e-06}]
    """
    get = obj.get if isinstance(obj, Mapping) else (lambda k: getattr(obj, k, None))
    species, d = get("species"), get("D_cm2_s")
    if isinstance(species, (list, tuple)) and isinstance(d, Mapping):
        rows = []
        for s in species:
            row = {"species": s}
            for col in COLUMNS["transport"]:
                per = get(col)
                if col != "species" and isinstance(per, Mapping) and s in per:
                    row[col] = per[s]
            rows.append(row)
        return rows
    return obj


def _build_table(table: str, columns: Mapping[str, Any], n_rows: int | None = None) -> pa.Table:
    """Validate columns against :data:`COLUMNS` and build the Arrow table (no key columns yet)."""
    spec = COLUMNS[table]
    unknown = [k for k in columns if k not in spec]
    if unknown and table not in _OPEN_TABLES:
        raise InputError(
            f"unknown column {unknown[0]!r}", field=f"{table}.{unknown[0]}",
            fix=f"use the documented columns: {', '.join(spec)}",
        )
    missing = [k for k, (_, req, _) in spec.items() if req and columns.get(k) is None]
    if missing:
        raise InputError("required column missing", field=f"{table}.{missing[0]}",
                         fix=f"{table} needs {', '.join(k for k, v in spec.items() if v[1])}")
    folded: dict[str, str] = {}
    for name in [*spec, *columns]:  # SQL names are case-insensitive: "Slope" and "slope" collide
        other = folded.setdefault(str(name).lower(), str(name))
        if other != name:
            raise InputError(f"{name!r} and {other!r} differ only in case", field=f"{table}.{name}",
                             fix="rename one of them")
    arrays: dict[str, pa.Array] = {}
    lengths: set[int] = set()
    for name in [*spec, *[k for k in columns if k not in spec]]:
        value = columns.get(name)
        field = f"{table}.{name}"
        if name in spec:
            dtype = spec[name][0]
        else:
            if not _COLUMN_RE.match(str(name)) or name in BOOKKEEPING_COLUMNS:
                raise InputError(f"{name!r} is not a usable column name", field=field,
                                 fix="use letters, digits and underscores, not a key column name")
            dtype = _F
        if value is None:
            arrays[name] = None  # filled with nulls once the length is known
            continue
        if dtype == _S:
            vals = [value] if isinstance(value, str) else list(np.ravel(np.asarray(value, dtype=object)))
            for v in vals:
                if v is not None and (not isinstance(v, str) or not v):  # None in a list: null
                    raise InputError(f"expected a non-empty string, got {v!r}", field=field)
            arrays[name] = pa.array(vals, type=_S)
        elif dtype == _F:
            arr = _float_array(
                [np.nan if v is None else v for v in value] if isinstance(value, list) else value, field
            )
            if np.isinf(arr).any() and table not in _OPEN_TABLES:
                raise InputError("infinite value", field=field, fix="store finite numbers or NaN (null)")
            arr = np.atleast_1d(arr)
            if arr.ndim != 1:
                raise InputError(f"expected a 1-D column, got shape {arr.shape}", field=field)
            arrays[name] = pa.array(arr, type=_F, from_pandas=True)  # NaN -> null
        elif dtype == _I:
            arr = np.atleast_1d(np.asarray(value, dtype=object))
            try:
                ok = arr.ndim == 1 and all(v is None or (not isinstance(v, str) and float(v) == int(v)) for v in arr)
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise InputError(f"expected integers, got {value!r}", field=field)
            arrays[name] = pa.array([None if v is None else int(v) for v in arr], type=_I)
        else:  # timestamps are filled in by the writer
            arrays[name] = pa.array(list(np.atleast_1d(value)), type=dtype)
        lengths.add(len(arrays[name]))
    if n_rows is not None:
        lengths.add(n_rows)
    if len(lengths) > 1:
        raise InputError(f"columns have different lengths {sorted(lengths)}", field=table,
                         fix="give every column one value per row")
    n = lengths.pop() if lengths else 0
    out = {k: (pa.nulls(n, type=spec[k][0] if k in spec else _F) if v is None else v) for k, v in arrays.items()}
    return pa.table(out)


def _validate_spectra(t: pa.Table) -> None:
    f = t.column("freq_cm1").to_numpy(zero_copy_only=False)
    if len(f) < 2:
        raise InputError("a spectrum needs at least two frequency bins", field="spectra.freq_cm1")
    if np.isnan(f).any() or (np.diff(f) <= 0).any():
        raise InputError("frequencies must be finite and strictly increasing", field="spectra.freq_cm1")
    if t.column("intensity").null_count:
        raise InputError("NaN in the intensity", field="spectra.intensity", fix="repair the spectrum")


def _validate_long(t: pa.Table, table: str, x: str | None) -> None:
    for name in COLUMNS[table]:
        if COLUMNS[table][name][1] and t.column(name).null_count:
            raise InputError("missing (null/NaN) value in a required column", field=f"{table}.{name}")
    if x is None:
        species = t.column("species").to_pylist()
        if len(set(species)) != len(species):
            raise InputError("a species appears twice", field=f"{table}.species", fix="one row per species")
        return
    species = np.asarray(t.column("species").to_pylist(), dtype=object)
    xs = t.column(x).to_numpy(zero_copy_only=False)
    for s in dict.fromkeys(species):
        xi = xs[species == s]
        if (np.diff(xi) <= 0).any():
            raise InputError(f"{x} must increase within each species ({s} does not)", field=f"{table}.{x}")


def _convergence_keys(t: pa.Table, table: str) -> tuple[np.ndarray, np.ndarray]:
    tests = np.asarray(t.column("test").to_pylist(), dtype=object)
    fractions = t.column("fraction").to_numpy(zero_copy_only=False)
    from ramanscreen.tasks.convergence import TESTS

    bad = [x for x in dict.fromkeys(tests) if x not in TESTS]
    if bad:
        raise InputError(f"unknown test {bad[0]!r}", field=f"{table}.test", fix=f"use one of {', '.join(TESTS)}")
    if not (np.isfinite(fractions).all() and (fractions > 0).all() and (fractions <= 1).all()):
        raise InputError("fractions must lie in (0, 1]", field=f"{table}.fraction")
    return tests, fractions


def _validate_convergence(t: pa.Table) -> None:
    tests, fractions = _convergence_keys(t, "convergence")
    keys = list(zip(tests.tolist(), fractions.tolist(), strict=True))
    if len(set(keys)) != len(keys):
        raise InputError("a (test, fraction) appears twice", field="convergence.fraction",
                         fix="one row per test and fraction")


def _validate_convergence_spectra(t: pa.Table) -> None:
    tests, fractions = _convergence_keys(t, "convergence_spectra")
    f = t.column("freq_cm1").to_numpy(zero_copy_only=False)
    if t.column("intensity").null_count or np.isnan(f).any():
        raise InputError("NaN in a convergence spectrum", field="convergence_spectra.intensity")
    for key in dict.fromkeys(zip(tests.tolist(), fractions.tolist(), strict=True)):  # a handful of spectra
        sel = (tests == key[0]) & (fractions == key[1])
        if (np.diff(f[sel]) <= 0).any():
            raise InputError(f"freq_cm1 must increase within each spectrum ({key[0]} {key[1]:g} does not)",
                             field="convergence_spectra.freq_cm1")


def _validate_parity(t: pa.Table, table: str, key: tuple[str, ...]) -> None:
    """No nulls in required columns, known components, and each ``key`` at most once."""
    from ramanscreen.tasks.parity import COMPONENT_KIND, FORCE_COMPONENTS

    for name, (_, required, _) in COLUMNS[table].items():
        if required and t.column(name).null_count:
            raise InputError("missing (null/NaN) value in a required column", field=f"{table}.{name}")
    allowed = tuple(COMPONENT_KIND) if table == "alpha_parity" else FORCE_COMPONENTS
    comps = t.column("component").to_pylist()
    bad = [c for c in dict.fromkeys(comps) if c not in allowed]
    if bad:
        raise InputError(f"unknown component {bad[0]!r}", field=f"{table}.component", fix=f"use {', '.join(allowed)}")
    if table == "alpha_parity":
        kinds = t.column("kind").to_pylist()
        wrong = [(c, k) for c, k in zip(comps, kinds, strict=True) if COMPONENT_KIND[c] != k]
        if wrong:
            raise InputError(f"component {wrong[0][0]} is {COMPONENT_KIND[wrong[0][0]]}, not {wrong[0][1]}",
                             field=f"{table}.kind")
    keys = list(zip(*(t.column(k).to_pylist() for k in key), strict=True))
    if len(set(keys)) != len(keys):
        raise InputError(f"a ({', '.join(key)}) appears twice", field=f"{table}.{key[-1]}",
                         fix=f"one row per {', '.join(key)}")


def _validate_reference_spectrum(t: pa.Table) -> None:
    """No nulls in required columns, a strictly increasing grid, one series (one n_frames and
    reference_method) per run."""
    for name, (_, required, _) in COLUMNS["reference_spectrum"].items():
        if required and t.column(name).null_count:
            raise InputError("missing (null/NaN) value in a required column", field=f"reference_spectrum.{name}")
    f = np.asarray(t.column("freq_cm1").to_pylist(), dtype=float)
    if f.size > 1 and not np.all(np.diff(f) > 0):
        raise InputError("freq_cm1 is not strictly increasing (a bin twice, or two series)",
                         field="reference_spectrum.freq_cm1", fix="one row per frequency bin of one series")
    for name in ("n_frames", "reference_method"):
        if len(set(t.column(name).to_pylist())) > 1:
            raise InputError(f"more than one {name} in one run's series", field=f"reference_spectrum.{name}",
                             fix="one reference α series per run")


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """``git describe`` of the checkout this module lives in, else the package version.

    >>> isinstance(code_version(), str) and len(code_version()) > 0
    True
    """
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "describe", "--always", "--dirty", "--tags"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
        if out:
            return out
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        from importlib.metadata import version

        return f"ramanscreen {version('ramanscreen')}"
    except Exception:  # noqa: BLE001 - metadata missing in a bare checkout
        return "unknown"


def _fill_windows(meta: dict[str, Any], descriptors: Mapping[str, Any] | None) -> None:
    """Record the spectral windows of the run in its materials row when the caller did not:
    those the descriptors were computed with, else the defaults of
    :class:`ramanscreen.tasks.spectra.SpectrumSettings` (what a spectrum of this run would use)."""
    from ramanscreen.tasks.spectra import SpectrumSettings

    d = SpectrumSettings()
    defaults = {"omega_min_cm1": d.omega_min_cm1, "omega_c_cm1": d.omega_c_cm1,
                "host_low_cm1": d.host_window_cm1[0], "host_high_cm1": d.host_window_cm1[1]}
    given = dict(_as_mapping(descriptors, "descriptors")) if descriptors is not None else {}
    if not all(meta.get(k) is None for k in defaults):  # the caller chose them: all or nothing
        missing = [k for k in defaults if meta.get(k) is None]
        if missing:
            raise InputError("give all four spectral windows or none", field=f"materials.{missing[0]}",
                             fix=f"add {', '.join(missing)}")
        return
    for key, value in defaults.items():
        meta[key] = given.get(key, value)


def build_tables(
    campaign: str,
    material: str,
    run_id: str,
    *,
    meta: Mapping[str, Any],
    spectrum: Any = None,
    transport: Any = None,
    descriptors: Mapping[str, Any] | None = None,
    ml_metrics: Mapping[str, Any] | None = None,
    msd: Any = None,
    vdos: Any = None,
    mlff_validation: Sequence[Mapping[str, Any]] | None = None,
    convergence: Sequence[Mapping[str, Any]] | None = None,
    convergence_spectra: Any = None,
    alpha_parity: Any = None,
    force_parity: Any = None,
    reference_spectrum: Any = None,
    write_id: str | None = None,
) -> dict[str, pa.Table]:
    """Validate a run's results and build its Arrow tables (one per table of :data:`TABLES`), without touching disk.

    Arguments are as for :func:`write_run`. Every table gets the bookkeeping columns and the
    schema version in its metadata.

    >>> t = build_tables("c", "m", "r", meta=dict(formula="X", temperature_k=300, n_atoms=8,
    ...     mlff="f", reference_method="ref", n_train=10), descriptors={"frac_below_wc": 0.3})
    >>> t["descriptors"].column("frac_below_wc").to_pylist(), t["spectra"].num_rows
    ([0.3], 0)
    """
    for value, field in ((campaign, "campaign"), (material, "material"), (run_id, "run_id")):
        _check_name(value, field)
    write_id = write_id or uuid.uuid4().hex
    meta = dict(_as_mapping(meta, "materials"))
    if "settings" in meta:
        settings = meta.pop("settings")
        try:
            meta["settings_json"] = json.dumps(settings, sort_keys=True, default=str)
        except (TypeError, ValueError) as exc:
            raise InputError(f"settings are not JSON-serialisable: {exc}", field="materials.settings") from None
    if meta.get("code_version") is None:
        meta["code_version"] = code_version()
    _fill_windows(meta, descriptors)
    meta["pressure_gpa"] = run_pressure_gpa(_scalar_float(meta.get("pressure_gpa"), "materials.pressure_gpa"))
    if "created_at" in meta:
        raise InputError("created_at is filled in by the writer", field="materials.created_at", fix="drop it")
    for k in ("temperature_k", "n_atoms", "n_train"):
        if k in meta and meta[k] is not None:
            ok = _scalar_float(meta[k], f"materials.{k}")
            if ok is None or ok < 0 or (k == "n_atoms" and ok == 0):
                raise InputError(f"must be a positive number, got {meta[k]!r}", field=f"materials.{k}")
    meta = {k: ([os.fspath(v) if isinstance(v, os.PathLike) else v] if v is not None else None)
            for k, v in meta.items()}
    tables: dict[str, pa.Table] = {}
    mat = _build_table("materials", {**meta, "created_at": None}, n_rows=1)
    tables["materials"] = mat

    spec_cols = dict(_as_mapping(spectrum, "spectra")) if spectrum is not None else {}
    # A RamanSpectrum (or its asdict) also carries scalar metadata (dt_fs, n_frames, laser_nm, ...):
    # scalars are not per-bin columns, so they are left out; unknown *arrays* are still an error.
    spec_cols = {k: v for k, v in spec_cols.items() if k in COLUMNS["spectra"] or np.ndim(v) > 0}
    for alias, name in (("intensity_par", "intensity_parallel"), ("intensity_perp", "intensity_perpendicular")):
        if alias in spec_cols and name not in spec_cols:
            spec_cols[name] = spec_cols.pop(alias)
    if spectrum is None:
        tables["spectra"] = _empty("spectra")
    else:
        tables["spectra"] = _build_table("spectra", spec_cols)
        _validate_spectra(tables["spectra"])

    transport = _transport_rows(transport) if transport is not None else None
    msd = msd.msd_table() if hasattr(msd, "msd_table") else msd  # a TransportResult
    vdos = vdos.vdos_table() if hasattr(vdos, "vdos_table") else vdos
    if transport is None:
        tables["transport"] = _empty("transport")
    else:
        tables["transport"] = _build_table("transport", _long_columns(transport, "transport"))
        _validate_long(tables["transport"], "transport", None)

    if descriptors is None:
        tables["descriptors"] = _empty("descriptors")
    else:
        desc = dict(_as_mapping(descriptors, "descriptors"))
        vals = {k: [_scalar_float(v, f"descriptors.{k}", allow_inf=True)] for k, v in desc.items()}
        tables["descriptors"] = _build_table("descriptors", vals, n_rows=1)

    if ml_metrics is None:
        tables["ml_metrics"] = _empty("ml_metrics")
    else:
        mm = dict(_as_mapping(ml_metrics, "ml_metrics"))
        if mm.get("n_train") is None:
            mm["n_train"] = (meta.get("n_train") or [None])[0]
        # NaN (e.g. an undefined R^2) is stored as null; a *missing* required key is an error.
        # alpha_metrics gives R^2 = -inf when the reference values are constant: kept as -inf.
        vals = {k: ([v] if k == "n_train" else [_scalar_float(v, f"ml_metrics.{k}", allow_inf=True)])
                for k, v in mm.items()}
        tables["ml_metrics"] = _build_table("ml_metrics", vals, n_rows=1)

    for name, curve, x in (("msd", msd, "time_ps"), ("vdos", vdos, "freq_cm1")):
        if curve is None:
            tables[name] = _empty(name)
        else:
            tables[name] = _build_table(name, _long_columns(curve, name))
            _validate_long(tables[name], name, x)

    if not mlff_validation:
        tables["mlff_validation"] = _empty("mlff_validation")
    else:
        rows = [{k: v for k, v in _as_mapping(r, f"mlff_validation[{i}]").items() if k != "material"}
                for i, r in enumerate(mlff_validation)]  # the material is the run's key
        tables["mlff_validation"] = _build_table("mlff_validation", _long_columns(rows, "mlff_validation"))

    pressure = meta["pressure_gpa"][0]
    for name in PRESSURE_TABLES[1:]:  # every per-run row carries the run's pressure
        t = tables[name]
        given = [v for v in t.column("pressure_gpa").to_pylist() if v is not None]
        if any(not math.isclose(v, pressure, abs_tol=1e-12) for v in given):
            raise InputError(f"pressure_gpa {given[0]!r} differs from the run's {pressure!r}", field=f"{name}.pressure_gpa",
                             fix="leave it out: the writer copies materials.pressure_gpa")
        tables[name] = t.set_column(t.column_names.index("pressure_gpa"), "pressure_gpa",
                                    pa.array([pressure] * t.num_rows, type=_F))

    if not convergence:
        tables["convergence"] = _empty("convergence")
    else:
        tables["convergence"] = _build_table("convergence", _long_columns(list(convergence), "convergence"))
        _validate_convergence(tables["convergence"])
    if convergence_spectra is None:
        tables["convergence_spectra"] = _empty("convergence_spectra")
    else:
        tables["convergence_spectra"] = _build_table("convergence_spectra",
                                                     _long_columns(convergence_spectra, "convergence_spectra"))
        _validate_convergence_spectra(tables["convergence_spectra"])
    for name, rows, key in (("alpha_parity", alpha_parity, ("frame", "component")),
                            ("force_parity", force_parity, ("frame", "atom", "component"))):
        if rows is None:
            tables[name] = _empty(name)
        else:
            tables[name] = _build_table(name, _long_columns(rows, name))
            _validate_parity(tables[name], name, key)
    if reference_spectrum is None:
        tables["reference_spectrum"] = _empty("reference_spectrum")
    else:
        tables["reference_spectrum"] = _build_table("reference_spectrum",
                                                    _long_columns(reference_spectrum, "reference_spectrum"))
        _validate_reference_spectrum(tables["reference_spectrum"])

    mobile = mat.column("mobile_species")[0].as_py()
    species = set(tables["transport"].column("species").to_pylist())
    if mobile is not None and species and mobile not in species:
        raise InputError(f"mobile species {mobile!r} has no transport row (have {sorted(species)})",
                         field="materials.mobile_species", fix="add its row or fix the name")

    return {name: _with_bookkeeping(t, name, campaign, material, run_id, write_id) for name, t in tables.items()}


def _empty(table: str) -> pa.Table:
    return pa.table({k: pa.array([], type=v[0]) for k, v in COLUMNS[table].items()})


def _with_bookkeeping(t: pa.Table, name: str, campaign: str, material: str, run_id: str, write_id: str) -> pa.Table:
    n = t.num_rows
    key = {
        "campaign": pa.array([campaign] * n, type=_S),
        "material": pa.array([material] * n, type=_S),
        "run_id": pa.array([run_id] * n, type=_S),
        "write_id": pa.array([write_id] * n, type=_S),
        "schema_version": pa.array([SCHEMA_VERSION] * n, type=pa.int32()),
    }
    out = pa.table({**key, **{c: t.column(c) for c in t.column_names}})
    return out.replace_schema_metadata({
        SCHEMA_VERSION_KEY: str(SCHEMA_VERSION),
        "ramanscreen.table": name,
        "ramanscreen.write_id": write_id,
    })


# --------------------------------------------------------------------------- writing


def run_dir(results_root: str | os.PathLike[str], table: str, campaign: str, material: str, run_id: str) -> Path:
    """The partition directory holding one run's files of ``table``."""
    return Path(results_root) / table / f"campaign={campaign}" / f"material={material}" / f"run_id={run_id}"


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_parquet(table: pa.Table, path: Path) -> None:
    """Write to a hidden ``.tmp`` name (never matched by ``*.parquet`` globs), fsync, rename."""
    with atomic_write(path, "wb") as fh:
        pq.write_table(table, fh)
    _fsync_dir(path.parent)


@contextlib.contextmanager
def _run_lock(results_root: Path, campaign: str, material: str, run_id: str) -> Iterator[None]:
    import fcntl

    lock = results_root / "_locks" / f"campaign={campaign}" / f"material={material}" / f"run_id={run_id}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _check_root(results_root: str | os.PathLike[str]) -> Path:
    """The root may hold other things (caches, reports); it only has to be a directory."""
    root = Path(results_root)
    if root.exists() and not root.is_dir():
        raise InputError("results root is a file, not a directory", file=root, fix="pass a directory")
    return root


def write_run(
    results_root: str | os.PathLike[str],
    campaign: str,
    material: str,
    run_id: str,
    *,
    meta: Mapping[str, Any],
    spectrum: Any = None,
    transport: Any = None,
    descriptors: Mapping[str, Any] | None = None,
    ml_metrics: Mapping[str, Any] | None = None,
    msd: Any = None,
    vdos: Any = None,
    mlff_validation: Sequence[Mapping[str, Any]] | None = None,
    convergence: Sequence[Mapping[str, Any]] | None = None,
    convergence_spectra: Any = None,
    alpha_parity: Any = None,
    force_parity: Any = None,
    reference_spectrum: Any = None,
) -> RunRecord:
    """Write (or replace) every table of one run and commit it atomically.

    Parameters
    ----------
    meta:
        The ``materials`` row: ``formula, temperature_k, n_atoms, mlff, reference_method,
        n_train`` (required) and optionally ``mobile_species, md_dt_fs, md_equil_ps,
        md_production_ps, alpha_stride, pressure_gpa, structure, code_version`` and
        ``settings`` (any JSON-serialisable mapping, stored as ``settings_json``).
    spectrum:
        Columns ``freq_cm1, intensity`` (required), ``band_low, band_high,
        intensity_parallel, intensity_perpendicular, a2, gamma2`` (optional), as a mapping of
        equal-length arrays or an object with those attributes (e.g. ``RamanSpectrum``).
    transport:
        Per-species rows ``species, D_cm2_s`` (required), ``D_err_cm2_s, sigma_S_cm,
        alpha2_peak, vdos0``: a list of row dicts, a mapping of columns with ``species``,
        or ``{species: {column: value}}``.
    descriptors:
        ``{name: number}``, e.g. the output of ``central_peak_descriptors``. NaN is stored as null.
    ml_metrics:
        ``r2_diag, r2_offdiag, rmse_diag_A3, rmse_offdiag_A3`` (required), ``n_train``
        (defaults to ``meta["n_train"]``), and any further numeric metrics.
    msd, vdos:
        Long-format curves ``species, time_ps, msd_A2`` and ``species, freq_cm1, vdos``, as
        columns or ``{species: {"time_ps": [...], "msd_A2": [...]}}``.
    mlff_validation:
        Rows of :func:`ramanscreen.tasks.mlff.validation_rows` (a distilled potential against its
        teacher), or None (MD on the calculator itself: zero rows).
    convergence, convergence_spectra:
        The rows and the spectra of :func:`ramanscreen.tasks.convergence.convergence_study`
        (``ConvergenceResult.rows`` and ``.spectra_table()``), or None (zero rows).
    alpha_parity, force_parity:
        The columns of :func:`ramanscreen.tasks.parity.alpha_parity_rows` (the α model's test set)
        and :func:`ramanscreen.tasks.parity.force_parity_rows` (a distilled potential's held-out
        forces), or None (zero rows).
    reference_spectrum:
        The columns of :meth:`ramanscreen.tasks.convergence.ReferenceSpectrumComparison.table`
        (Fig. 2D: the ML and the reference spectrum of the same α frames), or None (zero rows).

    Omitted tables are written with zero rows, so every committed run has every file.
    """
    tables = build_tables(
        campaign, material, run_id, meta=meta, spectrum=spectrum, transport=transport,
        descriptors=descriptors, ml_metrics=ml_metrics, msd=msd, vdos=vdos, mlff_validation=mlff_validation,
        convergence=convergence, convergence_spectra=convergence_spectra, alpha_parity=alpha_parity,
        force_parity=force_parity, reference_spectrum=reference_spectrum,
    )
    root = _check_root(results_root)
    write_id = tables["materials"].column("write_id")[0].as_py()
    digest = content_digest(tables)
    paths: dict[str, Path] = {}
    with _run_lock(root, campaign, material, run_id):
        try:
            previous = committed_write_id(root, campaign, material, run_id)
        except InputError:  # a damaged commit record: this write replaces it
            previous = None
        commit = run_dir(root, "materials", campaign, material, run_id) / COMMIT_FILE
        if previous is not None and _committed_digest(commit) == digest:
            same = {name: run_dir(root, name, campaign, material, run_id) / f"{previous}.parquet" for name in DATA_TABLES}
            if all(p.is_file() for p in same.values()):  # nothing changed: write nothing
                _remove_stale(root, campaign, material, run_id, keep={previous})
                return RunRecord(campaign, material, run_id, previous, {**same, "materials": commit},
                                 {k: t.num_rows for k, t in tables.items()})
        for name in DATA_TABLES:
            path = run_dir(root, name, campaign, material, run_id) / f"{write_id}.parquet"
            _write_parquet(tables[name], path)
            paths[name] = path
        now = pa.array([_dt.datetime.now(_dt.UTC)], type=pa.timestamp("us", tz="UTC"))
        mat = tables["materials"]
        mat = mat.set_column(mat.column_names.index("created_at"), "created_at", now)
        mat = mat.replace_schema_metadata({**(mat.schema.metadata or {}), DIGEST_KEY: digest})
        _write_parquet(mat, commit)  # <- the commit
        paths["materials"] = commit
        if previous is not None and previous != write_id:
            _start_grace(root, campaign, material, run_id, previous)
        _remove_stale(root, campaign, material, run_id, keep={write_id})
    return RunRecord(campaign, material, run_id, write_id, paths, {k: t.num_rows for k, t in tables.items()})


#: Schema-metadata key of the commit record: a digest of the run's tables, bookkeeping aside.
DIGEST_KEY = "ramanscreen.content_digest"


def content_digest(tables: Mapping[str, pa.Table]) -> str:
    """SHA-256 of every table's columns and values, without ``write_id`` and ``created_at``
    (which change on every write even when nothing else does)."""
    import hashlib

    import pyarrow.ipc as ipc

    h = hashlib.sha256()
    for name in sorted(tables):
        t = tables[name]
        t = t.drop_columns([c for c in ("write_id", "created_at") if c in t.column_names]).replace_schema_metadata(None)
        sink = pa.BufferOutputStream()
        with ipc.new_stream(sink, t.schema) as w:
            w.write_table(t)
        h.update(name.encode())
        h.update(sink.getvalue().to_pybytes())
    return h.hexdigest()


def _committed_digest(commit: Path) -> str | None:
    try:
        meta = pq.read_schema(commit).metadata or {}
    except (OSError, pa.ArrowException):
        return None
    value = meta.get(DIGEST_KEY.encode())
    return value.decode() if value else None


def _start_grace(root: Path, campaign: str, material: str, run_id: str, write_id: str) -> None:
    """The version ``write_id`` was just superseded: its grace period starts now (mtime)."""
    for name in DATA_TABLES:
        p = run_dir(root, name, campaign, material, run_id) / f"{write_id}.parquet"
        with contextlib.suppress(FileNotFoundError):
            os.utime(p)


def vacuum(results_root: str | os.PathLike[str]) -> dict[str, int]:
    """Delete every superseded data file whose grace period (:data:`STALE_GRACE_S`) is over and
    every stray temporary, run by run under the writer lock; also the data files of runs that were
    never committed, once as old. Returns ``{"removed": n, "kept": m}`` (data files).

    >>> import tempfile
    >>> vacuum(tempfile.mkdtemp())
    {'removed': 0, 'kept': 0}
    """
    root = _check_root(results_root)
    before = _count_data_files(root)
    runs: set[tuple[str, str, str]] = set()
    for table in TABLES:
        for d in (root / table).glob("campaign=*/material=*/run_id=*"):
            if d.is_dir():
                runs.add((d.parent.parent.name.split("=", 1)[1], d.parent.name.split("=", 1)[1], d.name.split("=", 1)[1]))
    for campaign, material, run_id in sorted(runs):
        with _run_lock(root, campaign, material, run_id):
            try:
                current = committed_write_id(root, campaign, material, run_id)
            except InputError:
                continue  # a damaged commit record: leave its files for a re-run to replace
            _remove_stale(root, campaign, material, run_id, keep={current})
    after = _count_data_files(root)
    return {"removed": before - after, "kept": after}


def _count_data_files(root: Path) -> int:
    return sum(1 for t in DATA_TABLES for _ in (root / t).glob("campaign=*/material=*/run_id=*/*"))


def _remove_stale(root: Path, campaign: str, material: str, run_id: str, keep: set[str | None]) -> None:
    """Delete this run's data files whose write id is not in ``keep`` and that are older than
    :data:`STALE_GRACE_S` (superseded files get a fresh mtime when superseded), and stray
    temporaries (the caller holds the run lock, so no write of this run is in flight)."""
    import time

    names = {f"{k}.parquet" for k in keep if k}
    cutoff = time.time() - STALE_GRACE_S
    for name in DATA_TABLES:
        d = run_dir(root, name, campaign, material, run_id)
        if not d.is_dir():
            continue
        for p in d.iterdir():
            if p.name not in names:
                with contextlib.suppress(FileNotFoundError):
                    if p.stat().st_mtime < cutoff:
                        p.unlink()
    mdir = run_dir(root, "materials", campaign, material, run_id)
    if not mdir.is_dir():
        return
    for p in mdir.iterdir():
        if p.name != COMMIT_FILE and p.name.endswith(".tmp"):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()


def committed_write_id(results_root: str | os.PathLike[str], campaign: str, material: str, run_id: str) -> str | None:
    """The ``write_id`` of the committed version of a run, or None if it was never committed.

    The flow can use this to skip runs that are already complete.
    """
    path = run_dir(results_root, "materials", campaign, material, run_id) / COMMIT_FILE
    if not path.is_file():
        return None
    try:
        return pq.read_table(path, columns=["write_id"]).column("write_id")[0].as_py()
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"unreadable commit record: {exc}", file=path, fix="delete it and re-run that material") from None


def committed_runs(results_root: str | os.PathLike[str], campaign: str | None = None) -> list[tuple[str, str, str]]:
    """Sorted ``(campaign, material, run_id)`` of every committed run under ``results_root``."""
    base = Path(results_root) / "materials"
    pattern = f"campaign={campaign}/material=*/run_id=*/{COMMIT_FILE}" if campaign else f"campaign=*/material=*/run_id=*/{COMMIT_FILE}"
    out = []
    for p in base.glob(pattern):
        run, mat, camp = p.parent.name, p.parent.parent.name, p.parent.parent.parent.name
        out.append((camp.split("=", 1)[1], mat.split("=", 1)[1], run.split("=", 1)[1]))
    return sorted(out)


def schema_version_of(path: str | os.PathLike[str]) -> int:
    """Read the schema version from a results Parquet file's footer."""
    md = pq.read_schema(path).metadata or {}
    raw = md.get(SCHEMA_VERSION_KEY.encode())
    if raw is None:
        raise InputError("not a ramanscreen results file (no schema version)", file=path)
    return int(raw)


# --------------------------------------------------------------------------- experimental spectra

#: Imported experimental Raman spectra: a table of its own, outside the computed runs (it has
#: no ``materials`` commit record and no ``run_id``). One file per spectrum holds its bins and,
#: on every row, the spectrum's metadata; replacing that file by one atomic rename is the commit.
EXPERIMENTAL_TABLE = "experimental_spectra"
#: Key of one experimental spectrum. ``campaign`` may be null (the spectrum then joins every
#: campaign's run of the material); ``spectrum_id`` defaults to the imported file's name.
EXPERIMENTAL_KEY = ("material", "campaign", "spectrum_id")
#: Partition directory standing for "no campaign" (a campaign name cannot start with ``_``).
NO_CAMPAIGN = "_"

EXPERIMENTAL_COLUMNS: dict[str, tuple[pa.DataType, bool, str]] = {
    "freq_cm1": (_F, True, "Raman shift, cm^-1, strictly increasing"),
    "intensity": (_F, True, "measured intensity after the import's baseline and normalisation (arb. units)"),
    "formula": (_S, True, "chemical formula of the measured sample (default: the material name)"),
    "temperature_k": (_F, False, "measurement temperature, K"),
    "pressure_gpa": (_F, False, "measurement pressure, GPa"),
    "sigma_S_cm": (_F, False, "measured ionic conductivity, S/cm (null: not measured)"),
    "source": (_S, True, "where the spectrum comes from (default: the imported file's path)"),
    "file": (_S, True, "name of the imported file"),
    "file_sha256": (_S, True, "SHA-256 of the imported file"),
    "format": (_S, True, "file format: text | parquet | jcamp | spc | wdf"),
    "baseline": (_S, True, "baseline removed at import: none | poly | asls | arpls"),
    "normalisation": (_S, True, "normalisation at import: none | max | area"),
    "imported_at": (pa.timestamp("us", tz="UTC"), True, "import time (UTC, filled in)"),
}


def experimental_spectrum_id(path: str | os.PathLike[str]) -> str:
    """Default ``spectrum_id`` of an imported file: its name with characters a partition name
    cannot hold replaced by ``_``.

    >>> experimental_spectrum_id("/data/LLZO batch 3.jdx")
    'LLZO_batch_3.jdx'
    """
    name = re.sub(r"[^A-Za-z0-9._+\-]", "_", Path(path).name)[:128]
    return name if _NAME_RE.match(name) else f"s{name}"[:128]


def experimental_path(results_root: str | os.PathLike[str], material: str, campaign: str | None, spectrum_id: str) -> Path:
    """Where one experimental spectrum's file lives."""
    return (Path(results_root) / EXPERIMENTAL_TABLE / f"material={material}"
            / f"campaign={campaign or NO_CAMPAIGN}" / f"{spectrum_id}.parquet")


def write_experimental_spectrum(
    results_root: str | os.PathLike[str],
    material: str,
    *,
    freq_cm1: Any,
    intensity: Any,
    meta: Mapping[str, Any],
    campaign: str | None = None,
    spectrum_id: str,
) -> Path:
    """Store (or replace) one experimental spectrum under ``results_root`` and return its path.

    ``meta`` holds the per-spectrum columns of :data:`EXPERIMENTAL_COLUMNS` (``formula,
    source, file, file_sha256, format, baseline, normalisation`` required; ``temperature_k,
    pressure_gpa, sigma_S_cm`` optional). Everything is validated before anything is written.
    The key is :data:`EXPERIMENTAL_KEY`: importing the same file again (same key) replaces it,
    so no row is ever duplicated; another file of the material gets its own key and is added.

    >>> import tempfile
    >>> root = tempfile.mkdtemp()
    >>> m = dict(formula="AgI", source="lab", file="a.csv", file_sha256="0" * 64, format="text",
    ...          baseline="none", normalisation="max", sigma_S_cm=1.0)
    >>> p = write_experimental_spectrum(root, "AgI", freq_cm1=[10.0, 20.0], intensity=[1.0, 0.5],
    ...                                 meta=m, spectrum_id="a.csv")
    >>> p = write_experimental_spectrum(root, "AgI", freq_cm1=[10.0, 20.0], intensity=[1.0, 0.5],
    ...                                 meta=m, spectrum_id="a.csv")   # re-import: replaces
    >>> pq.read_table(p).num_rows, p.relative_to(root).as_posix()
    (2, 'experimental_spectra/material=AgI/campaign=_/a.csv.parquet')
    """
    _check_name(material, "--material")
    if campaign is not None:
        _check_name(campaign, "--campaign")
    _check_name(spectrum_id, "--spectrum-id")
    meta = dict(meta)
    unknown = [k for k in meta if k not in EXPERIMENTAL_COLUMNS or k in ("freq_cm1", "intensity", "imported_at")]
    if unknown:
        raise InputError(f"unknown column {unknown[0]!r}", field=f"{EXPERIMENTAL_TABLE}.{unknown[0]}",
                         fix=f"use {', '.join(k for k in EXPERIMENTAL_COLUMNS if k not in ('freq_cm1', 'intensity'))}")
    freq = _float_array(freq_cm1, f"{EXPERIMENTAL_TABLE}.freq_cm1").ravel()
    inten = _float_array(intensity, f"{EXPERIMENTAL_TABLE}.intensity").ravel()
    if len(freq) < 2 or len(freq) != len(inten):
        raise InputError(f"need two or more bins and one intensity per bin (have {len(freq)}, {len(inten)})",
                         field=f"{EXPERIMENTAL_TABLE}.freq_cm1")
    if not (np.isfinite(freq).all() and np.isfinite(inten).all()) or (np.diff(freq) <= 0).any():
        raise InputError("frequencies must be finite and strictly increasing, intensities finite",
                         field=f"{EXPERIMENTAL_TABLE}.freq_cm1", fix="repair the spectrum")
    for k in ("temperature_k", "pressure_gpa", "sigma_S_cm"):
        meta[k] = _scalar_float(meta.get(k), f"--{k.replace('_', '-').lower()}")
        if meta[k] is not None and k != "pressure_gpa" and meta[k] <= 0:
            raise InputError(f"must be positive, got {meta[k]:g}", field=f"--{k.replace('_', '-').lower()}")
    n = len(freq)
    write_id = uuid.uuid4().hex
    now = _dt.datetime.now(_dt.UTC)
    arrays: dict[str, pa.Array] = {
        "campaign": pa.array([campaign] * n, type=_S),
        "material": pa.array([material] * n, type=_S),
        "spectrum_id": pa.array([spectrum_id] * n, type=_S),
        "write_id": pa.array([write_id] * n, type=_S),
        "schema_version": pa.array([SCHEMA_VERSION] * n, type=pa.int32()),
        "freq_cm1": pa.array(freq, type=_F),
        "intensity": pa.array(inten, type=_F),
    }
    for k, (dtype, required, _) in EXPERIMENTAL_COLUMNS.items():
        if k in arrays:
            continue
        v = now if k == "imported_at" else meta.get(k)
        if v is None and required:
            raise InputError("required column missing", field=f"{EXPERIMENTAL_TABLE}.{k}")
        if dtype == _S and v is not None and (not isinstance(v, str) or not v):
            raise InputError(f"expected a non-empty string, got {v!r}", field=f"{EXPERIMENTAL_TABLE}.{k}")
        arrays[k] = pa.array([v] * n, type=dtype)
    table = pa.table(arrays).replace_schema_metadata({
        SCHEMA_VERSION_KEY: str(SCHEMA_VERSION), "ramanscreen.table": EXPERIMENTAL_TABLE,
        "ramanscreen.write_id": write_id, "provenance": "experimental spectrum (imported), not computed"})
    root = _check_root(results_root)
    path = experimental_path(root, material, campaign, spectrum_id)
    lock = root / "_locks" / path.relative_to(root).with_suffix(".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    import fcntl

    with open(lock, "a+") as fh:  # two imports of the same key serialize
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            _write_parquet(table, path)  # <- the commit: one rename replaces the previous version
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    return path


def experimental_spectra_files(results_root: str | os.PathLike[str]) -> list[Path]:
    """Sorted paths of every stored experimental spectrum (temporaries never match)."""
    base = Path(results_root) / EXPERIMENTAL_TABLE
    return sorted(base.glob("material=*/campaign=*/*.parquet"))
