"""How a transaction enters this node's mempool, once for every kind.

TaskService (tasks, results), TransferService (transfers), BondService
(bonds, unbonds) and AuditService (attestations) go through a
:class:`PoolEntry`: admission under the consensus rules against the tip
with every pooled transaction applied (results' known verdicts peeked), a
log line, the miner told; and for the node's own transactions,
a fresh nonce and the node's signature first and gossip after.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import TypeVar

from p2pml.chain.types import (
    AttestTx,
    BondTx,
    ChallengeTx,
    PoolTx,
    ResultTx,
    TaskTx,
    TransferTx,
    UnbondTx,
)
from p2pml.crypto import Identity
from p2pml.node.mempool import Mempool
from p2pml.node.ports import ChainAccess, ResultVerifier, TxRelay

log = logging.getLogger(__name__)


# Each kind signs to its own type and is relayed as such.
T = TypeVar("T", TaskTx, ResultTx, TransferTx, BondTx, UnbondTx, AttestTx, ChallengeTx)


class PoolEntry:
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

    def admit(self, tx: PoolTx) -> None:
        """Pool ``tx``: ValidationError with the rule's reason if it may not
        enter; MissingDataError for a result whose verdict is not known yet."""
        self._mempool.admit(tx, self._chain.chain, self._verifier.peek)

    def entered(self, what: str, source: str) -> None:
        """``what`` (from ``source``) is in the pool now: log it, tell the miner."""
        log.info("%s from %s entered the mempool", what, source)
        self._on_pool_change()

    async def publish_own(
        self,
        unsigned: Callable[[bytes, int], T],
        submit: Callable[[T, str], Awaitable[None]],
    ) -> T:
        """Build ``unsigned(our public key, fresh nonce)``, sign it, pool it
        through ``submit`` (the service's own checks) and only then gossip it."""
        tx = unsigned(self._identity.public_key, secrets.randbits(63))
        tx = tx.signed_by(self._identity, self._chain.params.genesis_hash)
        await submit(tx, "api")
        await self._relay.tx(tx)
        return tx
