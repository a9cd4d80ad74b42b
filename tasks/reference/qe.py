"""Quantum ESPRESSO DFPT: ``pw.x`` SCF, then ``ph.x`` with ``epsil=.true.`` (ε∞ → α)."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from ramanscreen.tasks.common import InputError
from ramanscreen.tasks.reference.base import (
    ReferenceCalculationError,
    ReferenceConvergenceError,
    ReferenceResult,
    alpha_from_epsilon,
    require_periodic,
)
from ramanscreen.tasks.reference.external import check_executable, command_line, make_workdir, run_code, tail
from ramanscreen.tasks.settings import get_settings

_QE_EPS = re.compile(
    r"Dielectric constant in cartesian axis\s*\n\s*\n?"
    + r"\s*\(\s*(\S+)\s+(\S+)\s+(\S+)\s*\)\s*\n" * 3
)


def parse_qe_dielectric(text: str, *, file: str | None = None) -> np.ndarray:
    """The last ``Dielectric constant in cartesian axis`` block of a ph.x output (3x3 ε∞).

    >>> block = '''
    ...           Dielectric constant in cartesian axis
    ...
    ...           (      13.055491638      -0.000000000      -0.000000000 )
    ...           (      -0.000000000      13.055491638      -0.000000000 )
    ...           (      -0.000000000      -0.000000000      13.055491638 )
    ... '''
    >>> parse_qe_dielectric(block)[1, 1]
    np.float64(13.055491638)
    """
    matches = list(_QE_EPS.finditer(text))
    if not matches:
        raise InputError(
            "no 'Dielectric constant in cartesian axis' block",
            file=file, field="epsilon", fix="run ph.x with epsil=.true. on an insulator and let it finish",
        )
    try:
        return np.array([float(v) for v in matches[-1].groups()]).reshape(3, 3)
    except ValueError:
        raise InputError("unreadable number in the dielectric block", file=file, field="epsilon") from None


def find_pseudopotentials(symbols: Sequence[str], pseudo_dir: Path) -> dict[str, str]:
    """element -> UPF file name in ``pseudo_dir`` (``Si.pbe-n-rrkjus.UPF``, ``14-Si.nlcc.UPF``…)."""
    if not pseudo_dir.is_dir():
        raise InputError("pseudopotential directory not found", file=pseudo_dir, field="qe_pseudo_dir",
                         fix="set RAMANSCREEN_QE_PSEUDO_DIR or pass pseudo_dir=")
    files = sorted(p.name for p in pseudo_dir.iterdir() if p.suffix.lower() == ".upf")
    found = {}
    for sym in dict.fromkeys(symbols):
        pat = re.compile(rf"^(?:\d+[-_.])?{sym}(?![A-Za-z])", re.IGNORECASE)
        hits = [f for f in files if pat.match(f)]
        if not hits:
            raise InputError(f"no UPF pseudopotential for {sym}", file=pseudo_dir, field="pseudopotentials",
                             fix=f"add {sym}*.UPF or pass pseudopotentials={{'{sym}': 'file.UPF'}}")
        if len(hits) > 1:
            raise InputError(f"several UPF files for {sym}: {', '.join(hits)}", file=pseudo_dir,
                             field="pseudopotentials", fix=f"pass pseudopotentials={{'{sym}': '<one of them>'}}")
        found[sym] = hits[0]
    return found


@dataclass
class QEBackend:
    """Quantum ESPRESSO DFPT ε∞ (``pw.x`` SCF, then ``ph.x`` with ``epsil=.true.``) → α.

    α = V (ε∞ − 1)/4π (module convention). The pw.x input is written by ASE's espresso
    writer; the pseudopotentials come from ``pseudo_dir`` (or ``settings.qe_pseudo_dir``) and
    their functional is used unless ``input_dft`` is given. k-points: ``kpts`` or a
    Monkhorst–Pack mesh with spacing ``kspacing_inv_A`` (2π/Å units as in VASP's KSPACING).

    >>> from ase.build import bulk
    >>> b = QEBackend(pseudo_dir="/usr/share/abinit/psp", kpts=(4, 4, 4))
    >>> "epsil=.true." in b.ph_input()
    True
    """

    ecutwfc_ry: float = 30.0
    kpts: tuple[int, int, int] | None = None
    kspacing_inv_A: float = 0.25
    kshift: tuple[int, int, int] = (1, 1, 1)
    pseudo_dir: str | os.PathLike[str] | None = None
    pseudopotentials: dict[str, str] | None = None
    input_dft: str | None = None
    conv_thr: float = 1e-10
    tr2_ph: float = 1e-14
    pw_exe: str | None = None
    ph_exe: str | None = None
    launcher: str | None = None
    mpirun: str | None = None
    timeout_s: float | None = None

    @property
    def method(self) -> str:
        dft = self.input_dft or "pseudo-XC"
        return f"qe-dfpt-epsil ({dft}, ecutwfc {self.ecutwfc_ry:g} Ry)"

    def _pseudo_dir(self) -> Path:
        pd = self.pseudo_dir if self.pseudo_dir is not None else get_settings().qe_pseudo_dir
        if pd is None:
            raise InputError("no pseudopotential directory", field="qe_pseudo_dir",
                             fix="pass --pseudo-dir or set RAMANSCREEN_QE_PSEUDO_DIR")
        return Path(pd).expanduser().resolve()

    def mesh(self, atoms: Atoms) -> tuple[int, int, int]:
        if self.kpts is not None:
            return tuple(int(k) for k in self.kpts)  # type: ignore[return-value]
        rec = np.linalg.norm(atoms.cell.reciprocal(), axis=1) * 2.0 * np.pi
        return tuple(int(max(1, math.ceil(g / self.kspacing_inv_A))) for g in rec)  # type: ignore[return-value]

    def pw_input(self, atoms: Atoms) -> str:
        import io

        import ase.io

        require_periodic(atoms, "QE ph.x epsil")
        pdir = self._pseudo_dir()
        pseudos = dict(self.pseudopotentials or {})
        missing = [s for s in dict.fromkeys(atoms.get_chemical_symbols()) if s not in pseudos]
        if missing:
            pseudos.update(find_pseudopotentials(missing, pdir))
        system: dict[str, Any] = {"ecutwfc": self.ecutwfc_ry, "occupations": "fixed"}
        if self.input_dft:
            system["input_dft"] = self.input_dft
        buf = io.StringIO()
        ase.io.write(
            buf, atoms, format="espresso-in",
            input_data={
                "control": {"calculation": "scf", "prefix": "rs", "outdir": "./tmp", "pseudo_dir": str(pdir)},
                "system": system,
                "electrons": {"conv_thr": self.conv_thr},
            },
            pseudopotentials=pseudos, kpts=self.mesh(atoms), koffset=self.kshift,
        )
        return buf.getvalue()

    def ph_input(self) -> str:
        return (
            "epsilon\n&inputph\n  prefix='rs', outdir='./tmp', epsil=.true., trans=.false.,\n"
            f"  tr2_ph={self.tr2_ph:g}, fildyn='rs.dyn'\n/\n0.0 0.0 0.0\n"
        )

    def commands(self) -> tuple[list[str], list[str]]:
        """argv of the two runs: ``launcher + mpirun + pw.x -in pw.in`` and the same for ph.x."""
        s = get_settings()
        pw = command_line(self.pw_exe or s.pw_exe, ["-in", "pw.in"], launcher=self.launcher, mpirun=self.mpirun)
        ph = command_line(self.ph_exe or s.ph_exe, ["-in", "ph.in"], launcher=self.launcher, mpirun=self.mpirun)
        return pw, ph

    def compute(self, atoms: Atoms, workdir: str | os.PathLike[str] | None = None) -> ReferenceResult:
        volume = require_periodic(atoms, "QE ph.x epsil")
        pw_text, ph_text = self.pw_input(atoms), self.ph_input()
        s = get_settings()
        pw_argv, ph_argv = self.commands()
        check_executable(pw_argv, self.pw_exe or s.pw_exe, "pw_exe")  # before anything is written
        wd = make_workdir(workdir, "qe-")
        (wd / "pw.in").write_text(pw_text)
        (wd / "ph.in").write_text(ph_text)
        def pw_check(log: str) -> None:
            if "convergence NOT achieved" in log:
                raise ReferenceConvergenceError("pw.x SCF did not converge", log=log, workdir=wd)

        def ph_check(log: str) -> None:
            if "No convergence has been achieved" in log:
                raise ReferenceConvergenceError("ph.x linear response did not converge", log=log, workdir=wd)

        pw_out, t_pw = run_code(pw_argv, wd, "pw.out", self.timeout_s, check=pw_check)
        if "JOB DONE" not in pw_out:
            raise ReferenceCalculationError(f"pw.x did not finish: {tail(pw_out)}", log=pw_out, workdir=wd)
        ph_out, t_ph = run_code(ph_argv, wd, "ph.out", self.timeout_s, check=ph_check)
        try:
            eps = parse_qe_dielectric(ph_out, file=str(wd / "ph.out"))
        except InputError:
            raise ReferenceCalculationError(f"ph.x gave no dielectric tensor: {tail(ph_out)}",
                                            log=ph_out, workdir=wd) from None
        alpha = alpha_from_epsilon(0.5 * (eps + eps.T), volume)
        xc = re.search(r"Exchange-correlation\s*=\s*(.+)", pw_out)
        return ReferenceResult(
            alpha_A3=alpha,
            method=self.method,
            meta={
                "backend": "qe",
                "epsilon_inf": eps.tolist(),
                "volume_A3": volume,
                "kpts": list(self.mesh(atoms)),
                "xc": xc.group(1).strip() if xc else "",
                "wall_s": t_pw + t_ph,
                "workdir": str(wd),
                "command": [pw_argv, ph_argv],
            },
        )
