"""A hostile peer is banned; honest nodes keep working; bans persist."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from p2pml.chain.encoding import encode_block, packb
from p2pml.chain.params import REGTEST
from p2pml.chain.types import Block
from p2pml.crypto import Identity
from p2pml.errors import NetworkError
from p2pml.net import protocol as P
from p2pml.net.service import P2PService
from tests.framework.chainbuilder import Builder
from tests.framework.hostile_peer import HostilePeer
from tests.framework.waiting import wait_until

from .conftest import Net, backend, load, tip

pytestmark = pytest.mark.timeout(60)


def bad_pow(builder: Builder, parent: bytes) -> Block:
    good = builder.make(parent, register=False)
    for nonce in range(good.header.nonce + 1, good.header.nonce + 10_000):
        h = dataclasses.replace(good.header, nonce=nonce)
        if int.from_bytes(h.hash, "big") > 2**255:  # far above the regtest target
            return Block(h, good.txs)
    raise AssertionError("no bad nonce found")


async def two_honest(net: Net, builder: Builder) -> tuple[P2PService, P2PService]:
    base = builder.chain(builder.genesis, 3)
    a = await net.node(blocks=base)
    b = await net.node(blocks=base, bootstrap=tuple(a.listen_addrs()))
    await wait_until(lambda: len(a.peers()) == 1, what="A-B")
    return a, b


async def assert_honest_still_work(a: P2PService, b: P2PService, builder: Builder) -> None:
    await wait_until(lambda: b.gossip_peers("blocks") >= 1, what="B still subscribed to A")
    blk = builder.make(tip(a))
    load(backend(a), [blk])
    await a.publish_block(blk)
    await wait_until(lambda: tip(b) == blk.hash, what="honest block still propagates")
    assert a.metrics().get("bans", 0) == 1  # only the hostile peer
    assert b.metrics().get("bans", 0) == 0


async def assert_cannot_reconnect(hp: HostilePeer, a: P2PService) -> None:
    """The banned peer dials again: the node counts it as refused for being
    banned, hangs up, and never lists it as a peer."""
    refused = a.metrics().get("refused_banned", 0)
    with contextlib.suppress(NetworkError):  # the node may hang up inside the handshake
        await hp.connect(a.listen_addrs()[0])
    await wait_until(
        lambda: a.metrics().get("refused_banned", 0) == refused + 1, what="redial refused: banned"
    )
    await wait_until(lambda: not hp.is_connected(a.peer_id), what="hung up on the redial")
    assert hp.peer_id not in {p.peer_id for p in a.peers()}
    assert hp.peer_id in {x.peer_id for x in a.banned()}


Attack = Callable[[HostilePeer, P2PService, Builder], Awaitable[None]]


async def gossip_garbage(hp: HostilePeer, a: P2PService, builder: Builder) -> None:
    await hp.publish_raw("blocks", b"\x93\xc4\x00garbage that is not msgpack")


async def gossip_oversize(hp: HostilePeer, a: P2PService, builder: Builder) -> None:
    await hp.publish_raw("blocks", packb([b"\0" * 92, [b"x" * (REGTEST.max_block_bytes + 10)]]))


async def gossip_over_rpc_cap(hp: HostilePeer, a: P2PService, builder: Builder) -> None:
    await hp.publish_raw("blocks", b"\0" * (P.MAX_GOSSIP_RPC_BYTES + 100))


async def gossip_bad_pow(hp: HostilePeer, a: P2PService, builder: Builder) -> None:
    await hp.publish_raw("blocks", encode_block(bad_pow(builder, tip(a))))


async def gossip_unknown_task_garbage(hp: HostilePeer, a: P2PService, builder: Builder) -> None:
    # A topic the node has no handler for is not even subscribed: nothing happens;
    # garbage on the blocks topic after that still gets the peer banned.
    await hp.publish_raw("tasks", b"whatever")
    await hp.publish_raw("blocks", b"\xff")


@pytest.mark.parametrize(
    ("attack", "reason"),
    [
        (gossip_garbage, "malformed-blocks"),
        (gossip_oversize, "oversize-blocks"),
        (gossip_over_rpc_cap, "oversize-rpc"),
        (gossip_bad_pow, "invalid-blocks:bad-pow"),
        (gossip_unknown_task_garbage, "malformed-blocks"),
    ],
    ids=["garbage", "oversize", "over-rpc-cap", "bad-pow", "other-topic"],
)
async def test_hostile_gossip_is_banned(
    net: Net, builder: Builder, attack: Attack, reason: str
) -> None:
    a, b = await two_honest(net, builder)
    hp = HostilePeer()
    await hp.start()
    try:
        await hp.connect(a.listen_addrs()[0])
        await hp.wait_subscribed(a.peer_id, "blocks")
        before = [e.hash for e in backend(a).chain.active]
        await attack(hp, a, builder)
        await wait_until(lambda: hp.peer_id in {x.peer_id for x in a.banned()}, what="ban")
        await wait_until(lambda: not hp.is_connected(a.peer_id), what="hostile disconnected")
        assert [x.reason for x in a.banned()] == [reason]
        assert [e.hash for e in backend(a).chain.active] == before
        await assert_honest_still_work(a, b, builder)
        assert len(backend(b).chain.index) == len(backend(a).chain.index)  # nothing extra
        await assert_cannot_reconnect(hp, a)
    finally:
        await hp.stop()


async def test_gossiped_side_branch_lighter_than_ours_is_not_stored(
    net: Net, builder: Builder
) -> None:
    """Blocks forked low, where work is cheap: headers kept, bodies not, not relayed.

    Not an offence (an honest miner on a losing branch sends such blocks too),
    so no penalty; and B, connected to A only, never hears of them.
    """
    a, b = await two_honest(net, builder)
    cheap = builder.chain(builder.genesis, 2, miner=b"\x44" * 32)  # lighter than A's 3
    hp = HostilePeer()
    await hp.start()
    try:
        await hp.connect(a.listen_addrs()[0])
        await hp.wait_subscribed(a.peer_id, "blocks")
        for blk in cheap:
            await hp.publish_raw("blocks", encode_block(blk))
        chain = backend(a).chain
        await wait_until(
            lambda: all(chain.entry(x.hash) is not None for x in cheap), what="headers taken"
        )
        assert not any(chain.entry(x.hash).has_data for x in cheap)  # type: ignore[union-attr]
        assert a.metrics().get("gossip_blocks_ignore", 0) == len(cheap)
        assert a.metrics().get("penalties", 0) == 0 and hp.is_connected(a.peer_id)
        honest = builder.make(tip(a))  # published after the cheap ones: B has seen all A relays
        load(backend(a), [honest])
        await a.publish_block(honest)
        await wait_until(lambda: tip(b) == honest.hash, what="honest block propagates")
        assert all(backend(b).chain.entry(x.hash) is None for x in cheap)
    finally:
        await hp.stop()


async def test_headers_that_do_not_connect_get_banned(net: Net, builder: Builder) -> None:
    a, b = await two_honest(net, builder)
    other = Builder(REGTEST)
    fork = other.chain(other.genesis, 30, extra=b"elsewhere")
    # Well-formed, valid-PoW headers whose parents the node does not have.
    junk_headers = [blk.header.serialize() for blk in fork[5:]]

    async def responder(raw: bytes, req: object) -> bytes | None:
        if req is None:
            return P.encode_status(P.StatusMsg(REGTEST.genesis_hash, fork[-1].hash, 30, 10**6))
        if isinstance(req, P.HeadersReq):
            return P.encode_headers(junk_headers)
        return P.encode_blocks([])

    hp = HostilePeer(responder=responder)
    await hp.start()
    try:
        await a.connect(hp.listen_addrs()[0])
        await wait_until(lambda: hp.peer_id in {x.peer_id for x in a.banned()}, what="ban")
        assert a.banned()[0].reason == "headers-not-connected"
        assert all(backend(a).chain.entry(blk.hash) is None for blk in fork)
        await assert_honest_still_work(a, b, builder)
    finally:
        await hp.stop()


async def test_unlinked_header_batch_and_garbage_responses(net: Net, builder: Builder) -> None:
    a, b = await two_honest(net, builder)
    more = builder.chain(tip(a), 4)
    shuffled = [more[1].header.serialize(), more[0].header.serialize()]

    async def responder(raw: bytes, req: object) -> bytes | None:
        if req is None:
            return P.encode_status(P.StatusMsg(REGTEST.genesis_hash, more[-1].hash, 7, 10**6))
        return P.encode_headers(shuffled)

    hp = HostilePeer(responder=responder)
    await hp.start()
    try:
        await a.connect(hp.listen_addrs()[0])
        await wait_until(lambda: hp.peer_id in {x.peer_id for x in a.banned()}, what="ban")
        assert a.banned()[0].reason == "headers-not-linked"
    finally:
        await hp.stop()

    async def garbage(raw: bytes, req: object) -> bytes | None:
        return b"\x00\x01garbage"

    hp2 = HostilePeer(responder=garbage)
    await hp2.start()
    try:
        await b.connect(hp2.listen_addrs()[0])
        await wait_until(lambda: hp2.peer_id in {x.peer_id for x in b.banned()}, what="ban 2")
        assert b.banned()[0].reason == "malformed-status"
    finally:
        await hp2.stop()
    assert tip(a) == tip(b)


async def test_malformed_sync_request_is_penalised(net: Net) -> None:
    a = await net.node()
    hp = HostilePeer()
    await hp.start()
    try:
        await hp.connect(a.listen_addrs()[0])
        with pytest.raises(Exception):  # noqa: B017 - the node resets the stream
            await hp.request_raw(a.peer_id, b"\x91\x07")
        await wait_until(lambda: hp.peer_id in {x.peer_id for x in a.banned()}, what="ban")
        assert a.banned()[0].reason == "malformed-request"
    finally:
        await hp.stop()


async def test_ban_survives_restart(net: Net, builder: Builder, tmp_path: Path) -> None:
    ident = Identity.generate()
    db = tmp_path / "bans.sqlite"
    a = await net.node(identity=ident, bans=db)
    hp = HostilePeer()
    await hp.start()
    try:
        await hp.connect(a.listen_addrs()[0])
        await hp.wait_subscribed(a.peer_id, "blocks")
        await hp.publish_raw("blocks", b"garbage")
        await wait_until(lambda: hp.peer_id in {x.peer_id for x in a.banned()}, what="ban")
        await wait_until(lambda: not hp.is_connected(a.peer_id), what="hung up")
        await a.stop()
        net.nodes.remove(a)

        a2 = await net.node(identity=ident, bans=db)
        assert hp.peer_id in {x.peer_id for x in a2.banned()}
        # Inbound: the banned peer's connection is closed at once.
        await assert_cannot_reconnect(hp, a2)
        assert not a2.peers()
        # Outbound: we never dial it.
        with pytest.raises(Exception, match="banned"):
            await a2.connect(hp.listen_addrs()[0])
    finally:
        await hp.stop()
