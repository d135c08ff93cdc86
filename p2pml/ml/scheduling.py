"""Which job gets the next free worker of the training pool.

Three classes of work share the pool's processes, in this order:

* ``BLOCK``: verifying the results of a block (and of our own results),
  which the chain waits on;
* ``TRAIN``: this node's own training rounds;
* ``BACKGROUND``: re-running results gossiped by peers, which is advisory
  (it only decides whether we pool and relay them) and is what strangers can
  make us spend.

A free worker goes to the waiting job of the best class, first come first
served within a class. Background jobs hold at most ``workers - 1`` workers
(at least one), so with two or more workers a block's job usually finds one
free. When a block's job waits and no worker is free, a running background
job is *preempted*: the pool asks its worker to abandon the job (and kills
it if it does not let go), the block job takes that worker, and the
background job waits again in its class.
So block verification never waits behind strangers' work, in any
configuration, including ``[training] workers = 1``. Training is never
preempted: it is our own work, and a block job waits at most for one round.

Pure bookkeeping (no processes): :class:`~p2pml.ml.pool.TrainingPool` owns the
workers and tells the scheduler what happens to them.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Generic, TypeVar


class Priority(IntEnum):
    BLOCK = 0
    TRAIN = 1
    BACKGROUND = 2


W = TypeVar("W")


@dataclass(order=True)
class _Waiter(Generic[W]):
    priority: Priority
    seq: int
    future: asyncio.Future[W] = field(compare=False)


@dataclass
class _Running:
    priority: Priority
    seq: int  # later start: less work lost when preempted
    preempted: bool = False


class WorkerScheduler(Generic[W]):
    """Hands workers to jobs by priority; asks ``preempt(worker)`` to kill a
    background job's worker when a block job would otherwise wait."""

    def __init__(self, workers: int, preempt: Callable[[W], None]) -> None:
        self.max_background = max(1, workers - 1)
        self._preempt = preempt
        # Longest idle first: a freshly spawned replacement may still be importing.
        self._idle: deque[W] = deque()
        self._waiting: list[_Waiter[W]] = []  # a heap; cancelled waiters are skipped
        self._running: dict[W, _Running] = {}
        self._seq = itertools.count()
        # Workers preempted but not back yet (released, or replaced after a
        # kill): block jobs already promised a worker.
        self._incoming = 0
        self._replacements_due = 0
        self._closed: BaseException | None = None
        self.preemptions = 0

    # -- what the pool reports --------------------------------------------------------

    def add(self, worker: W) -> None:
        """A new worker (at start, or replacing a dead one) is ready."""
        if self._replacements_due:
            self._replacements_due -= 1
            self._incoming -= 1
        self._idle.append(worker)
        self._dispatch()

    def release(self, worker: W) -> None:
        """``worker`` finished its job (or let go of it) and takes another."""
        run = self._running.pop(worker, None)
        if run is not None and run.preempted:
            self._incoming -= 1
        self._idle.append(worker)
        self._dispatch()

    def retire(self, worker: W) -> None:
        """``worker`` is dead or being killed; a replacement may follow (``add``)."""
        run = self._running.pop(worker, None)
        if run is not None and run.preempted:
            self._replacements_due += 1
        if worker in self._idle:
            self._idle.remove(worker)

    def preempted(self, worker: W) -> bool:
        """Whether ``worker``'s job was ended to make room for a block job."""
        run = self._running.get(worker)
        return run is not None and run.preempted

    def close(self, exc: BaseException) -> None:
        """Fail every waiting job with ``exc`` (the pool is shutting down)."""
        self._closed = exc
        for w in self._waiting:
            if not w.future.done():
                w.future.set_exception(exc)
        self._waiting.clear()

    # -- what jobs ask ------------------------------------------------------------------

    async def acquire(self, priority: Priority) -> W:
        """Wait for a worker for a job of ``priority``; the caller ``release``s
        or ``retire``s it."""
        if self._closed is not None:
            raise self._closed
        fut: asyncio.Future[W] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, _Waiter(priority, next(self._seq), fut))
        self._dispatch()
        if not fut.done() and priority is Priority.BLOCK:
            self._preempt_for_blocks()
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self.release(fut.result())  # handed over as we were cancelled
            raise

    @property
    def waiting(self) -> dict[Priority, int]:
        out = dict.fromkeys(Priority, 0)
        for w in self._waiting:
            if not w.future.done():
                out[w.priority] += 1
        return out

    def _running_background(self) -> int:
        return sum(1 for r in self._running.values() if r.priority is Priority.BACKGROUND)

    def _dispatch(self) -> None:
        while self._idle and self._waiting:
            top = self._waiting[0]
            if top.future.done():  # cancelled while waiting
                heapq.heappop(self._waiting)
                continue
            if (
                top.priority is Priority.BACKGROUND
                and self._running_background() >= self.max_background
            ):
                return  # only background jobs wait, and they have their share
            heapq.heappop(self._waiting)
            worker = self._idle.popleft()
            self._running[worker] = _Running(top.priority, next(self._seq))
            top.future.set_result(worker)

    def _preempt_for_blocks(self) -> None:
        blocks = self.waiting[Priority.BLOCK]
        while blocks > self._incoming:
            victims = [
                (r.seq, w)
                for w, r in self._running.items()
                if r.priority is Priority.BACKGROUND and not r.preempted
            ]
            if not victims:
                return  # training or blocks hold every worker: wait for one
            _, worker = max(victims, key=lambda v: v[0])
            self._running[worker].preempted = True
            self._incoming += 1
            self.preemptions += 1
            self._preempt(worker)
