"""The JSON-lines channel to the embedded Kubo worker process
(``p2pml.ipfs._kubo_worker``): replies dispatched to waiting requests, and
killing the worker so that its transport is always closed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from p2pml.errors import DaemonUnavailable, DatasetError

log = logging.getLogger(__name__)


class WorkerChannel(asyncio.SubprocessProtocol):
    """The worker's replies, one JSON line each, dispatched as they arrive.

    The loop hands us the child's stdout in :meth:`pipe_data_received`, so no
    reader task exists to be owned or leaked. The first reply (id 0) is the
    hello. At stdout EOF every request still waiting fails: the child is gone.
    A reply we cannot parse means the channel is broken: the child is killed
    (the next call starts a new one).
    """

    MAX_LINE = 64 * 1024 * 1024

    def __init__(self, unreachable_state: str) -> None:
        loop = asyncio.get_running_loop()
        self.hello: asyncio.Future[dict[str, Any]] = loop.create_future()
        self.exited: asyncio.Future[None] = loop.create_future()
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._buf = bytearray()
        self._scanned = 0  # bytes of _buf known to hold no newline
        self._transport: asyncio.SubprocessTransport | None = None
        self._gone = unreachable_state
        self._eof = False

    def expect(self, req_id: int) -> asyncio.Future[Any]:
        """A future for the reply to ``req_id`` (already failed if the child is gone)."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self._eof:
            fut.set_exception(DaemonUnavailable(f"{self._gone}: it exited"))
        else:
            self._pending[req_id] = fut
        return fut

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.SubprocessTransport)
        self._transport = transport

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if fd != 1 or self._eof:
            return
        self._buf += data
        start = 0
        while (end := self._buf.find(b"\n", max(start, self._scanned))) >= 0:
            line, start = bytes(self._buf[start:end]), end + 1
            if not self._dispatch(line):
                return
        del self._buf[:start]
        self._scanned = len(self._buf)  # a long line is not searched again from its start
        if len(self._buf) > self.MAX_LINE:
            self._broken(f"it sent a reply longer than {self.MAX_LINE} bytes")

    def _dispatch(self, line: bytes) -> bool:
        try:
            msg = json.loads(line)
            req_id, ok = msg["id"], bool(msg["ok"])
            if not isinstance(req_id, int):
                raise TypeError(req_id)
        except Exception:  # bad JSON, wrong shape, nesting too deep for json
            self._broken(f"it sent a malformed reply {line[:80]!r}")
            return False
        if req_id == 0:
            if not self.hello.done():
                self.hello.set_result(msg)
            return True
        fut = self._pending.pop(req_id, None)
        if fut is None or fut.done():
            return True
        if ok:
            fut.set_result(msg.get("result"))
        else:
            fut.set_exception(DatasetError(f"embedded IPFS node: {msg.get('error')}"))
        return True

    def _broken(self, why: str) -> None:
        log.error("embedded IPFS node: %s; killing it", why)
        self._fail_all(DaemonUnavailable(f"{self._gone}: {why}"))  # and ignore what else it sends
        if self._transport is not None:
            with contextlib.suppress(ProcessLookupError):
                self._transport.kill()

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        # At stdout EOF, not at exit: replies written just before the exit
        # may still be in the pipe, and they are delivered first.
        if fd == 1:
            self._fail_all(DaemonUnavailable(f"{self._gone}: it exited"))
        elif fd == 0 and exc is not None:  # requests can no longer reach it
            self._broken(f"its stdin broke ({exc})")

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        # The child exited and all its pipes closed, however it died: release
        # the transport even if nobody calls kill_worker (a crash, then a restart).
        self._fail_all(DaemonUnavailable(f"{self._gone}: it exited"))
        if self._transport is not None:
            self._transport.close()

    def _fail_all(self, error: DaemonUnavailable) -> None:
        self._eof = True
        self._buf.clear()
        self._scanned = 0
        if not self.hello.done():
            self.hello.set_result({"ok": False, "error": "exited during start"})
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(error)


async def kill_worker(proc: asyncio.SubprocessTransport, channel: WorkerChannel) -> None:
    try:
        if proc.get_returncode() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        await asyncio.shield(channel.exited)
    finally:
        proc.close()  # also when cancelled: never an unclosed transport
