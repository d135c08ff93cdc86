"""CIDv0 computation: known vectors and streaming invariance (no daemon needed).

The comparison against real daemons is in tests/integration/ipfs.
"""

from __future__ import annotations

import io
import os
import random
import threading
from pathlib import Path

import pytest

from p2pml.ipfs.cid import (
    CHUNK_SIZE,
    MAX_LINKS,
    CidBuilder,
    ThreadedCidBuilder,
    b58decode,
    b58encode,
    cid_of_bytes,
    cid_of_file,
    cid_of_stream,
    is_cidv0,
)

# Well-known CIDs produced by `ipfs add` (Kubo and js-ipfs agree).
KNOWN = {
    b"": "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH",
    b"hello world\n": "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o",
}


@pytest.mark.parametrize(("data", "cid"), KNOWN.items())
def test_known_vectors(data: bytes, cid: str) -> None:
    assert cid_of_bytes(data) == cid


def test_split_points_do_not_matter() -> None:
    rng = random.Random(7)
    data = rng.randbytes(3 * CHUNK_SIZE + 12345)
    expected = cid_of_bytes(data)
    for _ in range(5):
        builder = CidBuilder()
        i = 0
        while i < len(data):
            n = rng.randint(1, 2 * CHUNK_SIZE)
            builder.update(data[i : i + n])
            i += n
        assert builder.finish() == expected
    assert cid_of_stream(io.BytesIO(data), read_size=1000) == expected


def test_chunk_boundaries_give_distinct_cids() -> None:
    sizes = [CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 2 * CHUNK_SIZE]
    cids = {cid_of_bytes(b"\0" * n) for n in sizes}
    assert len(cids) == len(sizes)


def test_file_and_bytes_agree(tmp_path: Path) -> None:
    data = os.urandom(CHUNK_SIZE * 2 + 5)
    path = tmp_path / "f"
    path.write_bytes(data)
    seen: list[int] = []
    assert cid_of_file(path, seen.append) == cid_of_bytes(data)
    assert seen[-1] == len(data)


def test_is_cidv0() -> None:
    assert is_cidv0(KNOWN[b""])
    assert not is_cidv0("bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi")
    assert not is_cidv0("Qm" + "0" * 44)  # '0' is not base58
    assert not is_cidv0("QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5")


def test_base58_roundtrip() -> None:
    for raw in (b"", b"\0", b"\0\0abc", os.urandom(34)):
        assert b58decode(b58encode(raw)) == raw


def _feed(builder: CidBuilder, data: bytes, rng: random.Random) -> None:
    """Feed ``data`` in random pieces of random buffer types; reuse mutable ones after."""
    i = 0
    while i < len(data):
        n = rng.choice([rng.randint(1, 10), rng.randint(1, 2 * CHUNK_SIZE), 262_135, CHUNK_SIZE])
        piece: bytes | bytearray | memoryview = data[i : i + n]
        kind = rng.randrange(4)
        if kind == 1:
            piece = bytearray(piece)
        elif kind == 2:
            piece = memoryview(piece)
        elif kind == 3:
            piece = memoryview(bytearray(piece)).toreadonly()  # read-only, yet mutable
        builder.update(piece)
        # A caller may reuse its buffer at once: the builder must not have kept it.
        if isinstance(piece, bytearray):
            piece[:] = b"\xff" * len(piece)
        elif isinstance(piece, memoryview) and isinstance(piece.obj, bytearray):
            piece.obj[:] = b"\xee" * len(piece.obj)
        i += n


@pytest.mark.parametrize("builder_cls", [CidBuilder, ThreadedCidBuilder])
def test_builders_agree_whatever_the_pieces(builder_cls: type[CidBuilder]) -> None:
    rng = random.Random(11)
    sizes = [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 2 * CHUNK_SIZE, 9 * CHUNK_SIZE + 7]
    for size in sizes + [rng.randint(0, 12 * CHUNK_SIZE) for _ in range(20)]:
        data = rng.randbytes(size)
        builder = builder_cls()
        _feed(builder, data, rng)
        assert builder.size == size
        assert builder.finish() == cid_of_bytes(data), size


@pytest.mark.parametrize("leaves", [MAX_LINKS, MAX_LINKS + 1])
def test_threaded_builder_across_a_full_level(leaves: int) -> None:
    """Past 174 leaves the tree gains a level; leaves hashed by either thread stay in order."""
    data = random.Random(leaves).randbytes(leaves * CHUNK_SIZE + 3)
    builder = ThreadedCidBuilder()
    view = memoryview(data)
    for i in range(0, len(data), 262_135):  # the piece size js-ipfs's HTTP chunks give
        builder.update(view[i : i + 262_135])
    assert builder.finish() == cid_of_bytes(data)


def test_threaded_builder_stops_its_thread() -> None:
    before = threading.active_count()
    builder = ThreadedCidBuilder()
    builder.update(os.urandom(10 * CHUNK_SIZE))
    builder.close()
    builder.close()  # idempotent
    assert threading.active_count() == before
    finished = ThreadedCidBuilder()
    finished.update(b"abc")
    finished.finish()
    assert threading.active_count() == before
