"""What the admin API sees of the node: small protocols, bundled in one
:class:`AdminContext` that the node builds from its services. The API never
imports the node package, so nothing but the CLI and the devnet imports
:class:`~p2pml.node.node.Node`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from p2pml.chain.params import NetworkParams
from p2pml.chain.state import ChainState
from p2pml.chain.types import BondTx, ChallengeTx, PoolTx, TaskTx, TransferTx, UnbondTx
from p2pml.config import Settings
from p2pml.ipfs.store import DatasetStore
from p2pml.net.bans import Ban
from p2pml.net.service import PeerInfo


class ChainMetricsView(Protocol):
    @property
    def accepted(self) -> int: ...
    @property
    def rejected(self) -> Mapping[str, int]: ...
    @property
    def reorgs(self) -> int: ...
    @property
    def max_reorg_depth(self) -> int: ...


class ChainReader(Protocol):
    @property
    def params(self) -> NetworkParams: ...
    @property
    def chain(self) -> ChainState: ...
    @property
    def metrics(self) -> ChainMetricsView: ...


class PeerControl(Protocol):
    @property
    def peer_id(self) -> str: ...
    def listen_addrs(self) -> list[str]: ...
    def peers(self) -> list[PeerInfo]: ...
    def banned(self) -> list[Ban]: ...
    def metrics(self) -> dict[str, int]: ...
    async def connect(self, addr: str) -> str: ...
    async def disconnect(self, peer_id: str, ban_seconds: float = 0) -> None: ...
    def unban(self, peer_id: str) -> Ban | None: ...


class MempoolReader(Protocol):
    @property
    def txs(self) -> Mapping[bytes, PoolTx]: ...
    def __len__(self) -> int: ...


class TaskPublisher(Protocol):
    async def publish(self, order: TaskTx) -> TaskTx:
        """Sign ``order`` (publisher and nonce are the node's), pool and gossip it."""
        ...


class FederatedControl(Protocol):
    """Federated tasks as the API sees them (:class:`p2pml.node.federated.FederatedService`)."""

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        """A POST /tasks body with its federated spec filled in from the dataset."""
        ...

    def describe(self, task_id: bytes) -> dict[str, Any] | None:
        """Rounds, global models (hash, CID, holdout metric), updates and events."""
        ...


class TransferSender(Protocol):
    async def send(self, recipient: bytes, amount: int, fee: int) -> TransferTx:
        """Sign a transfer from the node's key, pool and gossip it."""
        ...


class BondControl(Protocol):
    async def bond(self, amount: int, fee: int) -> BondTx:
        """Sign a bond of the node's key, pool and gossip it."""
        ...

    async def unbond(self, fee: int) -> UnbondTx:
        """Sign an unbond of the node's key, pool and gossip it."""
        ...


class ChallengeControl(Protocol):
    async def challenge(self, result_id: bytes, fee: int) -> ChallengeTx:
        """Sign a challenge of ``result_id`` with the node's key, pool and gossip it."""
        ...

    @property
    def watchtower(self) -> bool: ...

    @property
    def counts(self) -> Mapping[str, int]:
        """Full audits by why (dispute, watch) and outcome; challenges sent."""
        ...


class TrainingReader(Protocol):
    @property
    def enabled(self) -> bool: ...
    @property
    def running_jobs(self) -> int: ...
    @property
    def jobs_done(self) -> int: ...
    @property
    def jobs_failed(self) -> int: ...
    @property
    def failures(self) -> Mapping[bytes, list[dict[str, Any]]]: ...


class VerificationStats(Protocol):
    @property
    def verified(self) -> int: ...
    @property
    def failed(self) -> int: ...


class MinerStatsView(Protocol):
    @property
    def hash_rate(self) -> float: ...
    @property
    def blocks_found(self) -> int: ...


class MiningControl(Protocol):
    @property
    def enabled(self) -> bool: ...
    @property
    def workers(self) -> int: ...
    @property
    def stats(self) -> MinerStatsView: ...
    async def mine(self, n: int) -> list[bytes]: ...


class ExecutorView(Protocol):
    def describe(self) -> dict[str, Any]:
        """Where jobs run: the executor, its workers and their load."""
        ...


@dataclass(frozen=True)
class AdminContext:
    """Everything the admin API may read or ask of the node."""

    settings: Settings
    version: str
    public_key: bytes
    started: float  # unix time
    token: str
    data_dir: Path
    chain: ChainReader
    peers: PeerControl
    mempool: MempoolReader
    tasks: TaskPublisher
    transfers: TransferSender
    training: TrainingReader
    verification: VerificationStats
    mining: MiningControl
    datasets: DatasetStore
    #: gossiped result checks by outcome (valid, false, pending, refused-*)
    result_checks: Mapping[str, int]
    #: the training/verification executor (None: not shown)
    executor: ExecutorView | None = None
    #: bonds and unbonds of the node's key (None: POST /bonds, /unbond answer 503)
    bonds: BondControl | None = None
    #: challenges of the node's key (None: POST /challenges answers 503)
    challenges: ChallengeControl | None = None
    #: pins the node holds by its policy: held, released, passes (p2pml.node.pins)
    pins: Mapping[str, int] = field(default_factory=dict)
    #: validator or follower, installed and network runtime (p2pml/node/runtime.py)
    validation: Mapping[str, Any] = field(default_factory=dict)
    #: committee audits (full re-trainings) by outcome: passed, failed, pending
    audits: Mapping[str, int] = field(default_factory=dict)
    #: federated tasks (None: POST /tasks refuses them, task views omit rounds)
    federated: FederatedControl | None = None

    @property
    def params(self) -> NetworkParams:
        return self.chain.params
