"""Shared plumbing for external reference codes (CP2K, QE): command lines, launchers, runs, logs."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ramanscreen.tasks.common import InputError
from ramanscreen.tasks.reference.base import ReferenceCalculationError
from ramanscreen.tasks.settings import get_settings


def command_line(exe: str, args: Sequence[str], *, launcher: str | None, mpirun: str | None) -> list[str]:
    """``launcher + mpirun + exe + args`` (launcher outermost: ``srun``, ``apptainer exec IMG``)."""
    import shlex

    settings = get_settings()
    launcher_argv = settings.launcher_argv() if launcher is None else shlex.split(launcher)
    mpirun_argv = settings.mpirun_argv() if mpirun is None else shlex.split(mpirun)
    return [*launcher_argv, *mpirun_argv, exe, *args]


def check_executable(argv: list[str], exe: str, setting: str) -> None:
    # Only when nothing wraps the executable: inside a container it need not exist on the host.
    if (argv[0] == exe or Path(argv[0]).name in {"mpirun", "mpiexec"}) and shutil.which(exe) is None:
        raise InputError(
            f"executable {exe!r} not found on PATH",
            field=setting,
            fix=f"install it or set RAMANSCREEN_{setting.upper()} (or a launcher prefix)",
        )


def run_code(
    argv: list[str],
    workdir: Path,
    stdout_name: str,
    timeout_s: float | None,
    check: Callable[[str], None] | None = None,
    log_name: str | None = None,
) -> tuple[str, float]:
    """Run ``argv`` in ``workdir`` (stdout+stderr to ``stdout_name``); ``check(log)`` runs on
    the log (``log_name`` or stdout) *before* the exit code is judged, so that a code that
    stops on non-convergence raises :class:`ReferenceConvergenceError`, not a generic failure."""
    t0 = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    with open(workdir / stdout_name, "w") as out:
        try:
            proc = subprocess.run(
                argv, cwd=workdir, stdout=out, stderr=subprocess.STDOUT, timeout=timeout_s, env=env, check=False
            )
        except subprocess.TimeoutExpired:
            raise ReferenceCalculationError(f"{argv[0]} timed out after {timeout_s} s", workdir=workdir) from None
        except FileNotFoundError:
            raise InputError(
                f"cannot execute {argv[0]!r}", field="reference_launcher", fix="check the launcher/mpirun settings"
            ) from None
    text = (workdir / stdout_name).read_text(errors="replace")
    log_path = workdir / (log_name or stdout_name)
    log = log_path.read_text(errors="replace") if log_path.is_file() else ""
    if check is not None:
        check(log)
    if proc.returncode != 0:
        raise ReferenceCalculationError(
            f"{' '.join(argv)} exited with code {proc.returncode}: {tail(log + text)}", log=log + text, workdir=workdir
        )
    return log, time.perf_counter() - t0


def tail(text: str, n: int = 6) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(lines[-n:])


def make_workdir(workdir: str | os.PathLike[str] | None, prefix: str) -> Path:
    if workdir is None:
        import tempfile

        root = get_settings().scratch_dir
        root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=prefix, dir=root))
    path = Path(workdir)
    path.mkdir(parents=True, exist_ok=True)
    return path



def open_text(path: Path) -> str:
    """Read a text file, transparently gunzipping ``*.gz``."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rt", errors="replace") as fh:
                return fh.read()
        return path.read_text(errors="replace")
    except (OSError, EOFError) as exc:
        raise InputError(f"cannot read file ({exc.__class__.__name__}: {exc})", file=path,
                         fix="check the file is complete and readable") from None
