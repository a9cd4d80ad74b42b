"""Routing a stage's tasks to its pool: :func:`stage_resources` and :func:`on_pool` (Dask
resource annotations), the registry of open clusters they default to, and the
:class:`RunningCluster` handle."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ramanscreen.flows.cluster.schema import STAGES, ClusterSettings

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

