"""flows/cluster/: the [cluster] schema, per-stage pools (one by worker command) on a real LocalCluster under a real
Prefect server, SLURM job scripts per pool, and a worker killed mid-task."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import cloudpickle
import dask
import psutil
import pytest
from prefect import flow, task
from slurm_fixture import prefect_api  # noqa: F401  (fixture)

from ramanscreen.flows.cluster import (
    STAGES,
    ClusterSettings,
    RunningCluster,
    make_task_runner,
    on_pool,
    open_cluster,
    stage_resources,
)
from ramanscreen.tasks.common import InputError

# The workers cannot import this test module by name: ship its tasks by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

POOLS = {"md": {}, "reference": {"workers": 2}, "ml": {}}


@task
def where(stage: str) -> dict:
    import distributed

    w = distributed.get_worker()
    return {"stage": stage, "worker": w.address, "resources": dict(w.state.total_resources),
            "pool_env": os.environ.get("RS_TEST_POOL")}


@task
def fragile(marker: str) -> dict:
    """Kill our own worker process on the first attempt; succeed on the rescheduled one."""
    import os
    import signal
    import time
    from pathlib import Path

    import distributed

    m = Path(marker)
    if not m.exists():
        m.write_text(str(os.getpid()))
        time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGKILL)
    return {"pid": os.getpid(), "killed_pid": int(m.read_text()), "worker": distributed.get_worker().address}


@flow
def per_stage(n_per_stage: int = 3) -> list[dict]:
    futures = []
    for stage in STAGES:
        with on_pool(stage):
            futures += [where.submit(stage) for _ in range(n_per_stage)]
    return [f.result() for f in futures]


@flow
def survive(marker: str) -> dict:
    return fragile.submit(marker).result()


def _flow_run_on_server(state) -> str:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)
    return run.state.type.value


# ------------------------------------------------------------------------------ schema


@pytest.mark.parametrize(
    ("cfg", "field", "words"),
    [
        ({"kind": "kubernetes"}, "cluster.kind", "unknown kind"),
        ({"kind": "local", "n_workers": 0}, "cluster.n_workers", ">= 1"),
        ({"kind": "local", "n_workers": "2"}, "cluster.n_workers", "an integer"),
        ({"kind": "local", "queue": "x"}, "cluster.queue", 'kind = "slurm" only'),
        ({"kind": "local", "bogus": 1}, "cluster.bogus", "unknown key"),
        ({"kind": "address"}, "cluster.address", "required"),
        ({"kind": "address", "address": "localhost:8786"}, "cluster.address", "not a Dask scheduler address"),
        ({"kind": "slurm", "memory": "4GB"}, "cluster.cores", "required"),
        ({"kind": "slurm", "cores": 4}, "cluster.memory", "required"),
        ({"kind": "slurm", "cores": 4, "memory": "4GB", "job_extra_directives": "--qos=x"},
         "cluster.job_extra_directives", "a list of strings"),
        ({"kind": "slurm", "cores": 4, "memory": "4GB", "minimum_jobs": 3, "maximum_jobs": 2},
         "cluster.minimum_jobs", "exceeds"),
        ({"kind": "slurm", "cores": 4, "memory": "4GB", "processes": 2}, "cluster.processes", "not supported"),
        ({"kind": "local", "pools": {"md": {}, "reference": {}, "ml": {}, "dft": {}}}, "cluster.pools.dft", "unknown stage"),
        ({"kind": "local", "pools": {"md": {}, "ml": {}}}, "cluster.pools.reference", "wait forever"),
        ({"kind": "address", "address": "tcp://h:8786", "pools": {"md": {"python": "apptainer exec containers/md.sif python"},
                                                                  "reference": {}, "ml": {}}},
         "cluster.pools.md.python", 'not "address"'),
        ({"kind": "local", "pools": {"md": {"python": ""}, "reference": {}, "ml": {}}}, "cluster.pools.md.python",
         "non-empty string"),
        ({"kind": "local", "pools": {"md": {"slots": 0}, "reference": {}, "ml": {}}}, "cluster.pools.md.slots", ">= 1"),
        ({"kind": "local", "n_workers": 2, "pools": {"md": {}, "reference": {}, "ml": {}}}, "cluster.n_workers",
         "only without pools"),
        ({"kind": "slurm", "cores": 1, "memory": "1GB",
          "pools": {"md": {"cores": "many"}, "reference": {}, "ml": {}}}, "cluster.pools.md.cores", "positive integer"),
        ({"kind": "slurm", "cores": 1, "memory": "1GB",
          "pools": {"md": {"scheduler_options": {}}, "reference": {}, "ml": {}}}, "cluster.pools.md.scheduler_options",
         "unknown key"),
        ({"kind": "slurm", "cores": 1, "memory": "1GB", "pools": {"md": "big", "reference": {}, "ml": {}}},
         "cluster.pools.md", "must be a table"),
    ],
)
def test_bad_cluster_section_is_one_line_naming_the_field(cfg, field, words):
    with pytest.raises(InputError) as err:
        ClusterSettings.from_dict(cfg, file="campaign.toml")
    text = str(err.value)
    assert err.value.field == field
    assert text.startswith(f"campaign.toml: {field}: ")
    assert words in text
    assert "\n" not in text and "fix:" in text


def test_defaults_and_pass_through():
    assert ClusterSettings.from_dict(None).kind == "local"
    s = ClusterSettings.from_dict({
        "kind": "slurm", "queue": "compute", "account": "chem", "cores": 8, "memory": "32GB",
        "walltime": "12:00:00", "job_extra_directives": ["--qos=long"], "job_script_prologue": ["module load apptainer"],
        "maximum_jobs": 4,
        "pools": {"md": {"python": "apptainer exec containers/md.sif python"},
                  "reference": {"cores": 32, "maximum_jobs": 8, "slots": 2}, "ml": {"minimum_jobs": 1}},
    })
    assert s.slurm["queue"] == "compute" and s.slurm["job_extra_directives"] == ["--qos=long"]
    assert s.pool_names == STAGES
    assert s.pool("reference").maximum_jobs == 8 and s.pool("reference").slots == 2
    assert s.pool("md").maximum_jobs == 4 and s.pool("ml").minimum_jobs == 1
    assert s.pool("md").slurm["python"] == "apptainer exec containers/md.sif python"


def test_on_pool_annotates_only_with_pools():
    plain = {"kind": "local"}
    pooled = {"kind": "address", "address": "tcp://127.0.0.1:8786", "pools": {"md": {}, "reference": {}, "ml": {}}}
    with on_pool("md", plain) as res:
        assert res == {} and "resources" not in dask.get_annotations()
    for stage in STAGES:
        with on_pool(stage, pooled) as res:
            assert res == {stage: 1} == stage_resources(stage, pooled)
            assert dask.get_annotations()["resources"] == {stage: 1}
    with pytest.raises(ValueError, match="unknown stage"):
        stage_resources("dft", pooled)


def test_address_kind_connects_without_starting_anything():
    cfg = {"kind": "address", "address": "tcp://10.1.2.3:8786"}
    with open_cluster(cfg) as running:
        address, close = running
        assert address == "tcp://10.1.2.3:8786" and running.cluster is None and callable(close)
    assert make_task_runner(cfg).address == "tcp://10.1.2.3:8786"
    assert make_task_runner("tcp://10.1.2.3:8786").address == "tcp://10.1.2.3:8786"
    with pytest.raises(InputError, match="not a Dask scheduler address"):
        make_task_runner("10.1.2.3:8786")


def test_slurm_pools_write_their_own_job_scripts():
    """The pass-through options reach each pool's sbatch script (no job is submitted: minimum_jobs = 0)."""
    cfg = {
        "kind": "slurm", "queue": "compute", "account": "chem123", "cores": 4, "memory": "8GB",
        "walltime": "02:00:00", "job_extra_directives": ["--qos=normal"],
        "job_script_prologue": ["module load apptainer"], "scheduler_options": {"dashboard_address": ":0"},
        "pools": {
            "md": {"python": "apptainer exec containers/md.sif python", "maximum_jobs": 3},
            "reference": {"python": "apptainer exec --bind /scratch containers/reference.sif python",
                          "cores": 16, "memory": "64GB", "walltime": "12:00:00", "slots": 2},
            "ml": {"python": "apptainer exec containers/ml.sif python", "queue": "gpu"},
        },
    }
    with open_cluster(cfg) as running:
        scripts = running.job_scripts()
        assert set(scripts) == set(STAGES)
        md, ref, ml = scripts["md"], scripts["reference"], scripts["ml"]
        assert "#SBATCH -J rs-md" in md and "#SBATCH -p compute" in md and "#SBATCH -A chem123" in md
        assert "#SBATCH --qos=normal" in md and "#SBATCH -t 02:00:00" in md and "module load apptainer" in md
        assert "apptainer exec containers/md.sif python -m distributed.cli.dask_worker" in md
        assert f"{running.address} " in md and "--resources md=1" in md
        assert "--cpus-per-task=16" in ref and "#SBATCH -t 12:00:00" in ref and "--resources reference=2" in ref
        assert "--bind /scratch containers/reference.sif" in ref
        assert "#SBATCH -p gpu" in ml and "--resources ml=1" in ml
        assert all(a.state in ("starting", "running") for a in running.cluster.ramanscreen_pools)
        assert len(running.cluster.worker_spec) == 0  # nothing asked for, nothing submitted


# ------------------------------------------------------------------------------ real clusters


def test_each_stage_runs_only_on_its_pool(prefect_api):  # noqa: F811
    cfg = {"kind": "local", "pools": POOLS, "dashboard_address": ":0"}
    with open_cluster(cfg) as running:
        assert isinstance(running, RunningCluster)
        info = running.cluster.scheduler_info["workers"].values()
        pool_workers = {stage: {a for a, w in running.cluster.scheduler_info["workers"].items()
                                if stage in w["resources"]} for stage in STAGES}
        assert {s: len(ws) for s, ws in pool_workers.items()} == {"md": 1, "reference": 2, "ml": 1}
        assert len(info) == 4
        state = per_stage.with_options(task_runner=make_task_runner(running))(return_state=True)
        rows = state.result()
        assert _flow_run_on_server(state) == "COMPLETED"
    assert len(rows) == 3 * len(STAGES)
    for row in rows:
        assert row["worker"] in pool_workers[row["stage"]], row
        assert row["resources"] == {row["stage"]: 1}


def test_a_local_pool_runs_its_workers_by_its_command(prefect_api):  # noqa: F811
    """A local pool's ``python`` is a worker command (here ``env RS_TEST_POOL=... python``, as
    ``podman run ... python`` in tests/test_containers.py): that pool's tasks run in the
    subprocess it starts, the other pools' in this Python's own workers."""
    pools = {"md": {}, "reference": {}, "ml": {"python": f"env RS_TEST_POOL=ml-by-command {sys.executable}", "threads": 2}}
    with open_cluster({"kind": "local", "pools": pools, "dashboard_address": ":0"}) as running:
        workers = running.cluster.scheduler_info["workers"].values()
        assert sorted(w["name"] for w in workers) == ["md-0", "ml-0", "reference-0"]
        assert next(w["nthreads"] for w in workers if w["name"] == "ml-0") == 2
        rows = per_stage.with_options(task_runner=make_task_runner(running))(n_per_stage=2)
        ml_pid = next(ws.pid for ws in running.cluster.scheduler.workers.values() if ws.name == "ml-0")
    assert {r["stage"]: r["pool_env"] for r in rows} == {"md": None, "reference": None, "ml": "ml-by-command"}
    assert not psutil.pid_exists(ml_pid) or psutil.Process(ml_pid).status() == psutil.STATUS_ZOMBIE  # closed with the cluster


def test_task_runner_from_a_table_starts_a_local_cluster(prefect_api):  # noqa: F811
    runner = make_task_runner({"kind": "local", "n_workers": 1, "threads_per_worker": 2, "dashboard_address": ":0"})
    rows = per_stage.with_options(task_runner=runner)(n_per_stage=1)
    assert [r["stage"] for r in rows] == list(STAGES)
    assert len({r["worker"] for r in rows}) == 1 and all(r["resources"] == {} for r in rows)


def test_killed_worker_gets_its_task_rescheduled(prefect_api, tmp_path: Path):  # noqa: F811
    marker = tmp_path / "killed-once"
    with open_cluster({"kind": "local", "n_workers": 2, "threads_per_worker": 1, "dashboard_address": ":0"}) as running:
        state = survive.with_options(task_runner=make_task_runner(running))(str(marker), return_state=True)
        out = state.result()
        assert _flow_run_on_server(state) == "COMPLETED"
    assert marker.exists()
    assert out["pid"] != out["killed_pid"]  # the first worker process died; another one finished the task
    with pytest.raises(ProcessLookupError):
        os.kill(out["killed_pid"], signal.SIGCONT)


def _md_pool_pids(dask_scheduler) -> list[int]:
    """Run on the scheduler: the PIDs of the md pool's workers."""
    return [ws.pid for ws in dask_scheduler.workers.values() if "md" in ws.resources]


def _md_worker_pids(dask_scheduler) -> list[int]:
    """Run on the scheduler: the PIDs of the workers processing a task that needs the md pool."""
    return [ws.pid for ws in dask_scheduler.workers.values()
            if any(ts.resource_restrictions and "md" in ts.resource_restrictions for ts in ws.processing)]


@pytest.mark.slow
def test_campaign_finishes_when_the_md_worker_is_killed(prefect_api, tmp_path: Path):  # noqa: F811
    """`ramanscreen screen` on a one-material quick campaign, on quick.toml's pools (two md
    workers) held by the test. Once the MD writes its trajectory, the scheduler names the one
    worker processing the MD task; that process is SIGKILLed, its nanny restarts it, Dask
    reschedules the MD, and the campaign finishes with its ranking."""
    import subprocess
    import time

    import psutil
    from campaign_helpers import mini_campaign, on_running_cluster, quick_cluster, screen_cmd
    from distributed import Client

    root = tmp_path / "results"
    campaign = mini_campaign(tmp_path / "kill-worker.toml", "kill-worker", ("AgI",), root)
    killed: list[int] = []
    with open_cluster(quick_cluster()) as running, Client(running.address) as client:
        md_pool = client.run_on_scheduler(_md_pool_pids)
        assert len(md_pool) == 2, md_pool
        on_running_cluster(campaign, running.address)
        proc = subprocess.Popen(screen_cmd(campaign), env=dict(os.environ), cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline and proc.poll() is None and not killed:
                if list((root / "work" / "kill-worker").glob("*/*/md/md.traj.part")):
                    pids = client.run_on_scheduler(_md_worker_pids)
                    assert len(pids) == 1 and pids[0] in md_pool, (pids, md_pool)
                    os.kill(pids[0], signal.SIGKILL)
                    killed.append(pids[0])
                time.sleep(0.2)
            assert killed, "the MD finished before its worker could be killed"
            out, err = proc.communicate(timeout=900)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        restarted = client.run_on_scheduler(_md_pool_pids)
    assert proc.returncode == 0, out[-2000:] + err[-4000:]
    assert "ranking of 'kill-worker'" in out
    assert list((root / "work" / "kill-worker").glob("*/*/md/md.traj"))
    assert not psutil.pid_exists(killed[0]) or psutil.Process(killed[0]).status() == psutil.STATUS_ZOMBIE
    assert len(restarted) == 2 and killed[0] not in restarted  # the nanny started a new process in its place
    print(f"\nkilled the md worker running the MD (pid {killed[0]}) mid-run; the campaign still finished")
