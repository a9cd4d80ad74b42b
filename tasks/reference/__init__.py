"""Reference polarizabilities: ``Atoms -> 3x3 alpha (Å^3)`` behind one small protocol.

Every backend is a small dataclass with a ``method`` label and
``compute(atoms, workdir=None) -> ReferenceResult`` (the :class:`ReferenceBackend` protocol);
:func:`get_backend` builds one by name:

========  =======================================================================
name      what it runs
========  =======================================================================
dipole    embedded Thole-damped point-dipole model, Ewald-summed (fast, *not DFPT*)
cp2k      CP2K linear response, ``&PROPERTIES &LINRES &POLAR``, Berry-phase dipole
qe        Quantum ESPRESSO ``pw.x`` + ``ph.x`` with ``epsil=.true.`` (ε∞ → α)
========  =======================================================================

VASP DFPT OUTCARs are imported by :func:`ramanscreen.tasks.reference.vasp.import_vasp` (re-exported here).

Modules: ``base`` (result, protocol, errors, the ε∞ ↔ α convention), ``external`` (running
external codes: launcher, MPI, logs), one module per backend (``dipole``, ``cp2k``, ``qe``,
``vasp`` import), ``registry`` (:func:`get_backend`, :class:`ReferenceSettings`), ``dataset``
(extxyz α datasets) and ``selection`` (which snapshots get a reference value).

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

from ramanscreen.tasks.reference.base import (
    ReferenceBackend,
    ReferenceCalculationError,
    ReferenceConvergenceError,
    ReferenceResult,
    alpha_from_epsilon,
    epsilon_from_alpha,
)
from ramanscreen.tasks.reference.cp2k import Cp2kBackend, parse_cp2k_polarizability
from ramanscreen.tasks.reference.dataset import AlphaDataset, read_alpha_dataset, write_alpha_dataset
from ramanscreen.tasks.reference.dipole import DIPOLE_MODEL_METHOD, ION_POLARIZABILITY_A3, THOLE_A, DipoleModel
from ramanscreen.tasks.reference.qe import QEBackend, find_pseudopotentials, parse_qe_dielectric
from ramanscreen.tasks.reference.registry import (
    BACKENDS,
    ReferenceSettings,
    compute_references,
    default_series_frames,
    get_backend,
)
from ramanscreen.tasks.reference.selection import select_snapshots, structure_features
from ramanscreen.tasks.reference.vasp import VASP_METHOD, import_vasp

__all__ = [
    "BACKENDS",
    "DIPOLE_MODEL_METHOD",
    "ION_POLARIZABILITY_A3",
    "THOLE_A",
    "VASP_METHOD",
    "AlphaDataset",
    "Cp2kBackend",
    "DipoleModel",
    "QEBackend",
    "ReferenceBackend",
    "ReferenceCalculationError",
    "ReferenceConvergenceError",
    "ReferenceResult",
    "ReferenceSettings",
    "default_series_frames",
    "alpha_from_epsilon",
    "compute_references",
    "epsilon_from_alpha",
    "find_pseudopotentials",
    "get_backend",
    "import_vasp",
    "parse_cp2k_polarizability",
    "parse_qe_dielectric",
    "read_alpha_dataset",
    "select_snapshots",
    "structure_features",
    "write_alpha_dataset",
]
