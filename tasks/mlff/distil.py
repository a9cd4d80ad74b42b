"""Distillation: training data from the teacher, a SNAP fit, its errors, written to a directory.

One call, resumable (the teacher MD and the labelled sets are kept), and a small settings
"maker" the campaign flow can fill from its ``[mlff]`` section:

>>> s = DistilSettings(training=TrainingSettings(temperature_k=500, dt_fs=10))
>>> s.training.teacher, s.snap.twojmax, s.refine.max_rounds
('chgnet', 6, 3)

Directory layout (``workdir``)::

    teacher_md/md.traj, md.json     teacher MD at T (and P): training pool + held-out tail
    train.extxyz, holdout.extxyz    labelled frames (teacher energy, forces, stress)
    training.json                   manifest (settings fingerprint, teacher, sources)
    potential/<Els>.snap.*          the fitted potential (.snapcoeff, .snapparam, .lmp, .json)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ase import Atoms
from ase.calculators.calculator import Calculator

from ramanscreen.tasks.common import InputError
from ramanscreen.tasks.mlff.data import (
    TrainingData,
    TrainingSettings,
    generate_training_data,
    structure_key,
    teacher_calculator,
    training_from_file,
)
from ramanscreen.tasks.mlff.engine import lammps_version
from ramanscreen.tasks.mlff.refine import Refiner, RefineSettings
from ramanscreen.tasks.mlff.snap import (
    FORCE_RMSE_LIMIT_EV_A,
    FrameRows,
    SnapPotential,
    SnapSettings,
    error_stats,
    fit_snap,
)

if TYPE_CHECKING:
    from ramanscreen.tasks.md import MDSettings, MLFFSettings

#: A cheaper band limit is taken when its held-out force RMSE is at most this fraction of the limit.
SELECT_MARGIN = 0.9


@dataclass(frozen=True)
class DistilSettings:
    """Everything a distillation needs: training data, SNAP fit, on-the-fly refinement.

    ``try_twojmax``: smaller band limits fitted first; the first whose held-out force RMSE is at
    most :data:`SELECT_MARGIN` × the limit is kept (it is ~3× faster per step than twojmax 6),
    else ``snap`` itself. ``()``: fit ``snap`` only.
    """

    training: TrainingSettings = field(default_factory=TrainingSettings)
    snap: SnapSettings = field(default_factory=SnapSettings)
    refine: RefineSettings = field(default_factory=RefineSettings)
    #: A labelled extxyz (DFT, a VASP MLFF) to fit instead of running the teacher.
    training_file: str | None = None
    try_twojmax: tuple[int, ...] = (4,)

    def validate(self) -> None:
        for j in self.try_twojmax:
            if not isinstance(j, int) or j < 2 or j > 12 or j % 2:
                raise InputError(f"twojmax candidates must be even integers 2..12, got {j!r}", field="try_twojmax")
        self.training.validate()
        self.snap.validate()
        self.refine.validate()

    def to_dict(self) -> dict[str, Any]:
        return {"training": self.training.to_dict(), "snap": self.snap.to_dict(), "refine": self.refine.to_dict(),
                "training_file": self.training_file, "try_twojmax": list(self.try_twojmax)}

    @classmethod
    def for_run(cls, mlff: MLFFSettings, md: MDSettings) -> DistilSettings:
        """The distillation a campaign asks for: ``mlff.calculator`` as the teacher at the run's T,
        time step, seed and (when the run holds it, :attr:`MDSettings.controls_pressure`) P; the
        ``[mlff]`` keys left unset keep the defaults of :class:`TrainingSettings` and
        :class:`RefineSettings`.

        >>> from ramanscreen.tasks.md import MDSettings, MLFFSettings
        >>> s = DistilSettings.for_run(MLFFSettings(distil=True, teacher_steps=300), MDSettings(temperature_k=900))
        >>> s.training.md_steps, s.training.pressure_gpa, s.refine.max_rounds
        (300, 0.0, 3)
        """
        given = {"md_steps": mlff.teacher_steps, "equil_steps": mlff.teacher_equil_steps}
        training = TrainingSettings(teacher=mlff.calculator, teacher_kwargs=dict(mlff.options),
                                    temperature_k=md.temperature_k, dt_fs=md.dt_fs, seed=md.seed,
                                    pressure_gpa=md.pressure_gpa if md.controls_pressure else None,
                                    num_threads=md.num_threads, **{k: v for k, v in given.items() if v is not None})
        refine = RefineSettings(**({} if mlff.refine_rounds is None else {"max_rounds": mlff.refine_rounds}))
        return cls(training=training, refine=refine)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DistilSettings:
        """The inverse of :meth:`to_dict` (plain data: a flow's task input).

        >>> s = DistilSettings(try_twojmax=(4,))
        >>> DistilSettings.from_dict(s.to_dict()) == s
        True
        """
        return cls(training=TrainingSettings(**d["training"]), snap=SnapSettings(**d["snap"]),
                   refine=RefineSettings(**d["refine"]), training_file=d.get("training_file"),
                   try_twojmax=tuple(d.get("try_twojmax", ())))

    def fingerprint(self) -> str:
        d = self.to_dict()
        d["training"].pop("num_threads", None)
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class DistilResult:
    """A fitted potential, the data it was fitted on, and (for reuse) the descriptor rows."""

    potential: SnapPotential
    data: TrainingData
    workdir: Path
    train_rows: list[FrameRows] | None = None
    teacher: Calculator | None = None
    refine_settings: RefineSettings | None = None

    def refiner(self, workdir: str | os.PathLike[str], settings: RefineSettings | None = None) -> Refiner:
        """A :class:`Refiner` for a production run (teacher loaded once, rows reused)."""
        teacher = self.teacher
        if teacher is None and self.data.teacher.get("name") != "file":
            ts = TrainingSettings(**self.potential.info["training_settings"])
            teacher = self.teacher = teacher_calculator(ts)
        return Refiner(self.potential, self.data.train, self.data.holdout, teacher, settings or self.refine_settings,
                       workdir=workdir, train_rows=self.train_rows)


def distil(
    atoms: Atoms | None,
    settings: DistilSettings,
    workdir: str | os.PathLike[str],
    *,
    calculator: Calculator | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> DistilResult:
    """Make training data (or read ``settings.training_file``), fit the SNAP, write it.

    A second call with the same settings returns the written potential without refitting.
    ``calculator``: an already-built teacher (else ``settings.training.teacher`` is loaded).
    """
    settings.validate()
    workdir = Path(workdir)
    pot_dir = workdir / "potential"
    ts = settings.training
    if settings.training_file is None and ts.is_file:
        raise InputError("teacher 'file' needs a labelled training file", field="training_file",
                         fix="give --training FILE.extxyz, or a calculator teacher")
    if settings.training_file is None and atoms is None:
        raise InputError("a structure is needed to run the teacher MD", field="structure")
    done = sorted(pot_dir.glob("*.snap.json"))
    if len(done) == 1:
        pot = SnapPotential.load(done[0])
        same_start = atoms is None or pot.info.get("structure_key") == structure_key(atoms)
        if pot.info.get("distil_fingerprint") == settings.fingerprint() and same_start:
            data = (training_from_file(settings.training_file, ts) if settings.training_file else
                    generate_training_data(atoms, ts, workdir, calculator=calculator))
            return DistilResult(potential=pot, data=data, workdir=workdir, teacher=calculator,
                                refine_settings=settings.refine)
    t0 = time.perf_counter()
    if atoms is not None:
        from ramanscreen.tasks.mlff.data import write_labelled

        start = atoms.copy()
        start.calc = None
        write_labelled([start], workdir / "start.extxyz")
    if settings.training_file is not None:
        data = training_from_file(settings.training_file, dataclasses.replace(ts, teacher="file"))
        teacher = None
    else:
        teacher = calculator or teacher_calculator(ts)
        data = generate_training_data(atoms, ts, workdir, calculator=teacher, progress=progress)
    t_data = time.perf_counter() - t0
    info = {"teacher": data.teacher, "training": data.summary(), "training_settings": ts.to_dict(),
            "temperature_k": ts.temperature_k, "pressure_gpa": ts.pressure_gpa,
            "lammps_version": lammps_version(), "distil_fingerprint": settings.fingerprint(),
            "structure_key": None if atoms is None else structure_key(atoms),
            "material": None if atoms is None else atoms.info.get("material"),
            "formula": None if atoms is None else atoms.get_chemical_formula(),
            "data_time_s": t_data}
    # the cheapest model first: a smaller band limit that already meets the criterion on the
    # held-out frames (with a margin) is ~3x faster per MD step
    candidates = [dataclasses.replace(settings.snap, twojmax=j) for j in settings.try_twojmax
                  if j < settings.snap.twojmax] + [settings.snap]
    tried = []
    for k, snap in enumerate(candidates):
        fit = fit_snap(data.train, snap, info=info)
        pot = fit.potential
        hold_err = error_stats(pot, data.holdout)
        tried.append({"twojmax": snap.twojmax, "quadratic": snap.quadratic, "cutoff_A": snap.cutoff_A,
                      "pair_cutoff_A": snap.pair_cutoff_A,
                      "holdout_force_rmse_eV_A": hold_err.force_rmse_eV_A})
        if hold_err.force_rmse_eV_A <= SELECT_MARGIN * FORCE_RMSE_LIMIT_EV_A or k == len(candidates) - 1:
            break
    pot.info["model_selection"] = {"tried": tried, "rule": f"first with held-out force RMSE <= "
                                   f"{SELECT_MARGIN} x {FORCE_RMSE_LIMIT_EV_A} eV/Å, else the last"}
    train_err = error_stats(pot, data.train, rows=fit.rows)
    pot.info["train_errors"] = train_err.to_dict()
    pot.info["holdout_errors"] = hold_err.to_dict()
    pot.info["force_rmse_limit_eV_A"] = FORCE_RMSE_LIMIT_EV_A
    pot.info["flagged"] = bool(hold_err.force_rmse_eV_A > FORCE_RMSE_LIMIT_EV_A)
    pot.info["distil_time_s"] = time.perf_counter() - t0
    for old in done:
        old.unlink()
    pot.write(pot_dir)
    return DistilResult(potential=pot, data=data, workdir=workdir, train_rows=fit.rows, teacher=teacher,
                        refine_settings=settings.refine)


def load_distilled(workdir: str | os.PathLike[str], *, potential: str | os.PathLike[str] | None = None) -> DistilResult:
    """A distillation directory read back: its potential (or ``potential``), training and
    held-out frames, teacher (loaded lazily by :meth:`DistilResult.refiner`)."""
    from ase.io import read

    workdir = Path(workdir)
    if not workdir.is_dir():
        raise InputError("no such distillation directory", file=workdir, fix="give the --out-dir of ramanscreen mlff fit")
    pot = SnapPotential.load(potential if potential is not None else workdir / "potential")
    missing = [p for p in ("train.extxyz", "holdout.extxyz") if not (workdir / p).is_file()]
    if missing:
        raise InputError(f"{', '.join(missing)} missing", file=workdir, fix="rerun ramanscreen mlff fit into it")
    doc = {}
    if (workdir / "training.json").is_file():
        doc = json.loads((workdir / "training.json").read_text())
    data = TrainingData(train=list(read(workdir / "train.extxyz", ":")),
                        holdout=list(read(workdir / "holdout.extxyz", ":")),
                        teacher=pot.info.get("teacher") or doc.get("teacher") or {},
                        teacher_traj=Path(doc["teacher_traj"]) if doc.get("teacher_traj") else None,
                        sources=doc.get("sources", {}))
    return DistilResult(potential=pot, data=data, workdir=workdir)


def start_structure(workdir: str | os.PathLike[str]) -> Atoms:
    """The structure a distillation started its teacher MD from."""
    from ase.io import read

    path = Path(workdir) / "start.extxyz"
    if not path.is_file():
        raise InputError("the distillation directory has no start structure", file=path,
                         fix="give the structure explicitly")
    atoms = read(path)
    assert isinstance(atoms, Atoms)
    return atoms


__all__ = ["SELECT_MARGIN", "DistilResult", "DistilSettings", "distil", "load_distilled", "start_structure"]
