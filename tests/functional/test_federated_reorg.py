"""A reorg across a federated round boundary (issue 16): real node processes
on regtest. Two validators, ``a`` and ``c``, share the block that includes a
federated task (2 participants per round, a 3-block window); then they are
split, and each side gets a trainer of its own that joins only after the
split (``a2`` beside ``a``, ``c2`` beside ``c``), so each side's round 0
holds a different single update and closes (its window over) with a
different G_1. Side C mines more. On the join, side A reorgs to C's chain:
every node must then hold C's committed hashes, the reorged nodes must serve
(GET /tasks/{id}/model) the global model whose hash C committed, recomputed
from C's update, and round 1 must still close on every node with the same
G_2."""

from __future__ import annotations

from pathlib import Path

from p2pml.chain.taskspec import TaskSpec
from p2pml.ipfs.cid import cid_of_bytes
from p2pml.ml.fedjobs import FedData, FedTrainRequest, fed_train_job
from tests.framework.federated import (
    close_round,
    fed_view,
    model_hashes,
    pooled_updates,
    publish_federated,
    served_model_hash,
    upload_digits,
)
from tests.framework.testnode import (
    NodeSet,
    TestNode,
    connect_nodes,
    disconnect_nodes,
    sync_blocks,
)
from tests.framework.waiting import wait_until_sync

ROUND_BLOCKS = 3
BOUNTY = 2 * 10_000


def reorgs(node: TestNode) -> int:
    text = node.api.get("/metrics")
    return int(
        next(ln for ln in text.splitlines() if ln.startswith("p2pml_reorgs_total ")).split()[1]
    )


def close_round_alone(
    miner: TestNode, side: list[TestNode], trainer: TestNode, task_id: str
) -> str:
    """Round 0 on one side: the side's trainer's update is mined, then empty
    blocks until the window is over, then the close. Returns the update's
    participant key."""
    wait_until_sync(
        lambda: len(pooled_updates(miner, task_id, 0)) == 1,
        240,
        what=f"node{trainer.index}'s round-0 update at node{miner.index}",
    )
    [update] = pooled_updates(miner, task_id, 0)
    assert update["participant"] == trainer.status()["public_key"], update
    opened = fed_view(miner, task_id)["opened_at"]
    miner.mine(opened + ROUND_BLOCKS - 1 - miner.height)  # the update, then the window
    sync_blocks(side)
    assert len(fed_view(miner, task_id)["pending_updates"]) == 1
    close_round(miner, side, task_id, 0)
    return str(update["participant"])


def retrain(task_id: str, node: TestNode, who: str, rnd: int, tmp: Path, start: str) -> str:
    """The CID of ``who``'s round-``rnd`` update re-executed here from the
    global model in ``tmp / start`` (the node's own training job)."""
    task = node.api.get(f"/tasks/{task_id}")
    req = FedTrainRequest(
        TaskSpec.from_wire(task["spec"]),
        bytes.fromhex(task_id),
        bytes.fromhex(task["seed"]),
        bytes.fromhex(who),
        rnd,
        (tmp / start).read_bytes(),
        FedData(str(tmp / "digits.csv"), str(tmp / "parsed"), 2**30),
    )
    artifact, _n = fed_train_job(req)
    return cid_of_bytes(artifact)


def test_reorg_across_a_round_boundary(nodes: NodeSet, tmp_path: Path) -> None:
    validator = {"enabled": False, "workers": 1}
    trainer = {"enabled": True, "workers": 1}
    a = nodes.add(node={"dev_key": 0}, training=validator)
    c = nodes.add(node={"dev_key": 1}, training=validator)
    a2 = nodes.add(node={"dev_key": 2}, training=trainer)
    c2 = nodes.add(node={"dev_key": 3}, training=trainer)
    nodes.start_mesh([a, c])
    connect_nodes(a, c)
    cid, _frame = upload_digits(a, tmp_path)
    task_id = publish_federated(
        a, cid, rounds=2, participants=2, round_blocks=ROUND_BLOCKS, bounty=BOUNTY
    )
    a.mine(1)
    sync_blocks([a, c])
    assert fed_view(c, task_id)["round"] == 0

    # The split: each side's trainer starts now and knows only its side's node.
    # (Their IPFS nodes still reach every other: data is not the partition.)
    disconnect_nodes(a, c)
    nodes.start_mesh([a2, c2])
    connect_nodes(a2, a)
    connect_nodes(c2, c)
    sync_blocks([a, a2])
    sync_blocks([c, c2])

    ups_a = close_round_alone(a, [a, a2], a2, task_id)
    ups_c = close_round_alone(c, [c, c2], c2, task_id)
    assert ups_a != ups_c
    loser, winner = model_hashes(a, task_id), model_hashes(c, task_id)
    assert len(loser) == len(winner) == 1 and loser != winner, (loser, winner)
    assert served_model_hash(a, task_id, tmp_path / "a-before.p2fl") == loser[0]
    # a2 trained round 1 from side A's G_1 at once: that update is stale after the reorg.
    wait_until_sync(
        lambda: len(pooled_updates(a, task_id, 1)) == 1, 240, what="a2's round-1 update at a"
    )
    [stale] = pooled_updates(a, task_id, 1)
    assert stale["base"] == loser[0]  # it commits to side A's G_1

    # Side C goes on: c2's round-1 update (from C's G_1), then one more block.
    wait_until_sync(
        lambda: len(pooled_updates(c, task_id, 1)) == 1, 240, what="c2's round-1 update at c"
    )
    c.mine(2)
    sync_blocks([c, c2])
    assert c.height == a.height + 2
    reorgs_before = reorgs(a)

    connect_nodes(a2, c)  # the join (a2 reorgs here), then the rest of the mesh
    connect_nodes(a, c)
    four = [a, c, a2, c2]
    sync_blocks(four)
    assert {n.tip for n in four} == {c.tip}
    assert reorgs(a) > reorgs_before
    for n in four:
        view = fed_view(n, task_id)
        assert [rd["model_hash"] for rd in view["rounds"]] == winner, (n.index, view)
        assert [u["participant"] for u in view["rounds"][0]["updates"]] == [ups_c]
        # Scored by this node: it recomputed C's G_1 from C's update itself.
        assert view["rounds"][0]["metric"] is not None, (n.index, view)
        assert view["round"] == 1
    for n in (a, a2):  # the reorged side serves the winner's model
        assert served_model_hash(n, task_id, tmp_path / f"{n.index}.p2fl") == winner[0]

    # Round 1 goes on over the joined network: a2 trains again, from C's G_1.
    # Its update from A's G_1 commits to A's G_1 (``base``, protocol 7): after
    # the reorg it is ``update-wrong-base`` everywhere, so it leaves every
    # pool and the retrained one is the one mined.
    a2_key = a2.status()["public_key"]
    assert stale["participant"] == a2_key
    fresh_cid = retrain(task_id, c, a2_key, 1, tmp_path, "0.p2fl")
    # (what a2 sent during the split was trained from A's G_1: another update)
    stale_cid = retrain(task_id, c, a2_key, 1, tmp_path, "a-before.p2fl")
    assert stale_cid != fresh_cid
    wait_until_sync(
        lambda: any(
            e["round"] == 1 and e["event"] == "sent" and e["detail"] == fresh_cid
            for e in fed_view(a2, task_id)["events"]
        ),
        240,
        what="a2's update from C's G_1 sent",
    )
    for n in four:  # the stale update is in no pool, the reorged ones included
        assert stale["id"] not in {u["id"] for u in pooled_updates(n, task_id, 1)}, n.index
    wait_until_sync(
        lambda: any(
            u["participant"] == a2_key and u["id"] != stale["id"]
            for u in pooled_updates(c, task_id, 1)
        ),
        240,
        what="a2's retrained round-1 update at c",
    )
    [fresh] = [u for u in pooled_updates(c, task_id, 1) if u["participant"] == a2_key]
    assert fresh["base"] == winner[0] and fresh["update_cid"] == fresh_cid, fresh
    c.mine(1)
    sync_blocks(four)
    pending = fed_view(c, task_id)["pending_updates"]
    assert len(pending) == 2, pending
    [mined] = [u for u in pending if u["participant"] == a2_key]
    assert mined["update_cid"] == fresh_cid
    close_round(c, four, task_id, 1)
    final = model_hashes(c, task_id)
    assert len(final) == 2 and final[0] == winner[0]
    for n in four:
        assert model_hashes(n, task_id) == final, n.index
        assert all(rd["metric"] is not None for rd in fed_view(n, task_id)["rounds"])
        assert n.api.get(f"/tasks/{task_id}")["status"] == "closed"
        assert served_model_hash(n, task_id, tmp_path / f"final{n.index}.p2fl") == final[1]
