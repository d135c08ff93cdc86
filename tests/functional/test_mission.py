"""Scenario 1, the mission end to end on three real nodes (regtest).

A dataset added on node 0 is trained by all three nodes on their own random
partitions; results are verified, mined and paid; every node agrees on the
best model, and the test fetches that model by CID and evaluates it itself.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from p2pml.chain.audits import fee_hold
from p2pml.chain.params import REGTEST
from p2pml.chain.taskspec import TaskSpec
from p2pml.config import IpfsSettings
from p2pml.ipfs import open_dataset_store
from p2pml.ml.artifact import load_model
from p2pml.ml.dataset import parse_csv
from p2pml.ml.metrics import compute_metric
from p2pml.ml.partition import derive_random_state, holdout_indices
from tests.framework.tasks import publish_ridge_task, upload_diabetes
from tests.framework.testnode import NodeSet, connect_nodes, sync_blocks, wait_until_sync

BOUNTY = 700_001


def test_mission_end_to_end(nodes: NodeSet, tmp_path: Path) -> None:
    trio = [
        nodes.add(node={"dev_key": i}, training={"enabled": True, "workers": 1}) for i in range(3)
    ]
    nodes.start_mesh()
    a, b, c = trio
    connect_nodes(a, b)
    connect_nodes(b, c)
    connect_nodes(a, c)

    cid = upload_diabetes(a, tmp_path)
    before = {n.index: n.api.get(f"/balances/{n.status()['public_key']}")["balance"] for n in trio}

    task_id = publish_ridge_task(
        b,
        cid,
        params={"alpha": 0.3},
        rounds=2,
        partition_fraction=0.6,
        bounty=BOUNTY,
        fee=5_000,
        deadline=4,
        max_results=6,
    )
    wait_until_sync(lambda: len(a.api.get("/mempool")) == 1, 30, what="task gossiped to node0")
    a.mine(1)
    sync_blocks(trio)
    assert all(n.api.get(f"/tasks/{task_id}")["status"] == "open" for n in trio)

    # Every node trains both rounds; node 0 checks all six results (cheaply).
    wait_until_sync(
        lambda: len(a.api.get("/mempool")) == 6, 180, what="six verified results at node0"
    )
    a.mine(1)
    sync_blocks(trio)
    view = a.api.get(f"/tasks/{task_id}")
    assert view["status"] == "closed"  # max_results reached
    assert len(view["results"]) == 6
    assert {r["trainer"] for r in view["results"]} == {n.status()["public_key"] for n in trio}
    assert len({r["model_cid"] for r in view["results"]}) == 6

    best = view["best"]
    for n in trio:
        other = n.api.get(f"/tasks/{task_id}")
        assert other["best"] == best and other["payout"] == view["payout"]
    assert best["metric"] == max(r["metric"] for r in view["results"])

    # The bounty is credited a window of blocks after close (protocol 4).
    window = view["payout_height"] - view["closed_at"]
    assert window == REGTEST.payout_window and not view["paid"]
    a.mine(window)
    sync_blocks(trio)
    view = a.api.get(f"/tasks/{task_id}")
    assert view["paid"]

    # The bounty went to the best trainer; node 1 also paid the task fee,
    # every trainer a result fee per round, all to node 0, the miner.
    winner = next(n for n in trio if n.status()["public_key"] == best["trainer"])
    after = {n.index: n.api.get(f"/balances/{n.status()['public_key']}")["balance"] for n in trio}
    result_fee = REGTEST.min_result_fee
    # Part of each result fee is held back for its audit committee (protocol 5).
    hold = fee_hold(REGTEST, result_fee)
    reward = 50_000_000 * (2 + window) + 5_000 + 6 * (result_fee - hold)
    expected = dict(before)
    expected[0] += reward
    expected[1] -= BOUNTY + 5_000
    expected[winner.index] += BOUNTY
    for n in trio:
        expected[n.index] -= 2 * result_fee
    # Committee members among the three (the draw picks from all eight dev
    # keys) are paid a share for each attestation the chain holds.
    index = {n.status()["public_key"]: n.index for n in trio}
    for r in a.api.get(f"/results?task={task_id}"):
        for x in r["audit"]["attestations"]:
            if x["attester"] in index:
                expected[index[x["attester"]]] += hold // len(r["audit"]["committee"])
    assert after == expected

    # Fetch the best model by CID from the network and evaluate it here.
    spec = TaskSpec.from_wire(view["spec"])
    seed, tid = bytes.fromhex(view["seed"]), bytes.fromhex(task_id)
    trainer = bytes.fromhex(best["trainer"])
    rnd = next(r["round"] for r in view["results"] if r["id"] == best["result"])

    async def fetch() -> bytes:
        store = open_dataset_store(
            IpfsSettings(mode="embedded", peers=tuple(a.status()["ipfs"]["swarm"][:1])),
            tmp_path / "probe",
        )
        await store.start()
        try:
            return (await store.fetch(best["model_cid"])).read_bytes()
        finally:
            await store.close()

    artifact = asyncio.run(fetch())
    model = load_model(
        artifact, spec.model, spec.param_dict, derive_random_state(seed, tid, trainer, rnd)
    )
    data = parse_csv(tmp_path / "diabetes.csv", spec.kind, spec.target, spec.features, 10**9)
    hold = holdout_indices(seed, tid, data.n_rows, spec.holdout_fraction)
    assert compute_metric(spec.metric, model, data.X[hold], data.y[hold]) == best["metric"]
