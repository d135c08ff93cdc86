"""Read-only lookups on ChainState's block tree, apart from the code that
changes it: the tip and heights, ancestors and locators, header batches for
sync, median time and next difficulty, work thresholds and fork choice order.

The node, the API, the mempool and the network thread (through the node)
call these; :class:`~p2pml.chain.state.ChainState` inherits them. Nothing
here writes to the tree.
"""

from __future__ import annotations

from collections.abc import Container, Iterable

from p2pml.chain import rules
from p2pml.chain.index import BlockSource, IndexEntry
from p2pml.chain.orphans import OrphanPool
from p2pml.chain.params import NetworkParams
from p2pml.chain.pow import bits_to_target, block_work, retarget, target_to_bits
from p2pml.chain.types import Block, BlockHeader

MAX_HEADERS_PER_MESSAGE = 2_000


class ChainQueries:
    # Set by ChainState.__init__; the queries only read them.
    params: NetworkParams
    source: BlockSource
    index: dict[bytes, IndexEntry]
    active: list[IndexEntry]
    orphans: OrphanPool
    _tips: set[IndexEntry]
    _failed: set[IndexEntry]
    _pending_blocks: dict[bytes, Block]

    @property
    def tip(self) -> IndexEntry:
        return self.active[-1]

    @property
    def height(self) -> int:
        return len(self.active) - 1

    def entry(self, block_hash: bytes) -> IndexEntry | None:
        return self.index.get(block_hash)

    def at_height(self, height: int) -> IndexEntry | None:
        if 0 <= height < len(self.active):
            return self.active[height]
        return None

    def in_active_chain(self, e: IndexEntry) -> bool:
        return e.height < len(self.active) and self.active[e.height] is e

    def tips(self) -> list[IndexEntry]:
        return list(self._tips)

    def get_block(self, block_hash: bytes) -> Block | None:
        b = self._pending_blocks.get(block_hash)
        return b if b is not None else self.source.get_block(block_hash)

    def median_time_past(self, e: IndexEntry) -> int:
        times = []
        cur: IndexEntry | None = e
        for _ in range(self.params.median_time_span):
            if cur is None:
                break
            times.append(cur.header.time)
            cur = cur.parent
        return rules.median_time(times)

    def next_bits(self, parent: IndexEntry) -> int:
        p = self.params
        if p.no_retarget:
            return p.pow_limit_bits
        height = parent.height + 1
        if height % p.retarget_window != 0:
            return parent.header.bits
        first = parent.ancestor(height - p.retarget_window)
        actual = parent.header.time - first.header.time
        new = retarget(bits_to_target(parent.header.bits), actual, p.intended_timespan, p.pow_limit)
        return target_to_bits(new)

    def locator(self, e: IndexEntry | None = None) -> list[bytes]:
        """Block locator: dense near the tip, exponentially sparse, then genesis."""
        e = e or self.tip
        out: list[bytes] = []
        step = 1
        height = e.height
        while True:
            out.append(e.ancestor(height).hash)
            if height == 0:
                break
            height = max(height - step, 0)
            if len(out) >= 10:
                step *= 2
        return out

    def find_fork(self, locator: Iterable[bytes]) -> IndexEntry:
        """The highest locator entry on our active chain (genesis at worst)."""
        for h in locator:
            e = self.index.get(h)
            if e is not None and self.in_active_chain(e):
                return e
        return self.active[0]

    def bodiless_ancestors(self, block_hash: bytes, skip: Container[bytes]) -> list[BlockHeader]:
        """``block_hash`` and its ancestors that lack a body, oldest first.

        Walks down while some body is missing below (``chain_has_data`` is
        false), and stops at a failed entry or one in ``skip`` (already asked
        for), so a caller that skips what it asked before pays only for what
        is new. Walks the index only: what a header session asks bodies for is
        the branch it actually reached, not the headers it was sent.
        """
        out: list[BlockHeader] = []
        e = self.index.get(block_hash)
        while e is not None and not e.chain_has_data and not e.status.failed:
            if e.hash in skip:
                break
            if not e.has_data:
                out.append(e.header)
            e = e.parent
        out.reverse()
        return out

    def headers_after(
        self, locator: Iterable[bytes], stop: bytes | None = None, limit: int = 2000
    ) -> list[BlockHeader]:
        fork = self.find_fork(locator)
        limit = min(limit, MAX_HEADERS_PER_MESSAGE)
        out = []
        for h in range(fork.height + 1, min(fork.height + 1 + limit, len(self.active))):
            e = self.active[h]
            out.append(e.header)
            if stop is not None and e.hash == stop:
                break
        return out

    def branch_status(self, e: IndexEntry) -> str:
        if self.in_active_chain(e):
            return "active"
        if e.status.failed:
            return "invalid"
        if not e.chain_has_data:
            return "headers-only"
        return "valid-fork"

    def work_threshold(self) -> int:
        """Least work a branch needs before any of it is stored."""
        return rules.work_threshold(self.tip.chain_work, self.params)

    def branch_work(self, header: BlockHeader) -> int | None:
        """Chain work with ``header`` on top, or None if its parent is unknown.

        Reads only: the network thread calls it (through the node) to drop
        low-work blocks before their signatures are checked.
        """
        parent = self.index.get(header.prev_hash)
        if parent is None:
            return None
        return parent.chain_work + block_work(bits_to_target(header.bits))

    def low_work(self, header: BlockHeader) -> bool:
        """True for a new header on a known, sound parent whose branch (with
        the orphans pooled on it) stays below :meth:`work_threshold`.

        A child of an invalid block is refused as such, not ignored as light.
        Reads only, and never the header's own PoW (check that first): the
        network checks this before a gossiped block's signatures.
        """
        if not self.active or header.hash in self.index:
            return False
        parent = self.index.get(header.prev_hash)
        if parent is None or parent.status.failed or self._descends_from_failed(parent):
            return False
        work = parent.chain_work + block_work(bits_to_target(header.bits))
        return work + self.orphans.extension_work(header.hash) < self.work_threshold()

    @staticmethod
    def _better(a: IndexEntry, b: IndexEntry | None) -> bool:
        if b is None:
            return True
        return (a.chain_work, -a.seq) > (b.chain_work, -b.seq)

    def _fork_point(self, e: IndexEntry) -> IndexEntry | None:
        if not self.active:
            return None
        if e.height > self.height:
            e = e.ancestor(self.height)
        while not self.in_active_chain(e):
            assert e.parent is not None
            e = e.parent
        return e

    def _descends_from_failed(self, e: IndexEntry) -> bool:
        for f in self._failed:
            if f.height <= e.height and e.ancestor(f.height) is f:
                return True
        return False
