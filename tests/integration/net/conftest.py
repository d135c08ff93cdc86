"""Fixtures for in-process network tests: real hosts on loopback TCP."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from p2pml.chain.params import REGTEST, NetworkParams
from p2pml.chain.types import Block
from p2pml.config import P2PSettings
from p2pml.crypto import Identity
from p2pml.net import P2PService, TopicSpec
from p2pml.net.bans import BanStore
from p2pml.net.memory_backend import MemoryChainBackend
from tests.framework.chainbuilder import Builder
from tests.framework.node_backend import ProductionBackend

LOOPBACK = ("/ip4/127.0.0.1/tcp/0",)


def load(backend: Any, blocks: list[Block]) -> None:
    if isinstance(backend, ProductionBackend):
        backend.load(blocks, int(time.time()))
        return
    for b in blocks:
        up = backend.chain.accept_block(b, int(backend.clock()))
        backend.source.apply(up)
        assert up.error is None, up.error


class Net:
    """Creates nodes and stops every one of them at teardown. ``kind``: the
    chain backend behind each node, "memory" (MemoryChainBackend) or
    "production" (the node's GossipHandler and services over SQLite)."""

    def __init__(self, kind: str = "memory", base: Path | None = None) -> None:
        self.nodes: list[P2PService] = []
        self.kind = kind
        self.base = base
        self._production: list[ProductionBackend] = []

    async def node(
        self,
        params: NetworkParams = REGTEST,
        blocks: list[Block] | None = None,
        bootstrap: tuple[str, ...] = (),
        bans: BanStore | Path | None = None,
        identity: Identity | None = None,
        request_timeout: float = 10.0,
        topics: list[TopicSpec] | None = None,
        listen: tuple[str, ...] = LOOPBACK,
        **settings: Any,
    ) -> P2PService:
        svc = P2PService(
            identity or Identity.generate(),
            params,
            P2PSettings(listen=listen, bootstrap=bootstrap, **settings),
            bans=bans,
            request_timeout=request_timeout,
        )
        be: Any
        if self.kind == "production":
            assert self.base is not None
            be = ProductionBackend(params, self.base / f"node{len(self.nodes)}", svc)
            self._production.append(be)
        else:
            be = MemoryChainBackend(params)
        if blocks:
            load(be, blocks)
        for spec in topics or ():
            svc.topics.register(spec)
        await svc.start(be)
        self.nodes.append(svc)
        return svc

    async def close(self) -> None:
        for n in self.nodes:
            await n.stop()
        for be in self._production:
            be.close()


def backend(svc: P2PService) -> Any:
    """The node's chain backend (``chain``, ``params``, ``headers_after``...)."""
    be = svc.backend
    assert isinstance(be, MemoryChainBackend | ProductionBackend)
    return be


def height(svc: P2PService) -> int:
    return backend(svc).chain.height


def tip(svc: P2PService) -> bytes:
    return backend(svc).chain.tip.hash


@pytest.fixture
def backend_kind() -> str:
    """Overridden (parametrized) by modules that run over both backends."""
    return "memory"


@pytest.fixture
async def net(backend_kind: str, tmp_path: Path) -> AsyncIterator[Net]:
    n = Net(backend_kind, tmp_path)
    try:
        yield n
    finally:
        await n.close()


@pytest.fixture(scope="session")
def chain2000() -> list[Block]:
    b = Builder(REGTEST)
    return b.chain(REGTEST.genesis_hash, 2000)


@pytest.fixture
def builder() -> Iterator[Builder]:
    yield Builder(REGTEST)


OTHER_GENESIS = dataclasses.replace(REGTEST, genesis_message=b"another p2pml genesis")
