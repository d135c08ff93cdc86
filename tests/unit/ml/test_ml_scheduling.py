"""The training pool's scheduler with fake workers: priority order, the
background share, and preemption of background jobs for block jobs."""

from __future__ import annotations

import asyncio

import pytest

from p2pml.errors import TrainingError
from p2pml.ml.scheduling import Priority, WorkerScheduler


def scheduler(workers: int) -> tuple[WorkerScheduler[str], list[str]]:
    killed: list[str] = []
    sched: WorkerScheduler[str] = WorkerScheduler(workers, killed.append)
    for i in range(workers):
        sched.add(f"w{i}")
    return sched, killed


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_free_worker_goes_to_blocks_then_training_then_background() -> None:
    sched, _ = scheduler(1)
    w = await sched.acquire(Priority.TRAIN)
    order: list[str] = []

    async def job(name: str, prio: Priority) -> None:
        got = await sched.acquire(prio)
        order.append(name)
        sched.release(got)

    jobs = [
        asyncio.ensure_future(job(name, prio))
        for name, prio in [
            ("bg1", Priority.BACKGROUND),
            ("train1", Priority.TRAIN),
            ("bg2", Priority.BACKGROUND),
            ("train2", Priority.TRAIN),
        ]
    ]
    await settle()
    jobs.append(asyncio.ensure_future(job("block", Priority.BLOCK)))
    await settle()
    assert order == []  # training is never preempted: the block job waits for it
    sched.release(w)
    await asyncio.gather(*jobs)
    assert order == ["block", "train1", "train2", "bg1", "bg2"]


async def test_background_jobs_hold_at_most_all_workers_but_one() -> None:
    sched, _ = scheduler(3)
    bg = [asyncio.ensure_future(sched.acquire(Priority.BACKGROUND)) for _ in range(3)]
    await settle()
    assert [f.done() for f in bg] == [True, True, False]
    train = await asyncio.wait_for(sched.acquire(Priority.TRAIN), 1)  # the kept worker
    assert train not in {bg[0].result(), bg[1].result()}
    sched.release(bg[0].result())
    await settle()
    assert bg[2].done()  # back under its share


async def test_a_block_job_preempts_the_latest_background_job() -> None:
    sched, killed = scheduler(3)
    first = await sched.acquire(Priority.BACKGROUND)
    second = await sched.acquire(Priority.BACKGROUND)
    train = await sched.acquire(Priority.TRAIN)
    block = asyncio.ensure_future(sched.acquire(Priority.BLOCK))
    await settle()
    assert killed == [second]  # the later start: less work lost
    assert sched.preempted(second) and not sched.preempted(first)
    assert not sched.preempted(train) and sched.preemptions == 1
    # The pool retires the killed worker and adds its replacement.
    sched.retire(second)
    sched.add("w-new")
    assert await asyncio.wait_for(block, 1) == "w-new"
    # The preempted job waits again, in its class, behind nothing else.
    again = asyncio.ensure_future(sched.acquire(Priority.BACKGROUND))
    await settle()
    assert not again.done()
    sched.release(block.result())
    assert await asyncio.wait_for(again, 1) == "w-new"


async def test_a_preempted_job_that_lets_go_hands_its_worker_to_the_block_job() -> None:
    sched, killed = scheduler(1)
    bg = await sched.acquire(Priority.BACKGROUND)
    block = asyncio.ensure_future(sched.acquire(Priority.BLOCK))
    await settle()
    assert killed == [bg]
    requeued = asyncio.ensure_future(sched.acquire(Priority.BACKGROUND))
    sched.release(bg)  # the job abandoned: the worker lives on
    assert await asyncio.wait_for(block, 1) == bg
    await settle()
    assert not requeued.done()
    # A second block job, later: the worker is not "on its way" any more.
    block2 = asyncio.ensure_future(sched.acquire(Priority.BLOCK))
    await settle()
    assert killed == [bg]  # nothing background runs: nothing to preempt
    sched.release(bg)
    assert await asyncio.wait_for(block2, 1) == bg
    sched.release(bg)
    assert await asyncio.wait_for(requeued, 1) == bg


async def test_one_worker_a_block_job_never_waits_behind_background_work() -> None:
    sched, killed = scheduler(1)
    bg = await sched.acquire(Priority.BACKGROUND)
    blocks = [asyncio.ensure_future(sched.acquire(Priority.BLOCK)) for _ in range(2)]
    await settle()
    assert killed == [bg]  # one victim is enough for both (one worker comes back)
    sched.retire(bg)
    sched.add("w1")
    got = await asyncio.wait_for(blocks[0], 1)
    sched.release(got)
    assert await asyncio.wait_for(blocks[1], 1) == got
    assert killed == [bg]


async def test_training_and_block_jobs_are_never_preempted() -> None:
    sched, killed = scheduler(2)
    await sched.acquire(Priority.TRAIN)
    await sched.acquire(Priority.BLOCK)
    block = asyncio.ensure_future(sched.acquire(Priority.BLOCK))
    train = asyncio.ensure_future(sched.acquire(Priority.TRAIN))
    await settle()
    assert killed == [] and not block.done() and not train.done()
    block.cancel()
    train.cancel()


async def test_training_waits_but_does_not_preempt_background() -> None:
    sched, killed = scheduler(1)
    bg = await sched.acquire(Priority.BACKGROUND)
    train = asyncio.ensure_future(sched.acquire(Priority.TRAIN))
    await settle()
    assert killed == [] and not train.done()
    sched.release(bg)
    assert await asyncio.wait_for(train, 1) == bg


async def test_a_cancelled_waiter_takes_no_worker() -> None:
    sched, _ = scheduler(1)
    w = await sched.acquire(Priority.TRAIN)
    gone = asyncio.ensure_future(sched.acquire(Priority.BLOCK))
    kept = asyncio.ensure_future(sched.acquire(Priority.TRAIN))
    await settle()
    gone.cancel()
    await settle()
    sched.release(w)
    assert await asyncio.wait_for(kept, 1) == w


async def test_closing_fails_the_waiters() -> None:
    sched, _ = scheduler(1)
    await sched.acquire(Priority.TRAIN)
    waiter = asyncio.ensure_future(sched.acquire(Priority.BACKGROUND))
    await settle()
    sched.close(TrainingError("pool-closed", "shut down"))
    with pytest.raises(TrainingError) as e:
        await waiter
    assert e.value.reason == "pool-closed"
    with pytest.raises(TrainingError):
        await sched.acquire(Priority.BLOCK)
