"""Training data for a distilled potential: teacher MD at the campaign's T (and P), plus
rattled and strained frames, all labelled by the teacher; or a labelled extxyz the user brings.

The teacher is any calculator spec :func:`ramanscreen.tasks.md.get_calculator` knows
(``"chgnet"`` by default, ``"sevenn"``, ``"ase:module:Class"``), or ``"file"``: labelled
frames (energy, forces and optionally stress, e.g. DFT or a VASP MLFF) read with
:func:`read_labelled`; such a set cannot be extended, so on-the-fly refinement is off for it.

The teacher MD is a normal :func:`ramanscreen.tasks.md.run_md` run (resumable, the project's
trajectory format); its last ``holdout_fraction`` in time is held out for validation, and it
doubles as the short teacher run that validation compares D and VDOS with.

>>> TrainingSettings(temperature_k=500, md_steps=400, sample_every=4).n_md_frames
101
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.calculators.singlepoint import SinglePointCalculator

from ramanscreen.tasks.common import InputError, atomic_path
from ramanscreen.tasks.mlff.engine import write_json

#: The teacher name for labelled frames read from a file.
FILE_TEACHER = "file"


@dataclass(frozen=True)
class TrainingSettings:
    """How the training set is made. Times in fs, T in K, P in GPa, lengths in Å.

    ``pressure_gpa`` set: the teacher MD runs NPT (isotropic MTK) at that pressure; else NVT.
    """

    teacher: str = "chgnet"
    teacher_kwargs: Mapping[str, Any] = field(default_factory=dict)
    temperature_k: float = 300.0
    pressure_gpa: float | None = None
    dt_fs: float = 2.0
    #: 100 + 200 steps, every 2nd kept: 101 MD frames. Measured (docs/md.md, "How long a teacher
    #: run"): on a common later test set the held-out force RMSE of 600 steps every 5th is within
    #: 0.005 eV/Å of this for α-AgI and Na₃SbS₄, at 2.6× fewer teacher calls (324 against 845).
    equil_steps: int = 100
    md_steps: int = 200
    #: Keep (and label) every k-th MD step.
    sample_every: int = 2
    #: The last fraction of the teacher MD (in time) is held out for validation.
    holdout_fraction: float = 0.25
    #: Extra frames: MD frames displaced by a Gaussian of ``rattle_A`` per component ...
    n_rattled: int = 12
    rattle_A: float = 0.06
    #: ... and strained by up to ``strain_max`` (symmetric, each component uniform in ±).
    n_strained: int = 12
    strain_max: float = 0.03
    seed: int = 0
    num_threads: int | None = None

    @property
    def n_md_frames(self) -> int:
        return self.md_steps // self.sample_every + 1

    @property
    def is_file(self) -> bool:
        return self.teacher == FILE_TEACHER

    def validate(self) -> None:
        if not isinstance(self.teacher, str) or not self.teacher:
            raise InputError("teacher must be a calculator spec", field="teacher", fix="chgnet, sevenn or ase:module:Class")
        t = self.temperature_k
        if not (isinstance(t, (int, float)) and math.isfinite(t) and t > 0):
            raise InputError(f"must be a positive number of kelvin, got {t!r}", field="temperature_k",
                             fix="e.g. --temperature-k 300")
        if not (isinstance(self.dt_fs, (int, float)) and math.isfinite(self.dt_fs) and self.dt_fs > 0):
            raise InputError(f"time step must be positive, got {self.dt_fs!r}", field="dt_fs", fix="e.g. --dt-fs 2")
        for name, low in (("md_steps", 1), ("equil_steps", 0), ("sample_every", 1), ("n_rattled", 0), ("n_strained", 0)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise InputError(f"must be an integer >= {low}, got {v!r}", field=name)
        if not 0 < self.holdout_fraction < 1:
            raise InputError(f"must lie strictly between 0 and 1, got {self.holdout_fraction!r}", field="holdout_fraction")
        if self.n_md_frames < 4:
            raise InputError(f"the teacher MD gives only {self.n_md_frames} frames", field="md_steps",
                             fix="raise md_steps or lower sample_every")
        if self.pressure_gpa is not None and not math.isfinite(self.pressure_gpa):
            raise InputError("pressure must be finite", field="pressure_gpa")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["teacher_kwargs"] = dict(self.teacher_kwargs)
        return d

    def fingerprint(self) -> str:
        d = self.to_dict()
        d.pop("num_threads")
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class TrainingData:
    """Labelled frames: ``train`` (fit), ``holdout`` (validation), and where they came from."""

    train: list[Atoms]
    holdout: list[Atoms]
    teacher: dict[str, Any]
    teacher_traj: Path | None = None
    sources: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {"n_train": len(self.train), "n_holdout": len(self.holdout), "sources": dict(self.sources),
                "teacher_traj": None if self.teacher_traj is None else str(self.teacher_traj)}


def teacher_calculator(settings: TrainingSettings, *, stress: bool = True) -> Calculator:
    """The teacher as an ASE calculator (energy, forces and stress)."""
    from ramanscreen.tasks.md import get_calculator

    if settings.is_file:
        raise InputError("a teacher read from a file cannot label new frames", field="teacher",
                         fix="give a calculator teacher (chgnet, sevenn, ase:module:Class) to refine on the fly")
    props = ("energy", "forces", "stress") if stress else ("energy", "forces")
    return get_calculator(settings.teacher, properties=props, num_threads=settings.num_threads,
                          **dict(settings.teacher_kwargs))


def teacher_name(spec: str) -> str:
    """The short teacher name a distilled potential is labelled with.

    >>> teacher_name("chgnet"), teacher_name("ase:ase.calculators.emt:EMT")
    ('chgnet', 'emt')
    """
    return spec.split(":")[-1].lower() if spec.startswith("ase:") else spec


def teacher_info(calc: Calculator | None, settings: TrainingSettings, source: str | None = None) -> dict[str, Any]:
    info = dict(getattr(calc, "ramanscreen_info", {}) or {}) if calc is not None else {}
    name = FILE_TEACHER if settings.is_file else teacher_name(settings.teacher)
    return {"name": name, "spec": settings.teacher, "kwargs": dict(settings.teacher_kwargs),
            "model": info.get("model"), "model_version": info.get("model_version"), "source": source}


def _bare(a: Atoms, tag: str | None) -> Atoms:
    """A frame's species, positions and cell, its scalar info, and ``source = tag``: what a
    labelled frame carries besides its labels."""
    b = Atoms(numbers=a.numbers, positions=a.positions, cell=a.cell.array, pbc=a.pbc)
    b.info = {k: v for k, v in a.info.items() if isinstance(v, (int, float, str))}
    if tag:
        b.info["source"] = tag
    return b


def label_frames(frames: Sequence[Atoms], calc: Calculator, *, stress: bool = True,
                 tag: str | None = None) -> list[Atoms]:
    """Copies of ``frames`` carrying the teacher's energy, forces (and stress) as a SinglePointCalculator."""
    out = []
    for a in frames:
        b = _bare(a, tag)
        b.calc = calc
        e = float(b.get_potential_energy())
        f = np.array(b.get_forces(), float)
        s = np.array(b.get_stress(), float) if stress else None
        if not (np.isfinite(e) and np.isfinite(f).all()):
            raise InputError("the teacher returned non-finite energy or forces", field="teacher",
                             fix="check the structure and the teacher model")
        b.calc = SinglePointCalculator(b, energy=e, forces=f, **({"stress": s} if s is not None else {}))
        out.append(b)
    return out


def md_labelled(frames: Sequence[Atoms], calc: Calculator, *, tag: str) -> list[Atoms]:
    """MD frames as labelled frames: the labels the run stored with each frame (energy and forces,
    stress when its integrator computed it), else labelled by ``calc`` (frames of a trajectory
    written without labels).

    >>> from ase.build import bulk
    >>> from ase.calculators.emt import EMT
    >>> from ase.calculators.singlepoint import SinglePointCalculator
    >>> a = bulk("Cu", cubic=True)
    >>> a.calc = SinglePointCalculator(a, energy=-1.0, forces=np.zeros((4, 3)))
    >>> b = bulk("Cu", cubic=True)
    >>> [round(x.get_potential_energy(), 3) for x in md_labelled([a, b], EMT(), tag="md")]
    [-1.0, -0.023]
    """
    out = []
    for a in frames:
        res = getattr(a.calc, "results", {}) if a.calc is not None else {}
        if "energy" in res and "forces" in res:
            if not (np.isfinite(res["energy"]) and np.isfinite(res["forces"]).all()):
                raise InputError("the teacher MD stored non-finite energy or forces", field="teacher",
                                 fix="check the structure and the teacher model")
            b = _bare(a, tag)
            b.calc = SinglePointCalculator(b, **{k: res[k] for k in ("energy", "forces", "stress") if k in res})
            out.append(b)
        else:
            out.extend(label_frames([a], calc, tag=tag))
    return out


def rattled(frames: Sequence[Atoms], n: int, sigma_A: float, rng: np.random.Generator) -> list[Atoms]:
    """``n`` copies of randomly chosen frames with Gaussian displacements (σ = ``sigma_A`` per component)."""
    out = []
    for k in rng.choice(len(frames), size=n, replace=True) if n else []:
        b = frames[int(k)].copy()
        b.calc = None
        b.positions += rng.normal(0.0, sigma_A, b.positions.shape)
        out.append(b)
    return out


def strained(frames: Sequence[Atoms], n: int, strain_max: float, sigma_A: float,
             rng: np.random.Generator) -> list[Atoms]:
    """``n`` copies under a random symmetric strain (components in ±``strain_max``), lightly rattled."""
    out = []
    for k in rng.choice(len(frames), size=n, replace=True) if n else []:
        b = frames[int(k)].copy()
        b.calc = None
        eps = rng.uniform(-strain_max, strain_max, (3, 3))
        eps = 0.5 * (eps + eps.T)
        b.set_cell(b.cell.array @ (np.eye(3) + eps), scale_atoms=True)
        b.positions += rng.normal(0.0, 0.5 * sigma_A, b.positions.shape)
        out.append(b)
    return out


def read_labelled(path: str | os.PathLike[str], *, index: str = ":") -> list[Atoms]:
    """Labelled frames (energy, forces, optional stress) from extxyz, OUTCAR, vasprun.xml, ..."""
    from ase.io import read

    from ramanscreen.tasks.mlff.snap import labels

    path = Path(path)
    if not path.is_file():
        raise InputError("no such file", file=path, field="training", fix="give an extxyz with energy and forces")
    try:
        frames = read(path, index=index)
    except Exception as exc:  # noqa: BLE001 - ASE raises many types for a bad file
        raise InputError(f"cannot read labelled frames ({' '.join(str(exc).split())[:160]})", file=path,
                         field="training", fix="give an extxyz with energy and forces per frame") from None
    frames = frames if isinstance(frames, list) else [frames]
    if not frames:
        raise InputError("no frames", file=path, field="training", fix="give at least a few labelled frames")
    for k, a in enumerate(frames):
        try:
            labels(a)
        except InputError:
            raise InputError(f"frame {k} has no energy or forces", file=path, field="training",
                             fix="write energy=… in the comment line and a forces column (extxyz)") from None
        if not all(a.pbc):
            raise InputError(f"frame {k} is not periodic", file=path, field="training", fix="give bulk frames with a cell")
    return frames


def write_labelled(frames: Sequence[Atoms], path: str | os.PathLike[str]) -> Path:
    """Write labelled frames as extxyz, atomically."""
    from ase.io import write

    path = Path(path)
    with atomic_path(path) as tmp:
        write(tmp, list(frames), format="extxyz")
    return path


def split_holdout(frames: Sequence[Atoms], fraction: float) -> tuple[list[Atoms], list[Atoms]]:
    """Last ``fraction`` of the frames (in order) held out; at least one each side."""
    n = len(frames)
    if n < 2:
        raise InputError(f"need at least 2 labelled frames, got {n}", field="training", fix="give more frames")
    k = min(max(int(round(n * fraction)), 1), n - 1)
    return list(frames[: n - k]), list(frames[n - k:])


def structure_key(atoms: Atoms) -> str:
    """A hash of the starting structure (species, positions, cell to 1e-6 Å): a training set made
    from another structure in the same directory is never reused for this one.

    >>> from ase.build import bulk
    >>> a = bulk("Cu", cubic=True)
    >>> b = a.copy(); b.positions[0, 0] += 0.01
    >>> structure_key(a) == structure_key(a.copy()), structure_key(a) == structure_key(b)
    (True, False)
    """
    h = hashlib.sha256(np.asarray(atoms.numbers, dtype=np.int64).tobytes())
    for arr in (atoms.positions, atoms.cell.array):
        h.update(np.round(np.asarray(arr, float), 6).tobytes())
    return h.hexdigest()[:16]


def generate_training_data(
    atoms: Atoms,
    settings: TrainingSettings,
    workdir: str | os.PathLike[str],
    *,
    calculator: Calculator | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> TrainingData:
    """Teacher MD (resumable, in ``workdir/teacher_md``), then labels, rattled and strained frames.

    The labelled sets are written to ``workdir/train.extxyz`` and ``workdir/holdout.extxyz``
    with a ``workdir/training.json`` manifest; a second call with the same settings reads them back.
    """
    from ase.io import read

    from ramanscreen.tasks.md import MDSettings, run_md

    settings.validate()
    workdir = Path(workdir)
    manifest = workdir / "training.json"
    train_path, hold_path = workdir / "train.extxyz", workdir / "holdout.extxyz"
    if manifest.is_file() and train_path.is_file() and hold_path.is_file():
        doc = json.loads(manifest.read_text())
        if doc.get("fingerprint") == settings.fingerprint() and doc.get("structure") == structure_key(atoms):
            return TrainingData(train=list(read(train_path, ":")), holdout=list(read(hold_path, ":")),
                                teacher=doc["teacher"],
                                teacher_traj=Path(doc["teacher_traj"]) if doc.get("teacher_traj") else None,
                                sources=doc["sources"])
    calc = calculator or teacher_calculator(settings)
    npt = settings.pressure_gpa is not None
    md = MDSettings(temperature_k=settings.temperature_k, dt_fs=settings.dt_fs, steps=settings.md_steps,
                    equil_steps=settings.equil_steps, ensemble="npt" if npt else "nvt-nhc",
                    pressure_gpa=settings.pressure_gpa or 0.0, write_every=settings.sample_every,
                    checkpoint_every=max(settings.sample_every, 50), seed=settings.seed, calculator=settings.teacher,
                    calculator_kwargs=dict(settings.teacher_kwargs), num_threads=settings.num_threads,
                    store_labels=True)
    res = run_md(atoms, md, workdir / "teacher_md", calculator=calc, progress=progress)
    md_frames = list(read(res.traj_path, ":"))
    pool, held = split_holdout(md_frames, settings.holdout_fraction)
    rng = np.random.default_rng(settings.seed + 1)
    extra = rattled(pool, settings.n_rattled, settings.rattle_A, rng)
    extra_s = strained(pool, settings.n_strained, settings.strain_max, settings.rattle_A, rng)
    # the MD frames carry the teacher's energy and forces from the run itself (and its stress
    # under NPT): labelling them again would add ~100 teacher calls to the ~325 of a distillation
    train = (md_labelled(pool, calc, tag="md") + label_frames(extra, calc, tag="rattled")
             + label_frames(extra_s, calc, tag="strained"))
    holdout = md_labelled(held, calc, tag="md-holdout")
    info = teacher_info(calc, settings)
    sources = {"md": len(pool), "rattled": len(extra), "strained": len(extra_s), "holdout": len(holdout)}
    write_labelled(train, train_path)
    write_labelled(holdout, hold_path)
    write_json(manifest, {"fingerprint": settings.fingerprint(), "settings": settings.to_dict(), "n_atoms": len(atoms),
                           "structure": structure_key(atoms),
                           "teacher": info, "teacher_traj": str(res.traj_path), "sources": sources})
    return TrainingData(train=train, holdout=holdout, teacher=info, teacher_traj=res.traj_path, sources=sources)


def training_from_file(path: str | os.PathLike[str], settings: TrainingSettings) -> TrainingData:
    """A user's labelled frames as training data (the last ``holdout_fraction`` held out)."""
    frames = read_labelled(path)
    train, holdout = split_holdout(frames, settings.holdout_fraction)
    info = teacher_info(None, settings, source=str(path))
    return TrainingData(train=train, holdout=holdout, teacher=info, teacher_traj=None,
                        sources={"file": len(train), "holdout": len(holdout)})


__all__ = ["FILE_TEACHER", "TrainingData", "TrainingSettings", "generate_training_data", "label_frames", "md_labelled",
           "rattled", "read_labelled", "split_holdout", "strained", "structure_key", "teacher_calculator", "teacher_info",
           "training_from_file", "write_labelled"]
