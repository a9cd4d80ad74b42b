"""requirements.lock, the one lock: it satisfies pyproject.toml, this venv was installed from it,
and each image's requirement set (containers/requirements-<set>.txt) is a subset of it with the
same versions and hashes."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
IMAGE_SETS = {"md": ["md"], "core": []}  # requirement set -> the project extras it holds
# The lock's platform (Makefile: uv pip compile --python-version 3.11 --python-platform x86_64-manylinux_2_28).
LOCK_ENV = {**default_environment(), "python_version": "3.11", "python_full_version": "3.11.7",
            "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
            "os_name": "posix", "implementation_name": "cpython", "platform_python_implementation": "CPython"}
_ENTRY = re.compile(r"^([A-Za-z0-9_.\-]+)==(\S+)((?:\s*\\\n\s*--hash=sha256:[0-9a-f]{64})+)", re.M)


def parse_lock(path: Path) -> dict[str, tuple[Version, frozenset[str]]]:
    """name -> (version, sha256 hashes) of a hashed requirements file."""
    text = path.read_text()
    out = {}
    for name, version, hashes in _ENTRY.findall(text):
        out[canonicalize_name(name)] = (Version(version), frozenset(re.findall(r"sha256:([0-9a-f]{64})", hashes)))
    n_pins = len(re.findall(r"^[A-Za-z0-9_.\-]+==", text, flags=re.M))
    assert n_pins == len(out), f"{path.name}: {n_pins - len(out)} pins without a sha256 hash"
    return out


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def requirements(extras: list[str] | None = None, *, groups: tuple[str, ...] = ("build",)) -> list[Requirement]:
    project = pyproject()
    reqs = [Requirement(r) for r in project["project"]["dependencies"]]
    for extra in project["project"]["optional-dependencies"] if extras is None else extras:
        reqs += [Requirement(r) for r in project["project"]["optional-dependencies"][extra]]
    for group in groups:
        reqs += [Requirement(r) for r in project["dependency-groups"][group]]
    return [r for r in reqs if r.marker is None or r.marker.evaluate(LOCK_ENV)]


def assert_satisfies(lock: dict[str, tuple[Version, frozenset[str]]], reqs: list[Requirement], where: str) -> None:
    for req in reqs:
        name = canonicalize_name(req.name)
        assert name in lock, f"{where} has no {req.name} (fix: make lock)"
        version = lock[name][0]
        assert req.specifier.contains(version, prereleases=True), f"{where}: {req.name}=={version} violates {req} (fix: make lock)"


def test_lock_is_hashed_and_satisfies_pyproject() -> None:
    lock = parse_lock(LOCK)
    assert len(lock) > 100
    assert "make lock" in LOCK.read_text().splitlines()[1], "the lock's header names the command that made it"
    assert_satisfies(lock, requirements(), "requirements.lock")
    # the CPU build of torch, never a CUDA one (which would also pull nvidia-* wheels)
    assert lock["torch"][0].local == "cpu"
    assert not [n for n in lock if n.startswith("nvidia-") and n != "nvidia-ml-py3"]
    # the build backend pyproject declares is in the lock (installs use --no-build-isolation)
    for r in pyproject()["build-system"]["requires"]:
        assert_satisfies(lock, [Requirement(r)], "requirements.lock (build-system)")


@pytest.mark.parametrize("name", list(IMAGE_SETS))
def test_image_requirement_sets_are_subsets_of_the_lock(name: str) -> None:
    lock = parse_lock(LOCK)
    path = ROOT / "containers" / f"requirements-{name}.txt"
    subset = parse_lock(path)
    for pkg, (version, hashes) in subset.items():
        assert pkg in lock, f"{path.name} has {pkg}, which the lock lacks (fix: make lock)"
        assert lock[pkg] == (version, hashes), f"{path.name}: {pkg} {version} differs from the lock (fix: make lock)"
    assert_satisfies(subset, requirements(IMAGE_SETS[name]), path.name)
    if "md" not in IMAGE_SETS[name]:
        assert "torch" not in subset, f"{path.name} must not pull torch"
    # the Dask/Prefect stack is the flow process's: the scheduler (outside) and workers (inside) must match
    for pkg in ("dask", "distributed", "cloudpickle", "msgpack", "tornado", "toolz", "prefect", "prefect-dask"):
        assert subset[pkg] == lock[pkg]


def test_this_venv_was_installed_from_the_lock() -> None:
    """Every distribution in this environment is in the lock at exactly the locked version."""
    lock = parse_lock(LOCK)
    off = []
    for dist in importlib.metadata.distributions():
        name = canonicalize_name(dist.metadata["Name"])
        if name == "ramanscreen":
            continue
        if name not in lock or lock[name][0] != Version(dist.version):
            off.append(f"{name}=={dist.version} (lock: {lock[name][0] if name in lock else 'absent'})")
    assert not off, "installed outside the lock (fix: rm -rf .venv && make test): " + ", ".join(sorted(off))
