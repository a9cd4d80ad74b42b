"""Helpers for the campaign, deployment and UI tests: a real local Prefect server, the real
``ramanscreen screen`` command in a subprocess, and reads through the Prefect REST API."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ramanscreen.flows.server import LocalServer, start_server

REPO = Path(__file__).resolve().parents[1]
CAMPAIGNS = REPO / "deployments" / "campaigns"


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """A real ``prefect server start`` on 127.0.0.1 (one per test module), stopped by PID."""
    server = start_server(tmp_path_factory.mktemp("prefect-home"))
    try:
        yield server
    finally:
        server.stop()


def mini_campaign(path: Path, name: str, materials: tuple[str, ...], results_root: Path | None = None) -> Path:
    """A copy of ``quick.toml`` named ``name`` holding only ``materials`` (written to ``path``)."""
    text = (CAMPAIGNS / "quick.toml").read_text()
    head, *blocks = text.split("[[materials]]")
    head = re.sub(r'(?m)^name = ".*"$', f'name = "{name}"', head, count=1)
    if results_root is not None:
        head = re.sub(r'(?m)^results_root = ".*"$', f'results_root = "{results_root}"', head, count=1)
    keep = [b for b in blocks if re.search(r'(?m)^name = "(.*)"$', b).group(1) in materials]
    assert len(keep) == len(materials), materials
    path.write_text(head + "".join("[[materials]]" + b for b in keep))
    return path


def on_running_cluster(campaign: Path, address: str) -> Path:
    """Point ``campaign``'s ``[cluster]`` at a running scheduler (``kind = "address"``, one pool per
    stage), so the test holds the cluster: its scheduler, its workers' PIDs and what they run."""
    text = campaign.read_text()
    pools = "".join(f"\n[cluster.pools.{stage}]\n" for stage in ("md", "reference", "ml"))
    text, n = re.subn(r"(?ms)^\[cluster\]\n.*?(?=^\[\[materials\]\]|\Z)",
                      f'[cluster]\nkind = "address"\naddress = "{address}"\n{pools}\n', text, count=1)
    assert n == 1, f"{campaign} has no [cluster] section before its materials"
    campaign.write_text(text)
    return campaign


def quick_cluster() -> dict[str, Any]:
    """quick.toml's ``[cluster]`` table (its pools), with a dashboard on a free port."""
    import tomllib

    return {**tomllib.loads((CAMPAIGNS / "quick.toml").read_text())["cluster"], "dashboard_address": ":0"}


def screen_env(server: LocalServer, results_root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(server.env())
    env["RAMANSCREEN_RESULTS_ROOT"] = str(results_root)
    env["PREFECT_HOME"] = str(results_root.parent / "prefect-client-home")
    return env


def screen_cmd(campaign: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "ramanscreen.flows", "screen", str(campaign), *extra]


def run_screen(server: LocalServer, campaign: Path, results_root: Path, *extra: str,
               timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run ``ramanscreen screen`` to completion against ``server``."""
    return subprocess.run(screen_cmd(campaign, *extra), env=screen_env(server, results_root), cwd=results_root.parent,
                          capture_output=True, text=True, timeout=timeout)


def kill_when(proc: subprocess.Popen, ready, *, timeout_s: float, poll_s: float, what: str) -> None:
    """SIGKILL ``proc``'s process group as soon as ``ready()`` holds (polled every ``poll_s``), and
    fail if ``proc`` ended first (``what`` names it). The group is killed whatever happens."""
    import signal
    import time

    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and proc.poll() is None:
            if ready():
                break
            time.sleep(poll_s)
        assert proc.poll() is None, f"{what} finished before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def flow_run_id(stdout: str) -> str:
    m = re.search(r"/runs/flow-run/([0-9a-f-]{36})", stdout)
    assert m, stdout[-3000:]
    return m.group(1)


def api(server: LocalServer, path: str, body: dict[str, Any] | None = None) -> Any:
    """GET (body None) or POST JSON to the server's REST API."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"{server.api_url}{path}", data=data, method="GET" if body is None else "POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def latest_artifacts(server: LocalServer, keys: list[str]) -> dict[str, dict[str, Any]]:
    rows = api(server, "/artifacts/latest/filter", {"artifacts": {"key": {"any_": keys}}, "limit": 200})
    return {r["key"]: r for r in rows}


def task_runs(server: LocalServer, flow_run: str) -> list[dict[str, Any]]:
    return api(server, "/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run]}}, "limit": 200})


def committed_rows(results_root: Path, campaign: str) -> dict[str, int]:
    """Rows per table of ``campaign`` as DuckDB sees them through the analytics views."""
    from ramanscreen.analytics.db import connect

    con = connect(results_root)
    try:
        out = {}
        for table in ("materials", "spectra", "transport", "descriptors", "ml_metrics", "msd", "vdos"):
            out[table] = con.execute(f"SELECT count(*) FROM {table} WHERE campaign = $1", [campaign]).fetchone()[0]
        dup = con.execute(
            "SELECT count(*) FROM (SELECT material, freq_cm1, count(*) AS n FROM spectra WHERE campaign = $1 "
            "GROUP BY ALL HAVING n > 1)", [campaign]).fetchone()[0]
        out["duplicate_spectrum_bins"] = dup
        return out
    finally:
        con.close()
