"""containers/: the per-stage images (podman, from containers/<stage>.Containerfile) and their
Apptainer recipes (containers/<stage>.def, bootstrapped from the image's saved archive).

Cheap structural checks run everywhere: one recipe per stage, each image installs its lock
subset with hashes and then only the project, each .def bootstraps from the archive build.sh
saves its image to, tags carry the version and the lock digest. The slow tests need podman and
the images (`containers/build.sh`; .ci/run does both) and run the stages inside them for real:
the ml pool of a quick campaign as a Dask worker in the ml image, a CHGNet MD in the md image
without network, a CP2K calculation in the reference image.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import cloudpickle
import pytest
from distributed.diagnostics.plugin import SchedulerPlugin
from slurm_fixture import prefect_api  # noqa: F401  (fixture)

from ramanscreen.flows.cluster import ClusterSettings

ROOT = Path(__file__).resolve().parents[1]
CONTAINERS = ROOT / "containers"
CAMPAIGNS = ROOT / "deployments" / "campaigns"
OUT = CONTAINERS / "out"
STAGES = ("md", "reference", "ml")
REQUIREMENTS = {"md": "requirements-md.txt", "reference": "requirements-core.txt", "ml": "requirements-core.txt"}
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
LOCK_DIGEST = hashlib.sha256((ROOT / "requirements.lock").read_bytes()).hexdigest()[:12]

# The scheduler plugin below runs in this process, but ship it by value like test_cluster does.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _dry_run(*args: str) -> list[str]:
    out = subprocess.run([str(CONTAINERS / "build.sh"), "--dry-run", *args], capture_output=True, text=True,
                         timeout=30, check=True)
    return out.stdout.splitlines()


def _instructions(stage: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Containerfile, continuation lines joined, comments dropped."""
    text = (CONTAINERS / f"{stage}.Containerfile").read_text()
    text = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    return [(m.group(1).upper(), m.group(2)) for m in re.finditer(r"(?m)^(\w+)\s+(.*)$", text)]


# ----------------------------------------------------------------------------- structure


@pytest.mark.parametrize("stage", STAGES)
def test_each_def_bootstraps_from_the_archive_its_image_is_saved_to(stage):
    lines = _dry_run(stage)
    build = next(line for line in lines if line.startswith("podman build"))
    assert f"-f containers/{stage}.Containerfile" in build
    ref = f"localhost/ramanscreen-{stage}"
    assert f"-t {ref}:{VERSION}" in build and f"-t {ref}:lock-{LOCK_DIGEST}" in build, build
    save = next(line for line in lines if line.startswith("podman save"))
    archive = re.search(r"-o (\S+) (\S+)$", save)
    assert archive and archive.group(2) == f"{ref}:{VERSION}", save
    header = dict(re.findall(r"(?m)^(Bootstrap|From):\s*(\S+)", (CONTAINERS / f"{stage}.def").read_text()))
    assert header.get("Bootstrap") == "docker-archive", header
    assert (ROOT / header["From"]).resolve() == Path(archive.group(1)).resolve(), (header, save)
    sif = next(line for line in lines if line.startswith("apptainer build"))
    assert sif.endswith(f"containers/{stage}.sif containers/{stage}.def"), sif


@pytest.mark.parametrize("stage", STAGES)
def test_each_image_installs_its_lock_subset_then_only_the_project(stage):
    steps = _instructions(stage)
    assert steps[0][0] == "ARG" and steps[1] == ("FROM", "${BASE}")
    requirements = REQUIREMENTS[stage]
    copies = [args for op, args in steps if op == "COPY"]
    assert copies[0] == f"containers/{requirements} /opt/ramanscreen/requirements.txt", copies
    pips = [args for op, args in steps if op == "RUN" and "pip install" in args]
    assert len(pips) == 2, pips
    lock_install, project_install = (
        re.search(r"pip install ([^&]*)", re.sub(r"\$\([^)]*\)", "", p)).group(1).split() for p in pips)
    assert {"--require-hashes", "--no-deps", "-r", "/opt/ramanscreen/requirements.txt"} <= set(lock_install)
    assert {"--no-deps", "--no-build-isolation", "."} <= set(project_install) and "-r" not in project_install
    assert "pip check" in pips[1]
    # the project's source goes in, and exists
    for args in copies[1:]:
        *sources, dest = args.split()
        assert dest.startswith("/opt/ramanscreen"), args
        for src in sources:
            assert (ROOT / src).exists(), f"{stage}.Containerfile copies {src}, which does not exist"
    labels = " ".join(args for op, args in steps if op == "LABEL")
    assert f"ramanscreen.stage={stage}" in labels and "ramanscreen.lock=${LOCK_DIGEST}" in labels
    assert f"ramanscreen.requirements=containers/{requirements}" in labels
    torch = re.search(r"(?m)^torch==", (CONTAINERS / requirements).read_text())
    assert bool(torch) == (stage == "md"), f"only the md image carries torch ({requirements})"
    apt = " ".join(args for op, args in steps if op == "RUN" and "apt-get install" in args)
    if stage == "reference":
        for pkg in ("cp2k", "cp2k-data"):
            assert re.search(rf"\s{re.escape(pkg)}(\s|$)", apt), f"reference image does not apt-install {pkg}"
    else:
        assert not apt, f"{stage} image installs Debian packages: {apt}"


def test_build_sh_makes_the_base_with_debootstrap_from_the_archive_apt_uses():
    lines = _dry_run()
    boot = lines[0].split()
    assert boot[:2] == ["debootstrap", "--variant=minbase"] and "python3,python3-venv" in boot[2]
    sources = " ".join(p.read_text() for p in Path("/etc/apt").glob("sources.list*") if p.is_file())
    sources += " ".join(p.read_text() for p in Path("/etc/apt/sources.list.d").glob("*.sources"))
    if sources.strip():
        assert boot[-1] in sources, f"debootstrap mirror {boot[-1]} is not one apt uses"
    assert "podman import" in lines[1] and lines[1].endswith("localhost/ramanscreen-base:bookworm")
    assert sum(line.startswith("podman build") for line in lines) == len(STAGES)


def test_build_sh_rejects_an_unknown_image_in_one_line():
    bad = subprocess.run([str(CONTAINERS / "build.sh"), "dft"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "unknown image 'dft'" in bad.stderr


def test_build_sh_fails_in_one_line_without_podman(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "sed", "printf", "head", "sha256sum", "cut", "grep", "awk"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    out = subprocess.run([str(CONTAINERS / "build.sh"), "ml"], env={"PATH": str(bin_dir), "HOME": str(tmp_path)},
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 127, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "podman" in lines[0] and "fix: apt-get install" in lines[0], out.stderr


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
    assert settings.kind == "slurm" and settings.pool_names == STAGES
    for pool in settings.pools:
        assert re.match(rf"apptainer exec .*containers/{pool.name}\.sif python$", pool.slurm["python"])
    assert {img for f, _w, img in _campaign_images() if f == path.name} == {f"containers/{n}.sif" for n in STAGES}


@pytest.mark.parametrize(("campaign", "where", "image"), _campaign_images())
def test_every_image_a_campaign_names_has_a_recipe(campaign, where, image):
    image_path = Path(image)
    assert image_path.parent.as_posix() in ("containers", str(CONTAINERS)), (
        f"{campaign}: {where}.python runs {image}; images live in containers/")
    for suffix in (".def", ".Containerfile"):
        assert (CONTAINERS / f"{image_path.stem}{suffix}").is_file(), (
            f"{campaign}: {where}.python runs {image}, but containers/{image_path.stem}{suffix} does not exist")


@pytest.mark.parametrize("path", sorted(CAMPAIGNS.glob("*.toml")), ids=lambda p: p.name)
def test_every_campaign_cluster_section_is_valid(path):
    ClusterSettings.from_dict(tomllib.loads(path.read_text()).get("cluster"), file=path.name)


# ----------------------------------------------------------------------------- in the images


def _podman_env() -> dict[str, str]:
    conf = OUT / "containers.conf"
    if not conf.is_file():
        pytest.fail(f"{conf} missing (fix: containers/build.sh, which writes it and builds the images)")
    return {**os.environ, "CONTAINERS_CONF": str(conf)}


def _image(stage: str) -> str:
    """The stage's image built from this lock (containers/build.sh), or fail saying so."""
    ref = f"localhost/ramanscreen-{stage}:lock-{LOCK_DIGEST}"
    if subprocess.run(["podman", "image", "exists", ref], env=_podman_env()).returncode != 0:
        pytest.fail(f"image {ref} not built (fix: containers/build.sh {stage})")
    return f"localhost/ramanscreen-{stage}:{VERSION}"


class _Placement(SchedulerPlugin):
    """Scheduler plugin: for every task that finished, its key, the worker it ran on and its
    resource restrictions (the pool it needed)."""

    name = "ramanscreen-test-placement"

    def __init__(self, scheduler) -> None:
        self.scheduler = scheduler
        self.rows: list[dict] = []

    def transition(self, key, start, finish, *args, **kwargs) -> None:
        if start == "processing" and finish == "memory":
            ts = self.scheduler.tasks.get(key)
            self.rows.append({"key": str(key), "worker": kwargs.get("worker"),
                              "resources": dict(ts.resource_restrictions or {}) if ts else {}})


def _in_worker() -> dict:
    import socket

    return {"hostname": socket.gethostname(), "python": sys.executable, "container": os.path.exists("/run/.containerenv")}


@pytest.mark.slow
@pytest.mark.system("podman")
def test_ml_pool_in_the_ml_image_serves_the_quick_campaign(prefect_api, tmp_path):  # noqa: F811
    """quick.toml's pools, with the ml pool's worker started by its command inside the ml image
    (podman, host network to reach the scheduler and the Prefect API, the run folders mounted at
    the same paths). `ramanscreen screen` runs a one-material campaign on it; every task needing
    the ml pool (fit, predict, transport, spectrum, write) ran on that worker, which is the
    image's Python in a container."""
    from campaign_helpers import mini_campaign, on_running_cluster, quick_cluster, screen_cmd

    from ramanscreen.flows.cluster import open_cluster

    env = _podman_env()
    image = _image("ml")
    saved = os.environ.get("CONTAINERS_CONF")
    os.environ["CONTAINERS_CONF"] = env["CONTAINERS_CONF"]  # the cluster starts podman with this environment
    root = tmp_path / "results"
    campaign = mini_campaign(tmp_path / "in-container.toml", "in-container", ("AgI",), root)
    cfg = quick_cluster()
    cfg["pools"]["ml"] = {**cfg["pools"]["ml"], "python": (
        f"podman run --rm --network=host --hostname rs-ml-pool -e PREFECT_API_URL -v {tmp_path}:{tmp_path} {image} python")}
    try:
        with open_cluster(cfg) as running:
            scheduler = running.cluster.scheduler  # in this process (LocalCluster)
            plugin = _Placement(scheduler)
            scheduler.add_plugin(plugin)
            ml = [addr for addr, ws in scheduler.workers.items() if "ml" in ws.resources]
            assert len(ml) == 1, ml
            from distributed import Client

            with Client(running.address) as client:
                inside = client.run(_in_worker, workers=ml)[ml[0]]
                outside = _in_worker()
            on_running_cluster(campaign, running.address)
            proc = subprocess.run(screen_cmd(campaign), env=dict(os.environ), cwd=tmp_path, capture_output=True,
                                  text=True, timeout=1200)
    finally:
        if saved is None:
            os.environ.pop("CONTAINERS_CONF", None)
        else:
            os.environ["CONTAINERS_CONF"] = saved
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "ranking of 'in-container'" in proc.stdout
    assert inside == {"hostname": "rs-ml-pool", "python": "/opt/venv/bin/python", "container": True}, inside
    assert outside["hostname"] != "rs-ml-pool" and not outside["container"]
    on_ml = [r for r in plugin.rows if "ml" in r["resources"]]
    assert on_ml and all(r["worker"] == ml[0] for r in on_ml), plugin.rows
    names = {re.sub(r"-[0-9a-f]{32}$|-[0-9a-f-]{36}$", "", r["key"]) for r in on_ml}
    assert {"fit_task", "predict_task", "spectrum_task", "transport_task", "write_task"} <= names, names
    elsewhere = [r for r in plugin.rows if r["worker"] == ml[0] and "ml" not in r["resources"]]
    assert not elsewhere, elsewhere
    print(f"\n{len(on_ml)} ml-pool tasks ran in the ml container ({inside}): {sorted(names)}")


def _podman_run(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", "run", "--rm", *args], env=_podman_env(), capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
@pytest.mark.system("podman")
def test_md_image_runs_chgnet_md_without_network(tmp_path):
    """`ramanscreen md` with CHGNet in the md image, --network=none: the weights ship in the wheel."""
    image = _image("md")
    out = _podman_run("--network=none", "-v", f"{tmp_path}:/work", image,
                      "ramanscreen", "md", "AgI", "--n-atoms", "32", "--temperature-k", "500", "--dt-fs", "2",
                      "--steps", "4", "--calculator", "chgnet", "--num-threads", "2", "--quiet", "--out-dir", "/work/md",
                      timeout=900)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    meta = json.loads((tmp_path / "md" / "md.json").read_text())
    assert meta["calculator"] == "chgnet" and meta["n_frames"] == 5, meta
    assert 0 < meta["temperature_mean_k"] < 5000
    assert (tmp_path / "md" / "md.traj").stat().st_size > 0
    print(f"\nCHGNet MD in {image} (--network=none): {meta['n_frames']} frames, T_mean={meta['temperature_mean_k']:.0f} K")


_CP2K_SI8 = """
import json, sys
import numpy as np
from ase.build import bulk
from ramanscreen.tasks.reference import Cp2kBackend, epsilon_from_alpha
atoms = bulk("Si", "diamond", a=5.431, cubic=True)
res = Cp2kBackend(cutoff_ry=200, rel_cutoff_ry=40).compute(atoms, workdir="/work/cp2k")
eps = epsilon_from_alpha(res.alpha_A3, atoms.get_volume())[0, 0]
print(json.dumps({"alpha_A3": np.asarray(res.alpha_A3).tolist(), "eps": float(eps), "method": res.method,
                  "wall_s": res.meta["wall_s"], "python": sys.executable}))
"""


@pytest.mark.slow
@pytest.mark.system("podman")
def test_reference_image_runs_the_cp2k_backend(tmp_path):
    """The CP2K backend (Debian's cp2k + cp2k-data inside the image, its mpirun) on the 8-atom Si
    cell, as tests/test_reference_dft.py runs it on the host; --network=none."""
    image = _image("reference")
    out = _podman_run("--network=none", "-v", f"{tmp_path}:/work", image, "python", "-c", _CP2K_SI8, timeout=1200)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    alpha = res["alpha_A3"]
    assert res["python"] == "/opt/venv/bin/python" and res["method"].startswith("cp2k-linres-polar")
    assert abs(alpha[0][1]) < 1e-3 * alpha[0][0] and abs(alpha[0][0] - alpha[2][2]) < 1e-3 * alpha[0][0]
    assert 4.0 < res["eps"] < 14.0, res
    assert (tmp_path / "cp2k" / "polar.out").is_file()
    print(f"\nCP2K Si8 in {image}: alpha_xx={alpha[0][0]:.4f} A^3, eps={res['eps']:.3f}, wall={res['wall_s']:.1f} s")

