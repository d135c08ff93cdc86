"""Guarded jobs under one ``asyncio.TaskGroup``.

The node's and the P2P service's background jobs (a training round, a
header session, a dial) run as tasks of their owner's TaskGroup. A job that
fails is logged, and counted, never fatal to the group; once the owner stops,
new jobs are refused (their coroutine closed) and running ones cancelled.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable


class Supervisor:
    def __init__(self, log: logging.Logger, on_failure: Callable[[], None] | None = None) -> None:
        self._log = log
        self._on_failure = on_failure
        self._tg: asyncio.TaskGroup | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.failures = 0

    @property
    def running(self) -> int:
        return len(self._tasks)

    def attach(self, tg: asyncio.TaskGroup) -> None:
        """Jobs from now on run in ``tg`` (the owner's supervisor group)."""
        self._tg = tg

    def close(self) -> None:
        """Refuse new jobs and cancel the running ones."""
        self._tg = None
        for t in list(self._tasks):
            t.cancel()

    def spawn(self, coro: Awaitable[None], name: str) -> asyncio.Task[None] | None:
        """Run ``coro`` as a job (its task, or None if refused: no group is
        attached, or it is shutting down; the coroutine is closed then)."""
        tg = self._tg
        if tg is None:
            if asyncio.iscoroutine(coro):
                coro.close()
            return None

        async def guarded() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception:
                self.failures += 1
                self._log.exception("background job %s failed", name)
                if self._on_failure is not None:
                    self._on_failure()

        job = guarded()
        try:
            task = tg.create_task(job, name=name)
        except RuntimeError:  # the group is shutting down: refuse, quietly
            job.close()
            if asyncio.iscoroutine(coro):
                coro.close()
            return None
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
