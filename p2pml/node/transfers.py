"""TransferService: sends this node's coins, and admits transfers from gossip.

A transfer passes the consensus rules against the tip with every pooled
transaction applied (see :class:`~p2pml.node.mempool.Mempool`), so a key
cannot pool two transfers it can only afford one of. Nothing to re-run:
unlike a result, a transfer is judged by its signature and the balances.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable

from p2pml.chain.types import TransferTx
from p2pml.crypto import Identity
from p2pml.node.mempool import Mempool
from p2pml.node.ports import ChainAccess, ResultVerifier, TxRelay

log = logging.getLogger(__name__)


class TransferService:
    def __init__(
        self,
        identity: Identity,
        chain: ChainAccess,
        mempool: Mempool,
        verifier: ResultVerifier,
        relay: TxRelay,
        on_pool_change: Callable[[], None],
    ) -> None:
        self._identity = identity
        self._chain = chain
        self._mempool = mempool
        self._verifier = verifier
        self._relay = relay
        self._on_pool_change = on_pool_change

    async def send(self, recipient: bytes, amount: int, fee: int) -> TransferTx:
        """Sign a transfer from this node's key (fresh nonce), pool and gossip
        it; ValidationError with the rule's reason if it may not enter."""
        tx = TransferTx(
            sender=self._identity.public_key,
            recipient=recipient,
            amount=amount,
            fee=fee,
            nonce=secrets.randbits(63),
        ).signed_by(self._identity, self._chain.params.genesis_hash)
        await self.submit(tx, "api")
        await self._relay.tx(tx)
        return tx

    async def submit(self, tx: TransferTx, source: str) -> None:
        """Pool a transfer (ValidationError with the reason if it may not enter)."""
        self._mempool.admit(tx, self._chain.chain, self._verifier.peek)
        log.info(
            "transfer %s of %d from %s entered the mempool", tx.id.hex()[:16], tx.amount, source
        )
        self._on_pool_change()
