"""Fixtures for the IPFS integration tests: a real js-ipfs daemon, stores over it.

The daemon must be installed by ``scripts/install-jsipfs`` first; without it
these fixtures FAIL (never skip) with that instruction.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from p2pml.config import IpfsSettings
from p2pml.ipfs import CachingDatasetStore, embedded_swarm_addrs, open_dataset_store
from p2pml.ipfs.embedded import EmbeddedBackend
from tests.framework.ipfs_daemon import DaemonNotInstalled, JsIpfsDaemon


def _daemon(repo: Path) -> JsIpfsDaemon:
    try:
        return JsIpfsDaemon(repo)
    except DaemonNotInstalled as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="module")
def shared_jsipfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JsIpfsDaemon]:
    """One daemon for a whole test module (start costs ~3 s)."""
    daemon = _daemon(tmp_path_factory.mktemp("jsipfs") / "repo")
    daemon.start()
    yield daemon
    daemon.stop()


@pytest.fixture
def jsipfs(tmp_path: Path) -> Iterator[JsIpfsDaemon]:
    """A daemon of the test's own, free to kill and restart."""
    daemon = _daemon(tmp_path / "jsipfs-repo")
    daemon.start()
    yield daemon
    daemon.kill()


@pytest.fixture
def jsipfs_stopped(tmp_path: Path) -> Iterator[JsIpfsDaemon]:
    """Initialised (ports chosen, config written) but not running."""
    daemon = _daemon(tmp_path / "jsipfs-repo")
    daemon.init()
    yield daemon
    daemon.kill()


SidecarFactory = Callable[..., Awaitable[CachingDatasetStore]]


@pytest.fixture
async def make_sidecar(tmp_path: Path) -> AsyncIterator[SidecarFactory]:
    """``await make_sidecar(daemon, name="node", timeout=..., ...)`` -> started store."""
    stores: list[CachingDatasetStore] = []

    async def make(daemon: JsIpfsDaemon, name: str = "node", **kw: Any) -> CachingDatasetStore:
        settings = IpfsSettings(mode="sidecar", api=daemon.api_multiaddr, **kw)
        store = open_dataset_store(settings, tmp_path / name)
        await store.start()
        stores.append(store)
        return store

    yield make
    for store in stores:
        await store.close()


@pytest.fixture
async def store(shared_jsipfs: JsIpfsDaemon, make_sidecar: SidecarFactory) -> CachingDatasetStore:
    return await make_sidecar(shared_jsipfs, timeout=60.0)


EmbeddedFactory = Callable[..., Awaitable[CachingDatasetStore]]


@pytest.fixture
async def make_embedded(tmp_path: Path) -> AsyncIterator[EmbeddedFactory]:
    """``await make_embedded(name, peers=(...), ...)`` -> started embedded store.

    Each store runs its Kubo node in its own child process.
    """
    stores: list[CachingDatasetStore] = []

    async def make(name: str, **kw: Any) -> CachingDatasetStore:
        settings = IpfsSettings(mode="embedded", **kw)
        store = open_dataset_store(settings, tmp_path / name)
        await store.start()
        stores.append(store)
        return store

    yield make
    for store in stores:
        await store.close()


def embedded_backend(store: CachingDatasetStore) -> EmbeddedBackend:
    assert isinstance(store.backend, EmbeddedBackend)
    return store.backend


# The storage cap tests fill a small cap with 1 MiB datasets.
CAP_MB = 8
MIB = 1024**2
BLOCKS_PER_MIB = 5  # 4 leaves of 256 KiB and their root


@dataclass
class CappedPair:
    provider: CachingDatasetStore  # holds what ``store`` fetches
    store: CachingDatasetStore  # under the cap, dialled to ``provider``
    backend: EmbeddedBackend  # ``store``'s


@pytest.fixture
async def capped_pair(make_embedded: EmbeddedFactory) -> CappedPair:
    """Two embedded nodes: ``store`` (capped at ``CAP_MB``, its own cache
    keeping almost nothing, so fetches go to Kubo's repo) and a provider."""
    a = await make_embedded("a", timeout=30.0)
    b = await make_embedded(
        "b",
        timeout=30.0,
        peers=tuple(embedded_swarm_addrs(a)),
        storage_max_mb=CAP_MB,
        cache_max_bytes=1,  # the project's own cache keeps (almost) nothing
    )
    return CappedPair(a, b, embedded_backend(b))
