"""A flood of challenges on real node processes (regtest), issue 15: "a wrong
challenge costs the challenger its bond; a flood of challenges is bounded".

An attacker holding six bonded dev keys (and two unbonded ones) gossips a
challenge of every honest result from every key, twice over, while a probe
measures node a's ``GET /status``. Each dispute is a full re-run on every
node, so the rules admit at most ``max_challenges_per_block`` per block
(the mempool holds no more either) and one open challenge per stake a bond
covers (regtest's stake is a whole dev bond). Every challenge included is
wrong: each costs its challenger its bond, the honest trainer loses
nothing and is paid, and the node stays responsive throughout.
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

from p2pml.chain.encoding import encode_tx
from p2pml.chain.params import REGTEST, dev_identity
from p2pml.chain.types import ChallengeTx
from p2pml.crypto import Identity
from tests.framework.attack import StatusProbe
from tests.framework.hostile_peer import HostilePeer, publish_paced
from tests.framework.tasks import publish_ridge_task, upload_diabetes
from tests.framework.testnode import NodeSet, TestNode, connect_nodes, sync_blocks
from tests.framework.waiting import TIMEOUT_FACTOR, wait_until, wait_until_sync

ROUNDS = 10  # honest results to challenge
BOUNTY = 10_000
CHALLENGERS = [dev_identity(i) for i in range(2, 8)]  # bonded in genesis, run no node
UNBONDED = [Identity.generate() for _ in range(2)]
CAP = REGTEST.max_challenges_per_block
STATUS_P99_MS = 50.0 * TIMEOUT_FACTOR  # as tests/functional/test_attack_responsiveness.py


def balance(node: TestNode, key: str) -> int:
    return int(node.api.get(f"/balances/{key}")["balance"])


def pooled(node: TestNode, kind: str) -> list[dict[str, Any]]:
    return [tx for tx in node.api.get("/mempool") if tx["type"] == kind]


def challenges_in_block(node: TestNode, height: int) -> int:
    return sum(t["type"] == "challengetx" for t in node.api.get(f"/blocks/{height}")["txs"])


def flood(result_ids: list[bytes]) -> list[bytes]:
    """A challenge of every result from every key (fresh nonces: a new wave
    is new gossip, not a duplicate the seen-cache drops)."""
    out = []
    for who in [*CHALLENGERS, *UNBONDED]:
        for rid in result_ids:
            tx = ChallengeTx(who.public_key, rid, REGTEST.min_challenge_fee, secrets.randbits(63))
            out.append(encode_tx(tx.signed_by(who, REGTEST.genesis_hash)))
    return out


def test_a_challenge_flood_is_capped_per_block_costs_every_bond_and_spares_the_node(
    nodes: NodeSet, tmp_path: Path
) -> None:
    a = nodes.add(node={"dev_key": 0})  # publishes and mines
    h = nodes.add(node={"dev_key": 1}, training={"enabled": True, "workers": 1})
    pair = [a, h]
    nodes.start_mesh()
    connect_nodes(a, h)
    hk = h.status()["public_key"]

    cid = upload_diabetes(a, tmp_path)
    task_id = publish_ridge_task(
        a,
        cid,
        rounds=ROUNDS,
        bounty=BOUNTY,
        deadline=20,
        max_results=ROUNDS,
    )
    a.mine(1)
    sync_blocks(pair)
    wait_until_sync(
        lambda: len(pooled(a, "result")) == ROUNDS, 240, what="the honest results at node a"
    )
    a.mine(1)
    sync_blocks(pair)
    results = [bytes.fromhex(r["id"]) for r in a.api.get(f"/results?task={task_id}")]
    assert len(results) == ROUNDS
    before_h = balance(a, hk)
    start = a.height

    with StatusProbe(a) as probe:

        async def waves(expected: list[int]) -> int:
            """Publish the flood once per entry of ``expected``; after each,
            once node a's pool holds the challenges it can take (``expected``),
            mine one block."""
            hp = HostilePeer("regtest")
            await hp.start()
            sent = 0
            try:
                st = await asyncio.to_thread(a.status)
                await hp.connect(st["listen"][0])
                await hp.wait_subscribed(st["peer_id"], "challenges")
                for want in expected:
                    sent += await publish_paced(hp, "challenges", flood(results), 150)
                    await wait_until(
                        lambda want=want: asyncio.to_thread(
                            lambda: len(pooled(a, "challenge")) == want
                        ),
                        timeout=60,
                        what=f"{want} challenges pooled at node a",
                    )
                    await asyncio.to_thread(a.mine, 1)
            finally:
                await hp.stop()
            return sent

        # Six bonded keys, one stake each: the cap in the first block, the
        # other two in the next; nothing from the unbonded keys.
        sent = asyncio.run(waves([CAP, len(CHALLENGERS) - CAP]))
        sync_blocks(pair)
        per_block = [challenges_in_block(a, hh) for hh in range(start + 1, a.height + 1)]
        view = a.api.get(f"/tasks/{task_id}")
        opened = len(view["disputes"])
        assert per_block == [CAP, len(CHALLENGERS) - CAP], per_block
        assert opened == len(CHALLENGERS)
        assert {d["challenger"] for d in view["disputes"]} == {
            k.public_key.hex() for k in CHALLENGERS
        }
        # Every node re-runs each disputed result before it resolves.
        for n in pair:
            wait_until_sync(
                lambda n=n: n.status()["challenges"].get("dispute-valid", 0) >= opened,
                300,
                what=f"node {n.index}'s audits of the {opened} disputes",
            )
        a.mine(REGTEST.dispute_delay)
        sync_blocks(pair)

    print(
        f"challenge flood: {sent} challenges sent, per block {per_block}; /status "
        f"p50 {probe.p(0.5):.1f} ms p99 {probe.p(0.99):.1f} ms over {len(probe.latencies)}"
    )
    assert not probe.errors, probe.errors[:3]
    assert probe.p(0.99) < STATUS_P99_MS, f"/status p99 {probe.p(0.99):.1f} ms"

    for n in pair:
        view = n.api.get(f"/tasks/{task_id}")
        assert {d["outcome"] for d in view["disputes"]} == {"result-valid"}
        for k in CHALLENGERS:  # each wrong challenge took a whole dev bond
            assert n.api.get(f"/bonds/{k.public_key.hex()}")["amount"] is None
        assert n.api.get(f"/bonds/{hk}")["amount"] == REGTEST.min_bond
        assert all(n.api.get(f"/results/{r.hex()}")["verdict"] == "ok" for r in results)
    view = a.api.get(f"/tasks/{task_id}")
    while not view["paid"]:
        a.mine(1)
        view = a.api.get(f"/tasks/{task_id}")
    assert {p["to"] for p in view["payout"]} == {hk}
    assert balance(a, hk) == before_h + BOUNTY
