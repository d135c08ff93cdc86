"""Fakes of the node services' ports (p2pml.node.ports) for in-process tests.

``FakeChain`` is the chain manager's port over a real, pure ChainState in
memory (no SQLite, no lock): consensus is the real one; only I/O is faked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

from p2pml.chain.index import ChainUpdate
from p2pml.chain.params import REGTEST, NetworkParams
from p2pml.chain.state import ChainState
from p2pml.chain.taskspec import TaskSpec
from p2pml.chain.types import Block, PoolTx, ResultTx
from p2pml.errors import NetworkError, TrainingError
from p2pml.ml.trainer import TrainingOutcome
from p2pml.node.ports import UpdateListener
from tests.framework.chainbuilder import NOW, Node


class FakeChain:
    def __init__(self, params: NetworkParams = REGTEST) -> None:
        self.params = params
        self.node = Node(params)
        self._tip: list[UpdateListener] = []
        self._any: list[UpdateListener] = []

    @property
    def chain(self) -> ChainState:
        return self.node.chain

    def on_tip_changed(self, fn: UpdateListener) -> None:
        self._tip.append(fn)

    def on_update(self, fn: UpdateListener) -> None:
        self._any.append(fn)

    def _report(self, update: ChainUpdate) -> ChainUpdate:
        if update.tip_changed:
            for fn in self._tip:
                fn(update)
        for fn in self._any:
            fn(update)
        return update

    async def submit_block(
        self, block: Block, source: str = "local", requested: bool = True
    ) -> ChainUpdate:
        up = self.node.chain.accept_block(block, NOW, requested)
        self.node.source.apply(up)
        return self._report(up)

    async def retry_waiting(self) -> ChainUpdate:
        up = self.node.chain.retry_waiting()
        self.node.source.apply(up)
        return self._report(up)


class FakeRelay:
    def __init__(self) -> None:
        self.sent: list[PoolTx] = []

    async def tx(self, tx: PoolTx) -> None:
        self.sent.append(tx)


@dataclass
class FakeGossip:
    published: list[tuple[str, bytes]] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)
    penalties: list[tuple[str, str, int]] = field(default_factory=list)
    fail: bool = False

    async def publish(self, kind: str, payload: bytes) -> None:
        if self.fail:
            raise NetworkError("p2p service is not running")
        self.published.append((kind, payload))

    async def publish_block(self, block: Block) -> None:
        if self.fail:
            raise NetworkError("p2p host stopped")
        self.blocks.append(block)

    banned_listeners: list[Any] = field(default_factory=list)

    def penalise(self, peer_id: str, reason: str, penalty: int) -> None:
        self.penalties.append((peer_id, reason, penalty))

    def on_banned(self, fn: Any) -> None:
        self.banned_listeners.append(fn)

    def ban(self, peer_id: str) -> None:
        for fn in self.banned_listeners:
            fn(peer_id)


class Jobs:
    """A Spawn that runs each job as a task and lets the test await them all."""

    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[None]] = []
        self.names: list[str] = []

    def __call__(self, coro: Awaitable[None], name: str) -> asyncio.Task[None]:
        async def run() -> None:
            await coro

        self.names.append(name)
        task = asyncio.ensure_future(run())
        self.tasks.append(task)
        return task

    async def settle(self) -> None:
        while any(not t.done() for t in self.tasks):
            await asyncio.gather(*self.tasks, return_exceptions=True)


class FakeTrainer:
    """Trains instantly; ``fail`` makes every round fail with that reason."""

    def __init__(self, fail: str | None = None, accepts: bool | str = True) -> None:
        self.fail = fail
        self._accepts = accepts
        self.rounds: list[tuple[bytes, int]] = []
        self.running_jobs = 0

    def accepts(self, spec: TaskSpec) -> Any:
        return self._accepts

    async def train_round(
        self, spec: TaskSpec, task_id: bytes, seed: bytes, trainer_pubkey: bytes, round: int
    ) -> TrainingOutcome:
        self.rounds.append((task_id, round))
        if self.fail:
            raise TrainingError(self.fail, "fake")
        return TrainingOutcome(
            metric=0.5,
            model_cid="QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG",
            train_rows=10,
            train_ms=1,
        )


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeResults:
    """ResultAdmission whose answer the test sets."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.submitted: list[tuple[ResultTx, str]] = []
        self.gate: asyncio.Event | None = None  # set: each check waits for it
        self.cost = 0.0  # seconds each check takes on ``clock``
        self.clock = FakeClock()

    async def submit_result(
        self, tx: ResultTx, source: str, verify: bool = True, background: bool = False
    ) -> None:
        self.submitted.append((tx, source))
        if self.gate is not None:
            await self.gate.wait()
        if self.cost:
            self.clock.now += self.cost
        if self.error is not None:
            raise self.error
