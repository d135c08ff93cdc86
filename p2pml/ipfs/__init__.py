"""IPFS dataset layer: the DatasetStore protocol and its backends.

Entry points for the node and the CLI::

    store = open_dataset_store(settings.ipfs, data_dir)   # DatasetStore
    await store.start()
    cid = await add_dataset(store, Path("data.csv"), progress=lambda done, total: ...)
    path = await store.fetch(cid)      # verified bytes in the local cache
    store.state                        # "ready" | "waiting for data: ..."
    await store.close()

See ``docs/ipfs.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from p2pml.config import IpfsSettings
from p2pml.errors import ConfigError
from p2pml.ipfs.cache import DatasetCache
from p2pml.ipfs.caching import Backend, CachingDatasetStore, ProgressFn
from p2pml.ipfs.cid import cid_of_file, is_cidv0
from p2pml.ipfs.store import DatasetStore

__all__ = [
    "CachingDatasetStore",
    "DatasetStore",
    "ProgressFn",
    "add_dataset",
    "cid_of_file",
    "embedded_swarm_addrs",
    "is_cidv0",
    "open_dataset_store",
]


def open_dataset_store(settings: IpfsSettings, data_dir: Path) -> CachingDatasetStore:
    """Build (not start) the store chosen by ``settings.mode``.

    Cache in ``settings.cache_dir`` or ``<data_dir>/cache``; the embedded
    node's repo in ``<data_dir>/ipfs``.
    """
    backend: Backend
    if settings.mode == "sidecar":
        from p2pml.ipfs.sidecar import SidecarBackend

        backend = SidecarBackend(settings.api)
    elif settings.mode == "embedded":
        from p2pml.ipfs.devidentity import dev_ipfs_identity
        from p2pml.ipfs.embedded import EmbeddedBackend

        identity = dev_ipfs_identity(settings.dev_identity) if settings.dev_identity >= 0 else None
        backend = EmbeddedBackend(
            data_dir / "ipfs",
            settings.swarm,
            settings.peers,
            identity,
            storage_max_mb=settings.storage_max_mb,
        )
    else:
        raise ConfigError(f"ipfs.mode: expected 'embedded' or 'sidecar', got {settings.mode!r}")
    cache = DatasetCache(settings.cache_dir or data_dir / "cache", settings.cache_max_bytes)
    return CachingDatasetStore(
        backend,
        cache,
        settings.timeout,
        settings.max_dataset_bytes,
        start_timeout=settings.fetch_start_timeout,
        unfetchable_ttl=settings.unfetchable_ttl,
    )


async def add_dataset(
    store: DatasetStore, path: Path, progress: Callable[[int, int], None] | None = None
) -> str:
    """Add a local file to IPFS, pin it and return its CIDv0 (``p2pml dataset add``).

    ``progress(done, total)`` is called as bytes are read (and once at the
    end with ``done == total``). Stores other than ours (test fakes) get a
    plain ``add`` with start/end progress only.
    """
    total = path.stat().st_size
    if progress is not None:
        progress(0, total)
    if isinstance(store, CachingDatasetStore):
        cid = await store.add_with_progress(path, progress)
    else:
        cid = await store.add(path)
    if progress is not None:
        progress(total, total)
    return cid


def embedded_swarm_addrs(store: DatasetStore) -> list[str]:
    """Swarm multiaddrs (with ``/p2p/<id>``) of an embedded store, for wiring devnet peers.

    Empty for other backends, or before ``start()``.
    """
    from p2pml.ipfs.embedded import EmbeddedBackend

    if isinstance(store, CachingDatasetStore) and isinstance(store.backend, EmbeddedBackend):
        return store.backend.swarm_addrs
    return []
