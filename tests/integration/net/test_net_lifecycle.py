"""Start and stop: clear listen errors, quick ordered shutdown, nothing left behind."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

from p2pml.chain.params import REGTEST
from p2pml.config import P2PSettings
from p2pml.crypto import Identity
from p2pml.errors import NetworkError
from p2pml.net import P2PService
from p2pml.net.memory_backend import MemoryChainBackend
from tests.framework.chainbuilder import Builder
from tests.framework.waiting import scaled, wait_until

from .conftest import Net, tip

pytestmark = pytest.mark.timeout(60)


def service(listen: tuple[str, ...] = ("/ip4/127.0.0.1/tcp/0",), **kw: object) -> P2PService:
    return P2PService(
        Identity.generate(),
        REGTEST,
        P2PSettings(listen=listen, **kw),  # type: ignore[arg-type]
    )


async def test_port_in_use_fails_start_with_one_clear_line() -> None:
    threads = set(threading.enumerate())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        svc = service((f"/ip4/127.0.0.1/tcp/{port}",))
        with pytest.raises(NetworkError) as info:
            await svc.start(MemoryChainBackend(REGTEST))
    msg = str(info.value)
    assert "\n" not in msg
    assert f"/ip4/127.0.0.1/tcp/{port}" in msg and "in use" in msg
    await wait_until(lambda: set(threading.enumerate()) <= threads, what="no thread left")


async def test_shutdown_with_live_connections_is_quick_and_clean() -> None:
    threads = set(threading.enumerate())
    tasks = asyncio.all_tasks()
    builder = Builder(REGTEST)
    nodes = [service()]
    await nodes[0].start(MemoryChainBackend(REGTEST))
    for _ in range(3):
        n = service(bootstrap=tuple(nodes[0].listen_addrs()))
        await n.start(MemoryChainBackend(REGTEST))
        nodes.append(n)
    await wait_until(lambda: len(nodes[0].peers()) == 3, what="3 peers")
    for n in nodes:
        await wait_until(lambda n=n: n.gossip_peers("blocks") >= 1, what="subscribed")
    blk = builder.make(builder.genesis)
    await nodes[0].publish_block(blk)  # traffic in flight while stopping
    for n in nodes:
        t0 = time.monotonic()
        await n.stop()
        # Stopping must not wait out a timeout (gossip heartbeat, dial, read): the
        # node's ordered shutdown promises seconds, so a hang is a failure here.
        assert time.monotonic() - t0 < scaled(2.0)
    assert set(threading.enumerate()) <= threads, threading.enumerate()
    assert asyncio.all_tasks() <= tasks | {asyncio.current_task()}
    with pytest.raises(NetworkError):
        await nodes[0].connect("/ip4/127.0.0.1/tcp/1/p2p/" + nodes[1].peer_id)


async def test_bootstrap_reconnects_with_backoff_after_peer_restart(net: Net) -> None:
    ident = Identity.generate()
    with socket.socket() as s:  # a fixed port, so the restarted peer is at the same address
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    listen = f"/ip4/127.0.0.1/tcp/{port}"
    a = await net.node(identity=ident, listen=(listen,))
    b = await net.node(bootstrap=tuple(a.listen_addrs()))
    await wait_until(lambda: len(b.peers()) == 1, what="connected")
    await a.stop()
    net.nodes.remove(a)
    await wait_until(lambda: not b.peers(), what="B noticed")
    a2 = await net.node(identity=ident, listen=(listen,))
    # Both ends register the connection, each on its own callback: wait for both.
    await wait_until(
        lambda: len(b.peers()) == 1 and len(a2.peers()) == 1, timeout=20, what="B reconnected"
    )
    assert b.peers()[0].peer_id == a2.peer_id
    assert b.peers()[0].direction == "outbound"
    assert a2.peers()[0].direction == "inbound"


async def test_max_peers_is_enforced(net: Net) -> None:
    a = await net.node(max_peers=2)
    others = [await net.node() for _ in range(3)]
    for o in others[:2]:
        await o.connect(a.listen_addrs()[0])
    await wait_until(lambda: len(a.peers()) == 2, what="two peers")
    try:
        await others[2].connect(a.listen_addrs()[0])
    except NetworkError:
        pass
    await wait_until(lambda: a.metrics().get("refused_max_peers", 0) >= 1, what="refused")
    await wait_until(lambda: not others[2].peers(), what="third hung up")
    assert len(a.peers()) == 2
    info = a.peers()[0]
    assert info.direction == "inbound" and info.connected_since > 0 and info.score == 0
    assert tip(a) == REGTEST.genesis_hash
