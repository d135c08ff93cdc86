"""The block index as consensus sees it: entries with their status and skip
pointers, what one ChainState call changed (``ChainUpdate``), and the
``BlockSource`` port through which it reads stored bodies and undo logs."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Protocol

from p2pml.chain.ledger import UndoLog
from p2pml.chain.types import Block, BlockHeader
from p2pml.errors import ValidationError


class Status(IntEnum):
    HEADER = 1  # header checked, no body yet
    DATA = 2  # body stored and stateless-valid, never connected
    VALID = 3  # connected to the active chain at least once
    INVALID = 4  # failed validation itself
    FAILED_CHILD = 5  # descends from an invalid block

    @property
    def failed(self) -> bool:
        return self in (Status.INVALID, Status.FAILED_CHILD)


def skip_height(height: int) -> int:
    """Bitcoin's skip-list target height: O(log n) ancestor walks."""

    def invert_lowest_one(n: int) -> int:
        return n & (n - 1)

    if height < 2:
        return 0
    if height & 1:
        return invert_lowest_one(invert_lowest_one(height - 1)) + 1
    return invert_lowest_one(height)


@dataclass(eq=False, slots=True)
class IndexEntry:
    hash: bytes
    header: BlockHeader
    parent: IndexEntry | None
    height: int
    chain_work: int
    status: Status = Status.HEADER
    has_data: bool = False
    chain_has_data: bool = False  # this block and every ancestor have bodies
    seq: int = 0  # order in which the full chain of data arrived: tie-break
    invalid_reason: str = ""
    skip: IndexEntry | None = None

    def ancestor(self, height: int) -> IndexEntry:
        if height > self.height or height < 0:
            raise ValueError("no ancestor at that height")
        e: IndexEntry = self
        while e.height != height:
            skip = e.skip
            sh = skip_height(e.height)
            sh_prev = skip_height(e.height - 1)
            if skip is not None and (
                sh == height or (sh > height and not (sh_prev < sh - 2 and sh_prev >= height))
            ):
                e = skip
            else:
                assert e.parent is not None
                e = e.parent
        return e


class BlockSource(Protocol):
    """Read access to what earlier ChainUpdates persisted."""

    def get_block(self, block_hash: bytes) -> Block | None: ...

    def get_undo(self, block_hash: bytes) -> UndoLog | None: ...


@dataclass
class ChainUpdate:
    """Everything one call changed, for the store to write atomically."""

    new_entries: list[IndexEntry] = field(default_factory=list)
    new_blocks: list[Block] = field(default_factory=list)
    status_changed: list[IndexEntry] = field(default_factory=list)
    connected: list[tuple[bytes, UndoLog]] = field(default_factory=list)
    disconnected: list[bytes] = field(default_factory=list)
    state_changes: dict[bytes, Any] = field(default_factory=dict)  # None = delete
    rejected: list[tuple[bytes, str]] = field(default_factory=list)
    waiting: list[tuple[bytes, str]] = field(default_factory=list)  # (block, missing cid)
    orphaned: bool = False
    # Unrequested, lighter than our chain: nothing kept (a header already in
    # the index stays; a new one is not added).
    low_work: bool = False
    # A branch touched here is now ahead of the tip but some ancestor has only
    # its header: the sender should be asked for the missing bodies.
    needs_ancestors: bool = False
    tip_changed: bool = False
    headers_ok: int = 0  # accept_headers: how many headers passed before an error
    headers_work: int = 0  # accept_headers: chain work at the last header that passed
    headers_held: int = 0  # accept_headers: the session's headers held back (too light)
    headers_new_held: int = 0  # accept_headers: how many of those this call added
    error: ValidationError | None = None  # why the submitted object was refused

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error

    @property
    def reorg_depth(self) -> int:
        return len(self.disconnected)

    @property
    def empty(self) -> bool:
        return not (self.new_entries or self.new_blocks or self.status_changed)


@dataclass(frozen=True)
class StoredEntry:
    """An index row as the store keeps it."""

    header: BlockHeader
    status: Status
    has_data: bool
    seq: int
    invalid_reason: str = ""


class MemoryBlockSource:
    """A dict-backed BlockSource for tests and tools."""

    def __init__(self) -> None:
        self.blocks: dict[bytes, Block] = {}
        self.undo: dict[bytes, UndoLog] = {}

    def get_block(self, block_hash: bytes) -> Block | None:
        return self.blocks.get(block_hash)

    def get_undo(self, block_hash: bytes) -> UndoLog | None:
        return self.undo.get(block_hash)

    def apply(self, update: ChainUpdate) -> None:
        for b in update.new_blocks:
            self.blocks[b.hash] = b
        for h, undo in update.connected:
            self.undo[h] = undo
