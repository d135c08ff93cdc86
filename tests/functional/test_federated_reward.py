"""Rewards by validation improvement (protocol 7, docs/federated.md §11.5) on
real node processes (regtest, loopback): two bonded dev-key nodes train a
public-shard sgd_classifier task on digits published with ``--reward
improvement``; a third bonded key gossips an update equal to G_0 (a zero
delta: it improves nothing, but has the right shape and sample count, so it
is accepted). The block closing the round carries each update's gain, every
node checks and records the same gains, and the payout splits the round's
share by gain: the zero update earns nothing, the others in proportion."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

from p2pml.chain.encoding import encode_tx
from p2pml.chain.params import REGTEST, dev_identity
from p2pml.chain.types import UpdateTx
from p2pml.federated import rounds
from p2pml.federated.encoding import encode
from p2pml.ml.partition import partition_indices
from tests.framework.cli import cli
from tests.framework.federated import fed_view, run_round, upload_digits
from tests.framework.hostile_peer import HostilePeer
from tests.framework.testnode import NodeSet, TestNode, connect_nodes, sync_blocks

BOUNTY = 90_001  # one round: the floors leave something for the publisher


def gossip_zero_update(node: TestNode, task: dict[str, object], tmp_path: Path) -> bytes:
    """Dev key 2 sends G_0 itself as its round-0 update, over gossip to ``node``."""
    spec = task["spec"]
    assert isinstance(spec, dict)
    seed, tid = bytes.fromhex(str(task["seed"])), bytes.fromhex(str(task["id"]))
    g0 = encode(rounds.layout_of(spec), rounds.initial(spec, seed))
    art = tmp_path / "zero.p2fl"
    art.write_bytes(g0)
    cid = str(node.api.upload("/datasets", art)["cid"])
    lazy = dev_identity(2)
    shard = partition_indices(
        seed, tid, lazy.public_key, 0, 1797, spec["holdout_fraction"], spec["partition_fraction"]
    )
    tx = UpdateTx(
        tid,
        seed,
        0,
        lazy.public_key,
        cid,
        len(shard),
        REGTEST.min_result_fee,
        base=hashlib.sha256(g0).digest(),  # G_r of round 0 (federated.md §11.3)
    ).signed_by(lazy, REGTEST.genesis_hash)

    async def send() -> None:
        peer = HostilePeer("regtest")
        target = node.status()
        await peer.start()
        try:
            await peer.connect(target["listen"][0])
            await peer.wait_subscribed(target["peer_id"], "updates")
            await peer.publish_raw("updates", encode_tx(tx))
        finally:
            await peer.stop()

    asyncio.run(send())
    return lazy.public_key


def test_improvement_rewards_pay_by_recorded_gain(nodes: NodeSet, tmp_path: Path) -> None:
    trained = {"enabled": True, "workers": 1}
    a = nodes.add(node={"dev_key": 0}, training=trained)
    b = nodes.add(node={"dev_key": 1}, training=trained)
    nodes.start_mesh()
    connect_nodes(a, b)
    cid, frame = upload_digits(a, tmp_path)
    valid = tmp_path / "validation.csv"
    frame.iloc[1400:].to_csv(valid, index=False)
    vcid = str(a.api.upload("/datasets", valid)["cid"])
    r = cli(
        a, "task", "publish", "--federated", "--model", "sgd_classifier", "--dataset", cid,
        "--target", "target", "--rounds", "1", "--participants", "3",
        "--aggregation", "fedavg", "--round-blocks", "50", "--partition", "0.25",
        "--holdout", "0.25", "--deadline", "100", "--bounty", str(BOUNTY),
        "--validation", vcid, "--reward", "improvement", "--json",
    )  # fmt: skip
    task_id = json.loads(r.stdout)["id"]
    a.mine(1)
    sync_blocks([a, b])
    task = a.api.get(f"/tasks/{task_id}")
    assert task["spec"]["federated"]["reward"] == "improvement"
    lazy = gossip_zero_update(a, task, tmp_path).hex()
    run_round(a, [a, b], task_id, 0, 3)

    views = [fed_view(n, task_id) for n in (a, b)]
    gains = [{u["participant"]: u["gain"] for u in v["rounds"][0]["updates"]} for v in views]
    assert gains[0] == gains[1] and len(gains[0]) == 3, gains  # every node records the same
    assert gains[0][lazy] == 0
    workers = {n.status()["public_key"] for n in (a, b)}
    assert all(gains[0][k] > 0 for k in workers), gains
    # The round's share by gain (floor); the zero update earns nothing.
    total = sum(gains[0].values())
    expected = {k: BOUNTY * gains[0][k] // total for k in sorted(workers)}
    task = a.api.get(f"/tasks/{task_id}")
    assert task["status"] == "closed"
    paid = {p["to"]: p["amount"] for p in task["payout"][:-1]}
    assert paid == expected, (paid, gains)
    assert task["payout"][-1]["to"] == a.status()["public_key"]  # the publisher: the floors
    assert sum(p["amount"] for p in task["payout"]) == BOUNTY
    shares = {u["participant"]: u["share"] for u in views[0]["rounds"][0]["updates"]}
    assert shares == {**expected, lazy: 0}
    shown = cli(b, "task", "show", task_id).stdout
    assert f"gain {gains[0][lazy]}, earns 0" in shown and "by validation improvement" in shown
    print(f"\ngains per update (1e-6 accuracy): {gains[0]}; payout {paid}")
