"""Audit committees on real node processes (regtest): a trainer's result is
included after the cheap checks only; its beacon (the next block) draws a
committee of three bonded keys; the nodes holding those keys, and only they,
re-train the result in a worker and gossip attestations; the block that
includes an attestation pays its member a share of the result's fee.

The dev keys 4..7 are bonded in genesis but run no node here: a peer
publishes their unbonds first, so the keys eligible for the trainer's
committee are exactly the three other running dev keys (regtest's
committee size), and the draw cannot leave a running node out by chance.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from sklearn.datasets import load_diabetes

from p2pml.chain.encoding import encode_tx
from p2pml.chain.params import REGTEST, dev_identity
from p2pml.chain.types import UnbondTx
from tests.framework.cli import cli
from tests.framework.hostile_peer import HostilePeer
from tests.framework.testnode import NodeSet, TestNode, connect_nodes, sync_blocks, sync_mempools
from tests.framework.waiting import wait_until, wait_until_sync

AUDITS = re.compile(r'^p2pml_committee_audits_total\{outcome="(\w+)"\} (\d+)$', re.M)


def audits(node: TestNode) -> dict[str, int]:
    text = node.api.get("/metrics")
    assert isinstance(text, str)
    return {k: int(v) for k, v in AUDITS.findall(text)}


def balance(node: TestNode, key: str) -> int:
    return int(node.api.get(f"/balances/{key}")["balance"])


def pooled(node: TestNode, kind: str) -> list[dict[str, object]]:
    return [tx for tx in node.api.get("/mempool") if tx["type"] == kind]


def unbond_absent_dev_keys(a: TestNode) -> None:
    """Unbonds of the dev keys no node runs, gossiped by a plain peer (kept
    connected until node a has pooled them: its messages must get out)."""

    async def publish() -> None:
        peer = HostilePeer("regtest")
        st = a.status()
        await peer.start()
        try:
            await peer.connect(st["listen"][0])
            await peer.wait_subscribed(st["peer_id"], "bonds")
            for i in range(4, 8):
                who = dev_identity(i)
                tx = UnbondTx(who.public_key, REGTEST.min_bond_fee, 1)
                await peer.publish_raw("bonds", encode_tx(tx.signed_by(who, REGTEST.genesis_hash)))
            await wait_until(
                lambda: asyncio.to_thread(lambda: len(pooled(a, "unbond")) == 4),
                timeout=30,
                what="the four unbonds pooled at node a",
            )
        finally:
            await peer.stop()

    asyncio.run(publish())


def test_the_committee_and_only_it_re_trains_attests_and_is_paid(
    nodes: NodeSet, tmp_path: Path
) -> None:
    a = nodes.add(node={"dev_key": 0})  # publishes and mines
    trainer = nodes.add(node={"dev_key": 1}, training={"enabled": True, "workers": 1})
    v2 = nodes.add(node={"dev_key": 2})
    v3 = nodes.add(node={"dev_key": 3})
    outsider = nodes.add()  # a validator with a fresh, unbonded key
    everyone = [a, trainer, v2, v3, outsider]
    nodes.start_mesh()
    for n in everyone[1:]:
        connect_nodes(a, n)
    unbond_absent_dev_keys(a)
    a.mine(1)
    sync_blocks(everyone)
    members = {dev_identity(i).public_key.hex() for i in (0, 2, 3)}

    csv = tmp_path / "diabetes.csv"
    load_diabetes(as_frame=True).frame.to_csv(csv, index=False)
    cid = a.api.upload("/datasets", csv)["cid"]
    task_id = a.api.post(
        "/tasks",
        {
            "dataset_cid": cid,
            "target": "target",
            "model": "ridge",
            "kind": "regression",
            "metric": "r2",
            "rounds": 1,
            "bounty": 5_000,
            "deadline": 8,
            "max_results": 1,
        },
    )["id"]
    a.mine(1)
    sync_blocks(everyone)
    wait_until_sync(lambda: pooled(a, "result"), 180, what="the trainer's result at node a")
    a.mine(1)  # includes the result (cheap checks only)
    sync_blocks(everyone)
    (res,) = a.api.get(f"/results?task={task_id}")
    rid = res["id"]
    assert res["audit"]["selected"] is None and res["audit"]["beacon_at"] == a.height + 1

    a.mine(1)  # the beacon
    sync_blocks(everyone)
    audit = a.api.get(f"/results/{rid}")["audit"]
    assert audit["selected"] is True and set(audit["committee"]) == members
    assert audit["attest_until"] == a.height + REGTEST.attest_window

    # The three members re-train and gossip their attestations.
    wait_until_sync(lambda: len(pooled(a, "attest")) == 3, 180, what="three attestations")
    assert {tx["attester"] for tx in pooled(a, "attest")} == members
    # Every pool holds all three: one that reached a peer before the beacon
    # block did (`attest-too-early` there) was held and pooled at the beacon.
    sync_mempools(everyone)
    for n in everyone:
        assert {tx["attester"] for tx in pooled(n, "attest")} == members, n
    before = {n: balance(a, dev_identity(i).public_key.hex()) for i, n in ((2, v2), (3, v3))}
    a.mine(1)
    sync_blocks(everyone)
    got = a.api.get(f"/results/{rid}")["audit"]
    assert {x["attester"] for x in got["attestations"]} == members
    assert all(x["passed"] for x in got["attestations"])
    share = audit["hold"] // 3
    assert share > 0
    for i, n in ((2, v2), (3, v3)):
        assert balance(a, dev_identity(i).public_key.hex()) == before[n] + share

    # Only the members re-trained: the trainer and the outsider ran no audit.
    for n in (a, v2, v3):
        assert audits(n) == {"passed": 1, "failed": 0, "pending": 0}, n
    for n in (trainer, outsider):
        assert audits(n) == {"passed": 0, "failed": 0, "pending": 0}, n
    # Every node holds the same record; the CLI shows it.
    for n in everyone:
        assert n.api.get(f"/results/{rid}")["audit"] == got
    out = cli(a, "results", rid).stdout
    assert '"attestations"' in out and '"selected": true' in out
