"""The Prefect UI as a person sees it: headless Debian Chromium loads the flow-run page of a real
campaign run on a real local Prefect server, saves a screenshot, and the rendered page shows the
campaign's flow-run name and, on its Artifacts tab, the ranking artifact.

Chromium is driven through the DevTools protocol (a websocket), so the test reads the text the
browser rendered and clicks the tab like a user would.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from browser import Browser
from campaign_helpers import (  # noqa: F401
    api,
    flow_run_id,
    latest_artifacts,
    mini_campaign,
    prefect_server,
    run_screen,
)

from ramanscreen.flows.stages import artifact_key


@pytest.mark.slow
@pytest.mark.system("chromium")
def test_flow_run_page_shows_name_and_ranking_artifact(prefect_server, tmp_path: Path) -> None:  # noqa: F811
    root = tmp_path / "results"
    campaign = mini_campaign(tmp_path / "ui.toml", "ui-demo", ("AgI",))
    proc = run_screen(prefect_server, campaign, root)
    assert proc.returncode == 0, proc.stderr[-4000:]
    fr = flow_run_id(proc.stdout)
    name = api(prefect_server, f"/flow_runs/{fr}")["name"]
    assert name.startswith("ui-")
    key = artifact_key("ranking", "ui-demo")

    browser = Browser(tmp_path / "chromium-profile")
    try:
        browser.goto(f"{prefect_server.ui_url}/runs/flow-run/{fr}")
        text = browser.wait_text(name)
        assert "Completed" in text and "Artifacts" in text
        shot = browser.screenshot(tmp_path / "flow-run.png")
        assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert browser.click_text("Artifacts"), "no Artifacts tab on the flow-run page"
        arts = browser.wait_text(key)
        assert artifact_key("ui-demo", "AgI") in arts  # the material's markdown artifact is listed too
        browser.screenshot(tmp_path / "flow-run-artifacts.png")
        # the artifact key's page lists its versions, each linking to this flow run
        browser.goto(f"{prefect_server.ui_url}/artifacts/key/{key}")
        assert f"Created {key}" in browser.wait_text(name)
        # the artifact's own page renders the ranking table
        art_id = latest_artifacts(prefect_server, [key])[key]["latest_id"]  # a collection: its latest version
        browser.goto(f"{prefect_server.ui_url}/artifacts/artifact/{art_id}")
        table = browser.wait_text("AgI")
        assert key in table and any(c in table for c in ("liquid-like", "hopping", "non-conducting")), table[-1500:]
        browser.screenshot(tmp_path / "ranking-artifact.png")
    finally:
        browser.close()
