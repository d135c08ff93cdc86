"""What the node's services see of each other and of the outside world.

Each service takes its dependencies by constructor, typed by these
protocols, so none imports :class:`~p2pml.node.node.Node` and each is
unit-tested against small fakes (``tests/unit/node``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Literal, Protocol

from p2pml.chain.index import ChainUpdate
from p2pml.chain.params import NetworkParams
from p2pml.chain.state import ChainState
from p2pml.chain.taskspec import TaskSpec
from p2pml.chain.types import Block, PoolTx, ResultTx
from p2pml.ml.trainer import TrainingOutcome
from p2pml.node.verifier import Request

#: Run a coroutine as a supervised background job (failures are logged);
#: returns its task, or None if the node is stopping (the coroutine is closed).
Spawn = Callable[[Awaitable[None], str], "asyncio.Task[None] | None"]
#: Called with every update the chain manager applied.
UpdateListener = Callable[[ChainUpdate], None]
#: The verdict oracle: (result, task record, audited?) -> "" valid, a reason, None unknown.
Verdicts = Callable[[ResultTx, dict[str, Any], bool], str | None]


class Gossip(Protocol):
    """Outbound gossip and peer penalties (the P2P service implements it)."""

    async def publish(self, kind: str, payload: bytes) -> None: ...

    async def publish_block(self, block: Block) -> None: ...

    def penalise(self, peer_id: str, reason: str, penalty: int) -> None: ...

    def on_banned(self, fn: Callable[[str], None]) -> None:
        """``fn(peer_id)`` whenever a peer gets banned."""
        ...


class ChainAccess(Protocol):
    """The chain as the services read it, and how they change it
    (:class:`~p2pml.node.chain_manager.ChainManager` implements it)."""

    params: NetworkParams

    @property
    def chain(self) -> ChainState: ...

    async def submit_block(
        self, block: Block, source: str = "local", requested: bool = True
    ) -> ChainUpdate: ...

    async def retry_waiting(self) -> ChainUpdate: ...

    def on_update(self, fn: UpdateListener) -> None: ...

    def on_tip_changed(self, fn: UpdateListener) -> None: ...


class TxRelay(Protocol):
    """Gossips a transaction this node accepted (:class:`~p2pml.node.relay.Relay`)."""

    async def tx(self, tx: PoolTx) -> None: ...


class ResultAdmission(Protocol):
    """Pools a result after checking it (:class:`~p2pml.node.tasks.TaskService`)."""

    async def submit_result(
        self, tx: ResultTx, source: str, verify: bool = True, background: bool = False
    ) -> None: ...


class ResultVerifier(Protocol):
    """Verdicts on results (:class:`~p2pml.node.verifier.Verifier`)."""

    def peek(self, tx: ResultTx, task: dict[str, Any], audit: bool) -> str | None:
        """The cached verdict: "" valid, a reason, or None if unknown."""
        ...

    async def check(self, req: Request, background: bool = False) -> str | None:
        """Re-run ``req`` if needed: "" valid, a reason, None if data is missing.
        ``background``: a gossiped result, behind block verification."""
        ...


class PendingVerdicts(Protocol):
    """Verdicts that waiting blocks asked for (:class:`~p2pml.node.verifier.Verifier`)."""

    @property
    def wanted(self) -> Mapping[Any, Any]: ...

    def take_wanted(self) -> list[Any]: ...

    async def resolve(self, reqs: Iterable[Any]) -> int:
        """Answer ``reqs``; how many still miss their data."""
        ...

    def want_again(self, reqs: Iterable[Any]) -> None: ...

    def artifact_unfetchable(self, result_id: bytes) -> bool:
        """Whether the last check of the result found nobody serving its artifact."""
        ...


class PinStore(Protocol):
    """Pins in the node's IPFS store (:class:`p2pml.ipfs.CachingDatasetStore`)."""

    async def pin(self, cid: str) -> None: ...

    async def unpin(self, cid: str) -> None: ...

    async def has(self, cid: str) -> bool:
        """True if the content is here without a network fetch."""
        ...


class TrainingBackend(Protocol):
    """Trains rounds (:class:`p2pml.ml.trainer.Trainer` implements it)."""

    @property
    def running_jobs(self) -> int: ...

    def accepts(self, spec: TaskSpec) -> Literal[True] | str: ...

    async def train_round(
        self, spec: TaskSpec, task_id: bytes, seed: bytes, trainer_pubkey: bytes, round: int
    ) -> TrainingOutcome: ...
