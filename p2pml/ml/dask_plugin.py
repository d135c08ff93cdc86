"""The worker plugin the node registers on its Dask cluster.

Dask's statistical profiler samples every thread of a worker 100 times a
second on the worker's event loop, holding the GIL each time: on a 2-core
machine a batch of training jobs ran ~1.4x slower with it (scripts/bench_dask.py).
The node's jobs are one function whose profile says nothing new, so the
plugin turns the profiler off on every worker, present and future. (Operators
get the same with ``DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=False``.)
"""

from __future__ import annotations

from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

NAME = "p2pml-node"


class NodeWorkerPlugin(WorkerPlugin):  # type: ignore[misc]
    name = NAME

    def setup(self, worker: Any) -> None:
        # Runs on the worker's event loop, where its periodic callbacks live.
        for key in ("profile", "profile-cycle"):
            pc = worker.periodic_callbacks.pop(key, None)
            if pc is not None:
                pc.stop()
