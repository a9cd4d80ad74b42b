"""On-the-fly refinement, as the paper's VASP MLFF does it: watch an extrapolation measure
during production, send frames beyond a threshold to the teacher, refit.

Measure: the spread of a bootstrap committee of linear SNAP fits (the potential's
``committee``, fitted on resampled training frames) on the forces of the current frame,
``max_i sqrt(Σ_xyz var_k F_ik)`` in eV/Å, from the same ``compute snap`` rows as the fit.
Threshold: ``threshold_factor`` × the 95th percentile of that measure on the held-out teacher
frames (in-distribution frames at the campaign T), never below ``threshold_min_eV_A``; it is
fixed when the refiner starts and recorded.

A frame beyond the threshold is labelled by the teacher together with ``n_rattled_per_frame``
rattled copies, added to the training set, and the potential refitted (the descriptors of the
old frames are reused). At most ``max_rounds`` rounds; later frames beyond the threshold are
counted, not refitted. Every round is recorded in ``workdir/refine.json`` (md step, measure,
threshold, frames added, held-out RMSE before and after, wall time) and its potential kept in
``workdir/round-<k>/``; a new :class:`Refiner` on the same ``workdir`` picks them up, so a
resumed production run continues with the latest potential.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

from ramanscreen.tasks.common import InputError
from ramanscreen.tasks.mlff.data import label_frames, rattled, write_labelled
from ramanscreen.tasks.mlff.engine import write_json
from ramanscreen.tasks.mlff.snap import (
    FORCE_RMSE_LIMIT_EV_A,
    DescriptorCalculator,
    FrameRows,
    SnapPotential,
    error_stats,
    fit_snap,
)


@dataclass(frozen=True)
class RefineSettings:
    """Bounds of the on-the-fly refinement.

    >>> RefineSettings(max_rounds=0).enabled
    False
    """

    max_rounds: int = 3
    threshold_factor: float = 2.0
    threshold_min_eV_A: float = 0.02
    n_rattled_per_frame: int = 2
    rattle_A: float = 0.03
    seed: int = 0

    @property
    def enabled(self) -> bool:
        return self.max_rounds > 0

    def validate(self) -> None:
        if not isinstance(self.max_rounds, int) or self.max_rounds < 0:
            raise InputError(f"must be an integer >= 0, got {self.max_rounds!r}", field="max_rounds")
        if not (math.isfinite(self.threshold_factor) and self.threshold_factor > 0):
            raise InputError(f"must be positive, got {self.threshold_factor!r}", field="threshold_factor")
        if not isinstance(self.n_rattled_per_frame, int) or self.n_rattled_per_frame < 0:
            raise InputError(f"must be an integer >= 0, got {self.n_rattled_per_frame!r}", field="n_rattled_per_frame")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Refiner:
    """Extrapolation monitor and refitter for one production run (see the module docstring).

    Args:
        potential: the fitted potential (written, with its committee).
        train, holdout: the labelled frames it was fitted on and held out.
        teacher: the teacher calculator; ``None`` (a file teacher) only monitors.
        settings: :class:`RefineSettings`.
        workdir: where rounds are recorded.
        train_rows: ``compute snap`` rows of ``train`` (from the fit), to avoid recomputing them.
    """

    def __init__(self, potential: SnapPotential, train: Sequence[Atoms], holdout: Sequence[Atoms],
                 teacher: Calculator | None, settings: RefineSettings | None = None, *,
                 workdir: str | os.PathLike[str], train_rows: Sequence[FrameRows] | None = None) -> None:
        self.settings = settings or RefineSettings()
        self.settings.validate()
        if potential.committee is None:
            raise InputError("the potential has no committee to measure extrapolation", field="potential",
                             fix="refit it with ramanscreen mlff fit")
        self.initial = potential
        self.initial_fingerprint = potential.fingerprint()
        self.potential = potential
        self.train = list(train)
        self.holdout = list(holdout)
        self.teacher = teacher
        self.workdir = Path(workdir)
        self.calc = DescriptorCalculator(potential.settings, potential.elements)
        self.train_rows = list(train_rows) if train_rows is not None else [self.calc.rows(a) for a in self.train]
        self.holdout_rows = [self.calc.rows(a) for a in self.holdout]
        spreads = [potential.committee_force_spread(r) for r in self.holdout_rows]
        self.holdout_p95 = float(np.percentile(spreads, 95))
        self.threshold = max(self.settings.threshold_factor * self.holdout_p95, self.settings.threshold_min_eV_A)
        self.rounds: list[dict[str, Any]] = []
        self.added: list[Atoms] = []
        self.n_above = 0
        self.last_measure: float | None = None
        self.rng = np.random.default_rng(self.settings.seed)
        self._load()

    # ---------------------------------------------------------------- state
    @property
    def record_path(self) -> Path:
        return self.workdir / "refine.json"

    @property
    def n_rounds(self) -> int:
        return len(self.rounds)

    def _load(self) -> None:
        if not self.record_path.is_file():
            return
        doc = json.loads(self.record_path.read_text())
        if doc.get("initial_fingerprint") != self.initial_fingerprint:
            raise InputError("the refinement record belongs to another potential", file=self.record_path,
                             fix="use a new --out-dir or pass --restart")
        from ase.io import read

        self.threshold = float(doc["threshold_eV_A"])
        self.rounds = list(doc["rounds"])
        self.n_above = int(doc.get("n_above", 0))
        added = self.workdir / "added.extxyz"
        if self.rounds and added.is_file():
            new = read(added, ":")
            self.added = list(new)
            self.train += new
            self.train_rows += [self.calc.rows(a) for a in new]
            self.potential = SnapPotential.load(self.rounds[-1]["potential"])

    def _save(self) -> None:
        write_json(self.record_path, {
            "initial_fingerprint": self.initial_fingerprint, "initial_potential": str(self.initial.path),
            "threshold_eV_A": self.threshold, "holdout_spread_p95_eV_A": self.holdout_p95,
            "settings": self.settings.to_dict(), "rounds": self.rounds, "n_above": self.n_above,
            "updated_utc": datetime.now(UTC).isoformat(timespec="seconds")})

    # ---------------------------------------------------------------- the check
    def measure(self, atoms: Atoms) -> float:
        """Committee force spread (eV/Å) of the current potential on ``atoms``."""
        return self.potential.committee_force_spread(self.calc.rows(atoms))

    def check(self, atoms: Atoms, *, md_step: int, temperature_k: float | None = None) -> SnapPotential | None:
        """Measure ``atoms``; beyond the threshold (and rounds left, and a teacher), refit and
        return the new potential, else ``None``."""
        m = self.measure(atoms)
        self.last_measure = m
        if m <= self.threshold:
            return None
        self.n_above += 1
        if self.teacher is None or self.n_rounds >= self.settings.max_rounds:
            self._save()
            return None
        t0 = time.perf_counter()
        before = error_stats(self.potential, self.holdout, rows=self.holdout_rows)
        base = atoms.copy()
        base.info = {"md_step": int(md_step)}
        new_frames = [base, *rattled([base], self.settings.n_rattled_per_frame, self.settings.rattle_A, self.rng)]
        labelled = label_frames(new_frames, self.teacher, tag=f"refine-{self.n_rounds + 1}")
        new_rows = [self.calc.rows(a) for a in labelled]
        info = {k: v for k, v in self.potential.info.items() if k not in {"fit_time_s", "descriptor_time_s",
                                                                          "fitted_utc", "train_errors",
                                                                          "holdout_errors", "flagged"}}
        fit = fit_snap([*self.train, *labelled], self.potential.settings, elements=self.potential.elements,
                       rows=[*self.train_rows, *new_rows], info=info)
        pot = fit.potential
        after = error_stats(pot, self.holdout, rows=self.holdout_rows)
        pot.info["holdout_errors"] = after.to_dict()
        pot.info["flagged"] = bool(after.force_rmse_eV_A > FORCE_RMSE_LIMIT_EV_A)
        pot.info["force_rmse_limit_eV_A"] = FORCE_RMSE_LIMIT_EV_A
        pot.info["refinement_round"] = self.n_rounds + 1
        k = self.n_rounds + 1
        path = pot.write(self.workdir / f"round-{k}")
        self.train += labelled
        self.train_rows += new_rows
        self.added += labelled
        write_labelled(self.added, self.workdir / "added.extxyz")
        self.rounds.append({
            "round": k, "md_step": int(md_step), "temperature_k": temperature_k, "measure_eV_A": m,
            "threshold_eV_A": self.threshold, "frames_added": len(labelled), "n_train": len(self.train),
            "holdout_force_rmse_before_eV_A": before.force_rmse_eV_A,
            "holdout_force_rmse_after_eV_A": after.force_rmse_eV_A,
            "measure_after_eV_A": pot.committee_force_spread(self.calc.rows(atoms)),
            "wall_time_s": time.perf_counter() - t0, "potential": str(path),
            "utc": datetime.now(UTC).isoformat(timespec="seconds"),
        })
        self.potential = pot
        self._save()
        return pot

    def summary(self, measures: Sequence[Sequence[float | None]] = ()) -> dict[str, Any]:
        """The refinement record for a run's metadata (``measures``: [md_step, spread] pairs)."""
        values = np.array([m for _, m in measures if m is not None], float)
        return {
            "measure": "committee force spread (max over atoms), eV/Å",
            "threshold_eV_A": self.threshold, "holdout_spread_p95_eV_A": self.holdout_p95,
            "n_checks": int(values.size), "max_eV_A": float(values.max()) if values.size else None,
            "n_above_threshold": self.n_above, "n_rounds": self.n_rounds, "max_rounds": self.settings.max_rounds,
            "rounds": self.rounds, "checks": [list(m) for m in measures], "record": str(self.record_path),
        }

    def close(self) -> None:
        self.calc.close()


__all__ = ["RefineSettings", "Refiner"]
