"""The terminal of ``ramanscreen screen``: library logs (this process's and its children's) go to
the log file, the live table stays on stdout."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

from rich.console import Console

from ramanscreen.flows.progress import ProgressBoard, watching
from ramanscreen.flows.terminal import campaign_table, library_logs_to_file


def test_library_logs_go_to_the_file_stdout_stays(tmp_path: Path, capfd) -> None:
    log = tmp_path / "logs" / "run.log"
    with library_logs_to_file(log):
        logging.getLogger("distributed.worker").info("worker INFO flood")
        print("table row", flush=True)
        # a child started inside the block (like a Dask worker) inherits the redirected stderr
        subprocess.run([sys.executable, "-c", "import sys; sys.stderr.write('child says hi\\n')"], check=True)
    subprocess.run([sys.executable, "-c", "import sys; sys.stderr.write('after the block\\n')"], check=True)
    out, err = capfd.readouterr()
    text = log.read_text()
    assert "child says hi" in text and "distributed.worker: worker INFO flood" in text
    assert "table row" in out and "child says hi" not in out + err
    assert "after the block" in err and "after the block" not in text  # the terminal's stderr is back


def test_the_table_shows_stage_md_progress_eta_and_links(tmp_path: Path) -> None:
    import json

    state = tmp_path / "md.state.json"
    state.write_text(json.dumps({"step": 1000, "total": 2000, "dt_fs": 2.0, "ps_per_day": 172.8}))
    board = ProgressBoard()
    board.ui_url, board.flow_run_id, board.log_path = "http://127.0.0.1:4200", "f-1", tmp_path / "x.log"
    with watching(board):
        from ramanscreen.flows.progress import report, track

        track("Na3PS4", md_state=state, total_ps=4.0)
        report("Na3PS4", "md")
        report("AgI", "failed", "RuntimeError: boom")
    (row, failed) = board.snapshot()
    assert row.md_ps == (2.0, 4.0) and row.md_eta_s == 1000.0  # 2 ps left at 172.8 ps/day
    console = Console(width=120, record=True, file=open(tmp_path / "screen.txt", "w"))
    console.print(campaign_table(board, title="t", elapsed_s=65))
    text = console.export_text()
    assert "http://127.0.0.1:4200/runs/flow-run/f-1" in text and str(tmp_path / "x.log") in text
    assert "2/4 ps, 173 ps/day" in text and "ETA 16:40" in text
    assert "failed" in text and "RuntimeError: boom" in text and "elapsed 1:05" in text
