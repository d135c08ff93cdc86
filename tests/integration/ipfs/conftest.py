"""Fixtures for the IPFS integration tests: a real js-ipfs daemon, stores over it.

The daemon must be installed by ``scripts/install-jsipfs`` first; without it
these fixtures FAIL (never skip) with that instruction.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from p2pml.config import IpfsSettings
from p2pml.ipfs import CachingDatasetStore, open_dataset_store
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


@pytest.fixture
async def make_embedded(
    tmp_path: Path,
) -> AsyncIterator[Callable[..., Awaitable[CachingDatasetStore]]]:
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
