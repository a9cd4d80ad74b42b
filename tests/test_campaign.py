"""The campaign flow for real: a real Prefect server, a real Dask LocalCluster, CHGNet MD, the
embedded reference model, λ-SOAP, spectra, transport, Parquet read back through DuckDB.

The end-to-end tests run ``ramanscreen screen`` in a subprocess against a Prefect server the
module starts once, and read what the UI would show through the Prefect REST API.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from campaign_helpers import (
    CAMPAIGNS,
    api,
    committed_rows,
    flow_run_id,
    kill_when,
    latest_artifacts,
    mini_campaign,
    prefect_server,  # noqa: F401 - fixture
    run_screen,
    screen_cmd,
    screen_env,
    task_runs,
)

from ramanscreen.flows.server import OFFLINE_ENV, api_healthy, local_server, start_server
from ramanscreen.flows.stages import artifact_key

MATERIALS = ("AgI", "Na3SbS4", "Na3SbS4-W", "Na3PS4")


# ----------------------------------------------------------------------------------- fast


def test_server_starts_healthy_offline_and_stops(tmp_path: Path) -> None:
    server = start_server(tmp_path / "home")
    try:
        assert server.host == "127.0.0.1"
        assert api_healthy(server.api_url)
        assert server.env()["PREFECT_API_URL"] == server.api_url
        assert server.env()["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
        assert (tmp_path / "home" / "server.log").is_file()
        assert list((tmp_path / "home").glob("*.db")), "the server's database lives under its PREFECT_HOME"
    finally:
        server.stop()
    assert server.process.poll() is not None
    assert not api_healthy(server.api_url, timeout_s=1)


def test_local_server_uses_an_existing_api_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ramanscreen.tasks.common import InputError

    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # nothing listens on port 9
    with pytest.raises(InputError, match="PREFECT_API_URL: no healthy Prefect server"):
        with local_server(tmp_path / "home"):
            pass
    assert not (tmp_path / "home").exists()  # no server was started instead
    for key in OFFLINE_ENV:
        assert os.environ.get(key) is not None


def test_artifact_keys_are_valid() -> None:
    assert artifact_key("md-progress", "default-quick", "Na3SbS4-W") == "md-progress-default-quick-na3sbs4-w"
    assert artifact_key("ranking", "My Campaign_2") == "ranking-my-campaign-2"


# ----------------------------------------------------------------------------------- slow


def _md_mtimes(root: Path, campaign: str) -> dict[str, float]:
    return {str(p): p.stat().st_mtime_ns for p in (root / "work" / campaign).glob("*/*/md/md.traj")}


@pytest.mark.slow
def test_quick_campaign_end_to_end_then_rerun_recomputes_nothing(prefect_server, tmp_path: Path) -> None:  # noqa: F811
    root = tmp_path / "results"
    proc = run_screen(prefect_server, CAMPAIGNS / "quick.toml", root)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "ranking of 'quick'" in proc.stdout and "spectrum plots:" in proc.stdout

    # Parquet that DuckDB queries and ranks
    from ramanscreen.analytics.db import connect
    from ramanscreen.analytics.ranking import ranking

    con = connect(root)
    try:
        rows = ranking(con, "quick")  # the metric and thresholds the runs recorded
        windows = con.execute("SELECT DISTINCT omega_min_cm1, omega_c_cm1, host_high_cm1, rank_metric FROM materials "
                              "WHERE campaign = 'quick'").fetchall()
        n_spec = dict(con.execute("SELECT material, count(*) FROM spectra WHERE campaign='quick' GROUP BY 1").fetchall())
    finally:
        con.close()
    assert windows == [(200.0, 500.0, 1500.0, "cp_fraction")]  # quick.toml's own [spectrum] windows
    assert sorted(r["material"] for r in rows) == sorted(MATERIALS)
    assert [r["rank"] for r in rows] == [1, 2, 3, 4]
    for r in rows:
        assert r["D_cm2_s"] is not None and r["D_cm2_s"] >= 0
        assert r["metric_value"] is not None and 0 <= r["metric_value"] <= 1
        assert r["r2_diag"] is not None and r["n_train"] == 8
        assert r["conduction"] in ("liquid-like", "hopping", "non-conducting")
    assert all(n > 10 for n in n_spec.values()) and len(n_spec) == 4
    first = committed_rows(root, "quick")
    assert first["materials"] == 4 and first["duplicate_spectrum_bins"] == 0
    for m in MATERIALS:
        assert next((root / "work" / "quick" / m).glob("*/spectrum.png")).stat().st_size > 1000

    # what the UI shows: the ranking table, one markdown per material, MD progress at 100 %
    fr = flow_run_id(proc.stdout)
    keys = [artifact_key("ranking", "quick"), *(artifact_key("quick", m) for m in MATERIALS),
            *(artifact_key("md-progress", "quick", m) for m in MATERIALS)]
    arts = latest_artifacts(prefect_server, keys)
    assert set(arts) == set(keys), sorted(arts)
    table = arts[artifact_key("ranking", "quick")]
    assert table["type"] == "table" and table["flow_run_id"] == fr
    data = table["data"] if isinstance(table["data"], list) else json.loads(table["data"])
    assert [r["material"] for r in data] == [r["material"] for r in rows]  # same order as DuckDB's ranking
    assert all(r["metric"] == "cp_fraction" and r["cp_lo_cm1"] == 200.0 for r in data)
    md = arts[artifact_key("quick", "AgI")]
    assert md["type"] == "markdown" and "spectrum.png" in md["data"] and "D(Ag)" in md["data"]
    for m in MATERIALS:
        prog = arts[artifact_key("md-progress", "quick", m)]
        assert prog["type"] == "progress" and float(prog["data"]) == pytest.approx(100.0)
    runs = task_runs(prefect_server, fr)
    md_runs = [t for t in runs if t["name"].startswith("md[")]
    ref_runs = [t for t in runs if t["name"].startswith("reference[")]
    assert len(md_runs) == 4 and all(t["state_type"] == "COMPLETED" for t in md_runs)
    assert len(ref_runs) == 4 * 10  # one task per snapshot: N_T = 8 + 2 test snapshots, per material

    # re-running the finished campaign: every stage comes from the cache, no new MD
    mtimes = _md_mtimes(root, "quick")
    assert len(mtimes) == 4
    proc2 = run_screen(prefect_server, CAMPAIGNS / "quick.toml", root)
    assert proc2.returncode == 0, proc2.stderr[-4000:]
    assert _md_mtimes(root, "quick") == mtimes
    runs2 = task_runs(prefect_server, flow_run_id(proc2.stdout))
    md2 = [t for t in runs2 if t["name"].startswith("md[")]
    assert len(md2) == 4 and all(t["state_name"] == "Cached" for t in md2), [t["state_name"] for t in md2]
    heavy = [t for t in runs2 if t["name"].split("[")[0] in ("structure", "md", "reference", "fit", "predict",
                                                              "spectrum", "transport")]
    assert heavy and all(t["state_name"] == "Cached" for t in heavy), sorted(
        {(t["name"], t["state_name"]) for t in heavy if t["state_name"] != "Cached"})
    again = committed_rows(root, "quick")
    assert again == first  # replaced, not duplicated


@pytest.mark.slow
def test_killed_campaign_resumes_without_duplicate_rows(prefect_server, tmp_path: Path) -> None:  # noqa: F811
    root = tmp_path / "results"
    campaign = mini_campaign(tmp_path / "killed.toml", "killed", ("AgI", "Na3PS4"))
    proc = subprocess.Popen(screen_cmd(campaign), env=screen_env(prefect_server, root), cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    commits = root / "materials" / "campaign=killed"
    # kill as soon as the first material is committed to Parquet, while the other is still running
    kill_when(proc, lambda: list(commits.glob("material=*/run_id=*/run.parquet")), timeout_s=600, poll_s=0.2,
              what="the campaign")
    done_before = {p.parts[-3] for p in commits.glob("material=*/run_id=*/run.parquet")}
    assert len(done_before) == 1
    partial = list((root / "work" / "killed").glob("*/*/md/md.traj"))

    proc2 = run_screen(prefect_server, campaign, root)
    assert proc2.returncode == 0, proc2.stderr[-4000:]
    rows = committed_rows(root, "killed")
    assert rows["materials"] == 2 and rows["descriptors"] == 2 and rows["ml_metrics"] == 2
    assert rows["duplicate_spectrum_bins"] == 0
    # the finished material's MD was not redone: its trajectory is the one written before the kill
    runs = task_runs(prefect_server, flow_run_id(proc2.stdout))
    cached_md = {t["name"] for t in runs if t["name"].startswith("md[") and t["state_name"] == "Cached"}
    assert len(cached_md) >= 1 and len(partial) >= 1
    # issue 11, "the UI lies after a crash": the killed run's flow runs are Crashed, none RUNNING
    tagged = api(prefect_server, "/flow_runs/filter",
                 {"flow_runs": {"tags": {"all_": ["ramanscreen-campaign:killed"]}}, "limit": 200})
    assert not [r["name"] for r in tagged if r["state"]["type"] == "RUNNING"]
    crashed = [r for r in tagged if r["state"]["type"] == "CRASHED"]
    assert crashed and all("is gone; marked Crashed when campaign 'killed' started again" in r["state"]["message"]
                           for r in crashed), [r["state"] for r in tagged]


@pytest.mark.slow
def test_two_campaigns_share_one_results_root(prefect_server, tmp_path: Path) -> None:  # noqa: F811
    root = tmp_path / "results"
    a = mini_campaign(tmp_path / "a.toml", "alpha", ("AgI",))
    b = mini_campaign(tmp_path / "b.toml", "beta", ("Na3PS4",))
    env = screen_env(prefect_server, root)
    procs = [subprocess.Popen(screen_cmd(c), env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for c in (a, b)]
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=False):
        assert p.returncode == 0, err[-4000:]
    from ramanscreen.analytics.db import connect
    from ramanscreen.analytics.ranking import ranking

    con = connect(root)
    try:
        assert [r["material"] for r in ranking(con, "alpha")] == ["AgI"]
        assert [r["material"] for r in ranking(con, "beta")] == ["Na3PS4"]
        assert sorted((r["campaign"], r["material"]) for r in ranking(con)) == [("alpha", "AgI"), ("beta", "Na3PS4")]
    finally:
        con.close()
    for c in ("alpha", "beta"):
        assert committed_rows(root, c)["duplicate_spectrum_bins"] == 0
