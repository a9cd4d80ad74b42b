"""Scheduled deployments for real: ``ramanscreen deploy`` registers deployments/prefect.yaml on a
real local Prefect server, a real ``prefect worker`` on the process pool runs the quick campaign
triggered with ``prefect deployment run``, and the ranking artifact is read back over the API."""

from __future__ import annotations

import importlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from campaign_helpers import REPO, api, committed_rows, latest_artifacts, prefect_server, screen_env  # noqa: F401

from ramanscreen.flows.stages import artifact_key

PREFECT_YAML = REPO / "deployments" / "prefect.yaml"


def test_prefect_yaml_is_consistent() -> None:
    """Fast: every deployment points at an existing flow and a campaign file that validates."""
    from ramanscreen.flows.config import load_campaign

    doc = yaml.safe_load(PREFECT_YAML.read_text())
    deps = {d["name"]: d for d in doc["deployments"]}
    assert {"paper-weekly", "quick-nightly"} <= set(deps)
    assert deps["paper-weekly"]["schedules"][0]["cron"] == "0 3 * * 1"
    assert deps["quick-nightly"]["schedules"][0]["cron"] == "30 1 * * *"
    for d in deps.values():
        module, func = d["entrypoint"].split(":")
        assert module.startswith("ramanscreen."), d["entrypoint"]
        flow = getattr(importlib.import_module(module), func)
        assert flow.name.startswith("ramanscreen-"), flow
        assert d["work_pool"]["name"] == "ramanscreen-process"
        load_campaign(REPO / d["parameters"]["campaign_file"], quick=d["parameters"]["quick"])


def test_deploy_needs_a_server(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    proc = subprocess.run([sys.executable, "-m", "ramanscreen.flows", "deploy"], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: PREFECT_API_URL: not set (fix: start a server (prefect server start) and export "
        "PREFECT_API_URL=http://127.0.0.1:4200/api)"]


@pytest.mark.slow
def test_deploy_schedule_worker_run(prefect_server, tmp_path: Path) -> None:  # noqa: F811
    root = tmp_path / "results"
    env = screen_env(prefect_server, root)

    # register the deployments
    proc = subprocess.run([sys.executable, "-m", "ramanscreen.flows", "deploy"], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    deps = {d["name"]: d for d in api(prefect_server, "/deployments/filter", {"limit": 50})}
    assert {"paper-weekly", "quick-nightly", "default-demo"} <= set(deps)
    crons = {}
    for name in ("paper-weekly", "quick-nightly"):
        schedules = api(prefect_server, f"/deployments/{deps[name]['id']}/schedules")
        assert len(schedules) == 1 and schedules[0]["active"]
        crons[name] = (schedules[0]["schedule"]["cron"], schedules[0]["schedule"]["timezone"])
        assert deps[name]["work_pool_name"] == "ramanscreen-process"
        assert deps[name]["pull_steps"][0]["prefect.deployments.steps.set_working_directory"]["directory"] == str(REPO)
    assert crons == {"paper-weekly": ("0 3 * * 1", "UTC"), "quick-nightly": ("30 1 * * *", "UTC")}
    assert deps["quick-nightly"]["parameters"] == {"campaign_file": "deployments/campaigns/quick.toml", "quick": False}
    pool = api(prefect_server, "/work_pools/ramanscreen-process")
    assert pool["type"] == "process"

    # a real worker on the pool
    worker = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", "ramanscreen-process",
                               "--limit", "1"], env=env, cwd=tmp_path, stdout=open(tmp_path / "worker.log", "wb"),
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        run = subprocess.run([sys.executable, "-m", "prefect", "deployment", "run",
                              "ramanscreen-scheduled-campaign/quick-nightly"], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stdout + run.stderr
        m = re.search(r"UUID:\s*([0-9a-f-]{36})", run.stdout)
        assert m, run.stdout
        flow_run = m.group(1)
        deadline = time.monotonic() + 1200
        state = None
        while time.monotonic() < deadline:
            fr = api(prefect_server, f"/flow_runs/{flow_run}")
            state = fr["state_type"]
            if state in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                break
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
            time.sleep(3)
        assert state == "COMPLETED", (state, (tmp_path / "worker.log").read_text()[-4000:])
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)

    # the run wrote the quick campaign's Parquet under the worker's results root ...
    rows = committed_rows(root, "quick")
    assert rows["materials"] == 4 and rows["duplicate_spectrum_bins"] == 0
    # ... and its ranking artifact is readable through the API, attached to the campaign subflow
    art = latest_artifacts(prefect_server, [artifact_key("ranking", "quick")])[artifact_key("ranking", "quick")]
    data = art["data"] if isinstance(art["data"], list) else __import__("json").loads(art["data"])
    assert sorted(r["material"] for r in data) == ["AgI", "Na3PS4", "Na3SbS4", "Na3SbS4-W"]
    sub = api(prefect_server, f"/flow_runs/{art['flow_run_id']}")
    assert sub["parent_task_run_id"] is not None  # campaign_flow ran as the deployment run's subflow
    parent_task = api(prefect_server, f"/task_runs/{sub['parent_task_run_id']}")
    assert parent_task["flow_run_id"] == flow_run
