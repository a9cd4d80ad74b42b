"""α datasets on disk: extxyz frames with ``info["polarizability"]`` (9 numbers, Å³) and the method."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms

from ramanscreen.tasks.common import InputError, atomic_path
from ramanscreen.tasks.reference.base import ReferenceResult


@dataclass
class AlphaDataset:
    """Frames with their reference α: ``alpha_A3`` (n, 3, 3), one method/source/md_step each."""

    frames: list[Atoms]
    alpha_A3: np.ndarray
    methods: list[str]
    sources: list[str]
    md_steps: np.ndarray

    def __len__(self) -> int:
        return len(self.frames)


def write_alpha_dataset(
    frames: Sequence[Atoms], results: Sequence[ReferenceResult], path: str | os.PathLike[str]
) -> Path:
    """Write frames + reference α as extxyz (``info``: polarizability (9, Å³, row-major),
    alpha_method, source, md_step, dielectric_block for imported VASP values, alpha_meta JSON).
    Validated first; written atomically.

    >>> import tempfile, pathlib
    >>> from ase.build import bulk
    >>> a = bulk("NaCl", "rocksalt", a=5.64)
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "ds.extxyz"
    >>> _ = write_alpha_dataset([a], [ReferenceResult(np.eye(3), "test")], p)
    >>> ds = read_alpha_dataset(p)
    >>> ds.methods, ds.alpha_A3.shape
    (['test'], (1, 3, 3))
    """
    import ase.io

    path = Path(path)
    if len(frames) != len(results):
        raise InputError(f"{len(frames)} frames but {len(results)} results", file=path, field="results")
    if not frames:
        raise InputError("nothing to write: no frames", file=path, field="frames")
    out = []
    for k, (atoms, res) in enumerate(zip(frames, results, strict=False)):
        alpha = np.asarray(res.alpha_A3, dtype=float)
        if alpha.shape != (3, 3) or not np.all(np.isfinite(alpha)):
            raise InputError(f"frame {k}: α must be a finite 3x3 tensor", file=path, field="polarizability")
        a = Atoms(atoms.get_chemical_symbols(), positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        a.info["polarizability"] = alpha.reshape(9)
        a.info["alpha_method"] = res.method
        source = str(res.meta.get("source", atoms.info.get("source", ""))).strip()
        if source:  # an empty value would garble the extxyz comment line
            a.info["source"] = source
        a.info["md_step"] = int(res.meta.get("md_step", atoms.info.get("md_step", -1)))
        if res.meta.get("dielectric_block"):  # imported DFT: the OUTCAR block the value came from
            a.info["dielectric_block"] = str(res.meta["dielectric_block"])
        meta = {k2: v for k2, v in res.meta.items() if k2 not in ("source", "md_step")}
        a.info["alpha_meta"] = json.dumps(meta, default=str, separators=(",", ":")).replace('"', "'")
        out.append(a)
    with atomic_path(path) as tmp:
        ase.io.write(tmp, out, format="extxyz")
    return path


def read_alpha_dataset(path: str | os.PathLike[str]) -> AlphaDataset:
    """Read an α dataset written by :func:`write_alpha_dataset` (or any extxyz with
    ``polarizability`` in info). Raises :class:`InputError` on a missing file or missing α."""
    import ase.io

    path = Path(path)
    if not path.is_file():
        raise InputError("α dataset not found", file=path, fix="check the path")
    try:
        frames = ase.io.read(path, index=":", format="extxyz")
    except Exception as exc:  # noqa: BLE001 - any parse failure is bad input
        raise InputError(f"cannot read as extxyz ({type(exc).__name__}: {exc})", file=path,
                         fix="pass an extxyz dataset written by `ramanscreen reference` or `import-vasp`") from None
    if not frames:
        raise InputError("dataset holds no frames", file=path)
    alphas, methods, sources, steps = [], [], [], []
    for k, a in enumerate(frames):
        if "polarizability" not in a.info:
            raise InputError(f"frame {k} has no 'polarizability' in its info line", file=path,
                             field="polarizability", fix="compute it with `ramanscreen reference`")
        alpha = np.asarray(a.info["polarizability"], dtype=float).reshape(-1)
        if alpha.size != 9 or not np.all(np.isfinite(alpha)):
            raise InputError(f"frame {k}: polarizability must be 9 finite numbers", file=path, field="polarizability")
        alphas.append(alpha.reshape(3, 3))
        methods.append(str(a.info.get("alpha_method", "unknown")))
        sources.append(str(a.info.get("source", "")))
        steps.append(int(a.info.get("md_step", -1)))
    return AlphaDataset(list(frames), np.array(alphas), methods, sources, np.array(steps, dtype=int))
