"""GossipHandler: the node's side of the network boundary (``ChainBackend``).

Blocks and headers go to the chain manager (one lock, persisted before the
next); tasks go to the task service, transfers to the transfer service,
bonds and unbonds to the bond service, attestations to the audit service,
challenges to the challenge service;
results are checked cheaply and, when their verdict is unknown, re-run in
the background before they are relayed (a follower ignores them).
Reject reasons become gossip verdicts: only a peer at fault is penalised;
late, duplicate, orphan and future-dated messages are ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from p2pml.chain.index import Status
from p2pml.chain.state import ChainState
from p2pml.chain.types import (
    AttestTx,
    Block,
    BlockHeader,
    BondTx,
    ChallengeTx,
    ResultTx,
    TaskTx,
    TransferTx,
    UnbondTx,
    UpdateTx,
)
from p2pml.errors import MissingDataError, ValidationError
from p2pml.net.backend import (
    BlockOutcome,
    BlockStatus,
    ChainStateReads,
    ChainStatus,
    HeadersOutcome,
    Verdict,
)
from p2pml.node.audits import AuditService
from p2pml.node.bonds import BondService
from p2pml.node.budget import PeerBudget
from p2pml.node.chain_manager import ChainManager
from p2pml.node.challenges import ChallengeService
from p2pml.node.federated import FederatedService
from p2pml.node.ports import Gossip
from p2pml.node.relay import Relay
from p2pml.node.tasks import TaskService
from p2pml.node.transfers import TransferService
from p2pml.node.verification import HARMLESS, VerificationService

log = logging.getLogger(__name__)

# Harmless refusals (duplicates, unknown tasks, unfunded tasks...) cost us
# rule checks and prove nothing: a peer gets a budget of them, and each one
# past it costs a small penalty (ten past it: banned).
HARMLESS_PER_SECOND = 2.0
HARMLESS_BURST = 200.0
HARMLESS_FLOOD_PENALTY = 10


class GossipHandler(ChainStateReads):
    def __init__(
        self,
        chain: ChainManager,
        tasks: TaskService,
        verification: VerificationService,
        relay: Relay,
        gossip: Gossip,
        transfers: TransferService,
        judge_results: bool = True,
        bonds: BondService | None = None,
        challenges: ChallengeService | None = None,
        audits: AuditService | None = None,
        federated: FederatedService | None = None,
    ) -> None:
        self._mgr = chain
        self._federated = federated  # None: updates from gossip are ignored
        self._tasks = tasks
        self._transfers = transfers
        self._bonds = bonds  # None: bonds and unbonds from gossip are ignored
        self._challenges = challenges  # None: challenges from gossip are ignored
        self._audits = audits  # None: attestations from gossip are ignored
        # False on a follower: it neither re-runs nor relays gossiped results.
        self._judge_results = judge_results
        self._verification = verification
        self._relay = relay
        self._gossip = gossip
        self.harmless = PeerBudget(HARMLESS_PER_SECOND, HARMLESS_BURST)

    @property
    def chain(self) -> ChainState:
        return self._mgr.chain

    def status(self) -> ChainStatus:
        tip = self.chain.tip
        return ChainStatus(self._mgr.params.genesis_hash, tip.hash, tip.height, tip.chain_work)

    def _state(self) -> ChainState:
        return self._mgr.chain

    def get_blocks(self, hashes: Sequence[bytes]) -> list[Block]:
        """Only blocks we have connected: never serve what we have not validated."""
        out = []
        for h in hashes:
            e = self.chain.entry(h)
            if e is None or e.status is not Status.VALID:
                continue
            b = self.chain.get_block(h)
            if b is not None:
                out.append(b)
        return out

    async def submit_block(
        self, block: Block, from_peer: str | None, requested: bool = True
    ) -> BlockOutcome:
        """Gossip relays a block only if we connected it: a block we merely
        stored (a lighter side branch, or one waiting for result data) has
        not been fully validated, and relaying it could get us banned."""
        update = await self._mgr.submit_block(block, from_peer or "local", requested)
        if update.error is not None:
            reason = update.error.reason
            if reason == "duplicate":
                return BlockOutcome(BlockStatus.DUPLICATE, reason)
            return BlockOutcome(BlockStatus.INVALID, reason)
        if update.orphaned:
            return BlockOutcome(BlockStatus.ORPHAN)
        if update.needs_ancestors:
            # A branch is ahead now, but an ancestor has only its header (it
            # came while that branch was lighter): the sender has the bodies.
            return BlockOutcome(BlockStatus.ORPHAN, "missing-ancestors")
        if update.low_work:
            return BlockOutcome(BlockStatus.LOW_WORK, "low-work")
        own = [r for h, r in update.rejected if h == block.hash]
        if own:
            return BlockOutcome(BlockStatus.INVALID, own[0])
        e = self.chain.entry(block.hash)
        if e is None or not self.chain.in_active_chain(e):
            why = "pending-data" if update.waiting else "duplicate"
            return BlockOutcome(BlockStatus.DUPLICATE, why)
        if from_peer and e is self.chain.tip:
            self._relay.relayed(block.hash)  # gossip relays it: no separate announce
        return BlockOutcome(BlockStatus.ACCEPTED, tip_changed=update.tip_changed)

    async def submit_headers(
        self, headers: Sequence[BlockHeader], from_peer: str
    ) -> HeadersOutcome:
        update = await self._mgr.submit_headers(list(headers), session=from_peer)
        reason = update.error.reason if update.error is not None else None
        return HeadersOutcome(
            update.headers_ok, reason, update.headers_work, update.headers_new_held
        )

    async def on_gossip(self, kind: str, obj: object, from_peer: str) -> Verdict:
        try:
            if kind == "tasks" and isinstance(obj, TaskTx):
                await self._tasks.submit_task(obj, from_peer)
            elif kind == "transfers" and isinstance(obj, TransferTx):
                await self._transfers.submit(obj, from_peer)
            elif kind == "bonds" and isinstance(obj, BondTx | UnbondTx):
                if self._bonds is None:
                    return Verdict.IGNORE
                await self._bonds.submit(obj, from_peer)
            elif kind == "challenges" and isinstance(obj, ChallengeTx):
                if self._challenges is None:
                    return Verdict.IGNORE
                await self._challenges.submit(obj, from_peer)
            elif kind == "attests" and isinstance(obj, AttestTx):
                if self._audits is None:
                    return Verdict.IGNORE
                await self._audits.submit(obj, from_peer)
            elif kind == "updates" and isinstance(obj, UpdateTx):
                if self._federated is None or not self._judge_results:
                    return Verdict.IGNORE
                await self._federated.submit(obj, from_peer)
            elif kind == "results" and isinstance(obj, ResultTx):
                if not self._judge_results:
                    return Verdict.IGNORE
                try:
                    await self._tasks.submit_result(obj, from_peer, verify=False)
                except MissingDataError:
                    # Re-running the model takes long: do it off the gossip
                    # worker, and gossip the result ourselves once it passes.
                    self._verification.check_gossiped_result(obj, from_peer)
                    return Verdict.IGNORE
            else:
                return Verdict.REJECT
        except MissingDataError:
            return Verdict.IGNORE
        except ValidationError as exc:
            if exc.reason in HARMLESS:
                if not self.harmless.charge(from_peer, 1.0):
                    self._gossip.penalise(from_peer, "harmless-flood", HARMLESS_FLOOD_PENALTY)
                return Verdict.IGNORE
            log.info("%s from %s refused: %s", kind, from_peer, exc)
            return Verdict.REJECT
        return Verdict.ACCEPT
