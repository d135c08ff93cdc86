"""Wait for conditions, never for fixed times."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable

TIMEOUT_FACTOR = float(os.environ.get("P2PML_TIMEOUT_FACTOR", "1"))


def scaled(seconds: float) -> float:
    """A time bound a test must keep (a promise, not a speed figure), scaled by
    P2PML_TIMEOUT_FACTOR like every wait, so slow or shared CI machines raise
    it in one place. Speed figures belong in scripts/bench_*.py."""
    return seconds * TIMEOUT_FACTOR


async def wait_until(
    cond: Callable[[], bool | Awaitable[bool]],
    timeout: float = 10.0,
    interval: float = 0.02,
    what: str = "condition",
) -> None:
    """Poll ``cond`` until true; fail the test after ``timeout`` x factor."""
    deadline = time.monotonic() + timeout * TIMEOUT_FACTOR
    while True:
        r = cond()
        if not isinstance(r, bool):
            r = await r
        if r:
            return
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout * TIMEOUT_FACTOR:.1f}s waiting for {what}"
            )
        await asyncio.sleep(interval)


def wait_until_sync(
    cond: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout * TIMEOUT_FACTOR
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout * TIMEOUT_FACTOR:.1f}s waiting for {what}"
            )
        time.sleep(interval)
