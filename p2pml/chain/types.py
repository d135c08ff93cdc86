"""Consensus data types: block header, block, transactions.

Every type is a frozen dataclass. A transaction type registers a wire tag in
:mod:`p2pml.chain.encoding` and a handler in :mod:`p2pml.chain.txrules` that
adds its own contextual checks and state changes (undone through the generic
undo log), so new types slot in without touching the block rules.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:
    from p2pml.chain.tasks import ResultTx, TaskTx

from p2pml.chain.hashing import sha256d

# version u32 | height u32 | prev 32 | tx_root 32 | time u64 | bits u32 | nonce u64
HEADER_FORMAT = ">II32s32sQIQ"
HEADER_SIZE = struct.calcsize(HEADER_FORMAT)  # 92
NONCE_OFFSET = HEADER_SIZE - 8
_HEADER = struct.Struct(HEADER_FORMAT)


@dataclass(frozen=True, slots=True)
class BlockHeader:
    version: int
    height: int
    prev_hash: bytes
    tx_root: bytes
    time: int
    bits: int
    nonce: int

    def serialize(self) -> bytes:
        return _HEADER.pack(
            self.version,
            self.height,
            self.prev_hash,
            self.tx_root,
            self.time,
            self.bits,
            self.nonce,
        )

    @staticmethod
    def deserialize(data: bytes) -> BlockHeader:
        """Caller guarantees ``len(data) == HEADER_SIZE`` (see encoding)."""
        return BlockHeader(*_HEADER.unpack(data))

    @property
    def hash(self) -> bytes:
        return sha256d(self.serialize())


@dataclass(frozen=True, slots=True)
class Coinbase:
    """Pays the block reward (plus fees, once they exist) to ``miner``.

    ``height`` makes every coinbase unique; ``extra`` is free for miners.
    """

    height: int
    miner: bytes
    amount: int
    extra: bytes = b""


@dataclass(frozen=True, slots=True)
class Allocation:
    """Genesis only (devnet, regtest): credit ``amount`` to ``pubkey``."""

    pubkey: bytes
    amount: int


Transaction = Union[Coinbase, Allocation, "TaskTx", "ResultTx"]


@dataclass(frozen=True)
class Block:
    header: BlockHeader
    txs: tuple[Transaction, ...]
    # Cached encodings are filled by the decoder/builder; never part of equality.
    _raw: bytes | None = field(default=None, compare=False, repr=False)

    @cached_property
    def hash(self) -> bytes:
        return self.header.hash

    @property
    def height(self) -> int:
        return self.header.height

    @property
    def prev_hash(self) -> bytes:
        return self.header.prev_hash
