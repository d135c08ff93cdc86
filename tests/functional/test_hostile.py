"""Scenario 4: hostile peers flood a node with garbage, oversize messages,
invalid blocks and false results. Each is banned; the honest nodes keep
mining and finish a task meanwhile."""

from __future__ import annotations

import asyncio
from pathlib import Path

from p2pml.chain.encoding import encode_block, encode_tx
from p2pml.chain.params import REGTEST, dev_identity
from p2pml.chain.template import build_block, solve
from p2pml.chain.types import ResultTx
from tests.framework.hostile_peer import HostilePeer
from tests.framework.tasks import publish_ridge_task, upload_diabetes
from tests.framework.testnode import (
    NodeSet,
    TestNode,
    blocks_rejected,
    connect_nodes,
    sync_blocks,
)
from tests.framework.waiting import wait_until, wait_until_sync


async def call(fn: object, *args: object) -> object:
    return await asyncio.to_thread(fn, *args)  # type: ignore[arg-type]


def bad_block(node: TestNode) -> bytes:
    """A block with valid PoW whose coinbase pays itself too much."""
    st = node.status()
    tip = node.api.get("/chain?limit=1")[0]
    blk = build_block(
        REGTEST,
        bytes.fromhex(st["tip"]),
        st["height"] + 1,
        REGTEST.pow_limit_bits,
        tip["time"] + 1,
        b"\x66" * 32,
        fees=10**9,
    )
    return encode_block(solve(blk))


def test_hostile_peers_are_banned_and_work_goes_on(nodes: NodeSet, tmp_path: Path) -> None:
    a = nodes.add(node={"dev_key": 0}, training={"enabled": True, "workers": 1})
    b = nodes.add(node={"dev_key": 1}, training={"enabled": True, "workers": 1})
    nodes.start_mesh()
    connect_nodes(a, b)
    cid = upload_diabetes(a, tmp_path)
    task = publish_ridge_task(a, cid, bounty=1000, deadline=6, max_results=5)
    a.mine(1)
    sync_blocks([a, b])
    # An honest result exists: its model CID is real, so a forged claim on it
    # can be fetched and shown false (not merely unavailable).
    wait_until_sync(lambda: len(a.api.get("/mempool")) >= 1, 120, what="an honest result")
    honest = next(r for r in a.api.get(f"/results?task={task}"))

    async def attack() -> tuple[list[str], str]:
        peers = [HostilePeer("regtest") for _ in range(4)]
        target = a.status()
        addr = target["listen"][0]
        for hp in peers:
            await hp.start()
            await hp.connect(addr)
            await hp.wait_subscribed(target["peer_id"], "blocks")
        garbage, oversize, invalid, liar = peers
        for _ in range(20):
            await garbage.publish_raw("blocks", b"\x93\xff garbage")
            await garbage.publish_raw("results", b"\x00" * 100)
        await oversize.publish_raw("tasks", b"\x91" + b"x" * (900 * 1024))
        await invalid.publish_raw("blocks", await call(bad_block, a))  # type: ignore[arg-type]
        # Bonded (a dev key): an unbonded key's result is refused before any
        # re-run (no-bond), so only a bonded liar gets as far as the verdict.
        mallory = dev_identity(6)
        lie = ResultTx(
            task_id=bytes.fromhex(task),
            seed=bytes.fromhex(a.api.get(f"/tasks/{task}")["seed"]),
            round=0,
            trainer=mallory.public_key,
            metric=0.999,
            model_cid=honest["model_cid"],
            train_rows=honest["train_rows"],
            train_ms=1,
            fee=1_000,
        ).signed_by(mallory, REGTEST.genesis_hash)
        await liar.publish_raw("results", encode_tx(lie))

        async def all_banned() -> bool:
            st = await call(a.status)
            return all(hp.peer_id in st["banned"] for hp in peers)  # type: ignore[index]

        try:
            await wait_until(all_banned, timeout=60, what="every hostile peer banned")
            return [hp.peer_id for hp in peers], lie.id.hex()
        finally:
            for hp in peers:
                await hp.stop()

    banned, lie_id = asyncio.run(attack())
    wait_until_sync(
        lambda: not set(banned) & {x["peer_id"] for x in a.api.get("/peers")},
        30,
        what="banned peers disconnected",
    )
    assert lie_id not in {tx["id"] for tx in a.api.get("/mempool")}

    # Honest work goes on: the task completes and blocks keep coming.
    wait_until_sync(lambda: len(a.api.get("/mempool")) == 2, 120, what="both honest results")
    a.mine(6)  # results in the first block, the deadline closes the task
    sync_blocks([a, b])
    view = b.api.get(f"/tasks/{task}")
    assert view["status"] == "closed" and len(view["results"]) == 2
    assert all(r["metric"] != 0.999 for r in view["results"])
    # The one invalid block (coinbase pays itself 10**9 in fees) was rejected
    # by the rules, counted under its reason, not merely seen.
    assert blocks_rejected(a, "bad-coinbase-amount") == 1
