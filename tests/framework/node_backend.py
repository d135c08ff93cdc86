"""The production chain backend, in process: the node's GossipHandler over a
real ChainManager and SQLite store, mempool, task, verification and relay
services, as ``p2pml.node.node.Node`` wires them (no IPFS, no training: the
verifier has a dataset store that has nothing, so a block with results
waits for data, as on a node whose IPFS is down).

In-process network tests run over it as well as over the in-memory
``MemoryChainBackend``, so what the node really accepts, ignores and
relays is what they exercise.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from p2pml.chain.params import NetworkParams
from p2pml.chain.types import Block
from p2pml.crypto import Identity
from p2pml.errors import DaemonUnavailable
from p2pml.net import P2PService
from p2pml.node.chain_manager import ChainManager
from p2pml.node.gossip import GossipHandler
from p2pml.node.mempool import Mempool
from p2pml.node.relay import Relay
from p2pml.node.tasks import TaskService
from p2pml.node.transfers import TransferService
from p2pml.node.verification import VerificationService
from p2pml.node.verifier import Verifier
from p2pml.store import BlockStore


class _NoData:
    async def fetch(self, cid: str, max_bytes: int | None = None) -> Path:
        raise DaemonUnavailable(f"no IPFS in this test: {cid}")


class _NoChecker:
    async def verify(self, *_a: Any, **_kw: Any) -> None:
        raise AssertionError("nothing is fetched, so nothing is re-run")


class ProductionBackend(GossipHandler):
    def __init__(self, params: NetworkParams, data_dir: Path, p2p: P2PService) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.params = params
        self.store = BlockStore.open(data_dir / "chain.sqlite", params)
        self.jobs: set[asyncio.Task[None]] = set()
        verifier = Verifier(_NoData(), _NoChecker())  # type: ignore[arg-type]
        self.mgr = ChainManager(params, self.store, verdicts=verifier.verdict)
        mempool = Mempool(params)
        relay = Relay(self.mgr, p2p)
        me = Identity.generate()
        tasks = TaskService(me, self.mgr, mempool, verifier, relay, lambda: None)
        verification = VerificationService(self.mgr, verifier, tasks, relay, p2p, self._spawn)
        transfers = TransferService(me, self.mgr, mempool, verifier, relay, lambda: None)
        super().__init__(self.mgr, tasks, verification, relay, p2p, transfers)

    def _spawn(self, coro: Awaitable[None], name: str) -> asyncio.Task[None]:
        async def run() -> None:
            await coro

        task = asyncio.ensure_future(run())
        self.jobs.add(task)
        task.add_done_callback(self.jobs.discard)
        return task

    def load(self, blocks: list[Block], now: int) -> None:
        """Connect ``blocks`` directly (the test's own chain), persisted."""
        for b in blocks:
            up = self.chain.accept_block(b, now)
            assert up.error is None, up.error
            self.store.apply_many([up], self.chain.tip.hash)

    def close(self) -> None:
        for t in self.jobs:
            t.cancel()
        self.store.close()
