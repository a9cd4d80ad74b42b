"""VASP import: MD (XDATCAR / vasprun.xml) + DFPT OUTCARs → one α dataset (extxyz).

The paper's reference data are VASP DFPT runs (``LEPSILON = .TRUE.`` or ``LCALCEPS``) on MD
snapshots. From each OUTCAR (plain or ``.gz``) this module reads

* the electronic dielectric tensor ε∞ from one of the blocks VASP writes
  (:data:`DIELECTRIC_BLOCKS`: a header line, a dashed line, three rows of three numbers; the
  *last* block of its kind). By default (``dielectric_block="auto"``) that is LEPSILON's
  ``MACROSCOPIC STATIC DIELECTRIC TENSOR (including local field effects in DFT)``, else
  LCALCEPS's ``... (including local field effects)``; the RPA, no-local-field and
  independent-particle blocks are taken only when asked for, the ``IONIC CONTRIBUTION`` never.
  The block's key is recorded with every value (``info["dielectric_block"]``);
* the structure the OUTCAR itself was run on (ASE's ``vasp-out`` reader);

converts ε∞ to the whole-cell α = V (ε∞ − 1)/4π (Å³, :mod:`ramanscreen.tasks.reference` convention) and
finds the MD step: the MD frame with the same species whose positions match (minimum-image
RMSD below ``match_tol_A``), else digits in the file or directory name (``step_0420``,
``OUTCAR.420``), else −1.

>>> text = '''
...  MACROSCOPIC STATIC DIELECTRIC TENSOR (including local field effects in DFT)
...  ------------------------------------------------------
...            5.000000     0.100000     0.000000
...            0.100000     5.000000     0.000000
...            0.000000     0.000000     6.000000
...  ------------------------------------------------------
... '''
>>> parse_outcar_epsilon(text).diagonal().tolist()
[5.0, 5.0, 6.0]
"""

from __future__ import annotations

import io
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import numpy as np
from ase import Atoms

from ramanscreen.tasks.common import InputError
from ramanscreen.tasks.reference.base import ReferenceResult, alpha_from_epsilon
from ramanscreen.tasks.reference.dataset import write_alpha_dataset
from ramanscreen.tasks.reference.external import open_text as _open_text

__all__ = [
    "AUTO_BLOCKS",
    "DIELECTRIC_BLOCKS",
    "ELECTRONIC_BLOCKS",
    "VASP_METHOD",
    "import_vasp",
    "match_md_step",
    "parse_outcar_dielectric_blocks",
    "parse_outcar_epsilon",
    "parse_outcar_epsilon_block",
    "read_outcar",
    "read_vasp_md",
]

#: The dielectric-tensor blocks VASP writes to the OUTCAR, by the key this module names them
#: with: (header line, what it is).
DIELECTRIC_BLOCKS: dict[str, tuple[str, str]] = {
    "dft": ("MACROSCOPIC STATIC DIELECTRIC TENSOR (including local field effects in DFT)",
            "LEPSILON (DFPT): electronic eps_inf, local fields in the Hartree + xc potential"),
    "finite-field": ("MACROSCOPIC STATIC DIELECTRIC TENSOR (including local field effects)",
                     "LCALCEPS (finite field): electronic eps_inf, self-consistent response incl. local fields"),
    "rpa": ("MACROSCOPIC STATIC DIELECTRIC TENSOR (including local field effects in RPA (Hartree))",
            "LEPSILON + LRPA: electronic eps_inf, local fields in the Hartree potential only"),
    "no-local-fields": ("MACROSCOPIC STATIC DIELECTRIC TENSOR (excluding local field effects)",
                        "LEPSILON, or LCALCEPS + LRPA: electronic eps_inf without the xc local fields"),
    "independent-particle": ("HEAD OF MICROSCOPIC STATIC DIELECTRIC TENSOR (independent particle, "
                             "excluding Hartree and local field effects)",
                             "LEPSILON: independent-particle head (no Hartree, no local fields)"),
    "ionic": ("MACROSCOPIC STATIC DIELECTRIC TENSOR IONIC CONTRIBUTION",
              "IBRION = 5-8: ionic (lattice) contribution, not an electronic polarizability"),
}
#: Blocks that are an electronic (clamped-ion) ε∞ and can give α.
ELECTRONIC_BLOCKS: tuple[str, ...] = ("dft", "finite-field", "rpa", "no-local-fields", "independent-particle")
#: ``block="auto"`` takes the first of these the OUTCAR has: ε∞ with the full (Hartree + xc)
#: local-field response, from DFPT or from the finite field (docs/reference.md says why).
AUTO_BLOCKS: tuple[str, ...] = ("dft", "finite-field")

#: Method label of imported VASP values (the block is recorded beside it, ``dielectric_block``).
VASP_METHOD = "vasp-dfpt (OUTCAR eps_inf incl. local fields, LEPSILON/LCALCEPS)"

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eEdD][-+]?\d+)?"
_ROWS = (rf"[ \t]*({_NUM})[ \t]+({_NUM})[ \t]+({_NUM})[ \t]*\n") * 3
#: A header line, exactly one of the above (the "(including local field effects)" header must
#: not match the "... in DFT)" one), anything VASP appends on that line in parentheses, a
#: dashed line, three rows of three numbers.
_BLOCK = re.compile(
    r"^[ \t]*(" + "|".join(re.escape(h) for h, _ in DIELECTRIC_BLOCKS.values()) + r")[ \t]*"
    r"(?:\([^\n]*\))?[ \t]*\n[ \t]*-{5,}[ \t]*\n" + _ROWS,
    re.MULTILINE,
)
_KEY_OF = {h: k for k, (h, _) in DIELECTRIC_BLOCKS.items()}


def parse_outcar_dielectric_blocks(text: str) -> dict[str, list[np.ndarray]]:
    """Every dielectric-tensor block of an OUTCAR's text, by key (:data:`DIELECTRIC_BLOCKS`),
    in file order (a run can print a block more than once; the last is the final one).

    >>> text = chr(10).join([
    ...     " MACROSCOPIC STATIC DIELECTRIC TENSOR (including local field effects)",
    ...     " ------------------------------------------------------",
    ...     "           5.000000     0.000000     0.000000",
    ...     "           0.000000     5.000000     0.000000",
    ...     "           0.000000     0.000000     6.000000",
    ...     " ------------------------------------------------------", ""])
    >>> {k: v[-1].diagonal().tolist() for k, v in parse_outcar_dielectric_blocks(text).items()}
    {'finite-field': [5.0, 5.0, 6.0]}
    """
    blocks: dict[str, list[np.ndarray]] = {}
    for m in _BLOCK.finditer(text):
        values = [float(v.replace("D", "E").replace("d", "e")) for v in m.groups()[1:]]
        blocks.setdefault(_KEY_OF[m.group(1)], []).append(np.array(values).reshape(3, 3))
    return blocks


def parse_outcar_epsilon(text: str, *, file: str | os.PathLike[str] | None = None,
                         block: str = "auto") -> np.ndarray:
    """ε∞ (3x3) from the last block ``block`` of an OUTCAR's text (``"auto"``: the first of
    :data:`AUTO_BLOCKS` present); see :func:`parse_outcar_epsilon_block`."""
    return parse_outcar_epsilon_block(text, file=file, block=block)[1]


def parse_outcar_epsilon_block(text: str, *, file: str | os.PathLike[str] | None = None,
                               block: str = "auto") -> tuple[str, np.ndarray]:
    """(block key, ε∞) from an OUTCAR's text: the last block of kind ``block``
    (:data:`ELECTRONIC_BLOCKS`), or with ``"auto"`` the first kind of :data:`AUTO_BLOCKS` the
    file has. The ionic contribution is never an α; asking for it, or for a block the file
    does not have, is an :class:`InputError` that lists the blocks found."""
    if block != "auto" and block not in ELECTRONIC_BLOCKS:
        raise InputError(
            f"dielectric block {block!r} is not an electronic dielectric tensor",
            file=file, field="dielectric_block", fix=f"use auto or one of {', '.join(ELECTRONIC_BLOCKS)}",
        )
    blocks = parse_outcar_dielectric_blocks(text)
    wanted = AUTO_BLOCKS if block == "auto" else (block,)
    for key in wanted:
        if key in blocks:
            eps = blocks[key][-1]
            if not np.all(np.isfinite(eps)):
                raise InputError("non-finite dielectric tensor", file=file, field="dielectric tensor")
            return key, eps
    found = ", ".join(blocks) or "none"
    truncated = any(DIELECTRIC_BLOCKS[k][0] + "\n" in text or DIELECTRIC_BLOCKS[k][0] + " " in text for k in wanted)
    hint = " (found a header but not three rows of three numbers)" if truncated else ""
    heads = " or ".join(f"'{DIELECTRIC_BLOCKS[k][0]}'" for k in wanted)
    usable = [k for k in blocks if k in ELECTRONIC_BLOCKS]
    fix = (f"choose a block the file has: dielectric_block = {' | '.join(usable)}" if usable
           else "pass OUTCARs of finished LEPSILON=.TRUE. or LCALCEPS=.TRUE. runs")
    raise InputError(f"no {heads} block{hint}; blocks found: {found}", file=file, field="dielectric tensor", fix=fix)


def read_outcar(path: str | os.PathLike[str], *, block: str = "auto") -> tuple[Atoms, np.ndarray]:
    """(structure, ε∞) of one DFPT OUTCAR (``.gz`` allowed). The structure is the last ionic
    configuration the OUTCAR prints (for DFPT runs: the only one); ε∞ comes from ``block``
    (:func:`parse_outcar_epsilon_block`) and its key is ``atoms.info["dielectric_block"]``."""
    import ase.io

    path = Path(path)
    if not path.is_file():
        raise InputError("OUTCAR not found", file=path, fix="check the path")
    text = _open_text(path)
    key, eps = parse_outcar_epsilon_block(text, file=path, block=block)
    try:
        atoms = cast(Atoms, ase.io.read(path, format="vasp-out", index=-1))  # ASE gunzips *.gz itself
    except Exception as exc:  # noqa: BLE001 - ASE raises many types on malformed files
        raise InputError(
            f"cannot read the structure ({type(exc).__name__}: {' '.join(str(exc).split())[:120]})",
            file=path, field="POSITION", fix="pass a complete OUTCAR (header with POTCAR/ions per type, positions)",
        ) from None
    atoms.calc = None
    atoms.pbc = True
    atoms.info["dielectric_block"] = key
    return atoms, eps


def read_vasp_md(path: str | os.PathLike[str]) -> tuple[list[Atoms], np.ndarray]:
    """Frames and their VASP ionic step numbers from an XDATCAR or vasprun.xml.

    XDATCAR steps are the ``Direct configuration= N`` numbers (VASP counts from 1, every
    NBLOCK steps); vasprun.xml frames are numbered 1, 2, … in file order.
    """
    import ase.io

    path = Path(path)
    if not path.is_file():
        raise InputError("MD file not found", file=path, fix="pass an XDATCAR or vasprun.xml")
    name = path.name.lower()
    is_xml = name.endswith((".xml", ".xml.gz")) or "vasprun" in name
    fmt = "vasp-xml" if is_xml else "vasp-xdatcar"
    try:
        if path.suffix == ".gz":
            frames = ase.io.read(io.StringIO(_open_text(path)), index=":", format=fmt)
        else:
            frames = ase.io.read(path, index=":", format=fmt)
    except Exception as exc:  # noqa: BLE001
        raise InputError(
            f"cannot read as {fmt} ({type(exc).__name__}: {' '.join(str(exc).split())[:120]})",
            file=path, fix="pass a complete XDATCAR or vasprun.xml",
        ) from None
    if not frames:
        raise InputError("MD file holds no frames", file=path)
    steps = np.arange(1, len(frames) + 1)
    if fmt == "vasp-xdatcar":
        found = [int(m) for m in re.findall(r"configuration=\s*(\d+)", _open_text(path))]
        if len(found) == len(frames):
            steps = np.array(found)
    return list(frames), steps


def match_md_step(
    atoms: Atoms, frames: Sequence[Atoms], steps: np.ndarray, tol_A: float = 0.05
) -> tuple[int, int, float]:
    """(md_step, frame index, RMSD Å) of the MD frame matching ``atoms`` (same species order,
    minimum-image RMSD ≤ ``tol_A``), or (−1, −1, best RMSD)."""
    symbols = atoms.get_chemical_symbols()
    best = (-1, -1, float("inf"))
    inv = np.linalg.inv(atoms.cell.array)
    for k, fr in enumerate(frames):
        if len(fr) != len(atoms) or fr.get_chemical_symbols() != symbols:
            continue
        d = (fr.positions - atoms.positions) @ inv
        d -= np.round(d)
        rmsd = float(np.sqrt(np.mean(np.sum((d @ atoms.cell.array) ** 2, axis=1))))
        if rmsd < best[2]:
            best = (int(steps[k]), k, rmsd)
    if best[2] <= tol_A:
        return best
    return (-1, -1, best[2])


def _step_from_name(path: Path) -> int:
    """Digits in the file or parent directory name (``OUTCAR.0420``, ``step_420/OUTCAR``), or −1."""
    for part in (path.name, path.parent.name):
        stem = re.sub(r"\.gz$", "", part)
        m = re.search(r"(\d+)(?!.*\d)", stem)
        if m:
            return int(m.group(1))
    return -1


def _expand(outcars: Sequence[str | os.PathLike[str]]) -> list[Path]:
    paths: list[Path] = []
    for item in outcars:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.rglob("OUTCAR*") if q.is_file())
            if not found:
                raise InputError("directory holds no OUTCAR*", file=p, fix="pass OUTCAR files or their folders")
            paths.extend(found)
        else:
            paths.append(p)
    return paths


def import_vasp(
    outcars: Sequence[str | os.PathLike[str]],
    md: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    *,
    match_tol_A: float = 0.05,
    dielectric_block: str = "auto",
) -> tuple[list[Atoms], list[ReferenceResult]]:
    """Read DFPT OUTCARs (files or folders searched for ``OUTCAR*``), attach MD steps, and
    write one extxyz α dataset to ``out`` if given. ε∞ comes from ``dielectric_block``
    (:func:`parse_outcar_epsilon_block`; ``"auto"``: LEPSILON's "in DFT" block, else LCALCEPS's
    finite-field block); the block each value came from is ``info["dielectric_block"]`` of
    its frame and ``meta["dielectric_block"]``. Everything is read and checked before anything
    is written. Returns (frames, results)."""
    paths = _expand(outcars)
    if not paths:
        raise InputError("no OUTCAR given", field="outcar", fix="pass at least one DFPT OUTCAR")
    md_frames: list[Atoms] = []
    md_steps = np.zeros(0, dtype=int)
    if md is not None:
        md_frames, md_steps = read_vasp_md(md)
    frames, results = [], []
    for p in paths:
        atoms, eps = read_outcar(p, block=dielectric_block)
        block = str(atoms.info["dielectric_block"])
        volume = abs(float(np.linalg.det(atoms.cell.array)))
        eps_sym = 0.5 * (eps + eps.T)
        step, frame, rmsd = (-1, -1, float("nan"))
        how = "none"
        if md_frames:
            step, frame, rmsd = match_md_step(atoms, md_frames, md_steps, match_tol_A)
            how = "positions" if step >= 0 else how
        if step < 0:
            step = _step_from_name(p)
            how = "file name" if step >= 0 else how
            if md_frames:
                warnings.warn(
                    f"{p}: no MD frame matches its positions (best RMSD {rmsd:.3g} Å); "
                    + (f"MD step {step} taken from the file name" if step >= 0 else "MD step unknown"),
                    stacklevel=2,
                )
        atoms.info["source"] = str(p)
        atoms.info["md_step"] = step
        frames.append(atoms)
        results.append(
            ReferenceResult(
                alpha_A3=alpha_from_epsilon(eps_sym, volume),
                method=VASP_METHOD if block in AUTO_BLOCKS else f"vasp ({block} eps_inf: {DIELECTRIC_BLOCKS[block][1]})",
                meta={
                    "backend": "vasp",
                    "dielectric_block": block,
                    "dielectric_header": DIELECTRIC_BLOCKS[block][0],
                    "source": str(p),
                    "md_step": step,
                    "md_frame": frame,
                    "md_match": how,
                    "epsilon_inf": eps.tolist(),
                    "volume_A3": volume,
                },
            )
        )
    if out is not None:
        write_alpha_dataset(frames, results, out)
    return frames, results
