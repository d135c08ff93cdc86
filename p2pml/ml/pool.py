"""A pool of long-lived training processes with per-job time limits.

Why not ``concurrent.futures.ProcessPoolExecutor``: it cannot kill one job.
Enforcing a time limit there means terminating the whole executor, failing
every other job in flight. Here each worker is one ``spawn`` process behind
its own pipe, running one job at a time; a job over its limit gets its
process SIGKILLed and replaced, and nothing else is disturbed. Processes are
reused between jobs so sklearn's ~1 s import is paid once per worker.

Spawn import order: a spawned child re-imports the parent's ``__main__``
(which may import numpy) before it runs any of our code, so thread-count
variables set inside the child would be too late for OpenBLAS/OpenMP. The
variables are therefore placed in the environment the child is *exec'd*
with (briefly set around ``Process.start()`` on the event loop thread), and
the child also applies ``threadpoolctl`` limits at runtime.

OS limits: each worker caps its own address space (``RLIMIT_AS``, from
``[training] worker_memory_mb``) at start, and its CPU time (``RLIMIT_CPU``)
before each job at the job's time limit plus a second. A job that runs out
of memory is reported as ``worker-memory-limit`` and its worker replaced (its
heap may be left fragmented); a worker killed by SIGXCPU or by the wall-clock
limit as ``job-timeout``. These are infrastructure failures of this node, not
verdicts on a result: results over any *deterministic* budget come back as a
``ValidationError`` (``bad-result-model``) from the job itself.

Priorities: jobs wait for a worker in three classes (block verification,
own training, background checks of gossiped results), and a block's job
preempts a background one when no worker is free: see
:mod:`p2pml.ml.scheduling`.

Messages on the pipes are pickles between this process and its own children
only (job requests and results we construct); nothing from peers is ever
unpickled: model artifacts travel as opaque bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any, Final

from p2pml.errors import ModelArtifactError, P2PMLError, TrainingError, ValidationError
from p2pml.ml.scheduling import Priority, WorkerScheduler
from p2pml.ml.worker import THREAD_ENV

log = logging.getLogger(__name__)

#: Job name -> "module:function" run in the child. A fixed table: the parent
#: cannot make a worker run arbitrary code by name.
JOBS: Final = {
    "train": "p2pml.ml.worker:train_job",
    "verify": "p2pml.ml.verify:verify_job",
    "info": "p2pml.ml.worker:info_job",
    "sleep": "p2pml.ml.worker:sleep_job",
    "alloc": "p2pml.ml.worker:alloc_job",
    "fed_train": "p2pml.ml.fedjobs:fed_train_job",
    "fed_check": "p2pml.ml.fedjobs:fed_check_job",
    "fed_aggregate": "p2pml.ml.fedjobs:fed_aggregate_job",
    "fed_score": "p2pml.ml.fedjobs:fed_score_job",
    "fed_gains": "p2pml.ml.fedjobs:fed_gains_job",
    "fed_describe": "p2pml.ml.fedjobs:fed_describe_job",
}

_ERRORS: Final[dict[str, Callable[[str, str], P2PMLError]]] = {
    "TrainingError": TrainingError,
    "ValidationError": ValidationError,
    "ModelArtifactError": lambda _reason, detail: ModelArtifactError(detail),
}


#: CPU seconds a job may use past its wall-clock limit before SIGXCPU: the
#: wall-clock timeout in the parent normally ends it first.
CPU_GRACE_SECONDS: Final = 1.0
MEMORY_LIMIT: Final = "worker-memory-limit"
#: Asks a worker to abandon its job (a preempted background check): the
#: child raises :class:`Preempted` in the job and stays warm for the next
#: one. A job that does not return within ``PREEMPT_GRACE_SECONDS`` (busy in
#: native code that never checks signals) gets its worker killed instead.
PREEMPT_SIGNAL: Final = signal.SIGUSR1
PREEMPT_GRACE_SECONDS: Final = 1.0


class Preempted(BaseException):
    """Raised in a worker's job when it is preempted (``except Exception``
    in library code must not swallow it)."""


def _child_main(conn: Connection, memory_mb: int | None = None) -> None:
    """Worker process loop: receive (job, request, cpu seconds), send
    ("ok", result) or an error."""
    import importlib

    from p2pml.ml.worker import limit_threads
    from p2pml.oslimits import limit_cpu_for_job, limit_memory

    in_job = False

    def on_preempt(_signum: int, _frame: Any) -> None:
        nonlocal in_job
        if in_job:  # between jobs the signal is stale: ignore it
            in_job = False
            raise Preempted

    signal.signal(PREEMPT_SIGNAL, on_preempt)
    limits = limit_threads()  # held for the life of the process
    # After the thread pins (fewer thread stacks), before the heavy imports:
    # the limit covers everything the process will ever map.
    limit_memory(memory_mb)
    # Import the heavy libraries now, not inside the first job's time limit.
    import numpy  # noqa: F401
    import pandas  # noqa: F401
    import sklearn.ensemble
    import sklearn.metrics  # noqa: F401
    import skops.io  # noqa: F401

    import p2pml.ml.dataset  # noqa: F401
    from p2pml.ml.artifact import TRUSTED_TYPES
    from p2pml.ml.estimators import estimator_class

    for path in JOBS.values():
        importlib.import_module(path.partition(":")[0])
    for name in TRUSTED_TYPES:  # every estimator's module: first verifies pay no imports
        estimator_class(name)

    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            break
        if msg is None:
            break
        job, request, cpu_seconds = msg
        if cpu_seconds is not None:
            limit_cpu_for_job(cpu_seconds)
        try:
            in_job = True
            reply = execute(job, request)
        except Preempted:
            reply = ("preempted",)
        finally:
            in_job = False
        try:
            conn.send(reply)
        except (OSError, ValueError):
            break
        if reply[0] == "err" and reply[2] == MEMORY_LIMIT:
            break  # the parent replaces this process: start the next job on a clean heap
    del limits


def execute(job: str, request: Any) -> tuple[Any, ...]:
    """Run one job of the table in this process: ("ok", result) or
    ("err", exception class name, reason, detail). Every executor calls this,
    so a job is the same code whichever ran it."""
    import importlib

    try:
        module, _, func = JOBS[job].partition(":")
        return ("ok", getattr(importlib.import_module(module), func)(request))
    except (TrainingError, ValidationError) as e:
        return ("err", type(e).__name__, e.reason, e.detail)
    except MemoryError:
        return ("err", "TrainingError", MEMORY_LIMIT, f"{job} job ran out of memory")
    except Exception as e:
        return ("err", "TrainingError", "job-failed", f"{type(e).__name__}: {e}")


def unpack(reply: tuple[Any, ...]) -> Any:
    """The result of an :func:`execute` reply, or its error raised as itself."""
    if reply[0] == "ok":
        return reply[1]
    _, cls, reason, detail = reply
    raise _ERRORS[cls](reason, detail)


def _round_trip(w: _Worker, msg: Any) -> Any:
    with w.send_lock:
        w.conn.send(msg)
    return w.conn.recv()


@contextlib.contextmanager
def _child_env() -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in THREAD_ENV}
    os.environ.update(THREAD_ENV)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class _Worker:
    def __init__(self, ctx: Any, memory_mb: int | None) -> None:
        self.conn, child_conn = ctx.Pipe(duplex=True)
        # Sends come from I/O threads (a job, or close()); two interleaved
        # sends would hand the child a corrupt message.
        self.send_lock = threading.Lock()
        self.proc = ctx.Process(
            target=_child_main, args=(child_conn, memory_mb), name="p2pml-train", daemon=True
        )
        with _child_env():
            self.proc.start()
        child_conn.close()
        self.jobs = 0  # jobs handed to it: tells a stale preemption from a live one

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(5)
        self.conn.close()


class TrainingPool:
    """``workers`` spawn processes; ``run`` one job on an idle one, with a time limit.

    ``memory_mb`` caps each worker's address space (None: no limit).
    """

    def __init__(self, workers: int, memory_mb: int | None = None) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.workers = workers
        self.memory_mb = memory_mb
        self._ctx = multiprocessing.get_context("spawn")
        self._sched: WorkerScheduler[_Worker] = WorkerScheduler(workers, self._preempt)
        self._all: set[_Worker] = set()
        self._busy: set[_Worker] = set()
        # Threads that block on pipe I/O so the event loop never does.
        self._io = ThreadPoolExecutor(max_workers=2 * workers, thread_name_prefix="p2pml-pool")
        self._started = False
        self._closed = False

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        for _ in range(self.workers):
            self._add()

    def _add(self) -> None:
        w = _Worker(self._ctx, self.memory_mb)
        self._all.add(w)
        self._sched.add(w)

    async def _replace(self, w: _Worker) -> None:
        self._sched.retire(w)
        self._all.discard(w)
        await asyncio.get_running_loop().run_in_executor(self._io, w.kill)
        if not self._closed:
            self._add()

    def _preempt(self, w: _Worker) -> None:
        """Ask ``w`` to abandon its job; kill it if the job does not let go."""
        job = w.jobs
        with contextlib.suppress(OSError):
            os.kill(w.proc.pid or 0, PREEMPT_SIGNAL)

        def escalate() -> None:
            if w.jobs == job and w in self._busy:
                log.info("worker %s ignored preemption: killing it", w.proc.pid)
                with contextlib.suppress(OSError):
                    w.proc.kill()  # its blocked reply read ends with EOF

        asyncio.get_running_loop().call_later(PREEMPT_GRACE_SECONDS, escalate)

    @property
    def pids(self) -> list[int]:
        return sorted(w.proc.pid for w in self._all if w.proc.pid is not None)

    @property
    def preemptions(self) -> int:
        """Background jobs ended so far to free a worker for a block's job."""
        return self._sched.preemptions

    @property
    def busy_pids(self) -> list[int]:
        """Processes running a job now (for the admin API and tests)."""
        return sorted(w.proc.pid for w in self._busy if w.proc.pid is not None)

    async def run(
        self, job: str, request: Any, timeout: float, priority: Priority = Priority.TRAIN
    ) -> Any:
        """Run ``job`` in a worker; ``TrainingError("job-timeout")`` past ``timeout`` s.

        Jobs wait for a worker by ``priority`` (see :mod:`p2pml.ml.scheduling`);
        a ``BACKGROUND`` job preempted by a block's job waits again and
        re-runs from the start. The time limit counts from when the job is
        handed to a worker (sending it included), not the wait for one.
        Errors raised in the job come back as the same exception class and
        reason.
        """
        if job not in JOBS:
            raise ValueError(f"unknown job {job!r}")
        if self._closed:
            raise TrainingError("pool-closed", "the training pool is shut down")
        if not self._started:
            await self.start()
        loop = asyncio.get_running_loop()
        cpu = timeout + CPU_GRACE_SECONDS if math.isfinite(timeout) else None
        while True:
            w = await self._sched.acquire(priority)
            w.jobs += 1
            self._busy.add(w)
            try:
                # One thread hop per job (send, then block on the reply); killing
                # the worker (timeout, preemption) ends the blocked recv with EOFError.
                reply = await asyncio.wait_for(
                    loop.run_in_executor(self._io, _round_trip, w, (job, request, cpu)), timeout
                )
            except TimeoutError:
                log.warning(
                    "training job %s over %.1f s: killing worker %s", job, timeout, w.proc.pid
                )
                await self._replace(w)
                raise TrainingError("job-timeout", f"{job} job exceeded {timeout:g} s") from None
            except (EOFError, OSError, BrokenPipeError) as e:
                preempted = self._sched.preempted(w)
                await self._replace(w)  # joins the process: its exit code is known below
                if preempted:
                    log.info("%s job preempted by block verification: queued again", job)
                    continue
                if w.proc.exitcode == -signal.SIGXCPU:
                    raise TrainingError("job-timeout", f"{job} job exceeded its CPU time") from None
                detail = f"worker exited during {job}: {e!r}"
                raise TrainingError("worker-crashed", detail) from None
            except BaseException:
                # Cancelled mid-job: the worker is busy with work nobody wants.
                await asyncio.shield(self._replace(w))
                raise
            finally:
                self._busy.discard(w)
            preempted = self._sched.preempted(w)
            if reply[0] == "err" and reply[2] == MEMORY_LIMIT:
                log.warning("training job %s hit the memory limit: replacing worker", job)
                await self._replace(w)
            else:
                self._sched.release(w)
            # A preempted job's failure may be the interruption itself: never
            # a verdict; it runs again. A result it finished stands.
            if preempted and reply[0] != "ok":
                log.info("%s job preempted by block verification: queued again", job)
                continue
            break
        if reply[0] == "preempted":  # a stale signal: cannot be a verdict
            raise TrainingError("job-preempted", f"{job} job was interrupted")
        return unpack(reply)

    def describe(self) -> dict[str, Any]:
        """What the admin API shows of this executor."""
        return {
            "executor": "local",
            "workers": [{"pid": pid, "busy": pid in self.busy_pids} for pid in self.pids],
        }

    async def close(self) -> None:
        """Stop every worker (gracefully, then by force) and the I/O threads."""
        if self._closed:
            return
        self._closed = True
        self._sched.close(TrainingError("pool-closed", "the training pool is shut down"))
        loop = asyncio.get_running_loop()
        workers = list(self._all)
        self._all.clear()

        def stop(w: _Worker) -> None:
            with w.send_lock, contextlib.suppress(OSError, ValueError):
                w.conn.send(None)
            w.proc.join(2)
            w.kill()

        await asyncio.gather(*(loop.run_in_executor(self._io, stop, w) for w in workers))
        self._io.shutdown(wait=False, cancel_futures=True)
