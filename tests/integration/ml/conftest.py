"""Shared fixtures of the ml integration tests.

``DirStore`` is a small directory-backed stand-in for the real IPFS
``DatasetStore`` (content addressed by CIDv0, verified on fetch); the
real-IPFS round trip is the lead's integration test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine

from p2pml.errors import CIDMismatch, DatasetError
from p2pml.ipfs.cid import cid_of_bytes
from p2pml.ml.pool import TrainingPool


class DirStore:
    """Content-addressed files in one directory (implements ``DatasetStore``)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.added: list[str] = []

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def add(self, path: Path) -> str:
        return await self.add_bytes(path.read_bytes())

    async def add_bytes(self, data: bytes) -> str:
        cid = cid_of_bytes(data)
        (self.root / cid).write_bytes(data)
        self.added.append(cid)
        return cid

    async def fetch(self, cid: str, max_bytes: int | None = None) -> Path:
        path = self.root / cid
        if not path.exists():
            raise DatasetError(f"no content {cid}")
        if cid_of_bytes(path.read_bytes()) != cid:
            raise CIDMismatch(cid)
        return path

    async def has(self, cid: str) -> bool:
        return (self.root / cid).exists()

    async def pin(self, cid: str) -> None:
        return None

    @property
    def state(self) -> str:
        return "ready"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("ml-data")
    load_diabetes(as_frame=True).frame.to_csv(d / "diabetes.csv", index=False)
    wine = load_wine(as_frame=True).frame
    wine["target"] = wine["target"].map({0: "barolo", 1: "grignolino", 2: "barbera"})
    wine.to_csv(d / "wine.csv", index=False)
    load_breast_cancer(as_frame=True).frame.to_csv(d / "cancer.csv", index=False)
    return d


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pool() -> AsyncIterator[TrainingPool]:
    p = TrainingPool(2)
    await p.start()
    yield p
    await p.close()
