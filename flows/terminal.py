"""The terminal of ``ramanscreen screen``: a live table of the campaign, library logs in a file.

* :func:`campaign_table` renders a :class:`~ramanscreen.flows.progress.ProgressBoard`: one row per
  material with its stage, an MD progress bar (ps done / total, ps/day, ETA) and what the
  stage is doing, under the Prefect UI link, the flow run and the log file.
* :func:`library_logs_to_file` sends everything written to the process's stderr (file
  descriptor 2) to a log file for the duration: the INFO floods of distributed, Prefect and
  httpx, and those of the Dask worker processes started meanwhile, which inherit it. The
  terminal keeps stdout, where the live table is drawn.

>>> from rich.console import Console
>>> from ramanscreen.flows.progress import ProgressBoard
>>> b = ProgressBoard(); b.add("AgI"); b.stage("AgI", "fit", "N_T = 8")
>>> c = Console(width=100, record=True, file=open(os.devnull, "w"))
>>> c.print(campaign_table(b, title="demo"))
>>> text = c.export_text()
>>> "AgI" in text and "fit" in text and "N_T = 8" in text
True
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from ramanscreen.flows.progress import MaterialProgress, ProgressBoard

_STAGE_STYLE = {"queued": "dim", "md": "cyan", "reference": "magenta", "fit": "yellow", "predict": "yellow",
                "analysis": "blue", "parquet": "blue", "done": "green", "failed": "bold red"}


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _md_cells(r: MaterialProgress) -> tuple[RenderableType, str, str]:
    done, total = r.md_ps
    if r.md_total == 0:
        planned = f"0/{r.total_ps:.3g} ps" if r.total_ps else ""
        return ProgressBar(total=1.0, completed=0.0, width=24), planned, ""
    bar = ProgressBar(total=float(r.md_total), completed=float(min(r.md_step, r.md_total)), width=24)
    rate = f", {r.ps_per_day:.0f} ps/day" if r.ps_per_day else ""
    eta = "" if r.md_step >= r.md_total else f"ETA {_duration(r.md_eta_s)}"
    return bar, f"{done:.3g}/{total:.3g} ps{rate}", eta


def campaign_table(board: ProgressBoard, *, title: str = "", elapsed_s: float | None = None) -> RenderableType:
    """The live view: links, then one row per material (stage, MD bar, ps, ETA, detail)."""
    table = Table(title=title or None, title_justify="left", expand=False, pad_edge=False)
    for col, justify in (("material", "left"), ("stage", "left"), ("MD", "left"), ("", "right"), ("ETA", "right"),
                         ("now", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in board.snapshot():
        bar, ps, eta = _md_cells(r)
        table.add_row(r.material, Text(r.stage, style=_STAGE_STYLE.get(r.stage, "")), bar, ps, eta,
                      Text(r.detail, overflow="ellipsis"))
    head = []
    if board.ui_url:
        run = f"{board.ui_url}/runs/flow-run/{board.flow_run_id}" if board.flow_run_id else board.ui_url
        head.append(Text.assemble(("Prefect UI: ", "bold"), run))
    if board.log_path:
        head.append(Text.assemble(("library logs: ", "bold"), str(board.log_path)))
    if elapsed_s is not None:
        head.append(Text(f"elapsed {_duration(elapsed_s)}", style="dim"))
    return Group(*head, table)


def log_path_for(results_root: Path, campaign: str) -> Path:
    """``<results_root>/logs/<campaign>-<UTC time>.log``."""
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%d-%H%M%S")
    return results_root / "logs" / f"{campaign}-{stamp}.log"


@contextlib.contextmanager
def library_logs_to_file(path: Path) -> Iterator[Path]:
    """Redirect file descriptor 2 (and Python's logging) to ``path`` for the duration.

    Child processes started inside the block (Dask workers, the Prefect server) inherit the
    redirected stderr; stdout stays on the terminal. On exit the terminal's stderr is back, so
    an error is reported there.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    fh = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - closed in the finally below
    os.dup2(fh.fileno(), 2)
    root = logging.getLogger()
    old_level = root.level
    # Python logging that reaches the root goes to the file through a handler of its own (the
    # root's stderr handlers are set aside meanwhile: they would write the same lines again);
    # loggers with their own stderr handlers (Prefect's, distributed's) follow fd 2 there.
    on_stderr = [h for h in root.handlers if isinstance(h, logging.StreamHandler)
                 and getattr(h, "stream", None) in (sys.stderr, sys.__stderr__)]
    for h in on_stderr:
        root.removeHandler(h)
    handler = logging.StreamHandler(fh)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)  # the file may hold what the terminal should not
    try:
        yield path
    finally:
        root.removeHandler(handler)
        for h in on_stderr:
            root.addHandler(h)
        root.setLevel(old_level)
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        fh.close()


def begin_cli_run(results_root: Path | None) -> float:
    """What ``screen`` and ``explore`` do before reading their file: ``--results-root`` becomes
    ``RAMANSCREEN_RESULTS_ROOT`` (which the file's loader reads), and SIGTERM raises
    KeyboardInterrupt, so a terminated run unwinds its server and cluster. Returns the start time
    (``time.monotonic()``, s)."""
    import signal
    import time

    if results_root is not None:
        os.environ["RAMANSCREEN_RESULTS_ROOT"] = str(results_root.expanduser().resolve())

    def _terminate(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    return time.monotonic()


def run_under_board(board: ProgressBoard, title: str, run, *, out, err, t0: float, error_lines: tuple[str, ...] = ()):
    """``run(announce)`` under the live per-material view of ``board`` (``campaign_table``), with
    the library logs in ``board.log_path`` (None: on the terminal); ``announce(ui_url)`` puts the
    Prefect UI link on the view. On any error the log file's path and ``error_lines`` go to
    ``err`` before it propagates. What ``screen`` and ``explore`` share."""
    import time

    from rich.live import Live

    from ramanscreen.flows.progress import watching

    def announce(ui: str | None) -> None:
        board.ui_url = ui

    logs = contextlib.nullcontext() if board.log_path is None else library_logs_to_file(board.log_path)
    if board.log_path is not None:
        out.print(f"library logs: {board.log_path}  (--verbose shows them here)")
    live = Live(get_renderable=lambda: campaign_table(board, title=title, elapsed_s=time.monotonic() - t0),
                console=out, refresh_per_second=2, transient=False, redirect_stderr=False)
    try:
        with logs, watching(board), live:
            result = run(announce)
        out.line()
    except BaseException:
        if board.log_path is not None:
            err.print(f"library logs of this run: {board.log_path}")
        for line in error_lines:
            err.print(line)
        raise
    return result
