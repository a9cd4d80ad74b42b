"""Issue 11, "the UI lies after a crash": a campaign's flow runs left RUNNING by a killed process
are marked Crashed when the campaign starts again. A real local Prefect server (prefect_api)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from prefect import flow
from slurm_fixture import prefect_api  # noqa: F401  (fixture)


@flow(name="ramanscreen-test-crash")
def _probe() -> str:
    from prefect.runtime import flow_run

    return str(flow_run.id)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_running_runs_of_a_dead_process_become_crashed(prefect_api) -> None:  # noqa: F811
    from prefect.client.orchestration import get_client
    from prefect.states import Running

    from ramanscreen.flows.campaign import honest_ui
    from ramanscreen.flows.crashed import CAMPAIGN_TAG, PID_TAG, mark_crashed_runs

    host = socket.gethostname()
    dead = _dead_pid()
    with get_client(sync_client=True) as client:
        def running(*tags: str) -> str:
            return str(client.create_flow_run(_probe, tags=list(tags), state=Running()).id)

        killed = running(f"{CAMPAIGN_TAG}c1", f"{PID_TAG}{host}:{dead}")
        alive = running(f"{CAMPAIGN_TAG}c1", f"{PID_TAG}{host}:{os.getppid()}")
        elsewhere = running(f"{CAMPAIGN_TAG}c1", f"{PID_TAG}other-host:{dead}")
        other_campaign = running(f"{CAMPAIGN_TAG}c2", f"{PID_TAG}{host}:{dead}")
        untagged = running()

        assert mark_crashed_runs("c1") == [killed]
        states = {k: client.read_flow_run(k).state for k in (killed, alive, elsewhere, other_campaign, untagged)}
    assert states[killed].type.value == "CRASHED"
    assert f"pid {dead} on {host}" in states[killed].message and "is gone" in states[killed].message
    assert all(states[k].type.value == "RUNNING" for k in (alive, elsewhere, other_campaign, untagged))

    # A campaign start does it, and tags the runs it starts so that the next start can tell.
    with get_client(sync_client=True) as client:
        again = str(client.create_flow_run(_probe, tags=[f"{CAMPAIGN_TAG}c2", f"{PID_TAG}{host}:{dead}"],
                                           state=Running()).id)
    with honest_ui("c2") as marked:
        run_id = _probe()
    assert sorted(marked) == sorted([other_campaign, again])
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
    assert f"{CAMPAIGN_TAG}c2" in run.tags and f"{PID_TAG}{host}:{os.getpid()}" in run.tags
    assert run.state.type.value == "COMPLETED"
