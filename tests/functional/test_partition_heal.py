"""Scenario 2: four nodes split 2+2, both halves mine tasks and results, the
heavier half wins when they join, and the losing half's work returns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from p2pml.chain.params import DEV_ALLOCATION, REGTEST
from tests.framework.tasks import upload_diabetes
from tests.framework.testnode import (
    NodeSet,
    TestNode,
    connect_nodes,
    disconnect_nodes,
    sync_blocks,
)
from tests.framework.waiting import wait_until_sync

BOUNTY = 10_000


def publish(node: TestNode, cid: str, deadline: int = 30) -> str:
    return str(
        node.api.post(
            "/tasks",
            {
                "dataset_cid": cid,
                "target": "target",
                "model": "lasso",
                "kind": "regression",
                "metric": "mae",
                "rounds": 1,
                "bounty": BOUNTY,
                "deadline": deadline,
                "max_results": 2,
            },
        )["id"]
    )


def results_pooled(node: TestNode, task_id: str) -> int:
    return sum(1 for tx in node.api.get("/mempool") if tx.get("task") == task_id)


def money(nodes: list[TestNode]) -> int:
    """Balances of the four node keys plus bounties held in escrow."""
    n = nodes[0]
    total = sum(n.api.get(f"/balances/{m.status()['public_key']}")["balance"] for m in nodes)
    escrow = sum(t["bounty"] for t in n.api.get("/tasks") if t["status"] == "open")
    return int(total + escrow)


def burned(n: TestNode) -> int:
    """What the committee holds of result fees burned: the part no member's
    attestation was paid (docs/consensus.md "Audit committees")."""
    out = 0
    for r in n.api.get("/results"):
        a = r.get("audit")
        if a is None:  # pending: nothing held yet
            continue
        paid = a["hold"] // len(a["committee"]) if a["committee"] else 0
        out += a["hold"] - paid * len(a["attestations"])
    return out


def test_partition_and_heal(nodes: NodeSet, tmp_path: Path) -> None:
    four = [
        nodes.add(node={"dev_key": i}, training={"enabled": True, "workers": 1}) for i in range(4)
    ]
    nodes.start_mesh()
    a, b, c, d = four
    connect_nodes(a, b)
    connect_nodes(b, c)
    connect_nodes(c, d)
    cid = upload_diabetes(a, tmp_path)
    a.mine(1)
    sync_blocks(four)

    disconnect_nodes(b, c)

    def side(miner: TestNode, peer: TestNode, extra_blocks: int) -> str:
        tid = publish(miner, cid)
        miner.mine(1)
        sync_blocks([miner, peer])
        wait_until_sync(lambda: results_pooled(miner, tid) == 2, 120, what="results on a side")
        miner.mine(1 + extra_blocks)
        sync_blocks([miner, peer])
        view = miner.api.get(f"/tasks/{tid}")
        assert view["status"] == "closed" and len(view["results"]) == 2
        return tid

    lost = side(a, b, 1)  # 3 blocks after the split
    won = side(c, d, 3)  # 5 blocks: more work
    assert a.height == 4 and c.height == 6

    connect_nodes(b, c)
    sync_blocks(four)
    assert {n.tip for n in four} == {c.tip} and c.height == 6
    assert a.api.get(f"/tasks/{won}")["status"] == "closed"

    # The losing side's task is back in its mempool; its old results are not
    # (the task's seed will be a new block hash, so they are stale).
    pool = {tx["id"]: tx for tx in a.api.get("/mempool")}
    assert lost in pool and not any(tx.get("task") == lost for tx in pool.values())

    # It is mined again, trained again under its new seed, and closes.
    a.mine(1)
    sync_blocks(four)
    wait_until_sync(lambda: results_pooled(a, lost) == 2, 120, what="re-trained results")
    a.mine(1)
    sync_blocks(four)
    for n in four:
        view = n.api.get(f"/tasks/{lost}")
        assert view["status"] == "closed" and len(view["results"]) == 2

    # Every node agrees on every balance, and no coin was made or lost (once
    # the bounties are paid, a window of blocks after close).
    a.mine(REGTEST.payout_window)
    sync_blocks(four)
    assert all(n.api.get(f"/tasks/{t}")["paid"] for n in four for t in (won, lost))

    def balances(n: TestNode) -> dict[str, Any]:
        return {m.index: n.api.get(f"/balances/{m.status()['public_key']}") for m in four}

    assert all(balances(n) == balances(a) for n in four)
    assert money(four) == 4 * DEV_ALLOCATION + REGTEST.coinbase_reward * a.height - burned(a)
