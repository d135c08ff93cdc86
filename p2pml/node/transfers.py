"""TransferService: sends this node's coins, and admits transfers from gossip.

A transfer passes the consensus rules against the tip with every pooled
transaction applied (see :class:`~p2pml.node.mempool.Mempool`), so a key
cannot pool two transfers it can only afford one of. Nothing to re-run:
unlike a result, a transfer is judged by its signature and the balances.
"""

from __future__ import annotations

from collections.abc import Callable

from p2pml.chain.types import TransferTx
from p2pml.crypto import Identity
from p2pml.node.mempool import Mempool
from p2pml.node.pool_entry import PoolEntry
from p2pml.node.ports import ChainAccess, ResultVerifier, TxRelay


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
        self._entry = PoolEntry(identity, chain, mempool, verifier, relay, on_pool_change)

    async def send(self, recipient: bytes, amount: int, fee: int) -> TransferTx:
        """Sign a transfer from this node's key (fresh nonce), pool and gossip
        it; ValidationError with the rule's reason if it may not enter."""

        def unsigned(sender: bytes, nonce: int) -> TransferTx:
            return TransferTx(
                sender=sender, recipient=recipient, amount=amount, fee=fee, nonce=nonce
            )

        return await self._entry.publish_own(unsigned, self.submit)

    async def submit(self, tx: TransferTx, source: str) -> None:
        """Pool a transfer (ValidationError with the reason if it may not enter)."""
        self._entry.admit(tx)
        self._entry.entered(f"transfer {tx.id.hex()[:16]} of {tx.amount}", source)
