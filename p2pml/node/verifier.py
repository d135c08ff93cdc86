"""Result verification for consensus: the verdict oracle and its cache.

The chain asks :meth:`Verifier.verdict` synchronously while it connects a
block; an unknown verdict parks the block ("pending data") and records the
request, which :meth:`Verifier.resolve` then answers by fetching the model
artifact and the dataset and re-running the result in worker processes.
Verdicts are cached by (result id, task seed), so a block's results are
verified once, and not again on a reorg back to it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from p2pml.chain.taskspec import TaskSpec
from p2pml.chain.types import ResultTx
from p2pml.errors import (
    DatasetError,
    DatasetTooLarge,
    FetchTimeout,
    MissingDataError,
    TrainingError,
    ValidationError,
)
from p2pml.ipfs.store import DatasetStore
from p2pml.ml.verify import ResultClaim

log = logging.getLogger(__name__)

CACHE_MAX = 100_000
# Reasons that depend on this node's configuration, not on the result.
LOCAL_LIMITS = frozenset({"bad-result-dataset"})
MAX_ARTIFACT_BYTES = 64 * 1024 * 1024
# Worker crashes/timeouts after which a result is no longer re-run at once:
# a gossiped one never again; one a block needs (the cheap checks of an
# included result, a dispute's full audit) only after a doubling delay, since
# the chain cannot pass that block without a verdict (a transient cause, an
# overloaded host or a worker memory limit raised by the operator, may end).
MAX_WORKER_FAILURES = 3
FAILED_RETRY_FIRST = 60.0
FAILED_RETRY_MAX = 3600.0
WORKER_FAILURES = frozenset({"worker-crashed", "job-timeout", "worker-memory-limit", "job-failed"})
# Artifact fetches in flight per worker: enough to keep workers fed while
# models download, few enough to bound memory (<= 64 MiB each).
FETCH_AHEAD = 2


class ResultChecker(Protocol):
    """What re-runs a result (``p2pml.ml.trainer.Trainer`` implements it)."""

    async def verify(self, claim: ResultClaim, background: bool = False) -> None: ...


@dataclass(frozen=True)
class Request:
    tx: ResultTx
    spec_wire: Any
    seed: bytes
    audit: bool

    @property
    def key(self) -> tuple[bytes, bytes]:
        return (self.tx.id, self.seed)


@dataclass
class VerifierStats:
    verified: int = 0
    failed: int = 0
    pending: int = 0
    unfetchable: int = 0  # of pending: the artifact could not be fetched


class Verifier:
    def __init__(
        self,
        store: DatasetStore,
        checker: ResultChecker,
        parallel: int = 2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._clock = clock
        self._checker = checker
        # (result id, seed) -> (audited?, verdict): "" valid, else the reason
        self._cache: OrderedDict[tuple[bytes, bytes], tuple[bool, str]] = OrderedDict()
        self.wanted: dict[tuple[bytes, bytes, bool], Request] = {}
        # Jobs handed to the pool at once, per class: the pool orders them
        # (block verification first, then training, then gossiped results)
        # and preempts a gossiped check when a block's job finds no free
        # worker (p2pml.ml.scheduling). Separate counts, so a gossiped check
        # never holds a slot that block verification waits for.
        self._parallel = asyncio.Semaphore(max(1, parallel))
        self._background = asyncio.Semaphore(max(1, parallel - 1))
        self._fetching = asyncio.Semaphore(FETCH_AHEAD * max(1, parallel))
        # Gossiped results fetch on slots of their own: artifacts that never
        # arrive (an attacker's CIDs) must not hold the slots that blocks and
        # our own results need.
        self._fetching_background = asyncio.Semaphore(FETCH_AHEAD)
        self._detached: set[asyncio.Future[Path]] = set()
        self._waiters: dict[tuple[bytes, bytes, bool], int] = {}
        self._inflight: dict[tuple[bytes, bytes, bool], asyncio.Future[str | None]] = {}
        # (result id, seed) -> (worker crashes/timeouts while verifying it,
        # the clock before which a block's request does not re-run it)
        self._failures: OrderedDict[tuple[bytes, bytes], tuple[int, float]] = OrderedDict()
        # Result ids whose artifact nobody served on the last try (the
        # sender of a gossiped one pays for it: VerificationService).
        self._unfetchable: OrderedDict[bytes, None] = OrderedDict()
        self.stats = VerifierStats()

    # -- the oracle (sync, called by ChainState) ---------------------------------------

    def verdict(self, tx: ResultTx, task: dict[str, Any], audit: bool) -> str | None:
        got = self.cached(tx.id, task["seed"], audit)
        if got is None:
            req = Request(tx, task["spec"], bytes(task["seed"]), audit)
            self.wanted[(tx.id, req.seed, audit)] = req
        return got

    def peek(self, tx: ResultTx, task: dict[str, Any], audit: bool) -> str | None:
        """Like :meth:`verdict` but asks for nothing (mempool and templates)."""
        return self.cached(tx.id, task["seed"], audit)

    def cached(self, result_id: bytes, seed: bytes, audit: bool) -> str | None:
        hit = self._cache.get((result_id, bytes(seed)))
        if hit is None:
            return None
        audited, verdict = hit
        if audited == audit:
            return verdict
        if audited:  # an audited verdict also answers the unaudited question
            # If only the re-training failed, everything before it passed.
            return "" if verdict == "bad-result-audit" else verdict
        # Unaudited: a failure before the audit stands; a pass says nothing
        # about the audit.
        return verdict or None

    def artifact_unfetchable(self, result_id: bytes) -> bool:
        """True if the last check of this result found nobody serving its
        artifact (a fetch timeout: not our own daemon being down)."""
        return result_id in self._unfetchable

    def _remember(self, req: Request, verdict: str) -> None:
        self._cache[req.key] = (req.audit, verdict)
        self._cache.move_to_end(req.key)
        while len(self._cache) > CACHE_MAX:
            self._cache.popitem(last=False)

    # -- resolving ---------------------------------------------------------------------

    def take_wanted(self) -> list[Request]:
        reqs = list(self.wanted.values())
        self.wanted.clear()
        return reqs

    def want_again(self, reqs: Iterable[Request]) -> None:
        """Ask again, on a later pass, for what is still unanswered."""
        for r in reqs:
            if self.cached(r.tx.id, r.seed, r.audit) is None:
                self.wanted.setdefault((r.tx.id, r.seed, r.audit), r)

    async def resolve(self, reqs: Iterable[Request]) -> int:
        """Verify ``reqs`` in parallel; returns how many are still missing data."""
        results = await asyncio.gather(*(self.check(r) for r in reqs))
        return sum(1 for v in results if v is None)

    def close(self) -> None:
        """Cancel checks in flight (shared by their waiters, so no caller's
        cancellation ends them): the node is stopping."""
        for fut in list(self._inflight.values()):
            fut.cancel()
        for download in list(self._detached):
            download.cancel()

    async def check(self, req: Request, background: bool = False) -> str | None:
        """The verdict for one request: "" valid, a reason, None = data missing.
        ``background``: a gossiped result, which yields to block verification
        and training (and is preempted by the former)."""
        have = self.cached(req.tx.id, req.seed, req.audit)
        if have is not None:
            return have
        key = (req.tx.id, req.seed, req.audit)
        fut = self._inflight.get(key)
        if fut is None:
            fut = asyncio.ensure_future(self._check(req, background))
            self._inflight[key] = fut
            fut.add_done_callback(lambda f: self._forget(key, f))
        # Shared by every waiter: one waiter's cancellation must not end it,
        # but once the last waiter is gone (a banned sender's check) the
        # work is cancelled, download included, and forgotten at once, so a
        # later request for the same result starts afresh instead of joining
        # a check that is being cancelled.
        self._waiters[key] = self._waiters.get(key, 0) + 1
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # this waiter was cancelled
            return None  # the shared check was (node stopping): nothing proven
        finally:
            left = self._waiters.pop(key) - 1
            if left:
                self._waiters[key] = left
            elif not fut.done():
                fut.cancel()
                self._forget(key, fut)

    def _forget(self, key: tuple[bytes, bytes, bool], fut: asyncio.Future[str | None]) -> None:
        if self._inflight.get(key) is fut:
            del self._inflight[key]

    async def _fetch_then_take_worker(self, cid: str, background: bool) -> bytes | None:
        """The artifact's bytes with a worker slot taken (the caller releases
        it), or None if the artifact is too large (no slot taken).

        Fetching happens outside the worker slots, so downloads overlap with
        other results' CPU work; the fetch slot is held until a worker slot
        is free, which bounds the artifacts held in memory.
        """
        slots = self._fetching_background if background else self._fetching
        await slots.acquire()
        held = True
        try:
            if background:
                download = asyncio.ensure_future(
                    self._store.fetch(cid, max_bytes=MAX_ARTIFACT_BYTES)
                )
                try:
                    path = await asyncio.shield(download)
                except asyncio.CancelledError:
                    if not download.done():
                        held = False  # the download keeps its slot until it ends
                        self._detach(download, slots)
                    raise
            else:
                path = await self._store.fetch(cid, max_bytes=MAX_ARTIFACT_BYTES)
            if path.stat().st_size > MAX_ARTIFACT_BYTES:
                return None
            artifact = await asyncio.to_thread(path.read_bytes)
            await (self._background if background else self._parallel).acquire()
        except DatasetTooLarge:
            return None
        finally:
            if held:
                slots.release()
        return artifact

    def _detach(self, download: asyncio.Future[Path], slots: asyncio.Semaphore) -> None:
        """A cancelled gossiped check (its sender banned) leaves its download
        to end by itself (done, failed, or the IPFS timeout): aborting a
        download of embedded Kubo restarts the daemon, which stalls every
        fetch and add of this node, our own training's included, for
        seconds; an attacker's bans would buy one restart each. The download
        keeps its background fetch slot meanwhile, so these stay bounded."""
        self._detached.add(download)

        def ended(d: asyncio.Future[Path]) -> None:
            self._detached.discard(d)
            slots.release()
            if not d.cancelled():
                d.exception()  # retrieved: nobody waits for it any more

        download.add_done_callback(ended)

    async def _check(self, req: Request, background: bool) -> str | None:
        tx = req.tx
        failed, not_before = self._failures.get(req.key, (0, 0.0))
        if failed >= MAX_WORKER_FAILURES and (background or self._clock() < not_before):
            # Crashed or timed out a worker each time: whatever it is (a
            # model that breaks scikit-learn, a host too slow), re-running it
            # at once only burns workers. Pending, not false: nothing was
            # proven. A block's request retries after the backoff.
            return None
        try:
            spec = TaskSpec.from_wire(req.spec_wire)
        except Exception:  # the chain accepted this spec; unreachable in practice
            self._remember(req, "bad-result-task")
            return "bad-result-task"
        try:
            artifact = await self._fetch_then_take_worker(tx.model_cid, background)
            if artifact is None:
                verdict = "bad-result-model"
            else:
                try:
                    claim = ResultClaim(
                        spec,
                        tx.task_id,
                        req.seed,
                        tx.trainer,
                        tx.round,
                        artifact,
                        tx.metric,
                        claimed_train_rows=tx.train_rows,
                        audit=req.audit,
                    )
                    await self._checker.verify(claim, background)
                finally:
                    (self._background if background else self._parallel).release()
                verdict = ""
        except ValidationError as exc:
            if isinstance(exc, MissingDataError) or exc.reason in LOCAL_LIMITS:
                # Not provably false: data missing, or over this node's
                # own limits (other nodes may verify it; we wait).
                self.stats.pending += 1
                log.info("result %s cannot be verified now: %s", tx.id.hex()[:16], exc)
                return None
            verdict = exc.reason
        except DatasetError as exc:
            # Only the artifact is fetched here (the checker reports a
            # missing dataset as MissingDataError).
            self.stats.pending += 1
            if isinstance(exc, FetchTimeout):
                self.stats.unfetchable += 1
                self._unfetchable[tx.id] = None
                self._unfetchable.move_to_end(tx.id)
                while len(self._unfetchable) > CACHE_MAX:
                    self._unfetchable.popitem(last=False)
            log.info("result %s waits for its model: %s", tx.id.hex()[:16], exc)
            return None
        except (TrainingError, OSError) as exc:
            # A timeout, a crashed worker or a cache file evicted under us
            # is our problem, not proof the result is false: try again
            # later rather than split the network.
            self.stats.pending += 1
            if isinstance(exc, TrainingError) and exc.reason in WORKER_FAILURES:
                failures = self._failures.pop(req.key, (0, 0.0))[0] + 1
                delay = 0.0
                if failures >= MAX_WORKER_FAILURES:
                    over = failures - MAX_WORKER_FAILURES
                    delay = min(FAILED_RETRY_MAX, FAILED_RETRY_FIRST * 2.0 ** min(over, 32))
                self._failures[req.key] = (failures, self._clock() + delay)
                while len(self._failures) > CACHE_MAX:
                    self._failures.popitem(last=False)
                if failures >= MAX_WORKER_FAILURES:
                    log.warning(
                        "result %s: worker failed %d times (%s); stays pending, a block's"
                        " request retries it in %.0f s",
                        tx.id.hex()[:16],
                        failures,
                        exc,
                        delay,
                    )
                    return None
            log.warning("verifying result %s failed: %s", tx.id.hex()[:16], exc)
            return None
        self._unfetchable.pop(tx.id, None)
        # A worker got through: failures before say nothing about the next
        # check of this result (its full audit after the cheap checks).
        self._failures.pop(req.key, None)
        self._remember(req, verdict)
        if verdict:
            self.stats.failed += 1
            log.warning("result %s is false: %s", tx.id.hex()[:16], verdict)
        else:
            self.stats.verified += 1
        return verdict
