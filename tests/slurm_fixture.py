"""A real one-node SLURM (slurmctld + slurmd + munged) for the tests, and a real Prefect server fixture.

Everything lives under a private temporary folder: the munge key and socket, slurm.conf, the
state and spool folders and the logs, so it neither needs nor touches /etc/slurm or /run/munge.
Clients (``sbatch``, ``squeue``, dask-jobqueue) find it through ``SLURM_CONF``. The daemons run
in the foreground as children of the test process and are stopped by PID at the end.

Needs root (slurmd starts jobs as their user) and Debian's ``slurm-wlm`` and ``munge``:
``apt-get install -y slurm-wlm munge``. The fixture skips, with the reason, only when those
binaries are missing.

Run ``python tests/slurm_fixture.py`` to start one by hand and print the ``SLURM_CONF`` to use.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SLURM_BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def missing_slurm() -> str | None:
    """Why a real SLURM cannot start here, or None when it can."""
    missing = [b for b in SLURM_BINARIES if shutil.which(b) is None]
    if missing:
        return f"SLURM binaries not installed ({', '.join(missing)}): apt-get install -y slurm-wlm munge"
    if os.geteuid() != 0:
        return "a private slurmd needs root"
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return "no 'munge' user (install Debian's munge package)"
    return None


@dataclass
class Slurm:
    """A running one-node SLURM: its config file, folder, node name and daemon processes."""

    conf: Path
    root: Path
    node: str
    partition: str
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    startup_s: float = 0.0

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def run(self, *args: str, check: bool = True) -> str:
        out = subprocess.run(list(args), env={**os.environ, **self.env}, capture_output=True, text=True, timeout=30)
        if check and out.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {out.stderr.strip()}")
        return out.stdout

    def jobs(self) -> list[dict[str, str]]:
        """Jobs in the queue as dicts with id, name, state."""
        text = self.run("squeue", "--noheader", "--format=%i|%j|%T")
        rows = [line.split("|") for line in text.splitlines() if line.strip()]
        return [{"id": r[0], "name": r[1], "state": r[2]} for r in rows]

    def logs(self) -> str:
        parts = []
        for name in ("slurmctld.log", "slurmd.log", "munge/munged.log"):
            p = self.root / name
            if p.exists():
                parts.append(f"--- {name}\n" + p.read_text(errors="replace")[-3000:])
        return "\n".join(parts)


def _write_conf(root: Path, node: str, socket_path: Path) -> Path:
    mem_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    conf = root / "slurm.conf"
    conf.write_text(
        f"""\
ClusterName=ramanscreen-test
SlurmctldHost={node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
AuthInfo=socket={socket_path}
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SlurmdParameters=config_overrides
SchedulerParameters=sched_interval=1
MessageTimeout=10
InactiveLimit=0
KillWait=2
# Oversubscribe the node's CPUs so every pool's job fits at once on a 2-core test machine.
NodeName={node} NodeAddr=127.0.0.1 CPUs=8 RealMemory={max(mem_mb - 512, 1024)} State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
"""
    )
    return conf


def _stop(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@contextlib.contextmanager
def start_slurm(root: Path | None = None, timeout_s: float = 60.0) -> Iterator[Slurm]:
    """Start munged, slurmctld and slurmd under ``root``; yield when the node is idle; stop them."""
    reason = missing_slurm()
    if reason:
        raise RuntimeError(reason)
    own_root = root is None
    root = Path(tempfile.mkdtemp(prefix="rs-slurm-")) if root is None else Path(root)
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    for sub in ("state", "spool"):
        (root / sub).mkdir(exist_ok=True)
    munge_pw = pwd.getpwnam("munge")
    mdir = root / "munge"
    mdir.mkdir(exist_ok=True)
    key = mdir / "munge.key"
    key.write_bytes(os.urandom(1024))
    for p in (mdir, key):
        os.chown(p, munge_pw.pw_uid, munge_pw.pw_gid)
    os.chmod(mdir, 0o755)  # munged wants execute-for-all on the socket folder
    os.chmod(key, 0o600)
    sock = mdir / "munge.socket"
    node = socket.gethostname().split(".")[0]
    conf = _write_conf(root, node, sock)
    slurm = Slurm(conf=conf, root=root, node=node, partition="debug")
    env = {**os.environ, "SLURM_CONF": str(conf)}
    t0 = time.perf_counter()
    try:
        slurm.procs["munged"] = subprocess.Popen(
            ["munged", "--foreground", f"--socket={sock}", f"--key-file={key}",
             f"--pid-file={mdir}/munged.pid", f"--seed-file={mdir}/munged.seed",
             f"--log-file={mdir}/munged.log"],
            user=munge_pw.pw_uid, group=munge_pw.pw_gid, extra_groups=[],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        _wait(lambda: sock.exists(), 10, "munged socket", slurm)
        slurm.procs["slurmctld"] = subprocess.Popen(
            ["slurmctld", "-D", "-i", "-f", str(conf)], env=env,
            stdout=subprocess.DEVNULL, stderr=(root / "slurmctld.stderr").open("w"),
        )
        slurm.procs["slurmd"] = subprocess.Popen(
            ["slurmd", "-D", "-f", str(conf), "-N", node], env=env,
            stdout=subprocess.DEVNULL, stderr=(root / "slurmd.stderr").open("w"),
        )

        def idle() -> bool:
            out = subprocess.run(["sinfo", "--noheader", "--format=%t", "-n", node], env=env,
                                 capture_output=True, text=True, timeout=10)
            return out.returncode == 0 and out.stdout.strip() in ("idle", "mix", "alloc")

        _wait(idle, timeout_s, "the SLURM node to become idle", slurm)
        slurm.startup_s = time.perf_counter() - t0
        yield slurm
    finally:
        with contextlib.suppress(Exception):
            if slurm.procs.get("slurmctld") and slurm.procs["slurmctld"].poll() is None:
                subprocess.run(["scancel", "--full", "--partition", "debug"], env=env,
                               capture_output=True, timeout=15)
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline and slurm.jobs():
                    time.sleep(0.3)
        for name in ("slurmd", "slurmctld"):  # SIGTERM both at once, then wait (each may take seconds)
            if name in slurm.procs and slurm.procs[name].poll() is None:
                slurm.procs[name].send_signal(signal.SIGTERM)
        for name in ("slurmd", "slurmctld", "munged"):
            if name in slurm.procs:
                _stop(slurm.procs[name])
        if own_root:
            shutil.rmtree(root, ignore_errors=True)


def _wait(ok, timeout_s: float, what: str, slurm: Slurm) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for name, p in slurm.procs.items():
            if p.poll() is not None:
                raise RuntimeError(f"{name} exited with code {p.returncode} while waiting for {what}\n{slurm.logs()}")
        if ok():
            return
        time.sleep(0.2)
    raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {what}\n{slurm.logs()}")


@pytest.fixture(scope="session")
def slurm() -> Iterator[Slurm]:
    """A real one-node SLURM for the session; ``SLURM_CONF`` is exported while it runs."""
    reason = missing_slurm()
    if reason:
        pytest.skip(reason)
    old = os.environ.get("SLURM_CONF")
    # Short path under /tmp: the munge socket path must fit in a sockaddr_un.
    with start_slurm() as s:  # removes its folder after the daemons stopped
        os.environ["SLURM_CONF"] = str(s.conf)
        try:
            yield s
        finally:
            if old is None:
                os.environ.pop("SLURM_CONF", None)
            else:
                os.environ["SLURM_CONF"] = old


# ----------------------------------------------------------------------------- Prefect server


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """PREFECT_API_URL of a real local Prefect server (ramanscreen.flows.server), exported for one test module.

    Exported in ``os.environ`` so Dask workers started afterwards (local or SLURM) inherit it, and
    set in Prefect's in-process settings, which may have been read at import already.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from ramanscreen.flows.server import start_server

    server = start_server(tmp_path_factory.mktemp("prefect-home"))
    saved = {k: os.environ.get(k) for k in server.env()}
    os.environ.update(server.env())
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            yield server.api_url
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        from ramanscreen.flows.server import drain_clients

        drain_clients()  # send buffered events before the server goes away
        server.stop()


if __name__ == "__main__":  # start one by hand
    with start_slurm() as s:
        print(f"export SLURM_CONF={s.conf}   # node {s.node} idle after {s.startup_s:.1f} s; Ctrl-C stops it")
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
