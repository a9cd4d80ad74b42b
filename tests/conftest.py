"""Shared pytest set-up. Real components start for real; nothing here mocks a stage.

System packages
---------------
Tests that need something a fresh machine with only Python does not have (a Debian package such
as CP2K's data files, Quantum ESPRESSO, Chromium, SLURM or podman) carry
``@pytest.mark.system("<name>")``. In the default suite they skip with one line naming the
package and how to install it. ``.ci/run`` installs the packages and runs those tests by name with
``--fail-on-skip``, which turns any skip into a failed run, so CI still covers them.

Shared helpers
--------------
This directory is on ``sys.path`` while the tests run (it holds this rootdir ``conftest.py``
and no ``__init__.py``, so pytest inserts it), so the helper modules import by name:
``campaign_helpers`` (a real Prefect server, ``ramanscreen screen`` in a subprocess),
``synthetic_results`` (the paper's four materials as synthetic Parquet results) and
``vasp_formats`` (VASP output files). Child processes a test starts get the same through
the ``helpers_env`` fixture; nothing inserts paths by hand.
"""

from __future__ import annotations

import os
import pwd
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

# Keep every test on the two cores we have and off the network.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")


TESTS = Path(__file__).resolve().parent


@pytest.fixture
def helpers_env() -> dict[str, str]:
    """The environment for a child Python that imports the test helper modules."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def _missing_binaries(*names: str) -> list[str]:
    return [n for n in names if shutil.which(n) is None]


def _need_binaries(package: str, *names: str) -> Callable[[], str | None]:
    def check() -> str | None:
        missing = _missing_binaries(*names)
        if missing:
            return f"needs {package} ({', '.join(missing)} not on PATH; fix: apt-get install -y {package})"
        return None

    return check


def _need_file(package: str, path: str) -> Callable[[], str | None]:
    def check() -> str | None:
        if not Path(path).exists():
            return f"needs {package} ({path} is missing; fix: apt-get install -y {package})"
        return None

    return check


def _need_slurm() -> str | None:
    missing = _missing_binaries("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")
    if missing:
        return f"needs SLURM ({', '.join(missing)} not on PATH; fix: apt-get install -y slurm-wlm munge)"
    if os.geteuid() != 0:
        return "needs SLURM run as root (a private slurmd needs root; fix: run the test as root)"
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return "needs SLURM's munge user (fix: apt-get install -y munge)"
    return None


def _need_podman() -> str | None:
    missing = _missing_binaries("podman", "runc")
    if missing:
        return f"needs podman ({', '.join(missing)} not on PATH; fix: apt-get install -y podman runc debootstrap)"
    return None


#: name -> a check returning why the system package is unusable here, or None.
SYSTEM_PACKAGES: dict[str, Callable[[], str | None]] = {
    "cp2k-data": _need_file("cp2k-data", "/usr/share/cp2k/GTH_POTENTIALS"),
    "cp2k": _need_binaries("cp2k", "cp2k.psmp"),
    "qe": _need_binaries("quantum-espresso", "pw.x", "ph.x"),
    "chromium": _need_binaries("chromium", "chromium"),
    "slurm": _need_slurm,
    "podman": _need_podman,
}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--fail-on-skip", action="store_true", default=False,
                     help="fail the run if any selected test skipped (CI, after installing the system packages)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "system(*names): needs these system packages "
                            f"({', '.join(SYSTEM_PACKAGES)}); skips with the reason when one is missing")


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers(name="system"):
        for name in mark.args:
            if name not in SYSTEM_PACKAGES:
                raise pytest.UsageError(f"{item.nodeid}: unknown system package {name!r} "
                                        f"(use one of {', '.join(SYSTEM_PACKAGES)})")
            reason = SYSTEM_PACKAGES[name]()
            if reason:
                pytest.skip(reason)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not session.config.getoption("--fail-on-skip"):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped:
        if reporter:
            reporter.write_line(f"--fail-on-skip: {len(skipped)} test(s) skipped; every selected test must run here",
                                red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)
