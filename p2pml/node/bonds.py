"""BondService: this node's trainer bond, and bonds and unbonds from gossip.

Results count only from a bonded key (docs/consensus.md "Bonds"). With
``[training] enabled`` and ``auto_bond`` (the default) the node bonds its
own key with the network's minimum as soon as it holds the coins: at start,
and at every tip change until the bond is in the chain (e.g. a new key at
the first block it mined). Dev keys are bonded in the dev networks' genesis.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from p2pml.chain.bonds import bond_key
from p2pml.chain.index import ChainUpdate
from p2pml.chain.ledger import balance_key
from p2pml.chain.types import BondTx, UnbondTx
from p2pml.crypto import Identity
from p2pml.errors import ValidationError
from p2pml.node.mempool import Mempool
from p2pml.node.pool_entry import PoolEntry
from p2pml.node.ports import ChainAccess, ResultVerifier, Spawn, TxRelay

log = logging.getLogger(__name__)


class BondService:
    def __init__(
        self,
        identity: Identity,
        chain: ChainAccess,
        mempool: Mempool,
        verifier: ResultVerifier,
        relay: TxRelay,
        on_pool_change: Callable[[], None],
        spawn: Spawn,
        auto_bond: bool,
    ) -> None:
        self._identity = identity
        self._chain = chain
        self._mempool = mempool
        self._entry = PoolEntry(identity, chain, mempool, verifier, relay, on_pool_change)
        self._spawn = spawn
        self.auto_bond = auto_bond
        self._bonding = False  # an automatic bond is being sent
        if auto_bond:
            chain.on_tip_changed(self._tip_changed)

    async def bond(self, amount: int, fee: int) -> BondTx:
        """Sign a bond of this node's key (fresh nonce), pool and gossip it;
        ValidationError with the rule's reason if it may not enter."""

        def unsigned(trainer: bytes, nonce: int) -> BondTx:
            return BondTx(trainer=trainer, amount=amount, fee=fee, nonce=nonce)

        return await self._entry.publish_own(unsigned, self.submit)

    async def unbond(self, fee: int) -> UnbondTx:
        """Sign an unbond of this node's key, pool and gossip it."""

        def unsigned(trainer: bytes, nonce: int) -> UnbondTx:
            return UnbondTx(trainer=trainer, fee=fee, nonce=nonce)

        return await self._entry.publish_own(unsigned, self.submit)

    async def submit(self, tx: BondTx | UnbondTx, source: str) -> None:
        """Pool a bond or unbond (ValidationError with the reason if it may not enter)."""
        self._entry.admit(tx)
        kind = "bond" if isinstance(tx, BondTx) else "unbond"
        self._entry.entered(f"{kind} {tx.id.hex()[:16]} of {tx.trainer.hex()[:16]}", source)

    # -- automatic bond ----------------------------------------------------------------

    def needs_bond(self) -> bool:
        """No bond in the chain or the pool, and the coins for one."""
        p = self._chain.params
        me = self._identity.public_key
        state = self._chain.chain.state
        if state.get(bond_key(me)) is not None:
            return False
        if any(isinstance(tx, BondTx) and tx.trainer == me for tx in self._mempool.txs.values()):
            return False
        return int(state.get(balance_key(me), 0)) >= p.min_bond + p.min_bond_fee

    def start(self) -> None:
        """At start: bond now if we should (later, at each tip change)."""
        if self.auto_bond:
            self._maybe_bond()

    def _tip_changed(self, _update: ChainUpdate) -> None:
        self._maybe_bond()

    def _maybe_bond(self) -> None:
        if self._bonding or not self.needs_bond():
            return
        self._bonding = True
        if self._spawn(self._auto_bond(), "auto-bond") is None:
            self._bonding = False  # the node is stopping

    async def _auto_bond(self) -> None:
        p = self._chain.params
        try:
            tx = await self.bond(p.min_bond, p.min_bond_fee)
            log.info("bonded our key with %d (bond %s)", p.min_bond, tx.id.hex()[:16])
        except ValidationError as exc:
            log.warning("automatic bond refused: %s", exc)
        finally:
            self._bonding = False
