"""An update that outruns its round's opening still reaches the miner (issue 16).

Three real node processes in a line, A - B - C; only C mines, none trains.
The participant is a bonded dev key driven from this process over a real
libp2p host that reaches A alone. Round 0 of a public-shard task closes
empty; the link A - B is cut while C mines the close, so A still has round 0
open when the participant's round-1 update (trained from G_1 = G_0) comes.
Once the link is back, A connects the close block: the update must then
travel A -> B -> C, enter every pool and the chain. Before the early-update
buffer A refused it (``bad-update-round``) and dropped it, nothing sent it
again, and the round was lost for the participant.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

from p2pml.chain.encoding import encode_tx
from p2pml.chain.params import REGTEST, dev_identity
from p2pml.chain.taskspec import TaskSpec
from p2pml.chain.types import UpdateTx
from p2pml.federated import rounds
from p2pml.federated.encoding import encode
from p2pml.ipfs.cid import cid_of_bytes
from p2pml.ml.fedjobs import FedData, FedTrainRequest, fed_train_job
from tests.framework.federated import fed_view, pooled_updates, publish_federated, upload_digits
from tests.framework.hostile_peer import HostilePeer
from tests.framework.testnode import (
    NodeSet,
    TestNode,
    connect_nodes,
    disconnect_nodes,
    sync_blocks,
)
from tests.framework.waiting import wait_until, wait_until_sync

PARTICIPANT = dev_identity(5)  # bonded in genesis, runs no node
ROUND_BLOCKS = 3


def held(node: TestNode, task_id: str, rnd: int) -> bool:
    return any(
        e["event"] == "held" and e["reason"] == "bad-update-round" and e["round"] == rnd
        for e in fed_view(node, task_id)["events"]
    )


def gossip_early(node: TestNode, tx: UpdateTx, task_id: str) -> None:
    """Publish ``tx`` to ``node`` alone from a fresh libp2p host; wait until
    the node has judged it early and held it."""

    async def run() -> None:
        hp = HostilePeer("regtest")
        await hp.start()
        try:
            st = await asyncio.to_thread(node.status)
            await hp.connect(st["listen"][0])
            await hp.wait_subscribed(st["peer_id"], "updates")
            await hp.publish_raw("updates", encode_tx(tx))
            await wait_until(
                lambda: asyncio.to_thread(held, node, task_id, tx.round),
                timeout=60,
                what=f"the round-{tx.round} update held at node{node.index}",
            )
        finally:
            await hp.stop()

    asyncio.run(run())


def test_an_update_early_for_its_round_crosses_a_line_of_nodes(
    nodes: NodeSet, tmp_path: Path
) -> None:
    t0 = time.monotonic()
    a, b, c = (nodes.add(node={"dev_key": i}) for i in range(3))
    line = [a, b, c]
    nodes.start_mesh()
    connect_nodes(a, b)
    connect_nodes(b, c)
    cid, _frame = upload_digits(c, tmp_path)
    task_id = publish_federated(
        c, cid, rounds=2, participants=1, round_blocks=ROUND_BLOCKS, bounty=20_000
    )
    wait_until_sync(lambda: len(c.api.get("/mempool")) >= 1, 30, what="the task pooled at c")
    c.mine(1)
    sync_blocks(line)
    c.mine(ROUND_BLOCKS)  # round 0's window passes without updates
    sync_blocks(line)
    wait_until_sync(
        lambda: bool(fed_view(c, task_id)["next_model_ready"]), 120, what="G_1 at node c"
    )

    # A falls behind: C closes round 0 while A is cut off from B.
    disconnect_nodes(a, b)
    c.mine(1)
    sync_blocks([b, c])
    assert fed_view(c, task_id)["round"] == 1
    assert fed_view(a, task_id)["round"] == 0

    # The participant trains round 1 from G_1 (= G_0: round 0 closed empty).
    task = c.api.get(f"/tasks/{task_id}")
    wire, tid, seed = task["spec"], bytes.fromhex(task_id), bytes.fromhex(task["seed"])
    g1 = encode(rounds.layout_of(wire), rounds.initial(wire, seed))
    data = FedData(str(tmp_path / "digits.csv"), str(tmp_path / "parsed"), 10**9)
    art, n = fed_train_job(
        FedTrainRequest(TaskSpec.from_wire(wire), tid, seed, PARTICIPANT.public_key, 1, g1, data)
    )
    path = tmp_path / "update1.p2fl"
    path.write_bytes(art)
    assert a.api.upload("/datasets", path)["cid"] == cid_of_bytes(art)
    tx = UpdateTx(
        tid,
        seed,
        1,
        PARTICIPANT.public_key,
        cid_of_bytes(art),
        n,
        REGTEST.min_result_fee,
        base=hashlib.sha256(g1).digest(),  # round 0 closed empty: G_1 = G_0
    ).signed_by(PARTICIPANT, REGTEST.genesis_hash)

    gossip_early(a, tx, task_id)  # round 1 is not open at A: held, not pooled
    assert tx.id.hex() not in {t["id"] for t in pooled_updates(a, task_id, 1)}

    connect_nodes(a, b)  # A gets the close block, then pools and relays the update
    sync_blocks(line)
    for n_ in line:
        wait_until_sync(
            lambda n_=n_: tx.id.hex() in {t["id"] for t in pooled_updates(n_, task_id, 1)},
            120,
            what=f"the early update pooled at node{n_.index}",
        )
    c.mine(1)
    sync_blocks(line)
    want = [
        {"participant": PARTICIPANT.public_key.hex(), "update_cid": tx.update_cid, "n_samples": n}
    ]
    for n_ in line:
        assert fed_view(n_, task_id)["pending_updates"] == want, n_.index
    print(f"\nearly update across a line of three: test {time.monotonic() - t0:.1f} s")
