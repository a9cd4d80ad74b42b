"""Parity data as results rows: the α model's test-set predictions (paper Fig. 2B/2C) and the
distilled potential's held-out forces against its teacher (Fig. S1).

* :func:`alpha_parity_rows`: one row per (test frame, Cartesian component) of the α model —
  the reference α (whatever method the references came from, named in every row), the
  prediction of the fitted model and the committee's standard deviation. The rows are exactly
  the values :func:`ramanscreen.tasks.polarizability.alpha_metrics` pooled into the run's
  ``ml_metrics``, so the RMSE recomputed from them is the recorded test RMSE.
* :func:`force_parity_rows`: one row per held-out force component (teacher against distilled
  potential, with the element), subsampled deterministically to at most
  :data:`FORCE_PARITY_MAX_ROWS` per material; every row carries the RMSE of its element over
  *all* held-out components, so a legend states the full-set error, not the subsample's.

Plain functions (no Prefect); the results tables are ``alpha_parity`` and ``force_parity``
(:data:`ramanscreen.tasks.results.COLUMNS`).

>>> t = np.array([np.diag([1.0, 2.0, 3.0]) + 0.1 * k for k in range(2)])
>>> rows = alpha_parity_rows([7, 9], t, t + 0.5, reference_method="thole-dipole-model (embedded, not DFPT)")
>>> len(rows["frame"]), rows["component"][:4], rows["kind"][3], rows["alpha_committee_std_A3"][0]
(12, ['xx', 'yy', 'zz', 'xy'], 'off-diagonal', None)
>>> round(parity_metrics(rows)["rmse_diag_A3"], 12)
0.5
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ramanscreen.tasks.common import InputError
from ramanscreen.tasks.polarizability import SIX_COMPONENTS

#: Names of the six independent components, in :data:`SIX_COMPONENTS` order.
COMPONENT_NAMES: tuple[str, ...] = tuple("xyz"[r] + "xyz"[c] for r, c in SIX_COMPONENTS)
DIAGONAL, OFF_DIAGONAL = "diagonal", "off-diagonal"
#: ``kind`` of each component (Fig. 2B: diagonal, Fig. 2C: off-diagonal).
COMPONENT_KIND: dict[str, str] = {n: DIAGONAL if r == c else OFF_DIAGONAL
                                  for n, (r, c) in zip(COMPONENT_NAMES, SIX_COMPONENTS, strict=True)}
#: Cartesian force components, in the ASE frame of the cell.
FORCE_COMPONENTS: tuple[str, ...] = ("x", "y", "z")
#: At most this many force-parity rows per material (a deterministic subsample beyond it).
FORCE_PARITY_MAX_ROWS = 5000
#: Seed of that subsample (fixed: a re-run stores the same rows).
FORCE_PARITY_SEED = 0


def alpha_parity_rows(frames: Sequence[int], reference_A3: Any, predicted_A3: Any, committee_A3: Any = None, *,
                      reference_method: str, md_steps: Sequence[int] | None = None) -> dict[str, list[Any]]:
    """The ``alpha_parity`` columns of the α model's test set.

    ``frames``: the stored MD frame of each test structure; ``reference_A3`` and
    ``predicted_A3`` (n, 3, 3) Å³; ``committee_A3`` (m, n, 3, 3) the calibrated committee
    (None or m < 2: the std column is null); ``reference_method`` labels every row.
    """
    ref = np.asarray(reference_A3, dtype=float)
    pred = np.asarray(predicted_A3, dtype=float)
    n = len(frames)
    if ref.shape != (n, 3, 3) or pred.shape != (n, 3, 3):
        raise InputError(f"expected ({n}, 3, 3) reference and predicted α, got {ref.shape} and {pred.shape}",
                         field="alpha_parity")
    if not reference_method:
        raise InputError("the reference method must be named", field="alpha_parity.reference_method")
    std = None
    if committee_A3 is not None:
        com = np.asarray(committee_A3, dtype=float)
        if com.ndim == 4 and com.shape[0] >= 2:
            if com.shape[1:] != (n, 3, 3):
                raise InputError(f"committee shape {com.shape} does not match {n} frames", field="alpha_parity")
            std = com.std(axis=0)
    cols: dict[str, list[Any]] = {k: [] for k in ("frame", "md_step", "component", "kind", "alpha_reference_A3",
                                                  "alpha_predicted_A3", "alpha_committee_std_A3", "reference_method")}
    for i, frame in enumerate(frames):
        for name, (r, c) in zip(COMPONENT_NAMES, SIX_COMPONENTS, strict=True):
            cols["frame"].append(int(frame))
            step = None if md_steps is None else md_steps[i]
            cols["md_step"].append(None if step is None or int(step) < 0 else int(step))  # -1: not recorded
            cols["component"].append(name)
            cols["kind"].append(COMPONENT_KIND[name])
            cols["alpha_reference_A3"].append(float(ref[i, r, c]))
            cols["alpha_predicted_A3"].append(float(pred[i, r, c]))
            cols["alpha_committee_std_A3"].append(None if std is None else float(std[i, r, c]))
            cols["reference_method"].append(reference_method)
    return cols


def parity_metrics(rows: Mapping[str, Sequence[Any]]) -> dict[str, float]:
    """R² and RMSE (Å³) of the diagonal and off-diagonal rows of an ``alpha_parity`` table,
    pooled as :func:`ramanscreen.tasks.polarizability.alpha_metrics` pools them (NaN: no rows)."""
    kind = np.asarray(rows["kind"], dtype=object)
    t_all = np.asarray(rows["alpha_reference_A3"], dtype=float)
    p_all = np.asarray(rows["alpha_predicted_A3"], dtype=float)
    out: dict[str, float] = {}
    for name, k in (("diag", DIAGONAL), ("offdiag", OFF_DIAGONAL)):
        t, p = t_all[kind == k], p_all[kind == k]
        if t.size == 0:
            out[f"r2_{name}"] = out[f"rmse_{name}_A3"] = float("nan")
            continue
        ss_res = float(np.sum((p - t) ** 2))
        ss_tot = float(np.sum((t - t.mean()) ** 2))
        out[f"r2_{name}"] = 1.0 - ss_res / ss_tot if ss_tot > 0 else (1.0 if ss_res == 0 else float("-inf"))
        out[f"rmse_{name}_A3"] = math.sqrt(ss_res / t.size)
    return out


def _subsample(symbols: np.ndarray, max_rows: int, seed: int) -> np.ndarray:
    """Sorted indices of at most ``max_rows`` entries: every element keeps an equal share of the
    budget (all of its entries when it has fewer; the rest goes to the others), chosen at random
    with ``seed``. So a minority element (one W in 63 atoms) is never left out."""
    n = len(symbols)
    if n <= max_rows:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    groups = {el: np.flatnonzero(symbols == el) for el in sorted(set(symbols.tolist()))}
    quota: dict[str, int] = {}
    budget, left = max_rows, sorted(groups, key=lambda e: len(groups[e]))
    while left:  # water-filling: the smallest groups first
        share = budget // len(left)
        el = left.pop(0)
        quota[el] = min(len(groups[el]), share)
        budget -= quota[el]
    picked = [np.sort(rng.choice(groups[el], size=quota[el], replace=False)) for el in sorted(groups)]
    return np.sort(np.concatenate(picked))


def force_parity_rows(potential: Any, holdout: Sequence[Any], *, max_rows: int = FORCE_PARITY_MAX_ROWS,
                      seed: int = FORCE_PARITY_SEED) -> dict[str, list[Any]]:
    """The ``force_parity`` columns of a distilled potential on its held-out teacher frames.

    ``potential``: a :class:`ramanscreen.tasks.mlff.SnapPotential`; ``holdout``: the labelled
    held-out frames (teacher forces on their calculators). Forces are in the ASE frame of each
    cell, eV/Å; ``method`` is the potential's label (distilled, not DFT), ``teacher`` the
    teacher's model as the potential records it.
    """
    from ramanscreen.tasks.mlff.snap import labels

    frames = list(holdout)
    if not frames:
        raise InputError("no held-out frames to compare with", field="holdout", fix="keep a holdout fraction")
    predicted = potential.predict(frames)
    teacher_info = potential.info.get("teacher") or {}
    teacher = teacher_info.get("model") or teacher_info.get("spec") or teacher_info.get("name")
    f_t, f_p, sym, frame, atom, comp = [], [], [], [], [], []
    for k, (a, b) in enumerate(zip(frames, predicted, strict=True)):
        ft = np.asarray(labels(a)[1], dtype=float)
        fp = np.asarray(b.get_forces(), dtype=float)
        n = len(a)
        f_t.append(ft.ravel())
        f_p.append(fp.ravel())
        sym.append(np.repeat(a.get_chemical_symbols(), 3))
        frame.append(np.full(3 * n, k))
        atom.append(np.repeat(np.arange(n), 3))
        comp.append(np.tile(np.arange(3), n))
    ft_all, fp_all, symbols = np.concatenate(f_t), np.concatenate(f_p), np.concatenate(sym)
    err2 = (fp_all - ft_all) ** 2
    rmse = {el: float(np.sqrt(err2[symbols == el].mean())) for el in set(symbols.tolist())}
    count = {el: int((symbols == el).sum()) for el in rmse}
    keep = _subsample(symbols, max_rows, seed)
    frame_all, atom_all, comp_all = np.concatenate(frame), np.concatenate(atom), np.concatenate(comp)
    els = [str(symbols[i]) for i in keep]
    return {
        "frame": [int(frame_all[i]) for i in keep], "atom": [int(atom_all[i]) for i in keep],
        "element": els, "component": [FORCE_COMPONENTS[int(comp_all[i])] for i in keep],
        "force_teacher_eV_A": [float(ft_all[i]) for i in keep],
        "force_distilled_eV_A": [float(fp_all[i]) for i in keep],
        "force_rmse_element_eV_A": [rmse[e] for e in els], "n_components_element": [count[e] for e in els],
        "method": [potential.method] * len(keep), "teacher": [teacher] * len(keep),
    }


__all__ = ["COMPONENT_KIND", "COMPONENT_NAMES", "DIAGONAL", "FORCE_COMPONENTS", "FORCE_PARITY_MAX_ROWS",
           "FORCE_PARITY_SEED", "OFF_DIAGONAL", "alpha_parity_rows", "force_parity_rows", "parity_metrics"]
