"""Dask clusters for the campaign flows, built from the campaign file's ``[cluster]`` section.

Three kinds (``kind = "local" | "address" | "slurm"``), optionally split into worker *pools*,
one per stage (``md``, ``reference``, ``ml``). Each pool's workers advertise a Dask resource of
the stage's name, and the flows submit a stage's tasks inside :func:`on_pool`, which annotates
them with ``resources={stage: 1}`` so they run only on that pool::

    [cluster]
    kind = "slurm"
    queue = "compute"
    account = "chem123"
    cores = 8
    memory = "32GB"
    walltime = "12:00:00"
    job_script_prologue = ["module load apptainer"]

    [cluster.pools.md]
    python = "apptainer exec containers/md.sif python"
    maximum_jobs = 4

    [cluster.pools.reference]
    python = "apptainer exec containers/reference.sif python"
    cores = 32
    maximum_jobs = 8

    [cluster.pools.ml]
    python = "apptainer exec containers/ml.sif python"
    maximum_jobs = 2

How the pieces fit (SLURM): a Dask client talks to one scheduler, and every dask-jobqueue
cluster starts its own, so the pools share *one* :class:`dask_jobqueue.SLURMCluster`, whose
scheduler runs in the flow process. Each pool adds its own job specs to that cluster (its own
``python``, cores, memory, walltime, ``--resources`` and job name ``rs-<pool>``) and scales
them with its own :class:`PoolAdaptive`, which counts the tasks waiting for, or running on, the
pool's resource and keeps ``minimum_jobs <= jobs <= maximum_jobs``; a job whose worker vanished
(``scancel``, node loss, walltime) is forgotten and replaced, and Dask reruns its task elsewhere.
Without pools, the cluster scales with dask-jobqueue's ordinary ``adapt(minimum_jobs=, maximum_jobs=)``.
Local pools are fixed: ``workers`` x ``threads`` Nanny workers per stage on one LocalCluster.

The flows start one cluster for a whole campaign and give every flow a task runner that connects
to it::

    with open_cluster(campaign["cluster"]) as running:
        campaign_flow.with_options(task_runner=make_task_runner(running))(...)
        # inside the flow:  with on_pool("md"): md_task.submit(...)

:func:`on_pool` without a cluster argument uses the cluster opened last by :func:`open_cluster`
or :func:`start_cluster` (in any thread); pass the cluster explicitly otherwise.

Start the Prefect server (and export ``PREFECT_API_URL``) *before* the cluster: workers inherit
the environment they start with. Workers import the project's task code by module name, so the
project must be installed in every worker's Python (editable install locally, the images on HPC).
prefect-dask ships the running flow (in the task's context) to the workers too, so flows must
be module-level functions that pickle (no closures over locks, processes or clients).
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ramanscreen.tasks.common import InputError

__all__ = [
    "STAGES",
    "ClusterSettings",
    "PoolSettings",
    "PoolAdaptive",  # noqa: F822 - provided by the module __getattr__ below
    "RunningCluster",
    "build_cluster",
    "make_task_runner",
    "on_pool",
    "open_cluster",
    "stage_resources",
    "start_cluster",
]

#: The stages that may have their own worker pool; also the Dask resource names.
STAGES: tuple[str, ...] = ("md", "reference", "ml")

KINDS = ("local", "address", "slurm")

# SLURMCluster options passed through from the campaign file, with the TOML type each must have.
_STR, _INT, _LIST, _DICT, _BOOL = "a string", "an integer", "a list of strings", "a table", "true or false"
SLURM_OPTIONS: dict[str, str] = {
    "queue": _STR,
    "account": _STR,
    "cores": _INT,
    "memory": _STR,
    "walltime": _STR,
    "job_extra_directives": _LIST,
    "job_script_prologue": _LIST,
    "job_directives_skip": _LIST,
    "worker_extra_args": _LIST,
    "job_cpu": _INT,
    "job_mem": _STR,
    "python": _STR,
    "interface": _STR,
    "local_directory": _STR,
    "log_directory": _STR,
    "death_timeout": _INT,
    "shebang": _STR,
    "nanny": _BOOL,
    "scheduler_options": _DICT,
}
# Options that only make sense once per cluster (the scheduler's), not per pool.
_CLUSTER_ONLY = {"interface", "scheduler_options"}

_COMMON_KEYS = {"kind", "pools", "source"}
_LOCAL_KEYS = {"n_workers", "threads_per_worker", "memory_limit", "dashboard_address", "host"}
_ADDRESS_KEYS = {"address"}
_SLURM_KEYS = {"minimum_jobs", "maximum_jobs", "adapt_interval", "processes", *SLURM_OPTIONS}
_POOL_LOCAL_KEYS = {"workers", "threads", "slots", "memory_limit"}
_POOL_ADDRESS_KEYS = {"slots"}
_POOL_SLURM_KEYS = {"slots", "minimum_jobs", "maximum_jobs", "processes", *(set(SLURM_OPTIONS) - _CLUSTER_ONLY)}
_SCHEMES = ("tcp://", "tls://", "inproc://", "ucx://", "ws://", "wss://")


# --------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class PoolSettings:
    """One stage's worker pool.

    ``slots`` is the amount of the stage's resource each worker advertises, i.e. how many of the
    stage's tasks one worker runs at once (1: one MD run or one DFPT calculation per job).
    Local pools have a fixed size (``workers`` x ``threads``); SLURM pools scale between
    ``minimum_jobs`` and ``maximum_jobs`` and may override any SLURM option (``python``,
    ``cores``, ``memory``, ``walltime``, ``queue``, ``job_extra_directives``...) in ``slurm``.
    """

    name: str
    slots: int = 1
    workers: int = 1
    threads: int = 1
    memory_limit: str | None = None
    minimum_jobs: int = 0
    maximum_jobs: int = 1
    slurm: Mapping[str, Any] = field(default_factory=dict)

    @property
    def resource(self) -> str:
        return self.name


@dataclass(frozen=True)
class ClusterSettings:
    """The validated ``[cluster]`` section. Build it with :meth:`from_dict`."""

    kind: str = "local"
    # local
    n_workers: int | None = None
    threads_per_worker: int | None = None
    memory_limit: str | None = None
    dashboard_address: str | None = None
    host: str = "127.0.0.1"
    # address
    address: str | None = None
    # slurm
    minimum_jobs: int = 0
    maximum_jobs: int = 1
    adapt_interval: str = "1s"
    slurm: Mapping[str, Any] = field(default_factory=dict)
    # every kind
    pools: tuple[PoolSettings, ...] = ()
    source: str | None = None

    @property
    def pool_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.pools)

    def pool(self, stage: str) -> PoolSettings | None:
        return next((p for p in self.pools if p.name == stage), None)

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any] | None, *, file: str | os.PathLike[str] | None = None) -> ClusterSettings:
        """Validate a ``[cluster]`` table (a plain dict from TOML); raise InputError naming the field."""
        file = None if file is None else str(file)
        if cfg is None:
            return cls(source=file)
        if isinstance(cfg, ClusterSettings):
            return cfg
        if not isinstance(cfg, Mapping):
            raise InputError(f"must be a table, got {type(cfg).__name__}", file=file, field="cluster",
                             fix='write a [cluster] section with kind = "local", "address" or "slurm"')
        cfg = dict(cfg)
        cfg.pop("source", None)
        kind = cfg.get("kind", "local")
        if kind not in KINDS:
            raise InputError(f"unknown kind {kind!r}", file=file, field="cluster.kind",
                             fix='use "local", "address" or "slurm"')
        allowed = _COMMON_KEYS | {"local": _LOCAL_KEYS, "address": _ADDRESS_KEYS, "slurm": _SLURM_KEYS}[kind]
        _check_keys(cfg, allowed, "cluster", kind, file)
        v = _Validator(file)
        kw: dict[str, Any] = {"kind": kind, "source": file}
        if kind == "local":
            kw["n_workers"] = v.int(cfg, "n_workers", "cluster", minimum=1)
            kw["threads_per_worker"] = v.int(cfg, "threads_per_worker", "cluster", minimum=1)
            kw["memory_limit"] = v.str(cfg, "memory_limit", "cluster")
            kw["dashboard_address"] = v.str(cfg, "dashboard_address", "cluster")
            kw["host"] = v.str(cfg, "host", "cluster") or "127.0.0.1"
        elif kind == "address":
            address = v.str(cfg, "address", "cluster")
            if not address:
                raise InputError('required for kind = "address"', file=file, field="cluster.address",
                                 fix='give the scheduler, e.g. address = "tcp://10.0.0.5:8786"')
            if not address.startswith(_SCHEMES):
                raise InputError(f"not a Dask scheduler address: {address!r}", file=file, field="cluster.address",
                                 fix='write it as "tcp://HOST:PORT"')
            kw["address"] = address
        else:
            kw["minimum_jobs"] = v.int(cfg, "minimum_jobs", "cluster", minimum=0, default=0)
            kw["maximum_jobs"] = v.int(cfg, "maximum_jobs", "cluster", minimum=1, default=1)
            if kw["minimum_jobs"] > kw["maximum_jobs"]:
                raise InputError(f"minimum_jobs = {kw['minimum_jobs']} exceeds maximum_jobs = {kw['maximum_jobs']}",
                                 file=file, field="cluster.minimum_jobs", fix="lower minimum_jobs or raise maximum_jobs")
            kw["adapt_interval"] = v.str(cfg, "adapt_interval", "cluster") or "1s"
            kw["slurm"] = v.slurm_options(cfg, "cluster", SLURM_OPTIONS)
            for required, example in (("cores", "cores = 4"), ("memory", 'memory = "16GB"')):
                if required not in kw["slurm"]:
                    raise InputError('required for kind = "slurm"', file=file, field=f"cluster.{required}",
                                     fix=f"add {example} (per job) to [cluster]")
        kw["pools"] = _parse_pools(cfg.get("pools"), kind, kw, v)
        if kw["pools"] and kind == "local":
            for key, fix in (("n_workers", "workers"), ("threads_per_worker", "threads")):
                if kw.get(key) is not None:
                    raise InputError("sizes the cluster only without pools", file=file, field=f"cluster.{key}",
                                     fix=f"drop it and give each [cluster.pools.<stage>] its {fix}")
        return cls(**kw)


def _check_keys(cfg: Mapping[str, Any], allowed: set[str], where: str, kind: str, file: str | None) -> None:
    for key in cfg:
        if key not in allowed:
            others = [k for k in ("local", "address", "slurm") if k != kind]
            hint = next((k for k in others if key in {"local": _LOCAL_KEYS | _POOL_LOCAL_KEYS,
                                                       "address": _ADDRESS_KEYS,
                                                       "slurm": _SLURM_KEYS | _POOL_SLURM_KEYS}[k]), None)
            fix = (f'it applies to kind = "{hint}" only' if hint
                   else f"known keys: {', '.join(sorted(allowed - {'source'}))}")
            raise InputError(f'unknown key for kind = "{kind}"', file=file, field=f"{where}.{key}", fix=fix)


def _parse_pools(pools: Any, kind: str, top: dict[str, Any], v: _Validator) -> tuple[PoolSettings, ...]:
    file = v.file
    if pools is None:
        return ()
    if not isinstance(pools, Mapping):
        raise InputError("must be a table of pools", file=file, field="cluster.pools",
                         fix="write [cluster.pools.md], [cluster.pools.reference], [cluster.pools.ml]")
    if not pools:
        return ()
    for name in pools:
        if name not in STAGES:
            raise InputError(f"unknown stage {name!r}", file=file, field=f"cluster.pools.{name}",
                             fix=f"pools are named after the stages: {', '.join(STAGES)}")
    missing = [s for s in STAGES if s not in pools]
    if missing:
        raise InputError(f"no pool for stage {missing[0]!r}: its tasks would wait forever", file=file,
                         field=f"cluster.pools.{missing[0]}",
                         fix=f"give every stage a pool ({', '.join(STAGES)}) or drop [cluster.pools]")
    allowed = {"local": _POOL_LOCAL_KEYS, "address": _POOL_ADDRESS_KEYS, "slurm": _POOL_SLURM_KEYS}[kind]
    out = []
    for name in STAGES:
        p = pools[name]
        where = f"cluster.pools.{name}"
        if not isinstance(p, Mapping):
            raise InputError("must be a table", file=file, field=where, fix=f"write [{where}] with its options")
        if "python" in p and kind != "slurm":
            raise InputError(f'a pool\'s python applies to kind = "slurm" only, not "{kind}"', file=file,
                             field=f"{where}.python",
                             fix='use kind = "slurm", or drop python (local workers use this Python)')
        _check_keys(p, allowed, where, kind, file)
        kw: dict[str, Any] = {"name": name, "slots": v.int(p, "slots", where, minimum=1, default=1)}
        if kind == "local":
            kw["workers"] = v.int(p, "workers", where, minimum=1, default=1)
            kw["threads"] = v.int(p, "threads", where, minimum=1, default=1)
            kw["memory_limit"] = v.str(p, "memory_limit", where)
        elif kind == "slurm":
            kw["minimum_jobs"] = v.int(p, "minimum_jobs", where, minimum=0, default=top["minimum_jobs"])
            kw["maximum_jobs"] = v.int(p, "maximum_jobs", where, minimum=1, default=top["maximum_jobs"])
            if kw["minimum_jobs"] > kw["maximum_jobs"]:
                raise InputError(f"minimum_jobs = {kw['minimum_jobs']} exceeds maximum_jobs = {kw['maximum_jobs']}",
                                 file=file, field=f"{where}.minimum_jobs", fix="lower minimum_jobs or raise maximum_jobs")
            kw["slurm"] = v.slurm_options(p, where, {k: t for k, t in SLURM_OPTIONS.items() if k not in _CLUSTER_ONLY})
        out.append(PoolSettings(**kw))
    return tuple(out)


@dataclass
class _Validator:
    file: str | None

    def _err(self, where: str, key: str, want: str, got: Any, fix: str | None = None) -> InputError:
        return InputError(f"must be {want}, got {got!r}", file=self.file, field=f"{where}.{key}", fix=fix)

    def int(self, cfg: Mapping[str, Any], key: str, where: str, minimum: int = 0, default: int | None = None) -> int | None:
        if key not in cfg:
            return default
        val = cfg[key]
        if isinstance(val, bool) or not isinstance(val, int):
            raise self._err(where, key, "an integer", val, fix=f"write e.g. {key} = {max(minimum, 1)}")
        if val < minimum:
            raise self._err(where, key, f"an integer >= {minimum}", val, fix=f"write e.g. {key} = {max(minimum, 1)}")
        return val

    def str(self, cfg: Mapping[str, Any], key: str, where: str) -> str | None:
        if key not in cfg:
            return None
        val = cfg[key]
        if not isinstance(val, str) or not val.strip():
            raise self._err(where, key, "a non-empty string", val, fix=f'quote it: {key} = "..."')
        return val

    def slurm_options(self, cfg: Mapping[str, Any], where: str, known: Mapping[str, str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, want in known.items():
            if key not in cfg:
                continue
            val = cfg[key]
            ok = {
                _STR: isinstance(val, str) and bool(val.strip()),
                _INT: isinstance(val, int) and not isinstance(val, bool) and val >= 1,
                _LIST: isinstance(val, list) and all(isinstance(x, str) for x in val),
                _DICT: isinstance(val, Mapping),
                _BOOL: isinstance(val, bool),
            }[want]
            if not ok:
                fix = {_LIST: f'write {key} = ["...", "..."]', _INT: f"write e.g. {key} = 4",
                       _STR: f'quote it: {key} = "..."', _DICT: f"write a [{where}.{key}] table",
                       _BOOL: f"write {key} = true"}[want]
                raise self._err(where, key, want if want != _INT else "a positive integer", val, fix=fix)
            out[key] = dict(val) if want == _DICT else (list(val) if want == _LIST else val)
        if "processes" in cfg:
            raise InputError("several worker processes per job are not supported", file=self.file,
                             field=f"{where}.processes", fix="drop processes; one worker per job uses all its cores")
        return out


# --------------------------------------------------------------------------------- pools


_active_lock = threading.Lock()
_active: list[ClusterSettings] = []


def _current(settings: ClusterSettings | RunningCluster | Mapping[str, Any] | None) -> ClusterSettings | None:
    if isinstance(settings, RunningCluster):
        return settings.settings
    if isinstance(settings, ClusterSettings):
        return settings
    if settings is not None:
        return ClusterSettings.from_dict(settings)
    with _active_lock:
        return _active[-1] if _active else None


def stage_resources(stage: str, cluster: ClusterSettings | RunningCluster | Mapping[str, Any] | None = None) -> dict[str, int]:
    """The Dask resources one task of ``stage`` needs: ``{stage: 1}`` when pools are configured, else ``{}``.

    ``cluster`` defaults to the cluster opened last by :func:`open_cluster` / :func:`start_cluster`.

    >>> stage_resources("md", {"kind": "local"})
    {}
    >>> stage_resources("md", {"kind": "address", "address": "tcp://h:8786",
    ...                        "pools": {"md": {}, "reference": {}, "ml": {}}})
    {'md': 1}
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; the stages with pools are {', '.join(STAGES)}")
    settings = _current(cluster)
    if settings is None or not settings.pools:
        return {}
    pool = settings.pool(stage)
    return {pool.resource: 1} if pool else {}


@contextlib.contextmanager
def on_pool(stage: str, cluster: ClusterSettings | RunningCluster | Mapping[str, Any] | None = None) -> Iterator[dict[str, int]]:
    """Submit the tasks of ``stage`` inside this block so they run only on that stage's pool.

    Wraps ``dask.annotate(resources={stage: 1})`` when pools are configured; does nothing
    otherwise. Yields the resources used.
    """
    resources = stage_resources(stage, cluster)
    if not resources:
        yield resources
        return
    import dask

    with dask.annotate(resources=resources):
        yield resources


@functools.cache
def _pool_adaptive_class():
    from distributed.deploy.adaptive import Adaptive

    class _PoolAdaptive(Adaptive):
        """Adaptive scaling of one pool's jobs inside a shared SpecCluster.

        The target is the number of tasks that need the pool's resource and are waiting for a
        worker or running on one, divided by the pool's slots per job. Scaling adds or removes
        the pool's own entries in ``cluster.worker_spec`` only.
        """

        def __init__(self, cluster, *, pool: PoolSettings, spec: dict[str, Any], **kwargs: Any) -> None:
            self.pool = pool
            self.spec = spec
            self.prefix = f"{pool.name}-"
            self._counter = 0
            self._seen: set[str] = set()
            super().__init__(cluster, **kwargs)

        def _mine(self, names) -> set:
            return {n for n in names if isinstance(n, str) and n.startswith(self.prefix)}

        @property
        def plan(self) -> set:
            return self._mine(self.cluster.worker_spec)

        @property
        def requested(self) -> set:
            return self._mine(n for n in self.cluster.workers if n in self.cluster.worker_spec)

        @property
        def observed(self) -> set:
            return self._mine(d["name"] for d in self.cluster.scheduler_info.get("workers", {}).values())

        def demand(self) -> int:
            """Tasks needing this pool's resource that wait for a worker or run on one."""
            scheduler = self.cluster.scheduler
            res = self.pool.resource
            n = sum(1 for ts in list(scheduler.unrunnable)
                    if ts.resource_restrictions and res in ts.resource_restrictions)
            for ws in list(scheduler.workers.values()):
                if ws.resources.get(res):
                    n += sum(1 for ts in ws.processing
                             if ts.resource_restrictions and res in ts.resource_restrictions)
            return n

        async def forget_lost_jobs(self) -> list[str]:
            """Drop the specs of workers that connected once and are gone (job cancelled, node lost,
            walltime), so that the pool submits replacements instead of waiting for them forever."""
            observed = self.observed
            self._seen |= observed
            lost = sorted(n for n in self.plan if n in self._seen and n not in observed)
            if lost:
                self._seen -= set(lost)
                await self.cluster.scale_down(lost)
            return lost

        async def target(self) -> int:
            await self.forget_lost_jobs()
            return math.ceil(self.demand() / self.pool.slots)

        async def workers_to_close(self, target: int) -> list[str]:
            plan = self.plan
            excess = len(plan) - target - len(self.requested - self.observed)
            if excess <= 0:
                return []
            idle = sorted(ws.name for ws in self.cluster.scheduler.workers.values()
                          if ws.name in plan and not ws.processing)
            return idle[:excess]

        async def scale_up(self, n: int) -> None:
            while len(self.plan) < n:
                name = f"{self.prefix}{self._counter}"
                self._counter += 1
                self.cluster.worker_spec[name] = {"cls": self.spec["cls"], "options": dict(self.spec["options"])}
            await self.cluster

    return _PoolAdaptive


def __getattr__(name: str):  # PoolAdaptive needs distributed; import it only when asked for
    if name == "PoolAdaptive":
        return _pool_adaptive_class()
    raise AttributeError(name)


# --------------------------------------------------------------------------------- clusters


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
                options = dict(cluster.new_spec["options"])
                options.update(nthreads=pool.threads, resources={pool.resource: pool.slots})
                if pool.memory_limit:
                    options["memory_limit"] = pool.memory_limit
                cluster.worker_spec[f"{pool.name}-{i}"] = {"cls": cluster.new_spec["cls"], "options": options}
        n = len(cluster.worker_spec)
        cluster.scale(n)
        cluster.wait_for_workers(n, timeout=120)
    except BaseException:
        cluster.close()
        raise
    return cluster


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


@dataclass
class RunningCluster:
    """A started cluster: its scheduler ``address`` and ``close()``; unpacks as ``(address, close)``."""

    settings: ClusterSettings
    address: str
    cluster: Any = None  # the distributed Cluster object; None for kind = "address"
    _closed: bool = False

    def __iter__(self):
        yield self.address
        yield self.close

    @property
    def dashboard_link(self) -> str | None:
        return getattr(self.cluster, "dashboard_link", None)

    def job_scripts(self) -> dict[str, str]:
        """The batch script each SLURM pool submits (``{"default": ...}`` without pools; ``{}`` if not SLURM)."""
        pools = getattr(self.cluster, "ramanscreen_pools", None)
        if pools is None:
            return {"default": self.cluster.job_script()} if self.settings.kind == "slurm" else {}
        return {a.pool.name: a.spec["cls"](self.address, name=f"{a.prefix}N", **a.spec["options"]).job_script()
                for a in pools}

    def close(self) -> None:
        """Stop the workers (cancel the SLURM jobs) and the scheduler; idempotent."""
        if self._closed:
            return
        self._closed = True
        with _active_lock:
            if self.settings in _active:
                _active.reverse()
                _active.remove(self.settings)
                _active.reverse()
        if self.cluster is not None:
            for adaptive in getattr(self.cluster, "ramanscreen_pools", []):
                adaptive.stop(reason="campaign finished")
            self.cluster.close()


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
