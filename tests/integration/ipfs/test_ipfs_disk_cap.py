"""Attack 9 of issue 14: an embedded Kubo node's disk must stay bounded.

Before: the library never ran a GC, so every distinct CID a peer made us
fetch stayed in the repo (measured: 40 fetches of 1 MiB left 42 MB in a repo
whose cap was 8 MB). Now ``ipfs.storage_max_mb`` is enforced by our own
collector (p2pml.ipfs.repogc), pinned content survives it, and the per-CID
fetch lock map holds nothing once fetches are over.
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from p2pml.cidv0 import b58decode
from p2pml.errors import DatasetError
from p2pml.ipfs.repogc import Flatfs, disk_usage
from tests.integration.ipfs.conftest import (
    BLOCKS_PER_MIB,
    CAP_MB,
    MIB,
    CappedPair,
    EmbeddedFactory,
    embedded_backend,
)

CAP = CAP_MB * 10**6
# Stated slack over the cap: the last fetch (1 MiB here) lands before the
# collection it triggers, plus rounding of its blocks to file system blocks.
SLACK = 2 * MIB


async def test_fetching_past_the_cap_keeps_repo_bounded_and_pins(
    capped_pair: CappedPair,
) -> None:
    a, b, kb = capped_pair.provider, capped_pair.store, capped_pair.backend
    cids = [await a.add_bytes(os.urandom(MIB)) for _ in range(40)]

    pinned, dropped = cids[0], cids[1]
    await b.fetch(pinned)
    await b.pin(pinned)  # what the node still needs
    peak = 0
    for cid in cids[1:]:
        await b.fetch(cid)
        peak = max(peak, await asyncio.to_thread(disk_usage, kb.repo_dir))
    assert peak <= CAP + SLACK, f"repo reached {peak} bytes, cap {CAP} + slack {SLACK}"
    assert (await kb.config())["Datastore"]["StorageMax"] == f"{CAP_MB}MB"
    assert kb.gc_reports, "no collection ran"
    assert all(r.after <= CAP for r in kb.gc_reports), kb.gc_reports
    assert b._fetch_locks == {}

    blocks = Flatfs(kb.repo_dir / "blocks")
    assert len(blocks.dag(b58decode(pinned))) == BLOCKS_PER_MIB  # survived every GC
    assert blocks.dag(b58decode(dropped)) == set()  # least recently used: collected
    # The blocks really are what Kubo serves: with the only other holder gone,
    # the pinned content is still fetched, the collected one is not.
    await a.close()
    dest = kb.repo_dir.parent / "check.bin"
    dest.touch()  # fetch_to writes into an existing (temp) file
    await kb.fetch_to(pinned, dest, 2 * MIB, time.monotonic() + 20)
    assert dest.stat().st_size == MIB
    dest.touch()
    with pytest.raises((TimeoutError, DatasetError)):
        await kb.fetch_to(dropped, dest, 2 * MIB, time.monotonic() + 3)


async def test_added_then_unpinned_content_is_collected(make_embedded: EmbeddedFactory) -> None:
    store = await make_embedded("solo", storage_max_mb=CAP_MB, timeout=30.0)
    kb = embedded_backend(store)
    added = [await store.add_bytes(os.urandom(MIB)) for _ in range(6)]  # pinned by add
    assert kb.gc_reports == []
    for cid in added:
        await store.unpin(cid)  # results final: no longer needed
    kept = await store.add_bytes(os.urandom(MIB))
    more = [await store.add_bytes(os.urandom(MIB)) for _ in range(4)]
    assert await kb.disk_usage() <= CAP + SLACK
    blocks = Flatfs(kb.repo_dir / "blocks")
    assert blocks.dag(b58decode(added[0])) == set()
    for cid in [kept, *more]:
        assert len(blocks.dag(b58decode(cid))) == BLOCKS_PER_MIB, cid


async def test_repo_over_cap_at_start_is_collected(make_embedded: EmbeddedFactory) -> None:
    # The cap lowered in the config between two runs, on the same repo.
    first = await make_embedded("same", timeout=30.0)
    cids = [await first.add_bytes(os.urandom(MIB)) for _ in range(12)]
    for cid in cids:
        await first.unpin(cid)
    await first.close()
    assert disk_usage(embedded_backend(first).repo_dir) > CAP
    again = await make_embedded("same", storage_max_mb=CAP_MB, timeout=30.0)
    assert await embedded_backend(again).disk_usage() <= CAP
