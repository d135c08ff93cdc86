"""The one place where the asyncio node and the trio-only libp2p host meet.

py-libp2p runs only under trio, so the host lives in one dedicated thread
running ``trio.run``. Everything that crosses threads goes through
:class:`TrioBridge`:

* asyncio -> trio: the trio token's ``run_sync_soon`` (``post_to_trio``,
  ``call_trio``);
* trio -> asyncio: ``loop.call_soon_threadsafe`` (``post_to_asyncio``,
  ``wait_asyncio``).

No coroutine is ever scheduled on the other loop directly: work posted to
asyncio is a plain callback (it may feed a queue read by a task the service's
TaskGroup owns), and work posted to trio runs in the bridge's root nursery.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio

from p2pml.errors import NetworkError

T = TypeVar("T")

# Posting after a run ended must not crash the poster: the other side is
# shutting down and the result is no longer wanted.
_GONE = (trio.RunFinishedError, RuntimeError)


class TrioBridge:
    """Owns the trio thread and its root nursery.

    ``start(serve)`` runs ``await nursery.start(serve)`` in the trio thread and
    returns once ``serve`` called ``task_status.started()`` (re-raising its
    failure otherwise). ``stop(graceful)`` awaits ``graceful()`` in trio with
    a deadline, cancels everything and joins the thread.
    """

    def __init__(self, name: str = "p2pml-trio") -> None:
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._stop: trio.Event | None = None
        self._thread: threading.Thread | None = None
        self._finished: asyncio.Future[None] | None = None
        self._graceful: Callable[[], Awaitable[None]] | None = None
        self._graceful_timeout = 1.0

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "bridge not started"
        return self._loop

    # -- lifecycle (asyncio side) ----------------------------------------

    async def start(self, serve: Callable[..., Awaitable[None]]) -> None:
        if self._thread is not None:
            raise RuntimeError("bridge already started")
        loop = asyncio.get_running_loop()
        self._loop = loop
        ready: asyncio.Future[None] = loop.create_future()
        self._finished = loop.create_future()

        def run() -> None:
            err: BaseException | None = None
            try:
                trio.run(self._main, serve, ready)
            except BaseException as exc:  # reported to the asyncio side below
                err = _unwrap(exc)
            self._post_result(ready, err if err is not None else NetworkError("host exited"))
            self._post_result(self._finished, None)

        self._thread = threading.Thread(target=run, name=self.name, daemon=True)
        self._thread.start()
        try:
            await ready
        except BaseException:
            await self._join()
            raise

    async def _main(
        self, serve: Callable[..., Awaitable[None]], ready: asyncio.Future[None]
    ) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(serve)
            self._post_result(ready, None)
            await self._stop.wait()
            if self._graceful is not None:
                with trio.move_on_after(self._graceful_timeout):
                    await self._graceful()
            nursery.cancel_scope.cancel()
        self._nursery = None

    async def stop(
        self, graceful: Callable[[], Awaitable[None]] | None = None, timeout: float = 1.0
    ) -> None:
        """Ordered stop: ``graceful()`` (bounded by ``timeout``), cancel, join."""
        if self._thread is None:
            return
        self._graceful = graceful
        self._graceful_timeout = timeout
        stop = self._stop
        if stop is not None and self._token is not None:
            with contextlib.suppress(*_GONE):
                self._token.run_sync_soon(stop.set)
        await self._join()

    async def _join(self) -> None:
        if self._finished is not None:
            await asyncio.shield(self._finished)
        if self._thread is not None:
            self._thread.join(timeout=5)  # the run already ended: returns at once
            self._thread = None

    def _post_result(self, fut: asyncio.Future[None] | None, exc: BaseException | None) -> None:
        if fut is None or self._loop is None:
            return

        def settle() -> None:
            if fut.done():
                return
            if exc is None:
                fut.set_result(None)
            else:
                fut.set_exception(exc)

        with contextlib.suppress(*_GONE):
            self._loop.call_soon_threadsafe(settle)

    async def wait_finished(self) -> None:
        """Returns when the trio run ended (stop() or a crash of the host)."""
        if self._finished is not None:
            await asyncio.shield(self._finished)

    # -- asyncio -> trio -------------------------------------------------

    def post_to_trio(self, fn: Callable[..., Any], *args: Any) -> bool:
        """Run the sync ``fn(*args)`` in the trio thread; False if trio is gone."""
        token = self._token
        if token is None:
            return False
        try:
            token.run_sync_soon(fn, *args)
        except _GONE:
            return False
        return True

    async def call_trio(self, afn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Await ``afn(*args)`` run as a task in the trio root nursery.

        Cancelling the asyncio caller cancels the trio task.
        """
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        scope: list[trio.CancelScope] = []

        def settle(ok: bool, value: Any) -> None:
            if fut.done():
                return
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

        def post(ok: bool, value: Any) -> None:
            with contextlib.suppress(*_GONE):
                loop.call_soon_threadsafe(settle, ok, value)

        async def runner() -> None:
            with trio.CancelScope() as cs:
                scope.append(cs)
                try:
                    result = await afn(*args)
                except trio.Cancelled:
                    post(False, NetworkError("p2p host stopped"))
                    raise
                except Exception as exc:
                    post(False, exc)
                else:
                    post(True, result)
                    return
            if cs.cancelled_caught:
                post(False, asyncio.CancelledError())

        def spawn() -> None:
            if self._nursery is None:
                post(False, NetworkError("p2p host is not running"))
                return
            self._nursery.start_soon(runner)

        if not self.post_to_trio(spawn):
            raise NetworkError("p2p host is not running")
        try:
            return await fut
        except asyncio.CancelledError:
            self.post_to_trio(_cancel_first, scope)
            raise

    # -- trio -> asyncio -------------------------------------------------

    def post_to_asyncio(self, fn: Callable[..., Any], *args: Any) -> bool:
        """Run the sync ``fn(*args)`` on the asyncio loop; False if it is gone."""
        loop = self._loop
        if loop is None:
            return False
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # loop closed
            return False
        return True

    async def wait_asyncio(self, start: Callable[[Callable[[T], None]], None]) -> T:
        """From trio: run ``start(reply)`` on the asyncio loop, await ``reply(value)``.

        ``reply`` may be called from the asyncio thread at any later time
        (e.g. by a worker task); calling it twice is harmless.
        """
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()
        box: list[Any] = []

        def reply(value: T) -> None:
            if box:
                return
            box.append(value)
            with contextlib.suppress(*_GONE):
                token.run_sync_soon(done.set)

        def begin() -> None:
            try:
                start(reply)
            except BaseException as exc:  # surfaced in trio below
                if not box:
                    box.append(_Failure(exc))
                    with contextlib.suppress(*_GONE):
                        token.run_sync_soon(done.set)

        if not self.post_to_asyncio(begin):
            raise NetworkError("node loop is gone")
        await done.wait()
        value = box[0]
        if isinstance(value, _Failure):
            raise value.exc
        return value  # type: ignore[no-any-return]

    async def call_asyncio_sync(self, fn: Callable[..., T], *args: Any) -> T:
        """From trio: run the sync ``fn(*args)`` on the asyncio loop and await it."""

        def start(reply: Callable[[Any], None]) -> None:
            try:
                reply(fn(*args))
            except Exception as exc:
                reply(_Failure(exc))

        value = await self.wait_asyncio(start)
        if isinstance(value, _Failure):
            raise value.exc
        return value  # type: ignore[no-any-return]


class _Failure:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def _unwrap(exc: BaseException) -> BaseException:
    """Trio nurseries wrap failures in groups; surface our own error if any."""
    if isinstance(exc, BaseExceptionGroup):
        for leaf in _leaves(exc):
            if isinstance(leaf, NetworkError):
                return leaf
        return NetworkError(f"p2p host failed: {exc!r}")
    return exc


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        out: list[BaseException] = []
        for e in exc.exceptions:
            out.extend(_leaves(e))
        return out
    return [exc]


def _cancel_first(scopes: list[trio.CancelScope]) -> None:
    if scopes:
        scopes[0].cancel()
