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
['AgI', 'LLZO', 'Na3PS4', 'Na3SbS4', 'Na3SbS4-W']
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import make_supercell
from ase.geometry import get_distances
from ase.spacegroup import crystal

from ramanscreen.tasks.common import InputError

#: Formal oxidation states used for the charge-neutrality checks.
OXIDATION_STATES: dict[str, int] = {
    "Ag": 1, "I": -1, "Na": 1, "Li": 1, "Sb": 5, "P": 5, "W": 6, "S": -2, "La": 3, "Zr": 4, "O": -2,
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
    "S": (0.1946, 0.1744, 0.1916),  # 8e
}


def _na3sbs4_cell() -> Atoms:
    b = NA3SBS4_BASIS
    return crystal(["Na", "Na", "Sb", "S"], [b["Na1"], b["Na2"], b["Sb"], b["S"]],
                   spacegroup=114, cellpar=list(NA3SBS4_CELLPAR))


def build_na3sbs4(n_atoms: int | None = 128, seed: int = 0) -> Atoms:
    """Tetragonal Na₃SbS₄ (the room-temperature phase, non-conducting in the paper's MLFF MD).

    Data: space group P-42₁c (114), a = 7.1453 Å, c = 7.2770 Å [H. Wang, Y. Chen, Z. D. Hood,
    G. Sahu, A. S. Pandian, J. K. Keum, K. An, C. Liang, Angew. Chem. Int. Ed. 55, 8551
    (2016)]; Na₃PS₄ structure type [M. Jansen and U. Henseler, J. Solid State Chem. 99, 110
    (1992)]: Sb on 2a (0, 0, 0), Na1 on 2b (0, 0, 1/2), Na2 on 4d (0, 1/2, z≈0.44), S on 8e
    (x, y, z) ≈ (0.195, 0.174, 0.192), which gives the SbS₄ tetrahedron its Sb-S bond of
    2.33 Å. 16 atoms per cell; default 2x2x2 = 128 atoms as in the paper. ``seed`` is unused
    (the phase is ordered) and accepted for a uniform builder signature.

    >>> build_na3sbs4().get_chemical_formula()
    'Na48S64Sb16'
    """
    del seed
    n_cells = _n_cells(n_atoms, 16, 128, "Na3SbS4")
    atoms = supercell_to(_na3sbs4_cell(), 16 * n_cells)
    atoms.info.update(material="Na3SbS4", source="P-42_1c, Wang et al. 2016")
    return atoms


def build_na3sbs4_w(n_atoms: int | None = 127, seed: int = 0) -> Atoms:
    """W-doped Na₃₋ₓSb₁₋ₓWₓS₄: one Sb⁵⁺ replaced by W⁶⁺ and one Na⁺ removed for charge balance.

    With the default 127 atoms (the 128-atom 2x2x2 Na₃SbS₄ supercell minus the vacancy) this is
    Na₄₇Sb₁₅WS₆₄ = Na₂.₉₄Sb₀.₉₄W₀.₀₆S₄, x = 1/16 ≈ 6 % as in the paper. The W is the first Sb
    of the supercell; the removed Na is the one nearest to it (a seeded random choice
    among the equally near ones), since the vacancy compensates the extra charge of W
    [doping: T. Fuchs et al., Energy Environ. Sci. 13, 146 (2020); A. Hayashi et al.,
    Nat. Commun. 10, 5266 (2019)].

    >>> a = build_na3sbs4_w()
    >>> len(a), formal_charge(a)
    (127, 0)
    """
    n = 127 if n_atoms is None else int(n_atoms)
    host = build_na3sbs4(n + 1)
    symbols = np.array(host.get_chemical_symbols())
    i_w = int(np.flatnonzero(symbols == "Sb")[0])
    symbols[i_w] = "W"
    host.set_chemical_symbols(symbols.tolist())
    na = np.flatnonzero(symbols == "Na")
    d = host.get_distances(i_w, na, mic=True)
    nearest = na[np.isclose(d, d.min(), atol=1e-3)]
    vacancy = int(np.random.default_rng(seed).choice(nearest))
    del host[vacancy]
    host.info.update(material="Na3SbS4-W", source="Na3SbS4 (Wang et al. 2016) with one W on Sb + one Na vacancy",
                     seed=seed)
    return host


#: Cubic Na3PS4 (I-43m) lattice parameter (Å).
NA3PS4_A = 6.9965


def build_na3ps4(n_atoms: int | None = 256, seed: int = 0) -> Atoms:
    """Cubic Na₃PS₄, the starting point for the paper's γ-Na₃PS₄ runs.

    Data: space group I-43m (217), a = 6.9965 Å; P on 2a (0, 0, 0), S on 8c (x, x, x) with
    x = 0.170, Na on 6b (0, 1/2, 1/2) [A. Hayashi, K. Noi, A. Sakuda, M. Tatsumisago,
    Nat. Commun. 3, 856 (2012)]; P-S = 2.06 Å. 16 atoms per conventional cell; default 256
    atoms (16 cells, 4x2x2) as in the paper.

    Documented choice: the high-temperature γ phase [T. Famprikis et al., J. Am. Chem. Soc.
    141, 8933 (2019)] is not built directly; the paper's 900 K MD is run from this cubic cell,
    which melts the Na sublattice and sets the PS₄ units rotating (the plastic phase) within
    the equilibration. ``seed`` is unused (ordered phase).

    >>> build_na3ps4(n_atoms=16).get_chemical_formula()
    'Na6P2S8'
    """
    del seed
    n_cells = _n_cells(n_atoms, 16, 256, "Na3PS4")
    cell = crystal(["Na", "P", "S"], [(0, 0.5, 0.5), (0, 0, 0), (0.170, 0.170, 0.170)],
                   spacegroup=217, cellpar=[NA3PS4_A] * 3 + [90] * 3)
    atoms = supercell_to(cell, 16 * n_cells)
    atoms.info.update(material="Na3PS4", source="I-43m, Hayashi et al. 2012; heat to 900 K for gamma")
    return atoms


#: Cubic LLZO (Ia-3d) lattice parameter (Å) and the Li-Li minimum distance for placement (Å).
LLZO_A = 12.9827
LLZO_LI_MIN_DIST_A = 2.0
#: Minimum distance between occupied 24d sites (Å): excludes two 24d sharing one 48g/96h cage.
LLZO_TET_MIN_DIST_A = 4.5


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
    cellpar = [LLZO_A] * 3 + [90] * 3
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

    def __call__(self, n_atoms: int | None = None, seed: int = 0) -> Atoms:
        return self.build(n_atoms=self.default_n_atoms if n_atoms is None else n_atoms, seed=seed)


#: Registered builders by canonical name.
BUILDERS: dict[str, Builder] = {
    "AgI": Builder("AgI", build_agi, 128, False, 229, "alpha-AgI, Ag disordered on 12d"),
    "Na3SbS4": Builder("Na3SbS4", build_na3sbs4, 128, True, 114, "tetragonal Na3SbS4"),
    "Na3SbS4-W": Builder("Na3SbS4-W", build_na3sbs4_w, 127, False, 114, "Na3SbS4 with one W on Sb + one Na vacancy"),
    "Na3PS4": Builder("Na3PS4", build_na3ps4, 256, True, 217, "cubic Na3PS4 (heat to 900 K for gamma)"),
    "LLZO": Builder("LLZO", build_llzo, 192, False, 230, "cubic garnet Li7La3Zr2O12, Li disordered"),
}

#: Accepted aliases (case-insensitive) for the canonical builder names.
ALIASES: dict[str, str] = {
    "alpha-agi": "AgI", "α-agi": "AgI", "agi": "AgI",
    "na3sbs4": "Na3SbS4", "nss": "Na3SbS4",
    "na3sbs4-w": "Na3SbS4-W", "na3sbs4w": "Na3SbS4-W", "w-na3sbs4": "Na3SbS4-W",
    "na2.94sb0.94w0.06s4": "Na3SbS4-W", "na3-xsb1-xwxs4": "Na3SbS4-W",
    "na3ps4": "Na3PS4", "gamma-na3ps4": "Na3PS4", "γ-na3ps4": "Na3PS4", "c-na3ps4": "Na3PS4",
    "llzo": "LLZO", "li7la3zr2o12": "LLZO", "c-llzo": "LLZO",
}


def resolve_name(name: str) -> str | None:
    """Canonical builder name for ``name`` or an alias, else ``None``.

    >>> resolve_name("gamma-Na3PS4"), resolve_name("nonsense")
    ('Na3PS4', None)
    """
    if name in BUILDERS:
        return name
    return ALIASES.get(name.strip().lower())


def build_structure(name: str, *, n_atoms: int | None = None, seed: int = 0) -> Atoms:
    """Build a registered material (name or alias) with ``n_atoms`` atoms (paper size if None).

    >>> build_structure("LLZO").get_chemical_formula()
    'La24Li56O96Zr16'
    """
    canonical = resolve_name(name)
    if canonical is None:
        raise InputError(
            f"unknown structure {name!r}",
            field="structure",
            fix=f"use one of {', '.join(BUILDERS)} or a structure file (CIF, POSCAR, extxyz)",
        )
    atoms = BUILDERS[canonical](n_atoms=n_atoms, seed=seed)
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


def write_structure(atoms: Atoms, path: str | os.PathLike[str]) -> Path:
    """Write ``atoms`` atomically in the format implied by the suffix (``.cif``, ``.xyz`` =
    extxyz, ``.traj``, ``POSCAR``/``.vasp``)."""
    from ase.io import write

    from ramanscreen.tasks.common import atomic_path

    path = Path(path)
    fmt = None
    if path.name.upper().startswith(("POSCAR", "CONTCAR")) or path.suffix == ".vasp":
        fmt = "vasp"
    elif path.suffix in (".xyz", ".extxyz"):
        fmt = "extxyz"
    with atomic_path(path) as tmp:
        if fmt == "vasp":
            write(tmp, atoms, format=fmt, direct=True, sort=False)
        else:
            write(tmp, atoms, format=fmt or None)
    return path


__all__ = [
    "ALIASES", "BUILDERS", "Builder", "OXIDATION_STATES", "build_structure", "diagonal_repeats",
    "check_charge_balance", "formal_charge", "load_structure", "min_distance_A", "place_on_sites", "resolve_name",
    "supercell_to", "write_structure",
]
