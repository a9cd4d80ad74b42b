"""The embedded reference: a Thole-damped, Ewald-summed point-dipole model (fast, *not DFPT*)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from ase import Atoms

from ramanscreen.tasks.common import InputError
from ramanscreen.tasks.reference.base import (
    ReferenceCalculationError,
    ReferenceResult,
    epsilon_from_alpha,
    require_periodic,
)

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

#: Method label of the model with a bond-polarizability term switched on (still not DFPT).
DIPOLE_BOND_MODEL_METHOD = "thole-dipole-model + bond term (embedded, not DFPT)"
#: Centre–ligand distance below which a pair counts as a bond of the bond term (Å).
BOND_TERM_CUTOFF_A = 2.8


def bond_term_alpha(atoms: Atoms, bond_terms: Mapping[str, Sequence[float]],
                    cutoff_A: float = BOND_TERM_CUTOFF_A) -> np.ndarray:
    """Isotropic bond-polarizability (charge-flow) term: Σ_bonds dᾱ/dr · (r − r0) · I (Å³).

    ``bond_terms``: ``{"P-S": (r0_A, dalpha_dr_A2)}``; every pair of a centre (first element)
    and a ligand (second) closer than ``cutoff_A`` (minimum image) is a bond. Zero at r = r0, so
    it leaves the equilibrium α of the point dipoles alone and adds only what stretching bonds
    does to the electron density between them: the source of the strong, polarized ν1 lines of
    PS₄/SbS₄ that induced point dipoles miss (docs/reference.md, "Dipole model against DFT").

    >>> from ase import Atoms
    >>> ps = Atoms("PS", positions=[[0, 0, 0], [2.1, 0, 0]], cell=[10, 10, 10], pbc=True)
    >>> round(float(bond_term_alpha(ps, {"P-S": (2.0, 5.0)})[0, 0]), 6)
    0.5
    """
    from ase.geometry import get_distances

    symbols = np.array(atoms.get_chemical_symbols())
    total = 0.0
    for pair, values in bond_terms.items():
        centre, ligand = pair.split("-")
        r0, slope = (float(v) for v in values)
        ci, li = np.flatnonzero(symbols == centre), np.flatnonzero(symbols == ligand)
        if not len(ci) or not len(li):
            continue
        _, dist = get_distances(atoms.positions[ci], atoms.positions[li], cell=atoms.cell, pbc=atoms.pbc)
        r = dist[dist < cutoff_A]
        total += slope * float(np.sum(r - r0))
    return total * np.eye(3)


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
    #: Optional isotropic bond-polarizability term, off by default (:func:`bond_term_alpha`),
    #: e.g. the values fitted to CP2K in ``tasks/data/dipole_vs_dft/summary.json``.
    bond_terms: Mapping[str, Sequence[float]] | None = None
    method: str = DIPOLE_MODEL_METHOD

    def __post_init__(self) -> None:
        if self.bond_terms and self.method == DIPOLE_MODEL_METHOD:
            self.method = DIPOLE_BOND_MODEL_METHOD

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

        volume = require_periodic(atoms, "the dipole model")
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
        if self.bond_terms:
            alpha = alpha + bond_term_alpha(atoms, self.bond_terms)
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
                **({"bond_terms": {k: list(v) for k, v in self.bond_terms.items()}} if self.bond_terms else {}),
            },
        )
