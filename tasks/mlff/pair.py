"""A two-body spline term fitted with the SNAP, run in LAMMPS as ``pair_style table``.

A SNAP's bispectrum has one radial scale (the mapping of the neighbour ball onto the 3-sphere),
so it resolves distances poorly: stiff bonds (P–S in PS₄, Sb–S in SbS₄) and the longer-range
pair part of the teacher are what a linear SNAP misses most. A pair energy
E₂ = Σ_{i<j} φ_{t_i t_j}(r_ij), with each φ a cubic B-spline on knots every ``knot_A`` from
``inner_A[pair]`` to ``cutoff_A``, is linear in the spline coefficients: its energy, force and
virial rows are appended to the ``compute snap`` rows and fitted in the same least-squares
problem. The three B-splines that do not vanish at the cutoff are left out, so φ, φ′ and φ″ go
to zero there. Below ``inner_A`` (the shortest distance of that pair in the training frames,
minus a margin) φ continues linearly; ZBL still takes over below 1–1.5 Å.

For LAMMPS the fitted φ is tabulated (``pair_style table spline``), one table per element pair,
energies and forces from the spline itself.

>>> import numpy as np
>>> basis = PairBasis(["Na", "S"], {"Na-Na": 2.5, "Na-S": 2.3, "S-S": 3.0}, cutoff_A=6.0, knot_A=0.25)
>>> basis.pairs, basis.n_columns
(['Na-Na', 'Na-S', 'S-S'], 41)
>>> r = np.array([2.0, 3.0, 5.999])  # Å
>>> phi, dphi = basis.basis("Na-S", r)
>>> phi.shape, bool(np.abs(phi[-1]).max() < 1e-6)  # φ → 0 smoothly at the cutoff
((3, 15), True)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers
from ase.neighborlist import neighbor_list
from scipy.interpolate import BSpline

from ramanscreen.tasks.common import InputError, atomic_write

#: Voigt order of the virial rows of ``compute snap`` (xx, yy, zz, yz, xz, xy).
_VOIGT_I = np.array([0, 1, 2, 1, 0, 0])
_VOIGT_J = np.array([0, 1, 2, 2, 2, 1])
#: Margin (Å) below the shortest training distance of a pair where the spline starts.
INNER_MARGIN_A = 0.1
#: Start of the LAMMPS table (Å); a distance below it would stop LAMMPS.
TABLE_START_A = 0.05
TABLE_POINTS = 6000
#: A pair whose shortest training distance leaves fewer knot intervals than this below the
#: cutoff gets no spline (e.g. Sb–Sb in Na₃SbS₄, ≥ 5.5 Å apart, with a 6 Å cutoff).
MIN_SPAN_KNOTS = 4


def pair_key(a: str, b: str) -> str:
    """Element pair name, lighter element first (``"Na-S"``)."""
    x, y = sorted((a, b), key=lambda e: (atomic_numbers[e], e))
    return f"{x}-{y}"


def shortest_distances(frames: Sequence[Atoms], elements: Sequence[str], cutoff_A: float) -> dict[str, float]:
    """Shortest distance (Å) of each element pair within ``cutoff_A`` over ``frames``."""
    out: dict[str, float] = {}
    for a in frames:
        i, j, d = neighbor_list("ijd", a, cutoff_A)
        if not len(d):
            continue
        sym = np.array(a.get_chemical_symbols())
        keys = np.array([pair_key(x, y) for x, y in zip(sym[i], sym[j], strict=True)])
        for k in np.unique(keys):
            out[str(k)] = min(out.get(str(k), np.inf), float(d[keys == k].min()))
    return out


def inner_radii(frames: Sequence[Atoms], elements: Sequence[str], cutoff_A: float) -> dict[str, float]:
    """Where each pair's spline starts: the shortest training distance minus :data:`INNER_MARGIN_A`,
    rounded down to 0.05 Å (a pair never seen within the cutoff gets ``cutoff_A / 2``)."""
    seen = shortest_distances(frames, elements, cutoff_A)
    out = {}
    for ia, a in enumerate(elements):
        for b in elements[ia:]:
            key = pair_key(a, b)
            r = seen.get(key, cutoff_A / 2 + INNER_MARGIN_A) - INNER_MARGIN_A
            out[key] = max(0.5, float(np.floor(r / 0.05) * 0.05))
    return out


class PairBasis:
    """Cubic B-spline basis per element pair; rows in the LAMMPS layout of ``compute snap``."""

    def __init__(self, elements: Sequence[str], inner_A: Mapping[str, float], *, cutoff_A: float,
                 knot_A: float) -> None:
        self.elements = list(elements)
        self.cutoff_A = float(cutoff_A)
        self.knot_A = float(knot_A)
        self.pairs: list[str] = []
        for ia, a in enumerate(self.elements):
            for b in self.elements[ia:]:
                self.pairs.append(pair_key(a, b))
        missing = [p for p in self.pairs if p not in inner_A]
        if missing:
            raise InputError(f"no inner radius for the pairs {', '.join(missing)}", field="pair_inner_A",
                             fix="refit the potential (the radii come from the training frames)")
        self.inner_A = {p: float(inner_A[p]) for p in self.pairs}
        self._knots: dict[str, np.ndarray] = {}
        self._offset: dict[str, int] = {}
        self._size: dict[str, int] = {}
        col = 0
        for p in self.pairs:
            lo = self.inner_A[p]
            if not lo > 0:
                raise InputError(f"inner radius {lo} Å of {p} must be positive", field="pair_inner_A",
                                 fix="refit the potential (the radii come from the training frames)")
            self._offset[p] = col
            if lo > self.cutoff_A - MIN_SPAN_KNOTS * self.knot_A:  # (nearly) never within the cutoff: no spline
                self._size[p] = 0
                continue
            n_int = max(int(np.ceil((self.cutoff_A - lo) / self.knot_A)), 4)
            inner = np.linspace(lo, self.cutoff_A, n_int + 1)
            t = np.concatenate([[lo] * 3, inner, [self.cutoff_A] * 3])
            self._knots[p] = t
            self._size[p] = len(t) - 4 - 3  # drop the three splines alive at the cutoff
            col += self._size[p]
        self.n_columns = col
        pair_index = {p: k for k, p in enumerate(self.pairs)}
        n_el = len(self.elements)
        self._type_pair = np.array([[pair_index[pair_key(a, b)] for b in self.elements] for a in self.elements])
        assert self._type_pair.shape == (n_el, n_el)

    @property
    def splined(self) -> list[str]:
        """The pairs that have a spline (close enough in the training frames)."""
        return [p for p in self.pairs if self._size[p]]

    def basis(self, pair: str, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(values, derivatives in 1/Å) of the kept splines of ``pair`` at distances ``r`` (Å)."""
        t = self._knots[pair]
        lo, k = t[0], self._size[pair]
        r = np.asarray(r, float)
        rc = np.clip(r, lo, self.cutoff_A)
        full = BSpline.design_matrix(rc, t, 3).toarray()
        # derivative of a cubic B-spline from the quadratic ones on the same knots
        quad = BSpline.design_matrix(rc, t[1:-1], 2).toarray()  # N_{m,2} for m = 1 … n-1
        n = full.shape[1]
        d = np.zeros_like(full)
        for m in range(n):  # loop over the ~30 splines of one pair, vectorised over distances
            left = 3.0 / (t[m + 3] - t[m]) if t[m + 3] > t[m] else 0.0
            right = 3.0 / (t[m + 4] - t[m + 1]) if t[m + 4] > t[m + 1] else 0.0
            if m >= 1:
                d[:, m] += left * quad[:, m - 1]
            if m < n - 1:
                d[:, m] -= right * quad[:, m]
        val, der = full[:, :k], d[:, :k]
        below = r < lo
        if below.any():  # linear continuation below the inner radius
            val[below] = val[below] + der[below] * (r[below] - lo)[:, None]
        val[r >= self.cutoff_A] = 0.0
        der[r >= self.cutoff_A] = 0.0
        return val, der

    def rows(self, atoms: Atoms, rotation: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Energy (ncol,), force (3N, ncol) and virial (6, ncol, eV) rows of ``atoms`` in the LAMMPS
        frame ``lammps = ase @ rotation``; the virial is −σV, as the ``compute snap`` rows."""
        n = len(atoms)
        i, j, dist, vec = neighbor_list("ijdD", atoms, self.cutoff_A)
        vec = vec @ rotation
        types = np.array([self.elements.index(s) for s in atoms.get_chemical_symbols()])
        pidx = self._type_pair[types[i], types[j]]
        ncol = self.n_columns
        energy = np.zeros(ncol)
        forces = np.zeros((n, 3, ncol))
        virial = np.zeros((6, ncol))
        for k, p in enumerate(self.pairs):
            sel = pidx == k
            if not self._size[p] or not sel.any():
                continue
            val, der = self.basis(p, dist[sel])
            cols = self._offset[p] + np.arange(self._size[p])
            energy[cols] += 0.5 * val.sum(axis=0)  # each pair appears twice in the list
            unit = vec[sel] / dist[sel][:, None]
            # F_i = Σ_j φ'(r_ij) (r_j − r_i)/r_ij : rows are −∂E/∂r_i per coefficient
            g = der[:, :, None] * unit[:, None, :]  # (pairs, k, 3)
            block = np.zeros((n, self._size[p], 3))
            np.add.at(block, i[sel], g)
            forces[:, :, cols] += block.transpose(0, 2, 1)
            # W_ab = −½ Σ φ'(r) D_a D_b / r
            dd = vec[sel][:, _VOIGT_I] * vec[sel][:, _VOIGT_J] / dist[sel][:, None]  # (pairs, 6)
            virial[:, cols] += -0.5 * dd.T @ der
        return energy, forces.reshape(3 * n, ncol), virial

    def penalty(self) -> np.ndarray:
        """Second-difference (P-spline) roughness matrix over the pair columns, block-diagonal by
        pair: ``cᵀ P c = Σ (c_{k-1} − 2 c_k + c_{k+1})²``. Without it the splines' inner ends, where
        the training frames hold few distances, trade off against the SNAP and can bend into a
        steep attractive well (α-AgI's Ag–Ag did: −22 eV/Å at 2.2 Å, and MD lost atoms)."""
        out = np.zeros((self.n_columns, self.n_columns))
        for p in self.splined:
            k, o = self._size[p], self._offset[p]
            d2 = np.diff(np.eye(k), n=2, axis=0)
            out[o:o + k, o:o + k] = d2.T @ d2
        return out

    # ------------------------------------------------------------------ LAMMPS
    def energy(self, pair: str, coefficients: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(φ in eV, −dφ/dr in eV/Å) of ``pair`` with its column block of ``coefficients``."""
        c = np.asarray(coefficients, float)[self._offset[pair]: self._offset[pair] + self._size[pair]]
        val, der = self.basis(pair, r)
        return val @ c, -(der @ c)

    def write_table(self, coefficients: np.ndarray, path: str | Path, comment: str = "") -> Path:
        """One ``pair_style table`` section per pair (keyword = the pair name), ``TABLE_POINTS``
        points from :data:`TABLE_START_A` to the cutoff."""
        r = np.linspace(TABLE_START_A, self.cutoff_A, TABLE_POINTS)
        lines = [f"# {comment}".rstrip(), ""]
        for p in self.splined:
            e, f = self.energy(p, coefficients, r)
            lines += [p, f"N {TABLE_POINTS} R {TABLE_START_A!r} {self.cutoff_A!r}", ""]
            lines += [f"{k + 1} {x:.10f} {y:.17g} {z:.17g}" for k, (x, y, z) in enumerate(zip(r, e, f, strict=True))]
            lines.append("")
        path = Path(path)
        with atomic_write(path, "w") as fh:
            fh.write("\n".join(lines) + "\n")
        return path

    def pair_style(self) -> str:
        return f"table spline {TABLE_POINTS}"

    def pair_coeffs(self, table: str | Path) -> list[str]:
        """``pair_coeff I J table FILE KEY CUTOFF`` for every type pair (types in element order)."""
        out = []
        for ia, a in enumerate(self.elements):
            for jb in range(ia, len(self.elements)):
                key = pair_key(a, self.elements[jb])
                if self._size[key]:
                    out.append(f'pair_coeff {ia + 1} {jb + 1} table "{table}" {key} {self.cutoff_A!r}')
        return out


__all__ = ["INNER_MARGIN_A", "PairBasis", "inner_radii", "pair_key", "shortest_distances"]
