"""ChallengeService: challenges (fraud proofs) of this node and from gossip,
the full audits disputes need, and the optional watchtower.

* A dispute (opened by a challenge or by a committee member's failing
  attestation) resolves ``dispute_delay`` blocks later, and every node must
  know the disputed result's full-audit verdict by then (docs/consensus.md
  "Disputes"): at each tip change the service starts that audit for every
  result the connected blocks put under dispute, so the verdict is
  in the verifier's cache when the resolving block connects (if not, that
  block waits for it like any block lacking data).
* Watchtower (``[verification] challenge_bad``): the current winners of the
  tasks whose results this node saw connected are fully audited once each,
  in the background, while their task's payout can still wait for a
  dispute; one that fails is challenged with this node's key (its bond is
  the stake). Only winners: they are what a cheater gains from, and a
  challenge moves the bounty only when it voids one. Tasks seen before a
  restart are not watched again.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

from p2pml.chain.disputes import result_tx
from p2pml.chain.index import ChainUpdate
from p2pml.chain.taskkeys import result_key, task_key
from p2pml.chain.types import ChallengeTx, ResultTx
from p2pml.crypto import Identity
from p2pml.errors import ValidationError
from p2pml.node.mempool import Mempool
from p2pml.node.pool_entry import PoolEntry
from p2pml.node.ports import ChainAccess, ResultVerifier, Spawn, TxRelay
from p2pml.node.verifier import Request

log = logging.getLogger(__name__)

MAX_WATCHED_TASKS = 10_000
RESULT_PREFIX = result_key(b"")
# Refusals of our own challenge that a later tip may lift: a full block or
# pool, or our bond's stakes all held by open challenges until they resolve.
RETRY_LATER = frozenset({"too-many-challenges", "mempool-full", "challenge-no-bond"})


class ChallengeService:
    def __init__(
        self,
        identity: Identity,
        chain: ChainAccess,
        mempool: Mempool,
        verifier: ResultVerifier,
        relay: TxRelay,
        on_pool_change: Callable[[], None],
        spawn: Spawn,
        watchtower: bool = False,
    ) -> None:
        self._identity = identity
        self._chain = chain
        self._verifier = verifier
        self._entry = PoolEntry(identity, chain, mempool, verifier, relay, on_pool_change)
        self._spawn = spawn
        self.watchtower = watchtower
        self._watched: dict[bytes, None] = {}  # task ids, insertion ordered
        # (result id, why) audited or being audited: a dispute's audit runs
        # even if the watchtower's ran (it then answers from the cache).
        self._audited: set[tuple[bytes, str]] = set()
        #: audits by why and outcome, for the admin API
        self.counts: Counter[str] = Counter()
        chain.on_tip_changed(self._tip_changed)

    async def challenge(self, result_id: bytes, fee: int) -> ChallengeTx:
        """Sign a challenge of ``result_id`` with this node's key, pool and
        gossip it; ValidationError with the rule's reason if it may not enter."""

        def unsigned(challenger: bytes, nonce: int) -> ChallengeTx:
            return ChallengeTx(challenger=challenger, result_id=result_id, fee=fee, nonce=nonce)

        return await self._entry.publish_own(unsigned, self.submit)

    async def submit(self, tx: ChallengeTx, source: str) -> None:
        """Pool a challenge (ValidationError with the reason if it may not enter)."""
        self._entry.admit(tx)
        self._entry.entered(
            f"challenge {tx.id.hex()[:16]} of result {tx.result_id.hex()[:16]}", source
        )

    # -- audits ------------------------------------------------------------------------

    def _tip_changed(self, update: ChainUpdate) -> None:
        chain = self._chain.chain
        # Every dispute opened here, whoever opened it (a challenge, or a
        # committee member's failing attestation): its result record is
        # among this update's state writes, with status "disputed".
        for key, rec in update.state_changes.items():
            if key.startswith(RESULT_PREFIX) and rec is not None and rec["status"] == "disputed":
                self._start_audit(key[len(RESULT_PREFIX) :], "dispute")
        if self.watchtower:
            for h, _undo in update.connected:
                block = chain.get_block(h)
                if block is None:
                    continue
                for tx in block.txs[1:]:
                    if isinstance(tx, ResultTx):
                        self._watched[tx.task_id] = None
        while len(self._watched) > MAX_WATCHED_TASKS:
            del self._watched[next(iter(self._watched))]
        if self.watchtower:
            self._watch()

    def _watch(self) -> None:
        state = self._chain.chain.state
        height = self._chain.chain.height
        delay = self._chain.params.dispute_delay
        for tid in list(self._watched):
            task = state.get(task_key(tid))
            if task is None or (
                task["payout_at"] is not None and height + 1 + delay > task["payout_at"]
            ):
                del self._watched[tid]  # gone on a reorg, or past any dispute
                continue
            for _trainer, rid in task["winners"]:
                self._start_audit(bytes(rid), "watch")

    def _start_audit(self, rid: bytes, why: str) -> None:
        if (rid, why) in self._audited:
            return
        self._audited.add((rid, why))
        if self._spawn(self._audit(rid, why), f"audit-{why}") is None:
            self._audited.discard((rid, why))  # the node is stopping

    async def _audit(self, rid: bytes, why: str) -> None:
        state = self._chain.chain.state
        rec = state.get(result_key(rid))
        task = state.get(task_key(rec["task"])) if rec is not None else None
        if rec is None or task is None:
            self._audited.discard((rid, why))  # reorged away meanwhile: may come back
            return
        tx = result_tx(rec, task["seed"])
        req = Request(tx, task["spec"], bytes(task["seed"]), True)
        # A dispute's audit gates a block soon: it goes ahead of gossip work.
        verdict = await self._verifier.check(req, background=why == "watch")
        if verdict is None:
            self.counts[f"{why}-pending"] += 1
            self._audited.discard((rid, why))  # data missing: try again at a later tip
            return
        self.counts[f"{why}-{'false' if verdict else 'valid'}"] += 1
        if not verdict or why != "watch":
            return
        log.warning("result %s fails its audit (%s): challenging it", rid.hex()[:16], verdict)
        try:
            tx_c = await self.challenge(rid, self._chain.params.min_challenge_fee)
        except ValidationError as exc:
            self.counts["challenge-refused"] += 1
            if exc.reason in RETRY_LATER:
                log.info("challenge of %s waits: %s", rid.hex()[:16], exc)
                self._audited.discard((rid, why))  # the verdict is cached: a cheap retry
            else:
                log.warning("challenge of %s refused: %s", rid.hex()[:16], exc)
            return
        self.counts["challenged"] += 1
        log.info("challenged result %s (challenge %s)", rid.hex()[:16], tx_c.id.hex()[:16])
