"""A real local Prefect server for one campaign run (or one test session).

Ephemeral mode costs 40–60 s per flow and makes every Dask worker start its own server; a real
server on 127.0.0.1 starts in a few seconds and is shared by the flow process, the Dask workers
(they inherit ``PREFECT_API_URL`` from the environment) and the UI.

Nothing here calls out of the machine: analytics, promotional UI content and resource telemetry
are switched off, and the server binds to the loopback interface only.

Usage::

    with local_server(home) as server:      # sets PREFECT_API_URL in os.environ
        print(server.ui_url)
        ...                                  # run flows
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ramanscreen.tasks.common import InputError

#: Environment that keeps Prefect (server and client) on this machine.
OFFLINE_ENV: dict[str, str] = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
    "PREFECT_TELEMETRY_ENABLE_RESOURCE_METRICS": "false",
    "PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY": "false",
    "DO_NOT_TRACK": "1",
}


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def apply_offline_env() -> None:
    """Put :data:`OFFLINE_ENV` into ``os.environ`` (without overriding explicit choices)."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)


def api_healthy(api_url: str, timeout_s: float = 2.0) -> bool:
    """True when ``GET {api_url}/health`` answers ``true``."""
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=timeout_s) as resp:
            return resp.status == 200 and json.loads(resp.read() or b"false") is True
    except (urllib.error.URLError, OSError, ValueError):
        return False


@dataclass
class LocalServer:
    """A running ``prefect server start`` process."""

    process: subprocess.Popen[bytes]
    host: str
    port: int
    home: Path
    log_path: Path

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        """Variables a client (flow process, Dask worker, Prefect worker) needs to reach it."""
        return {"PREFECT_API_URL": self.api_url, **OFFLINE_ENV}

    def stop(self, timeout_s: float = 20.0) -> None:
        """Stop the server process group (uvicorn and its services), by PID."""
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=timeout_s)


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the parent dies (Linux), so a killed ``screen`` leaves no server."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def start_server(home: str | os.PathLike[str], *, host: str = "127.0.0.1", port: int | None = None,
                 timeout_s: float = 120.0, die_with_parent: bool = True) -> LocalServer:
    """Start ``prefect server start`` with ``PREFECT_HOME=home`` and wait until it is healthy.

    The server gets its own session (process group) so :meth:`LocalServer.stop` ends it and its
    children without touching anything else; with ``die_with_parent`` it also gets SIGTERM when
    this process dies (e.g. a killed ``ramanscreen screen``). Its log goes to ``home/server.log``.
    """
    home = Path(home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    port = port or free_port(host)
    api_url = f"http://{host}:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(OFFLINE_ENV)
    env.update(
        {
            "PREFECT_HOME": str(home),
            "PREFECT_SERVER_API_HOST": host,
            "PREFECT_SERVER_API_PORT": str(port),
            "PREFECT_SERVER_UI_API_URL": api_url,
            "PREFECT_UI_URL": f"http://{host}:{port}",
            "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
        }
    )
    prefect_exe = Path(sys.executable).with_name("prefect")
    argv = [str(prefect_exe)] if prefect_exe.exists() else [sys.executable, "-m", "prefect"]
    argv += ["server", "start", "--host", host, "--port", str(port), "--analytics-off"]
    log_path = home / "server.log"
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child
    try:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=home,
                                preexec_fn=_die_with_parent if die_with_parent else None)
    finally:
        log.close()
    server = LocalServer(process=proc, host=host, port=port, home=home, log_path=log_path)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
            raise RuntimeError(f"prefect server exited with code {proc.returncode}: {' | '.join(tail)} (log: {log_path})")
        if api_healthy(api_url):
            return server
        time.sleep(0.3)
    server.stop()
    raise RuntimeError(f"prefect server did not become healthy within {timeout_s:.0f} s (log: {log_path})")


def drain_clients(timeout_s: float = 10.0) -> None:
    """Send this process's buffered logs and events to the server before it goes away
    (otherwise Prefect retries against a stopped server for a minute at exit)."""
    with contextlib.suppress(Exception):
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=timeout_s)
    with contextlib.suppress(Exception):
        from prefect.events.worker import EventsWorker

        EventsWorker.drain_all(timeout=timeout_s)


@contextlib.contextmanager
def local_server(home: str | os.PathLike[str], *, keep: bool = False, **kw) -> Iterator[LocalServer | None]:
    """Use ``PREFECT_API_URL`` if it is set (yield ``None``); otherwise start a local server,
    export its address into ``os.environ`` for this process and its children, and stop it at
    the end unless ``keep``."""
    apply_offline_env()
    existing = os.environ.get("PREFECT_API_URL")
    if existing:
        if not api_healthy(existing, timeout_s=10):
            raise InputError(f"no healthy Prefect server at {existing}", field="PREFECT_API_URL",
                             fix="start it, or unset PREFECT_API_URL to let ramanscreen start a local one")
        yield None
        return
    server = start_server(home, die_with_parent=not keep, **kw)
    saved = {k: os.environ.get(k) for k in ("PREFECT_API_URL", "PREFECT_HOME")}
    os.environ["PREFECT_API_URL"] = server.api_url
    os.environ["PREFECT_HOME"] = str(server.home)
    # Prefect reads its settings once at import; the environment above serves child processes
    # (Dask workers, subprocesses), the settings context serves this one.
    from prefect.settings import PREFECT_API_URL, temporary_settings

    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            yield server
    finally:
        drain_clients()
        if not keep:
            server.stop()
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
