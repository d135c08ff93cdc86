"""The mempool: tasks, transfers and results waiting for a block.

Entry rules are the consensus rules, run against the tip's state with every
pooled transaction already applied, so two tasks that the publisher can
only afford one of never both get in. That pooled state is kept
incrementally: admitting a transaction applies it alone on top (cost
independent of the pool's size); the whole pool is re-applied only when the
tip moves (:meth:`Mempool.reconcile`, once per block) or a transaction is
evicted. Every pooled set is therefore jointly valid at the tip, and so is
every prefix of it in priority order (a challenge may name a pooled result,
which comes first): a template takes such a prefix without re-applying it
(the block is validated in full when our miner submits it).

The pool holds at most ``max_challenges_per_block`` challenges (its state
counts them as one block's), so any template may take all of them.

Priority: results and attestations first (their task is waiting for them;
both are bounded by the rules, not by fees), then tasks,
transfers, bonds and unbonds together by fee rate (fee per byte), earlier
first on ties. A full pool evicts its
lowest-priority fee-paying transaction for a newcomer that pays at least
``INCREMENTAL_FEE_RATE`` per byte more; results are never evicted for them.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from p2pml.chain.audits import miner_fee
from p2pml.chain.encoding import encode_tx
from p2pml.chain.hashing import ZERO_HASH
from p2pml.chain.ledger import BlockContext, StateView
from p2pml.chain.params import NetworkParams
from p2pml.chain.state import ChainState
from p2pml.chain.txrules import handler_for
from p2pml.chain.types import AttestTx, Block, PoolTx, ResultTx
from p2pml.errors import MissingDataError, ValidationError

log = logging.getLogger(__name__)

MAX_TXS = 5_000
MAX_BYTES = 16 * 1024 * 1024
#: A newcomer evicts only if its fee rate beats the lowest by this much per
#: byte, so each eviction (which re-applies the pool) costs the sender more.
INCREMENTAL_FEE_RATE = 1.0
Verdict = Callable[[ResultTx, dict[str, Any], bool], str | None]


@dataclass(frozen=True)
class _Entry:
    tx: PoolTx
    size: int
    seq: int

    @property
    def priority(self) -> tuple[int, float, int]:
        """Larger is better: results, then fee rate, then earlier arrival."""
        if isinstance(self.tx, ResultTx | AttestTx):
            return (1, 0.0, -self.seq)
        return (0, self.tx.fee / self.size, -self.seq)

    @property
    def fee_rate(self) -> float:
        return 0.0 if isinstance(self.tx, ResultTx | AttestTx) else self.tx.fee / self.size


class Mempool:
    def __init__(
        self, params: NetworkParams, max_txs: int = MAX_TXS, max_bytes: int = MAX_BYTES
    ) -> None:
        self.params = params
        self.max_txs = max_txs
        self.max_bytes = max_bytes
        self._entries: dict[bytes, _Entry] = {}
        self.bytes = 0
        self._seq = 0
        # The pooled state: every entry applied, in arrival order, on the tip
        # it was built for. None: rebuild before use.
        self._view: StateView | None = None
        self._view_tip = b""
        self._ctx: BlockContext | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, tx_id: bytes) -> bool:
        return tx_id in self._entries

    @property
    def txs(self) -> dict[bytes, PoolTx]:
        """Pooled transactions by id, in arrival order (a copy)."""
        return {k: e.tx for k, e in self._entries.items()}

    # -- the pooled state --------------------------------------------------------------

    def _context(self, chain: ChainState, verdict: Verdict) -> BlockContext:
        tip = chain.tip
        # A template's hash is unknown while it is built. Inclusion is
        # optimistic: results need the cheap checks' verdict only (re-training
        # is for audit committees and disputes).
        return BlockContext(
            self.params,
            tip.height + 1,
            ZERO_HASH,
            tip.header.time + 1,
            verdict=lambda tx, task, _audit: verdict(tx, task, False),
        )

    def _pooled(self, chain: ChainState, verdict: Verdict) -> tuple[StateView, BlockContext]:
        if self._view is None or self._ctx is None or self._view_tip != chain.tip.hash:
            self._rebuild(chain, verdict)
        assert self._view is not None and self._ctx is not None
        return self._view, self._ctx

    def _rebuild(self, chain: ChainState, verdict: Verdict) -> None:
        """Re-apply every entry on the tip; drop those no longer valid."""
        view, ctx = StateView(chain.state), self._context(chain, verdict)
        for tx_id, e in list(self._entries.items()):
            trial = view.child()
            try:
                handler_for(e.tx).apply(e.tx, trial, ctx)
            except MissingDataError:
                self._drop(tx_id)  # a result whose verdict we lost: it can be sent again
                continue
            except ValidationError as exc:
                log.debug("mempool drops %s: %s", tx_id.hex()[:16], exc.reason)
                self._drop(tx_id)
                continue
            view.merge(trial)
        self._view, self._ctx, self._view_tip = view, ctx, chain.tip.hash

    # -- admission ---------------------------------------------------------------------

    def check(self, tx: PoolTx, chain: ChainState, verdict: Verdict) -> None:
        """Raise ValidationError (or MissingDataError) if ``tx`` may not enter."""
        _view, ctx = self._pooled(chain, verdict)
        counted = ctx.challenges
        try:
            self._trial(tx, chain, verdict)
        finally:
            ctx.challenges = counted  # a dry run takes no challenge slot

    def admit(self, tx: PoolTx, chain: ChainState, verdict: Verdict) -> list[PoolTx]:
        """Check and pool ``tx``; returns what was evicted to make room."""
        trial, size, victims = self._trial(tx, chain, verdict)
        assert self._view is not None
        self._view.merge(trial)
        self._entries[tx.id] = _Entry(tx, size, self._seq)
        self._seq += 1
        self.bytes += size
        if victims:
            for v in victims:
                self._drop(v.tx.id)
                log.info("mempool evicts %s (fee rate %.2f)", v.tx.id.hex()[:16], v.fee_rate)
            self._rebuild(chain, verdict)
        return [v.tx for v in victims]

    def _trial(
        self, tx: PoolTx, chain: ChainState, verdict: Verdict
    ) -> tuple[StateView, int, list[_Entry]]:
        if tx.id in self._entries:
            raise ValidationError("duplicate", "already in the mempool")
        size = len(encode_tx(tx))
        view, ctx = self._pooled(chain, verdict)  # first: a new tip may free room
        victims = self._victims(_Entry(tx, size, self._seq))
        handler = handler_for(tx)
        handler.check(tx, self.params)
        trial = view.child()
        handler.apply(tx, trial, ctx)
        return trial, size, victims

    def _victims(self, new: _Entry) -> list[_Entry]:
        """Lowest-priority fee payers to evict so ``new`` fits, or ``mempool-full``."""
        count, size = len(self._entries) + 1, self.bytes + new.size
        if count <= self.max_txs and size <= self.max_bytes:
            return []
        out: list[_Entry] = []
        for e in sorted(self._entries.values(), key=lambda e: e.priority):
            if count <= self.max_txs and size <= self.max_bytes:
                break
            if isinstance(e.tx, ResultTx | AttestTx) or not _outbids(new, e):
                break
            out.append(e)
            count, size = count - 1, size - e.size
        if count > self.max_txs or size > self.max_bytes:
            raise ValidationError(
                "mempool-full", f"{len(self._entries)} transactions waiting, none outbid"
            )
        return out

    def _fits(self, e: _Entry) -> bool:
        return len(self._entries) < self.max_txs and self.bytes + e.size <= self.max_bytes

    def _drop(self, tx_id: bytes) -> None:
        e = self._entries.pop(tx_id, None)
        if e is not None:
            self.bytes -= e.size

    def remove(self, tx_id: bytes) -> None:
        if tx_id in self._entries:
            self._drop(tx_id)
            self._view = None

    # -- templates and tips ------------------------------------------------------------

    def select(
        self, chain: ChainState, verdict: Verdict, max_bytes: int, reserve_txs: int = 0
    ) -> tuple[list[PoolTx], int]:
        """Transactions for a block template by priority, and their fees;
        ``reserve_txs`` slots are left for what the miner adds after them."""
        self._pooled(chain, verdict)  # drops what the tip made invalid
        chosen: list[PoolTx] = []
        size = 0
        room = self.params.max_block_txs - 1 - reserve_txs  # the coinbase takes one
        for e in sorted(self._entries.values(), key=lambda e: e.priority, reverse=True):
            if len(chosen) >= room:
                break
            # Stop at the first that does not fit: a challenge may name a
            # pooled result, which comes earlier in this order (results
            # first), so only a prefix surely keeps the two together.
            if size + e.size > max_bytes:
                break
            chosen.append(e.tx)
            size += e.size
        # Results pay fees too (protocol 4), less their committee's hold (5).
        return chosen, sum(miner_fee(self.params, tx) for tx in chosen)

    def reconcile(
        self,
        chain: ChainState,
        verdict: Verdict,
        connected: Iterable[Block],
        disconnected: Iterable[Block],
    ) -> None:
        """After a tip change: take back disconnected txs, drop included/invalid ones."""
        # A block connected and disconnected again within one update (a
        # branch tried and abandoned) did not include anything.
        active = [b for b in connected if (ie := chain.entry(b.hash)) and chain.in_active_chain(ie)]
        included = {tx.id for b in active for tx in b.txs[1:] if isinstance(tx, PoolTx)}
        for tx_id in included:
            self._drop(tx_id)
        back = [
            tx
            for b in disconnected
            for tx in b.txs[1:]
            if isinstance(tx, PoolTx) and tx.id not in included and tx.id not in self._entries
        ]
        # Taken-back transactions were in the chain first: they go ahead of
        # what arrived since, as they would have been applied.
        old = list(self._entries.values())
        self._entries.clear()
        self.bytes = 0
        for e in [_Entry(tx, len(encode_tx(tx)), 0) for tx in back]:
            if self._fits(e):
                self._entries[e.tx.id] = dataclasses.replace(e, seq=self._seq)
                self._seq += 1
                self.bytes += e.size
        for e in old:
            if self._fits(e):
                self._entries[e.tx.id] = e
                self.bytes += e.size
        self._rebuild(chain, verdict)


def _outbids(new: _Entry, old: _Entry) -> bool:
    if isinstance(new.tx, ResultTx | AttestTx):
        return True  # results and attestations go ahead of tasks
    return new.fee_rate >= old.fee_rate + INCREMENTAL_FEE_RATE
