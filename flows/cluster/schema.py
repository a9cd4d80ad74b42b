"""The ``[cluster]`` schema: :class:`ClusterSettings` and :class:`PoolSettings`, validated from
the campaign file's table with one-line errors naming the field (``cluster.pools.md.slots``...)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ramanscreen.tasks.common import InputError

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
_POOL_LOCAL_KEYS = {"workers", "threads", "slots", "memory_limit", "python"}
_POOL_ADDRESS_KEYS = {"slots"}
_POOL_SLURM_KEYS = {"slots", "minimum_jobs", "maximum_jobs", "processes", *(set(SLURM_OPTIONS) - _CLUSTER_ONLY)}
_SCHEMES = ("tcp://", "tls://", "inproc://", "ucx://", "ws://", "wss://")



@dataclass(frozen=True)
class PoolSettings:
    """One stage's worker pool.

    ``slots`` is the amount of the stage's resource each worker advertises, i.e. how many of the
    stage's tasks one worker runs at once (1: one MD run or one DFPT calculation per job).
    Local pools have a fixed size (``workers`` x ``threads``); a local pool's ``python`` is the
    worker command (e.g. ``"podman run --rm --network=host ... localhost/ramanscreen-ml:0.1.0
    python"``): its workers then run as ``<python> -m distributed.cli.dask_worker`` subprocesses
    instead of in-process Nanny workers of this Python. SLURM pools scale between
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
    python: str | None = None  # local pools: the worker command (None: this Python, in-process Nanny workers)

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
        if "python" in p and kind == "address":
            raise InputError('a pool\'s python applies to kind = "local" or "slurm" only, not "address"', file=file,
                             field=f"{where}.python",
                             fix="drop python: the workers of an address cluster are started outside the campaign")
        _check_keys(p, allowed, where, kind, file)
        kw: dict[str, Any] = {"name": name, "slots": v.int(p, "slots", where, minimum=1, default=1)}
        if kind == "local":
            kw["workers"] = v.int(p, "workers", where, minimum=1, default=1)
            kw["threads"] = v.int(p, "threads", where, minimum=1, default=1)
            kw["memory_limit"] = v.str(p, "memory_limit", where)
            kw["python"] = v.str(p, "python", where)
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

