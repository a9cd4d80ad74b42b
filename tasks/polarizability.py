"""The λ-SOAP model of the polarizability tensor α (Å³), with featomic and metatensor.

α is symmetric, so it splits into a scalar (λ=0, the trace) and a symmetric traceless
part (λ=2, five real spherical components); featomic's
:func:`~featomic.clebsch_gordan.cartesian_to_spherical` does the split. Each part is a
linear (ridge) function of the λ-SOAP features of the same λ: featomic's
:class:`~featomic.clebsch_gordan.EquivariantPowerSpectrum` of a
:class:`~featomic.SphericalExpansion`, keys (o3_lambda=0, o3_sigma=+1) and (2, +1),
summed over the atoms of each structure (α is extensive). The λ=2 weights are shared by
the five m-components, so a rotated structure gives exactly the rotated α.

Prediction does not build the power spectrum. The model is linear in it, so for every
(center type, l₁, l₂) block the weights are contracted straight into the density
coefficients, ŷ_μ = Σ_i Σ_{m₁m₂} C^{l₁l₂λ}_{m₁m₂μ} ρ_{i,l₁m₁}ᵀ W ρ_{i,l₂m₂}, which costs a
few small matrix products per atom instead of the full CG product (see
``benchmarks/bench_alpha.py``). :meth:`AlphaModel.predict_plain` keeps the textbook path
(features, then a dot product) and the tests hold the two to 1e-10.

A committee of bootstrap ridge models (same regularisation, resampled structures),
calibrated on out-of-bag residuals, gives an uncertainty per frame and, through the
predicted α series, a confidence band on the Raman spectrum.

>>> import numpy as np
>>> from ase.build import bulk
>>> from ramanscreen.tasks.reference import get_backend
>>> frames = [bulk("NaCl", "rocksalt", a=5.64, cubic=True) for _ in range(12)]
>>> rng = np.random.default_rng(0)
>>> for f in frames:
...     f.positions += rng.normal(0, 0.15, f.positions.shape)
>>> truth = np.array([get_backend("dipole").compute(f).alpha_A3 for f in frames])
>>> model = AlphaModel.fit(frames[:10], truth[:10], hypers=SOAPHypers(max_radial=3, max_angular=2), n_committee=4)
>>> model.predict(frames[10:]).shape
(2, 3, 3)
>>> model.predict_committee(frames[10:]).shape
(4, 2, 3, 3)
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ramanscreen.tasks.common import InputError, atomic_path, atomic_write, require_finite, save_figure
from ramanscreen.tasks.schema import check, setting

#: Cartesian index pairs of the six independent components, in the order of the
#: 6-column text format ``xx yy zz xy yz zx``.
SIX_COMPONENTS: tuple[tuple[int, int], ...] = ((0, 0), (1, 1), (2, 2), (0, 1), (1, 2), (2, 0))

_FORMAT_VERSION = 2


# ----------------------------------------------------------------------------- hypers


@dataclass(frozen=True)
class SOAPHypers:
    """Hyperparameters of the λ-SOAP features (featomic ``SphericalExpansion``).

    ``max_radial`` is featomic's largest radial index (``max_radial + 1`` GTO radial
    functions); ``max_angular`` the largest l of the density expansion (it must be ≥ 1
    for λ=2 features to exist).

    >>> h = SOAPHypers()
    >>> h.cutoff_A, h.max_radial, h.max_angular, h.width_A
    (5.0, 6, 4, 0.3)
    >>> h.to_featomic()["basis"]["radial"]
    {'type': 'Gto', 'max_radial': 6}
    """

    cutoff_A: float = setting(5.0, doc="SOAP cutoff radius", unit="Å", gt=0)
    max_radial: int = setting(6, doc="largest radial index (max_radial + 1 GTO radial functions)", ge=0)
    max_angular: int = setting(4, doc="largest l of the density expansion (≥ 1 for λ=2 features)", ge=1)
    width_A: float = setting(0.3, doc="Gaussian width of the atomic density", unit="Å", gt=0)
    smoothing_width_A: float = setting(0.5, doc="width of the cutoff's shifted-cosine smoothing", unit="Å", gt=0)

    def __post_init__(self) -> None:
        check(self)
        checks = [
            ("cutoff_A", self.cutoff_A > 0, "a positive radius, e.g. 5.0"),
            ("width_A", self.width_A > 0, "a positive Gaussian width, e.g. 0.4"),
            ("smoothing_width_A", 0 < self.smoothing_width_A <= self.cutoff_A, "0 < smoothing ≤ cutoff"),
            ("max_radial", int(self.max_radial) == self.max_radial and self.max_radial >= 0, "an integer ≥ 0"),
            ("max_angular", int(self.max_angular) == self.max_angular and self.max_angular >= 1, "an integer ≥ 1"),
        ]
        for name, ok, fix in checks:
            if not ok:
                raise InputError(f"invalid value {getattr(self, name)!r}", field=name, fix=f"use {fix}")

    def to_featomic(self) -> dict[str, Any]:
        """The ``SphericalExpansion`` hyperparameters in featomic 0.6 format."""
        return {
            "cutoff": {
                "radius": float(self.cutoff_A),
                "smoothing": {"type": "ShiftedCosine", "width": float(self.smoothing_width_A)},
            },
            "density": {"type": "Gaussian", "width": float(self.width_A)},
            "basis": {
                "type": "TensorProduct",
                "max_angular": int(self.max_angular),
                "radial": {"type": "Gto", "max_radial": int(self.max_radial)},
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SOAPHypers:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise InputError(
                f"unknown hyperparameter(s) {sorted(unknown)}", field="hypers", fix=f"use only {sorted(known)}"
            )
        return cls(**data)


@dataclass(frozen=True)
class ModelSettings:
    """The α model of a campaign (``[model]``): λ-SOAP hyperparameters, committee, seed.

    >>> ModelSettings(hypers={"cutoff_A": 4.0}).hypers.cutoff_A
    4.0
    """

    committee: int = setting(8, doc="bootstrap committee members (0: none; ≥ 2 for an uncertainty band)", ge=0)
    hypers: SOAPHypers = setting(default_factory=SOAPHypers, doc="λ-SOAP hyperparameters (SOAPHypers fields)")
    seed: int = setting(0, doc="seed of the train/test split, the CV folds and the bootstrap")
    search_budget_s: float = setting(0.0, doc="wall-time budget of the cross-validated search over the λ-SOAP "
                                     "hypers (cutoff, max_radial, max_angular, width); 0: off, the hypers as given",
                                     unit="s", ge=0)
    min_train_frames: int = setting(4, doc="fewest reference frames a model is fitted on", ge=2, toml=False)
    min_test_frames: int = setting(4, doc="fewest held-out frames test R²/RMSE are reported from (a smaller "
                                   "test set is refused; none at all: no test metrics)", ge=1, toml=False)

    def __post_init__(self) -> None:
        check(self)
        if self.committee == 1:
            raise InputError("one committee member gives no uncertainty", field="committee", fix="use 0 or ≥ 2")

    def check_split(self, n: int, n_train: int, *, file: str | os.PathLike[str] | None = None) -> None:
        """Refuse a fit on fewer than ``min_train_frames`` frames, or test metrics from fewer than
        ``min_test_frames`` held-out frames (``n - n_train``; 0 means no test metrics).

        >>> ModelSettings().check_split(3, 2, file="ref.extxyz")
        Traceback (most recent call last):
        ...
        ramanscreen.tasks.common.InputError: ref.extxyz: n_train: 3 reference frames; a model needs at least 4 (fix: compute at least 4 reference frames)
        >>> ModelSettings().check_split(6, 5, file="ref.extxyz")
        Traceback (most recent call last):
        ...
        ramanscreen.tasks.common.InputError: ref.extxyz: n_train: 5 training frames of 6 leave 1 test frame; test R² needs at least 4 (fix: add reference frames (at least 8 for a split), or use all 6 for training with no test metrics (n_train = 6))
        """
        if n < self.min_train_frames:
            raise InputError(f"{n} reference frames; a model needs at least {self.min_train_frames}", file=file,
                             field="n_train", fix=f"compute at least {self.min_train_frames} reference frames")
        if not self.min_train_frames <= n_train <= n:
            raise InputError(f"{n_train} training frames; use {self.min_train_frames}..{n} (the reference frames "
                             "available)", file=file, field="n_train",
                             fix=f"use between {self.min_train_frames} and {n}")
        n_test = n - n_train
        if 0 < n_test < self.min_test_frames:
            raise InputError(f"{n_train} training frames of {n} leave {n_test} test frame{'s' if n_test != 1 else ''}; "
                             f"test R² needs at least {self.min_test_frames}", file=file, field="n_train",
                             fix=f"add reference frames (at least {self.min_train_frames + self.min_test_frames} for a "
                                 f"split), or use all {n} for training with no test metrics (n_train = {n})")


@dataclass(frozen=True)
class PredictionSettings:
    """How α is predicted along a trajectory (``[prediction]``)."""

    chunk_frames: int = setting(200, doc="α samples per prediction task (memory and parallelism)", ge=1)

    def __post_init__(self) -> None:
        check(self)


def train_test_split(n: int, n_train: int, *, n_test: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The one train/test split of reference data (CLI ``alpha fit``, the campaign's fit, the
    learning curve): a random permutation of ``range(n)`` from ``seed``; the first ``n_train``
    are the training set, the next ``n_test`` (default: the rest) the test set, each sorted.

    Same data, same seed: same split, so the CLI and a campaign fit the same model.

    >>> train, test = train_test_split(10, 7, seed=1)
    >>> train.tolist(), test.tolist()
    ([0, 1, 2, 4, 5, 7, 8], [3, 6, 9])
    >>> train_test_split(10, 11)
    Traceback (most recent call last):
    ...
    ramanscreen.tasks.common.InputError: n_train: 11 is not within 2..10 (the reference frames available) (fix: use at most 10)
    """
    n_test = n - n_train if n_test is None else n_test
    if not 2 <= n_train <= n:
        raise InputError(f"{n_train} is not within 2..{n} (the reference frames available)", field="n_train",
                         fix=f"use at most {n}")
    if not 0 <= n_test <= n - n_train:
        raise InputError(f"{n_test} test frames do not fit beside {n_train} training frames in {n}", field="n_test",
                         fix=f"use at most {n - n_train}")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[:n_train]), np.sort(order[n_train:n_train + n_test])


# ------------------------------------------------------------------- Cartesian <-> λ


def _alpha_tensormap(alpha_A3: np.ndarray):
    import metatensor

    n = alpha_A3.shape[0]
    xyz = metatensor.Labels.range("xyz_1", 3), metatensor.Labels.range("xyz_2", 3)
    block = metatensor.TensorBlock(
        values=np.ascontiguousarray(alpha_A3, dtype=np.float64).reshape(n, 3, 3, 1),
        samples=metatensor.Labels.range("system", n),
        components=[xyz[0], xyz[1]],
        properties=metatensor.Labels.range("alpha", 1),
    )
    return metatensor.TensorMap(metatensor.Labels.single(), [block])


def alpha_to_spherical(alpha_A3: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split α (n,3,3) into its λ=0 (n,1) and λ=2 (n,5) real spherical components.

    Uses featomic's :func:`~featomic.clebsch_gordan.cartesian_to_spherical` (so the
    components follow featomic's real spherical harmonics, the same basis as the
    λ-SOAP features). The antisymmetric λ=1 part is dropped: α is symmetric.

    >>> a0, a2 = alpha_to_spherical(np.eye(3)[None] * 2.0)
    >>> np.round(a0, 6), bool(np.abs(a2).max() < 1e-12)
    (array([[-3.464102]]), True)
    """
    from featomic.clebsch_gordan import cartesian_to_spherical

    alpha_A3 = np.asarray(alpha_A3, dtype=np.float64)
    sph = cartesian_to_spherical(_alpha_tensormap(alpha_A3), ["xyz_1", "xyz_2"], remove_blocks_threshold=None)
    out = {}
    for key, block in sph.items():
        out[int(key["o3_lambda"])] = block.values[..., 0]
    return out[0], out[2]


def spherical_to_alpha(a0: np.ndarray, a2: np.ndarray) -> np.ndarray:
    """Rebuild the symmetric Cartesian α (..., 3, 3) from λ=0 (..., 1) and λ=2 (..., 5).

    The inverse of :func:`alpha_to_spherical`; the 6→9 linear map is obtained once from
    featomic's :func:`~featomic.clebsch_gordan.spherical_to_cartesian` and cached.

    >>> a = np.array([[[1.0, 0.2, 0.0], [0.2, 2.0, 0.3], [0.0, 0.3, 3.0]]])
    >>> bool(np.allclose(spherical_to_alpha(*alpha_to_spherical(a)), a))
    True
    """
    a0, a2 = np.asarray(a0, dtype=np.float64), np.asarray(a2, dtype=np.float64)
    basis = _spherical_basis()
    coeffs = np.concatenate([a0, a2], axis=-1)
    return (coeffs @ basis).reshape(*coeffs.shape[:-1], 3, 3)


@functools.lru_cache(maxsize=1)
def _spherical_basis() -> np.ndarray:
    """(6, 9): row k is the Cartesian α of unit spherical coefficient k (λ0, then λ2 μ=-2..2)."""
    import metatensor
    from featomic.clebsch_gordan import cartesian_to_spherical, spherical_to_cartesian

    # Template spherical TensorMap (with all three λ) from a generic asymmetric tensor.
    template = cartesian_to_spherical(
        _alpha_tensormap(np.arange(9.0).reshape(1, 3, 3) + 1.0),
        ["xyz_1", "xyz_2"],
        keep_l_in_keys=True,
        remove_blocks_threshold=None,
    )
    rows = []
    for lam, mu in [(0, 0)] + [(2, m) for m in range(5)]:
        blocks = []
        for key, block in template.items():
            values = np.zeros_like(block.values)
            if int(key["o3_lambda"]) == lam:
                values[0, mu, 0] = 1.0
            blocks.append(metatensor.TensorBlock(values, block.samples, block.components, block.properties))
        cart = spherical_to_cartesian(metatensor.TensorMap(template.keys, blocks))
        rows.append(cart.block(0).values.reshape(9))
    return np.array(rows)


# --------------------------------------------------------------------------- metrics


def alpha_metrics(true_A3: np.ndarray, pred_A3: np.ndarray) -> dict[str, float]:
    """R² and RMSE (Å³) of the diagonal (xx, yy, zz) and off-diagonal (xy, yz, zx)
    Cartesian components, each pooled over frames and components (paper Fig. 2B/C).

    R² = 1 − Σ(pred − true)² / Σ(true − mean(true))², the mean over the pooled values.

    >>> t = np.array([np.diag([1.0, 2.0, 3.0]) + 0.5 * (1 - np.eye(3)) * k for k in range(4)])
    >>> m = alpha_metrics(t, t)
    >>> m["r2_diag"], m["r2_offdiag"], m["rmse_diag_A3"]
    (1.0, 1.0, 0.0)
    """
    true_A3 = _check_alpha_array(true_A3, "true_A3")
    pred_A3 = _check_alpha_array(pred_A3, "pred_A3")
    if true_A3.shape != pred_A3.shape:
        raise InputError(f"shapes differ: {true_A3.shape} vs {pred_A3.shape}", field="pred_A3")
    out: dict[str, float] = {}
    for name, idx in (("diag", [0, 1, 2]), ("offdiag", [3, 4, 5])):
        rows = np.array([SIX_COMPONENTS[i][0] for i in idx])
        cols = np.array([SIX_COMPONENTS[i][1] for i in idx])
        t, p = true_A3[:, rows, cols].ravel(), pred_A3[:, rows, cols].ravel()
        ss_res = float(np.sum((p - t) ** 2))
        ss_tot = float(np.sum((t - t.mean()) ** 2))
        out[f"r2_{name}"] = 1.0 - ss_res / ss_tot if ss_tot > 0 else (1.0 if ss_res == 0 else float("-inf"))
        out[f"rmse_{name}_A3"] = math.sqrt(ss_res / t.size)
    return out


def plot_parity(true_A3: np.ndarray, pred_A3: np.ndarray, path: str | os.PathLike[str], *, title: str = "") -> Path:
    """Parity plots of diagonal and off-diagonal components (paper Fig. 2B/C), as PNG."""
    from ramanscreen.tasks.common import new_figure

    metrics = alpha_metrics(true_A3, pred_A3)
    fig = new_figure(figsize=(8, 4), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, name, idx in ((axes[0], "diag", [0, 1, 2]), (axes[1], "offdiag", [3, 4, 5])):
        for i in idx:
            r, c = SIX_COMPONENTS[i]
            ax.scatter(true_A3[:, r, c], pred_A3[:, r, c], s=6, alpha=0.6, label="xyz"[r] + "xyz"[c])
        lo = min(ax.get_xlim()[0], ax.get_ylim()[0])
        hi = max(ax.get_xlim()[1], ax.get_ylim()[1])
        ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
        ax.set_xlabel("reference α (Å³)")
        ax.set_ylabel("predicted α (Å³)")
        ax.set_title(f"{'diagonal' if name == 'diag' else 'off-diagonal'}: "
                     f"R² = {metrics[f'r2_{name}']:.3f}, RMSE = {metrics[f'rmse_{name}_A3']:.3g} Å³", fontsize=9)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path, dpi=120)


# ----------------------------------------------------------------------- input checks


def _check_alpha_array(alpha_A3: Any, field_name: str, file: Any = None) -> np.ndarray:
    arr = np.asarray(alpha_A3, dtype=np.float64)
    if arr.ndim == 2 and arr.shape[1] == 9:
        arr = arr.reshape(-1, 3, 3)
    if arr.ndim != 3 or arr.shape[1:] != (3, 3):
        raise InputError(f"expected shape (n, 3, 3), got {arr.shape}", file=file, field=field_name,
                         fix="pass one 3x3 polarizability per frame")
    require_finite(arr, file=file, field=field_name)
    return arr


def _symmetrize(alpha_A3: np.ndarray, *, file: Any = None) -> np.ndarray:
    """Return (α + αᵀ)/2, warning when a frame's antisymmetric part exceeds 1e-3 of |α|."""
    asym = np.linalg.norm(alpha_A3 - alpha_A3.transpose(0, 2, 1), axis=(1, 2)) / 2
    scale = np.maximum(np.linalg.norm(alpha_A3, axis=(1, 2)), 1e-300)
    bad = np.flatnonzero(asym > 1e-3 * scale)
    if bad.size:
        warnings.warn(
            f"{file + ': ' if file else ''}{bad.size} frame(s) have a non-symmetric α (first: frame {bad[0]}, "
            f"|antisym|/|α| = {asym[bad[0]] / scale[bad[0]]:.2g}); the model fits the symmetric part",
            stacklevel=3,
        )
    return 0.5 * (alpha_A3 + alpha_A3.transpose(0, 2, 1))


def read_training_set(path: str | os.PathLike[str]) -> tuple[list, np.ndarray, str]:
    """Read an extxyz α dataset (``ramanscreen.tasks.reference.read_alpha_dataset``) for training:
    → (frames, alpha_A3 (n,3,3), method).

    Every frame must carry ``info["polarizability"]`` (9 numbers, Å³, row-major), else
    :class:`InputError`. The frames must agree on ``info["alpha_method"]``: one model, one
    level of theory (a missing method reads as ``"unknown"``, with a warning). Cells,
    sizes and compositions may differ between frames: the features are local.
    """
    from ramanscreen.tasks.reference import read_alpha_dataset

    ds = read_alpha_dataset(path)
    methods = sorted(set(ds.methods))
    if len(methods) > 1:
        raise InputError(f"frames mix α methods {methods}", file=path, field="alpha_method",
                         fix="train one model per level of theory (split the dataset by alpha_method)")
    if methods[0] == "unknown":
        warnings.warn(f"{path}: no alpha_method in the frames; the model records method 'unknown'", stacklevel=2)
    alpha = _check_alpha_array(ds.alpha_A3, "polarizability", file=path)
    return list(ds.frames), alpha, methods[0]


def _check_frames(frames: Any, field_name: str = "frames") -> list:
    from ase import Atoms

    frames = [frames] if isinstance(frames, Atoms) else list(frames)
    if not frames:
        raise InputError("no frames given", field=field_name)
    for i, f in enumerate(frames):
        if not isinstance(f, Atoms):
            raise InputError(f"item {i} is {type(f).__name__}, not ase.Atoms", field=field_name)
        if len(f) == 0:
            raise InputError(f"frame {i} has no atoms", field=field_name)
        if not np.all(np.isfinite(f.positions)):
            raise InputError(f"frame {i} has non-finite positions", field=field_name)
        if f.pbc.any() and abs(f.cell.volume) < 1e-8 and f.pbc.all():
            raise InputError(f"frame {i} is periodic with a zero-volume cell", field=field_name,
                             fix="set the cell or pbc=False")
    return frames


# ------------------------------------------------------------------------ featurizer


class _Featurizer:
    """Summed λ-SOAP features (plain path) and dense density coefficients (fast path)."""

    def __init__(self, hypers: SOAPHypers, elements: Sequence[int]) -> None:
        import featomic
        from featomic.clebsch_gordan import EquivariantPowerSpectrum

        self.hypers = hypers
        self.elements = [int(z) for z in sorted(elements)]
        self.n_radial = hypers.max_radial + 1
        self.calculator = featomic.SphericalExpansion(**hypers.to_featomic())
        self.eps = EquivariantPowerSpectrum(self.calculator, neighbor_types=self.elements)

    # -- metadata of the features: (center_type, l_1, l_2, neighbor_1_type, n_1, neighbor_2_type, n_2)
    @functools.cached_property
    def feature_labels(self) -> dict[int, np.ndarray]:
        """λ → (p, 7) int array of feature labels, in feature-column order."""
        from ase import Atoms

        # A small probe structure with every element supplies the per-block properties,
        # which depend only on hypers and neighbor_types.
        probe = Atoms(numbers=self.elements, positions=np.arange(3 * len(self.elements)).reshape(-1, 3) * 0.7)
        meta = self.eps.compute_metadata(probe, selected_keys=self._selected_keys(), neighbors_to_properties=True)
        out = {}
        for lam in (0, 2):
            props = None
            for key, block in meta.items():
                if int(key["o3_lambda"]) == lam:
                    names = block.properties.names
                    assert names == ["l_1", "l_2", "neighbor_1_type", "n_1", "neighbor_2_type", "n_2"], names
                    props = np.asarray(block.properties.values)
                    break
            assert props is not None
            out[lam] = np.concatenate(
                [np.column_stack([np.full(len(props), z), props]) for z in self.elements], axis=0
            )
        return out

    def _selected_keys(self):
        import metatensor

        return metatensor.Labels(["o3_lambda", "o3_sigma"], np.array([[0, 1], [2, 1]], dtype=np.int32))

    def features(self, frames: Sequence) -> tuple[np.ndarray, np.ndarray]:
        """Plain path: X0 (n, p0) and X2 (n, 5, p2), the λ-SOAP summed over atoms."""
        ps = self.eps.compute(list(frames), selected_keys=self._selected_keys(), neighbors_to_properties=True)
        n = len(frames)
        X: dict[int, np.ndarray] = {}
        labels = self.feature_labels
        for lam in (0, 2):
            n_per = len(labels[lam]) // len(self.elements)
            X[lam] = np.zeros((n, 2 * lam + 1, len(self.elements) * n_per))
        for key, block in ps.items():
            lam, ct = int(key["o3_lambda"]), int(key["center_type"])
            n_per = X[lam].shape[2] // len(self.elements)
            if not np.array_equal(np.asarray(block.properties.values), labels[lam][:n_per, 1:]):
                raise RuntimeError(f"unexpected λ-SOAP properties for λ={lam}, center type {ct}")
            c = self.elements.index(ct)
            system = np.asarray(block.samples.column("system"))
            np.add.at(X[lam][:, :, c * n_per:(c + 1) * n_per], system, block.values)
        return X[0][:, 0, :], X[2]

    def density(self, frames: Sequence) -> dict[tuple[int, int], np.ndarray]:
        """Fast path input: {(center_type, l): ρ (n_frames, 2l+1, n_max, K)}, the density
        coefficients of the atoms of each center type, padded with zeros to the largest
        count n_max of that type in any frame; K = n_elements × n_radial, ordered
        (neighbor type, n)."""
        rho = self.calculator.compute(list(frames))
        n_el, n_rad, n = len(self.elements), self.n_radial, len(frames)
        # Per atom (global index offset[system] + atom): its slot among its frame's atoms
        # of the same type.
        sizes = np.array([len(f) for f in frames])
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        all_z = np.concatenate([np.asarray(f.numbers) for f in frames])
        system = np.repeat(np.arange(n), sizes)
        slot = np.empty(len(all_z), dtype=np.int64)
        n_max = {}
        for ct in self.elements:
            mask = all_z == ct
            running = np.cumsum(mask)
            before = np.concatenate([[0], running])[offsets[:-1]]  # count before each frame
            slot[mask] = running[mask] - 1 - before[system[mask]]
            n_max[ct] = int(np.max(np.bincount(system[mask], minlength=n))) if mask.any() else 0
        out: dict[tuple[int, int], np.ndarray] = {}
        for key, block in rho.items():
            l, ct, nt = int(key["o3_lambda"]), int(key["center_type"]), int(key["neighbor_type"])
            if (ct, l) not in out:
                out[(ct, l)] = np.zeros((n, 2 * l + 1, n_max[ct], n_el * n_rad))
            samples = np.asarray(block.samples.values)
            j = self.elements.index(nt)
            out[(ct, l)][samples[:, 0], :, slot[offsets[samples[:, 0]] + samples[:, 1]], j * n_rad:(j + 1) * n_rad] = (
                block.values
            )
        return out


@functools.lru_cache(maxsize=4)
def _cg_dense(max_l: int) -> dict[tuple[int, int, int], np.ndarray]:
    """featomic's real Clebsch-Gordan coefficients C[m1, m2, μ] keyed by (l1, l2, λ)."""
    from featomic.clebsch_gordan import calculate_cg_coefficients

    cg = calculate_cg_coefficients(2 * max_l, "python-dense", "numpy", np.float64, "cpu")
    out = {}
    for key, block in cg.items():
        l1, l2, lam = int(key["l1"]), int(key["l2"]), int(key["lambda"])
        out[(l1, l2, lam)] = np.ascontiguousarray(block.values[0, :, :, :, 0])
    return out


# ------------------------------------------------------------------------------ ridge


@dataclass(frozen=True)
class RidgeSettings:
    """How the ridge regressions are fitted.

    ``reg_grid`` are regularisations relative to the mean diagonal of the Gram matrix;
    the value with the lowest cross-validated error is chosen per λ: ``n_folds = 0``
    (default) leaves one structure out at a time, exactly and in closed form; ``n_folds`` ≥ 2
    is k-fold over structures (5-fold was the default before format 2; leave-one-out picks
    the regularisation from fits on n − 1 frames instead of 0.8 n, measured 1–2 % lower test
    RMSE on λ=0, docs/polarizability.md). ``feature_scaling`` is how the features are normalised
    before the ridge: ``"global"`` (default) divides each λ block by one number, its RMS,
    so the linear kernel stays the λ-SOAP kernel and the relative regularisation means the
    same for every dataset; ``"column"`` divides every feature by its own RMS (the behaviour
    before format 2, kept for comparison: it inflates the many small, noisy high-n/high-l
    features and was measured 1.5–2× worse in test RMSE, docs/polarizability.md).

    >>> RidgeSettings().feature_scaling
    'global'
    >>> RidgeSettings(feature_scaling="per-column")
    Traceback (most recent call last):
    ...
    ramanscreen.tasks.common.InputError: feature_scaling: unknown scaling 'per-column' (fix: use 'global' or 'column')
    """

    n_folds: int = setting(0, doc="cross-validation folds over training structures (0: leave one out)", ge=0)
    reg_grid: tuple[float, ...] = setting(tuple(float(x) for x in np.logspace(-9, 1, 21)),
                                          doc="regularisations tried, relative to the mean Gram diagonal")
    feature_scaling: str = setting("global", doc="feature normalisation per λ: global (one RMS per λ block) or "
                                   "column (one RMS per feature; the pre-format-2 behaviour)",
                                   choices=("global", "column"))

    def __post_init__(self) -> None:
        if self.feature_scaling not in ("global", "column"):
            raise InputError(f"unknown scaling {self.feature_scaling!r}", field="feature_scaling",
                             fix="use 'global' or 'column'")
        if int(self.n_folds) != self.n_folds or self.n_folds < 0 or self.n_folds == 1:
            raise InputError(f"n_folds must be 0 (leave one out) or an integer ≥ 2, got {self.n_folds!r}",
                             field="n_folds")
        if not self.reg_grid or min(self.reg_grid) <= 0:
            raise InputError("reg_grid must hold positive numbers", field="reg_grid", fix="e.g. (1e-6, 1e-3, 1)")

    def to_dict(self) -> dict[str, Any]:
        return {"n_folds": int(self.n_folds), "reg_grid": [float(x) for x in self.reg_grid],
                "feature_scaling": self.feature_scaling}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RidgeSettings:
        """The settings a model's ``meta["ridge"]`` records (format 1 files: column scaling)."""
        return cls(n_folds=int(data["n_folds"]), reg_grid=tuple(float(x) for x in data["reg_grid"]),
                   feature_scaling=str(data.get("feature_scaling", "column")))


def _composition(frames: Sequence, elements: Sequence[int]) -> np.ndarray:
    """(n, S) atom counts per element of each frame, columns in ``elements`` order.

    >>> from ase import Atoms
    >>> _composition([Atoms("NaCl2"), Atoms("Na2")], [11, 17]).tolist()
    [[1.0, 2.0], [2.0, 0.0]]
    """
    numbers = [np.asarray(f.numbers) for f in frames]
    return np.array([[np.count_nonzero(z == el) for el in elements] for z in numbers], dtype=np.float64)


def _unpenalised_basis(C: np.ndarray) -> np.ndarray:
    """Orthonormal basis (rows, r) of the column span of C (rows, S): the directions the ridge
    leaves unpenalised (the per-species intercepts)."""
    u, s, _ = np.linalg.svd(C, full_matrices=False)
    keep = s > 1e-10 * max(float(s.max(initial=0.0)), 1e-300)
    return u[:, keep]


def _species_intercepts(C: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Per-species intercepts b (S,) with C b ≈ r in least squares.

    When the compositions do not tell the species apart (e.g. every frame has the same
    stoichiometry), the unidentified part is resolved towards one common value per atom:
    b = b̄ + δ with b̄ the per-atom mean and δ the minimum-norm least-squares fit of the rest.

    >>> C = np.array([[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]])   # one stoichiometry
    >>> _species_intercepts(C, np.array([2.0, 2.0, 2.0])).tolist()
    [2.0, 2.0]
    >>> C = np.array([[1.0, 0.0], [0.5, 0.5], [0.25, 0.75]])  # compositions differ
    >>> _species_intercepts(C, C @ np.array([1.0, -3.0])).round(12).tolist()
    [1.0, -3.0]
    """
    rows = C.sum(axis=1)
    base = float(np.sum(r * rows) / max(float(np.sum(rows**2)), 1e-300))
    delta = np.linalg.lstsq(C, r - base * rows, rcond=None)[0]
    return base + delta


def _solve_dual(Ktt: np.ndarray, y: np.ndarray, regs: np.ndarray) -> np.ndarray:
    """Dual ridge coefficients (n_tr, len(regs)) for each regularisation."""
    evals, evecs = np.linalg.eigh(Ktt)
    evals = np.clip(evals, 0.0, None)
    proj = evecs.T @ y
    return evecs @ (proj[:, None] / (evals[:, None] + regs[None, :]))


class _LambdaProblem:
    """One λ channel's ridge on per-atom features: rows are (structure, μ) pairs sharing one
    weight vector, the Gram matrix is built once, and the per-species intercepts of λ=0
    (composition columns C, unpenalised) are projected out of features and targets.

    For training rows t with unpenalised basis Q (of C_t) and P = I − QQᵀ, the dual ridge is
    a = (P K_tt P + r I)⁻¹ P y_t; evaluation rows e get K_et P a + C_e b, with b the
    per-species least-squares intercepts of the residual y_t − K_tt P a.
    """

    def __init__(self, Xa: np.ndarray, ya: np.ndarray, C: np.ndarray | None, settings: RidgeSettings) -> None:
        n, self.n_mu, p = Xa.shape
        self.n = n
        # Normalisation shared by every μ (keeps the λ=2 model equivariant).
        if settings.feature_scaling == "column":
            scale = np.sqrt(np.mean(Xa**2, axis=(0, 1)))
            scale[scale == 0] = 1.0
        else:
            rms = float(np.sqrt(np.mean(Xa**2)))
            scale = np.full(p, rms if rms > 0 else 1.0)
        self.scale = scale
        self.Xs = (Xa / scale).reshape(n * self.n_mu, p)
        self.y = ya.reshape(n * self.n_mu)
        self.C = C  # (n, S) per-atom composition (fractions), λ=0 only
        self.K = self.Xs @ self.Xs.T
        self.reg_unit = max(float(np.trace(self.K)) / self.K.shape[0], 1e-300)
        self.regs = np.asarray(settings.reg_grid, dtype=np.float64) * self.reg_unit

    def rows(self, structures: np.ndarray) -> np.ndarray:
        return (np.asarray(structures)[:, None] * self.n_mu + np.arange(self.n_mu)[None, :]).ravel()

    def solve(self, train: np.ndarray, regs: np.ndarray, evaluate: np.ndarray | None = None):
        """Dual coefficients (P a) per reg, per-species intercepts (len(regs), S) or None, and the
        predictions (rows of ``evaluate``, len(regs)) when asked."""
        tr = self.rows(train)
        Ktt = self.K[np.ix_(tr, tr)]
        y = self.y[tr]
        if self.C is not None:
            Q = _unpenalised_basis(self.C[train])  # structures' rows (λ=0: one row each)
            Pm = np.eye(len(tr)) - Q @ Q.T
            coef = Pm @ _solve_dual(Pm @ Ktt @ Pm, Pm @ y, regs)
            resid = y[:, None] - Ktt @ coef
            b = np.array([_species_intercepts(self.C[train], resid[:, k]) for k in range(len(regs))])
        else:
            coef = _solve_dual(Ktt, y, regs)
            b = None
        pred = None
        if evaluate is not None:
            ev = self.rows(evaluate)
            pred = self.K[np.ix_(ev, tr)] @ coef
            if b is not None and self.C is not None:
                pred = pred + self.C[evaluate] @ b.T
        return coef, b, pred

    def cv_sq_err(self, folds: Sequence[np.ndarray], *, closed_form: bool = True) -> np.ndarray:
        """Summed squared CV error per reg (len(regs),) over the folds (structure indices)."""
        return self.cv_errors(folds, closed_form=closed_form).sum(axis=1)

    def cv_errors(self, folds: Sequence[np.ndarray], *, closed_form: bool = True) -> np.ndarray:
        """Squared CV error of every structure (summed over μ) per reg: (len(regs), n).

        Leave-one-structure-out (every fold one structure) is computed in closed form from one
        eigendecomposition (:meth:`loo_errors`) unless ``closed_form`` is False."""
        if closed_form and len(folds) == self.n and all(len(f) == 1 for f in folds):
            return self.loo_errors()
        err = np.zeros((len(self.regs), self.n))
        for k, val in enumerate(folds):
            train = np.concatenate([f for j, f in enumerate(folds) if j != k])
            _, _, pred = self.solve(train, self.regs, val)
            sq = (pred - self.y[self.rows(val)][:, None]) ** 2  # (rows of val, regs)
            err[:, val] = sq.reshape(len(val), self.n_mu, -1).sum(axis=1).T
        return err

    def loo_errors(self) -> np.ndarray:
        """Exact leave-one-structure-out squared error per reg and structure (len(regs), n).

        The fit is a linear smoother ŷ = H y. With Z an orthonormal basis of the complement of
        the unpenalised directions Q and (d, U) the eigenpairs of ZᵀKZ, V = ZU gives
        I − H = V diag(r/(d+r)) Vᵀ, so the residual of structure g left out is
        e_g = [(I − H)_gg]⁻¹ [(I − H) y]_g, with (I − H)_gg its (2λ+1)² block: one
        eigendecomposition for every structure and regularisation, and no cancellation
        (1 − H is formed from r/(d+r), not as one minus a number close to one)."""
        n, n_mu, y = self.n, self.n_mu, self.y
        if self.C is not None:
            Q = _unpenalised_basis(self.C)
            Z = np.linalg.svd(Q, full_matrices=True)[0][:, Q.shape[1]:]
            d, U = np.linalg.eigh(Z.T @ self.K @ Z)
            V = Z @ U
        else:
            d, V = np.linalg.eigh(self.K)
        d = np.clip(d, 0.0, None)
        g = self.regs[:, None] / (d[None, :] + self.regs[:, None])  # (regs, k): 1 − d/(d+r)
        resid = ((g * (V.T @ y)[None, :]) @ V.T).reshape(len(self.regs), n, n_mu)  # (I − H) y
        Vg = V.reshape(n, n_mu, -1)
        M = np.einsum("gak,rk,gbk->rgab", Vg, g, Vg)  # (regs, n, μ, μ): blocks of I − H
        loo = np.linalg.solve(M, resid[..., None])[..., 0]
        return np.sum(loo**2, axis=2)


def _cv_folds(n: int, n_folds: int, seed: int) -> list[np.ndarray]:
    """The CV folds over ``n`` training structures (the same for both λ and every hypers set);
    ``n_folds = 0``: leave one structure out."""
    if int(n_folds) == 0:
        return [np.array([i]) for i in range(n)] if n >= 3 else []
    k = min(int(n_folds), n)
    return np.array_split(np.random.default_rng(seed).permutation(n), k) if k >= 2 else []


@dataclass
class _LambdaFit:
    weights: np.ndarray  # (1 + m, p) in raw summed-feature units
    intercept: np.ndarray  # (1 + m, S) per species (λ=0), zeros for λ=2
    reg: float  # relative to the mean Gram diagonal
    cv_rmse_per_atom: float
    cv_sq_err: np.ndarray  # per reg_grid value, summed over structures and μ (per-atom units²)


def _fit_lambda(
    Xa: np.ndarray, ya: np.ndarray, *, lam: int, settings: RidgeSettings, boot: list[np.ndarray], seed: int,
    composition: np.ndarray | None = None,
) -> tuple[_LambdaFit, np.ndarray]:
    """Fit one λ channel on per-atom features Xa (n, 2λ+1, p) and targets ya (n, 2λ+1).

    Rows of the regression are (structure, μ): the same weights serve every μ. λ=0 gets
    unpenalised per-species intercepts (``composition``: (n, S) atom fractions); λ=2 none (a
    constant λ=2 offset would not rotate). Returns the fit and the out-of-bag predictions of
    each committee member (m, n, 2λ+1) (NaN where a structure was in the member's sample).
    """
    n, n_mu, p = Xa.shape
    S = composition.shape[1] if composition is not None else 1
    prob = _LambdaProblem(Xa, ya, composition if lam == 0 else None, settings)
    folds = _cv_folds(n, settings.n_folds, seed)
    if folds:
        sq_err = prob.cv_sq_err(folds)
        best = int(np.argmin(sq_err))
        cv_rmse = float(np.sqrt(sq_err[best] / (n * n_mu)))
    else:
        sq_err = np.full(len(prob.regs), np.nan)
        best, cv_rmse = len(prob.regs) // 2, float("nan")
    reg = prob.regs[best : best + 1]

    weights, intercepts = [], []
    oob = np.full((len(boot), n, n_mu), np.nan)
    for k, sample in enumerate([np.arange(n), *boot]):
        coef, b, _ = prob.solve(sample, reg)
        w_scaled = prob.Xs[prob.rows(sample)].T @ coef[:, 0]
        weights.append(w_scaled / prob.scale)
        intercepts.append(b[0] if b is not None else np.zeros(S))
        if k > 0:
            out_of_bag = np.setdiff1d(np.arange(n), sample)
            if out_of_bag.size:
                pred = prob.Xs[prob.rows(out_of_bag)] @ w_scaled
                if b is not None and composition is not None:
                    pred = pred + composition[out_of_bag] @ b[0]
                oob[k - 1, out_of_bag] = pred.reshape(-1, n_mu)
    fit = _LambdaFit(np.array(weights), np.array(intercepts), float(settings.reg_grid[best]), cv_rmse, sq_err)
    return fit, oob


# ---------------------------------------------------------------------- hyper search


@dataclass(frozen=True)
class HyperSearch:
    """The grid :func:`search_hypers` walks: values tried per λ-SOAP hyperparameter, and the
    order in which the axes are visited (coordinate descent from the starting hypers).

    >>> HyperSearch().max_radial
    (4, 6, 8)
    """

    cutoff_A: tuple[float, ...] = setting((4.0, 5.0, 6.0), doc="cutoff radii tried", unit="Å")
    max_radial: tuple[int, ...] = setting((4, 6, 8), doc="max_radial values tried")
    max_angular: tuple[int, ...] = setting((3, 4, 6), doc="max_angular values tried")
    width_A: tuple[float, ...] = setting((0.3, 0.4, 0.5), doc="Gaussian widths tried", unit="Å")
    order: tuple[str, ...] = setting(("max_radial", "cutoff_A", "width_A", "max_angular"),
                                     doc="the order the axes are searched in")

    def __post_init__(self) -> None:
        axes = ("cutoff_A", "max_radial", "max_angular", "width_A")
        if sorted(self.order) != sorted(axes):
            raise InputError(f"order {list(self.order)} must list each of {list(axes)} once", field="order")
        for name in axes:
            values = getattr(self, name)
            if not values:
                raise InputError("no values to try", field=name, fix="give at least one value")
            for v in values:  # each value must make valid hypers
                SOAPHypers(**{name: v})


def search_hypers(
    frames: Sequence,
    alpha_A3: np.ndarray,
    *,
    start: SOAPHypers | None = None,
    budget_s: float,
    ridge: RidgeSettings | None = None,
    seed: int = 0,
    search: HyperSearch | None = None,
) -> dict[str, Any]:
    """Choose the λ-SOAP hyperparameters by k-fold cross-validation over ``frames``, within
    ``budget_s`` seconds of wall time.

    Coordinate descent over the grid of ``search``: from ``start``, each axis in turn is set
    to the grid value with the lowest CV error (the others held), and the passes repeat until
    one changes nothing. Each candidate featurises the frames once and scores both λ with the
    same folds (``ridge.n_folds``, seeded by ``seed``), each λ at its own best regularisation;
    the score is the CV RMSE of the whole tensor per atom, √((SSE_λ0 + SSE_λ2)/n) (the λ
    components are orthonormal, so this is the Frobenius error of α). A candidate replaces the
    current choice only when its mean per-structure CV gain exceeds the standard error of that
    gain (paired over the training structures), so noise in the CV score does not move the
    hypers. ``start`` is always scored; a new candidate is started only while the time spent
    plus the slowest candidate so far fits the budget.

    Returns the record stored as the model's ``meta["hyper_search"]``: ``budget_s``,
    ``elapsed_s``, ``complete`` (the descent converged inside the budget), ``start``,
    ``chosen`` (SOAPHypers fields), ``n_folds`` and one entry per candidate (``hypers``,
    ``cv_rmse_per_atom_A3``, per-λ CV RMSE and regularisation, ``gain_over_se``, ``accepted``,
    ``time_s``), plus the private
    ``_chosen_features`` that :meth:`AlphaModel.fit` reuses.

    >>> from ase.build import bulk
    >>> from ramanscreen.tasks.reference import get_backend
    >>> rng = np.random.default_rng(0)
    >>> frames = [bulk("NaCl", "rocksalt", a=5.64, cubic=True) for _ in range(8)]
    >>> for f in frames:
    ...     f.positions += rng.normal(0, 0.15, f.positions.shape)
    >>> alpha = np.array([get_backend("dipole").compute(f).alpha_A3 for f in frames])
    >>> grid = HyperSearch(cutoff_A=(3.0, 4.0), max_radial=(1, 2), max_angular=(2,), width_A=(0.5,))
    >>> rec = search_hypers(frames, alpha, start=SOAPHypers(cutoff_A=3.0, max_radial=1, max_angular=2, width_A=0.5),
    ...                     budget_s=3600, search=grid)
    >>> rec["complete"], 3 <= len(rec["candidates"]) <= 4
    (True, True)
    >>> [c for c in rec["candidates"] if c["accepted"]][-1]["hypers"] == rec["chosen"]
    True
    """
    import time

    frames = _check_frames(frames)
    alpha_A3 = _symmetrize(_check_alpha_array(alpha_A3, "alpha_A3"))
    if len(alpha_A3) != len(frames):
        raise InputError(f"{len(frames)} frames but {len(alpha_A3)} α tensors", field="alpha_A3")
    if not budget_s > 0:
        raise InputError(f"budget_s must be > 0 s, got {budget_s!r}", field="search_budget_s")
    start = start or SOAPHypers()
    ridge = ridge or RidgeSettings()
    search = search or HyperSearch()
    t0 = time.perf_counter()
    n = len(frames)
    folds = _cv_folds(n, ridge.n_folds, seed)
    if not folds:
        raise InputError(f"{n} training frames are too few for cross-validation (n_folds {ridge.n_folds})",
                         field="search_budget_s", fix="use more frames or search_budget_s = 0")
    elements = sorted({int(z) for f in frames for z in f.numbers})
    n_atoms = np.array([len(f) for f in frames], dtype=np.float64)
    fraction = _composition(frames, elements) / n_atoms[:, None]
    a0, a2 = alpha_to_spherical(alpha_A3)
    candidates: list[dict[str, Any]] = []
    scores: dict[SOAPHypers, float] = {}
    kept: dict[str, Any] = {}

    def evaluate(h: SOAPHypers) -> float:
        t = time.perf_counter()
        featurizer = _Featurizer(h, elements)
        X0, X2 = _features_chunked(featurizer, frames)
        errors, per_lam, regs = np.zeros(n), {}, {}
        for lam, X, y in ((0, X0[:, None, :], a0), (2, X2, a2)):
            prob = _LambdaProblem(X / n_atoms[:, None, None], y / n_atoms[:, None], fraction if lam == 0 else None,
                                  ridge)
            err = prob.cv_errors(folds)
            best = int(np.argmin(err.sum(axis=1)))
            errors += err[best]
            per_lam[str(lam)] = float(np.sqrt(err[best].sum() / (n * (2 * lam + 1))))
            regs[str(lam)] = float(ridge.reg_grid[best])
        score = float(np.sqrt(errors.sum() / n))
        # Adopt a candidate only when its gain over the current choice is larger than the gain's
        # standard error (paired over the training structures): a CV score a hair lower is noise.
        gain_se = float("inf")
        if kept:
            d = kept["errors"] - errors
            se = float(d.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0
            gain_se = float(d.mean() / se) if se > 0 else (float("inf") if d.mean() > 0 else 0.0)
        accepted = gain_se > 1.0
        candidates.append({"hypers": dataclasses.asdict(h), "cv_rmse_per_atom_A3": score,
                           "cv_rmse_lambda_per_atom_A3": per_lam, "reg_relative": regs,
                           "gain_over_se": None if not math.isfinite(gain_se) else round(gain_se, 3),
                           "accepted": accepted, "time_s": round(time.perf_counter() - t, 3)})
        scores[h] = score
        if accepted:
            kept.update(score=score, errors=errors, hypers=h, features=(featurizer, (X0, X2)))
        return score

    evaluate(start)
    out_of_time = False
    changed = True
    while changed and not out_of_time:
        changed = False
        for axis in search.order:
            here = kept["hypers"]
            for value in getattr(search, axis):
                cand = dataclasses.replace(here, **{axis: value})
                if cand in scores:
                    continue
                slowest = max(c["time_s"] for c in candidates)
                if time.perf_counter() - t0 + slowest > budget_s:
                    out_of_time = True
                    break
                evaluate(cand)
            if kept["hypers"] != here:
                changed = True
            if out_of_time:
                break
    return {
        "budget_s": float(budget_s),
        "elapsed_s": round(time.perf_counter() - t0, 3),
        "complete": not out_of_time,
        "n_folds": len(folds),
        "start": dataclasses.asdict(start),
        "chosen": dataclasses.asdict(kept["hypers"]),
        "cv_rmse_per_atom_A3": kept["score"],
        "candidates": candidates,
        "_chosen_features": kept["features"],
    }

# ------------------------------------------------------------------------------ model


@dataclass
class AlphaModel:
    """A fitted λ-SOAP ridge model of α, with its bootstrap committee.

    Build it with :meth:`fit` or :meth:`load`. ``weights[λ]`` has shape (1 + m, p_λ): row
    0 is the model fitted on all training frames, rows 1..m the committee members, in
    units of Å³ per unit of summed λ-SOAP feature. ``intercept_A3`` (1 + m, S) holds the
    unpenalised per-species intercepts b_s of the λ=0 component (featomic's convention,
    α₀ = −tr α/√3; Å³ per atom of each element, columns in ``elements`` order): the λ=0
    prediction adds Σ_s b_s N_s, so the model stays extensive and a composition change moves
    α by its species' terms. ``meta["intercept_per_species_A3"]`` states them as isotropic α
    per atom, −b_s/√3.
    """

    hypers: SOAPHypers
    elements: list[int]
    weights: dict[int, np.ndarray]
    intercept_A3: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    committee_scale: float = 1.0

    #: Per-process caches kept in ``__dict__``; never pickled (featomic calculators hold C handles).
    _CACHES = ("_featurizer", "_contracted_weights", "_size_warned", "_stacked_cache")

    def __getstate__(self) -> dict[str, Any]:
        """Pickle only the fitted parameters, so the model travels to Dask workers."""
        return {k: v for k, v in self.__dict__.items() if k not in self._CACHES}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(
        cls,
        frames: Sequence,
        alpha_A3: np.ndarray,
        *,
        hypers: SOAPHypers | None = None,
        n_committee: int = ModelSettings.committee,
        seed: int = 0,
        method: str = "unknown",
        ridge: RidgeSettings | None = None,
        search_budget_s: float = ModelSettings.search_budget_s,
        search: HyperSearch | None = None,
    ) -> AlphaModel:
        """Fit the model on ``frames`` (list of ase.Atoms) and their α (n,3,3), Å³.

        ``n_committee`` bootstrap members (0 for none) share the cross-validated
        regularisation of the full model; ``seed`` fixes folds and resamples, so a fit is
        reproducible bit for bit. ``method`` names the level of theory of α.

        With ``search_budget_s`` > 0 the λ-SOAP hyperparameters are first chosen by k-fold
        cross-validation over the training frames (:func:`search_hypers`, starting from
        ``hypers``, over the grid of ``search``), within that wall-time budget; the search's
        candidates and CV scores go to ``meta["hyper_search"]``. 0 keeps ``hypers`` as given.
        """
        frames = _check_frames(frames)
        alpha_A3 = _symmetrize(_check_alpha_array(alpha_A3, "alpha_A3"))
        if len(alpha_A3) != len(frames):
            raise InputError(f"{len(frames)} frames but {len(alpha_A3)} α tensors", field="alpha_A3")
        if len(frames) < 2:
            raise InputError("need at least 2 training frames", field="frames", fix="add reference frames")
        if int(n_committee) != n_committee or n_committee < 0:
            raise InputError(f"n_committee must be an integer ≥ 0, got {n_committee!r}", field="n_committee")
        hypers = hypers or SOAPHypers()
        ridge = ridge or RidgeSettings()
        elements = sorted({int(z) for f in frames for z in f.numbers})
        record = None
        if search_budget_s < 0 or not math.isfinite(search_budget_s):
            raise InputError(f"search_budget_s must be ≥ 0 s, got {search_budget_s!r}", field="search_budget_s",
                             fix="use 0 (fixed hypers) or a budget in seconds, e.g. 120")
        if search_budget_s > 0:
            record = search_hypers(frames, alpha_A3, start=hypers, budget_s=float(search_budget_s), ridge=ridge,
                                   seed=int(seed), search=search)
            hypers = SOAPHypers.from_dict(record["chosen"])
            featurizer, (X0, X2) = record.pop("_chosen_features")
        else:
            featurizer = _Featurizer(hypers, elements)
            X0, X2 = _features_chunked(featurizer, frames)
        model = cls._fit_features(
            X0, X2, alpha_A3, frames=frames, hypers=hypers, elements=elements, n_committee=int(n_committee),
            seed=int(seed), method=method, ridge=ridge, featurizer=featurizer,
        )
        if record is not None:
            model.meta["hyper_search"] = record
        return model

    @classmethod
    def _fit_features(
        cls, X0, X2, alpha_A3, *, frames, hypers, elements, n_committee, seed, method, ridge, featurizer=None,
    ) -> AlphaModel:
        import featomic

        n_atoms = np.array([len(f) for f in frames], dtype=np.float64)
        fraction = _composition(frames, elements) / n_atoms[:, None]
        a0, a2 = alpha_to_spherical(alpha_A3)
        rng = np.random.default_rng(seed)
        n = len(frames)
        boot = [np.sort(rng.integers(0, n, n)) for _ in range(n_committee)]
        fits, oobs, targets = {}, {}, {}
        for lam, X, y in ((0, X0[:, None, :], a0), (2, X2, a2)):
            fits[lam], oobs[lam] = _fit_lambda(
                X / n_atoms[:, None, None], y / n_atoms[:, None], lam=lam, settings=ridge, boot=boot, seed=seed,
                composition=fraction,
            )
            targets[lam] = y / n_atoms[:, None]
        scale = _calibrate_committee(oobs, targets) if n_committee >= 2 else 1.0
        z_counts: dict[int, int] = {}
        for f in frames:
            for z in f.numbers:
                z_counts[int(z)] = z_counts.get(int(z), 0) + 1
        meta = {
            "alpha_method": str(method),
            "n_train": n,
            "n_committee": n_committee,
            "seed": seed,
            "n_atoms_range": [int(n_atoms.min()), int(n_atoms.max())],
            "element_counts": {str(k): v for k, v in sorted(z_counts.items())},
            "ridge": ridge.to_dict(),
            "reg_relative": {str(lam): fits[lam].reg for lam in fits},
            "cv_rmse_per_atom_A3": {str(lam): fits[lam].cv_rmse_per_atom for lam in fits},
            # the full model's λ=0 intercepts as isotropic α (tr α / 3) per atom of each element, Å³
            "intercept_per_species_A3": {str(z): float(-b / math.sqrt(3.0))
                                         for z, b in zip(elements, fits[0].intercept[0], strict=True)},
            "featomic_version": featomic.__version__,
        }
        model = cls(
            hypers=hypers,
            elements=list(elements),
            weights={lam: fits[lam].weights for lam in fits},
            intercept_A3=fits[0].intercept,
            meta=meta,
            committee_scale=float(scale),
        )
        if featurizer is not None:
            model.__dict__["_featurizer"] = featurizer
        return model

    def refit(self, frames: Sequence, alpha_A3: np.ndarray) -> AlphaModel:
        """Fit a new model on new data with this model's hyperparameters and settings."""
        ridge = RidgeSettings.from_dict(self.meta["ridge"])
        return AlphaModel.fit(frames, alpha_A3, hypers=self.hypers, n_committee=int(self.meta["n_committee"]),
                              seed=int(self.meta["seed"]), method=self.meta.get("alpha_method", "unknown"), ridge=ridge)

    # --------------------------------------------------------------- prediction
    @property
    def n_committee(self) -> int:
        return self.weights[0].shape[0] - 1

    @property
    def featurizer(self) -> _Featurizer:
        if "_featurizer" not in self.__dict__:
            self.__dict__["_featurizer"] = _Featurizer(self.hypers, self.elements)
        return self.__dict__["_featurizer"]

    def check_frames(self, frames: Sequence, *, file: Any = None) -> list:
        """Validate frames for prediction: unseen elements are an error; sizes outside
        the training range give a warning (the model is extensive, so a supercell of a
        training cell is fine, but other sizes are extrapolation in composition/shape)."""
        frames = _check_frames(frames)
        known = set(self.elements)
        seen = {int(z) for f in frames for z in f.numbers}
        unseen = seen - known
        if unseen:
            from ase.data import chemical_symbols

            names = ", ".join(chemical_symbols[z] for z in sorted(unseen))
            raise InputError(
                f"element(s) {names} not in the training set "
                f"({', '.join(chemical_symbols[z] for z in self.elements)})",
                file=file, field="elements", fix="add reference frames containing them and refit the model",
            )
        lo, hi = self.meta.get("n_atoms_range", [0, 10**9])
        sizes = np.array([len(f) for f in frames])
        if ((sizes < lo) | (sizes > hi)).any() and not self.__dict__.get("_size_warned"):
            self.__dict__["_size_warned"] = True
            warnings.warn(
                f"{file + ': ' if file else ''}frames with {sizes.min()}–{sizes.max()} atoms, the model was "
                f"trained on {lo}–{hi}; α is predicted as an extensive sum of atomic terms",
                stacklevel=3,
            )
        return frames

    def _spherical_fast(self, frames: Sequence, models: slice = slice(None)) -> tuple[np.ndarray, np.ndarray]:
        """(M, n, 1) and (M, n, 5) for the models ``models`` (0 = full fit, 1.. = committee),
        with the weights contracted into the density expansion:

        ŷ_μ(s) = Σ_{l₁l₂} Σ_{m₁m₂} C^{l₁l₂λ}_{m₁m₂μ} Σ_{i∈s} Σ_{k₁k₂} ρ_{i,l₁m₁k₁} W_{k₁k₂} ρ_{i,l₂m₂k₂}

        evaluated per (center type, l₁, l₂) as one GEMM for W·ρ, one batched GEMM over
        frames for the sum over atoms and radial/species channels, and one small GEMM
        with the Clebsch-Gordan coefficients.
        """
        from threadpoolctl import threadpool_limits

        groups = self._contracted_weights
        cg = _cg_dense(self.hypers.max_angular)
        density = self.featurizer.density(frames)
        n = len(frames)
        model_ids = range(self.weights[0].shape[0])[models]
        out = {0: np.zeros((len(model_ids), n, 1)), 2: np.zeros((len(model_ids), n, 5))}
        # The matrices are small: BLAS threads only contend with each other here.
        with threadpool_limits(limits=1, user_api="blas"):
            for (ct, l2), (partners, wcat) in groups.items():
                if (ct, l2) not in density:
                    continue
                rho2 = density[(ct, l2)]
                _, B, n_max, K = rho2.shape
                for out_idx, m in enumerate(model_ids):
                    # T[s, b, i, p, k1] = Σ_k2 ρ2[s, b, i, k2] W_p[k1, k2], all partners p at once
                    T = (rho2.reshape(-1, K) @ wcat[m]).reshape(n, B, n_max, len(partners), K)
                    for p, (lam, l1) in enumerate(partners):
                        rho1 = density[(ct, l1)]
                        A = rho1.shape[1]
                        # P[s, a, b] = Σ_{i, k1} ρ1[s, a, i, k1] T[s, b, i, p, k1]
                        Tp = T[:, :, :, p, :].reshape(n, B, n_max * K)
                        P = np.matmul(rho1.reshape(n, A, n_max * K), Tp.transpose(0, 2, 1))
                        out[lam][out_idx] += P.reshape(n, A * B) @ cg[(l1, l2, lam)].reshape(A * B, 2 * lam + 1)
        out[0] += self._intercepts(frames)[list(model_ids)][..., None]
        return out[0], out[2]

    def _intercepts(self, frames: Sequence) -> np.ndarray:
        """(1 + m, n): the λ=0 intercept Σ_s b_s N_s of every model for every frame."""
        return self.intercept_A3 @ _composition(frames, self.elements).T

    @functools.cached_property
    def _contracted_weights(self) -> dict[tuple[int, int], tuple[list[tuple[int, int]], np.ndarray]]:
        """Weights regrouped for the fast path: for every (center type, l₂) the list of
        partners (λ, l₁) and their K×K weight blocks side by side, (1+m, K, partners·K),
        with column p·K + k₁ holding W_p[k₁, :] (K = n_elements × n_radial)."""
        labels = self.featurizer.feature_labels
        n_rad = self.hypers.max_radial + 1
        K = len(self.elements) * n_rad
        el_index = {z: i for i, z in enumerate(self.elements)}
        blocks: dict[tuple[int, int, int, int], np.ndarray] = {}
        for lam in (0, 2):
            w = self.weights[lam]
            ct, l1, l2, t1, n1, t2, n2 = labels[lam].T
            k1 = np.array([el_index[z] for z in t1]) * n_rad + n1
            k2 = np.array([el_index[z] for z in t2]) * n_rad + n2
            for key in sorted(set(zip(ct.tolist(), l1.tolist(), l2.tolist(), strict=False))):
                sel = (ct == key[0]) & (l1 == key[1]) & (l2 == key[2])
                block = np.zeros((w.shape[0], K, K))
                np.add.at(block, (slice(None), k1[sel], k2[sel]), w[:, sel])  # type: ignore[arg-type]
                blocks[(lam, *key)] = block
        groups: dict[tuple[int, int], tuple[list[tuple[int, int]], np.ndarray]] = {}
        for (ct, l2) in sorted({(k[1], k[3]) for k in blocks}):
            partners = [(lam, l1) for (lam, c, l1, l) in sorted(blocks) if c == ct and l == l2]
            # (1+m, K2, p, K1): transpose each block so that ρ2 @ wcat gives W_p[k1, k2] ρ2[k2]
            wcat = np.stack([blocks[(lam, ct, l1, l2)].transpose(0, 2, 1) for lam, l1 in partners], axis=2)
            groups[(ct, l2)] = (partners, np.ascontiguousarray(wcat.reshape(wcat.shape[0], K, -1)))
        return groups

    def _spherical_plain(self, frames: Sequence) -> tuple[np.ndarray, np.ndarray]:
        X0, X2 = self.featurizer.features(frames)
        y0 = np.einsum("np,Mp->Mn", X0, self.weights[0])[..., None]
        y0 += self._intercepts(frames)[..., None]
        y2 = np.einsum("nup,Mp->Mnu", X2, self.weights[2])
        return y0, y2

    def _all_models(self, frames: Sequence, *, plain: bool = False, models: slice = slice(None)) -> np.ndarray:
        frames = self.check_frames(frames)
        parts = []
        for piece in _atom_batches(frames, 1024 if plain else 8192):  # bounded memory for long lists
            if plain:
                y0, y2 = self._spherical_plain(piece)
                y0, y2 = y0[models], y2[models]
            else:
                y0, y2 = self._spherical_fast(piece, models)
            parts.append(spherical_to_alpha(y0, y2))
        return np.concatenate(parts, axis=1)

    def predict(self, frames: Sequence) -> np.ndarray:
        """α (n, 3, 3) in Å³ for a list of ase.Atoms (fast path, weights in the density)."""
        return self._all_models(frames, models=slice(0, 1))[0]

    def predict_plain(self, frames: Sequence) -> np.ndarray:
        """α (n, 3, 3) through the full λ-SOAP features (the textbook path; slower)."""
        return self._all_models(frames, plain=True, models=slice(0, 1))[0]

    def predict_committee(self, frames: Sequence) -> np.ndarray:
        """Calibrated committee predictions (m, n, 3, 3), Å³.

        Member k is ȳ + s·(y_k − ȳ), with ȳ the committee mean and s the out-of-bag
        calibration factor stored in the model, so the spread estimates the error.
        """
        if self.n_committee < 1:
            raise InputError("the model has no committee", field="n_committee", fix="refit with n_committee ≥ 2")
        return _calibrated(self._all_models(frames, models=slice(1, None)), self.committee_scale)

    def predict_with_committee(self, frames: Sequence) -> tuple[np.ndarray, np.ndarray]:
        """(α (n,3,3), calibrated committee (m,n,3,3)) from a single density evaluation."""
        allm = self._all_models(frames)
        committee = _calibrated(allm[1:], self.committee_scale) if self.n_committee else allm[:0]
        return allm[0], committee

    # -------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike[str]) -> tuple[Path, Path]:
        """Write ``<path>.mts`` (weights as a metatensor TensorMap) and ``<path>.json``
        (hyperparameters, intercepts, metadata). Returns both paths."""
        import metatensor

        mts_path, json_path = _model_paths(path)
        blocks = []
        labels = self.featurizer.feature_labels
        for lam in (0, 2):
            blocks.append(metatensor.TensorBlock(
                values=np.ascontiguousarray(self.weights[lam]),
                samples=metatensor.Labels.range("model", self.weights[lam].shape[0]),
                components=[],
                properties=metatensor.Labels(
                    ["center_type", "l_1", "l_2", "neighbor_1_type", "n_1", "neighbor_2_type", "n_2"],
                    labels[lam].astype(np.int32),
                ),
            ))
        tensor = metatensor.TensorMap(
            metatensor.Labels(["o3_lambda", "o3_sigma"], np.array([[0, 1], [2, 1]], dtype=np.int32)), blocks
        )
        sidecar = {
            "format": "ramanscreen-alpha-model",
            "format_version": _FORMAT_VERSION,
            "weights_file": mts_path.name,
            "hypers": dataclasses.asdict(self.hypers),
            "elements": self.elements,
            "intercept_per_species_A3": np.asarray(self.intercept_A3, dtype=np.float64).tolist(),
            "committee_scale": float(self.committee_scale),
            "meta": self.meta,
        }
        with atomic_path(mts_path) as tmp:
            metatensor.save(str(tmp), tensor)
        with atomic_write(json_path, "w") as fh:
            json.dump(sidecar, fh, indent=2)
        return mts_path, json_path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> AlphaModel:
        """Read a model written by :meth:`save` (no training data needed)."""
        import metatensor

        mts_path, json_path = _model_paths(path)
        for p in (mts_path, json_path):
            if not p.is_file():
                raise InputError("model file not found", file=p, fix="write the model with `ramanscreen alpha fit`")
        try:
            side = json.loads(json_path.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(f"not valid JSON ({exc.msg})", file=json_path) from exc
        if side.get("format") != "ramanscreen-alpha-model":
            raise InputError("not a ramanscreen α model", file=json_path, field="format")
        if side.get("format_version", 0) > _FORMAT_VERSION:
            raise InputError(f"format_version {side['format_version']} is newer than this ramanscreen reads",
                             file=json_path, field="format_version", fix="upgrade ramanscreen")
        try:
            tensor = metatensor.load(str(mts_path))
        except Exception as exc:
            raise InputError(f"cannot read metatensor data ({exc})", file=mts_path) from exc
        elements = [int(z) for z in side["elements"]]
        if "intercept_per_species_A3" in side:
            intercept = np.array(side["intercept_per_species_A3"], dtype=np.float64).reshape(-1, len(elements))
        else:  # format 1: one intercept per atom, whatever its element
            per_atom = np.array(side["intercept_per_atom_A3"], dtype=np.float64)
            intercept = np.repeat(per_atom[:, None], len(elements), axis=1)
        model = cls(
            hypers=SOAPHypers.from_dict(side["hypers"]),
            elements=elements,
            weights={},
            intercept_A3=intercept,
            meta=side.get("meta", {}),
            committee_scale=float(side.get("committee_scale", 1.0)),
        )
        expected = model.featurizer.feature_labels
        for key, block in tensor.items():
            lam = int(key["o3_lambda"])
            if not np.array_equal(np.asarray(block.properties.values), expected[lam]):
                raise InputError(f"λ={lam} weights do not match the hyperparameters in {json_path.name}",
                                 file=mts_path, fix="keep the .mts and .json of one model together")
            model.weights[lam] = np.array(block.values)
        if set(model.weights) != {0, 2}:
            raise InputError("missing λ=0 or λ=2 weights", file=mts_path)
        return model


def _model_paths(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    path = Path(path)
    base = path.with_suffix("") if path.suffix in (".mts", ".json") else path
    return base.with_name(base.name + ".mts"), base.with_name(base.name + ".json")


def _calibrated(members: np.ndarray, scale: float) -> np.ndarray:
    mean = members.mean(axis=0, keepdims=True)
    return mean + scale * (members - mean)


def _calibrate_committee(oobs: dict[int, np.ndarray], targets: dict[int, np.ndarray]) -> float:
    """Scale s such that s²·(committee variance) matches the out-of-bag squared error
    (Musil et al., JCTC 15, 906 (2019)), pooled over λ=0 and λ=2 components."""
    err2, var = [], []
    for lam in (0, 2):
        oob = oobs[lam]
        counts = np.sum(~np.isnan(oob[..., 0]), axis=0)
        ok = counts >= 2
        if not ok.any():
            continue
        mean = np.nanmean(oob[:, ok], axis=0)
        v = np.nanvar(oob[:, ok], axis=0, ddof=1)
        err2.append(((mean - targets[lam][ok]) ** 2).ravel())
        var.append(v.ravel())
    if not err2:
        return 1.0
    e, v = np.concatenate(err2), np.concatenate(var)
    if v.sum() <= 0:
        return 1.0
    return float(np.sqrt(e.sum() / v.sum()))


def _atom_batches(frames: Sequence, max_atoms: int) -> Iterator[Sequence]:
    """Consecutive slices of ``frames`` holding at most ``max_atoms`` atoms (≥ 1 frame each)."""
    start = 0
    while start < len(frames):
        stop, atoms = start, 0
        while stop < len(frames) and (stop == start or atoms + len(frames[stop]) <= max_atoms):
            atoms += len(frames[stop])
            stop += 1
        yield frames[start:stop]
        start = stop


def _features_chunked(featurizer: _Featurizer, frames: Sequence, max_atoms: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Summed λ-SOAP features of many frames, computed a few frames at a time so that the
    per-atom power spectrum (the memory peak) never holds more than ~``max_atoms`` atoms."""
    X0s, X2s = [], []
    for piece in _atom_batches(frames, max_atoms):
        X0, X2 = featurizer.features(piece)
        X0s.append(X0)
        X2s.append(X2)
    return np.concatenate(X0s), np.concatenate(X2s)


# ------------------------------------------------------------------ frame streaming


def _resolve_model(model: AlphaModel | str | os.PathLike[str]) -> AlphaModel:
    if isinstance(model, AlphaModel):
        return model
    path = _model_paths(model)[0]
    if not path.is_file():
        raise InputError("model file not found", file=path, fix="write the model with `ramanscreen alpha fit`")
    return _load_cached(str(path.resolve()), path.stat().st_mtime_ns)


def predict_frames(model: AlphaModel | str | os.PathLike[str], frames: Sequence, *, committee: bool = False,
                   extra: AlphaModel | str | os.PathLike[str] | None = None):
    """Predict α for a list of frames: the unit of work of the campaign's parallel chunk
    tasks. ``model`` is an :class:`AlphaModel` (it pickles without its caches) or the path
    of a saved one (loaded once per process). Returns α (n,3,3), or
    (α, committee (m,n,3,3)) with ``committee=True``.

    ``extra``: a model of the same hypers and elements (e.g. the training-subset refits of
    :func:`ramanscreen.tasks.convergence.fit_training_subsets`) whose weight rows are evaluated
    in the same density pass; its predictions (k, n, 3, 3), uncalibrated, are appended to the
    return value: (α, extra) or (α, committee, extra).
    """
    model = _resolve_model(model)
    if extra is None:
        if committee:
            return model.predict_with_committee(frames)
        return model.predict(frames)
    allm = _stacked(model, _resolve_model(extra))._all_models(frames)
    own, rest = allm[: model.n_committee + 1], allm[model.n_committee + 1:]
    if not committee:
        return own[0], rest
    members = _calibrated(own[1:], model.committee_scale) if model.n_committee else own[:0]
    return own[0], members, rest


def _stacked(model: AlphaModel, extra: AlphaModel) -> AlphaModel:
    """One model whose weight rows are ``model``'s then ``extra``'s (cached on ``model``)."""
    cache = model.__dict__.setdefault("_stacked_cache", {})
    if id(extra) in cache:
        return cache[id(extra)][1]
    if extra.hypers != model.hypers or list(extra.elements) != list(model.elements):
        raise InputError("the extra model has other λ-SOAP hypers or elements than the model", field="extra",
                         fix="stack only refits of the same model (tasks.convergence.fit_training_subsets)")
    stacked = AlphaModel(hypers=model.hypers, elements=list(model.elements),
                         weights={lam: np.concatenate([model.weights[lam], extra.weights[lam]]) for lam in (0, 2)},
                         intercept_A3=np.concatenate([model.intercept_A3, extra.intercept_A3]), meta=dict(model.meta),
                         committee_scale=model.committee_scale)
    stacked.__dict__["_featurizer"] = model.featurizer
    cache.clear()  # one extra per model at a time: the campaign's subset refits
    cache[id(extra)] = (extra, stacked)  # keeps extra alive, so its id is not reused
    return stacked


@functools.lru_cache(maxsize=4)
def _load_cached(path: str, mtime_ns: int) -> AlphaModel:
    return AlphaModel.load(path)


def frame_uncertainty_A3(alpha_committee_A3: np.ndarray) -> np.ndarray:
    """Per-frame uncertainty (n,) in Å³ from committee predictions (m, n, 3, 3): the root
    mean square over the nine Cartesian components of the committee standard deviation
    (rotation invariant).

    >>> c = np.zeros((4, 2, 3, 3)); c[:2, 1] += 1.0
    >>> frame_uncertainty_A3(c).round(3).tolist()
    [0.0, 0.5]
    """
    committee = np.asarray(alpha_committee_A3, dtype=np.float64)
    if committee.ndim != 4 or committee.shape[2:] != (3, 3) or committee.shape[0] < 2:
        raise InputError(f"expected (members ≥ 2, n, 3, 3), got {committee.shape}", field="alpha_committee")
    return np.sqrt(committee.var(axis=0).mean(axis=(1, 2)))


def iter_trajectory_chunks(
    path: str | os.PathLike[str], *, stride: int = 1, chunk: int = 64, fmt: str | None = None
) -> Iterator[list]:
    """Yield lists of at most ``chunk`` ase.Atoms, every ``stride``-th frame of ``path``
    (any format ASE reads; ``fmt`` names it when the file name does not); frames are read
    lazily with ``ase.io.iread``, so memory is bounded by ``chunk`` whatever the length."""
    import ase.io

    path = Path(path)
    if not path.is_file():
        raise InputError("trajectory not found", file=path)
    if int(stride) != stride or stride < 1:
        raise InputError(f"stride must be an integer ≥ 1, got {stride!r}", field="stride")
    if int(chunk) != chunk or chunk < 1:
        raise InputError(f"chunk must be an integer ≥ 1, got {chunk!r}", field="chunk")
    buf: list = []
    try:
        for atoms in ase.io.iread(str(path), index=slice(None, None, int(stride)), format=fmt):
            buf.append(atoms)
            if len(buf) == chunk:
                yield buf
                buf = []
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"cannot read trajectory ({type(exc).__name__}: {exc})", file=path) from exc
    if buf:
        yield buf


def count_frames(path: str | os.PathLike[str], stride: int = 1) -> int | None:
    """Number of frames ``iter_trajectory_chunks`` will yield, when cheap to know
    (ASE ``.traj``), else None."""
    path = Path(path)
    if path.suffix == ".traj":
        from ase.io.trajectory import Trajectory

        with Trajectory(str(path)) as traj:
            return len(range(0, len(traj), int(stride)))
    return None


def predict_trajectory(
    model: AlphaModel,
    traj_path: str | os.PathLike[str],
    *,
    stride: int = 1,
    chunk: int = 64,
    progress: Any | None = None,
    committee: bool = False,
    fmt: str | None = None,
):
    """Stream a trajectory in chunks and predict α for every ``stride``-th frame.

    Memory holds one chunk of frames plus the (n, 3, 3) result. ``progress`` is a Rich
    :class:`~rich.progress.Progress` (a task is added to it) or None for no bar. Returns
    α (n,3,3), or (α, committee (m,n,3,3)) with ``committee=True``.
    """
    total = count_frames(traj_path, stride)
    task = progress.add_task("predicting α", total=total) if progress is not None else None
    alphas, committees = [], []
    for frames in iter_trajectory_chunks(traj_path, stride=stride, chunk=chunk, fmt=fmt):
        frames = model.check_frames(frames, file=str(traj_path))
        if committee:
            a, c = model.predict_with_committee(frames)
            committees.append(c)
        else:
            a = model.predict(frames)
        alphas.append(a)
        if progress is not None:
            progress.advance(task, len(frames))
    if not alphas:
        raise InputError("no frames read", file=traj_path, fix="check the file and the stride")
    alpha = np.concatenate(alphas)
    if committee:
        return alpha, np.concatenate(committees, axis=1)
    return alpha


# ------------------------------------------------------------------- learning curve


@dataclass
class LearningCurve:
    """Test metrics per training size and repeat (paper Fig. 2A)."""

    sizes: np.ndarray  # (s,)
    metrics: dict[str, np.ndarray]  # name -> (s, repeats)
    n_test: int

    def summary(self) -> dict[str, np.ndarray]:
        """Mean and standard deviation over repeats, per size."""
        out: dict[str, np.ndarray] = {"n_train": self.sizes}
        for k, v in self.metrics.items():
            out[f"{k}_mean"] = v.mean(axis=1)
            out[f"{k}_std"] = v.std(axis=1)
        return out

    def plot(self, path: str | os.PathLike[str], *, title: str = "") -> Path:
        """Learning curve PNG: R² (diagonal / off-diagonal) against training size."""
        from ramanscreen.tasks.common import new_figure

        s = self.summary()
        fig = new_figure(figsize=(8, 3.6), layout="constrained")
        axes = fig.subplots(1, 2)
        for name, label in (("diag", "diagonal"), ("offdiag", "off-diagonal")):
            axes[0].errorbar(self.sizes, s[f"r2_{name}_mean"], yerr=s[f"r2_{name}_std"], marker="o", capsize=3,
                             label=label)
            axes[1].errorbar(self.sizes, s[f"rmse_{name}_A3_mean"], yerr=s[f"rmse_{name}_A3_std"], marker="o",
                             capsize=3, label=label)
        axes[0].axhline(0.8, color="grey", lw=0.8, ls="--")
        axes[0].set_ylabel("test R²")
        axes[1].set_ylabel("test RMSE (Å³)")
        axes[1].set_yscale("log")
        for ax in axes:
            ax.set_xlabel("training structures N_T")
            ax.legend()
        if title:
            fig.suptitle(title)
        return save_figure(fig, path, dpi=120)


def learning_curve(
    frames: Sequence,
    alpha_A3: np.ndarray,
    sizes: Sequence[int],
    *,
    repeats: int = 3,
    n_test: int | None = None,
    hypers: SOAPHypers | None = None,
    seed: int = 0,
    ridge: RidgeSettings | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> LearningCurve:
    """Test metrics against training-set size.

    A fixed test set of ``n_test`` frames (default: a quarter, at least one) is held out
    (:func:`train_test_split`, as for every fit);
    for every size and repeat a training set is drawn at random from the rest, the model
    fitted (with its own cross-validated regularisation) and scored on the test set.
    Features are computed once.
    """
    frames = _check_frames(frames)
    alpha_A3 = _symmetrize(_check_alpha_array(alpha_A3, "alpha_A3"))
    if len(alpha_A3) != len(frames):
        raise InputError(f"{len(frames)} frames but {len(alpha_A3)} α tensors", field="alpha_A3")
    n = len(frames)
    n_test = max(1, n // 4) if n_test is None else int(n_test)
    grid = np.array(sorted({int(s) for s in sizes}))
    if grid.size == 0 or grid.min() < 2:
        raise InputError(f"sizes must be integers ≥ 2, got {list(grid)}", field="sizes")
    if grid.max() > n - n_test:
        raise InputError(f"largest size {grid.max()} exceeds the {n - n_test} frames left after holding out "
                         f"{n_test} for testing", field="sizes", fix=f"use sizes ≤ {n - n_test} or more data")
    hypers = hypers or SOAPHypers()
    ridge = ridge or RidgeSettings()
    elements = sorted({int(z) for f in frames for z in f.numbers})
    featurizer = _Featurizer(hypers, elements)
    X0, X2 = _features_chunked(featurizer, frames)
    pool, test = train_test_split(n, n - n_test, n_test=n_test, seed=seed)
    rng = np.random.default_rng(seed)
    names = ["r2_diag", "r2_offdiag", "rmse_diag_A3", "rmse_offdiag_A3"]
    metrics = {k: np.zeros((len(grid), repeats)) for k in names}
    done, total = 0, len(grid) * repeats
    for i, size in enumerate(grid):
        for r in range(repeats):
            train = np.sort(rng.choice(pool, size=size, replace=False))
            model = AlphaModel._fit_features(
                X0[train], X2[train], alpha_A3[train], frames=[frames[j] for j in train], hypers=hypers,
                elements=elements, n_committee=0, seed=seed + r, method="", ridge=ridge, featurizer=featurizer,
            )
            y0 = X0[test] @ model.weights[0][0] + model._intercepts([frames[j] for j in test])[0]
            y2 = X2[test] @ model.weights[2][0]
            m = alpha_metrics(alpha_A3[test], spherical_to_alpha(y0[:, None], y2))
            for k in names:
                metrics[k][i, r] = m[k]
            done += 1
            if progress is not None:
                progress(done, total)
    return LearningCurve(sizes=grid, metrics=metrics, n_test=n_test)
