"""SNAP potentials fitted by weighted ridge regression on LAMMPS ``compute snap`` rows.

``compute snap`` gives, per frame, one energy row (Σ_i B_i per element block), 3N force rows and
6 virial rows (Voigt xx, yy, zz, yz, xz, xy, in eV), plus a last column with the reference
potential's energy, forces and pressure (here ZBL at short range, a wall against atoms the
training never brought so close). A linear SNAP is E = Σ_i β0(type_i) + β(type_i)·B_i, so the
teacher's energies, forces and virials are linear in β: one least-squares problem. A quadratic
SNAP adds ½ B_iᵀ α B_i, also linear in the coefficients (``quadratic=True``).

Rows are weighted (energy and virial per atom, forces as they are), columns scaled to unit RMS,
and the normal equations solved with a small relative ridge. A bootstrap committee of *linear*
fits on the same rows gives the force spread that :mod:`ramanscreen.tasks.mlff.refine` uses as
the extrapolation measure.

A two-body spline term (:mod:`ramanscreen.tasks.mlff.pair`, ``pair_cutoff_A``) adds its own
columns to the rows and is fitted in the same problem.

The output is what a stock LAMMPS runs: ``NAME.snapcoeff`` and ``NAME.snapparam``, the pair
term's ``NAME.table``, the pair lines in ``NAME.lmp`` (``pair_style hybrid/overlay zbl … snap
table``), and ``NAME.json`` with the
provenance (teacher, elements, reference energies, RMSEs). Everything it predicts is labelled
:func:`method_label`, a distilled potential, not DFT.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers

from ramanscreen.tasks.common import InputError, atomic_write
from ramanscreen.tasks.mlff.engine import EV_A3_TO_BAR, BoxFrame, LammpsSystem, num
from ramanscreen.tasks.mlff.pair import PairBasis, inner_radii

SCHEMA = "ramanscreen.mlff/1"
#: The paper's criterion for an MLFF against its reference: a potential whose force RMSE on
#: held-out teacher frames exceeds this (eV/Å) is flagged (and a campaign can refuse it).
FORCE_RMSE_LIMIT_EV_A = 0.1


def method_label(teacher: str) -> str:
    """How every number from a distilled potential is labelled.

    >>> method_label("chgnet")
    'snap-distilled-from-chgnet (not DFT)'
    """
    return f"snap-distilled-from-{teacher} (not DFT)"


@dataclass(frozen=True)
class SnapSettings:
    """SNAP descriptor and fit settings (lengths in Å).

    >>> SnapSettings().n_bispectrum
    30
    >>> SnapSettings(twojmax=8, quadratic=True).n_per_element
    1595
    """

    #: Band limit 2J of the bispectrum: 6 → 30 components, 8 → 55.
    twojmax: int = 6
    #: Quadratic SNAP (adds the ½ B·α·B terms: more accurate, slower).
    quadratic: bool = False
    #: Neighbour cutoff (Å): every element gets radius 0.5 and ``rcutfac = cutoff_A``. 4.5 Å was
    #: both faster and closer to CHGNet than 5 or 6 Å for α-AgI and γ-Na3PS4 (docs/md.md).
    cutoff_A: float = 4.5
    rfac0: float = 0.99363
    rmin0: float = 0.0
    #: Neighbour weights wj per element; default: 1.0 down to 0.4, heaviest element first.
    element_weights: Mapping[str, float] | None = None
    #: Row weights: energy per atom (eV/atom), forces (eV/Å), virial per atom (eV/atom).
    energy_weight: float = 10.0
    force_weight: float = 1.0
    virial_weight: float = 1.0
    #: Ridge, relative to the mean diagonal of the scaled normal matrix.
    ridge: float = 1e-7
    #: ZBL wall below ``zbl_outer_A`` (switched off smoothly from ``zbl_inner_A``).
    zbl: bool = True
    zbl_inner_A: float = 1.0
    zbl_outer_A: float = 1.5
    #: Bootstrap committee of linear fits for the extrapolation measure.
    committee_size: int = 6
    seed: int = 0
    #: Two-body spline term fitted with the SNAP (:mod:`ramanscreen.tasks.mlff.pair`), run as
    #: ``pair_style table``: its cutoff (Å; 0 = no pair term) and knot spacing (Å). It cut the
    #: held-out force RMSE of Na3SbS4 at twojmax 4 from 0.102 to 0.065 eV/Å and of γ-Na3PS4 at
    #: 900 K (twojmax 6) from 0.17 to 0.12 eV/Å; a 6 Å cutoff gained < 0.003 eV/Å over the SNAP's
    #: own 4.5 Å and cost ~0.8 ms/step at 64 atoms (docs/md.md).
    pair_cutoff_A: float = 4.5
    pair_knot_A: float = 0.15
    #: Roughness penalty of the splines (second differences), relative to the mean diagonal of
    #: the pair columns' normal matrix (:meth:`ramanscreen.tasks.mlff.pair.PairBasis.penalty`).
    pair_smoothing: float = 1e-2
    #: Where each pair's spline starts (Å, ``"Na-S"`` keys): set by the fit from the training
    #: frames' shortest distances (:func:`ramanscreen.tasks.mlff.pair.inner_radii`).
    pair_inner_A: Mapping[str, float] | None = None

    @property
    def n_bispectrum(self) -> int:
        """Bispectrum components per element for ``twojmax``."""
        j = self.twojmax
        count = 0
        for j1 in range(j + 1):
            for j2 in range(j1 + 1):
                for jj in range(j1 - j2, min(j, j1 + j2) + 1, 2):
                    if jj >= j1:
                        count += 1
        return count

    @property
    def n_per_element(self) -> int:
        n = self.n_bispectrum
        return n + (n * (n + 1)) // 2 if self.quadratic else n

    def validate(self) -> None:
        if not isinstance(self.twojmax, int) or self.twojmax < 2 or self.twojmax > 12 or self.twojmax % 2:
            raise InputError(f"twojmax must be an even integer 2..12, got {self.twojmax!r}", field="twojmax",
                             fix="use 6 (fast) or 8 (more accurate)")
        for name in ("cutoff_A", "energy_weight", "force_weight", "virial_weight", "ridge", "pair_smoothing"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0) or (name == "cutoff_A" and v <= 1):
                raise InputError(f"must be a positive number, got {v!r}", field=name)
        if self.zbl and not 0 < self.zbl_inner_A < self.zbl_outer_A < self.cutoff_A:
            raise InputError("need 0 < zbl_inner_A < zbl_outer_A < cutoff_A", field="zbl_outer_A")
        if not (isinstance(self.pair_cutoff_A, (int, float)) and math.isfinite(self.pair_cutoff_A)
                and self.pair_cutoff_A >= 0):
            raise InputError(f"must be a number >= 0 (0: no pair term), got {self.pair_cutoff_A!r}",
                             field="pair_cutoff_A")
        if self.pair_cutoff_A and not (isinstance(self.pair_knot_A, (int, float)) and
                                       0.01 <= self.pair_knot_A <= self.pair_cutoff_A / 8):
            raise InputError(f"must be between 0.01 Å and pair_cutoff_A / 8, got {self.pair_knot_A!r}",
                             field="pair_knot_A", fix="use 0.1–0.25 Å")
        if not isinstance(self.committee_size, int) or self.committee_size < 2:
            raise InputError(f"must be an integer >= 2, got {self.committee_size!r}", field="committee_size")

    def weights_for(self, elements: Sequence[str]) -> list[float]:
        if self.element_weights is not None:
            missing = [e for e in elements if e not in self.element_weights]
            if missing:
                raise InputError(f"no neighbour weight for {', '.join(missing)}", field="element_weights")
            return [float(self.element_weights[e]) for e in elements]
        order = sorted(elements, key=lambda e: -atomic_numbers[e])
        ws = np.linspace(1.0, 0.4, len(order)) if len(order) > 1 else np.array([1.0])
        table = dict(zip(order, ws.tolist(), strict=True))
        return [round(table[e], 6) for e in elements]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["element_weights"] = None if self.element_weights is None else dict(self.element_weights)
        d["pair_inner_A"] = None if self.pair_inner_A is None else dict(self.pair_inner_A)
        return d

    def pair_basis(self, elements: Sequence[str]) -> PairBasis | None:
        """The pair term's basis (None without one); needs ``pair_inner_A`` (set by the fit)."""
        if not self.pair_cutoff_A:
            return None
        if self.pair_inner_A is None:
            raise InputError("the pair term's inner radii are not set", field="pair_inner_A",
                             fix="fit the potential first (fit_snap sets them from the training frames)")
        return PairBasis(elements, self.pair_inner_A, cutoff_A=self.pair_cutoff_A, knot_A=self.pair_knot_A)

    def n_pair_columns(self, elements: Sequence[str]) -> int:
        basis = self.pair_basis(elements)
        return 0 if basis is None else basis.n_columns


# ============================================================================================
# descriptors
# ============================================================================================
@dataclass
class FrameRows:
    """``compute snap`` rows of one frame, in the LAMMPS frame of its cell.

    ``energy`` (ncol,), ``forces`` (3N, ncol), ``virial`` (6, ncol, eV); ``ref_*`` are the
    reference (ZBL) parts; ``rotation`` maps ASE-frame vectors to this frame.
    """

    counts: np.ndarray
    energy: np.ndarray
    forces: np.ndarray
    virial: np.ndarray
    ref_energy: float
    ref_forces: np.ndarray
    ref_virial: np.ndarray
    volume_A3: float
    rotation: np.ndarray

    @property
    def n_atoms(self) -> int:
        return int(self.forces.shape[0] // 3)


def _pair_setup(settings: SnapSettings, elements: Sequence[str]) -> list[str]:
    cut = settings.cutoff_A
    if not settings.zbl:
        return [f"pair_style zero {num(cut)}", "pair_coeff * *"]
    lines = [f"pair_style hybrid/overlay zero {num(cut)} zbl {num(settings.zbl_inner_A)} {num(settings.zbl_outer_A)}",
             "pair_coeff * * zero"]
    for i, a in enumerate(elements):
        for j in range(i, len(elements)):
            lines.append(f"pair_coeff {i + 1} {j + 1} zbl {atomic_numbers[a]} {atomic_numbers[elements[j]]}")
    return lines


def snap_compute_command(settings: SnapSettings, elements: Sequence[str], compute_id: str = "snap") -> str:
    radii = " ".join(["0.5"] * len(elements))
    weights = " ".join(repr(w) for w in settings.weights_for(elements))
    return (f"compute {compute_id} all snap {num(settings.cutoff_A)} {num(settings.rfac0)} {settings.twojmax} {radii} "
            f"{weights} rmin0 {settings.rmin0!r} bzeroflag 1 quadraticflag {int(settings.quadratic)} switchflag 1")


class DescriptorCalculator:
    """``compute snap`` rows for many frames; one LAMMPS system per distinct atom list."""

    def __init__(self, settings: SnapSettings, elements: Sequence[str]) -> None:
        settings.validate()
        self.settings = settings
        self.elements = list(elements)
        self.pair = settings.pair_basis(self.elements)
        self._systems: dict[tuple[str, ...], LammpsSystem] = {}

    def _system(self, atoms: Atoms) -> LammpsSystem:
        key = tuple(atoms.get_chemical_symbols())
        sys_ = self._systems.get(key)
        if sys_ is None:
            sys_ = LammpsSystem(atoms, self.elements)
            sys_.lmp.commands_list([*_pair_setup(self.settings, self.elements),
                                    snap_compute_command(self.settings, self.elements),
                                    "thermo_style custom step pe", "thermo 0"])
            self._systems[key] = sys_
        return sys_

    def rows(self, atoms: Atoms) -> FrameRows:
        system = self._system(atoms)
        # the rotation of this frame's own cell (NPT and strained frames change it)
        system.frame = BoxFrame.from_cell(atoms.cell.array)
        system.set_frame(atoms)
        system.command("run 0 post no")
        a = system.global_array("snap")
        # compute snap adds compute snap_press at every init; drop it so the next run can add it
        system.command("uncompute snap_press")
        n = len(atoms)
        counts = np.array([(system.types == k + 1).sum() for k in range(len(self.elements))], float)
        vol = float(abs(np.linalg.det(atoms.cell.array)))
        energy, forces, virial = a[0, :-1], a[1:1 + 3 * n, :-1], a[1 + 3 * n:, :-1]
        if self.pair is not None:  # the pair term's columns after the SNAP's
            pe, pf, pv = self.pair.rows(atoms, system.frame.rotation)
            energy, forces, virial = np.concatenate([energy, pe]), np.hstack([forces, pf]), np.hstack([virial, pv])
        return FrameRows(
            counts=counts, energy=energy, forces=forces, virial=virial,
            ref_energy=float(a[0, -1]), ref_forces=a[1:1 + 3 * n, -1].copy(),
            ref_virial=a[1 + 3 * n:, -1] / EV_A3_TO_BAR * vol, volume_A3=vol, rotation=system.frame.rotation.copy(),
        )

    def close(self) -> None:
        for s in self._systems.values():
            s.close()
        self._systems.clear()

    def __enter__(self) -> DescriptorCalculator:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ============================================================================================
# labels
# ============================================================================================
_VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))


def _voigt_to_matrix(s: np.ndarray) -> np.ndarray:
    xx, yy, zz, yz, xz, xy = s
    return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])


def _matrix_to_voigt(m: np.ndarray) -> np.ndarray:
    return np.array([m[i, j] for i, j in _VOIGT])


def labels(atoms: Atoms) -> tuple[float, np.ndarray, np.ndarray | None]:
    """(energy eV, forces eV/Å (N, 3), stress eV/Å³ Voigt or None) stored on a labelled frame."""
    calc = atoms.calc
    res = getattr(calc, "results", {}) if calc is not None else {}
    e = res.get("energy", res.get("free_energy"))
    f = res.get("forces")
    if e is None or f is None:
        raise InputError("frame has no energy or forces", field="frames",
                         fix="label every training frame with energy and forces (extxyz energy=… and forces)")
    s = res.get("stress")
    if s is not None:
        s = np.asarray(s, float)
        s = _matrix_to_voigt(s) if s.shape == (3, 3) else s
    return float(e), np.asarray(f, float), s


def _targets(rows: FrameRows, atoms: Atoms) -> tuple[float, np.ndarray, np.ndarray | None]:
    """Teacher energy, forces (3N,) and virial (6, eV) in the rows' LAMMPS frame."""
    e, f, s = labels(atoms)
    f_l = (f @ rows.rotation).ravel()
    if s is None:
        return e, f_l, None
    sig = _voigt_to_matrix(s)
    sig_l = rows.rotation.T @ sig @ rows.rotation
    return e, f_l, _matrix_to_voigt(-sig_l * rows.volume_A3)


# ============================================================================================
# the potential
# ============================================================================================
@dataclass
class SnapPotential:
    """A fitted SNAP: ``coefficients[k]`` = [β0, β…] of ``elements[k]`` (β0 includes the reference energy)."""

    elements: list[str]
    settings: SnapSettings
    coefficients: np.ndarray
    reference_energies_eV: dict[str, float]
    #: (K, n_lin): linear members over :func:`linear_columns` (SNAP then pair), no β0
    committee: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None  # the .json once written
    #: spline coefficients of the pair term (``settings.pair_basis`` columns), None without one
    pair_coefficients: np.ndarray | None = None

    @property
    def name(self) -> str:
        return "".join(self.elements) + ".snap"

    @property
    def method(self) -> str:
        return method_label(self.info.get("teacher", {}).get("name", "teacher"))

    # ---------------------------------------------------------------- prediction
    def _beta(self) -> np.ndarray:
        """All coefficients of the descriptor columns: the SNAP's per element, then the pair term's."""
        beta = self.coefficients[:, 1:].ravel()
        return beta if self.pair_coefficients is None else np.concatenate([beta, self.pair_coefficients])

    def predict_rows(self, rows: FrameRows) -> tuple[float, np.ndarray, np.ndarray]:
        """(energy eV, forces (3N,) and virial (6,) in the rows' frame) including the ZBL part."""
        beta = self._beta()
        e = float(rows.counts @ self.coefficients[:, 0] + rows.energy @ beta + rows.ref_energy)
        return e, rows.forces @ beta + rows.ref_forces, rows.virial @ beta + rows.ref_virial

    def predict(self, frames: Iterable[Atoms], calculator: DescriptorCalculator | None = None) -> list[Atoms]:
        """Frames labelled by this potential (energy, forces, stress in the ASE frame)."""
        from ase.calculators.singlepoint import SinglePointCalculator

        own = calculator is None
        calc = calculator or DescriptorCalculator(self.settings, self.elements)
        out = []
        try:
            for a in frames:
                rows = calc.rows(a)
                e, f, w = self.predict_rows(rows)
                sig_l = -_voigt_to_matrix(w) / rows.volume_A3
                sig = rows.rotation @ sig_l @ rows.rotation.T
                b = a.copy()
                b.calc = SinglePointCalculator(b, energy=e, forces=f.reshape(-1, 3) @ rows.rotation.T,
                                               stress=_matrix_to_voigt(sig))
                out.append(b)
        finally:
            if own:
                calc.close()
        return out

    def committee_force_spread(self, rows: FrameRows) -> float:
        """Largest per-atom spread (eV/Å) of the committee's forces on this frame."""
        if self.committee is None:
            raise InputError("this potential has no committee", field="committee_size")
        a = rows.forces[:, linear_columns(self.settings, self.elements)]
        f = a @ self.committee.reshape(len(self.committee), -1).T  # (3N, K)
        var = f.var(axis=1).reshape(-1, 3).sum(axis=1)
        return float(np.sqrt(var.max()))

    # ---------------------------------------------------------------- files
    def files(self, directory: str | os.PathLike[str]) -> dict[str, Path]:
        d = Path(directory)
        kinds = ("snapcoeff", "snapparam", "lmp", "json") + (("table",) if self.settings.pair_cutoff_A else ())
        return {k: d / f"{self.name}.{k}" for k in kinds}

    def pair_commands(self, directory: str | os.PathLike[str] | None = None) -> list[str]:
        """``pair_style``/``pair_coeff`` lines for LAMMPS (absolute paths to the written files)."""
        d = Path(directory) if directory is not None else (self.path.parent if self.path else None)
        if d is None:
            raise InputError("write the potential before running it", field="potential")
        p = self.files(d.resolve())
        els = " ".join(self.elements)
        s = self.settings
        basis = s.pair_basis(self.elements)
        basis = basis if basis is not None and basis.splined else None
        if not s.zbl and basis is None:
            return ["pair_style snap", f'pair_coeff * * "{p["snapcoeff"]}" "{p["snapparam"]}" {els}']
        styles = ([f"zbl {num(s.zbl_inner_A)} {num(s.zbl_outer_A)}"] if s.zbl else []) + ["snap"]
        styles += [basis.pair_style()] if basis is not None else []
        lines = [f"pair_style hybrid/overlay {' '.join(styles)}",
                 f'pair_coeff * * snap "{p["snapcoeff"]}" "{p["snapparam"]}" {els}']
        if s.zbl:
            for i, a in enumerate(self.elements):
                for j in range(i, len(self.elements)):
                    lines.append(f"pair_coeff {i + 1} {j + 1} zbl {atomic_numbers[a]} "
                                 f"{atomic_numbers[self.elements[j]]}")
        if basis is not None:
            lines += basis.pair_coeffs(p["table"])
        return lines

    def write(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``.snapcoeff``, ``.snapparam``, ``.lmp`` and ``.json`` (each atomically); returns the json."""
        p = self.files(directory)
        s = self.settings
        weights = s.weights_for(self.elements)
        coeff = [f"# {self.method}; fitted by ramanscreen {self.info.get('fitted_utc', '')}",
                 f"{len(self.elements)} {self.coefficients.shape[1]}"]
        for el, w, c in zip(self.elements, weights, self.coefficients, strict=True):
            coeff.append(f"{el} 0.5 {num(w)}")
            coeff += [f"{x:.17g}" for x in c]
        param = [f"# {self.method}", f"rcutfac {num(s.cutoff_A)}", f"twojmax {s.twojmax}", f"rfac0 {num(s.rfac0)}",
                 f"rmin0 {s.rmin0!r}", "bzeroflag 1", f"quadraticflag {int(s.quadratic)}", "switchflag 1"]
        for key, text in (("snapcoeff", coeff), ("snapparam", param)):
            with atomic_write(p[key], "w") as fh:
                fh.write("\n".join(text) + "\n")
        basis = s.pair_basis(self.elements)
        if basis is not None:
            if self.pair_coefficients is None:
                raise InputError("the potential has a pair term but no pair coefficients", field="pair_coefficients")
            basis.write_table(self.pair_coefficients, p["table"], comment=f"{self.method}: pair term")
        rel = dataclasses.replace(self)
        lmp_lines = [f"# {self.method}: include this file after read_data/create_box (types: {' '.join(self.elements)})",
                     *[_relative(line, p) for line in rel.pair_commands(Path(directory))]]
        with atomic_write(p["lmp"], "w") as fh:
            fh.write("\n".join(lmp_lines) + "\n")
        doc = {
            "schema": SCHEMA, "method": self.method, "elements": self.elements,
            "reference_energies_eV": self.reference_energies_eV, "snap": s.to_dict(),
            "n_coefficients_per_element": int(self.coefficients.shape[1]),
            "files": {k: v.name for k, v in p.items() if k != "json"},
            "coefficients": self.coefficients.tolist(),
            "pair_coefficients": None if self.pair_coefficients is None else self.pair_coefficients.tolist(),
            "committee": None if self.committee is None else self.committee.tolist(),
            **self.info,
        }
        with atomic_write(p["json"], "w") as fh:
            json.dump(doc, fh, indent=1, default=_json_default)
            fh.write("\n")
        self.path = p["json"]
        return p["json"]

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SnapPotential:
        """Read a potential from its ``.json`` (or the directory holding exactly one)."""
        path = Path(path)
        if path.is_dir():
            found = sorted(path.glob("*.snap.json"))
            if len(found) != 1:
                raise InputError(f"expected one *.snap.json in the directory, found {len(found)}", file=path,
                                 field="potential", fix="give the potential's .json file")
            path = found[0]
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read the potential ({type(exc).__name__})", file=path, field="potential",
                             fix="give the .snap.json written by ramanscreen mlff fit") from None
        if doc.get("schema") != SCHEMA:
            raise InputError(f"not a ramanscreen SNAP potential (schema {doc.get('schema')!r})", file=path,
                             field="potential", fix="give the .snap.json written by ramanscreen mlff fit")
        snap = dict(doc["snap"])
        snap.setdefault("pair_cutoff_A", 0.0)  # written before the pair term existed: none
        settings = SnapSettings(**snap)
        info = {k: v for k, v in doc.items() if k not in {"schema", "method", "elements", "reference_energies_eV",
                                                           "snap", "n_coefficients_per_element", "files",
                                                           "coefficients", "committee", "pair_coefficients"}}
        committee = None if doc.get("committee") is None else np.asarray(doc["committee"], float)
        pair = None if doc.get("pair_coefficients") is None else np.asarray(doc["pair_coefficients"], float)
        pot = cls(elements=list(doc["elements"]), settings=settings, coefficients=np.asarray(doc["coefficients"], float),
                  reference_energies_eV=dict(doc["reference_energies_eV"]), committee=committee, info=info, path=path,
                  pair_coefficients=pair)
        if settings.pair_cutoff_A and (pair is None or len(pair) != settings.n_pair_columns(pot.elements)):
            raise InputError("the pair term's coefficients are missing or do not match its settings", file=path,
                             field="pair_coefficients", fix="refit the potential with ramanscreen mlff fit")
        for key in [k for k in pot.files(path.parent) if k not in ("lmp", "json")]:
            if not pot.files(path.parent)[key].is_file():
                raise InputError(f"the potential's .{key} file is missing", file=pot.files(path.parent)[key],
                                 field="potential", fix="copy the whole potential directory")
        return pot

    def fingerprint(self) -> str:
        pair = b"" if self.pair_coefficients is None else self.pair_coefficients.tobytes()
        return hashlib.sha256(self.coefficients.tobytes() + pair + json.dumps(self.settings.to_dict(), sort_keys=True)
                              .encode()).hexdigest()[:16]


def _relative(line: str, files: Mapping[str, Path]) -> str:
    """A pair line with the potential's own files named relative to its directory (for ``NAME.lmp``)."""
    for f in files.values():
        line = line.replace(str(f.resolve()), f.name)
    return line


def _json_default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


# ============================================================================================
# fitting
# ============================================================================================
def reference_energies(frames: Sequence[Atoms], elements: Sequence[str]) -> dict[str, float]:
    """Per-element reference energies (eV): least squares on the compositions when they vary,
    else the mean energy per atom for every element (one composition cannot separate them)."""
    counts = np.array([[a.get_chemical_symbols().count(e) for e in elements] for a in frames], float)
    energies = np.array([labels(a)[0] for a in frames])
    if np.linalg.matrix_rank(counts) == len(elements):
        e_ref = np.linalg.lstsq(counts, energies, rcond=None)[0]
        return {e: float(x) for e, x in zip(elements, e_ref, strict=True)}
    per_atom = float(np.mean(energies / counts.sum(axis=1)))
    return dict.fromkeys(elements, per_atom)


def _frame_system(rows: FrameRows, atoms: Atoms, s: SnapSettings, e_ref: np.ndarray,
                  columns: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Weighted rows ``X`` (with the n_el count columns first) and targets ``y`` of one frame."""
    e, f, w = _targets(rows, atoms)
    n = rows.n_atoms
    n_el = len(rows.counts)
    desc_e, desc_f, desc_v = rows.energy, rows.forces, rows.virial
    if columns is not None:
        desc_e, desc_f, desc_v = desc_e[columns], desc_f[:, columns], desc_v[:, columns]
    ncol = desc_e.shape[0]
    blocks_x = [s.energy_weight * np.concatenate([rows.counts, desc_e])[None, :] / n,
                s.force_weight * np.hstack([np.zeros((3 * n, n_el)), desc_f])]
    blocks_y = [np.array([s.energy_weight * (e - rows.ref_energy - rows.counts @ e_ref) / n]),
                s.force_weight * (f - rows.ref_forces)]
    if w is not None and s.virial_weight > 0:
        blocks_x.append(s.virial_weight * np.hstack([np.zeros((6, n_el)), desc_v]) / n)
        blocks_y.append(s.virial_weight * (w - rows.ref_virial) / n)
    x = np.vstack(blocks_x)
    assert x.shape[1] == n_el + ncol
    return x, np.concatenate(blocks_y)


def _solve(gram: np.ndarray, rhs: np.ndarray, ridge: float) -> np.ndarray:
    scale = np.sqrt(np.clip(np.diag(gram), 1e-300, None))
    scale[np.diag(gram) <= 1e-14 * max(np.diag(gram).max(), 1e-300)] = 1.0
    g = gram / scale[:, None] / scale[None, :]
    b = rhs / scale
    lam = ridge * float(np.trace(g)) / len(g)
    g[np.diag_indices_from(g)] += lam
    try:
        import scipy.linalg

        x = scipy.linalg.solve(g, b, assume_a="pos")
    except Exception:  # noqa: BLE001 - singular despite the ridge: fall back to least squares
        x = np.linalg.lstsq(g, b, rcond=None)[0]
    return x / scale


def linear_columns(settings: SnapSettings, elements: Sequence[str]) -> np.ndarray:
    """Indices of the linear columns among the descriptor columns: the linear bispectrum of each
    element (inside a quadratic SNAP's blocks), then every pair-term column."""
    nb, npe, n_el = settings.n_bispectrum, settings.n_per_element, len(elements)
    snap = [k * npe + np.arange(nb) for k in range(n_el)]
    return np.concatenate([*snap, n_el * npe + np.arange(settings.n_pair_columns(elements))])


@dataclass
class FitResult:
    potential: SnapPotential
    rows: list[FrameRows]


def fit_snap(
    frames: Sequence[Atoms],
    settings: SnapSettings | None = None,
    *,
    elements: Sequence[str] | None = None,
    rows: Sequence[FrameRows] | None = None,
    calculator: DescriptorCalculator | None = None,
    info: Mapping[str, Any] | None = None,
) -> FitResult:
    """Fit a SNAP to labelled frames (energy, forces, optionally stress on ``atoms.calc``).

    ``rows`` (one per frame, from :class:`DescriptorCalculator`) can be passed to refit
    without recomputing the descriptors; new rows are returned in the result.
    """
    settings = settings or SnapSettings()
    settings.validate()
    frames = list(frames)
    if len(frames) < 2:
        raise InputError(f"need at least 2 labelled frames to fit, got {len(frames)}", field="frames",
                         fix="give more training frames")
    for a in frames:
        labels(a)
    if elements is None:
        elements = sorted({s for a in frames for s in a.get_chemical_symbols()}, key=lambda e: atomic_numbers[e])
    elements = list(elements)
    if settings.pair_cutoff_A and settings.pair_inner_A is None:
        if rows is not None or calculator is not None:
            raise InputError("rows for a pair term need its inner radii", field="pair_inner_A",
                             fix="pass settings with pair_inner_A set (those of the potential the rows came from)")
        settings = dataclasses.replace(settings, pair_inner_A=inner_radii(frames, elements, settings.pair_cutoff_A))
    t0 = time.perf_counter()
    own = calculator is None and rows is None
    calc = calculator if calculator is not None else (DescriptorCalculator(settings, elements) if rows is None else None)
    try:
        all_rows = list(rows) if rows is not None else [calc.rows(a) for a in frames]  # type: ignore[union-attr]
    finally:
        if own and calc is not None:
            calc.close()
    if len(all_rows) != len(frames):
        raise InputError("one row set per frame is needed", field="rows")
    t_desc = time.perf_counter() - t0
    e_ref_map = reference_energies(frames, elements)
    e_ref = np.array([e_ref_map[e] for e in elements])
    n_el = len(elements)
    lin = linear_columns(settings, elements)
    ncol = n_el + all_rows[0].energy.shape[0]
    n_snap = n_el * settings.n_per_element
    if ncol != n_el + n_snap + settings.n_pair_columns(elements):
        raise InputError("the rows do not match the settings (SNAP or pair-term columns)", field="rows",
                         fix="compute the rows with these settings")
    gram = np.zeros((ncol, ncol))
    rhs = np.zeros(ncol)
    grams_lin, rhs_lin = [], []
    lin_idx = np.concatenate([np.arange(n_el), n_el + lin])
    for r, a in zip(all_rows, frames, strict=True):
        x, y = _frame_system(r, a, settings, e_ref)
        gram += x.T @ x
        rhs += x.T @ y
        xl = x[:, lin_idx]
        grams_lin.append(xl.T @ xl)
        rhs_lin.append(xl.T @ y)
    n_pair = settings.n_pair_columns(elements)
    penalty = None
    if n_pair:
        pc = slice(ncol - n_pair, ncol)
        lam = settings.pair_smoothing * float(np.mean(np.diag(gram)[pc]))
        penalty = lam * settings.pair_basis(elements).penalty()  # type: ignore[union-attr]
        gram[pc, pc] += penalty
    beta = _solve(gram, rhs, settings.ridge)
    coeff = np.zeros((n_el, 1 + settings.n_per_element))
    coeff[:, 0] = beta[:n_el] + e_ref
    coeff[:, 1:] = beta[n_el:n_el + n_snap].reshape(n_el, settings.n_per_element)
    pair = beta[n_el + n_snap:].copy() if settings.pair_cutoff_A else None
    # bootstrap committee of linear fits (frames resampled with replacement)
    rng = np.random.default_rng(settings.seed)
    gl, hl = np.array(grams_lin), np.array(rhs_lin)
    if penalty is not None:  # the same roughness penalty in every member (pair columns come last)
        gl[:, -n_pair:, -n_pair:] += penalty / len(frames)
    members = []
    for _ in range(settings.committee_size):
        w = rng.multinomial(len(frames), np.full(len(frames), 1.0 / len(frames))).astype(float)
        b = _solve(np.tensordot(w, gl, axes=1), np.tensordot(w, hl, axes=1), settings.ridge)
        members.append(b[n_el:])
    meta = dict(info or {})
    meta.setdefault("fitted_utc", datetime.now(UTC).isoformat(timespec="seconds"))
    meta["fit_time_s"] = time.perf_counter() - t0
    meta["descriptor_time_s"] = t_desc
    meta["n_train_frames"] = len(frames)
    meta["n_train_atoms"] = int(sum(len(a) for a in frames))
    pot = SnapPotential(elements=elements, settings=settings, coefficients=coeff, reference_energies_eV=e_ref_map,
                        committee=np.array(members), info=meta, pair_coefficients=pair)
    return FitResult(potential=pot, rows=all_rows)


# ============================================================================================
# errors
# ============================================================================================
@dataclass
class ErrorStats:
    """Errors of a potential against labelled frames (the teacher)."""

    n_frames: int
    force_rmse_eV_A: float
    force_mae_eV_A: float
    energy_rmse_meV_atom: float
    energy_mae_meV_atom: float
    stress_rmse_GPa: float | None
    force_rmse_by_element_eV_A: dict[str, float]
    force_rms_teacher_eV_A: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def error_stats(potential: SnapPotential, frames: Sequence[Atoms], rows: Sequence[FrameRows] | None = None,
                calculator: DescriptorCalculator | None = None) -> ErrorStats:
    """Force/energy/stress RMSE and MAE of ``potential`` against the labels of ``frames``."""
    frames = list(frames)
    if not frames:
        raise InputError("no frames to compare with", field="frames")
    own = rows is None and calculator is None
    calc = calculator if calculator is not None else (DescriptorCalculator(potential.settings, potential.elements)
                                                      if rows is None else None)
    try:
        rows = list(rows) if rows is not None else [calc.rows(a) for a in frames]  # type: ignore[union-attr]
    finally:
        if own and calc is not None:
            calc.close()
    df, de, ds, sym, fref = [], [], [], [], []
    for r, a in zip(rows, frames, strict=True):
        e_t, f_t, w_t = _targets(r, a)
        e_p, f_p, w_p = potential.predict_rows(r)
        df.append(f_p - f_t)
        fref.append(f_t)
        de.append((e_p - e_t) / r.n_atoms)
        if w_t is not None:
            ds.append((w_p - w_t) / r.volume_A3 * EV_A3_TO_BAR / 1e4)
        sym.append(np.repeat(a.get_chemical_symbols(), 3))
    err = np.concatenate(df)
    symbols = np.concatenate(sym)
    de_arr = np.array(de) * 1e3
    by_el = {el: float(np.sqrt(np.mean(err[symbols == el] ** 2))) for el in potential.elements if (symbols == el).any()}
    return ErrorStats(
        n_frames=len(frames), force_rmse_eV_A=float(np.sqrt(np.mean(err**2))), force_mae_eV_A=float(np.mean(np.abs(err))),
        energy_rmse_meV_atom=float(np.sqrt(np.mean(de_arr**2))), energy_mae_meV_atom=float(np.mean(np.abs(de_arr))),
        stress_rmse_GPa=float(np.sqrt(np.mean(np.concatenate(ds) ** 2))) if ds else None,
        force_rmse_by_element_eV_A=by_el, force_rms_teacher_eV_A=float(np.sqrt(np.mean(np.concatenate(fref) ** 2))),
    )


__all__ = ["FORCE_RMSE_LIMIT_EV_A", "SCHEMA", "DescriptorCalculator", "ErrorStats", "FitResult", "FrameRows",
           "SnapPotential", "SnapSettings", "error_stats", "fit_snap", "labels", "linear_columns", "method_label",
           "reference_energies", "snap_compute_command"]
