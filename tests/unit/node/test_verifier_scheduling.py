"""Verifier scheduling: downloads overlap with worker CPU, both stay bounded.

Fakes for the store and the checker (the real ones are exercised in
tests/integration/node/test_verified_blocks.py); the bounds are the point.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import pytest

from p2pml.chain.taskspec import TaskSpec
from p2pml.chain.types import ResultTx
from p2pml.errors import DatasetError, TrainingError
from p2pml.ml.scheduling import Priority, WorkerScheduler
from p2pml.node.verifier import (
    FAILED_RETRY_FIRST,
    FAILED_RETRY_MAX,
    FETCH_AHEAD,
    MAX_ARTIFACT_BYTES,
    MAX_WORKER_FAILURES,
    Request,
    Verifier,
)
from tests.framework.waiting import wait_until

SPEC = TaskSpec(
    dataset_cid="QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG",
    target="y",
    model="ridge",
    kind="regression",
    metric="r2",
)
SEED = hashlib.sha256(b"seed").digest()
TASK = hashlib.sha256(b"task").digest()


class FakeStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.fetched: list[str] = []
        self.limits: list[int | None] = []

    async def fetch(self, cid: str, max_bytes: int | None = None) -> Path:
        self.fetched.append(cid)
        self.limits.append(max_bytes)
        path = self.root / cid
        if not path.exists():
            path.write_bytes(b"model bytes of " + cid.encode())
        return path


class GatedChecker:
    """Each verify waits until the test opens the gate."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.active = 0
        self.max_active = 0
        self.done = 0

    async def verify(self, *_args: Any, **_kw: Any) -> None:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            await self.gate.wait()
        finally:
            self.active -= 1
            self.done += 1


def request(i: int) -> Request:
    trainer = hashlib.sha256(b"trainer-%d" % i).digest()
    tx = ResultTx(TASK, SEED, 0, trainer, 0.5, f"cid-{i:03d}", 10, 1, 1_000)
    return Request(tx, SPEC.to_wire(), SEED, audit=False)


async def test_fetches_run_ahead_of_workers_within_bounds(tmp_path: Path) -> None:
    store, checker = FakeStore(tmp_path), GatedChecker()
    verifier = Verifier(store, checker, parallel=2)  # type: ignore[arg-type]
    reqs = [request(i) for i in range(20)]
    resolving = asyncio.ensure_future(verifier.resolve(reqs))
    try:
        # Both workers busy and the fetch slots full: nothing else can move.
        await wait_until(
            lambda: checker.active == 2 and len(store.fetched) == 2 + 2 * FETCH_AHEAD,
            what="workers busy and fetch-ahead full",
        )
        for _ in range(50):  # let any wrongly unbounded fetch run
            await asyncio.sleep(0)
        assert len(store.fetched) == 2 + 2 * FETCH_AHEAD
        checker.gate.set()
        assert await asyncio.wait_for(resolving, 10) == 0
    finally:
        checker.gate.set()
        resolving.cancel()
    assert checker.max_active == 2
    assert checker.done == 20
    assert verifier.stats.verified == 20


async def test_oversize_artifact_is_false_without_a_worker(tmp_path: Path) -> None:
    store, checker = FakeStore(tmp_path), GatedChecker()
    big = tmp_path / "cid-000"
    with big.open("wb") as f:
        f.truncate(MAX_ARTIFACT_BYTES + 1)  # sparse: no real disk use
    verifier = Verifier(store, checker, parallel=1)  # type: ignore[arg-type]
    assert await verifier.check(request(0)) == "bad-result-model"
    assert checker.done == 0
    checker.gate.set()
    assert await verifier.check(request(1)) == ""  # the worker slot was not leaked


class CrashingChecker:
    """A model that kills the worker (or fails the job) every time it is checked."""

    def __init__(self, reason: str = "worker-crashed") -> None:
        self.runs = 0
        self.reason = reason

    async def verify(self, *_args: Any, **_kw: Any) -> None:
        self.runs += 1
        if self.reason:  # "": the cause went away, the check passes
            raise TrainingError(self.reason, "worker exited during verify: EOFError()")


@pytest.mark.parametrize(
    "reason", ["worker-crashed", "job-timeout", "worker-memory-limit", "job-failed"]
)
async def test_a_result_that_keeps_crashing_workers_is_not_rerun(
    tmp_path: Path, reason: str
) -> None:
    store, checker = FakeStore(tmp_path), CrashingChecker(reason)
    verifier = Verifier(store, checker, parallel=1)  # type: ignore[arg-type]
    for _ in range(MAX_WORKER_FAILURES + 3):
        assert await verifier.check(request(0)) is None  # pending, never "false"
    assert checker.runs == MAX_WORKER_FAILURES
    assert verifier.cached(request(0).tx.id, SEED, False) is None
    # Other results still get their workers.
    assert await verifier.check(request(1)) is None
    assert checker.runs == MAX_WORKER_FAILURES + 1


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_blocks_verdict_is_retried_with_backoff_after_repeated_worker_failures(
    tmp_path: Path,
) -> None:
    """A block (an included result's cheap checks, a dispute's full audit)
    cannot connect without a verdict: giving up on it for good stalled the
    node at that height until a restart. It is retried after a doubling
    delay; a gossiped result's check is not (it only burns workers)."""
    store, checker, clock = FakeStore(tmp_path), CrashingChecker(), Clock()
    verifier = Verifier(store, checker, parallel=1, clock=clock)  # type: ignore[arg-type]
    block, gossip = request(0), request(1)
    for _ in range(MAX_WORKER_FAILURES + 2):
        assert await verifier.check(block) is None
        assert await verifier.check(gossip, background=True) is None
    assert checker.runs == 2 * MAX_WORKER_FAILURES  # no retry before the delay
    clock.now += FAILED_RETRY_FIRST - 1
    assert await verifier.check(block) is None
    assert checker.runs == 2 * MAX_WORKER_FAILURES
    clock.now += 1
    assert await verifier.check(gossip, background=True) is None  # never again
    assert checker.runs == 2 * MAX_WORKER_FAILURES
    assert await verifier.check(block) is None  # retried once, crashed again
    assert checker.runs == 2 * MAX_WORKER_FAILURES + 1
    # The next delay is doubled; past it a worker that no longer crashes
    # (a transient cause ended) gives the verdict the block waits for.
    clock.now += FAILED_RETRY_FIRST
    assert await verifier.check(block) is None
    assert checker.runs == 2 * MAX_WORKER_FAILURES + 1
    clock.now += FAILED_RETRY_FIRST
    checker.reason = ""
    assert await verifier.check(block) == ""
    assert verifier.cached(block.tx.id, SEED, False) == ""
    # The delay is capped.
    crashing = CrashingChecker()
    capped = Verifier(store, crashing, parallel=1, clock=clock)  # type: ignore[arg-type]
    for _ in range(MAX_WORKER_FAILURES + 12):
        assert await capped.check(block) is None
        clock.now += FAILED_RETRY_MAX
    assert crashing.runs == MAX_WORKER_FAILURES + 12


async def test_a_verdict_clears_the_worker_failures_before_it(tmp_path: Path) -> None:
    """The cheap checks got through after crashes (a transient cause); the
    full audit a dispute later needs starts afresh: its first crash is
    retried at once, not after the cheap checks' backoff."""
    store, checker, clock = FakeStore(tmp_path), CrashingChecker(), Clock()
    verifier = Verifier(store, checker, parallel=1, clock=clock)  # type: ignore[arg-type]
    cheap = request(0)
    for _ in range(MAX_WORKER_FAILURES):
        assert await verifier.check(cheap) is None
    clock.now += FAILED_RETRY_FIRST
    checker.reason = ""
    assert await verifier.check(cheap) == ""
    audit = dataclasses.replace(cheap, audit=True)
    checker.reason = "worker-crashed"
    assert await verifier.check(audit) is None
    runs = checker.runs
    assert await verifier.check(audit) is None
    assert checker.runs == runs + 1  # re-run at once: one failure, not four


async def test_artifacts_are_fetched_under_the_artifact_cap(tmp_path: Path) -> None:
    """Attack: artifacts used to be downloaded up to the dataset limit
    (512 MiB) before the 64 MiB artifact check."""
    store, checker = FakeStore(tmp_path), GatedChecker()
    checker.gate.set()
    verifier = Verifier(store, checker, parallel=1)  # type: ignore[arg-type]
    assert await verifier.check(request(0)) == ""
    assert store.limits == [MAX_ARTIFACT_BYTES]


async def test_gossiped_checks_leave_a_worker_for_block_verification(tmp_path: Path) -> None:
    store, checker = FakeStore(tmp_path), GatedChecker()
    verifier = Verifier(store, checker, parallel=2)  # type: ignore[arg-type]
    background = [
        asyncio.ensure_future(verifier.check(request(i), background=True)) for i in range(4)
    ]
    await wait_until(lambda: checker.active == 1, timeout=5)
    block = asyncio.ensure_future(verifier.check(request(10)))
    await wait_until(lambda: checker.active == 2, timeout=5)  # a worker was free for it
    assert checker.max_active == 2
    checker.gate.set()
    assert await block == ""
    assert await asyncio.gather(*background) == ["", "", "", ""]


class StallingStore(FakeStore):
    """An artifact that never arrives (until the test ends the download)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.release = asyncio.Event()

    async def fetch(self, cid: str, max_bytes: int | None = None) -> Path:
        self.started.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        raise DatasetError(f"{cid}: timed out")


async def test_the_last_waiter_gone_cancels_the_check_and_its_download(tmp_path: Path) -> None:
    """A block's check nobody waits for any more (a reorg): the shared check
    (and the artifact download in it) ends too, not at its timeout."""
    store = StallingStore(tmp_path)
    verifier = Verifier(store, GatedChecker(), parallel=1)  # type: ignore[arg-type]
    waiter = asyncio.ensure_future(verifier.check(request(0)))
    await asyncio.wait_for(store.started.wait(), timeout=5)
    waiter.cancel()
    await asyncio.wait_for(store.cancelled.wait(), timeout=5)
    await wait_until(lambda: verifier._fetching._value == FETCH_AHEAD, timeout=5)


async def test_a_banned_senders_check_leaves_its_download_to_end_by_itself(
    tmp_path: Path,
) -> None:
    """Attack: each ban cancelled the sender's checks and their downloads;
    aborting a download of embedded Kubo restarts the daemon, stalling our
    own training's artifact add for seconds, once per banned attacker. The
    check ends at once; its download runs to its end, holding its slot."""
    store = StallingStore(tmp_path)
    verifier = Verifier(store, GatedChecker(), parallel=1)  # type: ignore[arg-type]
    waiter = asyncio.ensure_future(verifier.check(request(0), background=True))
    await asyncio.wait_for(store.started.wait(), timeout=5)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    for _ in range(20):
        await asyncio.sleep(0)
    assert not store.cancelled.is_set()
    assert verifier._fetching_background._value == FETCH_AHEAD - 1  # still bounded
    assert verifier._fetching._value == FETCH_AHEAD  # block fetches never queued behind it
    store.release.set()  # the download ends (here: fails, as at the IPFS timeout)
    await wait_until(lambda: verifier._fetching_background._value == FETCH_AHEAD, timeout=5)
    # A later request for the same result starts afresh.
    store.release.clear()
    store.started.clear()
    again = asyncio.ensure_future(verifier.check(request(0), background=True))
    await asyncio.wait_for(store.started.wait(), timeout=5)
    # Stopping the node aborts detached downloads too.
    again.cancel()
    with pytest.raises(asyncio.CancelledError):
        await again
    verifier.close()
    await asyncio.wait_for(store.cancelled.wait(), timeout=5)


async def test_a_check_after_a_cancelled_one_starts_afresh(tmp_path: Path) -> None:
    """Review finding: a request arriving while a cancelled shared check was
    still winding down joined it and got CancelledError, which ended the
    node's verification loop."""
    store, checker = FakeStore(tmp_path), GatedChecker()
    verifier = Verifier(store, checker, parallel=1)  # type: ignore[arg-type]
    first = asyncio.ensure_future(verifier.check(request(0), background=True))
    await wait_until(lambda: checker.active == 1, timeout=5)
    first.cancel()
    again = asyncio.ensure_future(verifier.check(request(0)))
    checker.gate.set()
    assert await again == ""


class SchedulingPool:
    """The training pool's scheduling (the real ``WorkerScheduler``) over fake
    workers: a job waits for its gate; preempting cancels it, as the real pool
    kills the worker's process, and a replacement worker is added."""

    def __init__(self, workers: int) -> None:
        self.sched: WorkerScheduler[str] = WorkerScheduler(workers, self._kill)
        self.jobs: dict[str, asyncio.Future[bool]] = {}
        self.started: list[Priority] = []
        self.spawned = 0
        for i in range(workers):
            self.sched.add(f"w{i}")

    def _kill(self, worker: str) -> None:
        self.jobs[worker].cancel()

    async def run(self, gate: asyncio.Event, priority: Priority) -> None:
        while True:
            worker = await self.sched.acquire(priority)
            self.started.append(priority)
            job = self.jobs[worker] = asyncio.ensure_future(gate.wait())
            try:
                await job
            except asyncio.CancelledError:
                if not self.sched.preempted(worker):
                    raise
                self.sched.retire(worker)
                self.spawned += 1
                self.sched.add(f"new{self.spawned}")
                continue  # queued again
            self.sched.release(worker)
            return


class PoolChecker:
    """Gossiped checks wait for ``background_gate``; block checks run at once."""

    def __init__(self, pool: SchedulingPool) -> None:
        self.pool = pool
        self.background_gate = asyncio.Event()
        self.block_gate = asyncio.Event()
        self.block_gate.set()

    async def verify(self, _claim: Any, background: bool = False) -> None:
        if background:
            await self.pool.run(self.background_gate, Priority.BACKGROUND)
        else:
            await self.pool.run(self.block_gate, Priority.BLOCK)


async def test_with_one_worker_a_block_check_preempts_a_gossiped_one(tmp_path: Path) -> None:
    """``[training] workers = 1``: a gossiped check holding the only worker
    used to make block verification wait for it to end."""
    pool = SchedulingPool(1)
    checker = PoolChecker(pool)
    verifier = Verifier(FakeStore(tmp_path), checker, parallel=1)  # type: ignore[arg-type]
    gossiped = asyncio.ensure_future(verifier.check(request(0), background=True))
    await wait_until(lambda: pool.started == [Priority.BACKGROUND], timeout=5)
    block = await asyncio.wait_for(verifier.check(request(1)), 5)
    assert block == ""
    assert pool.sched.preemptions == 1
    # The gossiped check was queued again, and ends with its own verdict.
    assert pool.started == [Priority.BACKGROUND, Priority.BLOCK, Priority.BACKGROUND]
    assert not gossiped.done()
    checker.background_gate.set()
    assert await asyncio.wait_for(gossiped, 5) == ""
    assert verifier.stats.verified == 2
