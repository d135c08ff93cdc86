"""AuditService: this node's part in audit committees, and attestations from gossip.

Which results are re-trained, and by whom, the chain decides from a beacon
block (:mod:`p2pml.chain.audits`). At every tip change this service looks
at the results whose beacon is one of the last ``attest_window`` blocks
(the ``aq:<height>`` queues: O(window) reads, no scan) and, for each whose
committee holds this node's key and that it has not attested yet, fully
audits the result through the verifier (in a worker process, never on the
event loop), then signs and gossips an :class:`AttestTx` with the verdict.
Nodes outside a committee re-train nothing. A result whose data cannot be
fetched now is tried again at the next tip, while its window lasts.

An attestation from gossip that comes before its beacon block
(``attest-too-early``) or its result's block (``attest-unknown-result``) is
held in a bounded buffer (:mod:`p2pml.node.attest_orphans`) and pooled,
then relayed, once the tip reaches them; without it, a pool that gossip
outran never got it.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

from p2pml.chain.audits import audit_queue_key, eligible_auditor
from p2pml.chain.bonds import bond_key
from p2pml.chain.index import ChainUpdate
from p2pml.chain.taskkeys import result_key, task_key
from p2pml.chain.types import AttestTx, ResultTx
from p2pml.crypto import Identity
from p2pml.errors import MissingDataError, ValidationError
from p2pml.node.attest_orphans import AttestOrphans
from p2pml.node.mempool import Mempool
from p2pml.node.pool_entry import PoolEntry
from p2pml.node.ports import ChainAccess, ResultVerifier, Spawn, TxRelay
from p2pml.node.verifier import Request

log = logging.getLogger(__name__)

SENT_MAX = 10_000  # result ids we attested, remembered (far above a window's worth)
# Refusals of a peer's attestation that a later tip may lift: it is held.
EARLY = frozenset({"attest-too-early", "attest-unknown-result"})


class AuditService:
    def __init__(
        self,
        identity: Identity,
        chain: ChainAccess,
        mempool: Mempool,
        verifier: ResultVerifier,
        relay: TxRelay,
        on_pool_change: Callable[[], None],
        spawn: Spawn,
        enabled: bool,
        fee: int = 0,
    ) -> None:
        self._identity = identity
        self._chain = chain
        self._verifier = verifier
        self._spawn = spawn
        self._entry = PoolEntry(identity, chain, mempool, verifier, relay, on_pool_change)
        self.enabled = enabled
        self.fee = fee
        self._running: set[bytes] = set()  # result ids being audited
        self._sent: OrderedDict[bytes, None] = OrderedDict()
        #: audits by outcome ("passed", "failed", "pending"), for /metrics
        self.counts: Counter[str] = Counter()
        self.orphans = AttestOrphans()
        self._relay = relay
        # Held attestations are retried whether or not this node attests.
        chain.on_tip_changed(self._retry_orphans)
        if enabled:
            chain.on_tip_changed(self._tip_changed)

    # -- our committee seats -------------------------------------------------------------

    def due(self) -> Iterator[tuple[bytes, dict[str, Any]]]:
        """(result id, record) of the results this key should audit now: its
        committee holds us, the next block is inside its attest window, and
        we have not attested (in the chain, or sent)."""
        chain = self._chain.chain
        state, me = chain.state, self._identity.public_key
        nxt = chain.height + 1
        first = max(1, nxt - self._chain.params.attest_window)
        for beacon_at in range(first, nxt):
            for rid in state.get(audit_queue_key(beacon_at), []):
                rid = bytes(rid)
                rec = state.get(result_key(rid))
                if rec is None or rid in self._running or rid in self._sent:
                    continue
                audit = rec["audit"]
                if not audit["selected"] or nxt > audit["until"]:
                    continue
                if me not in [bytes(k) for k in audit["committee"]]:
                    continue
                if any(bytes(a[0]) == me for a in rec["attestations"]):
                    continue
                yield rid, rec

    def start(self) -> None:
        """At start: seats drawn while we were down whose window is still open."""
        if self.enabled:
            self._schedule()

    def _tip_changed(self, _update: ChainUpdate) -> None:
        self._schedule()

    def _schedule(self) -> None:
        for rid, rec in list(self.due()):
            self._running.add(rid)
            if self._spawn(self._audit(rid, rec), "audit") is None:
                self._running.discard(rid)  # the node is stopping
                return

    async def _audit(self, rid: bytes, rec: dict[str, Any]) -> None:
        try:
            tx = self._result_tx(rid, bytes(rec["block"]))
            task = self._chain.chain.state.get(task_key(bytes(rec["task"])))
            if tx is None or task is None:
                log.warning("audit of %s: result or task not found", rid.hex()[:16])
                return
            req = Request(tx, task["spec"], bytes(task["seed"]), True)
            verdict = await self._verifier.check(req)
            if verdict is None:
                self.counts["pending"] += 1
                log.info("audit of %s waits for its data", rid.hex()[:16])
                return  # tried again at the next tip, while the window lasts
            self.counts["passed" if not verdict else "failed"] += 1
            try:
                sent = await self.attest(rid, passed=not verdict)
            except ValidationError as exc:  # e.g. the window ended meanwhile
                log.warning("attestation of %s refused: %s", rid.hex()[:16], exc)
                return
            log.info(
                "attested result %s: %s (attestation %s)",
                rid.hex()[:16],
                "pass" if not verdict else f"fail ({verdict})",
                sent.id.hex()[:16],
            )
        finally:
            self._running.discard(rid)

    def _result_tx(self, rid: bytes, block_hash: bytes) -> ResultTx | None:
        """The result as its block carries it (the verifier re-runs the
        transaction itself, and caches verdicts by its id)."""
        block = self._chain.chain.get_block(block_hash)
        if block is None:
            return None
        for tx in block.txs:
            if isinstance(tx, ResultTx) and tx.id == rid:
                return tx
        return None

    # -- attestations ---------------------------------------------------------------------

    async def attest(self, rid: bytes, passed: bool) -> AttestTx:
        """Sign our attestation of ``rid``, pool and gossip it
        (ValidationError with the rule's reason if it may not enter)."""

        def unsigned(attester: bytes, _nonce: int) -> AttestTx:
            return AttestTx(attester=attester, result_id=rid, passed=passed, fee=self.fee)

        tx = await self._entry.publish_own(unsigned, self.submit)
        self._sent[rid] = None
        while len(self._sent) > SENT_MAX:
            self._sent.popitem(last=False)
        return tx

    async def submit(self, tx: AttestTx, source: str) -> None:
        """Pool an attestation (ValidationError with the reason if it may not
        enter; one from a peer that is early, for its beacon or for the block
        of its result, is also held and pooled once they connect)."""
        try:
            self._entry.admit(tx)
        except ValidationError as exc:
            if exc.reason in EARLY and source != "api":
                self._hold(tx, source, exc.reason)
            raise
        self._entered(tx, source)

    def _entered(self, tx: AttestTx, source: str) -> None:
        verdict = "pass" if tx.passed else "fail"
        self._entry.entered(
            f"attestation ({verdict}) of {tx.result_id.hex()[:16]} by {tx.attester.hex()[:16]}",
            source,
        )

    # -- attestations early for their beacon ----------------------------------------------

    def _hold(self, tx: AttestTx, peer: str, reason: str, expires_at: int | None = None) -> None:
        """Buffer ``tx``, refused as early (so its signature was checked), if
        its attester may sit on the committee: a bonded key, not the trainer.
        Early for its beacon: held until the tip reaches it. Its result's
        block unknown here (we lag, or that block waits for its data): tried
        at every tip until its result's window could have ended."""
        state, params = self._chain.chain.state, self._chain.params
        tip = self._chain.chain.height
        rec = state.get(result_key(tx.result_id))
        if reason == "attest-too-early" and rec is not None:
            ready_at = int(rec["beacon_at"])
            if tx.attester == bytes(rec["trainer"]):
                return
            expires = ready_at + params.attest_window
        elif reason == "attest-unknown-result" and rec is None:
            # The result's block is one we lack: at the earliest the next. Held
            # again at each tip while unknown, never past its first deadline.
            ready_at = tip + 1
            expires = tip + 1 + params.audit_delay + params.attest_window
            if expires_at is not None:
                expires = min(expires, expires_at)
        else:  # only pooled here (its beacon is further off), or a reorg raced
            return
        if not eligible_auditor(state.get(bond_key(tx.attester)), params, ready_at):
            return
        if self.orphans.add(tx, peer, ready_at, expires):
            log.debug(
                "attestation %s held (%s) until height %d", tx.id.hex()[:16], reason, ready_at
            )

    def _retry_orphans(self, _update: ChainUpdate) -> None:
        for o in self.orphans.take_ready(self._chain.chain.height):
            try:
                self._entry.admit(o.tx)
            except ValidationError as exc:
                if exc.reason in EARLY:  # still early (the result's block came, not its beacon)
                    self._hold(o.tx, o.peer, exc.reason, o.expires_at)
                else:
                    log.debug("held attestation %s refused: %s", o.tx.id.hex()[:16], exc)
                continue
            except MissingDataError:
                continue
            self._entered(o.tx, o.peer)
            # Gossip dropped it on the way here (we ignored it): send it on.
            self._spawn(self._relay.tx(o.tx), "relay-attest")
