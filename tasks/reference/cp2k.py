"""CP2K linear-response polarizability (``&PROPERTIES &LINRES &POLAR``, Berry-phase dipole)."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers

from ramanscreen.tasks.common import InputError
from ramanscreen.tasks.reference.base import (
    ReferenceCalculationError,
    ReferenceConvergenceError,
    ReferenceResult,
    require_periodic,
)
from ramanscreen.tasks.reference.external import check_executable, command_line, make_workdir, run_code, tail
from ramanscreen.tasks.settings import get_settings

_CP2K_POLAR = re.compile(
    r"POLAR\|\s+Polarizability tensor \[ang\^3\]\s*\n"
    r"\s*POLAR\|\s+xx,yy,zz\s+(\S+)\s+(\S+)\s+(\S+)\s*\n"
    r"\s*POLAR\|\s+xy,xz,yz\s+(\S+)\s+(\S+)\s+(\S+)\s*\n"
    r"\s*POLAR\|\s+yx,zx,zy\s+(\S+)\s+(\S+)\s+(\S+)"
)


def parse_cp2k_polarizability(text: str, *, file: str | None = None) -> np.ndarray:
    """The last ``POLAR| Polarizability tensor [ang^3]`` block of a CP2K output as a 3x3 (Å³).

    Its lines are *not* matrix rows: they hold (xx, yy, zz), (xy, xz, yz), (yx, zx, zy).

    >>> block = '''
    ...  POLAR| Polarizability tensor [ang^3]
    ...  POLAR| xx,yy,zz           10.0    20.0    30.0
    ...  POLAR| xy,xz,yz            1.0     2.0     3.0
    ...  POLAR| yx,zx,zy            1.5     2.5     3.5
    ... '''
    >>> parse_cp2k_polarizability(block).tolist()
    [[10.0, 1.0, 2.0], [1.5, 20.0, 3.0], [2.5, 3.5, 30.0]]
    """
    matches = list(_CP2K_POLAR.finditer(text))
    if not matches:
        raise InputError(
            "no 'POLAR| Polarizability tensor [ang^3]' block",
            file=file,
            field="POLAR",
            fix="run CP2K with &PROPERTIES &LINRES &POLAR and let it finish",
        )
    try:
        xx, yy, zz, xy, xz, yz, yx, zx, zy = (float(v) for v in matches[-1].groups())
    except ValueError:
        raise InputError("unreadable number in the POLAR block", file=file, field="POLAR") from None
    return np.array([[xx, xy, xz], [yx, yy, yz], [zx, zy, zz]])


def _cp2k_entries(path: Path) -> dict[str, list[tuple[str, list[str]]]]:
    """element -> [(name, aliases)] of the basis/potential headers in a CP2K data file."""
    out: dict[str, list[tuple[str, list[str]]]] = {}
    head = re.compile(r"^\s*([A-Z][a-z]?)\s+([A-Za-z][\w\-\.\(\)]*)((?:\s+[A-Za-z][\w\-\.\(\)]*)*)\s*$")
    for line in path.read_text(errors="replace").splitlines():
        if line.lstrip().startswith("#"):
            continue
        m = head.match(line)
        if m and m.group(1) in atomic_numbers:
            out.setdefault(m.group(1), []).append((m.group(2), m.group(3).split()))
    return out


_CP2K_TABLES: dict[Path, dict[str, list[tuple[str, list[str]]]]] = {}


def _cp2k_table(path: Path) -> dict[str, list[tuple[str, list[str]]]]:
    if path not in _CP2K_TABLES:
        if not path.is_file():
            raise InputError(
                "CP2K data file not found", file=path, field="cp2k_data_dir",
                fix="apt-get install cp2k-data or set RAMANSCREEN_CP2K_DATA_DIR",
            )
        _CP2K_TABLES[path] = _cp2k_entries(path)
    return _CP2K_TABLES[path]


@dataclass
class Cp2kBackend:
    """CP2K DFPT polarizability (``&LINRES &POLAR``, periodic Berry-phase dipole, Γ point).

    GTH pseudopotentials and MOLOPT basis sets come from the CP2K data directory
    (``settings.cp2k_data_dir``; Debian ``cp2k-data``; La lives in ``BASIS_MOLOPT_UCL``). The
    run is ``launcher + mpirun + cp2k.psmp -i polar.inp -o polar.out`` in ``workdir``.
    Γ-point sampling: use cells of ≳ 100 atoms (MD snapshots are) for converged α; small cells
    underestimate it (the Berry-phase finite difference uses Δk = 2π/L).

    >>> from ase.build import bulk
    >>> text = Cp2kBackend(cutoff_ry=200).write_input(bulk("Si", "diamond", a=5.431))
    >>> "PERIODIC_DIPOLE_OPERATOR T" in text and "DZVP-MOLOPT-SR-GTH-q4" in text
    True
    """

    cutoff_ry: float = 400.0
    rel_cutoff_ry: float = 50.0
    basis: str = "DZVP-MOLOPT-SR-GTH"
    potential: str = "GTH-PBE"
    xc: str = "PBE"
    basis_files: tuple[str, ...] = ("BASIS_MOLOPT", "BASIS_MOLOPT_UCL")
    potential_file: str = "GTH_POTENTIALS"
    charge: int = 0
    eps_scf: float = 1e-6
    max_scf: int = 50
    max_outer_scf: int = 10
    linres_eps: float = 1e-8
    linres_max_iter: int = 200
    eps_default: float = 1e-10
    data_dir: Path | None = None
    executable: str | None = None
    launcher: str | None = None
    mpirun: str | None = None
    timeout_s: float | None = None

    @property
    def method(self) -> str:
        return f"cp2k-linres-polar ({self.xc}, {self.basis}, {self.cutoff_ry:g} Ry, Gamma, Berry-phase)"

    def _data_dir(self) -> Path:
        return Path(self.data_dir) if self.data_dir is not None else get_settings().cp2k_data_dir

    def kinds(self, symbols: Sequence[str]) -> dict[str, tuple[str, str, str, int]]:
        """element -> (basis file, basis name, potential name, valence electrons)."""
        data = self._data_dir()
        pots = _cp2k_table(data / self.potential_file)
        kinds = {}
        for sym in dict.fromkeys(symbols):
            pot_name = None
            for name, aliases in pots.get(sym, []):
                if self.potential in (name, *aliases):
                    pot_name = name
                    break
            m = re.search(r"-q(\d+)$", pot_name or "")
            if pot_name is None or m is None:
                raise InputError(
                    f"no {self.potential} pseudopotential for {sym}",
                    file=data / self.potential_file, field="potential",
                    fix="choose another potential= or add it to the potential file",
                )
            q = int(m.group(1))
            found = None
            for fname in self.basis_files:
                table = _cp2k_table(data / fname)
                for name, aliases in table.get(sym, []):
                    names = (name, *aliases)
                    if f"{self.basis}-q{q}" in names:
                        found = (fname, f"{self.basis}-q{q}")
                        break
                    if name == self.basis and not any(re.search(r"-q\d+$", a) for a in aliases):
                        found = (fname, name)
                        break
                if found:
                    break
            if found is None:
                raise InputError(
                    f"no {self.basis} basis for {sym} with {q} valence electrons in {', '.join(self.basis_files)}",
                    file=data, field="basis", fix="choose another basis= (e.g. TZVP-MOLOPT-SR-GTH) or add the file",
                )
            kinds[sym] = (found[0], found[1], pot_name, q)
        return kinds

    def write_input(self, atoms: Atoms, project: str = "polar") -> str:
        """The CP2K input text for ``atoms`` (cell and coordinates in Å)."""
        require_periodic(atoms, "CP2K &POLAR")
        symbols = atoms.get_chemical_symbols()
        kinds = self.kinds(symbols)
        n_electrons = sum(kinds[s][3] for s in symbols) - self.charge
        if n_electrons % 2:
            raise InputError(
                f"odd number of valence electrons ({n_electrons}); LINRES POLAR needs a closed shell",
                field="charge", fix="set charge= so the cell is closed-shell",
            )
        data = self._data_dir()
        basis_files = "\n".join(
            f"    BASIS_SET_FILE_NAME {data / f}" for f in dict.fromkeys(k[0] for k in kinds.values())
        )
        cell = "\n".join(f"      {ax} {v[0]:.10f} {v[1]:.10f} {v[2]:.10f}" for ax, v in zip("ABC", atoms.cell.array, strict=False))
        coords = "\n".join(f"      {s} {x:.10f} {y:.10f} {z:.10f}" for s, (x, y, z) in zip(symbols, atoms.positions, strict=False))
        kind_text = "\n".join(
            f"    &KIND {s}\n      BASIS_SET {b}\n      POTENTIAL {p}\n    &END KIND" for s, (_, b, p, _) in kinds.items()
        )
        return f"""&GLOBAL
  PROJECT {project}
  RUN_TYPE ENERGY
  PRINT_LEVEL MEDIUM
&END GLOBAL
&FORCE_EVAL
  METHOD QS
  &DFT
{basis_files}
    POTENTIAL_FILE_NAME {data / self.potential_file}
    CHARGE {self.charge}
    &MGRID
      CUTOFF {self.cutoff_ry:g}
      REL_CUTOFF {self.rel_cutoff_ry:g}
    &END MGRID
    &QS
      EPS_DEFAULT {self.eps_default:g}
    &END QS
    &SCF
      SCF_GUESS ATOMIC
      EPS_SCF {self.eps_scf:g}
      MAX_SCF {self.max_scf}
      &OT
        MINIMIZER DIIS
        PRECONDITIONER FULL_SINGLE_INVERSE
      &END OT
      &OUTER_SCF
        EPS_SCF {self.eps_scf:g}
        MAX_SCF {self.max_outer_scf}
      &END OUTER_SCF
    &END SCF
    &XC
      &XC_FUNCTIONAL {self.xc}
      &END XC_FUNCTIONAL
    &END XC
  &END DFT
  &PROPERTIES
    &LINRES
      EPS {self.linres_eps:g}
      MAX_ITER {self.linres_max_iter}
      PRECONDITIONER FULL_SINGLE_INVERSE
      &POLAR
        DO_RAMAN T
        PERIODIC_DIPOLE_OPERATOR T
        &PRINT
          &POLAR_MATRIX
          &END POLAR_MATRIX
        &END PRINT
      &END POLAR
    &END LINRES
  &END PROPERTIES
  &SUBSYS
    &CELL
{cell}
      PERIODIC XYZ
    &END CELL
    &COORD
{coords}
    &END COORD
{kind_text}
  &END SUBSYS
&END FORCE_EVAL
"""

    def command(self, input_name: str = "polar.inp", output_name: str = "polar.out") -> list[str]:
        """The argv that runs CP2K: ``launcher + mpirun + cp2k.psmp -i IN -o OUT``."""
        exe = self.executable or get_settings().cp2k_exe
        return command_line(exe, ["-i", input_name, "-o", output_name], launcher=self.launcher, mpirun=self.mpirun)

    @staticmethod
    def check_converged(text: str, *, workdir: Path | None = None) -> None:
        """Raise :class:`ReferenceConvergenceError` if the SCF or the linear response failed."""
        if "SCF run NOT converged" in text or "outer SCF loop FAILED to converge" in text:
            raise ReferenceConvergenceError("CP2K ground-state SCF did not converge", log=text, workdir=workdir)
        polar = text.split("POLAR| Starting polarizability calculation", 1)
        if len(polar) == 2 and (
            "The linear solver didn't converge" in polar[1] or polar[1].count("The linear solver converged in") < 3
        ):
            raise ReferenceConvergenceError(
                "CP2K linear response (POLAR) did not converge for all three field directions",
                log=text, workdir=workdir,
            )

    def compute(self, atoms: Atoms, workdir: str | os.PathLike[str] | None = None) -> ReferenceResult:
        text = self.write_input(atoms)
        argv = self.command()
        check_executable(argv, self.executable or get_settings().cp2k_exe, "cp2k_exe")  # before anything is written
        wd = make_workdir(workdir, "cp2k-")
        (wd / "polar.inp").write_text(text)
        out, wall = run_code(argv, wd, "cp2k.stdout", self.timeout_s,
                         check=lambda log: self.check_converged(log, workdir=wd), log_name="polar.out")
        out_path = wd / "polar.out"
        try:
            raw = parse_cp2k_polarizability(out, file=str(out_path))
        except InputError:
            raise ReferenceCalculationError(
                f"CP2K finished without a polarizability block: {tail(out)}", log=out, workdir=wd
            ) from None
        return ReferenceResult(
            alpha_A3=0.5 * (raw + raw.T),
            method=self.method,
            meta={
                "backend": "cp2k",
                "raw_alpha_A3": raw.tolist(),
                "asymmetry_A3": float(np.abs(raw - raw.T).max()),
                "wall_s": wall,
                "workdir": str(wd),
                "command": argv,
            },
        )
