"""CIDv0 computation: known vectors and streaming invariance (no daemon needed).

The comparison against real daemons is in tests/integration/ipfs.
"""

from __future__ import annotations

import io
import os
import random
from pathlib import Path

import pytest

from p2pml.ipfs.cid import (
    CHUNK_SIZE,
    CidBuilder,
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
