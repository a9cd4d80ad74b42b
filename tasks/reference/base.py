"""The reference-α contract: the result type, the backend protocol, errors and the ε∞ ↔ α convention.

α is the electronic (clamped-ion, high-frequency) polarizability of the *whole periodic
cell* in Å³, tied to ε∞ by α = V (ε∞ − 1)/(4π) (see :mod:`ramanscreen.tasks.reference`).

>>> alpha_from_epsilon(np.eye(3) * (1 + 4 * np.pi), 1.0)[0, 0]
np.float64(1.0)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from ase import Atoms

from ramanscreen.tasks.common import InputError


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



@runtime_checkable
class ReferenceBackend(Protocol):
    """What every backend is: a ``method`` label stored with each value, and ``compute``.

    One hook per backend (atomate2 style): the flows and the CLI only call ``compute``;
    everything backend-specific (inputs, executables, parsing) stays in its module.

    >>> from ramanscreen.tasks.reference import DipoleModel
    >>> isinstance(DipoleModel(), ReferenceBackend)
    True
    """

    @property
    def method(self) -> str: ...

    def compute(self, atoms: Atoms, workdir: str | os.PathLike[str] | None = None) -> ReferenceResult: ...


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


def require_periodic(atoms: Atoms, what: str) -> float:
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
