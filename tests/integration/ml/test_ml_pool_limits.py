"""OS limits of worker processes: address space and CPU time (issue 14)."""

from __future__ import annotations

import asyncio
import resource
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from p2pml.errors import TrainingError
from p2pml.mining.miner import Miner
from p2pml.ml.pool import CPU_GRACE_SECONDS, TrainingPool
from tests.framework.waiting import TIMEOUT_FACTOR

pytestmark = pytest.mark.asyncio(loop_scope="module")

MEMORY_MB = 1024
MIB = 1024 * 1024


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def limited() -> AsyncIterator[TrainingPool]:
    p = TrainingPool(1, memory_mb=MEMORY_MB)
    await p.start()
    yield p
    await p.close()


async def test_worker_runs_under_address_space_and_cpu_limits(limited: TrainingPool) -> None:
    info = await limited.run("info", None, 30 * TIMEOUT_FACTOR)
    assert info["rlimit_as"] == (MEMORY_MB * MIB, MEMORY_MB * MIB)  # hard too: cannot be lifted
    soft, _hard = info["rlimit_cpu"]
    budget = 30 * TIMEOUT_FACTOR + CPU_GRACE_SECONDS
    assert info["cpu_seconds"] + budget <= soft <= info["cpu_seconds"] + budget + 1


async def test_job_over_the_memory_limit_is_reported_and_its_worker_replaced(
    limited: TrainingPool,
) -> None:
    (before,) = limited.pids
    with pytest.raises(TrainingError) as e:
        await limited.run("alloc", 2 * MEMORY_MB, 60 * TIMEOUT_FACTOR)
    assert e.value.reason == "worker-memory-limit"
    (after,) = limited.pids
    assert after != before
    # The new worker has the limit too, and serves jobs within it.
    assert await limited.run("alloc", 64, 60 * TIMEOUT_FACTOR) == 64 * MIB
    info = await limited.run("info", None, 30 * TIMEOUT_FACTOR)
    assert info["pid"] == after and info["rlimit_as"][0] == MEMORY_MB * MIB


async def test_mining_workers_get_the_memory_limit() -> None:
    miner = Miner(lambda: None, lambda _b: asyncio.sleep(0), workers=1, memory_mb=MEMORY_MB)  # type: ignore[arg-type, return-value]
    miner.start_pool()
    try:
        assert miner._pool is not None
        got = await asyncio.wrap_future(miner._pool.submit(resource.getrlimit, resource.RLIMIT_AS))
        assert got == (MEMORY_MB * MIB, MEMORY_MB * MIB)
    finally:
        await miner.close()
