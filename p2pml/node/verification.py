"""VerificationService: gets blocks that wait for result verdicts connected,
and checks gossiped results before the node pools and relays them.

Blocks: the chain asks the :class:`~p2pml.node.verifier.Verifier` for
verdicts while it connects a block; an unknown verdict parks the block
("pending data") and records the request. This service's loop answers those
requests in worker processes, then retries the waiting blocks, backing off
while data stays missing, and forgets a block that waited too long.

Gossiped results: re-run in the background, then pooled and relayed; a
false one costs its sender (honest nodes relay only results they verified).
What a peer can make us re-run is bounded three ways: at most
``MAX_RESULT_CHECKS`` at once over all peers, a per-peer budget of worker
seconds (a token bucket charged with each check's wall time, failed
fetches included), and a ban cancels every check the peer still has queued.
A result whose artifact nobody serves (the fetch gave up at
``ipfs.fetch_start_timeout``, or the CID failed recently) costs its sender
``UNFETCHABLE_ARTIFACT_SECONDS`` of budget on top of the time it took, but no
score: an honest relay fetched the artifact to verify it, yet our IPFS node
may not reach the one that has it, and scores never decay (a penalty per
such result would in time ban an honest peer for how our IPFS swarm is wired).
Gossiped checks wait for a worker behind block verification and our own
training, and a block's check preempts one when no worker is free
(:mod:`p2pml.ml.scheduling`), with one worker too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable

from p2pml.chain.index import ChainUpdate
from p2pml.chain.types import ResultTx
from p2pml.errors import MissingDataError, ValidationError
from p2pml.node.budget import PeerBudget
from p2pml.node.ports import (
    ChainAccess,
    Gossip,
    PendingVerdicts,
    ResultAdmission,
    Spawn,
    TxRelay,
)

log = logging.getLogger(__name__)

# How long a block may wait for result data before it is dropped from memory.
MAX_WAIT_SECONDS = 600.0
RETRY_MIN, RETRY_MAX = 1.0, 30.0
MAX_RESULT_CHECKS = 256  # gossiped results being re-run at once (more are dropped)
RESULT_CHECK_SLOTS = 2
FALSE_RESULT_PENALTY = 100
# Worker seconds a peer may make us spend on its gossiped results: a burst of
# two minutes, then half a worker's time (an honest relay of a busy network
# stays well inside; a flood of re-signed models waits for its refill).
PEER_CHECK_BURST_SECONDS = 120.0
PEER_CHECK_SECONDS_PER_SECOND = 0.5
# Charged when a check starts (settled with its real cost when it ends), so
# a burst of results cannot all start before the first one is charged.
CHECK_RESERVE_SECONDS = 10.0
RECENT_BANS = 4_096
# What naming an artifact nobody serves costs the sender, on top of the
# check's wall time: four such results spend the burst, then one per minute.
UNFETCHABLE_ARTIFACT_SECONDS = 30.0

#: Refusals that say nothing bad about the sender.
HARMLESS = frozenset(
    {
        "duplicate",
        "time-too-new",
        "prev-unknown",
        "pending-data",
        "mempool-full",
        "result-task-closed",  # a race with the deadline, not a lie
        "duplicate-task",
        "duplicate-result",
        "duplicate-transfer",  # already in a block the sender has not seen yet
        "insufficient-funds",  # may be funded on a branch we have not seen
        "result-task-unknown",  # may be on a branch we have not seen
        "result-wrong-seed",  # trained for the task as mined on another branch
        # Bond races: a bond or unbond in a block the sender has not seen.
        "duplicate-bond",
        "bond-exists",
        "bond-unbonding",
        "bond-too-young",  # bonded on a branch where it is old enough
        "no-bond",  # bonded on a branch we have not seen
        # Challenge races: the result, the bond or another challenge is on a
        # branch (or in a block) the sender has not seen; the pool is full.
        "challenge-unknown-result",
        "challenge-no-bond",
        "challenge-too-late",
        "duplicate-challenge",
        "too-many-challenges",
        # Attestations: committees and windows follow the branch's beacon.
        "attest-unknown-result",
        "attest-too-early",
        "attest-too-late",
        "attest-not-selected",
        "not-in-committee",
        "duplicate-attest",
        # Federated rounds move on: an update may arrive after its round's end.
        "update-task-closed",
        "update-task-unknown",
        "update-wrong-seed",
        "update-wrong-base",  # trained from G_r of another branch (round >= 1)
        "update-round-late",
        "update-round-full",
        "bad-update-round",
        "duplicate-update",
    }
)


class VerificationService:
    def __init__(
        self,
        chain: ChainAccess,
        verifier: PendingVerdicts,
        results: ResultAdmission,
        relay: TxRelay,
        gossip: Gossip,
        spawn: Spawn,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._chain = chain
        self.verifier = verifier
        self._results = results
        self._relay = relay
        self._gossip = gossip
        self._spawn = spawn
        self._clock = clock
        self._wake = asyncio.Event()
        self._waiting_since: dict[bytes, float] = {}
        self._result_checks: set[bytes] = set()
        self._result_slots = asyncio.Semaphore(RESULT_CHECK_SLOTS)
        self._retrying = False
        self.budget = PeerBudget(PEER_CHECK_SECONDS_PER_SECOND, PEER_CHECK_BURST_SECONDS, clock)
        self._by_peer: dict[str, set[asyncio.Task[None]]] = {}
        self._banned: OrderedDict[str, None] = OrderedDict()
        #: gossiped result checks by outcome, for /metrics
        self.counts: Counter[str] = Counter()
        chain.on_update(self._on_update)
        gossip.on_banned(self._cancel_peer)

    # -- blocks waiting for verdicts ---------------------------------------------------

    def _on_update(self, update: ChainUpdate) -> None:
        if update.waiting or self.verifier.wanted:
            now = self._clock()
            for h, _cid in update.waiting:
                self._waiting_since.setdefault(h, now)
            if not self._retrying:  # our own retries never wake us
                self._wake.set()

    async def run(self) -> None:
        """The verify loop (a supervisor task). New blocks wake it; while data
        is missing it retries with backoff (its own retries never wake it, so
        a block that cannot be verified does not spin it)."""
        backoff = RETRY_MIN
        while True:
            timeout = backoff if self._chain.chain.waiting else None
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                backoff = await self.verify_pass(backoff)
            except Exception:  # a bug must not take the node down: log, back off
                log.exception("verification pass failed")
                backoff = RETRY_MAX

    async def verify_pass(self, backoff: float) -> float:
        """Answer what waiting blocks asked, retry them; the next backoff."""
        asked = set(self.verifier.wanted)
        reqs = self.verifier.take_wanted()
        missing = await self.verifier.resolve(reqs) if reqs else 0
        chain = self._chain.chain
        if not chain.waiting:
            return RETRY_MIN
        before = chain.tip.hash
        self._retrying = True
        try:
            update = await self._chain.retry_waiting()
        finally:
            self._retrying = False
        # A block connects only up to its first unknown verdict, so a retry
        # that asks for verdicts not asked before got further into it: go
        # on at once (a block of k new results would otherwise take k
        # doubling backoffs, over a minute for eight).
        further = any(k not in asked for k in self.verifier.wanted)
        progressed = chain.tip.hash != before or bool(update.rejected) or further
        if missing:
            self.verifier.want_again(reqs)
        self._expire_waiting()
        return RETRY_MIN if progressed else min(backoff * 2, RETRY_MAX)

    def _expire_waiting(self) -> None:
        now = self._clock()
        waiting = self._chain.chain.waiting
        hashes = {e.hash for e in waiting}
        for h in [h for h in self._waiting_since if h not in hashes]:
            del self._waiting_since[h]
        for e in list(waiting):
            since = self._waiting_since.setdefault(e.hash, now)
            if now - since > MAX_WAIT_SECONDS:
                waiting.discard(e)
                self._waiting_since.pop(e.hash, None)
                log.warning(
                    "block %s waited %.0fs for data: dropped from memory",
                    e.hash.hex()[:16],
                    now - since,
                )

    # -- gossiped results ------------------------------------------------------------

    def check_gossiped_result(self, tx: ResultTx, peer_id: str) -> bool:
        """Re-run a gossiped result in the background; False if refused now
        (overloaded, already at it, or the peer's budget is spent: the
        result can be sent again, by it later or by another peer)."""
        if peer_id in self._banned:
            self.counts["refused-banned"] += 1
            return False
        if len(self._result_checks) >= MAX_RESULT_CHECKS or tx.id in self._result_checks:
            self.counts["refused-busy"] += 1
            return False
        if not self.budget.allows(peer_id):
            self.counts["refused-budget"] += 1
            return False
        task = self._spawn(self._check_result(tx, peer_id), "verify-result")
        if task is None:
            return False
        self.budget.charge(peer_id, CHECK_RESERVE_SECONDS)
        self._result_checks.add(tx.id)
        self._by_peer.setdefault(peer_id, set()).add(task)
        task.add_done_callback(lambda t: self._forget_job(peer_id, t, tx.id))
        return True

    def _forget_job(self, peer_id: str, task: asyncio.Task[None], tx_id: bytes) -> None:
        self._result_checks.discard(tx_id)
        jobs = self._by_peer.get(peer_id)
        if jobs is not None:
            jobs.discard(task)
            if not jobs:
                del self._by_peer[peer_id]

    def _cancel_peer(self, peer_id: str) -> None:
        """A banned peer's queued and running checks are work nobody needs."""
        self._banned[peer_id] = None
        self._banned.move_to_end(peer_id)
        while len(self._banned) > RECENT_BANS:
            self._banned.popitem(last=False)
        for task in list(self._by_peer.get(peer_id, ())):
            task.cancel()
        self.budget.forget(peer_id)

    async def _check_result(self, tx: ResultTx, peer_id: str) -> None:
        async with self._result_slots:
            t0 = self._clock()
            try:
                await self._results.submit_result(tx, peer_id, background=True)
            except MissingDataError:
                if self.verifier.artifact_unfetchable(tx.id):
                    self.counts["unfetchable"] += 1
                    self.budget.charge(peer_id, UNFETCHABLE_ARTIFACT_SECONDS)
                    return
                self.counts["pending"] += 1
                return  # charged below, no penalty (nothing is proven)
            except ValidationError as exc:
                self.counts["false" if exc.reason not in HARMLESS else "harmless"] += 1
                if exc.reason not in HARMLESS:
                    reason = f"invalid-result:{exc.reason}"
                    self._gossip.penalise(peer_id, reason, FALSE_RESULT_PENALTY)
                return
            finally:
                # Settle the reservation with what the check really cost.
                self.budget.charge(peer_id, self._clock() - t0 - CHECK_RESERVE_SECONDS)
        self.counts["valid"] += 1
        await self._relay.tx(tx)
