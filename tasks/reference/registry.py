"""The reference-backend registry, batch compute, and the campaign's ``[reference]`` settings."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ase import Atoms

from ramanscreen.tasks.common import InputError
from ramanscreen.tasks.reference.base import ReferenceBackend, ReferenceResult
from ramanscreen.tasks.reference.cp2k import Cp2kBackend
from ramanscreen.tasks.reference.dipole import DipoleModel
from ramanscreen.tasks.reference.qe import QEBackend
from ramanscreen.tasks.schema import check, setting

#: Registered backends: name -> dataclass (its fields are the backend options).
BACKENDS: dict[str, type] = {"dipole": DipoleModel, "cp2k": Cp2kBackend, "qe": QEBackend}


def get_backend(name: str, **kw: Any) -> ReferenceBackend:
    """Build a backend by name (``dipole``, ``cp2k``, ``qe``) with dataclass keyword options.

    >>> get_backend("cp2k", cutoff_ry=300).cutoff_ry
    300
    """
    key = name.lower().strip()
    if key not in BACKENDS:
        raise InputError(f"unknown reference backend {name!r}", field="backend", fix=f"use one of {', '.join(BACKENDS)}")
    cls = BACKENDS[key]
    known = {f.name for f in dataclasses.fields(cls)}
    bad = sorted(set(kw) - known)
    if bad:
        raise InputError(f"unknown option for backend {key}", field=f"options.{bad[0]}",
                         fix=f"use some of {', '.join(sorted(known))}")
    return cls(**kw)


def compute_references(
    frames: Sequence[Atoms],
    backend: Any,
    workdir: str | os.PathLike[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[ReferenceResult]:
    """Run ``backend.compute`` on every frame (one sub-directory ``frame_00000``… per frame)."""
    results = []
    for k, atoms in enumerate(frames):
        wd = None if workdir is None else Path(workdir) / f"frame_{k:05d}"
        results.append(backend.compute(atoms, workdir=wd))
        if progress:
            progress(k + 1, len(frames))
    return results


#: Backends cheap enough (~0.03–0.15 s a 64-atom frame) for a reference α series by default.
CHEAP_BACKENDS = ("dipole",)
#: The default ``series_frames`` of a cheap backend: 128 α samples (the default campaign's cost
#: budget: 4 materials × 128 frames × ≲0.15 s on the reference pool).
DEFAULT_SERIES_FRAMES = 128
#: A cheap backend's series frames per reference task, at least (~3 s of the dipole model).
SERIES_MIN_FRAMES_PER_TASK = 32


def default_series_frames(backend: str) -> int:
    """The default ``[reference] series_frames`` of ``backend``: :data:`DEFAULT_SERIES_FRAMES`
    for a cheap embedded backend (the dipole model), 0 (no reference α series, Fig. 2D not
    drawn) for the DFT backends (``qe``, ``cp2k``; an imported VASP dataset has no backend to
    run), whose ~minutes a frame a series of consecutive frames would multiply.

    >>> default_series_frames("dipole"), default_series_frames("cp2k"), default_series_frames("qe")
    (128, 0, 0)
    """
    return DEFAULT_SERIES_FRAMES if backend.lower().strip() in CHEAP_BACKENDS else 0


@dataclass(frozen=True)
class ReferenceSettings:
    """How a campaign gets its reference α (the ``[reference]`` section).

    >>> s = ReferenceSettings(n_train=8, n_test=2)
    >>> s.n_snapshots, s.make_backend().method
    (10, 'thole-dipole-model (embedded, not DFPT)')
    >>> s.n_series_frames, ReferenceSettings(backend="cp2k").n_series_frames, ReferenceSettings(series_frames=32).n_series_frames
    (128, 0, 32)
    >>> ReferenceSettings(backend="cp2k", options={"cutof_ry": 300})
    Traceback (most recent call last):
    ...
    ramanscreen.tasks.common.InputError: options.cutof_ry: unknown option for backend cp2k (fix: use some of ...)
    """

    backend: str = setting("dipole", doc="reference α backend", choices=tuple(BACKENDS))
    options: Mapping[str, Any] = setting(default_factory=dict, doc="options of the backend (its dataclass fields, "
                                         "e.g. cutoff_ry for cp2k, ecutwfc_ry for qe)")
    n_train: int = setting(100, doc="N_T: reference snapshots the α model is fitted on", ge=2, le=10**6)
    n_test: int = setting(10, doc="further reference snapshots, only for the test metrics (R², RMSE)", ge=0)
    selection: str = setting("random", doc="how snapshots are picked: random (the paper) or fps "
                             "(farthest-point sampling in SOAP space)", choices=("random", "fps"))
    retries: int = setting(3, doc="retries of a failed reference calculation (non-convergence, lost node)", ge=0)
    retry_delay_s: float = setting(2.0, doc="delay before the first retry, doubled for each further one", unit="s",
                                   ge=0)
    seed: int = setting(0, doc="seed of the random snapshot selection")
    frames_per_task: int = setting(1, doc="reference frames per task: 1 for DFT codes (retries and parallelism per "
                                   "calculation); more for a cheap backend such as the embedded dipole model "
                                   "(~0.1 s a frame), whose per-task orchestration cost would otherwise dominate",
                                   ge=1)
    series_frames: int | None = setting(None, doc="consecutive α samples (every alpha_stride-th stored MD frame from "
                                        "the start of production) that also get a reference α, for the ML-vs-reference "
                                        "spectrum (Fig. 2D, table reference_spectrum); 0: none; default (unset): "
                                        f"{DEFAULT_SERIES_FRAMES} for the embedded dipole model, 0 for the DFT backends",
                                        ge=0, le=10**6)

    def __post_init__(self) -> None:
        check(self)
        self.make_backend()  # unknown or mistyped backend options fail here, not on a worker

    @property
    def n_snapshots(self) -> int:
        """Snapshots to compute: ``n_train + n_test``."""
        return self.n_train + self.n_test

    @property
    def n_series_frames(self) -> int:
        """``series_frames``, or :func:`default_series_frames` of the backend when unset."""
        return default_series_frames(self.backend) if self.series_frames is None else int(self.series_frames)

    def series(self, n_stored: int, alpha_stride: int) -> list[int]:
        """The stored MD frames of the reference α series: the first ``n_series_frames`` α
        samples (frames 0, alpha_stride, 2·alpha_stride, … of the ``n_stored`` stored frames).

        >>> ReferenceSettings(series_frames=4).series(100, 10), ReferenceSettings(series_frames=4).series(25, 10)
        ([0, 10, 20, 30], [0, 10, 20])
        """
        return list(range(0, n_stored, max(1, int(alpha_stride))))[:self.n_series_frames]

    def series_batches(self, frames: Sequence[int]) -> list[list[int]]:
        """The reference α series' frames in tasks: groups of ``frames_per_task``, and for a cheap
        backend (:data:`CHEAP_BACKENDS`) of at least :data:`SERIES_MIN_FRAMES_PER_TASK` (one frame
        a task would be mostly orchestration).

        >>> [len(b) for b in ReferenceSettings(frames_per_task=20).series_batches(range(128))]
        [32, 32, 32, 32]
        >>> [len(b) for b in ReferenceSettings(backend="cp2k").series_batches(range(3))]
        [1, 1, 1]
        """
        k = self.frames_per_task
        if self.backend.lower().strip() in CHEAP_BACKENDS:
            k = max(k, SERIES_MIN_FRAMES_PER_TASK)
        return [list(frames[i:i + k]) for i in range(0, len(frames), k)]

    def batches(self, frames: Sequence[int]) -> list[list[int]]:
        """``frames`` in consecutive groups of ``frames_per_task`` (one reference task each).

        >>> ReferenceSettings(frames_per_task=3).batches([4, 9, 1, 7, 2])
        [[4, 9, 1], [7, 2]]
        """
        k = self.frames_per_task
        return [list(frames[i:i + k]) for i in range(0, len(frames), k)]

    def make_backend(self) -> ReferenceBackend:
        return get_backend(self.backend, **dict(self.options))
