"""One frozen ``Settings`` object, loaded from a TOML file.

Each ``[section]`` of the file maps to one frozen dataclass below; every key
has a default here, so an example config only needs what differs. The loader
(:func:`load_settings`) refuses unknown keys and wrong types with one line
naming the file, the key and the problem, and applies environment overrides
``P2PML_<SECTION>_<KEY>`` on top of the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class NodeSettings:
    network: str = "regtest"
    data_dir: Path = Path("./data")
    key_file: Path | None = None  # default: <data_dir>/node.key


@dataclass(frozen=True)
class P2PSettings:
    listen: tuple[str, ...] = ("/ip4/127.0.0.1/tcp/0",)
    bootstrap: tuple[str, ...] = ()
    max_peers: int = 32
    ban_seconds: int = 86_400
    heartbeat_seconds: float = 1.0


@dataclass(frozen=True)
class IpfsSettings:
    mode: str = "embedded"  # "embedded" | "sidecar"
    api: str = "/ip4/127.0.0.1/tcp/5001"  # sidecar RPC API multiaddr
    swarm: tuple[str, ...] = ("/ip4/127.0.0.1/tcp/0",)  # embedded swarm listen
    peers: tuple[str, ...] = ()  # embedded: swarm peers to connect to
    cache_dir: Path | None = None  # default: <data_dir>/cache
    cache_max_bytes: int = 2 * 1024**3
    timeout: float = 60.0
    max_dataset_bytes: int = 512 * 1024**2


@dataclass(frozen=True)
class MiningSettings:
    enabled: bool = False
    workers: int = 1
    nonce_range: int = 50_000


@dataclass(frozen=True)
class TrainingSettings:
    enabled: bool = False
    workers: int = 1
    max_job_seconds: float = 600.0
    max_concurrent_jobs: int = 1
    allowed_models: tuple[str, ...] = ()  # empty: every allowlisted estimator
    max_dataset_bytes: int = 512 * 1024**2


@dataclass(frozen=True)
class AdminSettings:
    listen: str = "127.0.0.1:8080"
    token_file: Path | None = None  # default: <data_dir>/admin.token
    max_body_bytes: int = 1024 * 1024


@dataclass(frozen=True)
class LogSettings:
    file: Path | None = None  # default: <data_dir>/blockchain.log
    level: str = "INFO"
    json: bool = False


@dataclass(frozen=True)
class Settings:
    node: NodeSettings = field(default_factory=NodeSettings)
    p2p: P2PSettings = field(default_factory=P2PSettings)
    ipfs: IpfsSettings = field(default_factory=IpfsSettings)
    mining: MiningSettings = field(default_factory=MiningSettings)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    admin: AdminSettings = field(default_factory=AdminSettings)
    log: LogSettings = field(default_factory=LogSettings)
