"""The "blocks" gossip topic: PoW first (trio thread), then a block on a
branch lighter than ours is dropped before its body is decoded or its
signatures checked, then every stateless rule; on the loop the chain backend
takes it, and its outcome is the verdict (relay, ignore or penalise)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from p2pml.chain import rules
from p2pml.chain.encoding import decode_block, encode_block, peek_block_header
from p2pml.chain.params import NetworkParams
from p2pml.chain.types import Block, BlockHeader
from p2pml.errors import ValidationError
from p2pml.net import protocol as P
from p2pml.net.backend import BlockStatus, ChainBackend, Verdict
from p2pml.net.metrics import Metrics
from p2pml.net.sync import SyncManager
from p2pml.net.topics import TopicSpec


class BlockTopic:
    def __init__(
        self,
        params: NetworkParams,
        counters: Metrics,
        chain_lock: asyncio.Lock,
        backend: Callable[[], ChainBackend],
        sync: SyncManager,
        charge_low_work: Callable[[str, int], None],
    ) -> None:
        self.params = params
        self.counters = counters
        self.chain_lock = chain_lock
        self._backend = backend  # set when the service starts: read at each call
        self.sync = sync
        self._charge_low_work = charge_low_work

    def spec(self) -> TopicSpec:
        return TopicSpec(
            kind="blocks",
            max_bytes=self.params.max_block_bytes,
            decode=self.decode,
            check=self.check,
            handle=self.handle,
            encode=encode_block,
            peek=peek_block_header,
            precheck=self.check_header,
            context=self.context,
        )

    def decode(self, data: bytes) -> Block:
        return decode_block(data, self.params.max_block_bytes)

    def check_header(self, header: BlockHeader) -> None:
        """PoW and target: cheap, first (trio thread)."""
        rules.check_header(header, self.params)

    def context(self, header: BlockHeader, peer_id: str) -> None:
        """On the asyncio loop, after PoW and before the body is decoded and
        its signatures checked: a block whose branch stays lighter than ours
        is dropped here, so a 0.9 MB block of signed transactions on a cheap
        fork costs ~nothing."""
        if self._backend().low_work(header):
            self.counters.inc("gossip_low_work")
            self._charge_low_work(peer_id, 1)
            raise ValidationError("low-work", "branch lighter than ours")

    def check(self, block: Block) -> None:
        """Every stateless block rule (runs in the trio thread before relay)."""
        rules.check_header(block.header, self.params)
        ids = rules.check_tx_root(block)
        rules.check_block_body(block, ids, self.params)

    async def handle(self, block: Block, peer_id: str) -> Verdict:
        async with self.chain_lock:
            out = await self._backend().submit_block(block, peer_id, requested=False)
        if out.status is BlockStatus.ACCEPTED:
            self.sync.saw_block(peer_id, block)
            return Verdict.ACCEPT
        if out.status is BlockStatus.ORPHAN:
            self.counters.inc("gossip_orphans")
            self.sync.on_orphan(peer_id, block)
            # Not relayed: we cannot vouch for a block we could not connect
            # (an honest relayer of an invalid orphan would be penalised).
            return Verdict.IGNORE
        if out.status is BlockStatus.LOW_WORK:
            self._charge_low_work(peer_id, 1)
            return Verdict.IGNORE  # not relayed: a lighter branch is nobody's business
        if out.status is BlockStatus.DUPLICATE:
            return Verdict.IGNORE
        if out.reason in P.BENIGN_REASONS:
            return Verdict.IGNORE
        return Verdict.REJECT
