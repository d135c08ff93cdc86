"""Blocks whose parent is not known yet, bounded by count and bytes."""

from __future__ import annotations

from collections import OrderedDict

from p2pml.chain.encoding import encode_block
from p2pml.chain.pow import bits_to_target, block_work
from p2pml.chain.types import Block

ORPHAN_MAX_COUNT = 750
ORPHAN_MAX_BYTES = 32 * 1024 * 1024


class OrphanPool:
    """Blocks whose parent is unknown, bounded by count and bytes (oldest out).

    Each remembers whether it was requested: adopted later, an unrequested
    one is held to the same low-work rule as when it came.
    """

    def __init__(self, max_count: int = ORPHAN_MAX_COUNT, max_bytes: int = ORPHAN_MAX_BYTES):
        self.max_count = max_count
        self.max_bytes = max_bytes
        self._blocks: OrderedDict[bytes, tuple[Block, int, bool]] = OrderedDict()
        self._by_prev: dict[bytes, set[bytes]] = {}
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._blocks)

    def __contains__(self, block_hash: bytes) -> bool:
        return block_hash in self._blocks

    def add(self, block: Block, requested: bool = True) -> None:
        h = block.hash
        if h in self._blocks:
            return
        size = len(encode_block(block))
        self._blocks[h] = (block, size, requested)
        self._by_prev.setdefault(block.prev_hash, set()).add(h)
        self.bytes += size
        while self._blocks and (len(self._blocks) > self.max_count or self.bytes > self.max_bytes):
            self._remove(next(iter(self._blocks)))

    def _remove(self, h: bytes) -> tuple[Block, bool]:
        block, size, requested = self._blocks.pop(h)
        self.bytes -= size
        kids = self._by_prev.get(block.prev_hash)
        if kids is not None:
            kids.discard(h)
            if not kids:
                del self._by_prev[block.prev_hash]
        return block, requested

    def take_children(self, parent_hash: bytes) -> list[tuple[Block, bool]]:
        """The pooled children of ``parent_hash``, each with its ``requested`` flag."""
        return [self._remove(h) for h in list(self._by_prev.get(parent_hash, ()))]

    def extension_work(self, block_hash: bytes) -> int:
        """The most work the pooled descendants of ``block_hash`` add on top
        of it (0 if none): a lighter block whose pooled children put its
        branch ahead is worth keeping. O(pool size) at worst."""
        best = 0
        stack = [(block_hash, 0)]
        while stack:
            h, work = stack.pop()
            best = max(best, work)
            for child in self._by_prev.get(h, ()):
                bits = self._blocks[child][0].header.bits
                stack.append((child, work + block_work(bits_to_target(bits))))
        return best

    def drop_descendants(self, block_hash: bytes) -> list[bytes]:
        """Forget orphans that build on a rejected block: they can never connect."""
        dropped: list[bytes] = []
        stack = [block_hash]
        while stack:
            for child, _ in self.take_children(stack.pop()):
                dropped.append(child.hash)
                stack.append(child.hash)
        return dropped
