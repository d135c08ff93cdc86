"""MiningService: block templates from the mempool, and what happens to a
block once a worker finds it (stored first, then relayed)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from p2pml.chain.types import Block, PoolTx, Transaction
from p2pml.config import MiningSettings
from p2pml.crypto import Identity
from p2pml.mining.miner import Miner, MinerStats
from p2pml.node.chain_manager import ChainManager
from p2pml.node.mempool import Mempool
from p2pml.node.ports import Verdicts
from p2pml.node.relay import Relay

log = logging.getLogger(__name__)

# Room in a template for the header and the coinbase.
TEMPLATE_OVERHEAD = 4096
# Round closes per template (the rest close in the next block) and a bound
# on each one's encoding ([10, bin32, uint32, bin32]: 73 bytes at most).
MAX_CLOSES = 32
CLOSE_BYTES = 80


class MiningService:
    def __init__(
        self,
        identity: Identity,
        chain: ChainManager,
        mempool: Mempool,
        verdicts: Verdicts,
        relay: Relay,
        settings: MiningSettings,
        worker_memory_mb: int | None = None,
        extra_txs: Callable[[Sequence[PoolTx]], list[Transaction]] | None = None,
    ) -> None:
        self._identity = identity
        self._chain = chain
        self._mempool = mempool
        self._verdicts = verdicts
        self._relay = relay
        self._settings = settings
        # Transactions the node adds after the mempool's (round closes).
        self._extra_txs = extra_txs
        self.miner = Miner(
            self.template,
            self.submit_mined,
            workers=settings.workers,
            nonce_range=settings.nonce_range,
            memory_mb=worker_memory_mb,
        )
        chain.on_tip_changed(lambda _update: self.miner.notify())

    @property
    def enabled(self) -> bool:
        return self.miner.enabled

    @property
    def workers(self) -> int:
        return self.miner.workers

    @property
    def stats(self) -> MinerStats:
        return self.miner.stats

    def notify(self) -> None:
        """The mempool changed: rebuild the template."""
        self.miner.notify()

    async def run(self) -> None:
        if self._settings.enabled:
            self.miner.set_enabled(True)
        await self.miner.run()

    def stop(self) -> None:
        self.miner.set_enabled(False)

    async def close(self) -> None:
        await self.miner.close()

    def template(self) -> Block:
        # Room is kept for the round closes (made after the pool's choice,
        # on top of it): a full pool must not push a template past the block
        # limits, which would be refused after its proof of work, every time.
        reserve = (MAX_CLOSES, MAX_CLOSES * CLOSE_BYTES) if self._extra_txs is not None else (0, 0)
        max_bytes = self._chain.params.max_block_bytes - TEMPLATE_OVERHEAD - reserve[1]
        txs, fees = self._mempool.select(
            self._chain.chain, self._verdicts, max_bytes, reserve_txs=reserve[0]
        )
        extra = self._extra_txs(txs)[:MAX_CLOSES] if self._extra_txs is not None else []
        return self._chain.template(self._identity.public_key, (*txs, *extra), fees)

    async def submit_mined(self, block: Block) -> None:
        update = await self._chain.submit_block(block, source="miner")
        if update.error is not None:
            log.warning("own block %s refused: %s", block.hash.hex()[:16], update.error)
        if update.tip_changed and self._chain.chain.tip.hash == block.hash:
            await self._relay.mined(block)

    async def mine(self, n: int) -> list[bytes]:
        """Regtest: mine ``n`` blocks now. Only the last is gossiped (own
        publishes are paced); peers fetch its ancestors like any orphan's."""
        with self._relay.paused():
            hashes = await self.miner.mine_blocks(n)
        chain = self._chain.chain
        tip = chain.get_block(chain.tip.hash)
        if tip is not None and tip.hash in hashes:
            await self._relay.block(tip)
        return hashes
