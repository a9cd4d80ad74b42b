"""Headless Debian Chromium driven through the DevTools protocol (tests only; shared by
test_ui.py and test_report.py): a fresh profile, nothing that phones home."""

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

from ramanscreen.flows.server import free_port

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

    def screenshot(self, path: Path, *, full_page: bool = False) -> Path:
        params: dict[str, Any] = {"format": "png"}
        if full_page:  # the whole document, not only the window
            size = self.call("Page.getLayoutMetrics")["cssContentSize"]
            params.update(captureBeyondViewport=True,
                          clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1})
        data = self.call("Page.captureScreenshot", **params)["data"]
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
