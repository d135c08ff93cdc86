"""libp2p networking: gossip topics with validation, headers-first sync, peers.

The node uses :class:`P2PService` and implements :class:`ChainBackend`.
"""

from p2pml.net.backend import (
    BlockOutcome,
    BlockStatus,
    ChainBackend,
    ChainStatus,
    HeadersOutcome,
    Verdict,
)
from p2pml.net.bans import Ban, BanStore, MemoryBanStore, SqliteBanStore
from p2pml.net.service import P2PService, PeerInfo
from p2pml.net.topics import TopicRegistry, TopicSpec

__all__ = [
    "Ban",
    "BanStore",
    "BlockOutcome",
    "BlockStatus",
    "ChainBackend",
    "ChainStatus",
    "HeadersOutcome",
    "MemoryBanStore",
    "P2PService",
    "PeerInfo",
    "SqliteBanStore",
    "TopicRegistry",
    "TopicSpec",
    "Verdict",
]
