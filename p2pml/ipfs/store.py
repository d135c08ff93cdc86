"""The ``DatasetStore`` protocol every IPFS backend implements."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class DatasetStore(Protocol):
    """Content-addressed storage for datasets and model artifacts.

    Every method is async and never blocks the event loop. ``fetch`` returns
    a path into the local cache whose bytes have been verified against the
    CID independently of the daemon.
    """

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def add(self, path: Path) -> str:
        """Add a file, pin it, return its CID."""
        ...

    async def add_bytes(self, data: bytes) -> str:
        """Add small content held in memory (model artifacts), return its CID."""
        ...

    async def fetch(self, cid: str, max_bytes: int | None = None) -> Path:
        """Local path of the verified content of ``cid``, fetching if needed;
        ``DatasetTooLarge`` past ``max_bytes`` (default: the dataset limit)."""
        ...

    async def has(self, cid: str) -> bool:
        """True if the content is available without a network fetch."""
        ...

    async def pin(self, cid: str) -> None: ...

    @property
    def state(self) -> str:
        """Human-readable health for the admin API ("ready", "waiting for data: ...")."""
        ...
