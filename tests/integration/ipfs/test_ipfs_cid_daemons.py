"""Our CIDv0 function against both real daemons' default importers.

js-ipfs gets ``add`` with no parameters at all (its defaults), the embedded
Kubo its library ``AddFile`` defaults. Sizes cover the empty file, one byte,
the chunk boundary and a two-level tree (more than 174 leaves).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import aioipfs
import pytest

from p2pml.ipfs.cid import CHUNK_SIZE, MAX_LINKS, cid_of_file
from p2pml.ipfs.embedded import EmbeddedBackend
from tests.framework.ipfs_daemon import JsIpfsDaemon

SIZES = [
    0,
    1,
    CHUNK_SIZE,
    CHUNK_SIZE + 1,
    MAX_LINKS * CHUNK_SIZE,  # exactly one full level
    MAX_LINKS * CHUNK_SIZE + 1,  # ~45.6 MB: two levels
    MAX_LINKS * CHUNK_SIZE + 3 * CHUNK_SIZE + 777,
]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[int, Path]]:
    root = tmp_path_factory.mktemp("cidfiles")
    out = {}
    for size in SIZES:
        path = root / f"f{size}"
        path.write_bytes(random.Random(size).randbytes(size))
        out[size] = path
    yield out


@pytest.fixture(scope="module")
def ours(files: dict[int, Path]) -> dict[int, str]:
    return {size: cid_of_file(path) for size, path in files.items()}


async def test_cid_matches_jsipfs_defaults(
    shared_jsipfs: JsIpfsDaemon, files: dict[int, Path], ours: dict[int, str]
) -> None:
    client = aioipfs.AsyncIPFS(maddr=shared_jsipfs.api_multiaddr)
    try:
        for size, path in files.items():
            reply = await client.core.add_bytes(path.read_bytes())
            assert reply["Hash"] == ours[size], f"size {size}"
    finally:
        await client.close()


async def test_cid_matches_embedded_kubo(
    tmp_path: Path, files: dict[int, Path], ours: dict[int, str]
) -> None:
    backend = EmbeddedBackend(tmp_path / "kubo", ("/ip4/127.0.0.1/tcp/0",), ())
    await backend.start()
    try:
        for size, path in files.items():
            kubo_cid, local_cid = await backend.add_file(path, None)
            assert kubo_cid == ours[size] == local_cid, f"size {size}"
    finally:
        await backend.close()
