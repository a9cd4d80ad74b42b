"""The one trajectory container every ramanscreen stage uses.

A :class:`Trajectory` holds positions (Å), cells (Å), masses (amu), the time between stored
frames (``dt_fs``) and, where the source has them, velocities in Å/fs.  There is one
constructor per input source, in the style of kinisi:

* :meth:`Trajectory.from_file` -- anything ASE reads (extxyz, ASE ``.traj``, XDATCAR,
  vasprun.xml, LAMMPS text dumps);
* :meth:`Trajectory.from_atoms` -- a list of :class:`ase.Atoms` already in memory;
* :meth:`Trajectory.iter_chunks` -- a long file streamed as consecutive trajectories of at
  most ``chunk`` frames (the α predictor uses this to keep memory flat).

Time between frames.  ASE ``.traj`` files written by ``tasks/md.py`` carry
``atoms.info["time_fs"]`` (and ``md_step``) on every frame; ``dt_fs`` is inferred from them.
Every other source needs ``dt_fs`` from the user (the time between *stored* frames, i.e.
MD step × write interval; the CLI's ``--dt-fs``), unless a ramanscreen sidecar ``<name>.json``
records it; without it :class:`~ramanscreen.tasks.common.InputError` is raised naming the file.

Velocities.  Read from the file where present (ASE keeps them as momenta in its own units;
they are converted to Å/fs with :data:`ase.units.fs`), otherwise ``None``.

>>> import numpy as np
>>> from ase import Atoms
>>> frames = [Atoms("Na2", positions=[[0, 0, 0], [1.0 + 0.1 * i, 0, 0]], cell=[5, 5, 5], pbc=True)
...           for i in range(4)]
>>> traj = Trajectory.from_atoms(frames, dt_fs=2.0)
>>> len(traj), traj.positions_A.shape, traj.time_fs.tolist()
(4, (4, 2, 3), [0.0, 2.0, 4.0, 6.0])
>>> traj.every(2).dt_fs, len(traj.every(2))
(4.0, 2)
>>> round(float(traj.to_atoms(3).positions[1, 0]), 3)
1.3
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ramanscreen.tasks.common import InputError, atomic_path

#: Relative tolerance for "the frames are evenly spaced in time".
_DT_RTOL = 1e-6


def _fs_per_ase_time() -> float:
    from ase import units

    return float(units.fs)


@dataclass
class Trajectory:
    """Positions, cells and (optionally) velocities of F frames of the same N atoms.

    Attributes:
        symbols: chemical symbols, length N.
        numbers: atomic numbers, shape (N,).
        masses_amu: atomic masses in amu, shape (N,).
        positions_A: Cartesian positions in Å as stored (wrapped or not), shape (F, N, 3).
        cells_A: cell vectors (rows) in Å per frame, shape (F, 3, 3).
        pbc: periodic directions, shape (3,).
        dt_fs: time between stored frames in fs.
        velocities_A_fs: velocities in Å/fs, shape (F, N, 3), or ``None`` if the source has none.
        time_fs: time of each frame in fs, shape (F,).
        source: where the frames came from (a path or a description).
        md_step: MD step number of each frame where the source records it, else ``None``.
    """

    symbols: list[str]
    numbers: np.ndarray
    masses_amu: np.ndarray
    positions_A: np.ndarray
    cells_A: np.ndarray
    pbc: np.ndarray
    dt_fs: float
    velocities_A_fs: np.ndarray | None
    time_fs: np.ndarray
    source: str = "memory"
    md_step: np.ndarray | None = field(default=None)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_atoms(
        cls,
        frames: Sequence,
        dt_fs: float | None = None,
        *,
        source: str = "memory",
    ) -> Trajectory:
        """Build a trajectory from ASE ``Atoms`` frames (all with the same atoms in the same order).

        ``dt_fs`` is the time between frames in fs.  If omitted, it is inferred from
        ``atoms.info["time_fs"]`` when every frame has it and the spacing is uniform.

        >>> from ase import Atoms
        >>> fr = [Atoms("Li", positions=[[0, 0, i]], cell=[3, 3, 3], pbc=True, info={"time_fs": 5.0 * i})
        ...       for i in range(3)]
        >>> Trajectory.from_atoms(fr).dt_fs
        5.0
        """
        frames = list(frames)
        return cls._build(frames, dt_fs, source=source, file=None if source == "memory" else source)

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        *,
        dt_fs: float | None = None,
        fmt: str | None = None,
        index: str | int | slice = ":",
        type_map: Sequence[str] | None = None,
    ) -> Trajectory:
        """Read a trajectory from any format ASE reads.

        Args:
            path: the file (extxyz, ``.traj``, XDATCAR, vasprun.xml, LAMMPS text dump, ...).
            dt_fs: time between *stored* frames in fs.  Required unless the frames carry
                ``info["time_fs"]`` (ramanscreen's own ``.traj`` files).  If both are given they
                must agree.
            fmt: ASE format name; guessed from the file name when omitted (a ``*.dump`` or
                ``*.lammpstrj`` file is read as ``lammps-dump-text``).
            index: ASE frame selection, e.g. ``":"`` (all), ``"::10"`` (every 10th).  The
                inferred or given ``dt_fs`` refers to the frames *after* selection only when the
                frames carry ``time_fs``; with a strided ``index`` and a user ``dt_fs``, pass the
                spacing of the selected frames.
            type_map: element symbols for LAMMPS atom types 1, 2, ... (needed when the dump has
                neither an ``element`` nor a ``mass`` column).

        Raises:
            InputError: missing/unreadable/empty file, frames with different atoms, missing
                ``dt_fs``.
        """
        path = Path(path)
        frames = _read_frames(path, fmt=fmt, index=index, type_map=type_map)
        if not frames:
            raise InputError("trajectory holds no frames", file=path, field="frames", fix="check the file and the frame selection (index)")
        return cls._build(frames, dt_fs, source=str(path), file=path)

    @classmethod
    def iter_chunks(
        cls,
        path: str | os.PathLike[str],
        chunk: int,
        *,
        dt_fs: float | None = None,
        fmt: str | None = None,
        type_map: Sequence[str] | None = None,
    ) -> Iterator[Trajectory]:
        """Stream a long trajectory as consecutive :class:`Trajectory` pieces of ≤ ``chunk`` frames.

        Only one chunk of frames is in memory at a time.  ``time_fs`` continues across chunks;
        ``dt_fs`` is inferred from the first two frames' ``info["time_fs"]`` when present.

        >>> import tempfile, pathlib
        >>> from ase import Atoms
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "t.traj"
        >>> _ = Trajectory.from_atoms([Atoms("K", cell=[4, 4, 4], pbc=True)] * 5, dt_fs=1.0).write(p)
        >>> [len(c) for c in Trajectory.iter_chunks(p, 2)]
        [2, 2, 1]
        """
        from ase.io import iread

        path = Path(path)
        if chunk < 1:
            raise InputError(f"chunk must be ≥ 1, got {chunk}", field="chunk", fix="use e.g. 1000")
        _check_exists(path)
        fmt = fmt or _guess_format(path)
        kwargs = _format_kwargs(fmt, type_map)
        try:
            stream = iread(str(path), index=":", format=fmt, **kwargs)
            head = list(itertools.islice(stream, 2))
            if not head:
                raise InputError("trajectory holds no frames", file=path, field="frames", fix="check the file")
            dt = cls._build(head, dt_fs, source=str(path), file=path).dt_fs
            stream = itertools.chain(head, stream)
            first: Trajectory | None = None
            n_done = 0
            while frames := list(itertools.islice(stream, chunk)):
                piece = cls._build(frames, dt, source=str(path), file=path)
                if first is None:
                    first = piece
                else:
                    _check_same_atoms(first, piece, path)
                if "time_fs" not in frames[0].info:
                    piece.time_fs = (n_done + np.arange(len(piece))) * dt
                n_done += len(piece)
                yield piece
        except InputError:
            raise
        except Exception as exc:  # ASE raises many types for a corrupt file
            raise InputError(f"cannot read trajectory: {_one_line(exc)}", file=path,
                             fix="check the file and its format") from exc

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return int(self.positions_A.shape[0])

    @property
    def n_atoms(self) -> int:
        """Number of atoms N."""
        return int(self.positions_A.shape[1])

    @property
    def duration_fs(self) -> float:
        """Time spanned by the frames, (F − 1)·dt_fs."""
        return (len(self) - 1) * self.dt_fs

    @property
    def volumes_A3(self) -> np.ndarray:
        """Cell volume of each frame in Å³, shape (F,)."""
        return np.abs(np.linalg.det(self.cells_A))

    def __getitem__(self, item: slice) -> Trajectory:
        """Frames ``item`` (a slice) as a new trajectory; ``dt_fs`` scales with the slice step."""
        if not isinstance(item, slice):
            raise TypeError("index a Trajectory with a slice; use to_atoms(i) for one frame")
        step = item.step or 1
        if step < 1:
            raise ValueError("slice step must be positive")
        vel = None if self.velocities_A_fs is None else self.velocities_A_fs[item]
        return replace(
            self,
            positions_A=self.positions_A[item],
            cells_A=self.cells_A[item],
            velocities_A_fs=vel,
            time_fs=self.time_fs[item],
            dt_fs=self.dt_fs * step,
            md_step=None if self.md_step is None else self.md_step[item],
        )

    def every(self, n: int) -> Trajectory:
        """Every ``n``-th frame (``dt_fs`` multiplied by ``n``)."""
        if int(n) < 1:
            raise InputError(f"stride must be ≥ 1, got {n}", field="stride", fix="use a positive integer")
        return self[:: int(n)]

    def indices_of(self, symbol: str) -> np.ndarray:
        """Indices of the atoms with chemical symbol ``symbol``."""
        return np.flatnonzero(np.asarray(self.symbols) == symbol)

    def to_atoms(self, i: int):
        """Frame ``i`` as an :class:`ase.Atoms` (velocities and ``info["time_fs"]`` included)."""
        from ase import Atoms

        atoms = Atoms(
            numbers=self.numbers,
            positions=self.positions_A[i],
            cell=self.cells_A[i],
            pbc=self.pbc,
            masses=self.masses_amu,
        )
        if self.velocities_A_fs is not None:
            atoms.set_velocities(self.velocities_A_fs[i] / _fs_per_ase_time())
        atoms.info["time_fs"] = float(self.time_fs[i])
        if self.md_step is not None:
            atoms.info["md_step"] = int(self.md_step[i])
        return atoms

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write an ASE ``.traj`` file (velocities, ``time_fs`` and ``md_step`` kept), atomically.

        >>> import tempfile, pathlib
        >>> from ase import Atoms
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.traj"
        >>> t = Trajectory.from_atoms([Atoms("Ag", cell=[4, 4, 4], pbc=True)] * 3, dt_fs=10.0)
        >>> Trajectory.from_file(t.write(p)).dt_fs
        10.0
        """
        from ase.io.trajectory import Trajectory as AseTrajectory

        path = Path(path)
        if path.suffix != ".traj":
            raise InputError("Trajectory.write writes ASE .traj files", file=path, field="suffix",
                             fix="use a .traj file name")
        with atomic_path(path) as tmp, AseTrajectory(str(tmp), "w") as out:
            for i in range(len(self)):
                out.write(self.to_atoms(i))
        return path

    # ------------------------------------------------------------------ internals
    @classmethod
    def _build(cls, frames: list, dt_fs: float | None, *, source: str, file) -> Trajectory:
        if not frames:
            raise InputError("trajectory holds no frames", file=file, field="frames", fix="check the input")
        first = frames[0]
        n = len(first)
        numbers = first.numbers.copy()
        for k, a in enumerate(frames):
            if len(a) != n or not np.array_equal(a.numbers, numbers):
                raise InputError(
                    f"frame {k} has different atoms from frame 0 ({len(a)} vs {n} atoms)",
                    file=file, field="frames", fix="all frames must hold the same atoms in the same order",
                )
        positions = np.stack([a.positions for a in frames]).astype(float)
        cells = np.stack([a.cell.array for a in frames]).astype(float)
        if not np.all(np.isfinite(positions)):
            bad = int(np.argwhere(~np.isfinite(positions))[0][0])
            raise InputError(f"non-finite position at frame {bad}", file=file, field="positions",
                             fix="remove or repair that frame")
        if all("momenta" in a.arrays for a in frames):
            velocities = np.stack([a.get_velocities() for a in frames]) * _fs_per_ase_time()
        else:
            velocities = None
        times = [a.info.get("time_fs") for a in frames]
        steps = [a.info.get("md_step") for a in frames]
        md_step = np.asarray(steps, dtype=np.int64) if all(s is not None for s in steps) else None

        file_times = np.asarray(times, dtype=float) if all(t is not None for t in times) else None
        inferred = None
        if file_times is not None and len(frames) > 1:
            spacing = np.diff(file_times)
            inferred = float(spacing[0])
            if inferred <= 0 or not np.allclose(spacing, inferred, rtol=_DT_RTOL, atol=1e-9):
                raise InputError(
                    "frames' info['time_fs'] are not evenly spaced", file=file, field="time_fs",
                    fix="resample the trajectory at a constant interval",
                )
        if dt_fs is not None:
            dt_fs = float(dt_fs)
            if not np.isfinite(dt_fs) or dt_fs <= 0:
                raise InputError(f"must be a positive number of fs, got {dt_fs}", file=file, field="dt_fs",
                                 fix="give the time between stored frames in fs")
            if inferred is not None and not np.isclose(dt_fs, inferred, rtol=_DT_RTOL):
                raise InputError(
                    f"{dt_fs:g} fs contradicts the file's frame spacing of {inferred:g} fs (from time_fs)",
                    file=file, field="dt_fs", fix="leave it out: the file states it",
                )
        elif inferred is not None:
            dt_fs = inferred
        elif file_times is not None and len(frames) == 1:
            dt_fs = float("nan")  # a single timed frame has no spacing
        else:
            sidecar = _sidecar_dt_fs(file)
            if sidecar is None:
                raise InputError(
                    "the time between frames is not recorded in this file",
                    file=file, field="dt_fs", fix="give dt_fs, the time between stored frames (MD step × write interval, in fs)",
                )
            dt_fs = sidecar
        time = file_times if file_times is not None else np.arange(len(frames)) * dt_fs
        return cls(
            symbols=list(first.get_chemical_symbols()),
            numbers=numbers,
            masses_amu=first.get_masses().astype(float),
            positions_A=positions,
            cells_A=cells,
            pbc=np.asarray(first.pbc, dtype=bool),
            dt_fs=float(dt_fs),
            velocities_A_fs=velocities,
            time_fs=np.asarray(time, dtype=float),
            source=source,
            md_step=md_step,
        )


# ---------------------------------------------------------------------- helpers
def frame_spacing_fs(path: str | os.PathLike[str], *, fmt: str | None = None) -> float | None:
    """The time between stored frames a trajectory file records (``info["time_fs"]`` of its
    first two frames, or its ramanscreen sidecar), or None when it records none.

    >>> import tempfile, pathlib
    >>> from ase import Atoms
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "t.traj"
    >>> _ = Trajectory.from_atoms([Atoms("K", cell=[4, 4, 4], pbc=True)] * 3, dt_fs=5.0).write(p)
    >>> frame_spacing_fs(p)
    5.0
    """
    path = Path(path)
    frames = _read_frames(path, fmt=fmt, index="0:2", type_map=None)
    times = [a.info.get("time_fs") for a in frames]
    if len(times) == 2 and None not in times and times[1] > times[0]:
        return float(times[1]) - float(times[0])
    return _sidecar_dt_fs(path)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise InputError("no such file", file=path, fix="check the path")
    if path.is_dir():
        raise InputError("is a directory, not a trajectory file", file=path, fix="give the trajectory file")
    if path.stat().st_size == 0:
        raise InputError("trajectory file is empty", file=path, fix="check the MD run wrote its frames")


def _guess_format(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith((".dump", ".lammpstrj")) or name.startswith("dump."):
        return "lammps-dump-text"
    if name.startswith("xdatcar"):
        return "vasp-xdatcar"
    return None


def _format_kwargs(fmt: str | None, type_map: Sequence[str] | None) -> dict:
    if type_map:
        if fmt != "lammps-dump-text":
            raise InputError("a type map applies to LAMMPS dumps only", field="type_map",
                             fix="drop the type map, or read the file as format lammps-dump-text")
        return {"specorder": list(type_map)}
    return {}


def _read_frames(path: Path, *, fmt: str | None, index, type_map: Sequence[str] | None) -> list:
    from ase.io import read

    _check_exists(path)
    fmt = fmt or _guess_format(path)
    kwargs = _format_kwargs(fmt, type_map)
    if type_map:
        _check_type_map(path, type_map)
    try:
        frames = read(str(path), index=index, format=fmt, **kwargs)
    except Exception as exc:  # ASE raises many types for a corrupt or unknown file
        raise InputError(f"cannot read trajectory: {_one_line(exc)}", file=path,
                         fix="check the file, or name its format (ASE format name)") from exc
    if not isinstance(frames, list):
        frames = [frames]
    if fmt == "lammps-dump-text" and not type_map and frames:
        syms = set(frames[0].get_chemical_symbols())
        # ASE turns bare LAMMPS types 1, 2, ... into H, He, ...: refuse to guess
        if syms <= {"H", "He", "Li", "Be", "B", "C", "N", "O", "F"} and _dump_lacks_elements(path):
            raise InputError(
                "LAMMPS dump has atom types but no element or mass column", file=path, field="type_map",
                fix="give the elements of types 1, 2, ... in order, e.g. Na, P, S",
            )
    return frames


def _dump_types(path: Path) -> set[int]:
    """The atom types of the first frame of a LAMMPS text dump (its ``type`` column)."""
    types: set[int] = set()
    with open(path, errors="replace") as fh:
        col = None
        for line in fh:
            if line.startswith("ITEM: ATOMS"):
                if col is not None:
                    break
                cols = line.split()[2:]
                if "type" not in cols:
                    return types
                col = cols.index("type")
            elif line.startswith("ITEM:") and col is not None:
                break
            elif col is not None:
                parts = line.split()
                if len(parts) > col:
                    try:
                        types.add(int(parts[col]))
                    except ValueError:
                        return set()
    return types


def _check_type_map(path: Path, type_map: Sequence[str]) -> None:
    """A type map names an element for every atom type of the dump, and only elements."""
    from ase.data import chemical_symbols

    for sym in type_map:
        if sym not in chemical_symbols[1:]:
            raise InputError(f"{sym!r} is not an element symbol", file=path, field="type_map",
                             fix="give element symbols for types 1, 2, ... in order, e.g. Na P S")
    top = max(_dump_types(path), default=0)
    if top > len(type_map):
        raise InputError(f"names {len(type_map)} element{'s' if len(type_map) != 1 else ''} "
                         f"({' '.join(type_map)}) but the dump has atom types up to {top}", file=path,
                         field="type_map", fix=f"give one element per type, {top} in all, in type order")


def _dump_lacks_elements(path: Path) -> bool:
    with open(path, errors="replace") as fh:
        for line in fh:
            if line.startswith("ITEM: ATOMS"):
                cols = line.split()[2:]
                return "element" not in cols and "mass" not in cols
    return True


def _sidecar_dt_fs(file) -> float | None:
    """dt between stored frames from ramanscreen's sidecar ``<name>.json``: ``frame_dt_fs``, else
    ``dt_fs`` × ``write_every``."""
    if file is None:
        return None
    side = Path(file).with_suffix(".json")
    if not side.is_file():
        return None
    try:
        meta = json.loads(side.read_text())
        if "frame_dt_fs" in meta:
            return float(meta["frame_dt_fs"])
        return float(meta["dt_fs"]) * int(meta.get("write_every", 1))
    except (ValueError, KeyError, TypeError):
        return None


def _check_same_atoms(a: Trajectory, b: Trajectory, path: Path) -> None:
    if a.n_atoms != b.n_atoms or not np.array_equal(a.numbers, b.numbers):
        raise InputError("frames hold different atoms", file=path, field="frames",
                         fix="all frames must hold the same atoms in the same order")
