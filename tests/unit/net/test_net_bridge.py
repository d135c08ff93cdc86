"""The asyncio <-> trio bridge: calls both ways, errors, cancellation, stop."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
import trio

from p2pml.errors import NetworkError
from p2pml.net.bridge import TrioBridge

pytestmark = pytest.mark.timeout(20)


async def started(bridge: TrioBridge) -> None:
    async def serve(task_status: Any) -> None:
        task_status.started()
        await trio.sleep_forever()

    await bridge.start(serve)


async def test_calls_both_ways_and_clean_stop() -> None:
    before = set(threading.enumerate())
    bridge = TrioBridge()
    await started(bridge)
    loop_thread = threading.get_ident()

    async def in_trio(x: int) -> tuple[int, int]:
        trio.lowlevel.current_task()  # raises outside trio
        v = await bridge.call_asyncio_sync(lambda: (x * 2, threading.get_ident()))
        return v[0] + 1, v[1]

    value, thread = await bridge.call_trio(in_trio, 20)
    assert value == 41 and thread == loop_thread

    async def fails() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await bridge.call_trio(fails)

    async def slow() -> None:
        await trio.sleep(30)

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await bridge.call_trio(slow)  # the trio side is cancelled too

    async def wait_reply() -> int:
        def start(reply: Any) -> None:
            asyncio.get_running_loop().call_later(0.01, reply, 7)

        return await bridge.wait_asyncio(start)

    assert await bridge.call_trio(wait_reply) == 7
    await bridge.stop()
    assert set(threading.enumerate()) <= before
    with pytest.raises(NetworkError):
        await bridge.call_trio(slow)


async def test_start_failure_is_raised_and_thread_ends() -> None:
    before = set(threading.enumerate())
    bridge = TrioBridge()

    async def serve(task_status: Any) -> None:
        async with trio.open_nursery():
            raise NetworkError("cannot listen on x")

    with pytest.raises(NetworkError, match="cannot listen on x"):
        await bridge.start(serve)
    assert set(threading.enumerate()) <= before


async def test_stop_runs_graceful_step_with_deadline() -> None:
    bridge = TrioBridge()
    await started(bridge)
    ran: list[str] = []

    async def graceful() -> None:
        ran.append("graceful")
        await trio.sleep(10)  # cut off by the timeout

    t0 = asyncio.get_running_loop().time()
    await bridge.stop(graceful, timeout=0.2)
    assert ran == ["graceful"]
    assert asyncio.get_running_loop().time() - t0 < 2
