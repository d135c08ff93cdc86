"""The block-withholding miner of issue 15 on real node processes (regtest).

A cheating miner, driven from this process over a real libp2p host, holds
bonded dev keys: a trainer key and three colluders. It reports a model
fitted on the task's holdout rows (it outscores the honest result and
passes every cheap check), includes it in a block of its own, and keeps
that block private while it grinds the next one, the result's beacon
(regtest's ``audit_delay`` is 1): it re-makes the beacon until the
committee drawn from it is its three colluders, who would attest "pass".
Then it releases both blocks. The colluders attest and are paid their
shares, but the draw decides only who is paid to audit: the watchtower
audits every winner, challenges the cheat, and the dispute re-runs the
audit on every node. The cheat is void, its bond slashed, the bounty goes
to the honest trainer, and no honest key loses anything.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import time
from pathlib import Path
from typing import Any

from p2pml.chain.audits import draw_committee, miner_fee
from p2pml.chain.encoding import decode_block, encode_block, encode_tx
from p2pml.chain.ledger import StateView
from p2pml.chain.params import REGTEST, dev_identity
from p2pml.chain.taskkeys import result_key
from p2pml.chain.template import build_block, solve
from p2pml.chain.types import AttestTx, Block, ResultTx
from p2pml.net import protocol as P
from tests.framework.chainbuilder import Node
from tests.framework.hostile_peer import HostilePeer
from tests.framework.tasks import publish_ridge_task, upload_diabetes
from tests.framework.testnode import NodeSet, TestNode, connect_nodes, sync_blocks
from tests.framework.waiting import wait_until, wait_until_sync
from tests.functional.test_cheating_simulation import FEE, balance, cheat

DEADLINE = 20
BOUNTY = 7_000
CHEATER = dev_identity(5)
COLLUDERS = [dev_identity(i) for i in (4, 6, 7)]  # bonded in genesis, run no node
# The coinbase of the private blocks pays a key of its own, so the cheater's
# balance shows only what its result cost and earned.
MINER_KEY = hashlib.sha256(b"withholding miner").digest()
GRIND_BUDGET = 5_000  # beacons tried at most (1 in 35 draws is all colluders)


def mirror(blocks: list[bytes]) -> Node:
    """The cheater's own copy of the chain (it trusts the node's blocks)."""
    local = Node(REGTEST)
    local.chain.verdicts = lambda *_a: ""
    for raw in blocks:
        local.feed(decode_block(raw), int(time.time())).raise_error()
    return local


def private_block(local: Node, parent: Block | None, txs: tuple[Any, ...], extra: bytes) -> Block:
    e = local.chain.tip if parent is None else local.chain.entry(parent.hash)
    assert e is not None
    fees = sum(miner_fee(REGTEST, tx) for tx in txs)
    blk = build_block(
        REGTEST,
        e.hash,
        e.height + 1,
        local.chain.next_bits(e),
        e.header.time + 1,
        MINER_KEY,
        txs=txs,
        fees=fees,
        extra=extra,
    )
    return solve(blk)


def grind(local: Node, holder: Block, rid: bytes) -> tuple[Block, list[bytes], int]:
    """Beacons on ``holder`` until the committee of ``rid`` is the colluders
    (or the budget ends: the most colluders found); returns the beacon, its
    committee and how many beacons were made."""
    view = StateView(local.chain.state)
    height = local.chain.tip.height + 1
    ours = {k.public_key for k in COLLUDERS}
    best: tuple[int, Block, list[bytes]] | None = None
    tries = 0
    for i in range(GRIND_BUDGET):
        tries += 1
        beacon = private_block(local, holder, (), b"grind %d" % i)
        committee = draw_committee(view, REGTEST, beacon.hash, height, rid, CHEATER.public_key)
        n = len(set(committee) & ours)
        if best is None or n > best[0]:
            best = (n, beacon, committee)
        if n == REGTEST.committee_size:
            break
    assert best is not None
    return best[1], best[2], tries


def pooled(node: TestNode, kind: str) -> list[dict[str, Any]]:
    return [tx for tx in node.api.get("/mempool") if tx["type"] == kind]


def test_a_miner_grinding_its_results_committee_still_loses_its_bond(
    nodes: NodeSet, tmp_path: Path
) -> None:
    a = nodes.add(node={"dev_key": 0})  # publishes and mines
    h = nodes.add(node={"dev_key": 1}, training={"enabled": True, "workers": 1})
    w = nodes.add(node={"dev_key": 3}, verification={"challenge_bad": True})
    trio = [a, h, w]
    nodes.start_mesh()
    connect_nodes(a, h)
    connect_nodes(a, w)
    ak, hk, wk = (n.status()["public_key"] for n in trio)
    ck = CHEATER.public_key.hex()
    colluder_keys = {k.public_key.hex() for k in COLLUDERS}

    cid = upload_diabetes(a, tmp_path)
    csv = tmp_path / "diabetes.csv"  # the cheat is fitted on its rows
    task_id = publish_ridge_task(
        a,
        cid,
        params={"alpha": 0.001},  # a holdout fit scores far above honest ones
        bounty=BOUNTY,
        deadline=DEADLINE,
        max_results=4,
    )
    a.mine(1)
    sync_blocks(trio)
    wait_until_sync(lambda: pooled(a, "result"), 180, what="the honest result at node a")
    a.mine(1)  # the honest result, included
    sync_blocks(trio)
    before = {k: balance(a, k) for k in (ak, hk, wk, ck, *colluder_keys)}

    view = a.api.get(f"/tasks/{task_id}")
    unsigned, artifact = cheat(view, task_id, csv, CHEATER, "holdout")
    path = tmp_path / "cheat.skops"
    path.write_bytes(artifact)
    model_cid = a.api.upload("/datasets", path)["cid"]  # in IPFS like any trainer's
    lie: ResultTx = dataclasses.replace(unsigned, model_cid=model_cid).signed_by(
        CHEATER, REGTEST.genesis_hash
    )

    async def withhold_grind_release() -> tuple[list[bytes], int]:
        hp = HostilePeer("regtest")
        await hp.start()
        try:
            st = await asyncio.to_thread(a.status)
            await hp.connect(st["listen"][0])
            for kind in ("blocks", "attests"):
                await hp.wait_subscribed(st["peer_id"], kind)
            hashes = tuple(
                bytes.fromhex(a.api.get(f"/blocks/{i}")["header"]["hash"])
                for i in range(1, st["height"] + 1)
            )
            raw = await hp.request_raw(st["peer_id"], P.encode_request(P.BlocksReq(hashes)))
            local = mirror(P.decode_blocks(raw, REGTEST.max_block_bytes))
            assert local.chain.tip.hash.hex() == st["tip"]
            # Private: the block holding the lie, then the beacon ground for it.
            holder = private_block(local, None, (lie,), b"holder")
            local.feed(holder, int(time.time())).raise_error()
            beacon, committee, tries = grind(local, holder, lie.id)
            local.feed(beacon, int(time.time())).raise_error()
            assert local.chain.state.get(result_key(lie.id))["audit"]["committee"] == committee

            # Release: the honest nodes learn of both blocks only now. The
            # colluders' "pass" attestations (no audit behind them) go out
            # before the beacon: early, held by each node until the beacon
            # connects, then pooled and relayed (before the attestation
            # buffer, refused as attest-too-early and lost).
            async def at_tip(blk: Block) -> None:
                await wait_until(
                    lambda: asyncio.to_thread(lambda: a.status()["tip"] == blk.hash.hex()),
                    timeout=120,
                    what="the released block at node a's tip",
                )

            await hp.publish_raw("blocks", encode_block(holder))
            await at_tip(holder)
            for k in COLLUDERS:
                if k.public_key in committee:
                    tx = AttestTx(k.public_key, lie.id, True, 0).signed_by(k, REGTEST.genesis_hash)
                    await hp.publish_raw("attests", encode_tx(tx))
            await hp.publish_raw("blocks", encode_block(beacon))
            await at_tip(beacon)
            return committee, tries
        finally:
            await hp.stop()

    committee, tries = asyncio.run(withhold_grind_release())
    print(
        f"withholding miner: {tries} beacons ground, committee "
        f"{sum(k.hex() in colluder_keys for k in committee)}/{len(committee)} colluders"
    )
    sync_blocks(trio)
    for n in trio:  # every pool got the early attestations
        wait_until_sync(
            lambda n=n: {t["attester"] for t in pooled(n, "attest")} >= colluder_keys,
            60,
            what=f"the colluders' attestations pooled at node {n.index}",
        )
    got = a.api.get(f"/results/{lie.id.hex()}")
    assert {k.hex() for k in committee} == colluder_keys  # the grind worked...
    assert set(got["audit"]["committee"]) == colluder_keys
    assert a.api.get(f"/tasks/{task_id}")["best"]["trainer"] == ck  # ...and the lie leads

    # The watchtower audits the leader anyway and challenges it; every node
    # re-runs that audit before the dispute resolves.
    wait_until_sync(
        lambda: any(tx["result"] == lie.id.hex() for tx in pooled(a, "challenge")),
        240,
        what="the watchtower's challenge at node a",
    )
    a.mine(1)  # the challenge and the colluders' attestations
    sync_blocks(trio)
    got = a.api.get(f"/results/{lie.id.hex()}")
    assert {x["attester"] for x in got["audit"]["attestations"]} == colluder_keys
    assert all(x["passed"] for x in got["audit"]["attestations"])
    assert got["dispute"]["outcome"] == "pending" and got["dispute"]["challenger"] == wk
    for n in trio:
        wait_until_sync(
            lambda n=n: n.status()["challenges"].get("dispute-false", 0) >= 1,
            300,
            what=f"node {n.index}'s audit of the disputed result",
        )
    a.mine(REGTEST.dispute_delay)
    sync_blocks(trio)
    for n in trio:
        got = n.api.get(f"/results/{lie.id.hex()}")
        assert got["verdict"] == "void" and got["dispute"]["outcome"] == "result-void"
        assert n.api.get(f"/bonds/{ck}")["amount"] is None  # slashed whole
        for k in (ak, hk, wk):
            assert n.api.get(f"/bonds/{k}")["amount"] == REGTEST.min_bond

    view = a.api.get(f"/tasks/{task_id}")
    # Paid at the latest payout_window blocks after the deadline closes the task.
    bound = DEADLINE + REGTEST.payout_window + 1
    for _ in range(bound):
        if view["paid"]:
            break
        a.mine(1)
        view = a.api.get(f"/tasks/{task_id}")
    assert view["paid"], f"no payout {bound} blocks on: {view['status']}"
    sync_blocks(trio)
    assert {p["to"] for p in view["payout"]} == {hk}
    assert balance(a, ck) == before[ck] - FEE  # its fee, and nothing earned
    assert balance(a, hk) == before[hk] + BOUNTY
    share = int(REGTEST.min_bond * REGTEST.challenge_slash_share)
    assert balance(a, wk) >= before[wk] - REGTEST.min_challenge_fee + share
