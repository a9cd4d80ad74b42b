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

The package, by concern: :mod:`~ramanscreen.flows.cluster.schema` (the ``[cluster]`` table),
:mod:`~ramanscreen.flows.cluster.routing` (pools as Dask resources, the open-cluster registry),
:mod:`~ramanscreen.flows.cluster.scaler` (per-pool adaptive scaling on SLURM) and
:mod:`~ramanscreen.flows.cluster.builders` (starting local and SLURM clusters, task runners).
"""

from __future__ import annotations

from ramanscreen.flows.cluster.builders import build_cluster, make_task_runner, open_cluster, start_cluster
from ramanscreen.flows.cluster.routing import RunningCluster, on_pool, stage_resources
from ramanscreen.flows.cluster.scaler import _pool_adaptive_class
from ramanscreen.flows.cluster.schema import KINDS, SLURM_OPTIONS, STAGES, ClusterSettings, PoolSettings

__all__ = [
    "STAGES",
    "ClusterSettings",
    "PoolSettings",
    "PoolAdaptive",
    "RunningCluster",
    "build_cluster",
    "make_task_runner",
    "on_pool",
    "open_cluster",
    "stage_resources",
    "start_cluster",
]

__all__ += ["KINDS", "SLURM_OPTIONS"]


def __getattr__(name: str):  # PoolAdaptive needs distributed; import it only when asked for
    if name == "PoolAdaptive":
        return _pool_adaptive_class()
    raise AttributeError(name)
