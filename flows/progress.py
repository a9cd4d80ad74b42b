"""What a running campaign is doing, for the terminal: one row per material.

The material flows (``flows/material.py``) report each stage they enter to the
:class:`ProgressBoard` of the process (:func:`board`), from the real run: a stage is reported
when its tasks are submitted or their results come back. MD progress comes from the
``md.state.json`` that ``ramanscreen.tasks.md.run_md`` keeps up to date in the run directory
(step, total, ps/day; about once a second), which the board reads when asked for a snapshot,
so it works whichever Dask worker runs the MD, as long as it shares the results root.

Without a board (a deployment run by a Prefect worker) reporting does nothing.

>>> b = ProgressBoard()
>>> b.add("AgI", total_ps=20.0)
>>> b.stage("AgI", "reference", "3/10")
>>> row = b.snapshot()[0]
>>> row.material, row.stage, row.detail
('AgI', 'reference', '3/10')
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

#: The stages a material goes through, in order (what the display shows).
STAGES = ("queued", "structure", "distil", "validate", "md", "reference", "fit", "predict", "analysis", "parquet", "done", "failed")


@dataclass
class MaterialProgress:
    """One material's row."""

    material: str
    stage: str = "queued"
    detail: str = ""
    md_state: Path | None = None
    #: MD progress from md.state.json: steps done / total (equilibration included), dt, ps/day.
    md_step: int = 0
    md_total: int = 0
    md_dt_fs: float = 0.0
    ps_per_day: float | None = None
    total_ps: float | None = None
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    @property
    def md_ps(self) -> tuple[float, float]:
        """(ps done, ps total) of the MD, equilibration included."""
        return self.md_step * self.md_dt_fs / 1000.0, self.md_total * self.md_dt_fs / 1000.0

    @property
    def md_eta_s(self) -> float | None:
        """Seconds the MD still needs at its current rate, None before a rate is known."""
        done, total = self.md_ps
        if not self.ps_per_day or self.md_total == 0:
            return None
        return max(total - done, 0.0) / (self.ps_per_day / 86400.0)


class ProgressBoard:
    """Thread-safe rows of a campaign's materials, plus the links the display shows."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[str, MaterialProgress] = {}
        self.ui_url: str | None = None
        self.flow_run_id: str | None = None
        self.log_path: Path | None = None

    def add(self, material: str, *, md_state: Path | None = None, total_ps: float | None = None) -> None:
        """A row for ``material`` (kept if it exists; ``md_state``/``total_ps`` fill it in)."""
        with self._lock:
            row = self._rows.setdefault(material, MaterialProgress(material))
            if md_state is not None:
                row.md_state = md_state
            if total_ps is not None:
                row.total_ps = total_ps

    def stage(self, material: str, stage: str, detail: str = "") -> None:
        """Material ``material`` entered ``stage`` (one of :data:`STAGES`)."""
        with self._lock:
            row = self._rows.setdefault(material, MaterialProgress(material))
            row.stage, row.detail = stage, detail
            if stage in ("done", "failed"):
                row.finished = time.monotonic()

    def snapshot(self) -> list[MaterialProgress]:
        """Copies of the rows, with the MD progress read fresh from each run's md.state.json."""
        with self._lock:
            rows = [replace(r) for r in self._rows.values()]
        for r in rows:
            state = _read_state(r.md_state)
            if state:
                r.md_step, r.md_total = int(state.get("step", 0)), int(state.get("total", 0))
                r.md_dt_fs = float(state.get("dt_fs") or 0.0)
                r.ps_per_day = state.get("ps_per_day")
        return rows


def _read_state(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    with contextlib.suppress(OSError, ValueError):
        return json.loads(path.read_text())
    return None


_BOARD: ProgressBoard | None = None


def board() -> ProgressBoard | None:
    """The board of this process, or None (nobody is watching)."""
    return _BOARD


@contextlib.contextmanager
def watching(b: ProgressBoard):
    """Make ``b`` the board the material flows of this process report to."""
    global _BOARD
    previous, _BOARD = _BOARD, b
    try:
        yield b
    finally:
        _BOARD = previous


def report(material: str, stage: str, detail: str = "") -> None:
    """Report a stage to the current board, if any."""
    b = _BOARD
    if b is not None:
        b.stage(material, stage, detail)


def track(material: str, *, md_state: Path, total_ps: float) -> None:
    """Tell the current board, if any, where ``material``'s MD reports its progress."""
    b = _BOARD
    if b is not None:
        b.add(material, md_state=md_state, total_ps=total_ps)
