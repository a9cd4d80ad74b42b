"""Honest UI state after a crash: a campaign's flow runs that a killed process left "RUNNING".

A campaign killed with SIGKILL cannot report its end, so its flow runs stay RUNNING in the Prefect
UI. Every campaign flow run carries two tags, ``ramanscreen-campaign:<name>`` and
``ramanscreen-pid:<host>:<pid>`` (the process running it; subflows and tasks inherit them).
When a campaign starts, :func:`mark_crashed_runs` finds the campaign's flow runs still RUNNING
whose process on this host is gone and sets them Crashed, with a message saying why. Runs on
other hosts are left alone: their process cannot be checked from here.
"""

from __future__ import annotations

import os
import socket
from typing import Any

CAMPAIGN_TAG = "ramanscreen-campaign:"
PID_TAG = "ramanscreen-pid:"


def run_tags(campaign: str) -> list[str]:
    """The tags of a campaign's flow runs started by this process.

    >>> run_tags("quick")[0]
    'ramanscreen-campaign:quick'
    """
    return [f"{CAMPAIGN_TAG}{campaign}", f"{PID_TAG}{socket.gethostname()}:{os.getpid()}"]


def _owner(tags: list[str]) -> tuple[str, int] | None:
    for tag in tags:
        if tag.startswith(PID_TAG):
            host, _, pid = tag[len(PID_TAG):].rpartition(":")
            if pid.isdigit():
                return host, int(pid)
    return None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process is new: a run tagged with its pid was left by an earlier one
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def mark_crashed_runs(campaign: str, *, exclude: set[str] | None = None) -> list[str]:
    """Set Crashed every RUNNING flow run of ``campaign`` whose process on this host is gone;
    return their ids. ``exclude``: flow-run ids to leave alone (the run calling this)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.states import Crashed

    host = socket.gethostname()
    flt = FlowRunFilter(tags=FlowRunFilterTags(all_=[f"{CAMPAIGN_TAG}{campaign}"]),
                        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING])))
    marked: list[str] = []
    with get_client(sync_client=True) as client:
        runs: list[Any] = client.read_flow_runs(flow_run_filter=flt, limit=200)
        for run in runs:
            if str(run.id) in (exclude or set()):
                continue
            owner = _owner(list(run.tags or []))
            if owner is None or owner[0] != host or _alive(owner[1]):
                continue
            message = (f"the process running it (pid {owner[1]} on {host}) is gone; marked Crashed when campaign "
                       f"{campaign!r} started again")
            client.set_flow_run_state(run.id, Crashed(message=message), force=True)
            marked.append(str(run.id))
    return marked
