"""A download received through a FIFO: hashed and written to its file as the
embedded node writes it, with a size cap (see :class:`PipeReceiver`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from pathlib import Path

from p2pml.errors import DatasetError
from p2pml.ipfs.cid import ThreadedCidBuilder
from p2pml.ipfs.fdio import open_for_overwrite, write_all

RECEIVE_SIZE = 1024 * 1024


class PipeReceiver:
    """Receives a download through a FIFO at ``pipe``: a thread hashes
    (CIDv0) and writes to ``dest`` what the writer sends. Past ``max_bytes``
    it stops reading (having taken at most one read, ``RECEIVE_SIZE``, more)
    and closes the pipe: the writer gets EPIPE.

    Both ends are opened here, non-blocking so neither open waits for the
    other; our own write end (``_hold``) keeps reads blocking rather than at
    EOF until the downloader has opened the pipe, written and closed it. It
    is closed by :meth:`close` once the download call is over, so the thread
    always ends, even if the downloader never opened the pipe.
    """

    def __init__(self, pipe: Path, dest: Path, max_bytes: int) -> None:
        self.pipe = pipe
        self.received = 0
        self._max = max_bytes
        self._cid: str | None = None
        self._error: BaseException | None = None
        self._done = threading.Event()
        self._hold: int | None = None
        self._blocked = False
        fds: list[int] = []
        try:
            pipe.unlink(missing_ok=True)
            os.mkfifo(pipe, 0o600)
            fds.append(os.open(pipe, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC))
            fds.append(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC))
            os.set_blocking(fds[0], True)
            fds.append(open_for_overwrite(dest))
            self._rfd, self._hold, self._wfd = fds
            self._builder = ThreadedCidBuilder()
            thread = threading.Thread(target=self._run, name="ipfs-pipe-receiver", daemon=True)
            thread.start()
        except BaseException:
            for fd in fds:
                os.close(fd)
            self._hold = None
            pipe.unlink(missing_ok=True)
            raise
        self._thread = thread

    def _run(self) -> None:
        builder = self._builder
        try:
            while chunk := os.read(self._rfd, RECEIVE_SIZE):
                self.received += len(chunk)
                write_all(self._wfd, chunk)
                if self.received > self._max:
                    break  # oversize: the caller sees ``received`` and refuses
                builder.update(chunk)
            else:
                self._cid = builder.finish()
        except BaseException as exc:
            self._error = exc
        finally:
            builder.close()
            os.close(self._rfd)
            os.close(self._wfd)
            self._done.set()

    def keep_path_blocked(self) -> None:
        """Put a directory where the FIFO was, so whoever opens the path later
        to write fails instead of creating a file there (or blocking)."""
        self._blocked = True
        self.pipe.unlink(missing_ok=True)
        with contextlib.suppress(FileExistsError):  # Kubo wrote just now: removed at respawn
            self.pipe.mkdir()

    def _release(self) -> None:
        if self._hold is not None:
            os.close(self._hold)
            self._hold = None

    def cid(self) -> str:
        """The CID of everything received (after :meth:`close`)."""
        if self._error is not None or self._cid is None:
            raise DatasetError(f"receiving download failed: {self._error}")
        return self._cid

    async def close(self) -> None:
        self._release()
        if not self._done.is_set():
            await asyncio.to_thread(self._thread.join)
        if not self._blocked:
            self.pipe.unlink(missing_ok=True)
