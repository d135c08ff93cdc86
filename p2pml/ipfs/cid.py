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
import queue
import threading
from collections import deque
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
    return _MH_PREFIX + hashlib.sha256(block).digest()


_MH_PREFIX = bytes((_SHA2_256, 32))


@dataclass(frozen=True)
class _Node:
    multihash: bytes
    tsize: int  # block size plus the tsize of every descendant (dag-pb "Tsize")
    filesize: int  # file bytes under this node (UnixFS "filesize")


def _leaf_frame(n: int) -> tuple[bytes, bytes, int]:
    """(bytes before, bytes after) the ``n`` file bytes of a leaf block, and its size."""
    unixfs_head = _field_varint(1, _UNIXFS_FILE)
    if n:  # an empty file has no Data field at all (go-unixfs omits it)
        unixfs_head += _varint(2 << 3 | 2) + _varint(n)
    unixfs_tail = _field_varint(3, n)
    unixfs_len = len(unixfs_head) + n + len(unixfs_tail)
    block_head = _varint(1 << 3 | 2) + _varint(unixfs_len) + unixfs_head
    return block_head, unixfs_tail, len(block_head) + n + len(unixfs_tail)


# Every leaf but the last is full: its framing is a constant, hashed once here.
_FULL_HEAD, _FULL_TAIL, _FULL_BLOCK = _leaf_frame(CHUNK_SIZE)
_FULL_HEAD_HASH = hashlib.sha256(_FULL_HEAD)


def _full_leaf_multihash(*parts: bytes | bytearray | memoryview) -> bytes:
    """Multihash of a full leaf whose 256 KiB of data is ``parts`` joined."""
    h = _FULL_HEAD_HASH.copy()
    for part in parts:
        h.update(part)  # hashlib drops the GIL for buffers > 2 KiB
    h.update(_FULL_TAIL)
    return _MH_PREFIX + h.digest()


def _leaf(chunk: bytes | bytearray | memoryview) -> _Node:
    # Hash header + chunk incrementally: no copy of the 256 KiB payload.
    if len(chunk) == CHUNK_SIZE:
        return _Node(_full_leaf_multihash(chunk), _FULL_BLOCK, CHUNK_SIZE)
    head, tail, block_len = _leaf_frame(len(chunk))
    h = hashlib.sha256(head)
    h.update(chunk)
    h.update(tail)
    return _Node(_MH_PREFIX + h.digest(), block_len, len(chunk))


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

    Pieces that hold whole leaves are hashed in place; the rest are gathered
    in one fixed 256 KiB buffer (a copy that costs less than it saves: hashing
    from that cache-hot buffer is faster than hashing the caller's bytes).
    """

    def __init__(self) -> None:
        self._buf = bytearray(CHUNK_SIZE)
        self._fill = 0  # bytes of the current leaf held in _buf
        self._levels: list[list[_Node]] = [[]]
        self.size = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        view = _byte_view(data)
        n = len(view)
        self.size += n
        pos = 0
        if self._fill:
            pos = min(CHUNK_SIZE - self._fill, n)
            self._buf[self._fill : self._fill + pos] = view[:pos]
            self._fill += pos
            if self._fill < CHUNK_SIZE:
                return
            self._push_full_leaf(_full_leaf_multihash(self._buf))
            self._fill = 0
        while n - pos >= CHUNK_SIZE:
            self._push_full_leaf(_full_leaf_multihash(view[pos : pos + CHUNK_SIZE]))
            pos += CHUNK_SIZE
        if pos < n:
            self._buf[: n - pos] = view[pos:]
            self._fill = n - pos

    def _push_full_leaf(self, multihash: bytes) -> None:
        self._push(0, _Node(multihash, _FULL_BLOCK, CHUNK_SIZE))

    def _push(self, level: int, node: _Node) -> None:
        if level == len(self._levels):
            self._levels.append([])
        pending = self._levels[level]
        if len(pending) == MAX_LINKS:
            self._push(level + 1, _parent(pending))
            pending = self._levels[level] = []
        pending.append(node)

    def finish(self) -> str:
        # A file of whole leaves has no partial one; the empty file has one, empty.
        if self._fill or self.size == 0:
            self._push(0, _leaf(memoryview(self._buf)[: self._fill]))
            self._fill = 0
        return self._root()

    def _root(self) -> str:
        level = 0
        while True:
            pending = self._levels[level]
            if level == len(self._levels) - 1 and len(pending) == 1:
                return b58encode(pending[0].multihash)
            self._push(level + 1, _parent(pending))
            self._levels[level] = []
            level += 1


class ThreadedCidBuilder(CidBuilder):
    """A :class:`CidBuilder` that hashes some of the leaves in a helper thread.

    For a caller already off the event loop (the fetch writer thread) that
    must keep up with a burst of data: leaves are independent, so two threads
    hash them at up to twice the speed of one. A full leaf goes to the helper
    while it has fewer than ``HELPER_LEAVES`` queued, and is hashed inline
    otherwise, so the split adapts to whichever thread gets the CPU; the tree
    still takes the leaves in file order.

    Leaves are kept as views of the caller's ``bytes`` (immutable, so safe to
    hash in another thread), not copied: with the copy into a leaf buffer the
    writer thread spent ~10% more CPU on a 100 MB fetch. Other buffers, which
    the caller may reuse, are copied first. Memory: the current leaf plus at
    most ``HELPER_LEAVES`` leaves.

    Call :meth:`close` (``finish`` does) so the helper thread ends.
    """

    HELPER_LEAVES = 4

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[memoryview] = []  # the current leaf, in pieces
        self._parts_len = 0
        self._todo: queue.SimpleQueue[list[memoryview] | None] = queue.SimpleQueue()
        self._results: queue.SimpleQueue[bytes | BaseException] = queue.SimpleQueue()
        self._order: deque[bytes | None] = deque()  # multihash, or None: the helper's next
        self._at_helper = 0
        self._thread = threading.Thread(target=self._help, name="cid-leaf-hasher", daemon=True)
        self._thread.start()

    def _help(self) -> None:
        while (parts := self._todo.get()) is not None:
            try:
                self._results.put(_full_leaf_multihash(*parts))
            except BaseException as exc:  # reported to the owner, never lost
                self._results.put(exc)

    def update(self, data: bytes | bytearray | memoryview) -> None:
        view = _byte_view(data)
        if not isinstance(view.obj, bytes):
            view = memoryview(bytes(view))
        n = len(view)
        self.size += n
        pos = 0
        while pos < n:
            take = min(CHUNK_SIZE - self._parts_len, n - pos)
            self._parts.append(view[pos : pos + take])
            self._parts_len += take
            pos += take
            if self._parts_len == CHUNK_SIZE:
                parts, self._parts, self._parts_len = self._parts, [], 0
                self._full_leaf(parts)

    def _full_leaf(self, parts: list[memoryview]) -> None:
        if self._at_helper < self.HELPER_LEAVES:
            self._todo.put(parts)
            self._at_helper += 1
            self._order.append(None)
        elif self._order:
            self._order.append(_full_leaf_multihash(*parts))
        else:  # nothing pending: straight into the tree
            self._push_full_leaf(_full_leaf_multihash(*parts))
            return
        self._collect(wait=False)

    def _collect(self, wait: bool) -> None:
        """Move finished leaves, in order, into the tree."""
        while self._order:
            multihash = self._order[0]
            if multihash is None:
                if not wait and self._results.empty():
                    return
                result = self._results.get()
                self._at_helper -= 1
                if isinstance(result, BaseException):
                    raise result
                multihash = result
            self._order.popleft()
            self._push_full_leaf(multihash)

    def finish(self) -> str:
        try:
            self._collect(wait=True)
        finally:
            self.close()
        if self._parts_len:
            head, tail, block_len = _leaf_frame(self._parts_len)
            h = hashlib.sha256(head)
            for part in self._parts:
                h.update(part)
            h.update(tail)
            self._push(0, _Node(_MH_PREFIX + h.digest(), block_len, self._parts_len))
            self._parts, self._parts_len = [], 0
        return super().finish()  # the empty file's leaf, then the tree

    def close(self) -> None:
        """Stop the helper thread (idempotent); results not collected are dropped."""
        if self._thread.is_alive():
            self._todo.put(None)
            self._thread.join()


def _byte_view(data: bytes | bytearray | memoryview) -> memoryview:
    view = memoryview(data)
    return view if view.ndim == 1 and view.itemsize == 1 else view.cast("B")


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
