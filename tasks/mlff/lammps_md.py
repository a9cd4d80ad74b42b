"""Production MD of a distilled SNAP inside LAMMPS, driven through its Python API.

No Python runs per MD step: LAMMPS integrates chunks of ``checkpoint_every`` steps (``run N``)
and dumps a frame every ``write_every`` steps; between chunks Python appends the chunk's
frames to the trajectory, checks the extrapolation measure (and refits, see
:mod:`ramanscreen.tasks.mlff.refine`), and writes a checkpoint.

* Ensembles: ``"nvt-nhc"`` (``fix nvt``, a Nosé–Hoover chain of 3) and ``"npt"`` (``fix npt
  … iso``, pressure ``pressure_gpa`` converted to bar). Damping 100 dt and 1000 dt unless set.
* Start: Gaussian velocities at T (``velocity … mom yes``: total momentum zero), then
  ``equil_steps`` (not stored), then ``steps`` of production with frames at production steps
  0, k, 2k, … (k = ``write_every``).
* Output in ``workdir`` is what :func:`ramanscreen.tasks.md.run_md` writes: ``md.traj`` (ASE
  frames with velocities, ``info["time_fs"]``, ``["md_step"]``, ``["temperature_k"]``,
  ``["epot_eV"]``) and the sidecar ``md.json`` with the same keys, plus the engine, the
  potential (labelled as distilled, not DFT) and the extrapolation record. While running:
  ``md.traj.part``, ``md.ckpt.json`` and ``md.ckpt.<step>.restart`` (LAMMPS ``write_restart``:
  positions, velocities, image flags, box, thermostat and barostat state).
* Resume: calling :func:`run_lammps_md` again on the same ``workdir`` continues from the last
  checkpoint; frames written after it are dropped and recomputed (no gap, no duplicate).
* Memory: one chunk of frames at a time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import platform
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from ase import Atoms, units

from ramanscreen.tasks.common import InputError, atomic_path
from ramanscreen.tasks.mlff.engine import (
    FS_TO_PS,
    GPA_TO_BAR,
    BoxFrame,
    LammpsSystem,
    load_lammps,
    num,
    write_json,
)
from ramanscreen.tasks.mlff.snap import SnapPotential

if TYPE_CHECKING:
    from ramanscreen.tasks.md import MDResult
    from ramanscreen.tasks.mlff.refine import Refiner

#: ``progress(step, total, ps_per_day)``, as for :func:`ramanscreen.tasks.md.run_md`.
ProgressCallback = Callable[[int, int, float], None]

ENSEMBLES = ("nvt-nhc", "npt")
SCHEMA = "ramanscreen.md/1"
#: Dump columns (LAMMPS frame, metal units), written as a binary dump.
_COLUMNS = "id type xu yu zu vx vy vz c_pea"


@dataclass(frozen=True)
class LammpsMDSettings:
    """What to run; the fields mirror :class:`ramanscreen.tasks.md.MDSettings` (times in fs).

    ``checkpoint_every`` is also the chunk length: LAMMPS runs that many steps without
    Python (rounded to a multiple of ``write_every``).

    >>> LammpsMDSettings(temperature_k=500, dt_fs=10, write_every=2).alpha_dt_fs
    200.0
    >>> LammpsMDSettings(ensemble="langevin").validate()
    Traceback (most recent call last):
    ...
    ramanscreen.tasks.common.InputError: ensemble: the LAMMPS engine runs nvt-nhc or npt, not 'langevin' (fix: use --ensemble nvt-nhc or npt)
    """

    temperature_k: float = 300.0
    dt_fs: float = 2.0
    steps: int = 1000
    equil_steps: int = 0
    ensemble: str = "nvt-nhc"
    pressure_gpa: float = 0.0
    write_every: int = 1
    alpha_stride: int = 10
    checkpoint_every: int = 1000
    seed: int = 0
    tdamp_fs: float | None = None
    pdamp_fs: float | None = None
    #: Length of the Nosé–Hoover chains.
    tchain: int = 3
    #: Start from the velocities of ``atoms`` (e.g. an NPT equilibration's last frame, total
    #: momentum removed) instead of drawing them at T.
    keep_velocities: bool = False

    @property
    def alpha_dt_fs(self) -> float:
        return float(self.dt_fs * self.write_every * self.alpha_stride)

    @property
    def total_steps(self) -> int:
        return self.equil_steps + self.steps

    @property
    def chunk_steps(self) -> int:
        return max(self.write_every, (self.checkpoint_every // self.write_every) * self.write_every)

    @property
    def tdamp(self) -> float:
        return self.tdamp_fs if self.tdamp_fs is not None else 100.0 * self.dt_fs

    @property
    def pdamp(self) -> float:
        return self.pdamp_fs if self.pdamp_fs is not None else 1000.0 * self.dt_fs

    def validate(self) -> None:
        from ramanscreen.tasks.md import MDSettings

        if self.ensemble not in ENSEMBLES:
            raise InputError(f"the LAMMPS engine runs nvt-nhc or npt, not {self.ensemble!r}", field="ensemble",
                             fix="use --ensemble nvt-nhc or npt")
        # the fields shared with the ASE engine are checked by its own rules
        MDSettings(temperature_k=self.temperature_k, dt_fs=self.dt_fs, steps=self.steps, equil_steps=self.equil_steps,
                   pressure_gpa=self.pressure_gpa, write_every=self.write_every, alpha_stride=self.alpha_stride,
                   checkpoint_every=self.checkpoint_every, seed=self.seed, tdamp_fs=self.tdamp_fs,
                   pdamp_fs=self.pdamp_fs, calculator="snap").validate()
        if not isinstance(self.tchain, int) or self.tchain < 1:
            raise InputError(f"must be an integer >= 1, got {self.tchain!r}", field="tchain")

    def fingerprint(self) -> str:
        d = dataclasses.asdict(self)
        d.pop("checkpoint_every")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class _Paths:
    workdir: Path
    name: str = "md"

    def __getattr__(self, item: str) -> Path:
        suffix = {"traj": ".traj", "part": ".traj.part", "meta": ".json", "ckpt": ".ckpt.json",
                  "state": ".state.json", "log": ".lammps.log", "chunk": ".chunk.bin"}.get(item)
        if suffix is None:
            raise AttributeError(item)
        return self.workdir / f"{self.name}{suffix}"

    def restart(self, step: int) -> Path:
        return self.workdir / f"{self.name}.ckpt.{step}.restart"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _package_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


# ============================================================================================
# dump parsing
# ============================================================================================
@dataclass
class _Chunk:
    steps: np.ndarray  # (F,)
    cells: np.ndarray  # (F, 3, 3), LAMMPS frame
    positions: np.ndarray  # (F, N, 3), unwrapped, LAMMPS frame
    velocities: np.ndarray  # (F, N, 3), Å/ps
    epot: np.ndarray  # (F,)


def _read_dump(path: Path, n_atoms: int) -> _Chunk:
    """Frames of a binary ``dump custom`` file (``*.bin``) with :data:`_COLUMNS`, atoms sorted by id.

    The layout (LAMMPS ``DUMPCUSTOM`` revision 2, as ``tools/binary2txt`` reads it): per frame
    the timestep, atom count, triclinic flag, boundary flags, box bounds and tilts, the row width,
    unit/time/column strings, then the rows in chunks.
    """
    import struct

    buf = path.read_bytes()
    off, n_cols = 0, len(_COLUMNS.split())
    steps, bounds, rows = [], [], []
    try:
        while off < len(buf):
            (ts,) = struct.unpack_from("<q", buf, off)
            off += 8
            if ts < 0:  # magic string, endian flag, revision, then the real timestep
                off += -ts + 8
                (ts,) = struct.unpack_from("<q", buf, off)
                off += 8
            natoms, triclinic = struct.unpack_from("<qi", buf, off)
            off += 12 + 24
            if natoms != n_atoms or triclinic != 1:
                raise ValueError(f"frame of {natoms} atoms (triclinic {triclinic})")
            bounds.append(np.frombuffer(buf, "<f8", 9, off))
            off += 72
            (size_one,) = struct.unpack_from("<i", buf, off)
            if size_one != n_cols:
                raise ValueError(f"{size_one} columns")
            off += 4
            (n,) = struct.unpack_from("<i", buf, off)  # unit style
            off += 4 + n
            (flag,) = struct.unpack_from("<b", buf, off)  # time present
            off += 1 + (8 if flag else 0)
            (n,) = struct.unpack_from("<i", buf, off)  # column names
            off += 4 + n
            (nchunk,) = struct.unpack_from("<i", buf, off)
            off += 4
            parts = []
            for _ in range(nchunk):
                (n,) = struct.unpack_from("<i", buf, off)
                parts.append(np.frombuffer(buf, "<f8", n, off + 4))
                off += 4 + 8 * n
            steps.append(ts)
            rows.append(np.concatenate(parts).reshape(n_atoms, n_cols))
    except (struct.error, ValueError) as exc:
        raise InputError(f"unreadable LAMMPS dump ({exc})", file=path, fix="pass --restart to start over") from None
    b = np.array(bounds).reshape(-1, 9)
    xlo_b, xhi_b, ylo_b, yhi_b, zlo, zhi, xy, xz, yz = b.T
    zero = np.zeros_like(xy)
    xlo = xlo_b - np.minimum.reduce([zero, xy, xz, xy + xz])
    xhi = xhi_b - np.maximum.reduce([zero, xy, xz, xy + xz])
    ylo = ylo_b - np.minimum(zero, yz)
    yhi = yhi_b - np.maximum(zero, yz)
    cells = np.zeros((len(steps), 3, 3))
    cells[:, 0, 0], cells[:, 1, 1], cells[:, 2, 2] = xhi - xlo, yhi - ylo, zhi - zlo
    cells[:, 1, 0], cells[:, 2, 0], cells[:, 2, 1] = xy, xz, yz
    data = np.array(rows).reshape(len(steps), n_atoms, n_cols)
    order = np.argsort(data[:, :, 0], axis=1, kind="stable")
    data = np.take_along_axis(data, order[:, :, None], axis=1)
    return _Chunk(steps=np.array(steps, dtype=np.int64), cells=cells, positions=data[:, :, 2:5],
                  velocities=data[:, :, 5:8], epot=data[:, :, 8].sum(axis=1))


def _temperature_k(masses_amu: np.ndarray, v_A_ps: np.ndarray) -> np.ndarray:
    """Kinetic temperature of each frame with 3N degrees of freedom (as ASE's get_temperature)."""
    v_ase = v_A_ps * FS_TO_PS / units.fs
    ekin = 0.5 * np.einsum("i,fij->f", masses_amu, v_ase**2)
    return 2.0 * ekin / (3.0 * masses_amu.size * units.kB)


# ============================================================================================
# the run
# ============================================================================================
def _fix_command(s: LammpsMDSettings) -> str:
    t, tdamp = num(s.temperature_k), num(s.tdamp * FS_TO_PS)
    if s.ensemble == "npt":
        p, pdamp = num(s.pressure_gpa * GPA_TO_BAR), num(s.pdamp * FS_TO_PS)
        return f"fix integ all npt temp {t} {t} {tdamp} iso {p} {p} {pdamp} tchain {s.tchain} pchain {s.tchain}"
    return f"fix integ all nvt temp {t} {t} {tdamp} tchain {s.tchain}"


def _truncate_part(paths: _Paths, n_keep: int, last_md_step: int | None) -> None:
    """Keep the first ``n_keep`` frames of the partial trajectory (streamed)."""
    from ase.io.trajectory import Trajectory as AseTrajectory

    if not paths.part.exists():
        if n_keep:
            raise InputError("checkpoint has frames but the partial trajectory is missing", file=paths.part,
                             fix="pass --restart to start over")
        return
    with AseTrajectory(str(paths.part), "r") as tr:
        n_have = len(tr)
        ok = n_have >= n_keep and (n_keep == 0 or tr[n_keep - 1].info.get("md_step") == last_md_step)
        if not ok:
            raise InputError(f"partial trajectory holds {n_have} frames, the checkpoint expects {n_keep}",
                             file=paths.part, fix="pass --restart to start over")
        if n_have > n_keep:
            with atomic_path(paths.part) as tmp, AseTrajectory(str(tmp), "w") as out:
                for k in range(n_keep):
                    out.write(tr[k])


def _clean(paths: _Paths) -> None:
    for p in (paths.part, paths.ckpt, paths.state, paths.chunk, *paths.workdir.glob(f"{paths.name}.ckpt.*.restart")):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def current_atoms(system: LammpsSystem, template: Atoms) -> Atoms:
    """The LAMMPS state as ASE atoms (positions wrapped, ASE frame)."""
    x = system.frame.to_ase(system.gather("x"))
    a = Atoms(numbers=template.numbers, positions=x, cell=system.cell(), pbc=True)
    a.set_masses(template.get_masses())
    return a


def _write_state(paths: _Paths, status: str, step: int, total: int, settings: LammpsMDSettings, *,
                 ps_per_day: float | None = None, reason: str | None = None) -> None:
    """``md.state.json``, as :func:`ramanscreen.tasks.md.run_md` writes it: what the live view
    reads (steps, dt_fs, ps/day; ``status`` running, complete, failed or interrupted, with the
    ``reason``); never needed to resume."""
    doc: dict[str, Any] = {"status": status, "step": step, "total": total, "dt_fs": settings.dt_fs,
                           "updated_utc": _now()}
    if ps_per_day is not None:
        doc["ps_per_day"] = ps_per_day
    if reason is not None:
        doc["reason"] = reason
    write_json(paths.state, doc)


def run_lammps_md(
    atoms: Atoms,
    potential: SnapPotential | str | os.PathLike[str],
    settings: LammpsMDSettings,
    workdir: str | os.PathLike[str],
    *,
    progress: ProgressCallback | None = None,
    restart: bool = False,
    refiner: Refiner | None = None,
    name: str = "md",
) -> MDResult:
    """Run (or resume, or return the finished) LAMMPS MD of ``atoms`` with a SNAP ``potential``.

    Args:
        atoms: starting structure (the types follow ``potential.elements``).
        potential: a :class:`SnapPotential` or the path of its ``.snap.json``.
        settings: :class:`LammpsMDSettings`.
        workdir: output directory (``md.traj`` + ``md.json`` when done).
        progress: ``progress(step, total, ps_per_day)`` after every chunk.
        restart: discard a previous partial or finished run in ``workdir``.
        refiner: an on-the-fly :class:`~ramanscreen.tasks.mlff.refine.Refiner`; after every chunk
            it checks the extrapolation measure and may refit; its potential is then used.
        name: file stem of the outputs.
    """
    from ramanscreen.tasks.md import MDResult, check_overlaps, check_time_step

    settings.validate()
    pot = potential if isinstance(potential, SnapPotential) else SnapPotential.load(potential)
    if refiner is not None:
        pot = refiner.potential
    if pot.path is None:
        raise InputError("write the potential before running it (SnapPotential.write)", field="potential")
    atoms = atoms.copy()
    atoms.calc = None
    if len(atoms) < 2:
        raise InputError("need at least 2 atoms for MD", field="structure")
    check_overlaps(atoms)
    warn = check_time_step(atoms, settings.dt_fs)
    if warn:
        warnings.warn(warn, stacklevel=2)
    workdir = Path(workdir)
    paths = _Paths(workdir, name)
    fingerprint = hashlib.sha256(
        f"{settings.fingerprint()}:{(refiner.initial_fingerprint if refiner else pot.fingerprint())}:"
        f"{atoms.numbers.tobytes().hex()}".encode()).hexdigest()[:16]

    if paths.traj.exists() and paths.meta.exists() and not restart:
        meta = json.loads(paths.meta.read_text())
        if meta.get("fingerprint") == fingerprint:
            if progress:
                progress(settings.total_steps, settings.total_steps, float(meta.get("ps_per_day") or 0.0))
            return MDResult(paths.traj, paths.meta, meta)
        raise InputError("directory already holds a finished run with other settings", file=workdir,
                         fix="choose another --out-dir or pass --restart to overwrite it")

    load_lammps()
    from ramanscreen.tasks.mlff.engine import type_map

    type_map(atoms, pot.elements)  # elements the potential lacks: an error before anything is written
    workdir.mkdir(parents=True, exist_ok=True)
    if restart:
        _clean(paths)
        for p in (paths.traj, paths.meta):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()

    masses = atoms.get_masses()
    acc: dict[str, Any] = {"wall_time_s": 0.0, "n_resumes": 0, "t_sum": 0.0, "t_sq": 0.0, "t_n": 0,
                           "equil_t_sum": 0.0, "equil_t_n": 0, "p_sum": 0.0, "v_sum": 0.0, "pv_n": 0,
                           "started_utc": _now(), "extrapolation": [], "potentials": []}
    step, n_frames = 0, 0
    ckpt: dict[str, Any] | None = None
    if paths.ckpt.exists():
        try:
            ckpt = json.loads(paths.ckpt.read_text())
        except ValueError:
            raise InputError("checkpoint is unreadable", file=paths.ckpt, fix="pass --restart to start over") from None
        if ckpt.get("fingerprint") != fingerprint:
            raise InputError("a partial run with different settings is in this directory", file=workdir,
                             fix="rerun with the same settings to resume, or pass --restart to start over")
        if not paths.restart(ckpt["step"]).exists():
            raise InputError("the checkpoint's restart file is missing", file=paths.restart(ckpt["step"]),
                             fix="pass --restart to start over")
        step, n_frames = int(ckpt["step"]), int(ckpt["n_frames"])
        _truncate_part(paths, n_frames, ckpt.get("last_md_step"))
        acc.update(ckpt["acc"])
        acc["n_resumes"] = int(acc["n_resumes"]) + 1
        if refiner is None and ckpt.get("potential"):
            pot = SnapPotential.load(ckpt["potential"])
    else:
        _clean(paths)

    system = LammpsSystem(atoms, pot.elements, log=paths.log)
    frame = system.frame
    lmp = system.lmp
    if ckpt is not None:
        frame = BoxFrame(rotation=np.array(ckpt["rotation"], float))
        system.frame = frame
        system.close()
        from ramanscreen.tasks.mlff.engine import new_lammps

        lmp = new_lammps(paths.log)
        lmp.commands_list(["atom_modify map array", f'read_restart "{paths.restart(step)}"', "atom_modify sort 0 0"])
        system.lmp = lmp
    pair = pot.pair_commands()
    lines = [*pair, "neighbor 1.0 bin", "neigh_modify every 1 delay 0 check yes",
             f"timestep {num(settings.dt_fs * FS_TO_PS)}", "compute pea all pe/atom",
             "variable vol equal vol", "thermo_style custom step temp pe press vol", "thermo 0"]
    if ckpt is None and settings.keep_velocities:
        v_ase = atoms.get_velocities()
        if not np.isfinite(v_ase).all() or not np.any(v_ase):
            raise InputError("keep_velocities needs atoms with velocities", field="structure",
                             fix="give atoms with momenta, or draw them (keep_velocities = false)")
        system.scatter("v", frame.to_lammps(v_ase) * units.fs / FS_TO_PS)
        lines.append("velocity all zero linear")
    elif ckpt is None:
        lines.append(f"velocity all create {num(settings.temperature_k)} {settings.seed % 900_000_000 + 1} "
                     "dist gaussian mom yes rot no")
    lines.append(_fix_command(settings))
    try:
        lmp.commands_list(lines)
    except Exception as exc:  # noqa: BLE001 - LAMMPS reports bad input as a bare Exception
        raise InputError(f"LAMMPS refused the set-up: {' '.join(str(exc).split())[:300]}", file=paths.log,
                         field="potential", fix="check the potential files and the structure") from None
    if ckpt is None:
        acc["potentials"].append({"from_step": 0, "path": str(pot.path), "fingerprint": pot.fingerprint()})
        _write_state(paths, "running", 0, settings.total_steps, settings)

    from ase.io.trajectory import Trajectory as AseTrajectory

    total, equil, every = settings.total_steps, settings.equil_steps, settings.write_every
    # pressure and volume are sampled about every 10 steps (a virial on every step costs time)
    p_every = every * max(1, round(10 / every))
    t_start = time.perf_counter()
    steps_at_start = step
    last_md_step = ckpt.get("last_md_step") if ckpt else None
    md_seconds = 0.0

    def production_step(s: int) -> int:
        return s - equil

    lammps_version = str(lmp.version())
    writer = AseTrajectory(str(paths.part), "a")
    try:
        while step < total:
            in_equil = step < equil
            n = min(settings.chunk_steps, (equil if in_equil else total) - step)
            if not in_equil:
                lmp.commands_list([f'dump d all custom {every} "{paths.chunk}" {_COLUMNS}',
                                   "dump_modify d sort id flush no",
                                   f"fix pav all ave/time {p_every} 1 {p_every} c_thermo_press v_vol ave running"])
            t0 = time.perf_counter()
            try:
                lmp.command(f"run {n}")
            except Exception as exc:  # noqa: BLE001 - lost atoms, NaN: the potential left its range
                raise InputError(f"LAMMPS stopped at step {step}: {' '.join(str(exc).split())[:300]}",
                                 file=paths.log, field="dt_fs",
                                 fix="use a smaller --dt-fs, refine the potential, or check the structure") from None
            md_seconds += time.perf_counter() - t0
            step += n
            t_now = float(lmp.get_thermo("temp"))
            if not math.isfinite(t_now):
                raise InputError(f"MD blew up at step {step} (non-finite temperature)", field="dt_fs",
                                 fix="use a smaller --dt-fs or refine the potential")
            if in_equil:
                acc["equil_t_sum"] += t_now
                acc["equil_t_n"] += 1
                if step == equil:
                    lmp.command("reset_timestep 0")
            else:
                lmp.command("undump d")
                chunk = _read_dump(paths.chunk, len(atoms))
                keep = chunk.steps > (last_md_step if last_md_step is not None else -1)
                temps = _temperature_k(masses, chunk.velocities[keep])
                for k in np.flatnonzero(keep):
                    md_step = int(chunk.steps[k])
                    v_ase = frame.to_ase(chunk.velocities[k]) * FS_TO_PS / units.fs
                    snap = Atoms(numbers=atoms.numbers, positions=frame.to_ase(chunk.positions[k]),
                                 cell=frame.to_ase(chunk.cells[k]), pbc=True, masses=masses, momenta=masses[:, None] * v_ase)
                    snap.info = {"md_step": md_step, "time_fs": float(md_step * settings.dt_fs),
                                 "temperature_k": float(_temperature_k(masses, chunk.velocities[k:k + 1])[0]),
                                 "epot_eV": float(chunk.epot[k])}
                    writer.write(snap)
                    n_frames += 1
                    last_md_step = md_step
                acc["t_sum"] += float(temps.sum())
                acc["t_sq"] += float((temps**2).sum())
                acc["t_n"] += int(temps.size)
                lammps = load_lammps()
                p_bar, vol = (float(lmp.extract_fix("pav", lammps.LMP_STYLE_GLOBAL, lammps.LMP_TYPE_VECTOR, i))
                              for i in (0, 1))
                lmp.command("unfix pav")
                if n >= p_every:  # the chunk held at least one sample
                    acc["p_sum"] += n * p_bar / GPA_TO_BAR
                    acc["v_sum"] += n * vol
                    acc["pv_n"] += n
                writer.backend.fd.flush()
                os.fsync(writer.backend.fd.fileno())
            # on-the-fly extrapolation check (and refit) between chunks
            if refiner is not None:
                now = current_atoms(system, atoms)
                new = refiner.check(now, md_step=production_step(step), temperature_k=settings.temperature_k)
                acc["extrapolation"].append([production_step(step), refiner.last_measure])
                if new is not None:
                    pot = new
                    lmp.commands_list(pot.pair_commands())
                    acc["potentials"].append({"from_step": production_step(step), "path": str(pot.path),
                                              "fingerprint": pot.fingerprint(), "round": refiner.n_rounds})
            # checkpoint: restart file first, then the json that points at it
            rpath = paths.restart(step)
            lmp.command(f'write_restart "{rpath}.tmp"')
            os.replace(f"{rpath}.tmp", rpath)
            elapsed = time.perf_counter() - t_start
            write_json(paths.ckpt, {"fingerprint": fingerprint, "step": step, "n_frames": n_frames,
                                    "last_md_step": last_md_step, "rotation": frame.rotation,
                                    "potential": str(pot.path),
                                    "acc": {**acc, "wall_time_s": acc["wall_time_s"] + elapsed}, "saved_utc": _now()})
            for old in workdir.glob(f"{name}.ckpt.*.restart"):
                if old != rpath:
                    with contextlib.suppress(FileNotFoundError):
                        old.unlink()
            done = step - steps_at_start
            rate = done * settings.dt_fs * 1e-3 / (elapsed / 86400.0) if elapsed > 0 and done else 0.0
            _write_state(paths, "running", step, total, settings, ps_per_day=rate)
            if progress is not None:
                progress(step, total, rate)
    except BaseException as exc:  # the state file must not keep saying "running"
        reason = " ".join(str(exc).split()) or type(exc).__name__
        status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        with contextlib.suppress(Exception):
            _write_state(paths, status, step, total, settings, reason=reason)
        raise
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            lmp.close()
    with contextlib.suppress(FileNotFoundError):
        paths.chunk.unlink()

    wall = acc["wall_time_s"] + (time.perf_counter() - t_start)
    t_n = max(int(acc["t_n"]), 1)
    t_mean = acc["t_sum"] / t_n
    dt_fs = settings.dt_fs
    label = pot.method
    ms_per_step = 1e3 * md_seconds / max(total - steps_at_start, 1)
    session_wall = time.perf_counter() - t_start
    wall_ms_per_step = 1e3 * session_wall / max(total - steps_at_start, 1)
    meta = {
        "schema": SCHEMA, "traj": paths.traj.name, "fingerprint": fingerprint,
        "material": atoms.info.get("material"), "formula": atoms.get_chemical_formula(), "n_atoms": len(atoms),
        "engine": "lammps", "lammps_version": lammps_version,
        "calculator": f"snap:{pot.path}", "calculator_kwargs": {}, "model": label, "model_version": pot.fingerprint(),
        "method": label, "not_dft": True,
        "potential": {"path": str(pot.path), "teacher": pot.info.get("teacher"),
                      "holdout": pot.info.get("holdout_errors"), "flagged": pot.info.get("flagged")},
        "potentials": acc["potentials"],
        "packages": {k: _package_version(k) for k in ("ase", "lammps")},
        "ensemble": settings.ensemble, "temperature_k": settings.temperature_k,
        "pressure_gpa": settings.pressure_gpa if settings.ensemble == "npt" else None,
        "dt_fs": dt_fs, "steps": settings.steps, "equil_steps": equil, "seed": settings.seed,
        "write_every": every, "frame_dt_fs": dt_fs * every, "alpha_stride": settings.alpha_stride,
        "alpha_dt_fs": settings.alpha_dt_fs, "n_frames": n_frames, "duration_ps": settings.steps * dt_fs * 1e-3,
        "tdamp_fs": settings.tdamp, "friction_per_fs": None,
        "pdamp_fs": settings.pdamp if settings.ensemble == "npt" else None,
        "temperature_mean_k": t_mean,
        "temperature_std_k": math.sqrt(max(acc["t_sq"] / t_n - t_mean**2, 0.0)),
        "equil_temperature_mean_k": acc["equil_t_sum"] / acc["equil_t_n"] if acc["equil_t_n"] else None,
        "pressure_mean_gpa": acc["p_sum"] / acc["pv_n"] if acc["pv_n"] else None,
        "volume_mean_A3": acc["v_sum"] / acc["pv_n"] if acc["pv_n"] else None,
        "wall_time_s": wall, "calc_time_s": None, "overhead_fraction": None, "calc_calls_per_step": 1.0,
        "ms_per_step": ms_per_step, "wall_ms_per_step": wall_ms_per_step,
        "overhead_fraction_python": (session_wall - md_seconds) / md_seconds if md_seconds > 0 else None,
        "ps_per_day": total * dt_fs * 1e-3 / (wall / 86400.0) if wall > 0 else None,
        "n_resumes": int(acc["n_resumes"]), "num_threads": 1, "chunk_steps": settings.chunk_steps,
        "extrapolation": refiner.summary(acc["extrapolation"]) if refiner is not None else None,
        "started_utc": acc["started_utc"], "finished_utc": _now(), "host": platform.node(),
        "settings": settings.to_dict(),
    }
    write_json(paths.meta, meta)
    os.replace(paths.part, paths.traj)
    _write_state(paths, "complete", total, total, settings)
    for p in (paths.ckpt, *workdir.glob(f"{name}.ckpt.*.restart")):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    return MDResult(paths.traj, paths.meta, meta)


__all__ = ["ENSEMBLES", "LammpsMDSettings", "current_atoms", "run_lammps_md"]
