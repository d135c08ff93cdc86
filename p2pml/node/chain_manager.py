"""ChainManager: the node's async front to the pure ChainState and its store.

Every mutation goes through one lock, and the store write of each update
finishes (in a worker thread) before the next mutation starts, so the chain
in memory never runs ahead of what a restart would find by more than the
update being written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from p2pml.chain.index import ChainUpdate
from p2pml.chain.ledger import VerdictOracle, no_verdicts
from p2pml.chain.params import NetworkParams
from p2pml.chain.state import ChainState
from p2pml.chain.template import build_block
from p2pml.chain.types import Block, BlockHeader, Transaction
from p2pml.errors import StoreError
from p2pml.store import BlockStore

log = logging.getLogger(__name__)

TipListener = Callable[[ChainUpdate], None]


@dataclass
class ChainMetrics:
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    reorgs: int = 0
    max_reorg_depth: int = 0


class ChainManager:
    def __init__(
        self,
        params: NetworkParams,
        store: BlockStore,
        clock: Callable[[], float] = time.time,
        verdicts: VerdictOracle = no_verdicts,
        on_fatal: Callable[[BaseException], None] = lambda _exc: None,
    ) -> None:
        self.params = params
        self.store = store
        self.clock = clock
        self._chain = store.load_chain()
        self._chain.verdicts = verdicts
        self._lock = asyncio.Lock()
        self._tip_listeners: list[TipListener] = []
        self._update_listeners: list[TipListener] = []
        self._on_fatal = on_fatal
        self.metrics = ChainMetrics()

    @property
    def chain(self) -> ChainState:
        return self._chain

    def now(self) -> int:
        return int(self.clock())

    def on_tip_changed(self, fn: TipListener) -> None:
        """``fn(update)`` after every update that moved the tip."""
        self._tip_listeners.append(fn)

    def on_update(self, fn: TipListener) -> None:
        """``fn(update)`` after every block or retry update, tip moved or not."""
        self._update_listeners.append(fn)

    async def submit_block(
        self, block: Block, source: str = "local", requested: bool = True
    ) -> ChainUpdate:
        async with self._lock:
            before = self.chain.tip.hash
            update = self.chain.accept_block(block, self.now(), requested)
            await self._persist([update])
        self._report(block.hash, update, source, before)
        return update

    async def submit_headers(
        self, headers: list[BlockHeader], session: str | None = None
    ) -> ChainUpdate:
        async with self._lock:
            update = self.chain.accept_headers(headers, self.now(), session)
            await self._persist([update])
        if update.error is not None:
            self.metrics.rejected[update.error.reason] += 1
            log.info("headers refused: %s", update.error)
        return update

    async def retry_waiting(self) -> ChainUpdate:
        """Branches that waited for result verdicts: try to connect them now."""
        async with self._lock:
            before = self.chain.tip.hash
            update = self.chain.retry_waiting()
            await self._persist([update])
        self._report(self.chain.tip.hash, update, "verifier", before)
        return update

    async def _persist(self, updates: list[ChainUpdate]) -> None:
        if all(u.empty and not u.tip_changed and not u.state_changes for u in updates):
            return
        write = asyncio.ensure_future(
            asyncio.to_thread(self.store.apply_many, updates, self.chain.tip.hash)
        )
        try:
            await asyncio.shield(write)
        except asyncio.CancelledError:
            # Hold the chain lock until the write is on disk, so writes never
            # reorder; then let the cancellation through.
            with contextlib.suppress(Exception):
                await write
            raise
        except StoreError as exc:
            # Memory is now ahead of disk: going on would write a store that
            # cannot be reopened. Stop, loudly; a restart resumes from disk.
            log.critical("chain store write failed, stopping: %s", exc)
            self._on_fatal(exc)
            raise

    def _report(
        self, block_hash: bytes, update: ChainUpdate, source: str, tip_before: bytes
    ) -> None:
        short = block_hash.hex()[:16]
        if update.error is not None:
            reason = update.error.reason
            self.metrics.rejected[reason] += 1
            if reason != "duplicate":
                log.info("block %s rejected from %s: %s", short, source, update.error)
        elif update.orphaned:
            log.debug("block %s from %s is an orphan", short, source)
        elif update.low_work:
            log.debug("block %s from %s: lighter branch, not kept", short, source)
        for h, reason in update.rejected:
            self.metrics.rejected[reason] += 1
            log.warning("block %s invalid: %s", h.hex()[:16], reason)
        for h, cid in update.waiting:
            log.info("block %s waits for data (%s)", h.hex()[:16], cid)
        if update.tip_changed and self.chain.tip.hash == tip_before:
            # Went over to a branch and came back (it failed or lacked data).
            update.tip_changed = False
        if update.tip_changed:
            self.metrics.accepted += len(update.connected)
            if update.disconnected:
                self.metrics.reorgs += 1
                self.metrics.max_reorg_depth = max(self.metrics.max_reorg_depth, update.reorg_depth)
                log.warning(
                    "reorg: %d block(s) disconnected, %d connected, new tip %s",
                    update.reorg_depth,
                    len(update.connected),
                    self.chain.tip.hash.hex()[:16],
                )
            tip = self.chain.tip
            log.info("tip %s height %d (from %s)", tip.hash.hex()[:16], tip.height, source)
            for fn in self._tip_listeners:
                fn(update)
        for fn in self._update_listeners:
            fn(update)

    def template(
        self,
        miner: bytes,
        txs: tuple[Transaction, ...] = (),
        fees: int = 0,
        extra: bytes = b"",
    ) -> Block:
        """A block to mine on the current tip with ``txs`` (from the mempool)."""
        tip = self.chain.tip
        t = max(self.now(), self.chain.median_time_past(tip) + 1)
        return build_block(
            self.params,
            tip.hash,
            tip.height + 1,
            self.chain.next_bits(tip),
            t,
            miner,
            txs=txs,
            fees=fees,
            extra=extra,
        )
