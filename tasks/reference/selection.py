"""Which MD snapshots get reference calculations: random (the paper) or farthest-point sampling."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase import Atoms

from ramanscreen.tasks.common import InputError


def structure_features(frames: Sequence[Atoms], cutoff_A: float = 5.0) -> np.ndarray:
    """Per-structure invariant features: featomic SOAP power spectrum summed over atoms, per
    atom of the structure (rows: frames). Used for farthest-point sampling."""
    import featomic
    import metatensor

    calc = featomic.SoapPowerSpectrum(
        cutoff={"radius": cutoff_A, "smoothing": {"type": "ShiftedCosine", "width": 0.5}},
        density={"type": "Gaussian", "width": 0.5},
        basis={"type": "TensorProduct", "max_angular": 4, "radial": {"type": "Gto", "max_radial": 4}},
    )
    desc = calc.compute(list(frames))
    desc = desc.keys_to_properties(["neighbor_1_type", "neighbor_2_type"])
    desc = metatensor.sum_over_samples(desc, "atom")
    desc = desc.keys_to_properties("center_type")
    values = np.asarray(desc.block().values)
    order = np.asarray(desc.block().samples.values[:, 0])
    feats = np.zeros_like(values)
    feats[order] = values
    return feats / np.array([len(a) for a in frames])[:, None]


def select_snapshots(
    frames: Sequence[Atoms] | int,
    n: int,
    *,
    method: str = "random",
    seed: int = 0,
    features: np.ndarray | None = None,
) -> np.ndarray:
    """Indices of ``n`` snapshots for reference calculations.

    ``random`` (as in the paper): sorted, without replacement, reproducible by ``seed``.
    ``fps``: greedy farthest-point sampling in a standardised feature space (``features``
    (n_frames, n_features), default :func:`structure_features`), in selection order, starting
    from the frame farthest from the mean (deterministic).

    >>> select_snapshots(10, 3, seed=1).tolist()
    [3, 4, 7]
    >>> x = np.array([[0.0], [0.1], [5.0], [10.0]])
    >>> select_snapshots(4, 3, method="fps", features=x).tolist()
    [3, 0, 2]
    """
    n_frames = frames if isinstance(frames, int) else len(frames)
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError(f"number of snapshots must be a positive integer, got {n!r}", field="n")
    if n > n_frames:
        raise InputError(f"asked for {n} snapshots but there are only {n_frames} frames", field="n",
                         fix=f"use n <= {n_frames}")
    if method == "random":
        rng = np.random.default_rng(seed)
        return np.sort(rng.choice(n_frames, size=n, replace=False))
    if method != "fps":
        raise InputError(f"unknown selection method {method!r}", field="method", fix="use 'random' or 'fps'")
    if features is None:
        if isinstance(frames, int):
            raise InputError("fps needs frames or features", field="features")
        features = structure_features(frames)
    x = np.asarray(features, dtype=float).reshape(n_frames, -1)
    scale = x.std(axis=0)
    x = (x - x.mean(axis=0)) / np.where(scale > 0, scale, 1.0)
    chosen = [int(np.argmax(np.einsum("ij,ij->i", x, x)))]
    dist = np.einsum("ij,ij->i", x - x[chosen[0]], x - x[chosen[0]])
    for _ in range(n - 1):
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        d = x - x[nxt]
        dist = np.minimum(dist, np.einsum("ij,ij->i", d, d))
    return np.array(chosen)
