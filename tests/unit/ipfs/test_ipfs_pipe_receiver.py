"""The embedded backend's FIFO receiver: hashes what arrives, always ends."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from p2pml.errors import DatasetError
from p2pml.ipfs.cid import cid_of_bytes
from p2pml.ipfs.pipe_receiver import PipeReceiver


def _send(pipe: Path, data: bytes) -> None:
    """What Kubo's Download does: open the path, write everything, close."""
    with open(pipe, "wb") as f:
        f.write(data)


async def test_bytes_through_the_pipe_are_hashed_and_written(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)  # several leaves and reads, a partial last
    dest = tmp_path / "dest"
    dest.touch()  # the caller's temp file
    receiver = PipeReceiver(tmp_path / "p.fifo", dest, max_bytes=len(data))
    await asyncio.to_thread(_send, receiver.pipe, data)
    await receiver.close()
    assert receiver.cid() == cid_of_bytes(data)
    assert dest.read_bytes() == data
    assert not receiver.pipe.exists()


async def test_a_writer_that_never_comes_does_not_hang(tmp_path: Path) -> None:
    (tmp_path / "dest").touch()
    receiver = PipeReceiver(tmp_path / "p.fifo", tmp_path / "dest", max_bytes=100)
    await asyncio.wait_for(receiver.close(), 10)
    assert receiver.received == 0
    assert receiver.cid() == cid_of_bytes(b"")  # what arrived: nothing


async def test_oversize_stops_reading_and_the_writer_gets_a_broken_pipe(tmp_path: Path) -> None:
    (tmp_path / "dest").touch()
    receiver = PipeReceiver(tmp_path / "p.fifo", tmp_path / "dest", max_bytes=1024 * 1024)
    big = os.urandom(1024 * 1024) * 64  # 64 MiB: far more than the pipe buffers
    with pytest.raises(BrokenPipeError):
        await asyncio.wait_for(asyncio.to_thread(_send, receiver.pipe, big), 30)
    await receiver.close()
    assert 1024 * 1024 < receiver.received < len(big)
    with pytest.raises(DatasetError):
        receiver.cid()


def test_a_failed_start_leaves_no_pipe_and_no_descriptors(tmp_path: Path) -> None:
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(FileNotFoundError):
        PipeReceiver(tmp_path / "p.fifo", tmp_path / "gone", max_bytes=100)  # no temp file
    assert not (tmp_path / "p.fifo").exists()
    assert len(os.listdir("/proc/self/fd")) == before
