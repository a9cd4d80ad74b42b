"""VASP import: MD (XDATCAR / vasprun.xml) + DFPT OUTCARs → one α dataset (extxyz).

The paper's reference data are VASP DFPT runs (``LEPSILON = .TRUE.`` or ``LCALCEPS``) on MD
snapshots. From each OUTCAR (plain or ``.gz``) this module reads

* the electronic dielectric tensor ε∞: the *last* block headed
  ``MACROSCOPIC STATIC DIELECTRIC TENSOR (including local field effects in DFT)``, a dashed
  line, then three rows of three numbers;
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
    "VASP_METHOD",
    "import_vasp",
    "match_md_step",
    "parse_outcar_epsilon",
    "read_outcar",
    "read_vasp_md",
]

#: Method label of imported VASP values.
VASP_METHOD = "vasp-dfpt (OUTCAR eps_inf incl. local fields, LEPSILON/LCALCEPS)"

_EPS_HEADER = "MACROSCOPIC STATIC DIELECTRIC TENSOR (including local field effects in DFT)"
_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eEdD][-+]?\d+)?"
_EPS_BLOCK = re.compile(
    re.escape(_EPS_HEADER) + r"[^\n]*\n\s*-{5,}\s*\n" + (rf"\s*({_NUM})\s+({_NUM})\s+({_NUM})\s*\n") * 3
)


def parse_outcar_epsilon(text: str, *, file: str | os.PathLike[str] | None = None) -> np.ndarray:
    """ε∞ (3x3) from the last ``MACROSCOPIC STATIC DIELECTRIC TENSOR (including local field
    effects in DFT)`` block of an OUTCAR's text."""
    matches = list(_EPS_BLOCK.finditer(text))
    if not matches:
        hint = " (found the header but not three rows of three numbers)" if _EPS_HEADER in text else ""
        raise InputError(
            f"no '{_EPS_HEADER}' block{hint}",
            file=file, field="dielectric tensor",
            fix="pass OUTCARs of finished LEPSILON=.TRUE. or LCALCEPS=.TRUE. runs",
        )
    values = [float(v.replace("D", "E").replace("d", "e")) for v in matches[-1].groups()]
    eps = np.array(values).reshape(3, 3)
    if not np.all(np.isfinite(eps)):
        raise InputError("non-finite dielectric tensor", file=file, field="dielectric tensor")
    return eps


def read_outcar(path: str | os.PathLike[str]) -> tuple[Atoms, np.ndarray]:
    """(structure, ε∞) of one DFPT OUTCAR (``.gz`` allowed). The structure is the last ionic
    configuration the OUTCAR prints (for DFPT runs: the only one)."""
    import ase.io

    path = Path(path)
    if not path.is_file():
        raise InputError("OUTCAR not found", file=path, fix="check the path")
    text = _open_text(path)
    eps = parse_outcar_epsilon(text, file=path)
    try:
        atoms = cast(Atoms, ase.io.read(path, format="vasp-out", index=-1))  # ASE gunzips *.gz itself
    except Exception as exc:  # noqa: BLE001 - ASE raises many types on malformed files
        raise InputError(
            f"cannot read the structure ({type(exc).__name__}: {' '.join(str(exc).split())[:120]})",
            file=path, field="POSITION", fix="pass a complete OUTCAR (header with POTCAR/ions per type, positions)",
        ) from None
    atoms.calc = None
    atoms.pbc = True
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
) -> tuple[list[Atoms], list[ReferenceResult]]:
    """Read DFPT OUTCARs (files or folders searched for ``OUTCAR*``), attach MD steps, and
    write one extxyz α dataset to ``out`` if given. Everything is read and checked before
    anything is written. Returns (frames, results)."""
    paths = _expand(outcars)
    if not paths:
        raise InputError("no OUTCAR given", field="outcar", fix="pass at least one DFPT OUTCAR")
    md_frames: list[Atoms] = []
    md_steps = np.zeros(0, dtype=int)
    if md is not None:
        md_frames, md_steps = read_vasp_md(md)
    frames, results = [], []
    for p in paths:
        atoms, eps = read_outcar(p)
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
                method=VASP_METHOD,
                meta={
                    "backend": "vasp",
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
