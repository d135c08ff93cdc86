"""A ChainBackend over ChainState + MemoryBlockSource (tests, tools, bench)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from p2pml.chain.index import ChainUpdate, MemoryBlockSource
from p2pml.chain.params import NetworkParams
from p2pml.chain.state import ChainState
from p2pml.chain.types import Block, BlockHeader
from p2pml.net.backend import (
    BlockOutcome,
    BlockStatus,
    ChainStateReads,
    ChainStatus,
    HeadersOutcome,
    Verdict,
)


class MemoryChainBackend(ChainStateReads):
    def __init__(self, params: NetworkParams, clock: Callable[[], float] = time.time) -> None:
        self.params = params
        self.source = MemoryBlockSource()
        self.chain, update = ChainState.create(params, self.source)
        self.source.apply(update)
        self.clock = clock
        self.gossip: list[tuple[str, object, str]] = []  # what on_gossip received

    def _apply(self, update: ChainUpdate) -> ChainUpdate:
        self.source.apply(update)
        return update

    def status(self) -> ChainStatus:
        tip = self.chain.tip
        return ChainStatus(self.params.genesis_hash, tip.hash, tip.height, tip.chain_work)

    def _state(self) -> ChainState:
        return self.chain

    def get_blocks(self, hashes: Sequence[bytes]) -> list[Block]:
        out = []
        for h in hashes:
            b = self.chain.get_block(h)
            if b is not None:
                out.append(b)
        return out

    async def submit_block(
        self, block: Block, from_peer: str | None, requested: bool = True
    ) -> BlockOutcome:
        update = self._apply(self.chain.accept_block(block, int(self.clock()), requested))
        if update.error is not None:
            reason = update.error.reason
            if reason == "duplicate":
                return BlockOutcome(BlockStatus.DUPLICATE, reason)
            return BlockOutcome(BlockStatus.INVALID, reason, update.tip_changed)
        for h, reason in update.rejected:
            if h == block.hash:  # failed when connected (contextual rules)
                return BlockOutcome(BlockStatus.INVALID, reason, update.tip_changed)
        if update.orphaned:
            return BlockOutcome(BlockStatus.ORPHAN, "prev-unknown")
        if update.needs_ancestors:
            return BlockOutcome(BlockStatus.ORPHAN, "missing-ancestors")
        if update.low_work:
            return BlockOutcome(BlockStatus.LOW_WORK, "low-work")
        return BlockOutcome(BlockStatus.ACCEPTED, "", update.tip_changed)

    async def submit_headers(
        self, headers: Sequence[BlockHeader], from_peer: str
    ) -> HeadersOutcome:
        update = self._apply(
            self.chain.accept_headers(list(headers), int(self.clock()), session=from_peer)
        )
        reason = update.error.reason if update.error is not None else None
        return HeadersOutcome(
            update.headers_ok, reason, update.headers_work, update.headers_new_held
        )

    async def on_gossip(self, kind: str, obj: object, from_peer: str) -> Verdict:
        self.gossip.append((kind, obj, from_peer))
        return Verdict.ACCEPT
