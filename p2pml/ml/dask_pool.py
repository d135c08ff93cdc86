"""``DaskPool``: the node's jobs on a ``dask.distributed`` cluster.

Same interface as :class:`p2pml.ml.pool.TrainingPool` (the ``JobPool`` port):
``run(job, request, timeout)``. Each job is submitted as
:func:`p2pml.ml.dask_job.run_job`, which calls the very function the local
workers call, single-threaded and seeded: the result is the same bits
whichever executor ran it.

Datasets: the node scatters a dataset's bytes to the cluster once per CID
(key ``p2pml-dataset-<cid>``, one worker; Dask copies it to the others that
need it) and keeps the reference for the next jobs on that CID. Workers
write the bytes under their CID after checking them (see ``dask_job``); no
worker reads IPFS. A few CIDs stay scattered (LRU); a lost copy (its worker
died) is scattered again.

The cluster is a convenience, not a dependency: the async client lives on
the node's loop; a scheduler that is down at start, or goes away, leaves
the node running. While no cluster is connected jobs run on the local pool,
and a job whose worker or scheduler was lost (not one that failed by itself)
is run again on the local pool. :meth:`keep_connected` reconnects.

Time limit: the node's wall clock, counted from the moment a worker starts
the job (the task announces it on the ``p2pml-job-started`` event topic;
queued jobs wait for a free worker as in the local pool). A job over
its limit is cancelled and its worker restarted through its nanny (a thread
cannot be stopped), and it fails as ``job-timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any, Final

from p2pml.config import TrainingSettings
from p2pml.errors import TrainingError
from p2pml.ml.dask_job import STARTED_TOPIC, dataset_cid, run_job
from p2pml.ml.jobpool import JobPool
from p2pml.ml.pool import CPU_GRACE_SECONDS, JOBS, unpack
from p2pml.ml.scheduling import Priority

log = logging.getLogger(__name__)

#: Seconds between connection attempts while the scheduler is unreachable.
RECONNECT_SECONDS: Final = 5.0
#: Seconds between refreshes of the workers' load shown by ``describe``.
REFRESH_SECONDS: Final = 2.0
#: Seconds a connection attempt may take.
CONNECT_TIMEOUT: Final = 5.0
#: Datasets kept scattered on the cluster (least recently used dropped first).
SCATTERED_MAX: Final = 4
#: Attempts on the cluster before a job goes to the local pool (a lost
#: scattered copy is scattered again between them).
CLUSTER_ATTEMPTS: Final = 2


class _OneLine(logging.Filter):
    """A Dask record's traceback folded into its message: a lost scheduler is
    an expected event for the node, reported by the node's own warnings."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            record.msg = f"{record.getMessage()} ({type(exc).__name__}: {exc})"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True


def _route_dask_logging() -> None:
    """Dask's loggers into the node's log (not straight to stderr), warnings
    and up, one line each."""
    import distributed  # noqa: F401  (configures its loggers on import)

    top = logging.getLogger("distributed")
    for h in list(top.handlers):
        top.removeHandler(h)
    top.propagate = True
    top.setLevel(max(logging.WARNING, logging.getLogger().level))
    one_line = _OneLine()
    for name, lg in list(logging.root.manager.loggerDict.items()):
        if name.split(".")[0] == "distributed" and isinstance(lg, logging.Logger):
            lg.addFilter(one_line)


class ClusterLost(Exception):
    """The cluster could not run a job (scheduler or worker gone); not the job's fault."""

    def __init__(self, detail: str, again: bool = True) -> None:
        super().__init__(detail)
        self.again = again  # worth another try on the cluster


class DaskPool:
    def __init__(self, settings: TrainingSettings, fallback: JobPool) -> None:
        self._settings = settings
        self._local = fallback
        self.address = settings.dask_scheduler
        self._client: Any = None
        self._connecting = asyncio.Lock()
        self.state = "not-connected"
        self.reason = "not connected yet"
        self._scattered: OrderedDict[str, Any] = OrderedDict()  # cid -> distributed.Future
        self._scatter_locks: dict[str, asyncio.Lock] = {}
        self._inflight = 0
        self._started: dict[str, asyncio.Event] = {}  # job key -> a worker started it
        self._closed = False
        self._workers: dict[str, Any] = {}  # the scheduler's last word on each worker
        self.jobs_on_cluster = 0
        self.jobs_on_local = 0
        self.scatters = 0  # datasets sent to the cluster
        self.fallbacks = 0  # jobs moved to the local pool after the cluster failed them

    # -- connection ------------------------------------------------------------------

    def _security(self) -> Any:
        s = self._settings
        if not s.dask_tls_ca_file:
            return None
        from distributed import Security

        return Security(  # type: ignore[no-untyped-call]
            tls_ca_file=s.dask_tls_ca_file,
            tls_client_cert=s.dask_tls_client_cert,
            tls_client_key=s.dask_tls_client_key,
            require_encryption=True,
        )

    @property
    def connected(self) -> bool:
        c = self._client
        return c is not None and c.status == "running"

    async def connect(self) -> bool:
        """Connect if not connected; False (and the reason in ``reason``) on failure."""
        async with self._connecting:
            if self.connected:
                return True
            await self._drop_client()
            if self._closed:
                return False
            from distributed import Client

            _route_dask_logging()
            self.state = "connecting"
            try:
                self._client = await Client(  # type: ignore[no-untyped-call]
                    self.address,
                    asynchronous=True,
                    timeout=CONNECT_TIMEOUT,
                    security=self._security(),
                    set_as_default=False,
                    name="p2pml-node",
                )
            except Exception as e:  # OSError, TimeoutError, TLS errors, ...
                self.state = "unreachable"
                self.reason = f"{type(e).__name__}: {e}"
                log.warning(
                    "Dask scheduler %s unreachable (%s): jobs run on the local pool",
                    self.address,
                    self.reason,
                )
                return False
            self._client.subscribe_topic(STARTED_TOPIC, self._on_started)
            await self._register_plugin()
            self.state = "connected"
            self.reason = ""
            log.info("connected to Dask scheduler %s", self.address)
            return True

    async def _register_plugin(self) -> None:
        from p2pml.ml.dask_plugin import NAME, NodeWorkerPlugin

        try:
            await self._client.register_plugin(NodeWorkerPlugin(), name=NAME)
        except Exception as e:  # a speed-up only: the jobs run the same without it
            log.warning("could not register the worker plugin: %s", e)

    async def keep_connected(
        self, reconnect: float = RECONNECT_SECONDS, refresh: float = REFRESH_SECONDS
    ) -> None:
        """Run for the node's life: (re)connect whenever the cluster is gone, and
        keep the workers' load fresh for ``describe``."""
        next_try = 0.0
        while not self._closed:
            if self.connected:
                await self._refresh()
            else:
                if self.state == "connected":
                    self.state = "unreachable"
                    self.reason = "lost the scheduler"
                    self._workers = {}
                    log.warning("lost the Dask scheduler %s", self.address)
                if time.monotonic() >= next_try:
                    next_try = time.monotonic() + reconnect
                    if await self.connect():
                        await self._refresh()
            await asyncio.sleep(refresh)

    async def _refresh(self) -> None:
        try:
            ident = await asyncio.wait_for(self._client.scheduler.identity(n_workers=-1), 5)
        except Exception as e:
            log.debug("could not refresh the Dask workers: %s", e)
            return
        self._workers = dict(ident.get("workers", {}))

    async def _drop_client(self) -> None:
        client, self._client = self._client, None
        self._scattered.clear()
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(timeout=1), 1.5)

    # -- jobs ------------------------------------------------------------------------

    def _threads(self) -> int:
        if not self.connected:
            return 0
        # The async client's cached identity carries cluster totals only.
        return int(self._client.scheduler_info().get("total_threads", 0))

    def _on_started(self, event: tuple[float, Any]) -> None:
        log.debug("started: %s", event[1])
        started = self._started.get(str(event[1]))
        if started is not None:
            started.set()

    async def run(
        self, job: str, request: Any, timeout: float, priority: Priority = Priority.TRAIN
    ) -> Any:
        if job not in JOBS:
            raise ValueError(f"unknown job {job!r}")
        if self._closed:
            raise TrainingError("pool-closed", "the training pool is shut down")
        lost = False
        for attempt in range(CLUSTER_ATTEMPTS):
            if not self.connected:
                break
            try:
                reply = await self._on_cluster(job, request, timeout, priority)
            except ClusterLost as e:
                lost = True
                log.warning("%s job lost on the Dask cluster (attempt %d): %s", job, attempt + 1, e)
                cid = dataset_cid(request)
                if cid is not None:
                    self._forget(cid)  # its only copy may have died with a worker
                if not e.again:
                    break
                continue
            self.jobs_on_cluster += 1
            return unpack(reply)
        if lost:
            self.fallbacks += 1
            log.warning("%s job: running it on the local pool instead", job)
        self.jobs_on_local += 1
        return await self._local.run(job, request, timeout, priority)

    async def _on_cluster(
        self, job: str, request: Any, timeout: float, priority: Priority
    ) -> tuple[Any, ...]:
        client = self._client
        key = f"p2pml-{job}-{uuid.uuid4().hex}"
        started = self._started[key] = asyncio.Event()
        self._inflight += 1
        fut: Any = None
        try:
            data = await self._dataset(request)
            cpu = timeout + CPU_GRACE_SECONDS if math.isfinite(timeout) else None
            fut = client.submit(
                run_job,
                job,
                request,
                data,
                cpu,
                self._settings.worker_memory_mb,
                pure=False,
                key=key,
                # Dask runs higher numbers first; there is no preemption on
                # the cluster (a queued block check just goes ahead).
                priority=len(Priority) - 1 - int(priority),
            )
            result = asyncio.ensure_future(fut)
            try:
                # The clock starts when a worker starts the job, not while it queues.
                starting = asyncio.ensure_future(started.wait())
                try:
                    await asyncio.wait({result, starting}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    starting.cancel()
                return tuple(await asyncio.wait_for(result, timeout))
            except TimeoutError:
                await self._stop_overrun(fut, job, timeout)
                raise TrainingError("job-timeout", f"{job} job exceeded {timeout:g} s") from None
            finally:
                result.cancel()
        except (TrainingError, asyncio.CancelledError):
            raise
        except Exception as e:  # KilledWorker, FutureCancelledError, CommClosedError, ...
            # KilledWorker: Dask already retried it on other workers, which it
            # killed too (e.g. over their memory limit): the local pool's
            # limits decide now.
            again = type(e).__name__ != "KilledWorker"
            raise ClusterLost(f"{type(e).__name__}: {e}", again) from None
        finally:
            self._inflight -= 1
            self._started.pop(key, None)
            if fut is not None:
                with contextlib.suppress(Exception):
                    fut.release()

    async def _stop_overrun(self, fut: Any, job: str, timeout: float) -> None:
        """Cancel a job past its limit and restart the worker still running it."""
        client = self._client
        try:
            processing = await client.processing()
            where = [addr for addr, keys in processing.items() if fut.key in keys]
            await fut.cancel()
            if where:
                log.warning("%s job over %.1f s: restarting Dask worker %s", job, timeout, where)
                await client.restart_workers(where, timeout=30, raise_for_error=False)
        except Exception as e:
            log.warning("could not stop the overrunning %s job: %s", job, e)

    async def _dataset(self, request: Any) -> Any:
        """The scattered dataset of ``request`` (None for jobs without data)."""
        cid = dataset_cid(request)
        if cid is None:
            return None
        lock = self._scatter_locks.setdefault(cid, asyncio.Lock())
        async with lock:
            fut = self._scattered.get(cid)
            if fut is not None and fut.status == "finished":
                self._scattered.move_to_end(cid)
                return fut
            data = await asyncio.to_thread(Path(request.dataset_path).read_bytes)
            futs = await self._client.scatter({f"p2pml-dataset-{cid}": data}, hash=False)
            del data
            self.scatters += 1
            (fut,) = futs.values()
            self._scattered[cid] = fut
            while len(self._scattered) > SCATTERED_MAX:
                _, old = self._scattered.popitem(last=False)
                old.release()
            return fut

    def _forget(self, cid: str) -> None:
        fut = self._scattered.pop(cid, None)
        if fut is not None:
            with contextlib.suppress(Exception):
                fut.release()

    # -- status and shutdown ---------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        workers: list[dict[str, Any]] = []
        if self.connected:
            for addr, w in sorted(self._workers.items()):
                metrics = w.get("metrics", {})
                workers.append(
                    {
                        "address": addr,
                        "nthreads": w.get("nthreads", 0),
                        "executing": metrics.get("task_counts", {}).get("executing", 0),
                        "cpu": metrics.get("cpu", 0.0),
                        "memory": metrics.get("memory", 0),
                        "memory_limit": w.get("memory_limit", 0),
                    }
                )
        return {
            "executor": "dask",
            "scheduler": self.address,
            "state": self.state,
            "reason": self.reason,
            "workers": workers,
            "jobs_running": self._inflight,
            "jobs_on_cluster": self.jobs_on_cluster,
            "jobs_on_local": self.jobs_on_local,
            "fallbacks": self.fallbacks,
            "datasets_scattered": self.scatters,
            "local": self._local.describe(),
        }

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._drop_client()
        self.state = "closed"
        await self._local.close()
