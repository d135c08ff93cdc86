"""Headers-first chain sync between real hosts."""

from __future__ import annotations

import pytest

from p2pml.chain.encoding import encode_block
from p2pml.chain.params import REGTEST
from p2pml.errors import NetworkError
from p2pml.net import protocol as P
from tests.framework.chainbuilder import Builder
from tests.framework.hostile_peer import HostilePeer, branch_responder
from tests.framework.waiting import wait_until

from .conftest import OTHER_GENESIS, Net, backend, height, tip

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=["memory", "production"])
def backend_kind(request: pytest.FixtureRequest) -> str:
    """Every sync test runs over the in-memory backend and the node's own."""
    return str(request.param)


async def test_fresh_node_syncs_2000_blocks_from_one_peer(net: Net, chain2000: list) -> None:
    a = await net.node(blocks=chain2000)
    b = await net.node(bootstrap=tuple(a.listen_addrs()))
    # The tip moves inside submit_block, the sync counts the block once that
    # returns (after the store's write): wait for both, not the tip alone.
    await wait_until(
        lambda: tip(b) == tip(a) and b.metrics().get("sync_blocks") == 2000,
        timeout=60,
        what="2000 blocks synced and counted",
    )
    assert height(b) == 2000
    m = b.metrics()
    assert m["sync_headers"] == 2000  # headers first, each exactly once
    assert m["sync_blocks"] == 2000
    assert [e.hash for e in backend(b).chain.active] == [e.hash for e in backend(a).chain.active]


async def test_fresh_node_syncs_from_two_peers_at_once(net: Net, chain2000: list) -> None:
    a = await net.node(blocks=chain2000)
    b = await net.node(blocks=chain2000)
    c = await net.node(bootstrap=(*a.listen_addrs(), *b.listen_addrs()))
    await wait_until(lambda: tip(c) == tip(a), timeout=60, what="synced from two peers")
    served_a = a.metrics().get("sync_blocks_served", 0)
    served_b = b.metrics().get("sync_blocks_served", 0)
    assert served_a > 0 and served_b > 0, (served_a, served_b)  # both peers were used
    assert [e.hash for e in backend(c).chain.active] == [e.hash for e in backend(a).chain.active]
    assert c.metrics().get("penalties", 0) == 0


async def test_sync_follows_the_most_work_after_a_fork(net: Net, builder: Builder) -> None:
    base = builder.chain(builder.genesis, 10)
    short = builder.chain(base[-1].hash, 3)
    long = builder.chain(base[-1].hash, 6, dt=2)
    a = await net.node(blocks=base + short)
    b = await net.node(blocks=base + long)
    await a.connect(b.listen_addrs()[0])
    await wait_until(lambda: tip(a) == long[-1].hash, what="A reorgs to the longer chain")
    assert tip(b) == long[-1].hash


async def test_different_genesis_refuse_each_other(net: Net) -> None:
    a = await net.node()
    b = await net.node(params=OTHER_GENESIS, bootstrap=tuple(a.listen_addrs()))

    def banned(x: object, y: object) -> bool:
        return y.peer_id in {ban.peer_id for ban in x.banned()}  # type: ignore[attr-defined]

    # Whoever reads the other's status first bans it and hangs up; the other
    # side's own status request may die with the connection, so it may only
    # see its redials refused.
    await wait_until(lambda: banned(a, b) or banned(b, a), what="a ban")
    await wait_until(
        lambda: banned(b, a) or a.metrics().get("refused_banned", 0) >= 1,
        what="B cannot come back",
    )
    await wait_until(lambda: not a.peers() and not b.peers(), what="disconnected")
    assert height(a) == 0 and height(b) == 0
    # Whichever side banned (at least one did), it refuses to dial the other.
    banners = [(x, y) for x, y in ((a, b), (b, a)) if banned(x, y)]
    assert banners
    for x, y in banners:
        with pytest.raises(NetworkError, match=f"peer {y.peer_id} is banned"):
            await x.connect(y.listen_addrs()[0])


async def test_stalling_peer_is_timed_out_and_others_serve(net: Net, chain2000: list) -> None:
    blocks = chain2000[:300]
    a = await net.node(blocks=blocks)
    honest_status = P.encode_status(
        P.StatusMsg(
            backend(a).params.genesis_hash, blocks[-1].hash, 300, backend(a).chain.tip.chain_work
        )
    )

    async def stall_bodies(raw: bytes, req: object) -> bytes | None:
        if req is None:
            return honest_status
        if isinstance(req, P.HeadersReq):
            hs = backend(a).headers_after(list(req.locator), None, P.MAX_HEADERS)
            return P.encode_headers([h.serialize() for h in hs])
        return None  # never answers block requests

    staller = HostilePeer(responder=stall_bodies)
    await staller.start()
    try:
        c = await net.node(bootstrap=(staller.listen_addrs()[0],), request_timeout=1.0)
        await wait_until(
            lambda: any(isinstance(r, P.BlocksReq) for _, r in staller.requests),
            what="staller asked for bodies",
        )
        await c.connect(a.listen_addrs()[0])
        await wait_until(lambda: tip(c) == tip(a), timeout=30, what="sync despite staller")
        assert c.metrics().get("sync_stalls", 0) >= 1
        assert staller.peer_id not in {x.peer_id for x in c.banned()}  # stalls are not banned
    finally:
        await staller.stop()


async def test_lighter_branch_gets_headers_but_no_body_requests(net: Net, builder: Builder) -> None:
    """A peer claims more work but serves a branch lighter than ours.

    Its headers are valid but held back, not stored (pre-sync): storing
    them, or asking for the bodies, would keep a branch that can never win
    (cheap to make where the chain began). Five held headers are within the
    peer's low-work budget: no penalty.
    """
    ours = builder.chain(builder.genesis, 12)
    lighter = builder.chain(ours[1].hash, 5, miner=b"\x33" * 32)  # forks at height 2
    claim = P.encode_status(
        P.StatusMsg(REGTEST.genesis_hash, lighter[-1].hash, lighter[-1].height, 10**30)
    )
    liar = HostilePeer(responder=branch_responder(claim, lighter))
    await liar.start()
    try:
        c = await net.node(blocks=ours, bootstrap=(liar.listen_addrs()[0],))
        await wait_until(
            lambda: c.metrics().get("sync_lighter_branches", 0) >= 1,
            what="the header session to end on a lighter branch",
        )
        chain = backend(c).chain
        assert all(chain.entry(x.hash) is None for x in lighter)  # held, never stored
        assert c.metrics().get("low_work_items", 0) == len(lighter)
        assert not any(isinstance(r, P.BlocksReq) for _, r in liar.requests)
        assert tip(c) == ours[-1].hash
        assert c.metrics().get("penalties", 0) == 0  # a stale claim is no offence
    finally:
        await liar.stop()


async def test_branch_gossiped_while_lighter_is_fetched_once_it_leads(
    net: Net, builder: Builder
) -> None:
    """Its first blocks came while lighter (not kept); once a gossiped block
    puts it ahead, the missing headers and bodies are asked of the sender, and
    A reorgs."""
    base = builder.chain(builder.genesis, 3)
    ours = builder.chain(base[-1].hash, 3)
    theirs = builder.chain(base[-1].hash, 4, miner=b"\x55" * 32)
    claims_nothing = P.encode_status(P.StatusMsg(REGTEST.genesis_hash, REGTEST.genesis_hash, 0, 1))
    hp = HostilePeer(responder=branch_responder(claims_nothing, theirs))
    await hp.start()
    try:
        a = await net.node(blocks=base + ours)
        await hp.connect(a.listen_addrs()[0])
        await hp.wait_subscribed(a.peer_id, "blocks")
        for blk in theirs:
            await hp.publish_raw("blocks", encode_block(blk))
        await wait_until(lambda: tip(a) == theirs[-1].hash, what="A reorgs to the heavier branch")
        asked = {h for _, r in hp.requests if isinstance(r, P.BlocksReq) for h in r.hashes}
        # The bodies it had refused, and at most the others of that branch
        # (gossip may deliver a block before its parent: then it was pooled).
        assert {theirs[0].hash, theirs[1].hash} <= asked <= {x.hash for x in theirs}
        assert a.metrics().get("penalties", 0) == 0
    finally:
        await hp.stop()


async def test_headers_jumping_to_a_known_branch_do_not_unlock_lighter_bodies(
    net: Net, builder: Builder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batch 1: cheap headers forked at genesis. Batch 2: our own tip's header,
    which reaches our work. Only the branch the last header is on may have
    its bodies asked for, and ours has them all."""
    monkeypatch.setattr(P, "MAX_HEADERS", 5)  # a full batch, so the session asks again
    ours = builder.chain(builder.genesis, 12)
    cheap = builder.chain(builder.genesis, 5, miner=b"\x66" * 32)
    claim = P.encode_status(P.StatusMsg(REGTEST.genesis_hash, cheap[-1].hash, 5, 10**30))
    batches = [[x.header for x in cheap], [ours[-1].header]]

    async def jump(raw: bytes, req: object) -> bytes | None:
        if req is None:
            return claim
        if isinstance(req, P.HeadersReq):
            hs = batches.pop(0) if batches else []
            return P.encode_headers([h.serialize() for h in hs])
        return P.encode_blocks([encode_block(x) for x in cheap if x.hash in req.hashes])  # type: ignore[attr-defined]

    liar = HostilePeer(responder=jump)
    await liar.start()
    try:
        c = await net.node(blocks=ours, bootstrap=(liar.listen_addrs()[0],))
        await wait_until(lambda: not batches, what="both batches served")
        await wait_until(lambda: not c.sync.busy(), what="the session to end")
        chain = backend(c).chain
        assert all(chain.entry(x.hash) is None for x in cheap)  # held back, never stored
        assert not any(isinstance(r, P.BlocksReq) for _, r in liar.requests)
        assert tip(c) == ours[-1].hash
    finally:
        await liar.stop()
