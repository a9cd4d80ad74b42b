"""The Prefect UI as a person sees it: headless Debian Chromium loads the flow-run page of a real
campaign run on a real local Prefect server, saves a screenshot, and the rendered page shows the
campaign's flow-run name and, on its Artifacts tab, the ranking artifact.

Chromium is driven through the DevTools protocol (a websocket), so the test reads the text the
browser rendered and clicks the tab like a user would.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from campaign_helpers import (  # noqa: F401
    api,
    flow_run_id,
    latest_artifacts,
    mini_campaign,
    prefect_server,
    run_screen,
)

from ramanscreen.flows.server import free_port
from ramanscreen.flows.stages import artifact_key

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """Headless Chromium with a fresh profile and nothing that phones home, via CDP."""

    def __init__(self, profile: Path) -> None:
        from websockets.sync.client import connect

        port = free_port()
        argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-default-apps",
                "--disable-extensions", "--disable-dev-shm-usage", "--metrics-recording-only",
                f"--user-data-dir={profile}", "--window-size=1400,1000", f"--remote-debugging-port={port}",
                "--remote-debugging-address=127.0.0.1", "about:blank"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 60
        ws_url = None
        while time.monotonic() < deadline and ws_url is None:
            with contextlib.suppress(OSError, ValueError):
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as r:
                    pages = [p for p in json.loads(r.read()) if p.get("type") == "page"]
                    ws_url = pages[0]["webSocketDebuggerUrl"] if pages else None
            time.sleep(0.3)
        assert ws_url, "chromium did not open its DevTools port"
        self.ws = connect(ws_url, max_size=50 * 2**20, open_timeout=30)
        self.n = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.n += 1
        self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=60))
            if msg.get("id") == self.n:
                assert "error" not in msg, msg
                return msg.get("result", {})

    def js(self, expr: str) -> Any:
        return self.call("Runtime.evaluate", expression=expr, returnByValue=True)["result"].get("value")

    def text(self) -> str:
        return self.js("document.body ? document.body.innerText : ''") or ""

    def wait_text(self, needle: str, timeout: float = 90) -> str:
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.text()
            if needle in text:
                return text
            time.sleep(0.5)
        raise AssertionError(f"{needle!r} never appeared; page text ends with: {text[-1500:]}")

    def goto(self, url: str) -> None:
        self.call("Page.enable")
        self.call("Page.navigate", url=url)

    def click_text(self, label: str) -> bool:
        """Click the first button/tab/link whose own text is exactly ``label``."""
        return bool(self.js(
            "(() => { const els = [...document.querySelectorAll('button, [role=tab], a, li, span, div')];"
            f" const el = els.find(e => e.children.length === 0 && e.textContent.trim() === {json.dumps(label)});"
            " if (!el) return false; (el.closest('button, [role=tab], a') || el).click(); return true; })()"))

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ws.close()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


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
