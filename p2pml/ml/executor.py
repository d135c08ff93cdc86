"""The executor ``[training] executor`` names, built for the node."""

from __future__ import annotations

from p2pml.config import TrainingSettings
from p2pml.ml.jobpool import JobPool


def make_pool(settings: TrainingSettings) -> JobPool:
    """``local``: this node's worker processes; ``dask``: a Dask cluster, with
    the local processes taking over while it is unreachable. (Config
    validation has checked the name and that ``distributed`` is installed.)"""
    from p2pml.ml.pool import TrainingPool

    local = TrainingPool(settings.workers, settings.worker_memory_mb)
    if settings.executor == "dask":
        from p2pml.ml.dask_pool import DaskPool

        return DaskPool(settings, fallback=local)
    return local
