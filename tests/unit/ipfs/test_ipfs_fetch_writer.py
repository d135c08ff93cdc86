"""HashingFileWriter: the sidecar fetch's file writer and hasher (no daemon needed)."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import pytest

from p2pml.errors import DatasetError
from p2pml.ipfs.cid import CHUNK_SIZE, cid_of_bytes
from p2pml.ipfs.sidecar import HashingFileWriter

WORKER_THREADS = ("ipfs-fetch-writer", "cid-leaf-hasher")


def worker_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name in WORKER_THREADS]


async def assert_threads_end() -> None:
    """The writer thread settles the result just before it returns: allow it that instant."""
    deadline = time.monotonic() + 5
    while worker_threads():
        assert time.monotonic() < deadline, f"threads still running: {worker_threads()}"
        await asyncio.sleep(0.001)


def pieces(data: bytes) -> list[bytes]:
    """Cut like a js-ipfs download: HTTP chunk bodies of 262,135 bytes and small rests."""
    out, i, sizes = [], 0, [262_135, 9]
    while i < len(data):
        n = sizes[len(out) % 2]
        out.append(data[i : i + n])
        i += n
    return out


async def test_writes_and_hashes(tmp_path: Path) -> None:
    data = os.urandom(7 * CHUNK_SIZE + 12_345)
    dest = tmp_path / "dl"
    dest.touch()  # as DatasetCache.temp_file leaves it
    writer = HashingFileWriter(dest)
    for piece in pieces(data):
        await writer.write(piece)
    assert await writer.finish() == cid_of_bytes(data)
    await writer.close()
    assert dest.read_bytes() == data
    await assert_threads_end()


async def test_stale_content_is_replaced(tmp_path: Path) -> None:
    dest = tmp_path / "dl"
    dest.write_bytes(b"x" * 1000)  # longer than what follows
    writer = HashingFileWriter(dest)
    await writer.write(b"new")
    assert await writer.finish() == cid_of_bytes(b"new")
    assert dest.read_bytes() == b"new"


async def test_unwritable_destination_raises(tmp_path: Path) -> None:
    writer = HashingFileWriter(tmp_path / "missing-dir" / "dl")
    with pytest.raises(DatasetError, match="writing download failed"):
        for piece in pieces(os.urandom(40 * CHUNK_SIZE)):  # more than the queue holds
            await writer.write(piece)
        await writer.finish()
    await writer.close()
    await assert_threads_end()


async def test_close_without_finish_stops_the_threads(tmp_path: Path) -> None:
    dest = tmp_path / "dl"
    dest.touch()
    writer = HashingFileWriter(dest)
    for piece in pieces(os.urandom(20 * CHUNK_SIZE)):
        await writer.write(piece)
    await writer.close()  # e.g. DatasetTooLarge raised by the reader
    await assert_threads_end()
