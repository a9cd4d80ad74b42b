"""Writers of VASP files in their real layouts, for tests (XDATCAR, DFPT OUTCAR).

Written from the formats VASP 6 prints, independent of ASE's writers, so that the readers
under test (ASE's + ours) see the same text a user's run would give them.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from ase import Atoms


def _species_blocks(atoms: Atoms) -> tuple[list[str], list[int]]:
    symbols = atoms.get_chemical_symbols()
    species: list[str] = []
    counts: list[int] = []
    for s in symbols:
        if species and species[-1] == s:
            counts[-1] += 1
        else:
            species.append(s)
            counts.append(1)
    return species, counts


def write_xdatcar(path: Path, frames: Sequence[Atoms], first_step: int = 1, every: int = 1) -> Path:
    """VASP 5/6 XDATCAR of a fixed-cell MD: header once, then ``Direct configuration= N`` blocks."""
    species, counts = _species_blocks(frames[0])
    cell = frames[0].cell.array
    lines = ["AgI md (written by tests/vasp_formats.py)", "           1"]
    lines += [f"    {v[0]:12.6f}{v[1]:12.6f}{v[2]:12.6f}" for v in cell]
    lines.append("".join(f"{s:>5}" for s in species))
    lines.append("".join(f"{c:>6}" for c in counts))
    for k, atoms in enumerate(frames):
        lines.append(f"Direct configuration={first_step + k * every:6d}")
        frac = atoms.get_scaled_positions(wrap=True)
        lines += [f"  {x:.8f}  {y:.8f}  {z:.8f}" for x, y, z in frac]
    path.write_text("\n".join(lines) + "\n")
    return path


_POTCARS = {"Ag": "PAW_PBE Ag 02Apr2005", "I": "PAW_PBE I 08Apr2002", "Na": "PAW_PBE Na_pv 19Sep2006",
            "S": "PAW_PBE S 06Sep2000", "Sb": "PAW_PBE Sb 06Sep2000", "Si": "PAW_PBE Si 05Jan2001",
            "Cl": "PAW_PBE Cl 06Sep2000", "Li": "PAW_PBE Li_sv 10Sep2004", "O": "PAW_PBE O 08Apr2002"}


def _eps_block(title: str, eps: np.ndarray) -> list[str]:
    """LEPSILON's layout: 54 dashes, six decimals."""
    bar = " " + "-" * 54
    return [f" {title}", bar, *[f"  {r[0]:12.6f} {r[1]:12.6f} {r[2]:12.6f}" for r in eps], bar, ""]


def _eps_block_ff(title: str, eps: np.ndarray) -> list[str]:
    """LCALCEPS's (finite-field) layout: 37 dashes, three decimals, e.g.
    ``           5.447    -0.000     0.000``."""
    bar = " " + "-" * 37
    return [f" {title}", bar, *[f"  {r[0]:14.3f}{r[1]:10.3f}{r[2]:10.3f}" for r in eps], bar, ""]


_H = "MACROSCOPIC STATIC DIELECTRIC TENSOR"
_IP = "HEAD OF MICROSCOPIC STATIC DIELECTRIC TENSOR (independent particle, excluding Hartree and local field effects)"
#: The dielectric blocks of each kind of run, in the order VASP prints them: (title, factor on ε,
#: layout). The block the run is for has factor 1; the others are distractors.
LAYOUTS: dict[str, list[tuple[str, float, str]]] = {
    # LEPSILON = .TRUE., IBRION = 8: IP head, no-local-field, DFT local fields, ionic part
    "lepsilon": [(_IP, 1.12, "dfpt"), (f"{_H} (excluding local field effects)", 1.07, "dfpt"),
                 (f"{_H} (including local field effects in DFT)", 1.0, "dfpt"),
                 (f"{_H} IONIC CONTRIBUTION", 3.0, "dfpt")],
    # LEPSILON + LRPA = .TRUE.: local fields in the Hartree potential only
    "lepsilon-rpa": [(_IP, 1.12, "dfpt"), (f"{_H} (including local field effects in RPA (Hartree))", 1.0, "dfpt")],
    # LCALCEPS = .TRUE. (finite field, PEAD)
    "lcalceps": [(f"{_H} (including local field effects)", 1.0, "ff")],
    # LCALCEPS + LRPA: the extra block without the xc local fields
    "lcalceps-rpa": [(f"{_H} (including local field effects)", 1.0, "ff"),
                     (f"{_H} (excluding local field effects)", 1.05, "ff")],
    # LCALCEPS + IBRION = 6: plus the ionic contribution from finite differences
    "lcalceps-ibrion6": [(f"{_H} (including local field effects)", 1.0, "ff"), (f"{_H} IONIC CONTRIBUTION", 2.5, "ff")],
}


def outcar_text(atoms: Atoms, epsilon: np.ndarray, *, earlier_epsilon: np.ndarray | None = None,
                include_dielectric: bool = True, layout: str = "lepsilon") -> str:
    """An OUTCAR of a dielectric single-point run on ``atoms``, in VASP 6's layout.

    ``layout`` (:data:`LAYOUTS`) is the kind of run and sets which dielectric blocks appear and
    in which format; the electronic ε∞ of that run is ``epsilon`` (LEPSILON: the "... in DFT"
    block), the other blocks are distractors. An optional earlier, different block of the
    same kind tests that the reader takes the last one.
    """
    species, counts = _species_blocks(atoms)
    cell = atoms.cell.array
    rec = np.linalg.inv(cell).T
    out = [
        " vasp.6.3.2 27Jun22 (build Jul 19 2022 14:26:40) complex",
        " executed on             LinuxIFC date 2024.03.01  12:00:00",
        " running    2 mpi-ranks, with    1 threads/rank",
        " distrk:  each k-point on    2 cores,    1 groups",
        " --------------------------------------------------------------------------------------------------------",
        "",
        " INCAR:",
        *[f" POTCAR:    {_POTCARS.get(s, f'PAW_PBE {s} 01Jan2000')}" for s in species],
        "",
        *sum(([f" POTCAR:    {_POTCARS.get(s, f'PAW_PBE {s} 01Jan2000')}", f"   VRHFIN ={s}:", "   TITEL  = " +
               _POTCARS.get(s, f"PAW_PBE {s} 01Jan2000")] for s in species), []),
        "",
        " Dimension of arrays:",
        "   k-points           NKPTS =      1   k-points in BZ     NKDIM =      1   number of bands    NBANDS=     96",
        f"   number of dos      NEDOS =    301   number of ions     NIONS =  {len(atoms):5d}",
        f"   ions per type =  {''.join(f'{c:6d}' for c in counts)}",
        "",
        " SYSTEM =  unknown system",
        *(["   LEPSILON=      T    determine dielectric tensor"] if layout.startswith("lepsilon") else
          ["   LCALCEPS=      T    calculate dielectric tensor by finite differences"]),
        *(["   LRPA   =      T    local field effects in RPA only"] if layout.endswith("rpa") else []),
        "",
        " k-points in reciprocal lattice and weights: Auto",
        "   0.00000000  0.00000000  0.00000000       1.000",
        "",
        "--------------------------------------- Iteration      1(   1)  ---------------------------------------",
        "",
        "      DAV:   1    -0.123456789E+03   -0.12345E+03   -0.12345E+04  1024   0.123E+03",
        "",
        " VOLUME and BASIS-vectors are now :",
        " -----------------------------------------------------------------------------",
        "  energy-cutoff  :      400.00",
        f"  volume of cell :  {abs(np.linalg.det(cell)):10.2f}",
        "      direct lattice vectors                 reciprocal lattice vectors",
        *[f"  {a[0]:12.9f}{a[1]:13.9f}{a[2]:13.9f}  {b[0]:13.9f}{b[1]:13.9f}{b[2]:13.9f}" for a, b in zip(cell, rec, strict=False)],
        "",
        " POSITION                                       TOTAL-FORCE (eV/Angst)",
        " -----------------------------------------------------------------------------------",
        *[f" {x:12.5f}{y:12.5f}{z:12.5f}   {0.0:13.6f}{0.0:13.6f}{0.0:13.6f}" for x, y, z in atoms.positions],
        " -----------------------------------------------------------------------------------",
        "    total drift:                                0.000000      0.000000      0.000000",
        "",
        "  FREE ENERGIE OF THE ION-ELECTRON SYSTEM (eV)",
        "  ---------------------------------------------------",
        "  free  energy   TOTEN  =      -123.45678901 eV",
        "",
        "  energy  without entropy=     -123.45678901  energy(sigma->0) =     -123.45678901",
        "",
        " Linear response reoptimize wavefunctions to high precision",
        "",
    ]
    if include_dielectric:
        blocks = LAYOUTS[layout]
        if earlier_epsilon is not None:
            title, _, fmt = next(b for b in blocks if b[1] == 1.0)
            out += (_eps_block if fmt == "dfpt" else _eps_block_ff)(title, earlier_epsilon)
        for title, factor, fmt in blocks:
            out += (_eps_block if fmt == "dfpt" else _eps_block_ff)(title, epsilon * factor)
    out += [" General timing and accounting informations for this job:", " ========================================"]
    return "\n".join(out) + "\n"


def write_outcar(path: Path, atoms: Atoms, epsilon: np.ndarray, *, gz: bool = False, **kw) -> Path:
    text = outcar_text(atoms, epsilon, **kw)
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(path, "wt") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    return path


def write_vasprun(path: Path, frames: Sequence[Atoms]) -> Path:
    """A vasprun.xml of an MD run (IBRION=0) in VASP 6's layout: atominfo, initial structure,
    then one <calculation> per ionic step with structure, forces, energies."""

    def varray(name: str, rows: np.ndarray, indent: str) -> str:
        body = "".join(f"{indent} <v> {r[0]:16.8f} {r[1]:16.8f} {r[2]:16.8f} </v>\n" for r in rows)
        return f'{indent}<varray name="{name}" >\n{body}{indent}</varray>\n'

    def structure(atoms: Atoms, name: str | None) -> str:
        tag = f'<structure name="{name}" >' if name else "<structure>"
        return (f"  {tag}\n   <crystal>\n" + varray("basis", atoms.cell.array, "    ")
                + f'    <i name="volume">{atoms.get_volume():16.8f} </i>\n   </crystal>\n'
                + varray("positions", atoms.get_scaled_positions(wrap=True), "   ") + "  </structure>\n")

    species, counts = _species_blocks(frames[0])
    rc = "".join(f"    <rc><c>{s:2s}</c><c>   {t + 1}</c></rc>\n"
                 for t, (s, c) in enumerate(zip(species, counts, strict=False)) for _ in range(c))
    text = ['<?xml version="1.0" encoding="ISO-8859-1"?>\n<modeling>\n',
            ' <generator>\n  <i name="program" type="string">vasp </i>\n  <i name="version" type="string">6.3.2 </i>\n </generator>\n',
            ' <incar>\n  <i type="string" name="IBRION">0</i>\n  <i name="POTIM">10.0</i>\n </incar>\n',
            ' <kpoints>\n  <generation param="Gamma">\n   <v type="int" name="divisions">1 1 1 </v>\n  </generation>\n',
            '  <varray name="kpointlist" >\n   <v>       0.00000000       0.00000000       0.00000000 </v>\n  </varray>\n',
            '  <varray name="weights" >\n   <v>       1.00000000 </v>\n  </varray>\n </kpoints>\n',
            ' <parameters>\n  <separator name="ionic" >\n   <i type="int" name="NSW">    %d</i>\n  </separator>\n </parameters>\n'
            % len(frames),
            f' <atominfo>\n  <atoms>{len(frames[0])}</atoms>\n  <types>{len(species)}</types>\n'
            '  <array name="atoms" >\n   <dimension dim="1">ion</dimension>\n'
            '   <field type="string">element</field>\n   <field type="int">atomtype</field>\n   <set>\n'
            f'{rc}   </set>\n  </array>\n </atominfo>\n',
            structure(frames[0], "initialpos")]
    for atoms in frames:
        energy = ('   <energy>\n    <i name="e_fr_energy">    -123.45678901 </i>\n'
                  '    <i name="e_wo_entrp">    -123.45678901 </i>\n    <i name="e_0_energy">    -123.45678901 </i>\n'
                  '   </energy>\n')
        text.append(" <calculation>\n  <scstep>\n" + energy + "  </scstep>\n" + structure(atoms, None)
                    + varray("forces", np.zeros((len(atoms), 3)), "  ") + energy.replace("   <", "  <", 1)
                    + " </calculation>\n")
    text.append(' <structure name="finalpos" >\n  <crystal>\n' + varray("basis", frames[-1].cell.array, "   ")
                + "  </crystal>\n" + varray("positions", frames[-1].get_scaled_positions(wrap=True), "  ")
                + " </structure>\n</modeling>\n")
    path.write_text("".join(text))
    return path
