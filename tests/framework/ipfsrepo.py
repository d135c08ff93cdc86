"""A stopped node's embedded IPFS repo, inspected and collected as its own
GC (``[ipfs] storage_max_mb``, p2pml.ipfs.repogc) would, deterministically."""

from __future__ import annotations

import asyncio

from p2pml.ipfs.cache import DatasetCache
from p2pml.ipfs.embedded import EmbeddedBackend
from p2pml.ipfs.repogc import Flatfs
from tests.framework.attack import node_metrics
from tests.framework.testnode import TestNode


def repo_after_collection(node: TestNode) -> tuple[set[str], Flatfs]:
    """Pins of the stopped node's repo, after a collection of everything unpinned."""

    async def run() -> set[str]:
        # On the node's own swarm address: the repo carries the node's peer id,
        # and a peer that learns an ephemeral address for it here would later
        # redial that port, which the restarted node's admin API may hold.
        swarm = tuple(node.sections.get("ipfs", {}).get("swarm", ())) or ("/ip4/127.0.0.1/tcp/0",)
        kubo = EmbeddedBackend(node.data_dir / "ipfs", swarm, ())
        await kubo.start()
        try:
            pins = set(await kubo._call("pins") or [])
            await kubo.collect_garbage(force=True)
            return pins
        finally:
            await kubo.close()

    pins = asyncio.run(run())
    return pins, Flatfs(node.data_dir / "ipfs" / "blocks")


def held_pins(node: TestNode) -> float:
    """The node's ``p2pml_pins_held`` metric (-1 before its first pass)."""
    return node_metrics(node).get("p2pml_pins_held", -1)


def evict_project_cache(node: TestNode) -> set[str]:
    """Evict every entry of the stopped node's project cache (``ipfs.cache_dir``,
    default ``<data_dir>/cache``) with its own LRU at a limit of 0 bytes, as a
    busy node's ``ipfs.cache_max_bytes`` eventually does: the CIDs it held."""
    cache = DatasetCache(node.data_dir / "cache", 0)
    held = {p.name for p in cache.blobs.iterdir()} if cache.blobs.is_dir() else set()
    cache.open()  # evicts down to the limit
    assert not any(cache.blobs.iterdir())
    return held
