"""The embedded dipole model measured against DFT linear response: metrics and the shipped data.

The data set ``tasks/data/dipole_vs_dft/`` (made by ``benchmarks/bench_dipole_dft.py``) holds,
per paper material, a few CHGNet MD snapshots of a small cell and the equilibrium cell with
the host tetrahedra's S displaced along the ν1 breathing mode, each with the α of the dipole
model and of CP2K. This module computes what is compared (:func:`alpha_metrics`,
:func:`mode_activity`, :func:`summarize`), reads the shipped files and phrases the measured
gap for reports (:func:`dipole_gap_line`).

Raman activity of one mode Q (here: every S of the tetrahedra moved radially by Q Å, not
mass-weighted; the same Q for both methods, so their ratio is meaningful): with α' = dα/dQ,
a' = tr α'/3, γ'² = ½[(α'xx−α'yy)² + (α'yy−α'zz)² + (α'zz−α'xx)²] + 3(α'xy² + α'yz² + α'zx²)
and activity = 45 a'² + 7 γ'² (the orientation average of SCIENCE.md's eq. S1).

>>> d = np.diag([1.0, 1.0, 1.0])          # a purely isotropic derivative
>>> r = mode_activity(d)
>>> r["a_prime_A2"], r["gamma_prime_A2"], r["activity_A4"]
(1.0, 0.0, 45.0)
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from ramanscreen.tasks.common import InputError

#: Folder of the shipped comparison inside ``tasks/data``, and its two files.
DIPOLE_VS_DFT_DIR = "dipole_vs_dft"
FRAMES_FILE = "frames.extxyz"
SUMMARY_FILE = "summary.json"
#: Label of the snapshots: CHGNet MD, not DFT MD.
SNAPSHOT_LABEL = "CHGNet MD snapshots (not DFT MD)"
#: Radial displacement of each S along the ν1 breathing mode (Å), central differences.
BREATHING_DELTA_A = 0.02
#: Centre–S distance below which an S belongs to a tetrahedron (Å): P–S 2.06, Sb–S 2.33,
#: W–S ≈ 2.2, and every Na–S ≥ 2.8 (Na is never a centre anyway).
TETRAHEDRON_BOND_CUTOFF_A = 2.8
#: ``kind`` of a frame in the data set.
MD_KIND = "md"
MODE_PLUS_KIND = "mode_plus"
MODE_MINUS_KIND = "mode_minus"
#: The metrics :func:`summarize` computes (the rest of a material's summary is provenance).
METRIC_KEYS = (
    "n_frames", "n_atoms", "alpha_iso_dft_A3", "alpha_iso_dipole_A3", "alpha_rmse_A3", "alpha_rel_rmse",
    "fluct_rms_dft_A3", "fluct_rms_dipole_A3", "fluct_rms_ratio", "fluct_corr",
)
MODE_METRIC_KEYS = ("n_bonds", "bond_dalpha_iso_needed_A2", "activity_ratio", "activity_ratio_norm")


def data_dir() -> Path:
    """``tasks/data/dipole_vs_dft`` of the installed package."""
    from importlib import resources

    return Path(str(resources.files("ramanscreen.tasks").joinpath("data", DIPOLE_VS_DFT_DIR)))


def breathing_mode(atoms: Atoms, centres: Iterable[str], ligand: str = "S",
                   cutoff_A: float = TETRAHEDRON_BOND_CUTOFF_A) -> np.ndarray:
    """Unit displacement (n, 3) moving every ``ligand`` within ``cutoff_A`` of a ``centres``
    atom radially away from its nearest centre (minimum image); zero for all other atoms.

    >>> from ramanscreen.tasks.structures import build_structure
    >>> m = breathing_mode(build_structure("Na3PS4", n_atoms=16), ["P"])
    >>> int((np.linalg.norm(m, axis=1) > 0).sum()), bool(np.allclose(np.linalg.norm(m[m.any(1)], axis=1), 1))
    (8, True)
    """
    symbols = np.array(atoms.get_chemical_symbols())
    centre_idx = np.flatnonzero(np.isin(symbols, list(centres)))
    lig_idx = np.flatnonzero(symbols == ligand)
    if not len(centre_idx) or not len(lig_idx):
        raise InputError(f"no {'/'.join(centres)}–{ligand} pairs in {atoms.get_chemical_formula()}",
                         field="centres", fix="name the tetrahedral centres of this structure")
    from ase.geometry import get_distances

    vec, dist = get_distances(atoms.positions[centre_idx], atoms.positions[lig_idx], cell=atoms.cell, pbc=atoms.pbc)
    mode = np.zeros((len(atoms), 3))
    nearest = np.argmin(dist, axis=0)
    for k, j in enumerate(lig_idx):
        d = float(dist[nearest[k], k])
        if d < cutoff_A:
            mode[j] = vec[nearest[k], k] / d
    if not mode.any():
        raise InputError(f"no {ligand} within {cutoff_A} Å of a {'/'.join(centres)}", field="cutoff_A")
    return mode


def displaced(atoms: Atoms, mode: np.ndarray, delta_A: float) -> Atoms:
    """A copy of ``atoms`` with every atom moved by ``delta_A * mode`` (Å)."""
    out = atoms.copy()
    out.positions = atoms.positions + float(delta_A) * np.asarray(mode, dtype=float)
    return out


def mode_activity(dalpha_dQ: np.ndarray) -> dict[str, float]:
    """a' (Å²), γ' (Å²) and the activity 45a'² + 7γ'² (Å⁴) of a derivative dα/dQ (Å³/Å)."""
    d = 0.5 * (np.asarray(dalpha_dQ, dtype=float) + np.asarray(dalpha_dQ, dtype=float).T)
    a = float(np.trace(d) / 3.0)
    g2 = 0.5 * ((d[0, 0] - d[1, 1]) ** 2 + (d[1, 1] - d[2, 2]) ** 2 + (d[2, 2] - d[0, 0]) ** 2) \
        + 3.0 * (d[0, 1] ** 2 + d[1, 2] ** 2 + d[0, 2] ** 2)
    return {"a_prime_A2": a, "gamma_prime_A2": float(math.sqrt(g2)), "activity_A4": float(45 * a * a + 7 * g2)}


def alpha_metrics(alpha_dft_A3: np.ndarray, alpha_model_A3: np.ndarray) -> dict[str, float]:
    """Model against DFT on the same frames ((n, 3, 3) each, Å³).

    ``alpha_rmse_A3``: RMSE over all 9 components of all frames; ``alpha_rel_rmse``: that over
    the mean DFT isotropic α (tr/3). ``fluct_*``: the same after removing each method's mean
    over the frames (what a Raman spectrum sees): the RMS fluctuation of each, their ratio
    (model/DFT) and the Pearson correlation of the fluctuations (NaN below 2 frames).

    >>> dft = np.array([np.eye(3) * 10.0, np.eye(3) * 12.0])
    >>> m = alpha_metrics(dft, 0.5 * dft)
    >>> round(m["alpha_rmse_A3"], 4), round(m["alpha_rel_rmse"], 4), m["fluct_rms_ratio"], round(m["fluct_corr"], 9)
    (3.1885, 0.2899, 0.5, 1.0)
    """
    dft = np.asarray(alpha_dft_A3, dtype=float).reshape(-1, 3, 3)
    mod = np.asarray(alpha_model_A3, dtype=float).reshape(-1, 3, 3)
    if dft.shape != mod.shape or not len(dft):
        raise InputError(f"need the same non-empty frames, got {dft.shape} and {mod.shape}", field="alpha_A3")
    iso_dft = float(np.mean(np.trace(dft, axis1=1, axis2=2)) / 3.0)
    iso_mod = float(np.mean(np.trace(mod, axis1=1, axis2=2)) / 3.0)
    rmse = float(np.sqrt(np.mean((mod - dft) ** 2)))
    fd, fm = (dft - dft.mean(axis=0)).ravel(), (mod - mod.mean(axis=0)).ravel()
    rd, rm = float(np.sqrt(np.mean(fd**2))), float(np.sqrt(np.mean(fm**2)))
    corr = float(np.dot(fd, fm) / (np.linalg.norm(fd) * np.linalg.norm(fm))) if len(dft) > 1 and rd > 0 and rm > 0 \
        else math.nan
    return {"alpha_iso_dft_A3": iso_dft, "alpha_iso_dipole_A3": iso_mod, "alpha_rmse_A3": rmse,
            "alpha_rel_rmse": rmse / abs(iso_dft), "fluct_rms_dft_A3": rd, "fluct_rms_dipole_A3": rm,
            "fluct_rms_ratio": rm / rd if rd > 0 else math.nan, "fluct_corr": corr}


def _alpha(frame: Atoms, key: str) -> np.ndarray:
    return np.asarray(frame.info[key], dtype=float).reshape(3, 3)


def summarize(frames: Sequence[Atoms]) -> dict[str, dict[str, Any]]:
    """Per-material metrics of a data set: :func:`alpha_metrics` on its ``md`` frames and, when
    the material has ``mode_plus``/``mode_minus`` frames, dα/dQ by central differences, the
    activity of each method and ``activity_ratio`` = dipole/DFT. ``activity_ratio_norm`` divides
    each activity by that method's (mean α_iso)² first: the ratio of the *relative* derivatives
    (d ln α/dQ), free of the overall scale the Γ-point DFT underestimates.
    ``bond_dalpha_iso_needed_A2``: the isotropic bond-polarizability derivative dᾱ_b/dr (Å²)
    per stretched bond that a bond term added to the dipole model would need to give DFT's a'.
    """
    out: dict[str, dict[str, Any]] = {}
    for material in dict.fromkeys(str(f.info["material"]) for f in frames):
        own = [f for f in frames if str(f.info["material"]) == material]
        md = [f for f in own if f.info["kind"] == MD_KIND]
        row: dict[str, Any] = {"n_frames": len(md), "n_atoms": len(md[0]) if md else len(own[0])}
        if md:
            row.update(alpha_metrics(np.array([_alpha(f, "alpha_dft_A3") for f in md]),
                                     np.array([_alpha(f, "alpha_dipole_A3") for f in md])))
        plus = [f for f in own if f.info["kind"] == MODE_PLUS_KIND]
        minus = [f for f in own if f.info["kind"] == MODE_MINUS_KIND]
        if plus and minus:
            p, m = plus[0], minus[0]
            delta = float(p.info["delta_A"])
            row["mode"] = str(p.info["mode"])
            row["delta_A"] = delta
            for method in ("dft", "dipole"):
                key = f"alpha_{method}_A3"
                row[method] = mode_activity((_alpha(p, key) - _alpha(m, key)) / (2.0 * delta))
                row[method]["alpha_iso_A3"] = float(np.trace(_alpha(p, key) + _alpha(m, key)) / 6.0)
            # every displaced S is one stretched bond; a bond term Σ_b ᾱ_b(r) adds n_bonds·dᾱ_b/dr to a'
            n_bonds = int(np.count_nonzero(np.linalg.norm(p.positions - m.positions, axis=1) > 1e-9))
            row["n_bonds"] = n_bonds
            row["bond_dalpha_iso_needed_A2"] = (row["dft"]["a_prime_A2"] - row["dipole"]["a_prime_A2"]) / n_bonds
            row["activity_ratio"] = row["dipole"]["activity_A4"] / row["dft"]["activity_A4"]
            row["activity_ratio_norm"] = row["activity_ratio"] * (row["dft"]["alpha_iso_A3"]
                                                                  / row["dipole"]["alpha_iso_A3"]) ** 2
        out[material] = row
    return out


def pooled_md_metrics(frames: Sequence[Atoms]) -> dict[str, float]:
    """:func:`alpha_metrics` over the ``md`` frames of every material together."""
    md = [f for f in frames if f.info["kind"] == MD_KIND]
    return alpha_metrics(np.array([_alpha(f, "alpha_dft_A3") for f in md]),
                         np.array([_alpha(f, "alpha_dipole_A3") for f in md]))


def load_frames(path: str | os.PathLike[str] | None = None) -> list[Atoms]:
    """The frames of the shipped comparison (or of ``path``)."""
    import ase.io

    p = Path(path) if path is not None else data_dir() / FRAMES_FILE
    if not p.is_file():
        raise InputError("dipole-vs-DFT frames not found", file=p,
                         fix="run benchmarks/bench_dipole_dft.py to make them")
    return list(ase.io.read(p, index=":", format="extxyz"))


def load_summary(path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The shipped ``summary.json`` (or ``path``)."""
    p = Path(path) if path is not None else data_dir() / SUMMARY_FILE
    if not p.is_file():
        raise InputError("dipole-vs-DFT summary not found", file=p,
                         fix="run benchmarks/bench_dipole_dft.py to make it")
    return dict(json.loads(p.read_text()))


def dipole_gap_line(summary: Mapping[str, Any] | None = None) -> str | None:
    """One plain line with the measured gap of the embedded dipole model to CP2K, from the
    shipped summary (None when there is none).

    >>> s = {"dft_label": "CP2K PBE", "cell_atoms": "15-16", "pooled": {"alpha_rmse_A3": 5.0,
    ...      "alpha_rel_rmse": 0.1, "n_frames": 20}, "materials": {"Na3PS4": {"mode": "PS4 nu1",
    ...      "activity_ratio": 0.25}}}
    >>> dipole_gap_line(s)
    'embedded dipole model vs CP2K PBE (Γ point) on 15-16-atom cells, 20 CHGNet snapshots: α RMSE 5 Å³ (10 %); PS4 ν1 Raman activity 4× smaller (docs/reference.md)'
    """
    if summary is None:
        try:
            summary = load_summary()
        except InputError:
            return None
    pooled = summary.get("pooled") or {}
    if not pooled:
        return None
    modes = []
    for row in summary.get("materials", {}).values():
        ratio = row.get("activity_ratio")
        if ratio is None or not math.isfinite(float(ratio)) or float(ratio) <= 0:
            continue
        name = str(row["mode"]).replace("nu1", "ν1")
        r = float(ratio)
        modes.append(f"{name} Raman activity {1 / r:.2g}× smaller" if r < 1 else f"{name} Raman activity {r:.2g}× larger")
    modes_text = "; " + ", ".join(dict.fromkeys(modes)) if modes else ""
    return (f"embedded dipole model vs {summary.get('dft_label', 'DFT')} (Γ point) on {summary.get('cell_atoms', '?')}"
            f"-atom cells, {int(pooled.get('n_frames', 0))} CHGNet snapshots: α RMSE "
            f"{float(pooled['alpha_rmse_A3']):.2g} Å³ ({100 * float(pooled['alpha_rel_rmse']):.2g} %)"
            f"{modes_text} (docs/reference.md)")


def fit_bond_terms(frames: Sequence[Atoms]) -> dict[str, tuple[float, float]]:
    """An isotropic bond term per centre–S bond (``{"P-S": (r0_A, dalpha_dr_A2)}``, the input of
    ``DipoleModel(bond_terms=...)``) that gives the dipole model DFT's ν1 a' exactly: r0 is the
    mean centre–S bond of the equilibrium cell, the slope :func:`summarize`'s
    ``bond_dalpha_iso_needed_A2`` (averaged when two materials share a bond type). Only the
    mode frames are used; the MD snapshots stay held out.
    """
    from ramanscreen.tasks.reference.dipole import BOND_TERM_CUTOFF_A

    fits: dict[str, list[tuple[float, float]]] = {}
    for material, row in summarize(frames).items():
        if "bond_dalpha_iso_needed_A2" not in row:
            continue
        centre = str(row["mode"]).split("S4")[0]
        plus, minus = (next(f for f in frames if f.info["material"] == material and f.info["kind"] == kind)
                       for kind in (MODE_PLUS_KIND, MODE_MINUS_KIND))
        eq = plus.copy()
        eq.positions = 0.5 * (plus.positions + minus.positions)  # the built equilibrium cell
        r = [d for d in _centre_ligand_distances(eq, centre, "S") if d < BOND_TERM_CUTOFF_A]
        fits.setdefault(f"{centre}-S", []).append((float(np.mean(r)), float(row["bond_dalpha_iso_needed_A2"])))
    return {k: (float(np.mean([v[0] for v in vals])), float(np.mean([v[1] for v in vals]))) for k, vals in fits.items()}


def _centre_ligand_distances(atoms: Atoms, centre: str, ligand: str) -> np.ndarray:
    from ase.geometry import get_distances

    symbols = np.array(atoms.get_chemical_symbols())
    _, dist = get_distances(atoms.positions[symbols == centre], atoms.positions[symbols == ligand],
                            cell=atoms.cell, pbc=atoms.pbc)
    return np.asarray(dist).ravel()


def bond_term_check(frames: Sequence[Atoms], bond_terms: Mapping[str, Sequence[float]]) -> dict[str, dict[str, Any]]:
    """Before/after of the bond term, per material: :func:`alpha_metrics` of the MD snapshots
    (held out: not used by :func:`fit_bond_terms`) and the ν1 activity ratio, with the model's α
    = the stored dipole α + :func:`~ramanscreen.tasks.reference.dipole.bond_term_alpha`."""
    from ramanscreen.tasks.reference.dipole import bond_term_alpha

    with_term = []
    for f in frames:
        g = f.copy()
        g.info["alpha_dipole_A3"] = (_alpha(f, "alpha_dipole_A3") + bond_term_alpha(f, bond_terms)).reshape(9)
        with_term.append(g)
    before, after = summarize(frames), summarize(with_term)
    keys = ("alpha_rmse_A3", "alpha_rel_rmse", "fluct_rms_ratio", "fluct_corr", "activity_ratio")
    return {m: {f"{k}_{when}": row[k] for when, row in (("before", before[m]), ("after", after[m]))
                for k in keys if k in row} for m in before}
