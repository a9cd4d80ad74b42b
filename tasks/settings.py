"""Global settings, quacc style: defaults here, overridden by a YAML file, then by env.

Order of precedence (last wins): the defaults below, ``~/.ramanscreen.yaml`` (or the file
named by ``RAMANSCREEN_CONFIG``), then environment variables ``RAMANSCREEN_<FIELD>``.

>>> import os
>>> os.environ["RAMANSCREEN_NUM_THREADS"] = "3"
>>> get_settings().num_threads
3
>>> del os.environ["RAMANSCREEN_NUM_THREADS"]
"""

from __future__ import annotations

import dataclasses
import os
import shlex
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ramanscreen.tasks.common import InputError


@dataclass(frozen=True)
class Settings:
    """Machine-level knobs. Per-campaign science settings live in the campaign file."""

    #: Threads for torch / BLAS inside one worker.
    num_threads: int = 2
    #: Where campaigns write results unless the campaign file says otherwise.
    results_root: Path = Path("results")
    #: Launcher prefix for reference (DFPT) codes, e.g. "srun" or
    #: "apptainer exec --bind /scratch containers/reference.sif". Empty: run directly.
    reference_launcher: str = ""
    #: MPI launcher for CP2K and QE; "" runs serially.
    mpirun: str = "mpirun --allow-run-as-root --oversubscribe -np 2"
    #: CP2K executable and data directory (Debian: cp2k.psmp, /usr/share/cp2k).
    cp2k_exe: str = "cp2k.psmp"
    cp2k_data_dir: Path = Path("/usr/share/cp2k")
    #: Quantum ESPRESSO executables and pseudopotential directory.
    pw_exe: str = "pw.x"
    ph_exe: str = "ph.x"
    qe_pseudo_dir: Path | None = None
    #: Scratch space for reference calculations.
    scratch_dir: Path = Path(os.environ.get("TMPDIR", "/tmp")) / "ramanscreen-scratch"
    #: ``ramanscreen query`` (and ``analytics.db.run_query``): a query still running after this
    #: many seconds is interrupted (0: no limit).
    query_timeout_s: float = 60.0
    #: DuckDB memory limit of a query connection (a DuckDB size, e.g. "2GB").
    query_memory_limit: str = "2GB"

    def launcher_argv(self) -> list[str]:
        """The reference launcher prefix split into argv."""
        return shlex.split(self.reference_launcher)

    def mpirun_argv(self) -> list[str]:
        return shlex.split(self.mpirun)


def _coerce(value: Any, annotation: str) -> Any:
    if value is None:
        return None
    if "int" in annotation and "Path" not in annotation:
        return int(value)
    if "float" in annotation:
        return float(value)
    if "Path" in annotation:
        return Path(value).expanduser()
    return str(value)


def get_settings(**overrides: Any) -> Settings:
    """Build :class:`Settings` from defaults, YAML, env and explicit ``overrides``."""
    values: dict[str, Any] = {}
    config = Path(os.environ.get("RAMANSCREEN_CONFIG", Path.home() / ".ramanscreen.yaml"))
    known = {f.name: f for f in fields(Settings)}
    if config.is_file():
        import yaml

        data = yaml.safe_load(config.read_text()) or {}
        if not isinstance(data, dict):
            raise InputError("expected a mapping of settings", file=config, fix="write `key: value` lines")
        for key, value in data.items():
            if key not in known:
                raise InputError(
                    f"unknown setting {key!r}", file=config, field=key, fix=f"use one of {', '.join(known)}"
                )
            values[key] = value
    for name in known:
        env = os.environ.get(f"RAMANSCREEN_{name.upper()}")
        if env is not None:
            values[name] = env
    values.update(overrides)
    try:
        coerced = {k: _coerce(v, str(known[k].type)) for k, v in values.items()}
    except ValueError as exc:
        raise InputError(str(exc), file=config, fix="check the types of your settings") from None
    return dataclasses.replace(Settings(), **coerced)
