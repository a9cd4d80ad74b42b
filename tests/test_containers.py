"""containers/: the Apptainer definition files and build.sh, checked up to the command line.

Apptainer cannot be installed here, so these tests parse every ``.def`` (spython 0.3.14 extracts
sections and validates nothing: the checks are ours), compare its pins with pyproject.toml and
with the Dask/Prefect stack of this process (scheduler and workers must match), check that every
image a campaign's pools name exists, and run build.sh without apptainer.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from ramanscreen.flows.cluster import ClusterSettings

spython_parsers = pytest.importorskip("spython.main.parse.parsers", reason="spython (test extra) not installed")

ROOT = Path(__file__).resolve().parents[1]
CONTAINERS = ROOT / "containers"
CAMPAIGNS = ROOT / "deployments" / "campaigns"
IMAGES = {"md": "md", "reference": "", "ml": ""}  # image -> the project extra it installs ("" = base)
REQUIRED_SECTIONS = ("files", "environment", "post", "test", "labels", "help")
# The scheduler runs in the flow process, the workers in the images: Dask checks these match.
SAME_AS_HERE = ("dask", "distributed", "cloudpickle", "msgpack", "tornado", "toolz", "prefect", "prefect-dask")
PIN = re.compile(r'"([A-Za-z0-9_.\-]+)==([^"\s]+)"')


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _requirements(extra: str) -> dict[str, Requirement]:
    project = _pyproject()["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    if extra:
        reqs += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return {canonicalize_name(r.name): r for r in reqs}


def _recipe(name: str) -> dict:
    parser = spython_parsers.SingularityParser(str(CONTAINERS / f"{name}.def"))
    return parser.recipe


def _sections(name: str) -> dict[str, str]:
    """The raw body of each %section (spython folds %test into %post as echo lines)."""
    out: dict[str, str] = {}
    current = None
    for line in (CONTAINERS / f"{name}.def").read_text().splitlines():
        m = re.match(r"^%(\w+)\s*$", line)
        if m:
            current = m.group(1)
            out[current] = ""
        elif current:
            out[current] += line + "\n"
    return out


def _post(name: str) -> str:
    """%post as spython parsed it, without the %test lines it appends."""
    lines = _recipe(name)["spython-base"].install
    return "\n".join(line for line in lines if not line.endswith(">> /tests.sh") and line != "chmod u+x /tests.sh")


def _pins(text: str) -> dict[str, str]:
    return {canonicalize_name(n): v for n, v in PIN.findall(text)}


@pytest.mark.parametrize("name", list(IMAGES))
def test_def_file_has_every_section_and_a_pinned_base(name):
    path = CONTAINERS / f"{name}.def"
    text = path.read_text()
    header = dict(re.findall(r"^(Bootstrap|From):\s*(\S+)", text, flags=re.M))
    assert header.get("Bootstrap") == "docker"
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", header.get("From", "")), header
    sections = set(re.findall(r"^%(\w+)", text, flags=re.M))
    for section in REQUIRED_SECTIONS:
        assert section in sections, f"{path.name}: no %{section}"
    recipe = _recipe(name)
    assert list(recipe) == ["spython-base"]
    r = recipe["spython-base"]
    assert r.fromHeader.startswith("python:3.11")
    assert r.install and r.test and r.labels and r.files and r.environ
    labels = dict(line.split(None, 1) for line in r.labels)
    assert r.test == "/bin/bash /tests.sh"  # spython's rendering of a %test section
    assert labels["ramanscreen.stage"] == name
    assert labels["ramanscreen.version"] == _pyproject()["project"]["version"]
    assert labels["org.opencontainers.image.title"] == f"ramanscreen-{name}"
    # The project itself goes in, from the repository root (build.sh runs there).
    copied = {line.split()[0] for line in r.files}
    assert {"pyproject.toml", "flows", "tasks", "analytics"} <= copied
    for src in copied:
        assert (ROOT / src).exists(), f"{name}.def copies {src}, which does not exist"
    assert "PREFECT_SERVER_ANALYTICS_ENABLED=false" in "\n".join(r.environ)
    # %test runs a smoke command, in the image, that exercises the installed CLI.
    assert "ramanscreen --help" in _sections(name)["test"]


@pytest.mark.parametrize("name", list(IMAGES))
def test_def_installs_the_project_with_the_right_extras(name):
    post = _post(name)
    extra = IMAGES[name]
    installs = re.findall(r'pip install[^\n]*"(/opt/ramanscreen(?:\[[^\]]*\])?)"', post)
    assert installs == [f"/opt/ramanscreen[{extra}]" if extra else "/opt/ramanscreen"], installs
    if name == "reference":
        apt = re.search(r"apt-get install[^\n]*", post).group(0)
        for pkg in ("cp2k", "cp2k-data", "quantum-espresso", "openmpi-bin"):
            assert re.search(rf"\s{re.escape(pkg)}(\s|$)", apt), f"reference.def does not apt-install {pkg}"
        test = _sections(name)["test"]
        assert "cp2k.psmp --version" in test and "pw.x" in test
    if name != "md":
        assert "torch" not in post, f"{name}.def must not pull torch"


def _campaign_images() -> list[tuple[str, str, str]]:
    out = []
    for path in sorted(CAMPAIGNS.glob("*.toml")):
        cluster = tomllib.loads(path.read_text()).get("cluster", {})
        pythons = [("cluster", cluster.get("python", ""))]
        pythons += [(f"cluster.pools.{p}", t.get("python", "")) for p, t in cluster.get("pools", {}).items()]
        for where, python in pythons:
            for image in re.findall(r"(\S+\.sif)\b", python):
                out.append((path.name, where, image))
    return out


def test_hpc_example_campaign_uses_slurm_pools_in_images():
    path = CAMPAIGNS / "hpc-example.toml"
    settings = ClusterSettings.from_dict(tomllib.loads(path.read_text())["cluster"], file=path.name)
    assert settings.kind == "slurm" and settings.pool_names == ("md", "reference", "ml")
    for pool in settings.pools:
        assert re.match(rf"apptainer exec .*containers/{pool.name}\.sif python$", pool.slurm["python"])
    assert {img for f, _w, img in _campaign_images() if f == path.name} == {
        f"containers/{n}.sif" for n in IMAGES}


@pytest.mark.parametrize(("campaign", "where", "image"), _campaign_images() or [pytest.param("", "", "", marks=pytest.mark.skip("no campaign names an image"))])
def test_every_image_a_campaign_names_has_a_def_file(campaign, where, image):
    image_path = Path(image)
    assert image_path.parent.as_posix() in ("containers", str(CONTAINERS)), (
        f"{campaign}: {where}.python runs {image}; images live in containers/")
    assert (CONTAINERS / f"{image_path.stem}.def").is_file(), (
        f"{campaign}: {where}.python runs {image}, but containers/{image_path.stem}.def does not exist")


@pytest.mark.parametrize("path", sorted(CAMPAIGNS.glob("*.toml")), ids=lambda p: p.name)
def test_every_campaign_cluster_section_is_valid(path):
    ClusterSettings.from_dict(tomllib.loads(path.read_text()).get("cluster"), file=path.name)


def _path_without_apptainer(tmp_path: Path) -> str:
    """A PATH holding only what build.sh needs, so apptainer is surely absent."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "sed", "printf"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    return str(bin_dir)


def test_build_sh_fails_in_one_line_without_apptainer(tmp_path):
    env = {"PATH": _path_without_apptainer(tmp_path), "HOME": str(tmp_path)}
    out = subprocess.run([str(CONTAINERS / "build.sh")], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 127
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "apptainer" in lines[0] and "not found" in lines[0] and "fix:" in lines[0]
    assert not list(CONTAINERS.glob("*.sif"))


def test_build_sh_command_lines(tmp_path):
    env = {**os.environ, "PATH": _path_without_apptainer(tmp_path)}
    out = subprocess.run([str(CONTAINERS / "build.sh"), "--dry-run"], env=env, capture_output=True, text=True,
                         timeout=30, check=True)
    assert out.stdout.splitlines() == [f"apptainer build containers/{n}.sif containers/{n}.def" for n in IMAGES]
    env["APPTAINER_BUILD_FLAGS"] = "--fakeroot --force"
    out = subprocess.run([str(CONTAINERS / "build.sh"), "--dry-run", "reference"], env=env, capture_output=True,
                         text=True, timeout=30, check=True)
    assert out.stdout.splitlines() == ["apptainer build --fakeroot --force containers/reference.sif containers/reference.def"]
    bad = subprocess.run([str(CONTAINERS / "build.sh"), "dft"], env=env, capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "unknown image 'dft'" in bad.stderr
