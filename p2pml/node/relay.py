"""Relay: everything this node says on gossip.

Transactions it accepted, blocks it mined, and announcements of new tips
(a tip reached by sync or a reorg would otherwise reach our other peers only
at their next status poll). Once the node stops, nothing more is sent: work
found during shutdown is stored, not published. A failed publish is logged,
never raised: gossip is best effort, and peers catch up by sync.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Iterator

from p2pml.chain.encoding import encode_tx
from p2pml.chain.types import (
    AttestTx,
    Block,
    BondTx,
    ChallengeTx,
    PoolTx,
    ResultTx,
    TaskTx,
    TransferTx,
    UnbondTx,
    UpdateTx,
)
from p2pml.errors import NetworkError
from p2pml.node.ports import ChainAccess, Gossip

log = logging.getLogger(__name__)

ANNOUNCE_INTERVAL = 0.1
#: The gossip topic kind of each pool transaction type.
_KIND: dict[type, str] = {
    TaskTx: "tasks",
    ResultTx: "results",
    TransferTx: "transfers",
    BondTx: "bonds",
    UnbondTx: "bonds",
    ChallengeTx: "challenges",
    AttestTx: "attests",
    UpdateTx: "updates",
}


class Relay:
    def __init__(self, chain: ChainAccess, gossip: Gossip) -> None:
        self._chain = chain
        self._gossip = gossip
        self._announce = asyncio.Event()
        self._announced = b""
        self._paused = 0
        self._stopped = False
        chain.on_tip_changed(lambda _update: self._announce.set())

    def stop(self) -> None:
        """From now on nothing is published (the node is shutting down)."""
        self._stopped = True
        self._announce.set()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """No announcements while blocks are mined in bulk (regtest)."""
        self._paused += 1
        try:
            yield
        finally:
            self._paused -= 1

    def relayed(self, block_hash: bytes) -> None:
        """Gossip is relaying this block already: no need to announce it."""
        self._announced = block_hash

    async def tx(self, tx: PoolTx) -> None:
        kind = _KIND[type(tx)]
        await self._send(self._gossip.publish(kind, encode_tx(tx)), f"{kind} {tx.id.hex()[:16]}")

    async def mined(self, block: Block) -> None:
        """Publish a block our miner found (held back during a bulk mine)."""
        if not self._paused:
            await self.block(block)

    async def block(self, block: Block) -> None:
        """Publish a block (our tip after a bulk mine, or an announcement)."""
        self._announced = block.hash
        await self._send(self._gossip.publish_block(block), f"block {block.hash.hex()[:16]}")

    async def _send(self, aw: Awaitable[None], what: str) -> None:
        if self._stopped:
            if asyncio.iscoroutine(aw):
                aw.close()
            return
        try:
            await aw
        except NetworkError as exc:
            log.log(
                logging.DEBUG if self._stopped else logging.WARNING,
                "could not gossip %s: %s",
                what,
                exc,
            )

    async def run(self) -> None:
        """Announce every new tip we connect (a supervisor task); coalesced,
        so only the latest tip is sent."""
        while not self._stopped:
            await self._announce.wait()
            self._announce.clear()
            chain = self._chain.chain
            tip = chain.tip
            if self._stopped or self._paused or tip.hash == self._announced:
                continue
            block = chain.get_block(tip.hash)
            if block is None:
                continue
            await self.block(block)
            await asyncio.sleep(ANNOUNCE_INTERVAL)  # pacing, not synchronisation
