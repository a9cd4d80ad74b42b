"""Starting the clusters: :func:`build_cluster` (LocalCluster with fixed pools, SLURMCluster with a
:class:`~ramanscreen.flows.cluster.scaler.PoolAdaptive` per pool), :func:`start_cluster` /
:func:`open_cluster` and :func:`make_task_runner`."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shlex
from collections.abc import Iterator, Mapping
from typing import Any

from ramanscreen.flows.cluster.routing import RunningCluster, _active, _active_lock
from ramanscreen.flows.cluster.scaler import _pool_adaptive_class
from ramanscreen.flows.cluster.schema import _SCHEMES, ClusterSettings, PoolSettings
from ramanscreen.tasks.common import InputError


def _slurm_kwargs(options: Mapping[str, Any]) -> dict[str, Any]:
    kw = dict(options)
    kw.setdefault("job_name", "ramanscreen")
    # One worker per job, named after its job spec, so a pool can count its own workers.
    kw["processes"] = 1
    return kw


def _pool_job_spec(cluster, pool: PoolSettings, top: Mapping[str, Any]) -> dict[str, Any]:
    options = dict(cluster.new_spec["options"])
    own = dict(pool.slurm)
    extra = list(own.pop("worker_extra_args", top.get("worker_extra_args", [])))
    options.update(own)
    options["worker_extra_args"] = [*extra, "--resources", f"{pool.resource}={pool.slots}"]
    options["job_name"] = f"rs-{pool.name}"
    return {"cls": cluster.new_spec["cls"], "options": options}


def build_cluster(cluster: Mapping[str, Any] | ClusterSettings | None = None, *, file: str | None = None):
    """Start the Dask cluster a ``[cluster]`` section describes and return it (a SpecCluster).

    ``local`` gives a :class:`distributed.LocalCluster` on 127.0.0.1 (sized to the machine unless
    ``n_workers``/``threads_per_worker`` are set; with pools, ``workers`` x ``threads`` per pool,
    each worker advertising its stage's resource). ``slurm`` gives a
    :class:`dask_jobqueue.SLURMCluster` scaling adaptively, one :class:`PoolAdaptive` per pool.
    Closing the returned cluster stops its workers (and cancels its jobs). Usable as
    ``DaskTaskRunner(cluster_class=build_cluster, cluster_kwargs={"cluster": cfg})``.
    """
    settings = ClusterSettings.from_dict(cluster, file=file)
    if settings.kind == "address":
        raise InputError('an "address" cluster is already running; connect to it instead of building one',
                         file=settings.source, field="cluster.kind", fix="use make_task_runner(settings) or its address")
    if settings.kind == "local":
        return _build_local(settings)
    return _build_slurm(settings)


def _build_local(settings: ClusterSettings):
    from distributed import LocalCluster

    kw: dict[str, Any] = {"host": settings.host, "processes": True}
    if settings.dashboard_address:
        kw["dashboard_address"] = settings.dashboard_address
    if settings.memory_limit:
        kw["memory_limit"] = settings.memory_limit
    if not settings.pools:
        if settings.n_workers is not None:
            kw["n_workers"] = settings.n_workers
        if settings.threads_per_worker is not None:
            kw["threads_per_worker"] = settings.threads_per_worker
        return LocalCluster(**kw)
    cluster = LocalCluster(n_workers=0, threads_per_worker=1, **kw)
    try:
        for pool in settings.pools:
            for i in range(pool.workers):
                if pool.python:  # a worker command (podman run ..., apptainer exec ...): a subprocess
                    options = {"python": pool.python, "nthreads": pool.threads, "resources": {pool.resource: pool.slots},
                               "memory_limit": pool.memory_limit}
                    cluster.worker_spec[f"{pool.name}-{i}"] = {"cls": _command_worker_class(), "options": options}
                    continue
                options = dict(cluster.new_spec["options"])
                options.update(nthreads=pool.threads, resources={pool.resource: pool.slots})
                if pool.memory_limit:
                    options["memory_limit"] = pool.memory_limit
                cluster.worker_spec[f"{pool.name}-{i}"] = {"cls": cluster.new_spec["cls"], "options": options}
        n = len(cluster.worker_spec)
        cluster.scale(n)
        # a container's worker needs its image started and the stack imported: give it longer
        cluster.wait_for_workers(n, timeout=300 if any(p.python for p in settings.pools) else 120)
    except BaseException:
        cluster.close()
        raise
    return cluster


def worker_command(python: str, scheduler: str, *, name: str, nthreads: int = 1,
                   resources: Mapping[str, int] | None = None, memory_limit: str | None = None) -> list[str]:
    """The command line of a local pool's worker run by its ``python`` (a worker command).

    >>> worker_command("podman run --rm --network=host localhost/ramanscreen-ml:0.1.0 python",
    ...                "tcp://127.0.0.1:8786", name="ml-0", resources={"ml": 1})[5:]
    ['python', '-m', 'distributed.cli.dask_worker', 'tcp://127.0.0.1:8786', '--name', 'ml-0', '--nthreads', '1', '--nworkers', '1', '--death-timeout', '60', '--resources', 'ml=1']
    """
    cmd = [*shlex.split(python), "-m", "distributed.cli.dask_worker", scheduler, "--name", name,
           "--nthreads", str(nthreads), "--nworkers", "1", "--death-timeout", "60"]
    if resources:
        cmd += ["--resources", ",".join(f"{k}={v}" for k, v in resources.items())]
    if memory_limit:
        cmd += ["--memory-limit", memory_limit]
    return cmd


@functools.cache
def _command_worker_class():
    from distributed.deploy.spec import ProcessInterface

    class CommandWorker(ProcessInterface):
        """A local pool's worker as a subprocess of its worker command (``<python> -m
        distributed.cli.dask_worker ...``), e.g. inside ``podman run``; closing it sends SIGTERM
        (podman passes it on to the container), then SIGKILL after 30 s."""

        def __init__(self, scheduler: str, name: str, *, python: str, nthreads: int = 1,
                     resources: Mapping[str, int] | None = None, memory_limit: str | None = None) -> None:
            super().__init__(scheduler=scheduler, name=name)
            self.command = worker_command(python, scheduler, name=name, nthreads=nthreads, resources=resources,
                                          memory_limit=memory_limit)
            self.proc: asyncio.subprocess.Process | None = None

        async def start(self) -> None:
            self.proc = await asyncio.create_subprocess_exec(*self.command, env=dict(os.environ),
                                                             stdin=asyncio.subprocess.DEVNULL)
            await super().start()

        async def close(self) -> None:
            proc = self.proc
            if proc is not None and proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 30)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
            await super().close()

    return CommandWorker


def _build_slurm(settings: ClusterSettings):
    from dask_jobqueue import SLURMCluster

    kw = _slurm_kwargs(settings.slurm)
    try:
        cluster = SLURMCluster(**kw)
    except ValueError as exc:  # jobqueue's own checks of the options
        raise InputError(" ".join(str(exc).split()), file=settings.source, field="cluster",
                         fix="check the SLURM options in [cluster]") from exc
    if not settings.pools:
        if settings.minimum_jobs == settings.maximum_jobs:
            cluster.scale(jobs=settings.maximum_jobs)
        else:
            cluster.adapt(minimum_jobs=settings.minimum_jobs, maximum_jobs=settings.maximum_jobs,
                          interval=settings.adapt_interval)
        return cluster
    PoolAdaptive = _pool_adaptive_class()
    adaptives = []
    try:
        for pool in settings.pools:
            spec = _pool_job_spec(cluster, pool, settings.slurm)
            adaptives.append(PoolAdaptive(cluster, pool=pool, spec=spec, minimum=pool.minimum_jobs,
                                          maximum=pool.maximum_jobs, interval=settings.adapt_interval))
    except BaseException:
        cluster.close()
        raise
    # Adaptive holds only a weak reference to itself in its callback: keep them alive with the cluster.
    cluster.ramanscreen_pools = adaptives
    return cluster


def start_cluster(cluster: Mapping[str, Any] | ClusterSettings | None = None, *, file: str | None = None) -> RunningCluster:
    """Start (or, for ``address``, just name) the campaign's cluster; the caller must ``close()`` it."""
    settings = ClusterSettings.from_dict(cluster, file=file)
    if settings.kind == "address":
        running = RunningCluster(settings=settings, address=settings.address)
    else:
        obj = build_cluster(settings)
        running = RunningCluster(settings=settings, address=obj.scheduler_address, cluster=obj)
    with _active_lock:
        _active.append(settings)
    return running


@contextlib.contextmanager
def open_cluster(cluster: Mapping[str, Any] | ClusterSettings | None = None, *, file: str | None = None) -> Iterator[RunningCluster]:
    """Start the campaign's cluster for the ``with`` block and stop it afterwards.

    Yields a :class:`RunningCluster` (``address, close = running`` also works). While open it is
    the default for :func:`on_pool` and :func:`stage_resources`.
    """
    running = start_cluster(cluster, file=file)
    try:
        yield running
    finally:
        running.close()


def make_task_runner(cluster: RunningCluster | str | Mapping[str, Any] | ClusterSettings | None = None):
    """A ``prefect_dask.DaskTaskRunner`` for a running cluster, a scheduler address or a ``[cluster]`` table.

    Pass the :class:`RunningCluster` from :func:`open_cluster` (or its address) so that every
    flow of a campaign reuses one cluster. Given a table instead, ``address`` connects to it and
    the other kinds start a temporary cluster for each flow run (via :func:`build_cluster`).
    """
    from prefect_dask import DaskTaskRunner

    if isinstance(cluster, RunningCluster):
        return DaskTaskRunner(address=cluster.address)
    if isinstance(cluster, str):
        if not cluster.startswith(_SCHEMES):
            raise InputError(f"not a Dask scheduler address: {cluster!r}", field="cluster.address",
                             fix='write it as "tcp://HOST:PORT"')
        return DaskTaskRunner(address=cluster)
    settings = ClusterSettings.from_dict(cluster)
    if settings.kind == "address":
        return DaskTaskRunner(address=settings.address)
    return DaskTaskRunner(cluster_class=build_cluster, cluster_kwargs={"cluster": settings})
