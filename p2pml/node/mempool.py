"""The mempool: tasks and results waiting for a block.

Entry rules are the consensus rules, run against the tip's state with every
transaction already pooled applied first (so two tasks that the publisher
can only afford one of never both get in). Results must also have a passing
verdict (the node verifies them, with audit, before they enter). After every
tip change the pool drops what the block included or made invalid and takes
back what a reorg disconnected.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from p2pml.chain.encoding import encode_tx
from p2pml.chain.hashing import ZERO_HASH
from p2pml.chain.ledger import BlockContext, StateView
from p2pml.chain.params import NetworkParams
from p2pml.chain.state import ChainState
from p2pml.chain.txrules import handler_for
from p2pml.chain.types import Block, ResultTx, TaskTx
from p2pml.errors import MissingDataError, ValidationError

log = logging.getLogger(__name__)

PoolTx = TaskTx | ResultTx
MAX_TXS = 5_000
MAX_BYTES = 16 * 1024 * 1024
Verdict = Callable[[ResultTx, dict[str, Any], bool], str | None]


class Mempool:
    def __init__(self, params: NetworkParams, max_txs: int = MAX_TXS) -> None:
        self.params = params
        self.max_txs = max_txs
        self.txs: OrderedDict[bytes, PoolTx] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self.txs)

    def __contains__(self, tx_id: bytes) -> bool:
        return tx_id in self.txs

    def _context(self, chain: ChainState, verdict: Verdict) -> BlockContext:
        tip = chain.tip
        # A template's hash is unknown while it is built; results are only
        # pooled after an audited verification, so ask for that verdict.
        return BlockContext(
            self.params,
            tip.height + 1,
            ZERO_HASH,
            tip.header.time + 1,
            verdict=lambda tx, task, _audit: verdict(tx, task, True),
        )

    def check(self, tx: PoolTx, chain: ChainState, verdict: Verdict) -> None:
        """Raise ValidationError (or MissingDataError) if ``tx`` may not enter."""
        if tx.id in self.txs:
            raise ValidationError("duplicate", "already in the mempool")
        if len(self.txs) >= self.max_txs or self.bytes + len(encode_tx(tx)) > MAX_BYTES:
            raise ValidationError("mempool-full", f"{len(self.txs)} transactions waiting")
        handler = handler_for(tx)
        handler.check(tx, self.params)
        view = StateView(chain.state)
        ctx = self._context(chain, verdict)
        for other in self.txs.values():
            trial = view.child()
            try:
                handler_for(other).apply(other, trial, ctx)
            except ValidationError:
                continue
            view.merge(trial)
        handler.apply(tx, view, ctx)

    def add(self, tx: PoolTx) -> None:
        self.txs[tx.id] = tx
        self.bytes += len(encode_tx(tx))

    def remove(self, tx_id: bytes) -> None:
        tx = self.txs.pop(tx_id, None)
        if tx is not None:
            self.bytes -= len(encode_tx(tx))

    def select(
        self, chain: ChainState, verdict: Verdict, max_bytes: int
    ) -> tuple[list[PoolTx], int]:
        """Transactions for a block template, in pool order, and their fees."""
        view = StateView(chain.state)
        ctx = self._context(chain, verdict)
        chosen: list[PoolTx] = []
        size = 0
        room = self.params.max_block_txs - 1  # the coinbase takes one
        for tx in self.txs.values():
            if len(chosen) >= room:
                break
            n = len(encode_tx(tx))
            if size + n > max_bytes:
                continue
            trial = view.child()
            try:
                handler_for(tx).apply(tx, trial, ctx)
            except (ValidationError, MissingDataError):
                continue
            view.merge(trial)
            chosen.append(tx)
            size += n
        return chosen, sum(tx.fee for tx in chosen if isinstance(tx, TaskTx))

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
        active = [b for b in connected if (e := chain.entry(b.hash)) and chain.in_active_chain(e)]
        included = {tx.id for b in active for tx in b.txs[1:] if isinstance(tx, PoolTx)}
        back = [
            tx
            for b in disconnected
            for tx in b.txs[1:]
            if isinstance(tx, PoolTx) and tx.id not in included
        ]
        old = [tx for tx in self.txs.values() if tx.id not in included]
        self.txs.clear()
        self.bytes = 0
        view = StateView(chain.state)
        ctx = self._context(chain, verdict)
        for tx in [*back, *old]:
            if tx.id in self.txs or len(self.txs) >= self.max_txs:
                continue
            trial = view.child()
            try:
                handler_for(tx).apply(tx, trial, ctx)
            except MissingDataError:
                continue  # a result whose verdict we lost: it can be sent again
            except ValidationError as exc:
                log.debug("mempool drops %s: %s", tx.id.hex()[:16], exc.reason)
                continue
            view.merge(trial)
            self.add(tx)
