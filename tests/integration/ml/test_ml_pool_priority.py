"""Block verification's capacity with one real worker (issue 14): a gossiped
result's check holding the only worker is preempted, not waited for."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from p2pml.errors import ValidationError
from p2pml.ml.artifact import dump_model
from p2pml.ml.partition import derive_random_state, partition_indices
from p2pml.ml.pool import TrainingPool
from p2pml.ml.scheduling import Priority
from p2pml.ml.verify import ResultClaim, verify_result_async
from tests.framework.waiting import scaled, wait_until

from .test_ml_training import ALICE, FAKE_CID, SEED, TASK, fit_locally, local_metric, make_spec

pytestmark = pytest.mark.asyncio(loop_scope="module")

LONG = 600.0  # seconds of CPU the background check would still need


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def one_worker() -> AsyncIterator[TrainingPool]:
    p = TrainingPool(1)
    await p.start()
    await p.run("info", None, scaled(120))  # the worker has done its imports
    yield p
    await p.close()


async def test_block_verification_preempts_a_long_background_check(
    one_worker: TrainingPool, data_dir: Path, tmp_path: Path
) -> None:
    pool = one_worker
    csv = data_dir / "diabetes.csv"
    spec = make_spec(FAKE_CID, "random_forest_regressor", "target", "r2", {"n_estimators": 8})
    rows = partition_indices(SEED, TASK, ALICE, 0, 442, 0.2, 0.6)
    model = fit_locally(spec, csv, rows, derive_random_state(SEED, TASK, ALICE, 0))
    metric = local_metric(spec, model, csv)
    artifact = dump_model(model)

    def claim(claimed: float) -> ResultClaim:
        return ResultClaim(spec, TASK, SEED, ALICE, 0, artifact, claimed, len(rows), audit=True)

    background = asyncio.ensure_future(pool.run("sleep", LONG, LONG * 2, Priority.BACKGROUND))
    await wait_until(lambda: len(pool.busy_pids) == 1, what="the background check running")
    (busy,) = pool.busy_pids
    t0 = time.monotonic()
    honest, inflated = await asyncio.gather(
        verify_result_async(pool, claim(metric), csv, cache_dir=tmp_path, timeout=scaled(120)),
        verify_result_async(pool, claim(metric + 1e-6), csv, cache_dir=tmp_path, timeout=120),
        return_exceptions=True,
    )
    took = time.monotonic() - t0
    # Both block verdicts are right, and came long before the background
    # check could have ended: it was preempted for them (once), and its
    # worker let go of it and stayed (no new process to spawn and import).
    assert honest is None
    assert isinstance(inflated, ValidationError) and inflated.reason == "bad-result-metric"
    assert took < scaled(30), f"block verification waited {took:.1f} s"
    assert pool.preemptions == 1
    assert pool.pids == [busy]
    # The background check was queued again and runs once the blocks are done.
    await wait_until(lambda: pool.busy_pids == [busy], what="the background check re-run")
    assert not background.done()
    background.cancel()
    with pytest.raises(asyncio.CancelledError):
        await background


async def test_a_preempted_background_job_reruns_to_its_own_result(
    one_worker: TrainingPool,
) -> None:
    pool = one_worker
    before = pool.preemptions
    background = asyncio.ensure_future(pool.run("sleep", 2.0, scaled(60), Priority.BACKGROUND))
    await wait_until(lambda: len(pool.busy_pids) == 1, what="the background job running")
    info = await asyncio.wait_for(pool.run("info", None, scaled(60), Priority.BLOCK), scaled(30))
    assert info["pid"] in pool.pids
    assert pool.preemptions == before + 1
    assert await asyncio.wait_for(background, scaled(60)) == 2.0
    # Training is not preempted: a block job waits for it to end.
    training = asyncio.ensure_future(pool.run("sleep", 1.0, scaled(60), Priority.TRAIN))
    await wait_until(lambda: len(pool.busy_pids) == 1, what="the training job running")
    await asyncio.wait_for(pool.run("info", None, scaled(60), Priority.BLOCK), scaled(30))
    assert training.done() and training.result() == 1.0
    assert pool.preemptions == before + 1


async def test_a_worker_that_does_not_let_go_is_killed_for_the_block_job(
    one_worker: TrainingPool,
) -> None:
    pool = one_worker
    background = asyncio.ensure_future(pool.run("sleep", LONG, LONG * 2, Priority.BACKGROUND))
    await wait_until(lambda: len(pool.busy_pids) == 1, what="the background job running")
    (stuck,) = pool.busy_pids
    os.kill(stuck, signal.SIGSTOP)  # like a job deep in native code: no signal handled
    info = await asyncio.wait_for(pool.run("info", None, scaled(120), Priority.BLOCK), scaled(60))
    assert info["pid"] != stuck and stuck not in pool.pids
    await wait_until(lambda: len(pool.busy_pids) == 1, what="the background job re-run")
    assert not background.done()
    background.cancel()
    with pytest.raises(asyncio.CancelledError):
        await background
