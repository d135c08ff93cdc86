"""The training pool: thread pinning, time limits, crash recovery, errors."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio

from p2pml.chain.taskspec import TaskSpec
from p2pml.config import TrainingSettings
from p2pml.errors import TrainingError
from p2pml.ml.pool import TrainingPool
from p2pml.ml.trainer import Trainer
from p2pml.ml.worker import THREAD_ENV

from .conftest import DirStore

pytestmark = pytest.mark.asyncio(loop_scope="module")

SEED = hashlib.sha256(b"block").digest()
TASK = hashlib.sha256(b"task").digest()
ALICE = hashlib.sha256(b"alice").digest()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def own_pool() -> AsyncIterator[TrainingPool]:
    p = TrainingPool(2)
    await p.start()
    yield p
    await p.close()


async def test_workers_run_single_threaded_from_exec(own_pool: TrainingPool) -> None:
    before = {k: os.environ.get(k) for k in THREAD_ENV}
    infos = await asyncio.gather(*(own_pool.run("info", None, 60) for _ in range(2)))
    for info in infos:
        # Present in the environment the child was exec'd with, i.e. before any
        # import in the child (including the re-import of the parent's __main__).
        assert info["exec_env"] == THREAD_ENV
        assert info["pools"], "threadpoolctl sees no BLAS/OpenMP pool"
        assert all(n == 1 for _, n in info["pools"]), info["pools"]
    # The parent's own environment is left as it was.
    assert {k: os.environ.get(k) for k in THREAD_ENV} == before


async def test_timeout_kills_only_that_job_and_pool_recovers(own_pool: TrainingPool) -> None:
    pids = set(own_pool.pids)
    slow = asyncio.create_task(own_pool.run("sleep", 30.0, 0.5))
    ok = asyncio.create_task(own_pool.run("sleep", 0.2, 30))  # on the other worker
    with pytest.raises(TrainingError) as e:
        await slow
    assert e.value.reason == "job-timeout"
    assert await ok == 0.2  # unaffected by the kill
    after = set(own_pool.pids)
    assert len(after) == 2 and len(after - pids) == 1  # exactly one worker replaced
    for pid in pids - after:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # really gone (reaped)
    assert await asyncio.gather(*(own_pool.run("sleep", 0.05, 30) for _ in range(4))) == [0.05] * 4


async def test_crashed_worker_is_reported_and_replaced(own_pool: TrainingPool) -> None:
    job = asyncio.create_task(own_pool.run("sleep", 30.0, 60))
    while not own_pool.busy_pids:  # the job is handed to a worker on the next loop turns
        await asyncio.sleep(0.01)
    (pid,) = own_pool.busy_pids
    os.kill(pid, signal.SIGKILL)  # a worker this test's pool started
    with pytest.raises(TrainingError) as e:
        await job
    assert e.value.reason == "worker-crashed"
    assert pid not in own_pool.pids and len(own_pool.pids) == 2
    assert await own_pool.run("sleep", 0.01, 30) == 0.01


async def test_trainer_job_timeout_then_trains(tmp_path: Path, own_pool: TrainingPool) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20_000, 10))
    y = X @ rng.normal(size=10) + rng.normal(size=20_000)
    text = "\n".join(
        [",".join([f"x{i}" for i in range(10)] + ["y"])]
        + [",".join(f"{v:.6f}" for v in row) for row in np.column_stack([X, y])]
    )
    store = DirStore(tmp_path / "store")
    cid = await store.add_bytes(text.encode())
    settings = TrainingSettings(enabled=True, max_job_seconds=1.0)
    trainer = Trainer(store, own_pool, settings, tmp_path / "parsed")
    slow = TaskSpec(
        dataset_cid=cid,
        target="y",
        model="random_forest_regressor",
        kind="regression",
        metric="r2",
        params=(("n_estimators", 500),),
    )
    with pytest.raises(TrainingError) as e:
        await trainer.train_round(slow, TASK, SEED, ALICE, 0)
    assert e.value.reason == "job-timeout"
    quick = TaskSpec(dataset_cid=cid, target="y", model="ridge", kind="regression", metric="r2")
    out = await trainer.train_round(quick, TASK, SEED, ALICE, 0)
    assert out.metric > 0.9 and out.train_rows == 10_000


async def test_unknown_job_and_closed_pool() -> None:
    p = TrainingPool(1)
    with pytest.raises(ValueError):
        await p.run("exec", "print(1)", 1)
    assert await p.run("sleep", 0.01, 30) == 0.01  # starts lazily
    pid = p.pids[0]
    await p.close()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(TrainingError) as e:
        await p.run("sleep", 0.01, 30)
    assert e.value.reason == "pool-closed"
