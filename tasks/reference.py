"""Reference polarizabilities: ``Atoms -> 3x3 alpha (Å^3)`` behind one small protocol.

Every backend is a small dataclass with a ``method`` label and
``compute(atoms, workdir=None) -> ReferenceResult``; :func:`get_backend` builds one by name:

========  =======================================================================
name      what it runs
========  =======================================================================
dipole    embedded Thole-damped point-dipole model, Ewald-summed (fast, *not DFPT*)
cp2k      CP2K linear response, ``&PROPERTIES &LINRES &POLAR``, Berry-phase dipole
qe        Quantum ESPRESSO ``pw.x`` + ``ph.x`` with ``epsil=.true.`` (ε∞ → α)
========  =======================================================================

VASP DFPT OUTCARs are imported by :func:`ramanscreen.tasks.vasp.import_vasp` (re-exported here).

Convention (every backend, every file)
--------------------------------------
α is the electronic (clamped-ion, high-frequency) polarizability of the *whole periodic
cell* in Å³, as CP2K prints it. It is tied to the high-frequency dielectric tensor by the
macroscopic Gaussian-units relation (no Clausius–Mossotti local-field factor)::

    α = V (ε∞ − 1) / (4π)        ε∞ = 1 + 4π α / V        (V: cell volume in Å³)

This is the relation of the periodic Berry-phase (tin-foil, macroscopic-field) response
that CP2K computes; QE and VASP print ε∞, converted with it; the embedded dipole model
uses tin-foil Ewald sums, so its α obeys it too.

>>> import numpy as np
>>> from ase.build import bulk
>>> si = bulk("Si", "diamond", a=5.431)
>>> eps = 13.0 * np.eye(3)
>>> alpha = alpha_from_epsilon(eps, si.get_volume())
>>> round(float(alpha[0, 0]), 2)          # Å^3 for the 2-atom cell
38.24
>>> bool(np.allclose(epsilon_from_alpha(alpha, si.get_volume()), eps))
True
>>> nacl = bulk("NaCl", "rocksalt", a=5.64)
>>> res = get_backend("dipole").compute(nacl)
>>> res.method
'thole-dipole-model (embedded, not DFPT)'
>>> round(float(epsilon_from_alpha(res.alpha_A3, nacl.get_volume())[0, 0]), 2)
2.38
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import math
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers

from ramanscreen.tasks.common import InputError, atomic_path
from ramanscreen.tasks.settings import get_settings

__all__ = [
    "DIPOLE_MODEL_METHOD",
    "AlphaDataset",
    "Cp2kBackend",
    "DipoleModel",
    "QEBackend",
    "ReferenceCalculationError",
    "ReferenceConvergenceError",
    "ReferenceResult",
    "alpha_from_epsilon",
    "compute_references",
    "epsilon_from_alpha",
    "get_backend",
    "import_vasp",
    "parse_cp2k_polarizability",
    "parse_qe_dielectric",
    "read_alpha_dataset",
    "select_snapshots",
    "structure_features",
    "write_alpha_dataset",
]


# --------------------------------------------------------------------------------------
# Protocol, errors, convention
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReferenceResult:
    """One reference polarizability: the whole-cell α (3x3, Å³), the method, metadata."""

    alpha_A3: np.ndarray
    method: str
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        alpha = np.asarray(self.alpha_A3, dtype=float)
        if alpha.shape != (3, 3):
            raise ValueError(f"alpha_A3 must be 3x3, got shape {alpha.shape}")
        if not self.method:
            raise ValueError("every reference value needs its method name")
        object.__setattr__(self, "alpha_A3", alpha)


class ReferenceCalculationError(RuntimeError):
    """A reference code failed (crash, missing output). ``log`` holds the output tail."""

    def __init__(self, message: str, *, log: str = "", workdir: str | os.PathLike[str] | None = None) -> None:
        self.log = log
        self.workdir = None if workdir is None else Path(workdir)
        where = f" (workdir {self.workdir})" if self.workdir else ""
        super().__init__(f"{message}{where}")


class ReferenceConvergenceError(ReferenceCalculationError):
    """SCF or linear-response did not converge: a flow may retry with looser/safer settings."""


def alpha_from_epsilon(epsilon: np.ndarray, volume_A3: float) -> np.ndarray:
    """Whole-cell α (Å³) from ε∞ (3x3) and the cell volume (Å³): α = V (ε − 1)/(4π).

    >>> alpha_from_epsilon(np.eye(3) * (1 + 4 * np.pi), 1.0)[0, 0]
    np.float64(1.0)
    """
    eps = np.asarray(epsilon, dtype=float)
    return float(volume_A3) * (eps - np.eye(3)) / (4.0 * np.pi)


def epsilon_from_alpha(alpha_A3: np.ndarray, volume_A3: float) -> np.ndarray:
    """ε∞ (3x3) from the whole-cell α (Å³): ε = 1 + 4π α / V.

    >>> float(epsilon_from_alpha(np.eye(3), 4 * np.pi)[1, 1])
    2.0
    """
    return np.eye(3) + 4.0 * np.pi * np.asarray(alpha_A3, dtype=float) / float(volume_A3)


def _require_periodic(atoms: Atoms, what: str) -> float:
    if len(atoms) == 0:
        raise InputError("structure has no atoms", field="atoms", fix="pass a non-empty structure")
    if not np.all(atoms.pbc):
        raise InputError(
            f"{what} needs a 3D-periodic cell (pbc={list(map(bool, atoms.pbc))})",
            field="pbc",
            fix="give the structure a cell and pbc=True (molecules: put them in a box)",
        )
    volume = abs(float(np.linalg.det(atoms.cell.array)))
    if volume < 1e-6:
        raise InputError("cell volume is zero", field="cell", fix="give the structure its lattice vectors")
    return volume


# --------------------------------------------------------------------------------------
# (d) Embedded Thole-damped point-dipole model
# --------------------------------------------------------------------------------------
#: Label stored with every value of the embedded model: it is never DFPT.
DIPOLE_MODEL_METHOD = "thole-dipole-model (embedded, not DFPT)"

#: Electronic (optical) ion polarizabilities, Å³, used by :class:`DipoleModel`.
#:
#: * Tessman, Kahn & Shockley, Phys. Rev. 92, 890 (1953) (TKS; fit to refractive indices
#:   with the Lorentz factor 4π/3, i.e. the local-field physics of this model): Li, Na, K, Rb,
#:   Cs, Ag, Cu, Zn, Cd, Ca, Sr, Ba, Ge, Sn, Pb, F, Cl, Br, I.
#: * Anions TKS call non-additive (O2- 0.5-3.2, S2- 4.8-5.9, Se2- 6.0-7.5, Te2- 8.3-10.2)
#:   take a value inside that range: O from ε∞(Li2O) = 2.68, S from ε∞(ZnS) = 5.1, Se and Te
#:   mid-range.
#: * Highly charged cations (Zr4+, La3+, P5+, Sb5+, W6+, Ti4+, Nb5+, Ta5+, …) have small,
#:   covalency-dependent values; they are order-of-magnitude estimates (Zr from
#:   ε∞(c-ZrO2) ≈ 4.65 with O above), in line with the small cation polarizabilities of
#:   Shannon & Fischer, Am. Mineral. 101, 2288 (2016). Their effect is minor next to the anions'.
#:
#: ε∞ checks of the model against experiment are tabulated in docs/reference.md. It is a
#: fast, physically shaped stand-in for DFPT, never a substitute for it.
ION_POLARIZABILITY_A3: dict[str, float] = {
    # TKS 1953
    "Li": 0.03, "Na": 0.41, "K": 1.33, "Rb": 1.98, "Cs": 3.34, "Ag": 2.4, "Cu": 1.6,
    "Zn": 0.8, "Cd": 1.8, "Ca": 1.1, "Sr": 1.6, "Ba": 2.5, "Ge": 1.0, "Sn": 3.4, "Pb": 4.9,
    "F": 0.64, "Cl": 2.96, "Br": 4.16, "I": 6.43,
    # inside the TKS ranges
    "O": 2.0, "S": 4.9, "Se": 6.7, "Te": 9.0,
    # small, highly charged cations: estimates
    "Be": 0.01, "B": 0.01, "Mg": 0.1, "Al": 0.05, "Si": 0.02, "P": 0.05, "Ga": 0.2, "In": 0.7,
    "As": 0.3, "Sb": 0.8, "Bi": 1.5, "Sc": 0.3, "Y": 0.6, "La": 1.0, "Ti": 0.2, "Zr": 0.35,
    "Hf": 0.35, "Nb": 0.3, "Ta": 0.3, "Mo": 0.3, "W": 0.3,
}

#: Thole's damping constant for the exp(-a u^3) smearing (Thole 1981's value; the AMOEBA
#: force field uses the same form with a = 0.39, Ren & Ponder, J. Phys. Chem. B 107, 5933
#: (2003)). With a = 0.572 the pair response stays finite at any distance.
THOLE_A = 0.572


def _ewald_parameters(real_cutoff_A: float, tol: float) -> tuple[float, float]:
    """Splitting η (1/Å) and reciprocal cutoff k_max (1/Å) for a real-space cutoff and tolerance."""
    s = math.sqrt(-math.log(tol))
    eta = s / real_cutoff_A
    return eta, 2.0 * eta * s


def _pairs_within(pos: np.ndarray, cell: np.ndarray, cutoff: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs (i, j, d = r_j + shift − r_i) with 0 < |d| < cutoff over periodic images.

    Vectorised over atom pairs and lattice shifts (in chunks of bounded memory).
    """
    n = len(pos)
    frac = pos @ np.linalg.inv(cell)
    dfrac = frac[None, :, :] - frac[:, None, :]
    dfrac -= np.round(dfrac)  # minimum-image start, then scan neighbouring images
    base = (dfrac @ cell).reshape(-1, 3)
    heights = abs(np.linalg.det(cell)) / np.linalg.norm(np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1)
    nmax = np.ceil(cutoff / heights + 0.5).astype(int)
    grids = np.meshgrid(*[np.arange(-m, m + 1) for m in nmax], indexing="ij")
    shifts = np.stack([g.ravel() for g in grids], axis=1) @ cell  # (S, 3)
    out_i, out_j, out_d = [], [], []
    cut2 = cutoff * cutoff
    step = max(1, 2_000_000 // max(1, n * n))  # shifts per chunk: bounded memory
    for s0 in range(0, len(shifts), step):
        d = base[None, :, :] + shifts[s0 : s0 + step, None, :]  # (s, N*N, 3)
        r2 = np.einsum("spa,spa->sp", d, d)
        s_idx, p_idx = np.nonzero((r2 < cut2) & (r2 > 1e-12))
        if len(p_idx):
            out_i.append(p_idx // n)
            out_j.append(p_idx % n)
            out_d.append(d[s_idx, p_idx])
    if not out_i:
        return np.zeros(0, int), np.zeros(0, int), np.zeros((0, 3))
    return np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_d)


@dataclass
class DipoleModel:
    """Embedded fast reference: Thole-damped induced point dipoles in a periodic cell.

    Each ion *i* carries an isotropic electronic polarizability α_i (Å³,
    :data:`ION_POLARIZABILITY_A3`). In a uniform macroscopic field **E** the induced dipoles
    solve ``μ_i = α_i (E + Σ_j T_ij μ_j)`` with the dipole field tensor ``T`` Ewald-summed
    over all periodic images with tin-foil boundary conditions (no k=0 surface term). The cell
    polarizability is ``α = Σ_ij B_ij`` with ``B = (diag(1/α_i) − T)^-1``, i.e. exactly the
    macroscopic response of the convention α = V (ε∞ − 1)/4π. For a lattice of cubic sites
    and negligible damping the model is exactly Clausius–Mossotti, the relation the TKS ion
    values were fitted with (tested on a simple-cubic lattice).

    Short-range dipole-dipole coupling is damped with Thole's exponential charge smearing,
    ``λ3 = 1 − exp(−a u³)``, ``λ5 = 1 − (1 + a u³) exp(−a u³)``, ``u = r / (α_i α_j)^{1/6}``
    (B. T. Thole, Chem. Phys. 59, 341 (1981), a = 0.572; the same scheme is reviewed and
    refitted by P. Th. van Duijnen & M. Swart, J. Phys. Chem. A 102, 2399 (1998)), which
    removes the polarisation catastrophe of close ions (distorted MD snapshots stay stable).
    The anisotropic, geometry-dependent α it produces is the dipole-induced-dipole (DID)
    mechanism of light scattering, so it responds to local disorder and rotates exactly with
    the structure. Ion values: Tessman, Kahn & Shockley, Phys. Rev. 92, 890 (1953); Shannon &
    Fischer, Am. Mineral. 101, 2288 (2016) (see :data:`ION_POLARIZABILITY_A3`).

    Every value it returns carries ``method = "thole-dipole-model (embedded, not DFPT)"``.

    >>> from ase.build import bulk
    >>> agi = bulk("AgI", "zincblende", a=6.50)
    >>> res = DipoleModel().compute(agi)
    >>> round(float(epsilon_from_alpha(res.alpha_A3, agi.get_volume())[2, 2]), 2)
    4.0
    """

    #: Override or extend the ion polarizabilities (Å³), e.g. ``{"O": 2.0}``.
    polarizabilities_A3: dict[str, float] | None = None
    thole_a: float = THOLE_A
    #: Real-space Ewald cutoff (Å) and the relative accuracy of the Ewald sums.
    real_cutoff_A: float = 11.0
    ewald_tol: float = 1e-8
    method: str = DIPOLE_MODEL_METHOD

    def ion_polarizabilities(self, symbols: Sequence[str]) -> np.ndarray:
        table = {**ION_POLARIZABILITY_A3, **(self.polarizabilities_A3 or {})}
        missing = sorted({s for s in symbols if s not in table})
        if missing:
            raise InputError(
                f"the embedded dipole model has no polarizability for {', '.join(missing)}",
                field="symbols",
                fix="pass polarizabilities_A3={'X': value_A3} or use the cp2k/qe backend",
            )
        values = np.array([table[s] for s in symbols], dtype=float)
        if np.any(values <= 0):
            raise InputError("ion polarizabilities must be positive", field="polarizabilities_A3")
        return values

    def interaction_tensor(self, atoms: Atoms, alpha_i: np.ndarray) -> np.ndarray:
        """Thole-damped, Ewald-summed dipole field tensor T (3N x 3N, 1/Å³), tin-foil."""
        n = len(atoms)
        cell = atoms.cell.array
        volume = abs(float(np.linalg.det(cell)))
        eta, kmax = _ewald_parameters(self.real_cutoff_A, self.ewald_tol)
        pos = atoms.positions
        T = np.zeros((n, 3, n, 3))

        # Real space: erfc-screened tensor over all images (i != j or image != 0).
        i, j, d = _pairs_within(pos, cell, self.real_cutoff_A)
        r = np.sqrt(np.einsum("pa,pa->p", d, d))
        from scipy.special import erfc

        er = erfc(eta * r)
        gauss = (2.0 * eta / math.sqrt(math.pi)) * np.exp(-(eta * r) ** 2)
        b1 = (er + gauss * r) / r**3
        b2 = (3.0 * er + gauss * r * (3.0 + 2.0 * (eta * r) ** 2)) / r**5
        # Thole correction (damped minus bare) for close pairs.
        u3 = r**3 / np.sqrt(alpha_i[i] * alpha_i[j])
        ex = np.exp(-self.thole_a * u3)
        l3m1 = -ex
        l5m1 = -(1.0 + self.thole_a * u3) * ex
        c_rr = b2 + 3.0 * l5m1 / r**5
        c_id = b1 + l3m1 / r**3
        pair = c_rr[:, None, None] * d[:, :, None] * d[:, None, :] - c_id[:, None, None] * np.eye(3)
        flat = i * n + j
        for a in range(3):
            for b in range(3):
                T[:, a, :, b] += np.bincount(flat, weights=pair[:, a, b], minlength=n * n).reshape(n, n)

        # Reciprocal space: half sphere of k (k and -k contribute equally).
        rec = 2.0 * np.pi * np.linalg.inv(cell).T
        nmax = np.ceil(kmax * np.linalg.norm(cell, axis=1) / (2.0 * np.pi)).astype(int)
        grids = np.meshgrid(*[np.arange(-m, m + 1) for m in nmax], indexing="ij")
        hkl = np.stack([g.ravel() for g in grids], axis=1)
        first = np.argmax(hkl != 0, axis=1)
        positive = hkl[np.arange(len(hkl)), first] > 0
        hkl = hkl[positive & np.any(hkl != 0, axis=1)]
        kvec = hkl @ rec
        k2 = np.einsum("ka,ka->k", kvec, kvec)
        keep = k2 <= kmax**2
        kvec, k2 = kvec[keep], k2[keep]
        if len(kvec):
            w = 2.0 * (4.0 * np.pi / volume) * np.exp(-k2 / (4.0 * eta**2)) / k2
            phase = pos @ kvec.T  # (N, K)
            cos, sin = np.cos(phase), np.sin(phase)
            for a in range(3):
                for b in range(a, 3):
                    wab = w * kvec[:, a] * kvec[:, b]
                    block = -((cos * wab) @ cos.T + (sin * wab) @ sin.T)
                    T[:, a, :, b] += block
                    if b != a:
                        T[:, b, :, a] += block
        # Self term of the Gaussian screening charge.
        self_field = 4.0 * eta**3 / (3.0 * math.sqrt(math.pi))
        idx = np.arange(n)
        T[idx, :, idx, :] += self_field * np.eye(3)
        return T.reshape(3 * n, 3 * n)

    def compute(self, atoms: Atoms, workdir: str | os.PathLike[str] | None = None) -> ReferenceResult:
        """Whole-cell α (Å³) of ``atoms``; ``workdir`` is unused (kept for the protocol)."""
        from scipy.linalg import LinAlgError, cho_factor, cho_solve

        volume = _require_periodic(atoms, "the dipole model")
        symbols = atoms.get_chemical_symbols()
        alpha_i = self.ion_polarizabilities(symbols)
        n = len(atoms)
        T = self.interaction_tensor(atoms, alpha_i)
        M = np.diag(np.repeat(1.0 / alpha_i, 3)) - 0.5 * (T + T.T)
        fields = np.tile(np.eye(3), (n, 1))  # unit field along x, y, z on every ion
        try:
            mu = cho_solve(cho_factor(M, lower=True), fields)
        except LinAlgError:
            raise ReferenceCalculationError(
                "polarisation catastrophe: the dipole equations are not positive definite "
                "(ions far too close?)"
            ) from None
        alpha = mu.reshape(n, 3, 3).sum(axis=0)
        alpha = 0.5 * (alpha + alpha.T)
        eps = epsilon_from_alpha(alpha, volume)
        return ReferenceResult(
            alpha_A3=alpha,
            method=self.method,
            meta={
                "backend": "dipole",
                "volume_A3": volume,
                "epsilon_inf_trace3": float(np.trace(eps) / 3.0),
                "thole_a": self.thole_a,
                "polarizability_overrides_A3": dict(self.polarizabilities_A3 or {}),
            },
        )


# --------------------------------------------------------------------------------------
# Running external codes
# --------------------------------------------------------------------------------------
def _command(exe: str, args: Sequence[str], *, launcher: str | None, mpirun: str | None) -> list[str]:
    """``launcher + mpirun + exe + args`` (launcher outermost: ``srun``, ``apptainer exec IMG``)."""
    import shlex

    settings = get_settings()
    launcher_argv = settings.launcher_argv() if launcher is None else shlex.split(launcher)
    mpirun_argv = settings.mpirun_argv() if mpirun is None else shlex.split(mpirun)
    return [*launcher_argv, *mpirun_argv, exe, *args]


def _check_executable(argv: list[str], exe: str, setting: str) -> None:
    # Only when nothing wraps the executable: inside a container it need not exist on the host.
    if (argv[0] == exe or Path(argv[0]).name in {"mpirun", "mpiexec"}) and shutil.which(exe) is None:
        raise InputError(
            f"executable {exe!r} not found on PATH",
            field=setting,
            fix=f"install it or set RAMANSCREEN_{setting.upper()} (or a launcher prefix)",
        )


def _run(
    argv: list[str],
    workdir: Path,
    stdout_name: str,
    timeout_s: float | None,
    check: Callable[[str], None] | None = None,
    log_name: str | None = None,
) -> tuple[str, float]:
    """Run ``argv`` in ``workdir`` (stdout+stderr to ``stdout_name``); ``check(log)`` runs on
    the log (``log_name`` or stdout) *before* the exit code is judged, so that a code that
    stops on non-convergence raises :class:`ReferenceConvergenceError`, not a generic failure."""
    t0 = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    with open(workdir / stdout_name, "w") as out:
        try:
            proc = subprocess.run(
                argv, cwd=workdir, stdout=out, stderr=subprocess.STDOUT, timeout=timeout_s, env=env, check=False
            )
        except subprocess.TimeoutExpired:
            raise ReferenceCalculationError(f"{argv[0]} timed out after {timeout_s} s", workdir=workdir) from None
        except FileNotFoundError:
            raise InputError(
                f"cannot execute {argv[0]!r}", field="reference_launcher", fix="check the launcher/mpirun settings"
            ) from None
    text = (workdir / stdout_name).read_text(errors="replace")
    log_path = workdir / (log_name or stdout_name)
    log = log_path.read_text(errors="replace") if log_path.is_file() else ""
    if check is not None:
        check(log)
    if proc.returncode != 0:
        raise ReferenceCalculationError(
            f"{' '.join(argv)} exited with code {proc.returncode}: {_tail(log + text)}", log=log + text, workdir=workdir
        )
    return log, time.perf_counter() - t0


def _tail(text: str, n: int = 6) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(lines[-n:])


def _workdir(workdir: str | os.PathLike[str] | None, prefix: str) -> Path:
    if workdir is None:
        import tempfile

        root = get_settings().scratch_dir
        root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=prefix, dir=root))
    path = Path(workdir)
    path.mkdir(parents=True, exist_ok=True)
    return path


# --------------------------------------------------------------------------------------
# (a) CP2K linear response
# --------------------------------------------------------------------------------------
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
        _require_periodic(atoms, "CP2K &POLAR")
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
        return _command(exe, ["-i", input_name, "-o", output_name], launcher=self.launcher, mpirun=self.mpirun)

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
        wd = _workdir(workdir, "cp2k-")
        (wd / "polar.inp").write_text(text)
        argv = self.command()
        _check_executable(argv, self.executable or get_settings().cp2k_exe, "cp2k_exe")
        out, wall = _run(argv, wd, "cp2k.stdout", self.timeout_s,
                         check=lambda log: self.check_converged(log, workdir=wd), log_name="polar.out")
        out_path = wd / "polar.out"
        try:
            raw = parse_cp2k_polarizability(out, file=str(out_path))
        except InputError:
            raise ReferenceCalculationError(
                f"CP2K finished without a polarizability block: {_tail(out)}", log=out, workdir=wd
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


# --------------------------------------------------------------------------------------
# (b) Quantum ESPRESSO pw.x + ph.x (epsil)
# --------------------------------------------------------------------------------------
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

        _require_periodic(atoms, "QE ph.x epsil")
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
        pw = _command(self.pw_exe or s.pw_exe, ["-in", "pw.in"], launcher=self.launcher, mpirun=self.mpirun)
        ph = _command(self.ph_exe or s.ph_exe, ["-in", "ph.in"], launcher=self.launcher, mpirun=self.mpirun)
        return pw, ph

    def compute(self, atoms: Atoms, workdir: str | os.PathLike[str] | None = None) -> ReferenceResult:
        volume = _require_periodic(atoms, "QE ph.x epsil")
        pw_text, ph_text = self.pw_input(atoms), self.ph_input()
        wd = _workdir(workdir, "qe-")
        (wd / "pw.in").write_text(pw_text)
        (wd / "ph.in").write_text(ph_text)
        s = get_settings()
        pw_argv, ph_argv = self.commands()
        _check_executable(pw_argv, self.pw_exe or s.pw_exe, "pw_exe")
        def pw_check(log: str) -> None:
            if "convergence NOT achieved" in log:
                raise ReferenceConvergenceError("pw.x SCF did not converge", log=log, workdir=wd)

        def ph_check(log: str) -> None:
            if "No convergence has been achieved" in log:
                raise ReferenceConvergenceError("ph.x linear response did not converge", log=log, workdir=wd)

        pw_out, t_pw = _run(pw_argv, wd, "pw.out", self.timeout_s, check=pw_check)
        if "JOB DONE" not in pw_out:
            raise ReferenceCalculationError(f"pw.x did not finish: {_tail(pw_out)}", log=pw_out, workdir=wd)
        ph_out, t_ph = _run(ph_argv, wd, "ph.out", self.timeout_s, check=ph_check)
        try:
            eps = parse_qe_dielectric(ph_out, file=str(wd / "ph.out"))
        except InputError:
            raise ReferenceCalculationError(f"ph.x gave no dielectric tensor: {_tail(ph_out)}",
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


# --------------------------------------------------------------------------------------
# Backend registry and batch compute
# --------------------------------------------------------------------------------------
BACKENDS: dict[str, Callable[..., Any]] = {"dipole": DipoleModel, "cp2k": Cp2kBackend, "qe": QEBackend}


def get_backend(name: str, **kw: Any) -> DipoleModel | Cp2kBackend | QEBackend:
    """Build a backend by name (``dipole``, ``cp2k``, ``qe``) with dataclass keyword options.

    >>> get_backend("cp2k", cutoff_ry=300).cutoff_ry
    300
    """
    key = name.lower().strip()
    if key not in BACKENDS:
        raise InputError(f"unknown reference backend {name!r}", field="backend", fix=f"use one of {', '.join(BACKENDS)}")
    cls = BACKENDS[key]
    known = {f.name for f in dataclasses.fields(cls)}
    bad = sorted(set(kw) - known)
    if bad:
        raise InputError(f"unknown option(s) {', '.join(bad)} for backend {key}", field="backend",
                         fix=f"use some of {', '.join(sorted(known))}")
    return cls(**kw)


def compute_references(
    frames: Sequence[Atoms],
    backend: Any,
    workdir: str | os.PathLike[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[ReferenceResult]:
    """Run ``backend.compute`` on every frame (one sub-directory ``frame_00000``… per frame)."""
    results = []
    for k, atoms in enumerate(frames):
        wd = None if workdir is None else Path(workdir) / f"frame_{k:05d}"
        results.append(backend.compute(atoms, workdir=wd))
        if progress:
            progress(k + 1, len(frames))
    return results


# --------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------
@dataclass
class AlphaDataset:
    """Frames with their reference α: ``alpha_A3`` (n, 3, 3), one method/source/md_step each."""

    frames: list[Atoms]
    alpha_A3: np.ndarray
    methods: list[str]
    sources: list[str]
    md_steps: np.ndarray

    def __len__(self) -> int:
        return len(self.frames)


def write_alpha_dataset(
    frames: Sequence[Atoms], results: Sequence[ReferenceResult], path: str | os.PathLike[str]
) -> Path:
    """Write frames + reference α as extxyz (``info``: polarizability (9, Å³, row-major),
    alpha_method, source, md_step, alpha_meta JSON). Validated first; written atomically.

    >>> import tempfile, pathlib
    >>> from ase.build import bulk
    >>> a = bulk("NaCl", "rocksalt", a=5.64)
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "ds.extxyz"
    >>> _ = write_alpha_dataset([a], [ReferenceResult(np.eye(3), "test")], p)
    >>> ds = read_alpha_dataset(p)
    >>> ds.methods, ds.alpha_A3.shape
    (['test'], (1, 3, 3))
    """
    import ase.io

    path = Path(path)
    if len(frames) != len(results):
        raise InputError(f"{len(frames)} frames but {len(results)} results", file=path, field="results")
    if not frames:
        raise InputError("nothing to write: no frames", file=path, field="frames")
    out = []
    for k, (atoms, res) in enumerate(zip(frames, results, strict=False)):
        alpha = np.asarray(res.alpha_A3, dtype=float)
        if alpha.shape != (3, 3) or not np.all(np.isfinite(alpha)):
            raise InputError(f"frame {k}: α must be a finite 3x3 tensor", file=path, field="polarizability")
        a = Atoms(atoms.get_chemical_symbols(), positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        a.info["polarizability"] = alpha.reshape(9)
        a.info["alpha_method"] = res.method
        source = str(res.meta.get("source", atoms.info.get("source", ""))).strip()
        if source:  # an empty value would garble the extxyz comment line
            a.info["source"] = source
        a.info["md_step"] = int(res.meta.get("md_step", atoms.info.get("md_step", -1)))
        meta = {k2: v for k2, v in res.meta.items() if k2 not in ("source", "md_step")}
        a.info["alpha_meta"] = json.dumps(meta, default=str, separators=(",", ":")).replace('"', "'")
        out.append(a)
    with atomic_path(path) as tmp:
        ase.io.write(tmp, out, format="extxyz")
    return path


def read_alpha_dataset(path: str | os.PathLike[str]) -> AlphaDataset:
    """Read an α dataset written by :func:`write_alpha_dataset` (or any extxyz with
    ``polarizability`` in info). Raises :class:`InputError` on a missing file or missing α."""
    import ase.io

    path = Path(path)
    if not path.is_file():
        raise InputError("α dataset not found", file=path, fix="check the path")
    try:
        frames = ase.io.read(path, index=":", format="extxyz")
    except Exception as exc:  # noqa: BLE001 - any parse failure is bad input
        raise InputError(f"cannot read as extxyz ({type(exc).__name__}: {exc})", file=path,
                         fix="pass an extxyz dataset written by `ramanscreen reference` or `import-vasp`") from None
    if not frames:
        raise InputError("dataset holds no frames", file=path)
    alphas, methods, sources, steps = [], [], [], []
    for k, a in enumerate(frames):
        if "polarizability" not in a.info:
            raise InputError(f"frame {k} has no 'polarizability' in its info line", file=path,
                             field="polarizability", fix="compute it with `ramanscreen reference`")
        alpha = np.asarray(a.info["polarizability"], dtype=float).reshape(-1)
        if alpha.size != 9 or not np.all(np.isfinite(alpha)):
            raise InputError(f"frame {k}: polarizability must be 9 finite numbers", file=path, field="polarizability")
        alphas.append(alpha.reshape(3, 3))
        methods.append(str(a.info.get("alpha_method", "unknown")))
        sources.append(str(a.info.get("source", "")))
        steps.append(int(a.info.get("md_step", -1)))
    return AlphaDataset(list(frames), np.array(alphas), methods, sources, np.array(steps, dtype=int))


# --------------------------------------------------------------------------------------
# Snapshot selection
# --------------------------------------------------------------------------------------
def structure_features(frames: Sequence[Atoms], cutoff_A: float = 5.0) -> np.ndarray:
    """Per-structure invariant features: featomic SOAP power spectrum summed over atoms, per
    atom of the structure (rows: frames). Used for farthest-point sampling."""
    import featomic
    import metatensor

    calc = featomic.SoapPowerSpectrum(
        cutoff={"radius": cutoff_A, "smoothing": {"type": "ShiftedCosine", "width": 0.5}},
        density={"type": "Gaussian", "width": 0.5},
        basis={"type": "TensorProduct", "max_angular": 4, "radial": {"type": "Gto", "max_radial": 4}},
    )
    desc = calc.compute(list(frames))
    desc = desc.keys_to_properties(["neighbor_1_type", "neighbor_2_type"])
    desc = metatensor.sum_over_samples(desc, "atom")
    desc = desc.keys_to_properties("center_type")
    values = np.asarray(desc.block().values)
    order = np.asarray(desc.block().samples.values[:, 0])
    feats = np.zeros_like(values)
    feats[order] = values
    return feats / np.array([len(a) for a in frames])[:, None]


def select_snapshots(
    frames: Sequence[Atoms] | int,
    n: int,
    *,
    method: str = "random",
    seed: int = 0,
    features: np.ndarray | None = None,
) -> np.ndarray:
    """Indices of ``n`` snapshots for reference calculations.

    ``random`` (as in the paper): sorted, without replacement, reproducible by ``seed``.
    ``fps``: greedy farthest-point sampling in a standardised feature space (``features``
    (n_frames, n_features), default :func:`structure_features`), in selection order, starting
    from the frame farthest from the mean (deterministic).

    >>> select_snapshots(10, 3, seed=1).tolist()
    [3, 4, 7]
    >>> x = np.array([[0.0], [0.1], [5.0], [10.0]])
    >>> select_snapshots(4, 3, method="fps", features=x).tolist()
    [3, 0, 2]
    """
    n_frames = frames if isinstance(frames, int) else len(frames)
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError(f"number of snapshots must be a positive integer, got {n!r}", field="n")
    if n > n_frames:
        raise InputError(f"asked for {n} snapshots but there are only {n_frames} frames", field="n",
                         fix=f"use n <= {n_frames}")
    if method == "random":
        rng = np.random.default_rng(seed)
        return np.sort(rng.choice(n_frames, size=n, replace=False))
    if method != "fps":
        raise InputError(f"unknown selection method {method!r}", field="method", fix="use 'random' or 'fps'")
    if features is None:
        if isinstance(frames, int):
            raise InputError("fps needs frames or features", field="features")
        features = structure_features(frames)
    x = np.asarray(features, dtype=float).reshape(n_frames, -1)
    scale = x.std(axis=0)
    x = (x - x.mean(axis=0)) / np.where(scale > 0, scale, 1.0)
    chosen = [int(np.argmax(np.einsum("ij,ij->i", x, x)))]
    dist = np.einsum("ij,ij->i", x - x[chosen[0]], x - x[chosen[0]])
    for _ in range(n - 1):
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        d = x - x[nxt]
        dist = np.minimum(dist, np.einsum("ij,ij->i", d, d))
    return np.array(chosen)


def import_vasp(*args: Any, **kwargs: Any) -> Any:
    """See :func:`ramanscreen.tasks.vasp.import_vasp` (VASP MD + DFPT OUTCARs → α dataset)."""
    from ramanscreen.tasks.vasp import import_vasp as _impl

    return _impl(*args, **kwargs)


def _open_text(path: Path) -> str:
    """Read a text file, transparently gunzipping ``*.gz``."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rt", errors="replace") as fh:
                return fh.read()
        return path.read_text(errors="replace")
    except (OSError, EOFError) as exc:
        raise InputError(f"cannot read file ({exc.__class__.__name__}: {exc})", file=path,
                         fix="check the file is complete and readable") from None

