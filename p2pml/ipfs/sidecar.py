"""Backend over a Kubo-RPC daemon (Kubo, or js-ipfs in tests), reached with ``aioipfs``.

``aioipfs`` provides the client, its aiohttp session and the small calls
(``add_bytes``, ``pin``, ``block stat``). Two calls go through that same
session by hand, because aioipfs 0.7.1 cannot stream them:

* ``add``: its ``core.add(path)`` breaks on aiohttp >= 3.12, and would read
  the file whole. We POST a multipart body fed by an async generator that
  reads the file 1 MiB at a time and hashes it on the way (CID check).
* ``cat``: ``core.cat`` returns one ``bytes``. We stream the response into
  the temp file, hashing as we go, and stop past ``max_dataset_bytes``.
  Closing that request (the start deadline passed with no body byte, the
  total timeout, a cancelled caller) is how a fetch is cancelled: Kubo ends
  the request's context, and with it the want-list of its session.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, BinaryIO

import aiohttp
import aioipfs
from aioipfs.exceptions import APIError, IPFSConnectionError

from p2pml.errors import DaemonUnavailable, DatasetError, DatasetTooLarge, NoProvider
from p2pml.ipfs.cid import CidBuilder, ThreadedCidBuilder
from p2pml.ipfs.fdio import open_for_overwrite, write_all

READ_SIZE = 1024 * 1024

# Parameters of the default importer, spelled out so that a daemon configured
# otherwise (e.g. CIDv1/raw leaves by default) still gives the CID we verify.
ADD_PARAMS = {
    "cid-version": "0",
    "raw-leaves": "false",
    "chunker": "size-262144",
    "pin": "true",
    "progress": "false",
}

_UNREACHABLE = (
    aiohttp.ClientConnectionError,  # refused, reset, server disconnected
    aiohttp.ClientPayloadError,  # body cut short (daemon died mid-transfer)
    ConnectionError,
    OSError,
)


class SidecarBackend:
    """Implements :class:`p2pml.ipfs.caching.Backend` over the RPC API at ``api``."""

    def __init__(self, api: str) -> None:
        self.api = api
        self._client: aioipfs.AsyncIPFS | None = None

    @property
    def unreachable_state(self) -> str:
        return f"sidecar unreachable at {self.api}"

    @property
    def client(self) -> aioipfs.AsyncIPFS:
        if self._client is None:
            raise DatasetError("sidecar backend not started")
        return self._client

    async def start(self) -> None:
        # No connection is made here: an absent daemon is not a start failure,
        # operations wait for it (see CachingDatasetStore._retrying).
        self._client = aioipfs.AsyncIPFS(maddr=self.api)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    def _url(self, endpoint: str) -> str:
        return str(self.client.api_endpoint(endpoint))

    def _unavailable(self, exc: BaseException) -> DaemonUnavailable:
        return DaemonUnavailable(f"{self.unreachable_state}: {type(exc).__name__}: {exc}")

    async def _raise_for_status(self, resp: aiohttp.ClientResponse, what: str) -> None:
        if resp.status == 200:
            return
        body = (await resp.text())[:500]
        try:
            message = str(json.loads(body).get("Message", body))
        except (ValueError, AttributeError):
            message = body
        raise DatasetError(f"sidecar {what} failed (HTTP {resp.status}): {message}")

    async def add_file(self, path: Path, on_bytes: Callable[[int], None] | None) -> tuple[str, str]:
        builder = CidBuilder()

        def read_and_hash(f: BinaryIO) -> bytes:
            chunk = f.read(READ_SIZE)
            builder.update(chunk)  # in the thread too: the loop never hashes
            return chunk

        async def body() -> AsyncIterator[bytes]:
            with path.open("rb") as f:
                while chunk := await asyncio.to_thread(read_and_hash, f):
                    if on_bytes is not None:
                        on_bytes(builder.size)
                    yield chunk

        with aiohttp.MultipartWriter("form-data") as mp:
            part = mp.append(body(), {"Content-Type": "application/octet-stream"})
            part.set_content_disposition("form-data", name="file", filename=path.name)
            daemon_cid = await self._post_add(mp)
        return daemon_cid, builder.finish()

    async def add_bytes(self, data: bytes) -> str:
        try:
            reply: Any = await self.client.core.add_bytes(data, **_aioipfs_add_kwargs())
        except APIError as exc:
            raise DatasetError(f"sidecar add failed: {exc.message}") from exc
        except _UNREACHABLE as exc:
            raise self._unavailable(exc) from exc
        if reply is None:  # aioipfs's post() swallows connection errors into None
            raise DaemonUnavailable(f"{self.unreachable_state}: no reply to add")
        return str(reply["Hash"])

    async def _post_add(self, mp: aiohttp.MultipartWriter) -> str:
        try:
            async with self.client.session.post(
                self._url("add"), params=ADD_PARAMS, data=mp
            ) as resp:
                await self._raise_for_status(resp, "add")
                last: dict[str, Any] = {}
                async for line in resp.content:
                    if line.strip():
                        entry = json.loads(line)
                        if "Hash" in entry:
                            last = entry
        except _UNREACHABLE as exc:
            raise self._unavailable(exc) from exc
        if "Hash" not in last:
            raise DatasetError("sidecar add returned no CID")
        return str(last["Hash"])

    async def fetch_to(
        self,
        cid: str,
        dest: Path,
        max_bytes: int,
        deadline: float,
        start_deadline: float | None = None,
    ) -> str:
        # Ask for one byte more than allowed: receiving it proves "too large"
        # without downloading the rest.
        params = {"arg": cid, "length": str(max_bytes + 1)}
        timeout = aiohttp.ClientTimeout(total=max(0.1, deadline - time.monotonic()), sock_connect=5)
        # Until the first body byte (or the end of an empty body): Kubo answers
        # cat's headers once it has the root block, js-ipfs at once.
        start = asyncio.timeout(
            None if start_deadline is None else max(0.0, start_deadline - time.monotonic())
        )
        writer = HashingFileWriter(dest)
        try:
            async with (
                start,
                self.client.session.post(
                    self._url("cat"),
                    params=params,
                    timeout=timeout,
                    read_bufsize=READ_SIZE,  # fewer pause/resume cycles than 64 KiB
                ) as resp,
            ):
                await self._raise_for_status(resp, f"cat {cid}")
                received = 0
                async for chunk in _first_waits(resp.content.iter_chunked(READ_SIZE), start):
                    received += len(chunk)
                    if received > max_bytes:
                        raise DatasetTooLarge(
                            f"dataset {cid} is larger than the configured maximum of "
                            f"{max_bytes} bytes (ipfs.max_dataset_bytes); refused"
                        )
                    await writer.write(chunk)
            return await writer.finish()
        except TimeoutError as exc:
            if start.expired():
                raise NoProvider(
                    f"fetch {cid}: the sidecar sent none of it within ipfs.fetch_start_timeout"
                ) from None
            raise self._unavailable(exc) from exc  # as before: an OSError
        except _UNREACHABLE as exc:
            raise self._unavailable(exc) from exc
        finally:
            await writer.close()

    async def pin(self, cid: str) -> None:
        try:
            async for _ in self.client.pin.add(cid, progress=False):
                pass
        except APIError as exc:
            raise DatasetError(f"sidecar pin {cid} failed: {exc.message}") from exc
        except (*_UNREACHABLE, IPFSConnectionError) as exc:
            raise self._unavailable(exc) from exc

    async def unpin(self, cid: str) -> None:
        try:
            await self.client.pin.rm(cid)
        except APIError as exc:
            raise DatasetError(f"sidecar unpin {cid} failed: {exc.message}") from exc
        except (*_UNREACHABLE, IPFSConnectionError) as exc:
            raise self._unavailable(exc) from exc

    async def has_local(self, cid: str) -> bool:
        # offline=true: only what the daemon holds, never a network lookup.
        try:
            async with self.client.session.post(
                self._url("block/stat"), params={"arg": cid, "offline": "true"}
            ) as resp:
                return bool(resp.status == 200)
        except _UNREACHABLE as exc:
            raise self._unavailable(exc) from exc

    async def bare_cat(self, cid: str) -> int:
        """Read ``cid`` through aioipfs's own ``core.cat`` (benchmark baseline)."""
        data: bytes = await self.client.core.cat(cid)
        return len(data)


class HashingFileWriter:
    """Writes chunks to a file and hashes them (CIDv0) off the event loop.

    The loop only queues the chunks it reads; a writer thread writes them and
    feeds a :class:`ThreadedCidBuilder`, whose helper thread hashes part of
    the leaves. Why two threads: js-ipfs sends a file in a burst after a
    pause, faster than one thread can hash (~1.8 GB/s with SHA-NI), so with one
    the download ended with a backlog hashed on one core while the other idled.
    At most ``QUEUE_CHUNKS`` chunks (and the builder's few leaves) are in
    flight, so memory stays bounded. The file is opened, written, closed and
    the CID finished all in the writer thread: the loop waits on none of it.
    """

    QUEUE_CHUNKS = 16

    def __init__(self, path: Path) -> None:
        self._path = path
        self._queue: queue.Queue[bytes | None] = queue.Queue(self.QUEUE_CHUNKS)
        self._loop = asyncio.get_running_loop()
        self._done: asyncio.Future[str | None] = self._loop.create_future()
        self._error: BaseException | None = None
        self._abort = False
        self._ended = False
        self._thread = threading.Thread(target=self._run, name="ipfs-fetch-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        cid: str | None = None
        builder: ThreadedCidBuilder | None = None
        fd = -1
        got_end = False
        try:
            builder = ThreadedCidBuilder()
            fd = open_for_overwrite(self._path)
            while (chunk := self._queue.get()) is not None:
                if self._abort:
                    continue  # drain so the producer never blocks
                builder.update(chunk)
                write_all(fd, chunk)
            got_end = True
            if not self._abort:
                cid = builder.finish()
        except BaseException as exc:
            self._error = exc
            if not got_end:
                while self._queue.get() is not None:
                    pass
        finally:
            if builder is not None:
                builder.close()
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError as exc:
                    self._error = self._error or exc
                    cid = None
            with contextlib.suppress(RuntimeError):  # loop already closed
                self._loop.call_soon_threadsafe(self._settle, cid)

    def _settle(self, cid: str | None) -> None:
        if not self._done.done():
            self._done.set_result(cid)

    async def write(self, chunk: bytes) -> None:
        if self._error is not None:
            raise DatasetError(f"writing download failed: {self._error}") from self._error
        try:
            self._queue.put_nowait(chunk)
        except queue.Full:
            await asyncio.to_thread(self._queue.put, chunk)

    async def _end(self) -> str | None:
        if not self._ended:
            self._ended = True
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                await asyncio.to_thread(self._queue.put, None)
        # shield: a cancelled caller must not cancel the future the thread settles
        return await asyncio.shield(self._done)

    async def finish(self) -> str:
        """Wait for every chunk; return the CID of all bytes written."""
        cid = await self._end()
        if self._error is not None or cid is None:
            raise DatasetError(f"writing download failed: {self._error}") from self._error
        return cid

    async def close(self) -> None:
        """Stop the thread, skipping chunks still queued; wait for it to end."""
        self._abort = True
        await self._end()


async def _first_waits(
    chunks: AsyncIterator[bytes], start: asyncio.Timeout
) -> AsyncIterator[bytes]:
    """``chunks``, with the ``start`` deadline lifted once the first arrives."""
    async for chunk in chunks:
        if start.when() is not None:
            start.reschedule(None)
        yield chunk
    if start.when() is not None:
        start.reschedule(None)


def _aioipfs_add_kwargs() -> dict[str, Any]:
    return {"cid_version": 0, "raw_leaves": False, "chunker": "size-262144", "pin": True}
