"""Hostile relays of federated updates (issue 16) on real nodes over real
libp2p hosts: a peer that gossips an update with a forged signature, and one
that gossips a well-signed update of a bonded key whose artifact is not a
model of the task (refused only by the background artifact check), both end
banned; the honest nodes' updates still reach the miner's pool."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from p2pml.chain.encoding import encode_tx
from p2pml.chain.params import REGTEST, dev_identity
from p2pml.chain.types import UpdateTx
from tests.framework.federated import g0_hash, pooled_updates, publish_federated, upload_digits
from tests.framework.hostile_peer import HostilePeer
from tests.framework.testnode import NodeSet, connect_nodes, sync_blocks
from tests.framework.waiting import wait_until, wait_until_sync


def test_relays_of_invalid_updates_are_banned_and_honest_updates_flow(
    nodes: NodeSet, tmp_path: Path
) -> None:
    trained = {"enabled": True, "workers": 1}
    a = nodes.add(node={"dev_key": 0}, training=trained)
    b = nodes.add(node={"dev_key": 1}, training=trained)
    nodes.start_mesh()
    connect_nodes(a, b)
    cid, _frame = upload_digits(a, tmp_path)
    task = publish_federated(a, cid, rounds=1, participants=3, round_blocks=50, bounty=30_000)
    garbage = tmp_path / "garbage.p2fl"
    garbage.write_bytes(b"P2FL\x01 not a model of this task")
    garbage_cid = str(a.api.upload("/datasets", garbage)["cid"])
    a.mine(1)
    sync_blocks([a, b])
    seed = bytes.fromhex(a.api.get(f"/tasks/{task}")["seed"])
    mallory = dev_identity(6)  # bonded in genesis: its update passes the cheap rules

    def update(**kw: object) -> UpdateTx:
        fields: dict[str, object] = dict(
            task_id=bytes.fromhex(task), seed=seed, round=0, participant=mallory.public_key,
            update_cid=garbage_cid, n_samples=100, fee=REGTEST.min_result_fee,
            base=g0_hash(a, task),
        )  # fmt: skip
        fields.update(kw)
        return UpdateTx(**fields).signed_by(mallory, REGTEST.genesis_hash)  # type: ignore[arg-type]

    lie = update()
    forged = dataclasses.replace(lie, n_samples=99)  # signed for another body

    async def attack() -> list[str]:
        peers = [HostilePeer("regtest") for _ in range(2)]
        target = a.status()
        for hp in peers:
            await hp.start()
            await hp.connect(target["listen"][0])
            await hp.wait_subscribed(target["peer_id"], "updates")
        forger, liar = peers
        await forger.publish_raw("updates", encode_tx(forged))
        await liar.publish_raw("updates", encode_tx(lie))

        async def all_banned() -> bool:
            st = await asyncio.to_thread(a.status)
            return all(hp.peer_id in st["banned"] for hp in peers)

        try:
            await wait_until(all_banned, timeout=90, what="both hostile relays banned")
            return [hp.peer_id for hp in peers]
        finally:
            for hp in peers:
                await hp.stop()

    asyncio.run(attack())
    # Honest updates flow: both nodes' own updates reach a's pool, mallory's not.
    wait_until_sync(
        lambda: len(pooled_updates(a, task, 0)) >= 2, 240, what="both honest updates at a"
    )
    pooled = {tx["id"] for tx in pooled_updates(a, task, 0)}
    assert lie.id.hex() not in pooled and forged.id.hex() not in pooled
