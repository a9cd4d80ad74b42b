"""Crystal structures of the paper's materials, built from crystallographic data.

Every builder starts from a space group, lattice parameters and Wyckoff positions and expands
them with :func:`ase.spacegroup.crystal`. Disordered sublattices (Ag in α-AgI, Li in cubic
LLZO) are filled by a seeded random sequential placement with a minimum-distance rule, *after*
the supercell is made, so the disorder is not periodic in the unit cell.

The coordinates were entered from the cited papers; each builder checks its own chemistry in the
test-suite (bond lengths, charge neutrality, the space group recovered by spglib for ordered
phases). Users with a preferred CIF pass it to :func:`load_structure` instead.

>>> atoms = build_structure("AgI")
>>> atoms.get_chemical_formula(), len(atoms)
('Ag64I64', 128)
>>> build_structure("Na3SbS4-W").get_chemical_formula()
'Na47S64Sb15W'
>>> sorted(BUILDERS)
['AgI', 'LLZO', 'LLZO-Al', 'LLZO-Ga', 'LLZO-Ta', 'Na3PS4', 'Na3SbS4', 'Na3SbS4-W', 'gamma-Na3PS4']

The doped garnets take their dopant fraction in the name (``LLZO-Ta:x=0.25``) or as the
formula unit (``Li6.75La3Zr1.75Ta0.25O12``), so campaigns and the explore framework name them
like any other builder:

>>> build_structure("Li6.25Ga0.25La3Zr2O12").info["x"]
0.25
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.build import make_supercell
from ase.calculators.calculator import Calculator
from ase.geometry import get_distances
from ase.spacegroup import crystal

from ramanscreen.tasks.common import InputError

#: Formal oxidation states used for the charge-neutrality checks.
OXIDATION_STATES: dict[str, int] = {
    "Ag": 1, "I": -1, "Na": 1, "Li": 1, "Sb": 5, "P": 5, "W": 6, "S": -2, "La": 3, "Zr": 4, "O": -2,
    "Ta": 5, "Al": 3, "Ga": 3,
}


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def diagonal_repeats(cell_lengths_A: np.ndarray, n_cells: int) -> tuple[int, int, int]:
    """The diagonal repetition ``(n1, n2, n3)`` with ``n1*n2*n3 == n_cells`` whose supercell is
    closest to a cube (smallest ratio of longest to shortest edge; ties: larger shortest edge).

    >>> diagonal_repeats(np.array([5.07, 5.07, 5.07]), 32)
    (4, 4, 2)
    >>> diagonal_repeats(np.array([7.1, 7.1, 7.3]), 8)
    (2, 2, 2)
    """
    candidates = [
        (n1, n2, n_cells // (n1 * n2))
        for n1 in range(1, n_cells + 1)
        if n_cells % n1 == 0
        for n2 in range(1, n_cells // n1 + 1)
        if (n_cells // n1) % n2 == 0
    ]

    def score(reps: tuple[int, int, int]) -> tuple[float, float, tuple[int, ...]]:
        lengths = np.asarray(cell_lengths_A, float) * reps
        # most cubic first, then the largest shortest edge, then larger repeats along a, b
        return (round(lengths.max() / lengths.min(), 9), round(-lengths.min(), 9), tuple(-r for r in reps))

    return min(candidates, key=score)


def supercell_to(atoms: Atoms, n_atoms_target: int) -> Atoms:
    """Repeat ``atoms`` along its cell vectors to exactly ``n_atoms_target`` atoms, choosing the
    diagonal repetition closest to a cube. Atoms stay grouped by their original index
    (atom-major order), so species blocks survive.

    Raises :class:`InputError` if ``n_atoms_target`` is not a multiple of ``len(atoms)``.

    >>> from ase.build import bulk
    >>> supercell_to(bulk("Cu", cubic=True), 32).cell.lengths().round(2).tolist()
    [7.22, 7.22, 7.22]
    """
    n0 = len(atoms)
    if n_atoms_target <= 0 or n_atoms_target % n0:
        sizes = ", ".join(str(n0 * k) for k in (1, 2, 4, 8, 16, 27, 32))
        raise InputError(
            f"cannot make {n_atoms_target} atoms from a cell of {n0}",
            field="n_atoms",
            fix=f"use a multiple of {n0}, e.g. {sizes}",
        )
    reps = diagonal_repeats(atoms.cell.lengths(), n_atoms_target // n0)
    sc = make_supercell(atoms, np.diag(reps), order="atom-major")
    sc.info.update(atoms.info)
    sc.info["supercell"] = list(reps)
    return sc


def min_distance_A(atoms: Atoms) -> float:
    """Smallest interatomic distance under periodic boundary conditions (Å).

    >>> from ase.build import bulk
    >>> round(min_distance_A(bulk("Cu", "fcc", a=3.6)), 3)
    2.546
    """
    if len(atoms) < 2:
        # a single atom: its distance to its own periodic image
        lengths = atoms.cell.lengths()
        return float(lengths[atoms.pbc].min()) if atoms.pbc.any() else np.inf
    from ase.neighborlist import neighbor_list

    cutoff = 3.0
    while True:
        d = neighbor_list("d", atoms, cutoff, self_interaction=False)
        if d.size or cutoff > 20.0:
            return float(d.min()) if d.size else np.inf
        cutoff *= 2


def place_on_sites(
    site_positions_A: np.ndarray,
    cell: np.ndarray,
    n_place: int | None,
    min_distance_A: float,
    seed: int | np.random.Generator,
    *,
    avoid_A: np.ndarray | None = None,
    max_tries: int = 200,
) -> np.ndarray:
    """Choose ``n_place`` of the candidate sites so that no two chosen sites, and no chosen site
    and a position in ``avoid_A``, are closer than ``min_distance_A`` (periodic), by seeded
    random sequential placement. Returns the sorted indices of the chosen sites.

    The candidates are visited in a random order and accepted greedily; if the pass jams before
    ``n_place`` sites, a new random order is tried (up to ``max_tries``). ``n_place=None``
    returns the first jammed (maximal) set.

    >>> sites = np.array([[0, 0, 0], [0.5, 0, 0], [2.0, 0, 0], [2.5, 0, 0]])
    >>> place_on_sites(sites, np.eye(3) * 4.0, 2, 1.0, seed=0).tolist() in ([0, 2], [0, 3], [1, 2], [1, 3])
    True
    """
    site_positions_A = np.asarray(site_positions_A, float)
    _, dist = get_distances(site_positions_A, cell=cell, pbc=True)
    clash = dist < min_distance_A
    np.fill_diagonal(clash, False)
    free0 = np.ones(len(site_positions_A), bool)
    if avoid_A is not None and len(avoid_A):
        _, d_avoid = get_distances(site_positions_A, np.asarray(avoid_A, float), cell=cell, pbc=True)
        free0 = (d_avoid >= min_distance_A).all(axis=1)
    rng = np.random.default_rng(seed)
    n_sites = len(site_positions_A)
    for _ in range(max_tries):
        order = rng.permutation(n_sites)
        free = free0.copy()
        chosen: list[int] = []
        for i in order:  # sequential by nature: each choice blocks its neighbours
            if free[i]:
                chosen.append(int(i))
                free &= ~clash[i]
                free[i] = False
                if n_place is not None and len(chosen) == n_place:
                    break
        if n_place is None or len(chosen) == n_place:
            return np.sort(np.array(chosen, dtype=int))
    raise InputError(
        f"could not place {n_place} atoms on {n_sites} sites at least {min_distance_A} Å apart",
        field="min_distance_A",
        fix="lower the minimum distance or use a larger cell",
    )


def formal_charge(atoms: Atoms) -> int:
    """Sum of formal oxidation states (:data:`OXIDATION_STATES`).

    >>> formal_charge(build_structure("Na3PS4", n_atoms=16))
    0
    """
    return int(sum(OXIDATION_STATES[s] for s in atoms.get_chemical_symbols()))


def check_charge_balance(atoms: Atoms, *, file: str | os.PathLike[str] | None = None,
                         allow_charged: bool = False, field: str = "structure") -> None:
    """Refuse a structure no set of common oxidation states makes neutral — typically a CIF that
    lost atom rows — with a one-line :class:`InputError`; with ``allow_charged`` warn instead.

    The formal charge of :data:`OXIDATION_STATES` decides when it is 0; otherwise one common
    oxidation state per element (pymatgen's ``Element.common_oxidation_states``, non-zero) must
    make the cell neutral. Metals and alloys (every element a metal) always pass.

    >>> from ase import Atoms
    >>> lost = Atoms("Na6P2S4", cell=[8, 8, 8], pbc=True, scaled_positions=np.random.default_rng(0).random((12, 3)))
    >>> check_charge_balance(lost, file="Na3PS4.cif")
    Traceback (most recent call last):
    ...
    ramanscreen.tasks.common.InputError: Na3PS4.cif: structure: Na6P2S4 is not charge balanced (formal charge +8 with Na+1 P+5 S-2; no neutral assignment of common oxidation states) (fix: check the file for missing atoms or wrong occupancies, or run it anyway with --allow-charged)
    >>> check_charge_balance(build_structure("Na3PS4", n_atoms=16))
    """
    import warnings

    symbols = atoms.get_chemical_symbols()
    known = all(sym in OXIDATION_STATES for sym in symbols)
    if known and formal_charge(atoms) == 0:
        return
    if _neutral_assignment_exists(symbols):
        return
    formula = atoms.get_chemical_formula()
    if known:
        states = " ".join(f"{el}{OXIDATION_STATES[el]:+d}" for el in dict.fromkeys(sorted(set(symbols), key=symbols.index)))
        detail = f"formal charge {formal_charge(atoms):+d} with {states}; "
    else:
        detail = ""
    message = f"{formula} is not charge balanced ({detail}no neutral assignment of common oxidation states)"
    if allow_charged:
        warnings.warn(f"{str(file) + ': ' if file else ''}{message}; running it as asked (allow_charged)", UserWarning,
                      stacklevel=2)
        return
    raise InputError(message, file=file, field=field,
                     fix="check the file for missing atoms or wrong occupancies, or run it anyway with --allow-charged")


def _neutral_assignment_exists(symbols: list[str]) -> bool:
    import itertools

    from pymatgen.core import Element

    counts = {sym: symbols.count(sym) for sym in dict.fromkeys(symbols)}
    elements = {sym: Element(sym) for sym in counts}
    if all(el.is_metal for el in elements.values()):
        return True
    choices = []
    for sym, el in elements.items():
        states = [int(x) for x in el.common_oxidation_states if x != 0]
        if sym in OXIDATION_STATES and OXIDATION_STATES[sym] not in states:
            states.insert(0, OXIDATION_STATES[sym])
        if not states:
            return True  # noble gases and the like: no formal charge to balance
        choices.append([(counts[sym], q) for q in states])
    if math.prod(len(c) for c in choices) > 200_000:
        return True  # too many elements to search: do not guess
    return any(sum(n * q for n, q in combo) == 0 for combo in itertools.product(*choices))


def _n_cells(n_atoms: int | None, per_cell: int, default: int, name: str) -> int:
    n = default if n_atoms is None else int(n_atoms)
    if n <= 0 or n % per_cell:
        raise InputError(
            f"{name} needs a multiple of {per_cell} atoms, got {n}",
            field="n_atoms",
            fix=f"use e.g. {per_cell * 8} or {per_cell * 16}",
        )
    return n // per_cell


# --------------------------------------------------------------------------------------------
# builders
# --------------------------------------------------------------------------------------------
#: α-AgI lattice parameter (Å), and the Ag-Ag minimum distance used for the placement (Å).
AGI_A = 5.07
AGI_AG_MIN_DIST_A = 2.5


def build_agi(n_atoms: int | None = 128, seed: int = 0) -> Atoms:
    """α-AgI (superionic, T > 420 K): bcc I⁻ sublattice with Ag⁺ disordered over the
    tetrahedral sites.

    Data: space group Im-3m (229), a = 5.07 Å; I on 2a (0, 0, 0); Ag on the 12d tetrahedral
    sites (1/4, 0, 1/2) with occupancy 1/6 [L. W. Strock, Z. Phys. Chem. B 25, 441 (1934);
    A. F. Wright and B. E. F. Fender, J. Phys. C 10, 2261 (1977); review: S. Hull,
    Rep. Prog. Phys. 67, 1233 (2004)]. Ag-I on a 12d site is 2.83 Å.

    Disorder: the supercell of the I sublattice is built first (default 4x4x2 conventional
    cells, 128 atoms as in the paper), then one Ag per I is placed on the 12d sites by seeded
    random sequential placement with Ag-Ag >= 2.5 Å (this excludes the face-sharing 1.79 Å
    neighbour pairs, which no real configuration holds).

    >>> a = build_agi(seed=1)
    >>> a.get_chemical_formula(), round(min_distance_A(a), 2) >= 2.5
    ('Ag64I64', True)
    """
    n_cells = _n_cells(n_atoms, 4, 128, "AgI")
    cellpar = [AGI_A] * 3 + [90] * 3
    iodine = crystal("I", [(0, 0, 0)], spacegroup=229, cellpar=cellpar)
    sites = crystal("Ag", [(0.25, 0, 0.5)], spacegroup=229, cellpar=cellpar)
    reps = diagonal_repeats(iodine.cell.lengths(), n_cells)
    host = make_supercell(iodine, np.diag(reps), order="atom-major")
    tet = make_supercell(sites, np.diag(reps), order="atom-major")
    chosen = place_on_sites(tet.positions, host.cell.array, len(host), AGI_AG_MIN_DIST_A, seed)
    atoms = Atoms(
        symbols=["Ag"] * len(chosen) + ["I"] * len(host),
        positions=np.vstack([tet.positions[chosen], host.positions]),
        cell=host.cell,
        pbc=True,
    )
    atoms.info.update(material="AgI", source="Im-3m, a=5.07 A; Ag on 12d (Wright & Fender 1977)",
                      seed=seed, supercell=list(reps))
    return atoms


#: Tetragonal Na3SbS4 (P-42_1c) lattice (Å) and asymmetric unit.
NA3SBS4_CELLPAR = (7.1453, 7.1453, 7.2770, 90.0, 90.0, 90.0)
NA3SBS4_BASIS = {
    "Sb": (0.0, 0.0, 0.0),  # 2a
    "Na1": (0.0, 0.0, 0.5),  # 2b
    "Na2": (0.0, 0.5, 0.44),  # 4d
    # 8e with |x| < |y|, the orientation of the isotypic t-Na3PS4 refinement (Sci. Rep. 6,
    # 33733, Table 3: S (0.155, 0.185, 0.167) at this origin). The transposed (0.1946, 0.1744)
    # puts two S 2.69 Å from Na(4d); this gives 2.88/3.10/3.11 Å.
    "S": (0.1744, 0.1946, 0.1916),
}


def _na3sbs4_cell() -> Atoms:
    b = NA3SBS4_BASIS
    return crystal(["Na", "Na", "Sb", "S"], [b["Na1"], b["Na2"], b["Sb"], b["S"]],
                   spacegroup=114, cellpar=list(NA3SBS4_CELLPAR))


def build_na3sbs4(n_atoms: int | None = 128, seed: int = 0) -> Atoms:
    """Tetragonal Na₃SbS₄ (the room-temperature phase, non-conducting in the paper's MLFF MD).

    Data: space group P-42₁c (114), a = 7.1453 Å, c = 7.2770 Å [H. Wang, Y. Chen, Z. D. Hood,
    G. Sahu, A. S. Pandian, J. K. Keum, K. An, C. Liang, Angew. Chem. Int. Ed. 55, 8551 (2016);
    the other room-temperature refinements give a = 7.14-7.17 Å, c = 7.27-7.30 Å: D. Zhang et
    al., Adv. Sci. 3, 1600089 (2016); A. Banerjee et al., Angew. Chem. Int. Ed. 55, 9634
    (2016)]; Na₃PS₄ structure type [M. Jansen and U. Henseler, J. Solid State Chem. 99, 110
    (1992); isotypic t-Na₃PS₄ refinement: I.-H. Chu et al., Sci. Rep. 6, 33733 (2016)]: Sb on
    2a (0, 0, 0), Na1 on 2b (0, 0, 1/2), Na2 on 4d (0, 1/2, z≈0.44), S on 8e (x, y, z) ≈
    (0.174, 0.195, 0.192) — |x| < |y| as in the Na₃PS₄ refinement — which gives Sb-S 2.33 Å
    and Na-S ≥ 2.88 Å. 16 atoms per cell; default 2x2x2 = 128 atoms as in the paper. ``seed``
    is unused (the phase is ordered) and accepted for a uniform builder signature.

    >>> build_na3sbs4().get_chemical_formula()
    'Na48S64Sb16'
    """
    del seed
    n_cells = _n_cells(n_atoms, 16, 128, "Na3SbS4")
    atoms = supercell_to(_na3sbs4_cell(), 16 * n_cells)
    atoms.info.update(material="Na3SbS4", phase="tetragonal (P-42_1c), room temperature",
                      source="P-42_1c, Wang et al. 2016 (a, c); S(8e) oriented as in Chu et al. 2016")
    return atoms


@dataclass(frozen=True)
class VacancyCandidate:
    """One symmetry-distinct Na site of the W-doped cell (an orbit of the cell's symmetry)."""

    index: int  #: representative atom index in the W-doped cell before the Na is removed
    multiplicity: int  #: number of symmetry-equivalent Na in the orbit
    wyckoff: str  #: the Na's Wyckoff site in the host (``2b`` or ``4d``)
    distance_A: float  #: W-Na distance (minimum image)
    #: ``"4d@3.60"``: host site @ W-Na distance (Å), with ``#2``... when two orbits share both;
    #: the key of :data:`NA3SBS4_W_VACANCY_ENERGIES_MEV`
    label: str = ""


def _w_doped_host(n_atoms: int) -> Atoms:
    """The Na₃SbS₄ supercell of ``n_atoms + 1`` atoms with its first Sb replaced by W."""
    host = build_na3sbs4(n_atoms + 1)
    symbols = np.array(host.get_chemical_symbols())
    symbols[int(np.flatnonzero(symbols == "Sb")[0])] = "W"
    host.set_chemical_symbols(symbols.tolist())
    return host


def w_vacancy_candidates(n_atoms: int = 127) -> tuple[Atoms, list[VacancyCandidate]]:
    """The W-doped Na₃SbS₄ cell (before the vacancy) and its symmetry-distinct Na sites.

    Two Na are equivalent when a symmetry operation of the doped cell (spglib, symprec
    10⁻³ Å) maps one onto the other; candidates are sorted by W-Na distance.

    >>> _, cands = w_vacancy_candidates()
    >>> len(cands), sum(c.multiplicity for c in cands), cands[0].label, cands[8].label
    (14, 48, '4d@3.60', '2b@8.02#2')
    """
    import spglib

    host = _w_doped_host(n_atoms)
    cell = (host.cell.array, host.get_scaled_positions(), host.numbers)
    data = spglib.get_symmetry_dataset(cell, symprec=1e-3)
    assert data is not None  # a supercell of a crystal always has a symmetry dataset
    eq = np.asarray(data.equivalent_atoms)
    # the Na's Wyckoff letter in the undoped host (2b or 4d)
    pristine = build_na3sbs4(n_atoms + 1)
    pdata = spglib.get_symmetry_dataset((pristine.cell.array, pristine.get_scaled_positions(), pristine.numbers),
                                        symprec=1e-3)
    assert pdata is not None
    host_wyck = np.asarray(pdata.wyckoffs)
    mult = {"b": "2b", "d": "4d"}
    i_w = int(np.flatnonzero(host.numbers == 74)[0])
    na = np.flatnonzero(host.numbers == 11)
    d = host.get_distances(i_w, na, mic=True)
    cands = []
    for rep in np.unique(eq[na]):
        members = na[eq[na] == rep]
        cands.append(VacancyCandidate(int(rep), len(members), mult.get(str(host_wyck[rep]), str(host_wyck[rep])),
                                      round(float(d[na == rep][0]), 4)))
    cands.sort(key=lambda c: (round(c.distance_A, 2), c.wyckoff, c.index))
    labelled: list[VacancyCandidate] = []
    seen: dict[str, int] = {}
    for c in cands:
        base = f"{c.wyckoff}@{c.distance_A:.2f}"
        seen[base] = seen.get(base, 0) + 1
        labelled.append(replace(c, label=base if seen[base] == 1 else f"{base}#{seen[base]}"))
    return host, labelled


def rank_w_vacancies(calculator: str | Calculator = "chgnet", *, n_atoms: int = 127, fmax_eV_A: float = 0.05,
                     max_steps: int = 10, progress: Callable[[str], None] | None = None
                     ) -> list[dict[str, float | int | str]]:
    """Energy of the W-doped cell with the vacancy on each symmetry-distinct Na site.

    Each candidate cell has its positions relaxed (FIRE, cell fixed at the Na₃SbS₄ lattice) to
    ``fmax_eV_A`` or ``max_steps`` (a short relaxation: the ranking, not converged energies); returns one row per candidate, lowest energy first, with
    ``delta_meV`` relative to it. This is how :data:`NA3SBS4_W_VACANCY_ENERGIES_MEV` was made.
    """
    from ase.optimize import FIRE

    from ramanscreen.tasks.md import get_calculator

    calc = get_calculator(calculator) if isinstance(calculator, str) else calculator
    host, cands = w_vacancy_candidates(n_atoms)
    rows: list[dict[str, float | int | str]] = []
    for c in cands:
        atoms = host.copy()
        del atoms[c.index]
        atoms.calc = calc
        opt = FIRE(atoms, logfile=None)
        opt.run(fmax=fmax_eV_A, steps=max_steps)
        rows.append({"label": c.label, "index": c.index, "wyckoff": c.wyckoff, "distance_A": c.distance_A,
                     "multiplicity": c.multiplicity, "energy_eV": float(atoms.get_potential_energy()),
                     "steps": int(opt.nsteps)})
        if progress is not None:
            progress(f"{c.label}: {rows[-1]['energy_eV']:.4f} eV after {opt.nsteps} steps")
    e_min = min(float(r["energy_eV"]) for r in rows)
    for r in rows:
        r["delta_meV"] = round(1000.0 * (float(r["energy_eV"]) - e_min), 1)
    return sorted(rows, key=lambda r: float(r["delta_meV"]))


#: CHGNet 0.3.0 energies (meV per 127-atom cell, relative to the lowest) of the W-doped cell with
#: the vacancy on each symmetry-distinct Na site, as built (single points,
#: ``rank_w_vacancies(max_steps=0)``; a relaxation per site took > 6 min each on the shared
#: machine). Key: host Wyckoff site @ W-Na distance (Å). The Na(2b) on W's -4 axis, 3.64 Å
#: away, is lowest; the nearer Na(4d) is 13.5 meV higher, the farthest sites ~0.1 eV.
NA3SBS4_W_VACANCY_ENERGIES_MEV: dict[str, float] = {
    "2b@3.64": 0.0, "4d@3.60": 13.5, "4d@4.80": 43.5, "2b@5.05": 56.5, "4d@5.42": 77.0, "2b@8.02": 94.1,
    "2b@8.02#2": 94.3, "2b@8.86": 95.9, "4d@8.00": 98.8, "4d@7.72": 99.2, "4d@8.61": 100.6, "4d@8.97": 102.4,
    "2b@10.74": 103.8, "4d@10.52": 109.0,
}
#: How the energies above were made (recorded in the built structure's info).
NA3SBS4_W_VACANCY_METHOD = ("CHGNet 0.3.0 single-point energies of the unrelaxed 127-atom cells, "
                            "one per symmetry-distinct Na site (spglib, symprec 1e-3)")


def build_na3sbs4_w(n_atoms: int | None = 127, seed: int = 0) -> Atoms:
    """W-doped Na₃₋ₓSb₁₋ₓWₓS₄: one Sb⁵⁺ replaced by W⁶⁺ and one Na⁺ removed for charge balance.

    With the default 127 atoms (the 128-atom 2x2x2 Na₃SbS₄ supercell minus the vacancy) this is
    Na₄₇Sb₁₅WS₆₄ = Na₂.₉₄Sb₀.₉₄W₀.₀₆S₄, x = 1/16 ≈ 6 % as in the paper [doping: T. Fuchs et
    al., Energy Environ. Sci. 13, 146 (2020); A. Hayashi et al., Nat. Commun. 10, 5266 (2019)].
    The W is the first Sb of the supercell. The vacancy goes on the symmetry-distinct Na site
    (:func:`w_vacancy_candidates`) of lowest MLFF energy, :data:`NA3SBS4_W_VACANCY_ENERGIES_MEV`
    (made by :func:`rank_w_vacancies`; the test-suite recomputes it); ``seed`` picks one of the
    symmetry-equivalent Na of that site. Other cell sizes take the candidate of the same host
    site at the W-Na distance closest to the recorded one. The energies go into
    ``atoms.info["vacancy_energies_meV"]``.

    >>> a = build_na3sbs4_w()
    >>> len(a), formal_charge(a), a.info["vacancy_site"] == min(NA3SBS4_W_VACANCY_ENERGIES_MEV,
    ...                                                          key=NA3SBS4_W_VACANCY_ENERGIES_MEV.get)
    (127, 0, True)
    """
    n = 127 if n_atoms is None else int(n_atoms)
    host, cands = w_vacancy_candidates(n)
    best = min(NA3SBS4_W_VACANCY_ENERGIES_MEV, key=NA3SBS4_W_VACANCY_ENERGIES_MEV.__getitem__)
    exact = [c for c in cands if c.label == best]
    if exact:
        chosen = exact[0]
    else:  # another cell size: the same host site at the nearest W-Na distance
        wyck, dist = best.split("#")[0].split("@")
        same_site = [c for c in cands if c.wyckoff == wyck] or cands
        chosen = min(same_site, key=lambda c: abs(c.distance_A - float(dist)))
    import spglib

    hdata = spglib.get_symmetry_dataset((host.cell.array, host.get_scaled_positions(), host.numbers), symprec=1e-3)
    assert hdata is not None
    eq = np.asarray(hdata.equivalent_atoms)
    members = np.flatnonzero((eq == eq[chosen.index]) & (host.numbers == 11))
    vacancy = int(np.random.default_rng(seed).choice(members))
    del host[vacancy]
    host.info.update(material="Na3SbS4-W", phase="tetragonal (P-42_1c) host, W on Sb + one Na vacancy",
                     source="Na3SbS4 (Wang et al. 2016) with one W on Sb + one Na vacancy of lowest MLFF energy",
                     seed=seed, vacancy_site=chosen.label, vacancy_multiplicity=chosen.multiplicity,
                     vacancy_energies_meV=dict(NA3SBS4_W_VACANCY_ENERGIES_MEV),
                     vacancy_method=NA3SBS4_W_VACANCY_METHOD)
    return host


#: Cubic Na3PS4 (I-43m) lattice parameter (Å).
NA3PS4_A = 6.9965


def build_na3ps4(n_atoms: int | None = 256, seed: int = 0) -> Atoms:
    """Cubic β-Na₃PS₄ (I-43m), the room-temperature cubic phase; not the γ phase (see
    :func:`build_gamma_na3ps4`).

    Data: space group I-43m (217), a = 6.9965 Å; P on 2a (0, 0, 0), S on 8c (x, x, x) with
    x = 0.170, Na on 6b (0, 1/2, 1/2) [A. Hayashi, K. Noi, A. Sakuda, M. Tatsumisago,
    Nat. Commun. 3, 856 (2012)]; P-S = 2.06 Å. 16 atoms per conventional cell; default 256
    atoms (16 cells, 4x2x2). ``seed`` is unused (ordered phase).

    >>> build_na3ps4(n_atoms=16).get_chemical_formula()
    'Na6P2S8'
    """
    del seed
    n_cells = _n_cells(n_atoms, 16, 256, "Na3PS4")
    cell = crystal(["Na", "P", "S"], [(0, 0.5, 0.5), (0, 0, 0), (0.170, 0.170, 0.170)],
                   spacegroup=217, cellpar=[NA3PS4_A] * 3 + [90] * 3)
    atoms = supercell_to(cell, 16 * n_cells)
    atoms.info.update(material="Na3PS4", phase="beta (cubic I-43m), room-temperature density",
                      source="I-43m, Hayashi et al. 2012")
    return atoms


#: Molar mass of Na3PS4 (g/mol) and Avogadro's number, for density <-> volume.
_NA3PS4_G_MOL = 3 * 22.98977 + 30.97376 + 4 * 32.06
_AVOGADRO = 6.02214076e23
#: β-Na₃PS₄ at room temperature (Hayashi et al. 2012): a³/2 = 171.2 Å³ per formula unit, 2.223 g/cm³.
NA3PS4_BETA_DENSITY_G_CM3 = _NA3PS4_G_MOL / (NA3PS4_A**3 / 2 * 1e-24 * _AVOGADRO)
#: Starting density of the γ cell (g/cm³): 8 % more volume per formula unit than β at room
#: temperature (185 Å³), for the thermal expansion to ~500 °C plus the first-order volume jump
#: into γ [T. Famprikis et al., ACS Mater. Lett. 1, 641 (2019); Chem. Mater. 33, 5652 (2021)].
#: An estimate, not a refined γ density: the MD stage's NPT equilibration at 900 K sets the
#: density it runs at; pass ``density_g_cm3`` to start elsewhere.
GAMMA_NA3PS4_DENSITY_G_CM3 = round(NA3PS4_BETA_DENSITY_G_CM3 / 1.08, 3)
#: P-S bond (Å) of the PS₄ tetrahedra; minimum S-S between tetrahedra turned at random, and
#: the minimum Na-S and Na-Na the Na are pushed to (Å).
GAMMA_PS_BOND_A = 2.05
GAMMA_MIN_SS_A = 3.0
GAMMA_MIN_NAS_A = 2.45
GAMMA_MIN_NAP_A = 3.0
GAMMA_MIN_NANA_A = 2.6


def build_gamma_na3ps4(n_atoms: int | None = 256, seed: int = 0, *,
                       density_g_cm3: float = GAMMA_NA3PS4_DENSITY_G_CM3) -> Atoms:
    """A starting cell for γ-Na₃PS₄, the plastic high-temperature phase (> ~500 °C), at the γ
    density with the PS₄ tetrahedra turned at random.

    The γ phase [T. Famprikis, Ö. U. Kudu, J. A. Dawson, P. Canepa, F. Fauth, E. Suard,
    M. Zbiri, D. Dambournet, O. J. Borkiewicz, H. Bouyanfif, S. P. Emge, S. Cretu, J.-N.
    Chotard, C. P. Grey, W. G. Zeier, M. S. Islam, C. Masquelier, ACS Mater. Lett. 1, 641
    (2019); T. Famprikis et al., Chem. Mater. 33, 5652 (2021)] is orthorhombic (Fddd), forms
    from β by a first-order transition with a volume jump, and has rotationally disordered PS₄
    and liquid-like Na. This builder does **not** make the refined Fddd cell: it keeps the
    body-centred PS₄ arrangement of β (:func:`build_na3ps4`) at ``density_g_cm3`` (default
    :data:`GAMMA_NA3PS4_DENSITY_G_CM3`, an estimate), turns every PS₄ by a uniformly random
    rotation (seeded; re-drawn while its S come within 3.0 Å of another tetrahedron's S), and
    starts the Na on β's 6b sites, pushed out of the S they overlap until Na-S ≥ 2.45 Å and
    Na-Na ≥ 2.6 Å (and Na-P ≥ 3.0 Å). Its symmetry is P1 (the P sublattice stays bcc). It is meant to be
    NPT-equilibrated at the run temperature; its phase label says so. Default 256 atoms (32
    formula units, 4x2x2 bcc cells).

    >>> a = build_gamma_na3ps4(n_atoms=64, seed=1)
    >>> a.get_chemical_formula(), round(a.info["density_g_cm3"], 3) == GAMMA_NA3PS4_DENSITY_G_CM3
    ('Na24P8S32', True)
    """
    from scipy.spatial.transform import Rotation

    if not 1.0 < float(density_g_cm3) < 3.0:
        raise InputError(f"density {density_g_cm3} g/cm3 is not a Na3PS4 density", field="density_g_cm3",
                         fix="use e.g. 2.06 (gamma estimate) or 2.22 (beta, room temperature)")
    n_cells = _n_cells(n_atoms, 16, 256, "gamma-Na3PS4")
    v_fu_A3 = _NA3PS4_G_MOL / (float(density_g_cm3) * _AVOGADRO) * 1e24
    a_A = (2 * v_fu_A3) ** (1 / 3)
    cellpar = [a_A] * 3 + [90] * 3
    phos = crystal("P", [(0, 0, 0)], spacegroup=229, cellpar=cellpar)
    na_sites = crystal("Na", [(0, 0.5, 0.5)], spacegroup=229, cellpar=cellpar)
    reps = diagonal_repeats(phos.cell.lengths(), n_cells)
    p_sc = make_supercell(phos, np.diag(reps), order="atom-major")
    na_pos = make_supercell(na_sites, np.diag(reps), order="atom-major").positions
    lengths = p_sc.cell.lengths()  # the cell is orthorhombic: minimum image per axis

    def mic_min(a_pos: np.ndarray, b_pos: np.ndarray) -> np.ndarray:
        """Minimum-image distance from each of ``a_pos`` (..., 3) to the nearest of ``b_pos``."""
        if not len(b_pos):
            return np.full(a_pos.shape[:-1], np.inf)
        d = a_pos[..., None, :] - b_pos
        d -= lengths * np.round(d / lengths)
        return np.sqrt((d**2).sum(-1)).min(-1)

    tet = GAMMA_PS_BOND_A / np.sqrt(3) * np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], float)
    rng = np.random.default_rng(seed)
    n_p = len(p_sc)
    for _outer in range(20):  # orientations in which the Na cannot be placed are drawn again
        # 1) each PS4 turned by a uniformly random rotation: one of 2000 drawn whose S are
        #    >= GAMMA_MIN_SS_A from the S already placed (the orientations ignore the Na)
        for _attempt in range(50):  # a pass that jams (a late PS4 with no room) starts over
            sulfur = np.empty((0, 3))
            for k in rng.permutation(n_p):
                cand = p_sc.positions[k] + np.einsum("rij,sj->rsi", Rotation.random(2000, random_state=rng).as_matrix(), tet)
                ok = np.flatnonzero(mic_min(cand, sulfur).min(-1) >= GAMMA_MIN_SS_A)
                if not ok.size:
                    break
                sulfur = np.vstack([sulfur, cand[rng.choice(ok)]])
            if len(sulfur) == 4 * n_p:
                break
        else:  # pragma: no cover - P-P is 6.2 A at the gamma density
            raise InputError("could not orient the PS4 tetrahedra", field="density_g_cm3",
                             fix="use a lower density (larger volume)")
        # 2) Na start on beta's 6b sites and are pushed out of the S they now overlap (and apart),
        #    by steps along the summed overlap vectors, until Na-S >= GAMMA_MIN_NAS_A and
        #    Na-Na >= GAMMA_MIN_NANA_A (the Na of gamma are liquid-like; NPT/MD takes it from here)
        na = na_pos.copy()
        anions = np.vstack([sulfur, p_sc.positions])  # keep the Na out of the tetrahedra too
        min_na = np.r_[np.full(len(sulfur), GAMMA_MIN_NAS_A), np.full(n_p, GAMMA_MIN_NAP_A)]
        for _step in range(500):
            d_s = na[:, None, :] - anions
            d_s -= lengths * np.round(d_s / lengths)
            r_s = np.linalg.norm(d_s, axis=-1)
            d_n = na[:, None, :] - na
            d_n -= lengths * np.round(d_n / lengths)
            r_n = np.linalg.norm(d_n, axis=-1)
            np.fill_diagonal(r_n, np.inf)
            over_s = np.clip(min_na + 0.05 - r_s, 0, None)
            over_n = np.clip(GAMMA_MIN_NANA_A + 0.05 - r_n, 0, None)
            if (r_s >= min_na).all() and r_n.min() >= GAMMA_MIN_NANA_A:
                break
            push = (over_s[..., None] * d_s / r_s[..., None]).sum(1) + 0.5 * (
                over_n[..., None] * d_n / np.where(np.isinf(r_n), 1.0, r_n)[..., None]).sum(1)
            na += 0.5 * push
        else:
            continue  # the Na are stuck between these tetrahedra: turn them all again
        break
    else:  # pragma: no cover - a few redraws suffice at the gamma density
        raise InputError("could not place the Na between the PS4", field="density_g_cm3",
                         fix="use a lower density (larger volume)")
    na_pos = na % lengths
    # the S were drawn in a permuted order of P: regroup them after their own P
    owner = np.argmin(np.linalg.norm(((sulfur[:, None, :] - p_sc.positions) + lengths / 2) % lengths - lengths / 2,
                                     axis=-1), axis=1)
    sulfur = sulfur[np.argsort(owner, kind="stable")]
    atoms = Atoms(
        symbols=["Na"] * len(na_pos) + ["P"] * n_p + ["S"] * (4 * n_p),
        positions=np.vstack([na_pos, p_sc.positions, sulfur]),
        cell=p_sc.cell, pbc=True,
    )
    atoms.info.update(
        material="gamma-Na3PS4", seed=seed, supercell=list(reps), density_g_cm3=float(density_g_cm3),
        phase="gamma starting cell: bcc PS4 + Na 6b of beta at the gamma density estimate, PS4 randomly "
              "oriented; not the refined Fddd cell; equilibrate in NPT at T",
        source="Famprikis et al. 2019/2021 (gamma: Fddd, PS4 rotationally disordered); beta framework from "
               "Hayashi et al. 2012",
    )
    return atoms


#: Cubic LLZO (Ia-3d) lattice parameter (Å) and the Li-Li minimum distance for placement (Å).
LLZO_A = 12.9827
LLZO_LI_MIN_DIST_A = 2.0
#: Minimum distance between occupied 24d sites (Å): excludes two 24d sharing one 48g/96h cage.
LLZO_TET_MIN_DIST_A = 4.5


def _llzo_frame_and_li_sites(n_cells: int, a_A: float) -> tuple[Atoms, Atoms, np.ndarray, np.ndarray, tuple[int, int, int]]:
    """The La/Zr/O framework of ``n_cells`` conventional Ia-3d cells at lattice constant ``a_A``,
    all of its Li sites (24d first, then 96h), the indices of the 24d and of the 96h sites, and
    the diagonal repeats (Wyckoff data of :func:`build_llzo`)."""
    cellpar = [a_A] * 3 + [90] * 3
    frame = crystal(["La", "Zr", "O"], [(0.125, 0, 0.25), (0, 0, 0), (0.10057, 0.19539, 0.28245)],
                    spacegroup=230, cellpar=cellpar)
    li_sites = crystal(["Li", "Li"], [(0.375, 0, 0.25), (0.0948, 0.6843, 0.5812)],
                       spacegroup=230, cellpar=cellpar, onduplicates="keep")
    reps = diagonal_repeats(frame.cell.lengths(), n_cells)
    host = make_supercell(frame, np.diag(reps), order="atom-major")
    sites = make_supercell(li_sites, np.diag(reps), order="atom-major")
    n_tet = 24 * n_cells  # crystal() lists the 24d sites first; atom-major keeps them first
    is_tet = np.arange(len(sites)) < n_tet
    tet, octa = np.flatnonzero(is_tet), np.flatnonzero(~is_tet)
    assert len(tet) == n_tet
    return host, sites, tet, octa, reps


def build_llzo(n_atoms: int | None = 192, seed: int = 0) -> Atoms:
    """Cubic garnet Li₇La₃Zr₂O₁₂ (LLZO) with the Li sublattice filled from its partial sites.

    Data: space group Ia-3d (230), a = 12.9827 Å; La on 24c (1/8, 0, 1/4), Zr on 16a (0, 0, 0),
    O on 96h (0.10057, 0.19539, 0.28245), Li1 on 24d (3/8, 0, 1/4) (occupancy ≈ 0.56) and Li2
    on 96h (0.0948, 0.6843, 0.5812) (occupancy ≈ 0.44) [J. Awaka, A. Takashima, K. Kataoka,
    N. Kijima, Y. Idemoto, J. Akimoto, Chem. Lett. 40, 60 (2011)]. Zr-O = 2.11 Å,
    La-O = 2.53/2.59 Å.

    Disorder: 56 Li per conventional cell are placed on the 24d + 96h sites (120 per cell) by
    seeded random sequential placement in two passes: first 24d sites, no two of which share an
    octahedral cage (24d-24d > 4.5 Å); then 96h sites at least 2.0 Å from every Li, which
    forbids the face-sharing 24d-96h (1.6 Å) and split 96h-96h (0.8 Å) pairs; surplus 96h Li
    are dropped at random to reach exactly 7 Li per formula unit. The resulting 24d occupancy
    (~0.4-0.5) is somewhat below the refined 0.56. Default: one conventional cell, 192 atoms.

    >>> a = build_llzo(seed=0)
    >>> a.get_chemical_formula(), formal_charge(a)
    ('La24Li56O96Zr16', 0)
    """
    n_cells = _n_cells(n_atoms, 192, 192, "LLZO")
    host, sites, tet, octa, reps = _llzo_frame_and_li_sites(n_cells, LLZO_A)
    rng = np.random.default_rng(seed)
    n_li = 56 * n_cells
    for _ in range(200):
        # 1) 24d Li, no two sharing an octahedral cage (those 24d are 3.98 A apart)
        t_idx = tet[place_on_sites(sites.positions[tet], host.cell.array, None, LLZO_TET_MIN_DIST_A, rng)]
        # 2) 96h Li at least 2.0 A from every Li so far, until jammed
        o_idx = octa[place_on_sites(sites.positions[octa], host.cell.array, None, LLZO_LI_MIN_DIST_A, rng,
                                    avoid_A=sites.positions[t_idx])]
        if len(t_idx) + len(o_idx) >= n_li:
            o_idx = np.sort(rng.choice(o_idx, n_li - len(t_idx), replace=False))
            chosen = np.concatenate([t_idx, o_idx])
            break
    else:  # pragma: no cover - 56 of 60+ attainable sites is always reached in practice
        raise InputError("could not place the LLZO Li sublattice", field="seed", fix="try another seed")
    atoms = Atoms(
        symbols=["Li"] * len(chosen) + host.get_chemical_symbols(),
        positions=np.vstack([sites.positions[chosen], host.positions]),
        cell=host.cell,
        pbc=True,
    )
    atoms.info.update(material="LLZO", source="Ia-3d, Awaka et al. 2011", seed=seed, supercell=list(reps))
    return atoms


# --------------------------------------------------------------------------------------------
# doped cubic LLZO: Ta on Zr (16a), Al or Ga on Li (24d)
# --------------------------------------------------------------------------------------------
#: e²/(4πε₀) in eV·Å (the Coulomb energy of two unit charges 1 Å apart).
COULOMB_EV_A = 14.399645478425668


def ewald_site_matrix(positions_A: np.ndarray, cell: np.ndarray, *, cutoff_A: float = 8.0,
                      tol: float = 1e-8) -> np.ndarray:
    """Ewald interaction matrix Φ (eV per e², N×N) of point charges on fixed sites under periodic
    boundary conditions: the electrostatic energy of charges ``q`` (in e) on those sites is
    ``q @ Φ @ q`` for any *neutral* ``q`` (empty sites carry 0).

    Real space: erfc(αr)/r over the periodic images within ``cutoff_A`` (α = √(−ln tol)/cutoff);
    reciprocal space: the k-vectors with exp(−k²/4α²) > tol; the self term −α/√π on the
    diagonal. Vectorised over site pairs (one pass per image and per block of k-vectors).

    >>> from ase.build import bulk
    >>> nacl = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    >>> q = np.where(nacl.numbers == 11, 1.0, -1.0)
    >>> e = q @ ewald_site_matrix(nacl.positions, nacl.cell.array) @ q
    >>> round(float(e) / 4 * (5.64 / 2) / COULOMB_EV_A, 4)   # per ion pair, in e²/(4πε₀ r_NN): the Madelung constant
    -1.7476
    """
    from scipy.special import erfc

    pos = np.asarray(positions_A, float)
    cell = np.asarray(cell, float)
    n = len(pos)
    volume = abs(float(np.linalg.det(cell)))
    alpha = math.sqrt(-math.log(tol)) / cutoff_A
    # real space: every image translation whose shell can hold a pair closer than the cutoff
    widths = volume / np.linalg.norm(np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1)
    reach = np.ceil(cutoff_A / widths).astype(int)
    diff = pos[:, None, :] - pos[None, :, :]
    real = np.zeros((n, n))
    for shift in np.stack(np.meshgrid(*(np.arange(-m, m + 1) for m in reach), indexing="ij"), -1).reshape(-1, 3):
        r = np.linalg.norm(diff + shift @ cell, axis=-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            term = np.where((r > 1e-8) & (r < cutoff_A), erfc(alpha * r) / r, 0.0)
        real += term
    # reciprocal space: half of the k-vectors (k and -k contribute alike)
    recip = 2 * np.pi * np.linalg.inv(cell).T
    k_max = 2 * alpha * math.sqrt(-math.log(tol))
    m_max = np.ceil(k_max * np.linalg.norm(cell, axis=1) / (2 * np.pi)).astype(int)
    grid = np.stack(np.meshgrid(*(np.arange(-m, m + 1) for m in m_max), indexing="ij"), -1).reshape(-1, 3)
    first = np.argmax(grid != 0, axis=1)
    half = grid[(grid != 0).any(axis=1) & (grid[np.arange(len(grid)), first] > 0)]
    kvec = half @ recip
    k2 = (kvec ** 2).sum(axis=1)
    keep = k2 <= k_max ** 2
    kvec, k2 = kvec[keep], k2[keep]
    weight = 2.0 * (2 * np.pi / volume) * np.exp(-k2 / (4 * alpha ** 2)) / k2
    phase = pos @ kvec.T
    recip_part = (np.cos(phase) * weight) @ np.cos(phase).T + (np.sin(phase) * weight) @ np.sin(phase).T
    phi = 0.5 * real + recip_part - np.eye(n) * alpha / math.sqrt(math.pi)
    return COULOMB_EV_A * phi


@dataclass(frozen=True)
class GarnetDopant:
    """A substituent of cubic LLZO, how it is charge balanced, and the published data for it."""

    name: str  #: builder name
    element: str
    #: the host site it takes: ``"16a"`` (Zr) or ``"24d"`` (tetrahedral Li)
    site: str
    #: Li removed per dopant atom (Ta⁵⁺ on Zr⁴⁺: 1; M³⁺ on Li⁺: the Li it replaces + 2 vacancies)
    li_removed: int
    #: formula template in the explore framework's syntax (:class:`ramanscreen.tasks.explore.DesignSpace`)
    formula_template: str
    default_x: float  #: dopant per formula unit when none is given
    max_x: float  #: largest x the builder accepts
    #: a published lattice constant (x, a in Å) of the doped garnet; ``a(x)`` is linear between
    #: the parent (x = 0, :data:`LLZO_A`) and this point (Vegard's law)
    anchor: tuple[float, float]
    source: str


#: Registered dopants of cubic LLZO. x is the dopant per formula unit (the x of
#: Li7-xLa3Zr2-xTaxO12, the y of Li7-3yAlyLa3Zr2O12).
GARNET_DOPANTS: dict[str, GarnetDopant] = {
    "LLZO-Ta": GarnetDopant(
        "LLZO-Ta", "Ta", "16a", 1, "Li{7-x}La3Zr{2-x}Ta{x}O12", 0.5, 1.0, (0.5, 12.95),
        "Ta on Zr (16a): Logeat et al., Solid State Ionics 206, 33 (2012) (a falls linearly with x, Ia-3d for "
        "x >= 0.25-0.4); Thompson et al., J. Mater. Chem. A 2, 13431 (2014) (cubic from x = 0.4, a ~ 12.95 A at "
        "x = 0.5); Li et al., J. Mater. Chem. 22, 15357 (2012)"),
    "LLZO-Al": GarnetDopant(
        "LLZO-Al", "Al", "24d", 3, "Li{7-3*x}Al{x}La3Zr2O12", 0.25, 0.39, (0.24, 12.968),
        "Al on Li 24d: Geiger et al., Inorg. Chem. 50, 1089 (2011); Buschmann et al., Phys. Chem. Chem. Phys. 13, "
        "19378 (2011); Rangasamy et al., Solid State Ionics 206, 28 (2012) (Li6.24Al0.24La3Zr2O11.98, "
        "a ~ 12.97 A); solubility <= 0.39 pfu: Rettenwander et al., Eur. J. Mineral. 28, 619 (2016)"),
    "LLZO-Ga": GarnetDopant(
        "LLZO-Ga", "Ga", "24d", 3, "Li{7-3*x}Ga{x}La3Zr2O12", 0.25, 0.72, (0.25, 12.975),
        "Ga on Li 24d: Bernuy-Lopez et al., Chem. Mater. 26, 3610 (2014); Wagner et al., Chem. Mater. 28, 1861 "
        "(2016) (a ~ 12.97-12.98 A; single crystals with x > 0.07 refine in I-43d, a subgroup of Ia-3d: this "
        "builder keeps the Ia-3d parent); solubility <= 0.72 pfu: Rettenwander et al., Eur. J. Mineral. 28, "
        "619 (2016)"),
}
#: Minimum distance (Å) from an Al/Ga on 24d to a Li on 96h: as for a 24d Li, no Li on the four
#: 96h sites sharing a face with the dopant's tetrahedron (1.60 Å); the 96h on the far side of
#: those cages (2.40 Å) stay allowed — excluding them too leaves fewer sites than the charge
#: balance needs (50 Li per cell at x = 0.25) — and the Ewald ranking keeps Li away where it can.
GARNET_DOPANT_LI_MIN_DIST_A = 2.0
#: Seeded candidate configurations (dopant + Li sites) ranked by electrostatic energy per build.
GARNET_SITE_CANDIDATES = 24
#: How the dopant and vacancy sites are chosen (recorded in the built structure's info).
GARNET_SITE_METHOD = ("lowest Ewald energy of formal point charges (Li+1 La+3 Zr+4 Ta+5 Al/Ga+3 O-2) among "
                      "seeded random candidates of dopant sites and Li sublattice")


def garnet_lattice_A(name: str, x: float) -> float:
    """Cubic lattice constant (Å) of the doped garnet at dopant fraction ``x``: linear between
    the parent (Awaka et al. 2011) and the dopant's published point (:attr:`GarnetDopant.anchor`).

    >>> round(garnet_lattice_A("LLZO-Ta", 0.5), 3), round(garnet_lattice_A("LLZO-Al", 0.0), 4)
    (12.95, 12.9827)
    """
    x_ref, a_ref = GARNET_DOPANTS[name].anchor
    return LLZO_A + (a_ref - LLZO_A) * float(x) / x_ref


def garnet_amounts(name: str, x: float) -> dict[str, float]:
    """Atoms per formula unit of the doped garnet (charge balanced: Li = 7 − ``li_removed``·x).

    >>> garnet_amounts("LLZO-Al", 0.25)
    {'Li': 6.25, 'Al': 0.25, 'La': 3.0, 'Zr': 2.0, 'O': 12.0}
    """
    d = GARNET_DOPANTS[name]
    x = float(x)
    amounts = {"Li": 7.0 - d.li_removed * x}
    if d.site == "24d":
        amounts[d.element] = x
    amounts.update(La=3.0, Zr=2.0 - (x if d.site == "16a" else 0.0))
    if d.site == "16a":
        amounts[d.element] = x
    amounts["O"] = 12.0
    return amounts


def garnet_formula(name: str, x: float) -> str:
    """The formula unit as the explore framework writes it (amounts to 4 decimals, 0 dropped).

    >>> garnet_formula("LLZO-Ta", 0.25), garnet_formula("LLZO-Ga", 0.25)
    ('Li6.75La3Zr1.75Ta0.25O12', 'Li6.25Ga0.25La3Zr2O12')
    """
    parts = []
    for el, v in garnet_amounts(name, x).items():
        text = f"{round(v, 4):.4f}".rstrip("0").rstrip(".")
        if text != "0":
            parts.append(el + ("" if text == "1" else text))
    return "".join(parts)


def snap_garnet_fraction(name: str, x: float, n_cells: int = 1) -> float:
    """The dopant fraction nearest ``x`` that ``n_cells`` conventional cells hold exactly (a
    multiple of 1/(8·n_cells)), within [0, max_x] — for a design space with a continuous x.

    >>> snap_garnet_fraction("LLZO-Ta", 0.273), snap_garnet_fraction("LLZO-Al", 0.9)
    (0.25, 0.375)
    """
    d = GARNET_DOPANTS[name]
    step = 1.0 / (8 * n_cells)
    top = math.floor(d.max_x / step + 1e-9) * step
    return float(min(max(round(float(x) / step) * step, 0.0), top))


def _garnet_cells(name: str, x: float, n_atoms: int | None) -> int:
    """Number of conventional cells: ``n_atoms`` is the doped cell's own atom count, or a
    multiple of 192 (the parent cells it is cut from); None: one cell."""
    d = GARNET_DOPANTS[name]
    lost_per_cell = 8 * x * (d.li_removed - (1 if d.site == "24d" else 0))
    if n_atoms is None:
        return 1
    for n in range(1, 65):
        if abs(n * (192 - lost_per_cell) - n_atoms) < 1e-6:
            return n
    if n_atoms > 0 and n_atoms % 192 == 0:
        return n_atoms // 192
    sizes = [192 * n - n * lost_per_cell for n in (1, 2, 4, 8)]
    shown = ", ".join(f"{s:g}" for s in sizes if abs(s - round(s)) < 1e-6)
    raise InputError(f"{name} at x = {x:g} cannot have {n_atoms} atoms", field="n_atoms",
                     fix=f"use a multiple of 192 (parent cells) or the doped cell's own size{': ' + shown if shown else ''}")


def garnet_cell_counts(name: str, x: float, n_atoms: int | None = None) -> dict[str, int]:
    """Atoms of each element in the doped supercell, checked: ``x`` within [0, max_x] and a whole
    number of dopants in the cell. Raises :class:`InputError` naming ``x`` or ``n_atoms``.

    >>> garnet_cell_counts("LLZO-Ta", 0.5)
    {'Li': 52, 'La': 24, 'Zr': 12, 'Ta': 4, 'O': 96}
    >>> garnet_cell_counts("LLZO-Ta", 0.3)
    Traceback (most recent call last):
    ...
    ramanscreen.tasks.common.InputError: x: LLZO-Ta at x = 0.3 puts 2.4 Ta in 1 cell(s) (fix: use a multiple of 0.125 (nearest: 0.25), or more cells)
    """
    d = GARNET_DOPANTS[name]
    try:
        x = float(x)
    except (TypeError, ValueError):
        raise InputError(f"dopant fraction {x!r} is not a number", field="x", fix="give e.g. x=0.25") from None
    if not (0.0 <= x <= d.max_x):
        raise InputError(f"{name} needs 0 <= x <= {d.max_x:g}, got {x:g}", field="x",
                         fix=f"use x in [0, {d.max_x:g}] ({d.formula_template})")
    n_cells = _garnet_cells(name, x, n_atoms)
    n_dop = 8 * n_cells * x
    if abs(n_dop - round(n_dop)) > 1e-6:
        raise InputError(f"{name} at x = {x:g} puts {n_dop:g} {d.element} in {n_cells} cell(s)", field="x",
                         fix=f"use a multiple of {1 / (8 * n_cells):g} (nearest: "
                             f"{snap_garnet_fraction(name, x, n_cells):g}), or more cells")
    return {el: int(round(8 * n_cells * v)) for el, v in garnet_amounts(name, x).items() if round(8 * n_cells * v)}


def build_doped_llzo(name: str, n_atoms: int | None = None, seed: int = 0, *, x: float | None = None,
                     lattice_A: float | None = None, candidates: int = GARNET_SITE_CANDIDATES) -> Atoms:
    """Doped cubic garnet LLZO: Li₇₋ₓLa₃Zr₂₋ₓTaₓO₁₂ (``LLZO-Ta``, Ta⁵⁺ on Zr 16a, one Li vacancy
    per Ta) or Li₇₋₃ₓMₓLa₃Zr₂O₁₂ with M = Al, Ga (``LLZO-Al``, ``LLZO-Ga``: M³⁺ on a Li 24d site,
    two more Li vacancies per M), with ``x`` the dopant per formula unit (default
    :attr:`GarnetDopant.default_x`: Li₆.₅La₃Zr₁.₅Ta₀.₅O₁₂, Li₆.₂₅M₀.₂₅La₃Zr₂O₁₂).

    The framework and Li sites are those of :func:`build_llzo` (Awaka et al. 2011), at the
    lattice constant :func:`garnet_lattice_A` (``lattice_A`` overrides it). The Li content is set
    by charge balance. Dopant and vacancy sites are chosen by energy: ``candidates`` seeded
    configurations are drawn — dopants on random 16a (Ta) or 24d sites (Al/Ga, no two sharing an
    octahedral cage), then the Li as in :func:`build_llzo` (24d first, then 96h ≥ 2.0 Å from every
    Li, no Li within :data:`GARNET_DOPANT_LI_MIN_DIST_A` of an Al/Ga nor on a 24d sharing its
    cages) — and the one of lowest Ewald energy of formal point charges
    (:func:`ewald_site_matrix`) is built. ``atoms.info`` records x, the formula, the lattice, the
    method, every candidate's energy and the chosen one. ``n_atoms``: the doped cell's atom count
    or a multiple of 192 (parent cells); default one cell.

    >>> a = build_doped_llzo("LLZO-Al", x=0.25, seed=0)
    >>> a.get_chemical_formula(), formal_charge(a), a.info["formula"]
    ('Al2La24Li50O96Zr16', 0, 'Li6.25Al0.25La3Zr2O12')
    >>> a.info["ewald_energy_eV"] == min(a.info["candidate_energies_eV"])
    True
    """
    if name not in GARNET_DOPANTS:
        raise InputError(f"no doped garnet {name!r}", field="structure", fix=f"use one of {', '.join(GARNET_DOPANTS)}")
    d = GARNET_DOPANTS[name]
    x = d.default_x if x is None else x
    counts = garnet_cell_counts(name, x, n_atoms)
    x = float(x)
    n_cells = _garnet_cells(name, x, n_atoms)
    if int(candidates) < 1:
        raise InputError(f"candidates must be >= 1, got {candidates}", field="candidates", fix="use e.g. 24")
    a_A = garnet_lattice_A(name, x) if lattice_A is None else float(lattice_A)
    if not 12.5 < a_A < 13.5:
        raise InputError(f"lattice constant {a_A} A is not a garnet's", field="lattice_A", fix="use about 12.9-13.0")
    host, sites, tet, octa, reps = _llzo_frame_and_li_sites(n_cells, a_A)
    cell = host.cell.array
    host_symbols = np.array(host.get_chemical_symbols(), dtype=object)
    zr = np.flatnonzero(host_symbols == "Zr")
    n_dop, n_li = counts.get(d.element, 0), counts["Li"]
    # charges on every site: the Li sites (24d, 96h) first, then the framework
    positions = np.vstack([sites.positions, host.positions])
    phi = ewald_site_matrix(positions, cell)
    q_host = np.array([OXIDATION_STATES[s] for s in host_symbols], float)
    q_dop = float(OXIDATION_STATES[d.element])
    rng = np.random.default_rng(seed)
    drawn: list[tuple[float, np.ndarray, np.ndarray]] = []
    for _ in range(int(candidates)):
        if d.site == "16a":
            dop = np.sort(rng.choice(zr, n_dop, replace=False)) if n_dop else np.empty(0, int)
            blocked = np.empty((0, 3))
        else:
            dop = tet[place_on_sites(sites.positions[tet], cell, n_dop, LLZO_TET_MIN_DIST_A, rng)] if n_dop \
                else np.empty(0, int)
            blocked = sites.positions[dop]
        li = _place_garnet_li(sites, tet, octa, cell, n_li, rng, blocked)
        q = np.zeros(len(positions))
        q[li] = 1.0
        q[len(sites):] = q_host
        if d.site == "16a":
            q[len(sites) + dop] = q_dop
        else:
            q[dop] = q_dop
        assert abs(q.sum()) < 1e-9
        drawn.append((float(q @ phi @ q), dop, li))
    energies = [e for e, _, _ in drawn]
    best = int(np.argmin(energies))
    _, dop, li = drawn[best]
    symbols = host_symbols.copy()
    if d.site == "16a":
        symbols[dop] = d.element
        extra_symbols: list[str] = []
        extra_pos = np.empty((0, 3))
    else:
        extra_symbols = [d.element] * len(dop)
        extra_pos = sites.positions[dop]
    atoms = Atoms(
        symbols=["Li"] * len(li) + extra_symbols + symbols.tolist(),
        positions=np.vstack([sites.positions[li], extra_pos, host.positions]),
        cell=host.cell, pbc=True,
    )
    atoms.info.update(
        material=name, x=x, dopant=d.element, dopant_site=d.site, formula=garnet_formula(name, x),
        lattice_A=a_A, supercell=list(reps), seed=seed,
        phase=f"cubic garnet (Ia-3d parent), {d.element} on {d.site}, Li set by charge balance",
        source=f"Ia-3d framework and Li sites of Awaka et al. 2011; {d.source}",
        site_choice=GARNET_SITE_METHOD, chosen_candidate=best,
        candidate_energies_eV=[round(e, 4) for e in energies], ewald_energy_eV=round(energies[best], 4),
    )
    return atoms


def _place_garnet_li(sites: Atoms, tet: np.ndarray, octa: np.ndarray, cell: np.ndarray, n_li: int,
                     rng: np.random.Generator, blocked_A: np.ndarray) -> np.ndarray:
    """``n_li`` Li site indices, as :func:`build_llzo` places them, kept clear of the Al/Ga at
    ``blocked_A`` (24d: the cage rule; 96h: :data:`GARNET_DOPANT_LI_MIN_DIST_A`)."""
    octa_ok = octa
    if len(blocked_A):
        _, d_block = get_distances(sites.positions[octa], blocked_A, cell=cell, pbc=True)
        octa_ok = octa[(d_block >= GARNET_DOPANT_LI_MIN_DIST_A).all(axis=1)]
    for _ in range(200):
        t_idx = tet[place_on_sites(sites.positions[tet], cell, None, LLZO_TET_MIN_DIST_A, rng,
                                   avoid_A=blocked_A if len(blocked_A) else None)]
        if len(t_idx) >= n_li:
            return np.sort(rng.choice(t_idx, n_li, replace=False))
        o_idx = octa_ok[place_on_sites(sites.positions[octa_ok], cell, None, LLZO_LI_MIN_DIST_A, rng,
                                       avoid_A=sites.positions[t_idx])]
        if len(t_idx) + len(o_idx) >= n_li:
            return np.concatenate([t_idx, np.sort(rng.choice(o_idx, n_li - len(t_idx), replace=False))])
    raise InputError(f"could not place {n_li} Li around the dopants", field="x",  # pragma: no cover
                     fix="lower the dopant fraction or try another seed")


def build_llzo_ta(n_atoms: int | None = None, seed: int = 0, **options: Any) -> Atoms:
    """Ta-doped cubic LLZO, Li₇₋ₓLa₃Zr₂₋ₓTaₓO₁₂ (:func:`build_doped_llzo`; option ``x``, default 0.5)."""
    return build_doped_llzo("LLZO-Ta", n_atoms, seed, **options)


def build_llzo_al(n_atoms: int | None = None, seed: int = 0, **options: Any) -> Atoms:
    """Al-doped cubic LLZO, Li₇₋₃ₓAlₓLa₃Zr₂O₁₂ (:func:`build_doped_llzo`; option ``x``, default 0.25)."""
    return build_doped_llzo("LLZO-Al", n_atoms, seed, **options)


def build_llzo_ga(n_atoms: int | None = None, seed: int = 0, **options: Any) -> Atoms:
    """Ga-doped cubic LLZO, Li₇₋₃ₓGaₓLa₃Zr₂O₁₂ (:func:`build_doped_llzo`; option ``x``, default 0.25)."""
    return build_doped_llzo("LLZO-Ga", n_atoms, seed, **options)


@dataclass(frozen=True)
class Builder:
    """A registered structure builder with its paper defaults."""

    name: str
    build: Callable[..., Atoms]
    default_n_atoms: int
    ordered: bool
    #: space group (international number) of the ordered phase, for the spglib check
    spacegroup: int
    description: str

    def __call__(self, n_atoms: int | None = None, seed: int = 0, **options: object) -> Atoms:
        return self.build(n_atoms=self.default_n_atoms if n_atoms is None else n_atoms, seed=seed, **options)


#: Registered builders by canonical name.
BUILDERS: dict[str, Builder] = {
    "AgI": Builder("AgI", build_agi, 128, False, 229, "alpha-AgI, Ag disordered on 12d"),
    "Na3SbS4": Builder("Na3SbS4", build_na3sbs4, 128, True, 114, "tetragonal Na3SbS4"),
    "Na3SbS4-W": Builder("Na3SbS4-W", build_na3sbs4_w, 127, False, 114,
                         "Na3SbS4 with one W on Sb + one Na vacancy (lowest MLFF energy)"),
    "Na3PS4": Builder("Na3PS4", build_na3ps4, 256, True, 217, "cubic beta-Na3PS4 (I-43m), room-temperature density"),
    "gamma-Na3PS4": Builder("gamma-Na3PS4", build_gamma_na3ps4, 256, False, 229,
                            "gamma-Na3PS4 starting cell: gamma density, PS4 randomly oriented (equilibrate in NPT)"),
    "LLZO": Builder("LLZO", build_llzo, 192, False, 230, "cubic garnet Li7La3Zr2O12, Li disordered"),
    # doped garnets: n_atoms 192 = one parent cell; the dopant fraction is the option x
    # ("LLZO-Ta:x=0.25" or the formula "Li6.75La3Zr1.75Ta0.25O12" as a structure name)
    "LLZO-Ta": Builder("LLZO-Ta", build_llzo_ta, 192, False, 230,
                       "Li7-xLa3Zr2-xTaxO12: Ta on Zr 16a + x Li vacancies (sites by Ewald energy)"),
    "LLZO-Al": Builder("LLZO-Al", build_llzo_al, 192, False, 230,
                       "Li7-3xAlxLa3Zr2O12: Al on Li 24d + 2x Li vacancies (sites by Ewald energy)"),
    "LLZO-Ga": Builder("LLZO-Ga", build_llzo_ga, 192, False, 230,
                       "Li7-3xGaxLa3Zr2O12: Ga on Li 24d + 2x Li vacancies (sites by Ewald energy)"),
}

#: Accepted aliases (case-insensitive) for the canonical builder names.
ALIASES: dict[str, str] = {
    "alpha-agi": "AgI", "α-agi": "AgI", "agi": "AgI",
    "na3sbs4": "Na3SbS4", "nss": "Na3SbS4",
    "na3sbs4-w": "Na3SbS4-W", "na3sbs4w": "Na3SbS4-W", "w-na3sbs4": "Na3SbS4-W",
    "na2.94sb0.94w0.06s4": "Na3SbS4-W", "na3-xsb1-xwxs4": "Na3SbS4-W",
    "na3ps4": "Na3PS4", "beta-na3ps4": "Na3PS4", "β-na3ps4": "Na3PS4", "c-na3ps4": "Na3PS4",
    "gamma-na3ps4": "gamma-Na3PS4", "γ-na3ps4": "gamma-Na3PS4",
    "llzo": "LLZO", "li7la3zr2o12": "LLZO", "c-llzo": "LLZO",
    "llzo-ta": "LLZO-Ta", "ta-llzo": "LLZO-Ta", "llzto": "LLZO-Ta",
    "llzo-al": "LLZO-Al", "al-llzo": "LLZO-Al",
    "llzo-ga": "LLZO-Ga", "ga-llzo": "LLZO-Ga",
}


# --------------------------------------------------------------------------------------------
# checks against published data
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Published:
    """Independently published crystallographic data a builder is checked against."""

    #: space group number (spglib) of the whole cell, or of ``framework`` for disordered phases
    spacegroup: int
    #: conventional lattice constants a, b, c (Å) and the accepted range of each (published spread)
    lattice_A: tuple[float, float, float]
    lattice_range_A: tuple[tuple[float, float], tuple[float, float], tuple[float, float]]
    #: shortest distance between each species pair must lie in [lo, hi] (Å)
    nn_bounds_A: dict[tuple[str, str], tuple[float, float]]
    source: str
    #: species whose sublattice carries ``spacegroup`` (None: all atoms); W counts as Sb
    framework: tuple[str, ...] | None = None
    #: residual pressure (GPa) and energy change (meV/atom) accepted after a short MLFF
    #: position relaxation (cell fixed): a cell at the right density with sensible positions
    max_pressure_GPa: float = 1.5
    max_relax_meV_atom: float = 30.0


#: Literature data per builder (docs/md.md lists the sources).
PUBLISHED: dict[str, Published] = {
    "AgI": Published(
        229, (5.07, 5.07, 5.07), ((5.04, 5.10),) * 3,
        {("Ag", "I"): (2.70, 2.95), ("I", "I"): (4.30, 4.45), ("Ag", "Ag"): (2.45, 3.2)},
        "Wright & Fender, J. Phys. C 10, 2261 (1977); Hull, Rep. Prog. Phys. 67, 1233 (2004): Im-3m, "
        "a = 5.07 A at ~420-450 K, Ag-I 2.7-2.9 A", framework=("I",), max_relax_meV_atom=80.0),
    "Na3SbS4": Published(
        114, (7.1453, 7.1453, 7.2770), ((7.14, 7.17), (7.14, 7.17), (7.27, 7.30)),
        {("Sb", "S"): (2.31, 2.36), ("Na", "S"): (2.80, 3.00)},
        "Wang et al., Angew. Chem. Int. Ed. 55, 8551 (2016); Zhang et al., Adv. Sci. 3, 1600089 (2016); "
        "Banerjee et al., Angew. Chem. Int. Ed. 55, 9634 (2016): P-42_1c, Sb-S 2.33 A; "
        "Na-S >= 2.8 A (isotypic t-Na3PS4: Chu et al., Sci. Rep. 6, 33733 (2016))"),
    "Na3SbS4-W": Published(
        114, (7.1453, 7.1453, 7.2770), ((7.14, 7.17), (7.14, 7.17), (7.27, 7.30)),
        {("Sb", "S"): (2.31, 2.36), ("W", "S"): (2.15, 2.36), ("Na", "S"): (2.80, 3.00)},
        "host as Na3SbS4; W-S 2.18-2.20 A in WS4(2-) (the unrelaxed W sits in an SbS4 tetrahedron, 2.33 A); "
        "space group of the Sb/W + S + Na framework with the vacancy filled", framework=("Na", "Sb", "S"),
        max_relax_meV_atom=40.0),
    "Na3PS4": Published(
        217, (6.9965,) * 3, ((6.98, 7.01),) * 3,
        {("P", "S"): (2.02, 2.09), ("Na", "S"): (2.80, 3.10)},
        "Hayashi et al., Nat. Commun. 3, 856 (2012): I-43m, a = 6.9965 A, P-S 2.05 A"),
    "gamma-Na3PS4": Published(
        229, (0.0, 0.0, 0.0), ((0.0, 99.0),) * 3,
        {("P", "S"): (2.02, 2.09), ("Na", "S"): (2.40, 3.10), ("S", "S"): (2.95, 3.6)},
        "Famprikis et al., ACS Mater. Lett. 1, 641 (2019); Chem. Mater. 33, 5652 (2021): gamma is Fddd with "
        "PS4 rotationally disordered; this starting cell is checked for its bcc P sublattice, P-S 2.05 A and "
        "no S-S / Na-S overlap, and its lattice against the density it was built at",
        framework=("P",), max_pressure_GPa=3.0, max_relax_meV_atom=150.0),
    "LLZO": Published(
        230, (12.9827,) * 3, ((12.96, 13.00),) * 3,
        {("Zr", "O"): (2.08, 2.14), ("La", "O"): (2.48, 2.60), ("Li", "O"): (1.75, 2.00)},
        "Awaka et al., Chem. Lett. 40, 60 (2011): Ia-3d, a = 12.9827 A, Zr-O 2.11 A, La-O 2.53/2.59 A; "
        "Li-O 1.9 A (24d), 1.78 A and up (96h, split site)", framework=("La", "Zr", "O"), max_relax_meV_atom=60.0),
    # doped garnets: the parent's framework space group (Ta counted as Zr; Al/Ga sit on Li sites,
    # outside the La/Zr/O framework), the lattice against the reported spread for the usual
    # stabilising compositions (Ta x ~ 0.25-0.6, Al and Ga y ~ 0.2-0.3: other x fall outside and
    # show OUT), and the shortest dopant-O bond against its coordination (the unrelaxed dopant
    # sits on the host site: 2.10 A on 16a, 1.91 A on 24d)
    "LLZO-Ta": Published(
        230, (12.95,) * 3, ((12.94, 12.97),) * 3,
        {("Zr", "O"): (2.08, 2.14), ("Ta", "O"): (1.95, 2.14), ("La", "O"): (2.48, 2.60), ("Li", "O"): (1.75, 2.00)},
        GARNET_DOPANTS["LLZO-Ta"].source + "; (Zr,Ta)-O 2.09-2.10 A in the mixed 16a site, Ta-O 1.99 A in "
        "Li5La3Ta2O12 (Cussen, Chem. Commun. 2006, 412)", framework=("La", "Zr", "O"), max_relax_meV_atom=60.0),
    "LLZO-Al": Published(
        230, (12.968,) * 3, ((12.96, 12.97),) * 3,
        {("Zr", "O"): (2.08, 2.14), ("Al", "O"): (1.70, 2.00), ("La", "O"): (2.48, 2.60), ("Li", "O"): (1.75, 2.00)},
        GARNET_DOPANTS["LLZO-Al"].source + "; Al-O 1.75-1.80 A in AlO4, 1.91 A on the unrelaxed 24d site",
        framework=("La", "Zr", "O"), max_relax_meV_atom=60.0),
    "LLZO-Ga": Published(
        230, (12.975,) * 3, ((12.97, 12.98),) * 3,
        {("Zr", "O"): (2.08, 2.14), ("Ga", "O"): (1.75, 2.00), ("La", "O"): (2.48, 2.60), ("Li", "O"): (1.75, 2.00)},
        GARNET_DOPANTS["LLZO-Ga"].source + "; Ga-O 1.83-1.86 A in GaO4, 1.91 A on the unrelaxed 24d site",
        framework=("La", "Zr", "O"), max_relax_meV_atom=60.0),
}


@dataclass(frozen=True)
class CheckRow:
    """One figure of :func:`check_structure`: what, the value, the published reference, pass."""

    quantity: str
    value: str
    reference: str
    ok: bool


def conventional_lattice_A(atoms: Atoms) -> np.ndarray:
    """Lattice constants a, b, c of the conventional cell: the cell lengths divided by the
    supercell repeats recorded by the builder (``atoms.info["supercell"]``)."""
    reps = np.asarray(atoms.info.get("supercell", (1, 1, 1)), float)
    return atoms.cell.lengths() / reps


def nn_distances_A(atoms: Atoms, pairs: Iterable[tuple[str, str]], cutoff_A: float = 6.0) -> dict[tuple[str, str], float]:
    """Shortest distance between species ``a`` and ``b`` (minimum image) for each pair."""
    from ase.neighborlist import neighbor_list

    i, j, d = neighbor_list("ijd", atoms, cutoff_A)
    sym = np.array(atoms.get_chemical_symbols())
    return {(a, b): float(d[(sym[i] == a) & (sym[j] == b)].min(initial=np.inf)) for a, b in pairs}


#: Substituents counted as the host atom whose site they take, for the space-group check:
#: W (74) on Sb (51) in Na3SbS4, Ta (73) on Zr (40) in LLZO.
_SAME_SITE_Z = {74: 51, 73: 40}


def spacegroup_of(atoms: Atoms, framework: tuple[str, ...] | None = None, symprec: float = 1e-3) -> tuple[str, int]:
    """spglib's international symbol and number for ``atoms`` (or its ``framework`` species;
    W counts as Sb and Ta as Zr, so a doped cell shows its host's group).

    >>> spacegroup_of(build_structure("Na3SbS4", n_atoms=16))
    ('P-42_1c', 114)
    """
    import spglib

    numbers = atoms.numbers.copy()
    for dopant, host_z in _SAME_SITE_Z.items():
        numbers[numbers == dopant] = host_z
    keep = np.ones(len(atoms), bool) if framework is None else np.isin(
        np.array(atoms.get_chemical_symbols()), framework) | np.isin(atoms.numbers, list(_SAME_SITE_Z))
    data = spglib.get_symmetry_dataset((atoms.cell.array, atoms.get_scaled_positions()[keep], numbers[keep]),
                                       symprec=symprec)
    if data is None:
        return "P1", 1
    return str(data.international), int(data.number)


def _fill_w_vacancy(atoms: Atoms) -> Atoms:
    """The W-doped cell with its Na vacancy filled again (the host framework, for the
    space-group check): the Na site of the pristine cell farthest from every Na present."""
    pristine = build_na3sbs4(len(atoms) + 1)
    na0 = pristine.positions[pristine.numbers == 11]
    na = atoms.positions[atoms.numbers == 11]
    _, d = get_distances(na0, na, cell=atoms.cell.array, pbc=True)
    missing = int(np.argmax(d.min(axis=1)))
    filled = atoms.copy()
    filled.append("Na")
    filled.positions[-1] = na0[missing]
    return filled


def check_structure(atoms: Atoms, name: str) -> list[CheckRow]:
    """Space group, lattice constants and nearest-neighbour distances of ``atoms`` against the
    published data of builder ``name`` (:data:`PUBLISHED`).

    >>> rows = check_structure(build_structure("Na3SbS4"), "Na3SbS4")
    >>> all(r.ok for r in rows), [r.quantity for r in rows][:2]
    (True, ['space group', 'a (A)'])
    """
    canonical = resolve_name(name)
    if canonical is None or canonical not in PUBLISHED:
        raise InputError(f"no published data for {name!r}", field="structure",
                         fix=f"check one of {', '.join(PUBLISHED)}")
    ref = PUBLISHED[canonical]
    target = _fill_w_vacancy(atoms) if canonical == "Na3SbS4-W" else atoms
    symbol, number = spacegroup_of(target, ref.framework)
    where = "" if ref.framework is None else f" ({'+'.join(ref.framework)} sublattice)"
    rows = [CheckRow("space group" + where, f"{symbol} ({number})", str(ref.spacegroup), number == ref.spacegroup)]
    lattice = conventional_lattice_A(atoms)
    expected = ref.lattice_A
    ranges = ref.lattice_range_A
    if canonical == "gamma-Na3PS4":  # the bcc edge of the density it was built at
        v_fu = _NA3PS4_G_MOL / (float(atoms.info.get("density_g_cm3", GAMMA_NA3PS4_DENSITY_G_CM3)) * _AVOGADRO) * 1e24
        a0 = (2 * v_fu) ** (1 / 3)
        expected = (a0, a0, a0)
        ranges = ((a0 - 0.01, a0 + 0.01),) * 3
    for axis, value, exp, (lo, hi) in zip("abc", lattice, expected, ranges, strict=True):
        rows.append(CheckRow(f"{axis} (A)", f"{value:.4f}", f"{exp:.4f} [{lo:.2f}, {hi:.2f}]", bool(lo <= value <= hi)))
    for (a, b), d in nn_distances_A(atoms, ref.nn_bounds_A).items():
        lo, hi = ref.nn_bounds_A[(a, b)]
        rows.append(CheckRow(f"shortest {a}-{b} (A)", f"{d:.3f}", f"[{lo:.2f}, {hi:.2f}]", bool(lo <= d <= hi)))
    return rows


@dataclass(frozen=True)
class RelaxCheck:
    """A short MLFF position relaxation (cell fixed) of a built cell."""

    pressure0_GPa: float  #: pressure of the cell as built
    pressure_GPa: float  #: residual pressure after the relaxation
    energy_change_meV_atom: float  #: E(relaxed) - E(built), per atom (≤ 0)
    max_force_eV_A: float  #: largest force left
    steps: int
    model: str


def relax_check(atoms: Atoms, calculator: str | Calculator = "chgnet", *, steps: int = 40,
                fmax_eV_A: float = 0.05) -> RelaxCheck:
    """Relax the positions of ``atoms`` (a copy; cell fixed) with the MLFF for at most ``steps``
    FIRE steps and report the pressure before and after and the energy change."""
    from ase.optimize import FIRE
    from ase.units import GPa

    from ramanscreen.tasks.md import get_calculator

    calc = get_calculator(calculator, properties=("energy", "forces", "stress")) if isinstance(
        calculator, str) else calculator
    work = atoms.copy()
    work.calc = calc
    e0 = work.get_potential_energy()
    p0 = -float(np.mean(work.get_stress()[:3])) / GPa
    opt = FIRE(work, logfile=None)
    opt.run(fmax=fmax_eV_A, steps=steps)
    e1 = work.get_potential_energy()
    p1 = -float(np.mean(work.get_stress()[:3])) / GPa
    fmax = float(np.linalg.norm(work.get_forces(), axis=1).max())
    model = str(getattr(calc, "ramanscreen_info", {}).get("model", type(calc).__name__))
    return RelaxCheck(p0, p1, 1000.0 * (e1 - e0) / len(work), fmax, int(opt.nsteps), model)


_FORMULA_RE = re.compile(r"([A-Z][a-z]?)(\d+(?:\.\d+)?|\.\d+)?")


def _formula_amounts(text: str) -> dict[str, float] | None:
    """``{element: amount}`` of a plain formula such as ``Li6.5La3Zr1.5Ta0.5O12``, else None."""
    text = text.strip()
    if not text or _FORMULA_RE.sub("", text):
        return None
    out: dict[str, float] = {}
    for el, amount in _FORMULA_RE.findall(text):
        out[el] = out.get(el, 0.0) + (float(amount) if amount else 1.0)
    return out


def _garnet_of_formula(text: str) -> tuple[str, float] | None:
    """(doped-garnet builder, x) whose formula unit ``text`` is, else None (tolerance 1e-4)."""
    amounts = _formula_amounts(text)
    if amounts is None:
        return None
    for name, d in GARNET_DOPANTS.items():
        x = amounts.get(d.element)
        if x is None or set(amounts) != {"Li", "La", "Zr", "O", d.element}:
            continue
        want = garnet_amounts(name, x)
        if all(abs(amounts[el] - v) < 1e-4 for el, v in want.items() if v):
            return name, x
    return None


def parse_structure_spec(spec: str) -> tuple[str, dict[str, float]]:
    """Builder and options of a structure name: ``NAME``, ``NAME:x=VALUE`` (``y=`` is read as x
    for the Al/Ga garnets, after Li7-3yAlyLa3Zr2O12) or a doped-garnet formula unit.

    >>> parse_structure_spec("LLZO-Ta:x=0.25"), parse_structure_spec("Li6.25Al0.25La3Zr2O12")
    (('LLZO-Ta', {'x': 0.25}), ('LLZO-Al', {'x': 0.25}))
    >>> parse_structure_spec("llzo-ga:y=0.125"), parse_structure_spec("AgI")
    (('LLZO-Ga', {'x': 0.125}), ('AgI', {}))
    """
    base, sep, params = spec.partition(":")
    canonical = base if base in BUILDERS else ALIASES.get(base.strip().lower())
    if canonical is None:
        hit = _garnet_of_formula(spec)
        if hit is None:
            raise InputError(f"unknown structure {spec!r}", field="structure",
                             fix=f"use one of {', '.join(BUILDERS)} or a structure file (CIF, POSCAR, extxyz)")
        return hit[0], {"x": hit[1]}
    if not sep:
        return canonical, {}
    if canonical not in GARNET_DOPANTS:
        raise InputError(f"{canonical} takes no composition parameter ({spec!r})", field="structure",
                         fix=f"write just {canonical!r}; parameters apply to {', '.join(GARNET_DOPANTS)}")
    options: dict[str, float] = {}
    for item in params.split(","):
        key, eq, value = (part.strip() for part in item.partition("="))
        if not eq or key not in ("x", "y"):
            raise InputError(f"cannot read {item!r} in {spec!r}", field="structure",
                             fix=f"write e.g. {canonical}:x={GARNET_DOPANTS[canonical].default_x:g}")
        try:
            options["x"] = float(value)
        except ValueError:
            raise InputError(f"{key} = {value!r} in {spec!r} is not a number", field="structure",
                             fix=f"write e.g. {canonical}:x={GARNET_DOPANTS[canonical].default_x:g}") from None
    return canonical, options


def resolve_name(name: str) -> str | None:
    """Canonical builder name for ``name``, an alias, a ``NAME:x=...`` spec or a doped-garnet
    formula (:func:`parse_structure_spec`), else ``None``.

    >>> resolve_name("γ-Na3PS4"), resolve_name("c-Na3PS4"), resolve_name("nonsense")
    ('gamma-Na3PS4', 'Na3PS4', None)
    >>> resolve_name("LLZO-Ta:x=0.25"), resolve_name("Li6.75La3Zr1.75Ta0.25O12")
    ('LLZO-Ta', 'LLZO-Ta')
    """
    if name in BUILDERS:
        return name
    base = name.partition(":")[0]
    if base in BUILDERS:
        return base
    hit = ALIASES.get(base.strip().lower())
    if hit is not None:
        return hit
    garnet = _garnet_of_formula(name)
    return garnet[0] if garnet else None


def check_structure_spec(spec: str, n_atoms: int | None = None) -> None:
    """Check a builder spec and its cell size without building it (campaign validation): the
    name, its composition parameter and, for the doped garnets, a whole number of dopants.

    >>> check_structure_spec("LLZO-Ga:x=0.25", 188)
    >>> check_structure_spec("LLZO-Ga:x=0.25", 190)
    Traceback (most recent call last):
    ...
    ramanscreen.tasks.common.InputError: n_atoms: LLZO-Ga at x = 0.25 cannot have 190 atoms (fix: use a multiple of 192 (parent cells) or the doped cell's own size: 188, 376, 752, 1504)
    """
    canonical, options = parse_structure_spec(spec)
    if canonical in GARNET_DOPANTS:
        garnet_cell_counts(canonical, options.get("x", GARNET_DOPANTS[canonical].default_x), n_atoms)


def build_structure(name: str, *, n_atoms: int | None = None, seed: int = 0, **options: object) -> Atoms:
    """Build a registered material (name or alias) with ``n_atoms`` atoms (paper size if None);
    ``options`` go to the builder (e.g. ``density_g_cm3`` for ``gamma-Na3PS4``).

    >>> build_structure("LLZO").get_chemical_formula()
    'La24Li56O96Zr16'
    >>> build_structure("LLZO-Ta:x=0.25").get_chemical_formula()
    'La24Li54O96Ta2Zr14'
    """
    canonical, spec_options = parse_structure_spec(name)
    atoms = BUILDERS[canonical](n_atoms=n_atoms, seed=seed, **{**spec_options, **options})
    atoms.wrap()
    return atoms


def load_structure(spec: str | os.PathLike[str] | Atoms, *, n_atoms: int | None = None, seed: int = 0,
                   index: int | str = -1) -> Atoms:
    """A builder name/alias, an :class:`ase.Atoms`, or any file ASE reads (CIF, POSCAR, extxyz …).

    For files, the last image is used (``index``); ``n_atoms`` repeats it with
    :func:`supercell_to`. An unreadable file or an empty/aperiodic structure raises
    :class:`InputError`.

    >>> load_structure("Na3SbS4", n_atoms=16).get_chemical_formula()
    'Na6S8Sb2'
    """
    if isinstance(spec, Atoms):
        atoms = spec.copy()
    elif isinstance(spec, str) and resolve_name(spec) is not None and not Path(spec).is_file():
        return build_structure(spec, n_atoms=n_atoms, seed=seed)
    else:
        path = Path(spec)
        if not path.is_file():
            raise InputError(
                "no such structure file or builder name",
                file=path,
                fix=f"give a readable CIF/POSCAR/extxyz file or one of {', '.join(BUILDERS)}",
            )
        from ase.io import read

        try:
            atoms = read(path, index=index)
        except Exception as exc:  # noqa: BLE001 - ASE raises many types on bad files
            msg = " ".join(str(exc).split())[:200] or type(exc).__name__
            raise InputError(f"unreadable structure file ({msg})", file=path,
                             fix="give a CIF, POSCAR or extxyz file that ASE can read") from None
        if isinstance(atoms, list):
            atoms = atoms[-1]
        atoms.calc = None
    if len(atoms) == 0:
        raise InputError("structure has no atoms", file=None if isinstance(spec, Atoms) else spec,
                         fix="give a structure with atoms")
    if not atoms.pbc.all() or atoms.cell.rank < 3:
        raise InputError("structure is not periodic in 3D", file=None if isinstance(spec, Atoms) else spec,
                         fix="give a bulk crystal with a full 3x3 cell")
    if n_atoms is not None and n_atoms != len(atoms):
        atoms = supercell_to(atoms, n_atoms)
    atoms.wrap()
    return atoms


def write_structure(atoms: Atoms, path: str | os.PathLike[str], fmt: str | None = None) -> Path:
    """Write ``atoms`` atomically in ``fmt`` (any ASE format name) or the format implied by the
    suffix (``.cif``, ``.xyz`` = extxyz, ``.traj``, ``POSCAR``/``.vasp``, anything ASE knows)."""
    from ase.io import write
    from ase.io.formats import UnknownFileTypeError, filetype, ioformats

    from ramanscreen.tasks.common import atomic_path

    path = Path(path)
    if fmt is not None:
        if fmt not in ioformats or not ioformats[fmt].can_write:
            raise InputError(f"ASE cannot write format {fmt!r}", field="fmt",
                             fix="use an ASE format name such as cif, extxyz, vasp, traj, xsf, lammps-data")
    elif path.name.upper().startswith(("POSCAR", "CONTCAR")) or path.suffix == ".vasp":
        fmt = "vasp"
    elif path.suffix in (".xyz", ".extxyz"):
        fmt = "extxyz"
    else:
        try:
            fmt = filetype(path, read=False)
        except (UnknownFileTypeError, ValueError):
            fmt = None
        if fmt not in ioformats or not ioformats[fmt].can_write:
            raise InputError(f"no ASE format for the suffix of {path.name!r}", field="out",
                             fix="use .cif, .xyz, .traj, POSCAR, .pdb ... or name the format")
    with atomic_path(path) as tmp:
        if fmt == "vasp":
            write(tmp, atoms, format=fmt, direct=True, sort=False)
        else:
            write(tmp, atoms, format=fmt or None)
    return path


__all__ = [
    "ALIASES", "BUILDERS", "Builder", "CheckRow", "GAMMA_NA3PS4_DENSITY_G_CM3", "NA3SBS4_W_VACANCY_ENERGIES_MEV",
    "OXIDATION_STATES", "PUBLISHED", "Published", "RelaxCheck", "VacancyCandidate", "build_gamma_na3ps4",
    "build_structure", "check_charge_balance", "check_structure", "conventional_lattice_A", "diagonal_repeats", "formal_charge",
    "load_structure", "min_distance_A", "nn_distances_A", "place_on_sites", "rank_w_vacancies", "relax_check",
    "resolve_name", "spacegroup_of", "supercell_to", "w_vacancy_candidates", "write_structure",
    "COULOMB_EV_A", "GARNET_DOPANTS", "GARNET_SITE_CANDIDATES", "GarnetDopant", "build_doped_llzo",
    "check_structure_spec", "ewald_site_matrix", "garnet_amounts", "garnet_cell_counts", "garnet_formula",
    "garnet_lattice_A", "parse_structure_spec", "snap_garnet_fraction",
]
