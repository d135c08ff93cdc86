"""The ``JobPool`` port: what runs the node's training and verification jobs.

``Trainer`` and the verifier only call :meth:`JobPool.run` with a job name of
the fixed table (``p2pml.ml.pool.JOBS``). Whichever executor runs it
(``p2pml.ml.pool.TrainingPool``: local processes; ``p2pml.ml.dask_pool.DaskPool``:
a Dask cluster) calls the same function, ``p2pml.ml.pool.execute``, in a
single-threaded process, so a result does not depend on where it was computed.
"""

from __future__ import annotations

from typing import Any, Protocol

from p2pml.ml.scheduling import Priority


class JobPool(Protocol):
    async def run(
        self, job: str, request: Any, timeout: float, priority: Priority = Priority.TRAIN
    ) -> Any:
        """The job's result; its ``TrainingError``/``ValidationError`` raised as
        itself; ``TrainingError("job-timeout")`` past ``timeout`` seconds. Jobs
        wait for a worker by ``priority``: block verification first, then own
        training, then background checks."""
        ...

    async def close(self) -> None: ...

    def describe(self) -> dict[str, Any]:
        """The executor, its workers and their load (for ``GET /status``)."""
        ...
