"""The sidecar backend against a real js-ipfs daemon (Kubo RPC API)."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from p2pml.config import IpfsSettings
from p2pml.errors import (
    CIDMismatch,
    DaemonUnavailable,
    DatasetError,
    DatasetTooLarge,
    FetchTimeout,
)
from p2pml.ipfs import CachingDatasetStore, add_dataset, open_dataset_store
from p2pml.ipfs.cid import cid_of_file
from tests.framework.ipfs_daemon import JsIpfsDaemon, free_port
from tests.framework.waiting import scaled

SidecarFactory = Callable[..., Awaitable[CachingDatasetStore]]


async def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``cond`` until true; fail after ``timeout`` (scaled) seconds."""
    deadline = time.monotonic() + scaled(timeout)
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.005)


def make_file(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path


@pytest.mark.parametrize("size", [1024, 5 * 1024**2, 50 * 1024**2], ids=["1KB", "5MB", "50MB"])
async def test_add_then_fetch_from_another_store(
    shared_jsipfs: JsIpfsDaemon, make_sidecar: SidecarFactory, tmp_path: Path, size: int
) -> None:
    src = make_file(tmp_path / "data.csv", size)
    publisher = await make_sidecar(shared_jsipfs, "publisher")
    progress: list[tuple[int, int]] = []
    cid = await add_dataset(publisher, src, lambda d, t: progress.append((d, t)))
    assert cid == cid_of_file(src)
    assert progress[0] == (0, size) and progress[-1] == (size, size)
    assert all(a[0] <= b[0] for a, b in itertools.pairwise(progress))

    trainer = await make_sidecar(shared_jsipfs, "trainer")
    path = await trainer.fetch(cid)
    assert path.read_bytes() == src.read_bytes()
    assert path.parent == trainer.cache.blobs
    assert await trainer.has(cid)
    assert trainer.state == "ready"


async def test_add_bytes_pin_has(store: CachingDatasetStore) -> None:
    cid = await store.add_bytes(b"model artifact bytes")
    await store.pin(cid)
    assert await store.has(cid)
    assert (await store.fetch(cid)).read_bytes() == b"model artifact bytes"


async def test_tampered_cache_entry_is_caught_and_refetched(
    store: CachingDatasetStore, tmp_path: Path
) -> None:
    src = make_file(tmp_path / "d.csv", 300_000)
    cid = await store.add(src)
    path = await store.fetch(cid)
    st = path.stat()
    with path.open("r+b") as f:  # flip one byte, keep size and mtime
        f.seek(123_456)
        byte = f.read(1)
        f.seek(123_456)
        f.write(bytes([byte[0] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.read_bytes() != src.read_bytes()

    again = await store.fetch(cid)
    assert again.read_bytes() == src.read_bytes()


async def test_oversize_refused(
    shared_jsipfs: JsIpfsDaemon, make_sidecar: SidecarFactory, tmp_path: Path
) -> None:
    src = make_file(tmp_path / "big.csv", 2 * 1024**2)
    cid = await (await make_sidecar(shared_jsipfs, "pub")).add(src)
    small = await make_sidecar(shared_jsipfs, "small", max_dataset_bytes=1024**2)
    with pytest.raises(
        DatasetTooLarge, match=r"larger than .* 1048576 bytes \(ipfs.max_dataset_bytes\)"
    ):
        await small.fetch(cid)
    assert not small.cache.contains(cid)
    assert list(small.cache.blobs.iterdir()) == []
    assert list(small.cache.tmp.iterdir()) == []


async def test_daemon_killed_mid_fetch_then_restarted(
    jsipfs: JsIpfsDaemon, make_sidecar: SidecarFactory, tmp_path: Path
) -> None:
    src = make_file(tmp_path / "d.csv", 50 * 1024**2)
    cid = await (await make_sidecar(jsipfs, "pub")).add(src)
    store = await make_sidecar(jsipfs, "trainer", timeout=2.0)

    fetch = asyncio.create_task(store.fetch(cid))

    def receiving() -> bool:
        return any(p.stat().st_size > 0 for p in store.cache.tmp.iterdir())

    await wait_for(receiving, 30, "the first bytes of the download")
    assert jsipfs.proc is not None
    os.killpg(jsipfs.proc.pid, signal.SIGSTOP)  # freeze it mid-transfer...
    assert not fetch.done(), "fetch finished before the daemon could be killed"
    await asyncio.to_thread(jsipfs.kill)  # ...then crash it

    with pytest.raises(DaemonUnavailable) as err:
        await fetch
    assert f"sidecar unreachable at {jsipfs.api_multiaddr}" in str(err.value)
    assert store.state == f"waiting for data: sidecar unreachable at {jsipfs.api_multiaddr}"
    assert list(store.cache.tmp.iterdir()) == []  # the partial download never entered
    assert not store.cache.contains(cid)

    await asyncio.to_thread(jsipfs.start)  # same port, same repo
    path = await store.fetch(cid)  # same store object: no restart of ours
    assert path.read_bytes() == src.read_bytes()
    assert store.state == "ready"


async def test_unreachable_state_and_recovery(
    jsipfs: JsIpfsDaemon, make_sidecar: SidecarFactory, tmp_path: Path
) -> None:
    src = make_file(tmp_path / "d.csv", 1_000_000)
    cid = await (await make_sidecar(jsipfs, "pub")).add(src)
    await asyncio.to_thread(jsipfs.stop)

    store = await make_sidecar(jsipfs, "trainer", timeout=120.0)
    waiting = f"waiting for data: sidecar unreachable at {jsipfs.api_multiaddr}"
    fetch = asyncio.create_task(store.fetch(cid))
    later_src = make_file(tmp_path / "later.csv", 10_000)
    add = asyncio.create_task(store.add(later_src))
    await wait_for(lambda: store.state == waiting, 10, "the waiting state")
    assert not fetch.done() and not add.done()

    await asyncio.to_thread(jsipfs.start)
    path = await asyncio.wait_for(fetch, 60)
    assert path.read_bytes() == src.read_bytes()
    assert await asyncio.wait_for(add, 60) == cid_of_file(later_src)
    assert store.state == "ready"


async def test_unreachable_gives_up_after_timeout(
    jsipfs_stopped: JsIpfsDaemon, make_sidecar: SidecarFactory
) -> None:
    store = await make_sidecar(jsipfs_stopped, timeout=0.5)
    t0 = time.monotonic()
    with pytest.raises(DaemonUnavailable, match=r"sidecar unreachable at /ip4/127\.0\.0\.1/tcp/"):
        await store.fetch("QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o")
    assert time.monotonic() - t0 < scaled(5)  # gives up at its 0.5 s timeout, no retry loop


async def test_lying_daemon_is_caught(tmp_path: Path) -> None:
    """A Kubo-RPC server that serves the wrong bytes for a CID: CIDMismatch, discarded."""
    real = b"the real dataset\n"
    wrong = b"a poisoned dataset"

    async def cat(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(wrong)
        return resp

    await assert_lie_caught(tmp_path, cat, real, timeout=5)


async def assert_lie_caught(
    tmp_path: Path,
    cat: Callable[[web.Request], Awaitable[web.StreamResponse]],
    real: bytes,
    timeout: float,
) -> None:
    """Fetching ``real``'s CID from a daemon whose cat is ``cat``: CIDMismatch,
    and nothing left in the cache or its temp dir."""
    from p2pml.ipfs.cid import cid_of_bytes

    runner, api = await serve_cat(cat)
    store = open_dataset_store(IpfsSettings(mode="sidecar", api=api, timeout=timeout), tmp_path)
    await store.start()
    try:
        cid = cid_of_bytes(real)
        with pytest.raises(CIDMismatch, match=cid):
            await store.fetch(cid)
        assert list(store.cache.blobs.iterdir()) == []
        assert list(store.cache.tmp.iterdir()) == []
    finally:
        await store.close()
        await runner.cleanup()


@pytest.mark.parametrize("limit_delta", [0, -1], ids=["exactly-at-limit", "one-byte-over"])
async def test_limit_cuts_mid_chunk(
    shared_jsipfs: JsIpfsDaemon, make_sidecar: SidecarFactory, tmp_path: Path, limit_delta: int
) -> None:
    """A limit that falls inside an HTTP chunk and inside a leaf is exact to the byte."""
    size = 4 * 262_144 + 1003
    src = make_file(tmp_path / "d.csv", size)
    cid = await (await make_sidecar(shared_jsipfs, "pub")).add(src)
    store = await make_sidecar(shared_jsipfs, "trainer", max_dataset_bytes=size + limit_delta)
    if limit_delta == 0:
        assert (await store.fetch(cid)).read_bytes() == src.read_bytes()
        return
    with pytest.raises(DatasetTooLarge):
        await store.fetch(cid)
    assert list(store.cache.blobs.iterdir()) == []
    assert list(store.cache.tmp.iterdir()) == []


async def serve_cat(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> tuple[web.AppRunner, str]:
    """A Kubo-RPC look-alike on loopback whose /api/v0/cat is ``handler``; (runner, api)."""
    app = web.Application()
    app.router.add_post("/api/v0/cat", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"/ip4/127.0.0.1/tcp/{port}"


def fetch_threads(before: set[threading.Thread]) -> list[str]:
    """Fetch threads started since ``before`` that still run (not those of other tests)."""
    names = ("ipfs-fetch-writer", "cid-leaf-hasher")
    return [t.name for t in threading.enumerate() if t.name in names and t not in before]


async def test_endless_stream_is_cut_at_the_limit(tmp_path: Path) -> None:
    """A server ignoring ``length`` and sending forever: refused past the limit, not read on."""
    sent = 0

    async def cat(request: web.Request) -> web.StreamResponse:
        nonlocal sent
        resp = web.StreamResponse()
        await resp.prepare(request)
        block = os.urandom(100_003)  # odd size: the limit falls inside a chunk
        while True:
            await resp.write(block)
            sent += len(block)

    runner, api = await serve_cat(cat)
    settings = IpfsSettings(mode="sidecar", api=api, timeout=30, max_dataset_bytes=1_000_000)
    store = open_dataset_store(settings, tmp_path)
    await store.start()
    before = set(threading.enumerate())
    try:
        with pytest.raises(DatasetTooLarge):
            await store.fetch("QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o")
        assert list(store.cache.blobs.iterdir()) == []
        assert list(store.cache.tmp.iterdir()) == []
        await wait_for(lambda: fetch_threads(before) == [], 5, "the writer threads to end")
        assert sent < 64 * 1024**2  # socket and read buffers, not the stream
    finally:
        await store.close()
        await runner.cleanup()


async def test_lying_daemon_one_byte_off_in_a_large_file(tmp_path: Path) -> None:
    """Wrong content spread over many leaves and odd-sized writes: still CIDMismatch."""
    real = os.urandom(3 * 1024**2 + 5)
    wrong = bytearray(real)
    wrong[1_500_000] ^= 0x01

    async def cat(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        for i in range(0, len(wrong), 77_777):
            await resp.write(bytes(wrong[i : i + 77_777]))
        return resp

    await assert_lie_caught(tmp_path, cat, real, timeout=30)


async def test_stalled_download_times_out_and_cleans_up(tmp_path: Path) -> None:
    """A server that stops sending mid-file: FetchTimeout, no temp file, no thread left."""
    stall = asyncio.Event()

    async def cat(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(os.urandom(700_000))
        await stall.wait()  # set only at the end of the test
        return resp

    runner, api = await serve_cat(cat)
    store = open_dataset_store(IpfsSettings(mode="sidecar", api=api, timeout=1.0), tmp_path)
    await store.start()
    before = set(threading.enumerate())
    try:
        t0 = time.monotonic()
        with pytest.raises(FetchTimeout):
            await store.fetch("QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o")
        assert time.monotonic() - t0 < scaled(5)  # the 1 s timeout holds over a stalled body
        assert list(store.cache.tmp.iterdir()) == []
        await wait_for(lambda: fetch_threads(before) == [], 5, "the writer threads to end")
    finally:
        stall.set()
        await store.close()
        await runner.cleanup()


async def test_unpin_releases_content_to_the_daemons_gc(store: CachingDatasetStore) -> None:
    # Sidecar disk is the daemon operator's (its own GC); we only stop pinning.
    from p2pml.ipfs.sidecar import SidecarBackend

    assert isinstance(store.backend, SidecarBackend)
    client = store.backend.client

    async def pinned(cid: str) -> bool:
        pins = await client.pin.ls(pintype="recursive", quiet=True)
        return cid in pins.get("Keys", {})

    cid = await store.add_bytes(os.urandom(5000))
    assert await pinned(cid)
    await store.unpin(cid)
    assert not await pinned(cid)
    with pytest.raises(DatasetError, match="unpin"):
        await store.unpin(cid)  # not pinned any more: a clear error
