"""Adaptive scaling per pool (SLURM): :class:`PoolAdaptive`, one per pool inside the shared
SLURMCluster, counting the tasks that wait for or run on the pool's resource."""

from __future__ import annotations

import functools
import math
from typing import Any

from ramanscreen.flows.cluster.schema import PoolSettings


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

