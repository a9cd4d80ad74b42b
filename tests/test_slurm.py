"""Dask workers as real SLURM jobs: a one-node slurmctld + slurmd + munged started by the fixture."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import cloudpickle
import distributed
import pytest
from prefect import flow, task
from slurm_fixture import Slurm, prefect_api, slurm  # noqa: F401  (fixtures)

from ramanscreen.flows.cluster import STAGES, make_task_runner, on_pool, open_cluster

pytestmark = pytest.mark.system("slurm")

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _job_env() -> dict:
    import os

    import distributed

    return {"job_id": os.environ.get("SLURM_JOB_ID"), "job_name": os.environ.get("SLURM_JOB_NAME"),
            "worker": distributed.get_worker().name}


@task
def in_job(stage: str) -> dict:
    return {"stage": stage, **_job_env()}


@flow
def stages_on_slurm(n_per_stage: int = 2) -> list[dict]:
    futures = []
    for stage in STAGES:
        with on_pool(stage):
            futures += [in_job.submit(stage) for _ in range(n_per_stage)]
    return [f.result() for f in futures]


def _wait_until(ok, timeout_s: float, what: str) -> float:
    t0 = time.perf_counter()
    while not ok():
        if time.perf_counter() - t0 > timeout_s:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.2)
    return time.perf_counter() - t0


def _base(slurm: Slurm, tmp_path: Path, **extra) -> dict:  # noqa: F811
    return {"kind": "slurm", "queue": slurm.partition, "cores": 1, "memory": "1GB", "walltime": "00:20:00",
            "python": sys.executable, "log_directory": str(tmp_path / "logs"),
            "scheduler_options": {"dashboard_address": ":0"}, "death_timeout": 60, **extra}


def test_slurm_worker_is_a_real_job(slurm: Slurm, tmp_path: Path):  # noqa: F811
    t0 = time.perf_counter()
    with open_cluster(_base(slurm, tmp_path, minimum_jobs=1, maximum_jobs=1)) as running:
        _wait_until(lambda: slurm.jobs(), 30, "the job to be submitted")
        jobs = slurm.jobs()
        assert [j["name"] for j in jobs] == ["ramanscreen"], jobs
        with distributed.Client(running.address) as client:
            connect_s = _wait_until(lambda: len(client.scheduler_info()["workers"]) == 1, 90, "the SLURM worker")
            out = client.submit(lambda: _job_env(), pure=False).result(timeout=60)  # lambda: shipped by value
        assert out["job_id"] == jobs[0]["id"] and out["job_name"] == "ramanscreen"
        assert "#SBATCH -p debug" in running.job_scripts()["default"]
    cancel_s = _wait_until(lambda: not slurm.jobs(), 30, "the job to leave the queue")
    print(f"\nslurm: node idle {slurm.startup_s:.1f} s after start; worker connected {connect_s:.1f} s after "
          f"submission; queue empty {cancel_s:.1f} s after close; total {time.perf_counter() - t0:.1f} s")


@pytest.mark.slow
def test_pools_scale_as_slurm_jobs_and_route_prefect_tasks(slurm: Slurm, prefect_api, tmp_path: Path):  # noqa: F811
    """Each stage's Prefect tasks run in its own pool's SLURM job; idle pools scale back to their minimum."""
    cfg = _base(slurm, tmp_path, maximum_jobs=2, pools={
        "md": {"python": sys.executable},
        "reference": {"maximum_jobs": 2, "job_extra_directives": ["--comment=reference"]},
        "ml": {"cores": 2, "memory": "2GB", "minimum_jobs": 1},
    })
    seen_jobs: set[str] = set()
    t0 = time.perf_counter()
    with open_cluster(cfg) as running:
        # Nothing to do: no job, except the ml pool's minimum of one.
        _wait_until(lambda: [j["name"] for j in slurm.jobs()] == ["rs-ml"], 30, "the ml pool's minimum job")
        time.sleep(3)
        assert [j["name"] for j in slurm.jobs()] == ["rs-ml"]
        runner = make_task_runner(running)

        # Watch the queue while the flow runs (the flow itself must stay picklable: no closures).
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                seen_jobs.update(j["name"] for j in slurm.jobs())
                time.sleep(0.5)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            rows = stages_on_slurm.with_options(task_runner=runner)(n_per_stage=2)
        finally:
            stop.set()
            watcher.join()
        flow_s = time.perf_counter() - t0
        for row in rows:
            assert row["job_name"] == f"rs-{row['stage']}", row
            assert row["worker"].startswith(f"{row['stage']}-"), row
        assert {r["stage"] for r in rows} == set(STAGES)
        assert {f"rs-{s}" for s in STAGES} <= seen_jobs, seen_jobs
        # Idle pools give their jobs back, down to their minimum (md, reference: 0; ml: 1).
        down_s = _wait_until(lambda: [j["name"] for j in slurm.jobs()] == ["rs-ml"], 60, "idle pools to scale down")
    _wait_until(lambda: not slurm.jobs(), 30, "the ml job to be cancelled at close")
    print(f"\nslurm pools: flow on SLURM workers {flow_s:.1f} s; scaled down to the minimum {down_s:.1f} s after; jobs seen {sorted(seen_jobs)}")


SLURM_CLUSTER_TOML = """
[cluster]
kind = "slurm"
queue = "{queue}"
cores = 1
memory = "2GB"
walltime = "00:30:00"
python = "{python}"
log_directory = "{logs}"
death_timeout = 120
scheduler_options = {{ dashboard_address = ":0" }}
maximum_jobs = 1

[cluster.pools.md]
maximum_jobs = 2

[cluster.pools.reference]
maximum_jobs = 2

[cluster.pools.ml]
maximum_jobs = 1
"""


@pytest.mark.slow
def test_quick_campaign_on_slurm_workers(slurm: Slurm, prefect_api, tmp_path: Path):  # noqa: F811
    """`ramanscreen screen` on the quick profile whose Dask workers are real SLURM jobs, one pool per stage."""
    import re
    import subprocess

    from campaign_helpers import mini_campaign, screen_cmd

    results = tmp_path / "results"
    campaign = mini_campaign(tmp_path / "slurm-quick.toml", "slurm-quick", ("AgI", "Na3PS4"), results)
    text = re.sub(r"(?ms)^\[cluster\]\n.*?(?=^\[\[materials\]\])", "", campaign.read_text())
    text += SLURM_CLUSTER_TOML.format(queue=slurm.partition, python=sys.executable, logs=tmp_path / "logs")
    campaign.write_text(text)

    seen_jobs: set[str] = set()
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen_jobs.update(j["name"] for j in slurm.jobs())
            time.sleep(1.0)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([*screen_cmd(campaign)], env={**os.environ, **slurm.env}, capture_output=True,
                              text=True, timeout=1500, cwd=tmp_path)
    finally:
        stop.set()
        watcher.join()
    wall_s = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-4000:]
    assert "ranking of 'slurm-quick'" in proc.stdout
    assert {"rs-md", "rs-reference", "rs-ml"} <= seen_jobs, seen_jobs
    from ramanscreen.analytics.db import connect
    from ramanscreen.analytics.ranking import ranking

    con = connect(results)
    try:
        rows = ranking(con, "slurm-quick")
    finally:
        con.close()
    assert sorted(r["material"] for r in rows) == ["AgI", "Na3PS4"]
    _wait_until(lambda: not slurm.jobs(), 60, "the campaign's jobs to leave the queue")
    print(f"\nquick campaign (AgI + Na3PS4) on SLURM pools: {wall_s:.0f} s wall; jobs seen {sorted(seen_jobs)}")


def _hold_first_attempt(marker: str, hold_s: float) -> dict:
    """Record the job of the first attempt and hold it there; later attempts return at once."""
    import os
    import time
    from pathlib import Path

    m = Path(marker)
    if not m.exists():
        m.write_text(os.environ["SLURM_JOB_ID"])
        time.sleep(hold_s)
    return {"job_id": os.environ["SLURM_JOB_ID"], "first_job_id": m.read_text()}


def test_cancelled_slurm_job_is_replaced_and_its_task_rescheduled(slurm: Slurm, tmp_path: Path):  # noqa: F811
    """Node loss, for real: scancel the job running an MD task; the md pool submits a new job and
    the task finishes there."""
    cfg = _base(slurm, tmp_path, maximum_jobs=1, pools={"md": {}, "reference": {}, "ml": {}})
    marker = tmp_path / "first-attempt"
    with open_cluster(cfg) as running, distributed.Client(running.address) as client:
        with on_pool("md", running):
            fut = client.submit(lambda: _hold_first_attempt(str(marker), 120), pure=False)
        _wait_until(marker.exists, 90, "the task to start in an md job")
        first = marker.read_text()
        assert [j["name"] for j in slurm.jobs() if j["id"] == first] == ["rs-md"]
        slurm.run("scancel", first)
        t0 = time.perf_counter()
        out = fut.result(timeout=120)
        recover_s = time.perf_counter() - t0
        assert out["first_job_id"] == first and out["job_id"] != first
        assert [j["name"] for j in slurm.jobs() if j["id"] == out["job_id"]] in (["rs-md"], [])
    print(f"\nslurm: job {first} cancelled mid-task; task finished in job {out['job_id']} {recover_s:.1f} s later")


@pytest.mark.slow
def test_task_runner_from_a_slurm_table_starts_and_stops_its_own_jobs(slurm: Slurm, prefect_api, tmp_path: Path):  # noqa: F811
    """make_task_runner(table): the DaskTaskRunner builds the SLURM cluster for the flow run and
    closes it (cancelling its jobs) when the run ends."""
    runner = make_task_runner(_base(slurm, tmp_path, minimum_jobs=0, maximum_jobs=2))
    rows = stages_on_slurm.with_options(task_runner=runner)(n_per_stage=1)
    assert {r["stage"] for r in rows} == set(STAGES)
    assert all(r["job_name"] == "ramanscreen" and r["job_id"] for r in rows), rows
    _wait_until(lambda: not slurm.jobs(), 30, "the flow's jobs to be cancelled")
