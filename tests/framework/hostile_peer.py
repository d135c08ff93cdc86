"""A test-only libp2p peer that breaks the p2pml protocol on purpose.

It is a real py-libp2p host (Noise, yamux, gossipsub, the sync protocol) in
its own trio thread, driven from asyncio. It relays whatever it receives,
publishes arbitrary bytes on any topic (bypassing every local check), and
answers sync requests with whatever ``responder`` returns, so a test can make
it serve garbage, oversize data, wrong-genesis status, headers that do not
connect, or nothing at all (stall).

Usage::

    hp = HostilePeer("regtest")
    await hp.start()
    await hp.connect(node.listen_addrs()[0])
    await hp.wait_subscribed(node.peer_id, "blocks")
    await hp.publish_raw("blocks", b"garbage")
    ...
    await hp.stop()

Loopback only: it listens on 127.0.0.1 and dials what the test gives it.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from p2pml.chain.encoding import encode_block
from p2pml.chain.params import params_for
from p2pml.chain.pow import bits_to_target, block_work
from p2pml.chain.taskspec import TaskSpec
from p2pml.chain.template import build_block, solve
from p2pml.chain.types import Block, ResultTx, TaskTx
from p2pml.cidv0 import b58encode
from p2pml.crypto import Identity
from p2pml.net import protocol as P
from p2pml.net.bridge import TrioBridge
from p2pml.net.host import HostConfig, TrioHost

# The responder gets the raw request and its decoded form (None for status,
# HeadersReq, BlocksReq, or the DecodeError) and returns the raw response;
# returning None stalls (never answers).
Responder = Callable[[bytes, Any], Awaitable[bytes | None]]


def genesis_responder(network: str) -> Responder:
    """Looks like an honest node that has only the genesis block."""
    params = params_for(network)
    g = params.genesis.header
    status = P.encode_status(
        P.StatusMsg(params.genesis_hash, params.genesis_hash, 0, block_work(bits_to_target(g.bits)))
    )

    async def respond(raw: bytes, req: Any) -> bytes | None:
        if req is None:
            return status
        if isinstance(req, P.HeadersReq):
            return P.encode_headers([])
        return P.encode_blocks([])

    return respond


def branch_responder(status: bytes, branch: Sequence[Block]) -> Responder:
    """Answers ``status``; headers of ``branch`` from the first block that
    builds on a locator hash; and the bodies of ``branch`` asked for.

    ``branch`` is read at every request: a list the test extends is served
    as it grows (a peer serves only what it has gossiped so far).
    """

    async def respond(raw: bytes, req: Any) -> bytes | None:
        if req is None:
            return status
        if isinstance(req, P.HeadersReq):
            start = next((i for i, x in enumerate(branch) if x.prev_hash in req.locator), None)
            headers = [] if start is None else [x.header for x in branch[start:]]
            return P.encode_headers([h.serialize() for h in headers])
        by_hash = {x.hash: x for x in branch}
        return P.encode_blocks([encode_block(by_hash[h]) for h in req.hashes if h in by_hash])

    return respond


class _Callbacks:
    def __init__(self, peer: HostilePeer) -> None:
        self.peer = peer

    def on_connected(self, peer_id: str, direction: str, addr: str) -> None:
        self.peer.connected.add(peer_id)

    def on_disconnected(self, peer_id: str) -> None:
        self.peer.connected.discard(peer_id)
        self.peer.disconnections += 1

    def on_refused(self, peer_id: str, reason: str) -> None:
        pass

    def on_dropped(self, what: str, count: int) -> None:
        pass

    def on_oversize(self, peer_id: str) -> None:
        pass

    def on_sent(self, nbytes: int) -> None:
        pass

    async def validate(self, topic: str, forwarder: str, data: bytes, msg_id: bytes) -> bool:
        self.peer.received.append((topic, data))
        return True

    async def serve_request(self, peer_id: str, data: bytes) -> bytes:
        try:
            req: Any = P.decode_request(data)
        except Exception as exc:
            req = exc
        self.peer.requests.append((peer_id, req))
        resp = await self.peer.responder(data, req)
        if resp is None:
            await trio.sleep_forever()
        assert resp is not None
        return resp


class HostilePeer:
    def __init__(
        self,
        network: str = "regtest",
        identity: Identity | None = None,
        responder: Responder | None = None,
        listen: str = "/ip4/127.0.0.1/tcp/0",
    ) -> None:
        self.network = network
        self.identity = identity or Identity.generate()
        self.responder = responder or genesis_responder(network)
        self.connected: set[str] = set()  # updated in the trio thread
        self.disconnections = 0
        self.received: list[tuple[str, bytes]] = []
        self.requests: list[tuple[str, Any]] = []
        self.bridge = TrioBridge("hostile-peer")
        self.host: TrioHost | None = None
        self._cfg = HostConfig(
            seed=self.identity.seed,
            listen=(listen,),
            topics=tuple(P.topic_name(network, k) for k in P.KINDS),
            sync_protocol=P.sync_protocol(network),
            own_publish_rate=1e9,
            # gossipsub's per-topic spam limit also drops our own publishes past
            # it (silently): a hostile peer must send what the test tells it to.
            gossip_rate_limit=1e9,
            publish_wait_seconds=0.0,
            request_timeout=5.0,
        )

    @property
    def peer_id(self) -> str:
        assert self.host is not None
        return self.host.peer_id

    def listen_addrs(self) -> list[str]:
        assert self.host is not None
        return self.host.listen_addrs()

    async def start(self) -> None:
        async def serve(task_status: Any) -> None:
            self.host = TrioHost(self._cfg, _Callbacks(self))
            await self.host.serve(task_status=task_status)

        await self.bridge.start(serve)

    async def stop(self) -> None:
        host = self.host
        await self.bridge.stop(host.close_connections if host else None, timeout=0.5)

    def _host(self) -> TrioHost:
        assert self.host is not None, "start() first"
        return self.host

    async def connect(self, addr: str) -> str:
        return await self.bridge.call_trio(self._host().connect, addr)

    async def wait_subscribed(self, peer_id: str, kind: str, timeout: float = 10.0) -> None:
        topic = P.topic_name(self.network, kind)
        host = self._host()

        async def check() -> bool:
            peers = host.pubsub.peer_topics.get(topic, set())
            return any(str(p) == peer_id for p in peers) and any(
                str(p) == peer_id for p in host.pubsub.peers
            )

        deadline = time.monotonic() + timeout
        while not await self.bridge.call_trio(check):
            if time.monotonic() > deadline:
                raise AssertionError(f"{peer_id} never subscribed to {topic}")
            await asyncio.sleep(0.02)

    async def publish_raw(self, kind: str, data: bytes) -> None:
        """Publish any bytes on ``kind``'s topic: no size, schema or rate checks
        (even RPC frames over the 1 MiB cap that gossipsub refuses to send)."""
        host = self._host()
        topic = P.topic_name(self.network, kind)

        async def publish() -> None:
            for q in host.pubsub.peer_queues.values():
                q.max_message_size = max(q.max_message_size, len(data) + 4096)
            await host.pubsub.publish(topic, data)

        await self.bridge.call_trio(publish)

    async def request_raw(self, peer_id: str, data: bytes, timeout: float = 5.0) -> bytes:
        """Send any bytes as a sync request and return the raw response."""
        return await self.bridge.call_trio(self._host().request, peer_id, data, timeout)

    def is_connected(self, peer_id: str) -> bool:
        return peer_id in self.connected


# -- attack material (the attack-mix benchmark and the responsiveness test) ------------


def unfetchable_cid() -> str:
    """A well-formed CIDv0 of random bytes nobody holds: fetching it can only time out."""
    return b58encode(b"\x12\x20" + hashlib.sha256(secrets.token_bytes(32)).digest())


def genesis_forks(
    n: int, length: int = 2, network: str = "regtest", salt: bytes = b""
) -> list[Block]:
    """``n`` distinct side branches of ``length`` blocks forked at genesis, in
    sending order (parents first). Each is valid with cheap PoW and, while the
    node's chain is longer than ``length``, lighter than it: only headers stay.
    The same ``salt`` gives the same blocks; a fresh one gives new blocks (gossip
    ids are content hashes: a node's seen-cache drops blocks it got before)."""
    params = params_for(network)
    out: list[Block] = []
    for i in range(n):
        prev, t = params.genesis_hash, params.genesis_time
        miner = hashlib.sha256(b"fork-miner" + salt + i.to_bytes(4, "big")).digest()
        for height in range(1, length + 1):
            t += 1
            blk = solve(build_block(params, prev, height, params.pow_limit_bits, t, miner))
            out.append(blk)
            prev = blk.hash
    return out


def forged_results(
    task_id: bytes,
    seed: bytes,
    rounds: int,
    model_cids: Sequence[str],
    train_rows: int,
    metric: float,
    network: str = "regtest",
) -> list[ResultTx]:
    """One validly signed result per model CID, each under a fresh key (the
    round cycles through the task's rounds): a real artifact re-signed by
    strangers, or an unfetchable CID."""
    out = []
    for i, cid in enumerate(model_cids):
        key = Identity.generate()
        out.append(
            ResultTx(
                task_id=task_id,
                seed=seed,
                round=i % rounds,
                trainer=key.public_key,
                metric=metric,
                model_cid=cid,
                train_rows=train_rows,
                train_ms=1,
                fee=1_000,
            ).signed_by(key, params_for(network).genesis_hash)
        )
    return out


def spam_task(
    dataset_cid: str, publisher: Identity, fee: int, bounty: int = 0, network: str = "regtest"
) -> TaskTx:
    """A one-round ridge task on ``dataset_cid``, signed by ``publisher``
    (unfunded when the key is fresh; at ``fee`` = the network minimum it is
    the cheapest task a funded key can send)."""
    spec = TaskSpec(
        dataset_cid=dataset_cid, target="target", model="ridge", kind="regression", metric="r2"
    )
    return TaskTx(
        spec=spec,
        bounty=bounty,
        fee=fee,
        deadline=20,
        result_reward=0,
        max_results=1,
        publisher=publisher.public_key,
        nonce=secrets.randbits(63),
    ).signed_by(publisher, params_for(network).genesis_hash)


async def publish_paced(
    hp: HostilePeer,
    kind: str,
    payloads: Sequence[bytes],
    per_second: float,
    until: float = float("inf"),
) -> int:
    """Publish ``payloads`` at about ``per_second`` (a burst past gossipsub's
    32-RPC send queue would be dropped by our own host, not refused by the
    node); stops at ``until`` (monotonic) or when the node banned us.
    Returns how many were sent."""
    sent = 0
    gap = 1.0 / per_second
    t_next = time.monotonic()
    for data in payloads:
        now = time.monotonic()
        if now >= until or (sent and not hp.connected):
            break
        if t_next > now:
            await asyncio.sleep(t_next - now)  # pacing the sender, not waiting for a condition
        t_next += gap
        await hp.publish_raw(kind, data)
        sent += 1
    return sent
