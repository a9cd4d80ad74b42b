"""Distilled, material-specific force fields: a SNAP fitted to a teacher, run in LAMMPS.

The teacher is CHGNet by default, any ASE calculator (``ase:module:Class``), or labelled
frames a user brings (DFT, a VASP MLFF). Everything a distilled potential produces is
labelled :func:`method_label` (``snap-distilled-from-<teacher> (not DFT)``).

The calls a campaign flow makes (plain functions and small dataclass settings, no Prefect):

* :func:`distil` (:class:`DistilSettings` = :class:`TrainingSettings` + :class:`SnapSettings`
  + :class:`RefineSettings`) → :class:`DistilResult` with the written :class:`SnapPotential`;
* :func:`run_lammps_md` (:class:`LammpsMDSettings`) → :class:`ramanscreen.tasks.md.MDResult`,
  the same trajectory + sidecar as :func:`ramanscreen.tasks.md.run_md`; pass
  ``refiner=result.refiner(dir)`` for on-the-fly refinement;
* :func:`compare_dynamics` and :func:`validation_rows` → rows of the ``mlff_validation`` table
  (:func:`write_validation_table`); :data:`FORCE_RMSE_LIMIT_EV_A` is the flagging threshold.
"""

from ramanscreen.tasks.mlff.data import TrainingData, TrainingSettings, read_labelled
from ramanscreen.tasks.mlff.distil import DistilResult, DistilSettings, distil, load_distilled, start_structure
from ramanscreen.tasks.mlff.lammps_md import LammpsMDSettings, run_lammps_md
from ramanscreen.tasks.mlff.refine import Refiner, RefineSettings
from ramanscreen.tasks.mlff.snap import FORCE_RMSE_LIMIT_EV_A, SnapPotential, SnapSettings, error_stats, method_label
from ramanscreen.tasks.mlff.validate import (
    VALIDATION_COLUMNS,
    compare_dynamics,
    validation_rows,
    write_validation_table,
)

__all__ = [
    "FORCE_RMSE_LIMIT_EV_A", "VALIDATION_COLUMNS", "DistilResult", "DistilSettings", "LammpsMDSettings",
    "RefineSettings", "Refiner", "SnapPotential", "SnapSettings", "TrainingData", "TrainingSettings",
    "compare_dynamics", "distil", "error_stats", "load_distilled", "method_label", "read_labelled",
    "run_lammps_md", "start_structure", "validation_rows", "write_validation_table",
]
