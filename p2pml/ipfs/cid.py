"""CIDv0 of a file, computed exactly like Kubo's and js-ipfs's default importer.

Parameters of that importer (``ipfs add`` with no options): fixed-size chunker
``size-262144``, balanced DAG layout with at most 174 links per node, dag-pb
nodes holding UnixFS ``File`` protobufs (no raw leaves), sha2-256 multihash,
CIDv0 (the bare multihash in base58btc, ``Qm...``).

We recompute CIDs locally so that fetched bytes are verified independently
of the daemon that served them. The computation streams: memory use is one
chunk plus one pending list of links per tree level, whatever the file size.
The protobufs are encoded by hand; they are tiny and their field order is
fixed by the canonical dag-pb form (Links before Data).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from p2pml.cidv0 import SHA2_256, b58decode, b58encode, is_cidv0

__all__ = ["b58decode", "b58encode", "cid_of_bytes", "cid_of_file", "is_cidv0"]

CHUNK_SIZE = 262_144
MAX_LINKS = 174

_SHA2_256 = SHA2_256
_UNIXFS_FILE = 2


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field_bytes(field: int, data: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(data)) + data


def _field_varint(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(value)


def _cidv0(block: bytes) -> bytes:
    """The multihash (= CIDv0 bytes) of an encoded block."""
    return bytes((_SHA2_256, 32)) + hashlib.sha256(block).digest()


@dataclass(frozen=True)
class _Node:
    multihash: bytes
    tsize: int  # block size plus the tsize of every descendant (dag-pb "Tsize")
    filesize: int  # file bytes under this node (UnixFS "filesize")


def _leaf(chunk: bytes | bytearray | memoryview) -> _Node:
    # Hash header + chunk incrementally: no copy of the 256 KiB payload.
    unixfs_head = _field_varint(1, _UNIXFS_FILE)
    if len(chunk):  # an empty file has no Data field at all (go-unixfs omits it)
        unixfs_head += _varint(2 << 3 | 2) + _varint(len(chunk))
    unixfs_tail = _field_varint(3, len(chunk))
    unixfs_len = len(unixfs_head) + len(chunk) + len(unixfs_tail)
    block_head = _varint(1 << 3 | 2) + _varint(unixfs_len) + unixfs_head
    h = hashlib.sha256(block_head)
    h.update(chunk)
    h.update(unixfs_tail)
    block_len = len(block_head) + len(chunk) + len(unixfs_tail)
    return _Node(bytes((_SHA2_256, 32)) + h.digest(), block_len, len(chunk))


def _parent(children: list[_Node]) -> _Node:
    filesize = sum(c.filesize for c in children)
    unixfs = _field_varint(1, _UNIXFS_FILE) + _field_varint(3, filesize)
    for c in children:  # repeated uint64 blocksizes, not packed (proto2)
        unixfs += _field_varint(4, c.filesize)
    links = b"".join(
        # PBLink: Hash, Name (always present, empty), Tsize
        _field_bytes(
            2, _field_bytes(1, c.multihash) + _field_bytes(2, b"") + _field_varint(3, c.tsize)
        )
        for c in children
    )
    block = links + _field_bytes(1, unixfs)
    return _Node(_cidv0(block), len(block) + sum(c.tsize for c in children), filesize)


class CidBuilder:
    """Incremental CIDv0 computation: feed bytes in any pieces, then ``finish``.

    Bottom-up grouping of leaves into parents of ``MAX_LINKS`` children gives
    the same tree as go-unixfs's balanced builder: every node but the last of
    each level is full, and a level is closed only once more data follows.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._levels: list[list[_Node]] = [[]]
        self.size = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self.size += len(data)
        view = memoryview(data)
        if self._buf:
            take = min(CHUNK_SIZE - len(self._buf), len(view))
            self._buf += view[:take]
            view = view[take:]
            if len(self._buf) < CHUNK_SIZE or not len(view):
                return
            self._push(0, _leaf(self._buf))
            self._buf = bytearray()
        # Whole chunks straight from the caller's buffer. The last (possibly
        # full) piece is kept back until more data or finish() arrives.
        while len(view) > CHUNK_SIZE:
            self._push(0, _leaf(view[:CHUNK_SIZE]))
            view = view[CHUNK_SIZE:]
        self._buf += view

    def _push(self, level: int, node: _Node) -> None:
        if level == len(self._levels):
            self._levels.append([])
        pending = self._levels[level]
        if len(pending) == MAX_LINKS:
            self._push(level + 1, _parent(pending))
            pending = self._levels[level] = []
        pending.append(node)

    def finish(self) -> str:
        if self._buf or self.size == 0:
            self._push(0, _leaf(self._buf))
            self._buf = bytearray()
        level = 0
        while True:
            pending = self._levels[level]
            if level == len(self._levels) - 1 and len(pending) == 1:
                return b58encode(pending[0].multihash)
            self._push(level + 1, _parent(pending))
            self._levels[level] = []
            level += 1


def cid_of_stream(
    stream: BinaryIO, progress: Callable[[int], None] | None = None, read_size: int = CHUNK_SIZE
) -> str:
    """CIDv0 of everything readable from ``stream``."""
    builder = CidBuilder()
    while chunk := stream.read(read_size):
        builder.update(chunk)
        if progress is not None:
            progress(builder.size)
    return builder.finish()


def cid_of_file(path: Path, progress: Callable[[int], None] | None = None) -> str:
    """CIDv0 of the file at ``path``, streaming (constant memory)."""
    with path.open("rb") as f:
        return cid_of_stream(f, progress)


def cid_of_bytes(data: bytes) -> str:
    builder = CidBuilder()
    builder.update(data)
    return builder.finish()


def cid_of_chunks(chunks: Iterable[bytes]) -> str:
    builder = CidBuilder()
    for chunk in chunks:
        builder.update(chunk)
    return builder.finish()
