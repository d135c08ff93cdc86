"""Issue 14: under the embedded node's storage cap, what the node needs stays pinned.

A real embedded Kubo node with ``ipfs.storage_max_mb`` small, fetching past
its cap (the GC of p2pml.ipfs.repogc runs), with the real pin policy over a
real chain in memory (p2pml.node.pins): the dataset of an open task survives
every collection; once the task is closed and the retention is over, it is
unpinned and the next collection takes it. Before, nothing pinned a task's
dataset, so the first collection after its fetch could drop it.
"""

from __future__ import annotations

import asyncio
import os

from p2pml.chain.params import REGTEST, dev_identity
from p2pml.chain.taskspec import TaskSpec
from p2pml.chain.types import TaskTx
from p2pml.cidv0 import b58decode
from p2pml.ipfs.cid import cid_of_bytes
from p2pml.ipfs.repogc import Flatfs
from p2pml.node.pins import PinService
from tests.framework.chainbuilder import Builder
from tests.integration.ipfs.conftest import (
    BLOCKS_PER_MIB,
    MIB,
    CappedPair,
    EmbeddedFactory,
    embedded_backend,
)
from tests.unit.node.fakes import FakeChain

DEADLINE, RETENTION = 5, 3
PAYOUT = REGTEST.payout_window
PUB, ME = dev_identity(0), dev_identity(5)


async def test_open_tasks_dataset_survives_gc_and_is_collected_after_close_and_retention(
    capped_pair: CappedPair,
) -> None:
    a, b, kb = capped_pair.provider, capped_pair.store, capped_pair.backend
    blocks = Flatfs(kb.repo_dir / "blocks")
    dataset = await a.add_bytes(os.urandom(MIB))
    fillers = [await a.add_bytes(os.urandom(MIB)) for _ in range(40)]

    chain, builder = FakeChain(), Builder()
    spec = TaskSpec(
        dataset_cid=dataset, target="y", model="ridge", kind="regression", metric="r2", rounds=1
    )
    t = TaskTx(spec, 1000, 1000, DEADLINE, 0, 9, PUB.public_key, 1)
    t = t.signed_by(PUB, REGTEST.genesis_hash)
    await chain.submit_block(builder.make(builder.genesis, txs=(t,)))
    pins = PinService(chain, b, ME.public_key, RETENTION)

    await b.fetch(dataset)  # the node trains or verifies for the task
    await pins.reconcile()
    assert pins.pinned == {dataset}
    for cid in fillers[:20]:
        await b.fetch(cid)
    assert kb.gc_reports, "no collection ran"
    assert len(blocks.dag(b58decode(dataset))) == BLOCKS_PER_MIB  # survived every GC
    assert blocks.dag(b58decode(fillers[0])) == set()  # unpinned, least recent: collected

    async def advance(n: int) -> None:
        for blk in builder.chain(chain.chain.tip.hash, n):
            await chain.submit_block(blk)
        await pins.reconcile()

    # In block 1, it closes at height 1 + DEADLINE and is paid PAYOUT blocks
    # later; pinned for RETENTION blocks from there.
    await advance(DEADLINE + PAYOUT + RETENTION - 1)
    assert not chain.chain.state[b"task:" + t.id]["open"]
    assert pins.pinned == {dataset}
    await advance(1)
    assert pins.pinned == set() and dataset in pins.released
    collections = len(kb.gc_reports)
    for cid in fillers[20:]:
        await b.fetch(cid)
    assert len(kb.gc_reports) > collections
    assert blocks.dag(b58decode(dataset)) == set()  # collected like any unpinned content


async def test_only_a_complete_dag_counts_as_here(make_embedded: EmbeddedFactory) -> None:
    # What the pin policy asks before pinning: pinning a partial DAG (a
    # download abandoned midway) would make Kubo fetch the rest.
    store = await make_embedded("n", timeout=30.0)
    kb = embedded_backend(store)
    cid = await store.add_bytes(os.urandom(MIB))
    assert await kb.has_local(cid)
    blocks = Flatfs(kb.repo_dir / "blocks")
    root = b58decode(cid)
    leaf = sorted(blocks.dag(root) - {root})[0]
    blocks.path_of(leaf).unlink()
    assert blocks.path_of(root).exists()
    assert not await kb.has_local(cid)


async def test_pinning_content_only_in_the_cache_adds_it_back_from_there(
    make_embedded: EmbeddedFactory,
) -> None:
    """Issue 15: a model the verifier fetched is in the project cache, but
    the repo's GC may collect its blocks before the pin pass (``has`` counts
    the cache). Pinning it in Kubo would then fetch it from peers: for ever
    (here: until the call's timeout, then again at every pass) once its
    trainer stops serving it. It is added back from the verified cached copy."""
    store = await make_embedded("n", timeout=10.0)
    kb = embedded_backend(store)
    data = os.urandom(MIB // 2)
    cid = cid_of_bytes(data)
    with store.cache.temp_file() as tmp:  # as a fetch leaves it, its blocks collected since
        tmp.write_bytes(data)
        store.cache.commit(cid, tmp)
    assert await store.has(cid) and not await kb.has_local(cid)
    async with asyncio.timeout(30):  # nobody serves it: before, the pin hung
        await store.pin(cid)
    assert await kb.has_local(cid)
    assert cid in set(await kb._call("pins") or [])
    await kb.collect_garbage(force=True)
    assert Flatfs(kb.repo_dir / "blocks").complete(b58decode(cid))  # kept by its pin
