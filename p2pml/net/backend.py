"""The boundary between the network layer and the node's chain.

The node implements :class:`ChainBackend` (over its SQLite store); the
network layer calls it only from the asyncio loop, never concurrently with
itself for submissions (block and header submissions are serialised by the
service), so an implementation needs no locking.
"""

from __future__ import annotations

import enum
from collections.abc import Container, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from p2pml.chain.types import Block, BlockHeader

if TYPE_CHECKING:
    from p2pml.chain.state import ChainState


class Verdict(enum.Enum):
    """What gossip does with a message after the node looked at it."""

    ACCEPT = "accept"  # valid: relay it
    IGNORE = "ignore"  # not useful (duplicate, late): do not relay, no penalty
    REJECT = "reject"  # invalid: do not relay, penalise the sender


class BlockStatus(enum.Enum):
    ACCEPTED = "accepted"  # stored (connected or on a side chain)
    ORPHAN = "orphan"  # ancestors missing (unknown, or known without body): fetch them
    LOW_WORK = "low-work"  # sent unasked, branch lighter than ours: nothing kept
    DUPLICATE = "duplicate"  # already known
    INVALID = "invalid"  # failed validation; ``reason`` says why


@dataclass(frozen=True)
class BlockOutcome:
    status: BlockStatus
    reason: str = ""  # stable reject reason ("bad-pow", "time-too-new", ...)
    tip_changed: bool = False


@dataclass(frozen=True)
class HeadersOutcome:
    accepted: int  # headers of the batch that are now in the index
    error: str | None = None  # reject reason of the first bad header
    chain_work: int = 0  # cumulative work up to the last accepted header
    # Headers that passed but were held back (their branch is too light to
    # store yet) and that this batch added to the session's pre-sync.
    held_new: int = 0


@dataclass(frozen=True)
class ChainStatus:
    genesis_hash: bytes
    tip_hash: bytes
    height: int
    chain_work: int


class ChainBackend(Protocol):
    """What the network layer needs from the node's chain."""

    def status(self) -> ChainStatus: ...

    def locator(self) -> list[bytes]:
        """Block locator of the active chain (tip first, genesis last)."""
        ...

    def headers_after(
        self, locator: Sequence[bytes], stop: bytes | None, limit: int
    ) -> list[BlockHeader]:
        """Active-chain headers after the fork point of ``locator`` (<= limit)."""
        ...

    def get_blocks(self, hashes: Sequence[bytes]) -> list[Block]:
        """The stored blocks among ``hashes``, in request order (unknown skipped)."""
        ...

    def bodiless_ancestors(self, block_hash: bytes, skip: Container[bytes]) -> list[BlockHeader]:
        """``block_hash`` and its ancestors without a body, oldest first, up to
        the first that has one or is in ``skip``."""
        ...

    def has_block(self, block_hash: bytes) -> bool:
        """True when the body is stored or the block is known invalid."""
        ...

    def low_work(self, header: BlockHeader) -> bool:
        """True when ``header`` builds on a known block but its branch would
        stay lighter than ours (or than the network's minimum chain work):
        the block is dropped before its signatures are checked."""
        ...

    async def submit_block(
        self, block: Block, from_peer: str | None, requested: bool = True
    ) -> BlockOutcome:
        """Validate and store a block (from gossip, sync, or ourselves if None).

        ``requested=False`` (gossip): a block whose branch is lighter than
        ours is not kept at all (``LOW_WORK``)."""
        ...

    async def submit_headers(
        self, headers: Sequence[BlockHeader], from_peer: str
    ) -> HeadersOutcome:
        """Check a batch of headers (each links to the previous); they are
        stored once their branch reaches our work, held per peer until then."""
        ...

    async def on_gossip(self, kind: str, obj: object, from_peer: str) -> Verdict:
        """A decoded, stateless-valid task/result (or other registered kind)."""
        ...


class ChainStateReads:
    """The read-only answers of a :class:`ChainBackend` over a ``ChainState``:
    the same for every backend, so each subclass only names its state."""

    def _state(self) -> ChainState:
        raise NotImplementedError

    def locator(self) -> list[bytes]:
        return list(self._state().locator())

    def headers_after(
        self, locator: Sequence[bytes], stop: bytes | None, limit: int
    ) -> list[BlockHeader]:
        return list(self._state().headers_after(locator, stop, limit))

    def bodiless_ancestors(self, block_hash: bytes, skip: Container[bytes]) -> list[BlockHeader]:
        return list(self._state().bodiless_ancestors(block_hash, skip))

    def has_block(self, block_hash: bytes) -> bool:
        e = self._state().entry(block_hash)
        return e is not None and (e.has_data or e.status.failed)

    def low_work(self, header: BlockHeader) -> bool:
        return self._state().low_work(header)
