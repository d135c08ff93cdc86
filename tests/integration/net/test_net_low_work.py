"""Issue 14, attack 6, over real libp2p hosts on loopback: side branches
forked where work is cheap, sent by gossip and by sync.

Before the fix: 3,000 genesis-forked blocks each left a persisted header
with no penalty, a lighter 2,000-header batch over sync was stored, and a
block of signed transactions on such a branch had every signature checked
in the libp2p thread before it was found to be low-work.
"""

from __future__ import annotations

import pytest

from p2pml.chain import tasks as chain_tasks
from p2pml.chain.encoding import encode_block
from p2pml.chain.params import REGTEST, dev_identity
from p2pml.chain.taskspec import TaskSpec
from p2pml.chain.types import TaskTx
from p2pml.crypto import verify
from p2pml.ipfs.cid import cid_of_bytes
from p2pml.net import protocol as P
from p2pml.net.lowwork import BURST
from tests.framework.chainbuilder import Builder
from tests.framework.hostile_peer import HostilePeer, branch_responder
from tests.framework.waiting import wait_until

from .conftest import Net, backend, tip

pytestmark = pytest.mark.timeout(180)

CHEAP = b"\x66" * 32
SPEC = TaskSpec(
    dataset_cid=cid_of_bytes(b"dataset"),
    target="y",
    model="ridge",
    kind="regression",
    metric="r2",
    rounds=2,
)


def signed_tasks(n: int) -> tuple[TaskTx, ...]:
    pub = dev_identity(0)
    return tuple(
        TaskTx(
            spec=SPEC,
            bounty=1000,
            fee=1000,
            deadline=5,
            result_reward=0,
            max_results=10,
            publisher=pub.public_key,
            nonce=i,
        ).signed_by(pub, REGTEST.genesis_hash)
        for i in range(n)
    )


def banned_for(svc: object, peer_id: str) -> str | None:
    for b in svc.banned():  # type: ignore[attr-defined]
        if b.peer_id == peer_id:
            return str(b.reason)
    return None


async def test_low_work_block_is_dropped_before_its_signatures(
    net: Net, builder: Builder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counting signature checks, not timing them: a block of 300 signed tasks
    on a lighter branch gets none; the same load on our tip gets all 300."""
    calls = [0]

    def counting_verify(*args: bytes) -> bool:
        calls[0] += 1
        return verify(*args)

    monkeypatch.setattr(chain_tasks, "verify", counting_verify)
    ours = builder.chain(builder.genesis, 3)
    txs = signed_tasks(300)
    light = builder.make(builder.genesis, miner=CHEAP, txs=txs)
    heavy = builder.make(ours[-1].hash, miner=CHEAP, txs=txs)
    a = await net.node(blocks=ours)
    hp = HostilePeer()
    await hp.start()
    try:
        await hp.connect(a.listen_addrs()[0])
        await hp.wait_subscribed(a.peer_id, "blocks")
        await hp.publish_raw("blocks", encode_block(light))
        await wait_until(lambda: a.metrics().get("gossip_low_work", 0) == 1, what="light dropped")
        assert calls[0] == 0
        assert backend(a).chain.entry(light.hash) is None
        await hp.publish_raw("blocks", encode_block(heavy))
        await wait_until(lambda: calls[0] >= 300, what="the heavier block's signatures checked")
        assert a.metrics().get("penalties", 0) == 0
    finally:
        await hp.stop()


async def test_genesis_forked_blocks_over_gossip_get_the_sender_banned(
    net: Net, builder: Builder
) -> None:
    ours = builder.chain(builder.genesis, 3)
    forks = [
        builder.make(builder.genesis, miner=CHEAP, extra=i.to_bytes(2, "big")) for i in range(600)
    ]
    a = await net.node(blocks=ours)
    hp = HostilePeer()
    await hp.start()
    try:
        await hp.connect(a.listen_addrs()[0])
        await hp.wait_subscribed(a.peer_id, "blocks")
        sent = 0
        for blk in forks:
            if banned_for(a, hp.peer_id) is not None:
                break
            await hp.publish_raw("blocks", encode_block(blk))
            sent += 1
            n = sent

            def seen(n: int = n) -> bool:
                m = a.metrics()
                return m.get("low_work_items", 0) >= n or banned_for(a, hp.peer_id) is not None

            await wait_until(seen, what=f"fork {n} looked at")
        await wait_until(lambda: banned_for(a, hp.peer_id) is not None, what="the sender banned")
        assert banned_for(a, hp.peer_id) == "low-work-spam"
        assert BURST < sent <= BURST + P.BAN_THRESHOLD + 1
        chain = backend(a).chain
        assert all(chain.entry(x.hash) is None for x in forks)
        assert len(chain.index) == 4 and tip(a) == ours[-1].hash
    finally:
        await hp.stop()


async def test_lighter_2000_header_batch_over_sync_is_held_and_sender_banned(
    net: Net, builder: Builder
) -> None:
    ours = builder.chain(builder.genesis, 2_010)
    lighter = builder.chain(builder.genesis, 2_000, miner=CHEAP)
    claim = P.encode_status(
        P.StatusMsg(REGTEST.genesis_hash, lighter[-1].hash, lighter[-1].height, 10**30)
    )
    liar = HostilePeer(responder=branch_responder(claim, lighter))
    await liar.start()
    try:
        c = await net.node(blocks=ours, bootstrap=(liar.listen_addrs()[0],))
        await wait_until(
            lambda: banned_for(c, liar.peer_id) is not None, timeout=60, what="the liar banned"
        )
        assert banned_for(c, liar.peer_id) == "low-work-spam"
        chain = backend(c).chain
        assert all(chain.entry(x.hash) is None for x in lighter)
        assert len(chain.index) == 2_011
        assert not any(isinstance(r, P.BlocksReq) for _, r in liar.requests)
    finally:
        await liar.stop()


async def test_honest_losing_branch_of_a_few_blocks_costs_nothing(
    net: Net, builder: Builder
) -> None:
    """A miner that lost a race by three blocks gossips them: not an offence."""
    base = builder.chain(builder.genesis, 2)
    ours = builder.chain(base[-1].hash, 6)
    losing = builder.chain(base[-1].hash, 3, miner=CHEAP)
    claims_nothing = P.encode_status(P.StatusMsg(REGTEST.genesis_hash, REGTEST.genesis_hash, 0, 1))
    hp = HostilePeer(responder=branch_responder(claims_nothing, losing))
    await hp.start()
    try:
        a = await net.node(blocks=base + ours)
        await hp.connect(a.listen_addrs()[0])
        await hp.wait_subscribed(a.peer_id, "blocks")
        for blk in losing:
            await hp.publish_raw("blocks", encode_block(blk))
        await wait_until(
            lambda: a.metrics().get("low_work_items", 0) >= 1, what="the losing blocks seen"
        )
        await wait_until(lambda: not a.sync.busy(), what="sessions done")
        assert a.metrics().get("penalties", 0) == 0 and hp.is_connected(a.peer_id)
        assert all(backend(a).chain.entry(x.hash) is None for x in losing)
    finally:
        await hp.stop()
