"""Every docstring example of the package runs: one test per module that has examples.

The modules are found by walking the installed ``ramanscreen`` packages, so a new module with
examples is covered without being listed here; a module without examples is simply not
collected.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

PACKAGES = ("ramanscreen.tasks", "ramanscreen.flows", "ramanscreen.analytics")
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _modules() -> list[str]:
    names = []
    for pkg_name in PACKAGES:
        pkg = importlib.import_module(pkg_name)
        names.append(pkg_name)
        names += [m.name for m in pkgutil.walk_packages(pkg.__path__, prefix=f"{pkg_name}.")]
    return sorted(set(names))


def _has_examples(name: str) -> bool:
    if name.endswith("__main__"):
        return False
    module = importlib.import_module(name)
    return any(t.examples for t in doctest.DocTestFinder().find(module, name))


MODULES = [m for m in _modules() if _has_examples(m)]
# modules whose examples read a system package's data: they skip in `make test` with the reason,
# and .ci/run runs them by name after installing the package (--fail-on-skip)
NEEDS_SYSTEM = {"ramanscreen.tasks.reference.cp2k": "cp2k-data"}


def test_the_examples_are_found() -> None:
    """The walk reaches the sub-packages (a collection bug would otherwise pass silently)."""
    assert {"ramanscreen.tasks.spectra", "ramanscreen.tasks.reference", "ramanscreen.tasks.reference.base",
            "ramanscreen.flows.config", "ramanscreen.analytics.report"} <= set(MODULES)
    assert len(MODULES) >= 20


@pytest.mark.parametrize("name", [pytest.param(m, marks=pytest.mark.system(NEEDS_SYSTEM[m])) if m in NEEDS_SYSTEM
                                  else m for m in MODULES])
def test_docstring_examples_run(name: str, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # examples that write relative paths write here
    result = doctest.testmod(importlib.import_module(name), optionflags=FLAGS, verbose=False, report=False)
    assert result.attempted > 0
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {name} failed (run: " \
                               f"python -m pytest --doctest-modules for the diff)"
