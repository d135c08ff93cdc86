"""P2PService: the node's one handle on the peer-to-peer network.

Wiring (asyncio side)::

    svc = P2PService(identity, params, settings.p2p,
                     bans=SqliteBanStore(data_dir / "bans.sqlite"))
    svc.topics.register(TopicSpec("tasks", ...))     # optional, before start
    await svc.start(backend)    # NetworkError (one line) if a listen address fails
    ...
    await svc.publish_block(block)   # after the node accepted its own block
    await svc.stop()

Threads: the libp2p host runs in the bridge's trio thread; all state here
lives on the asyncio loop. Background work is owned by one supervisor task
running an ``asyncio.TaskGroup``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2pml.chain.encoding import encode_block
from p2pml.chain.params import NetworkParams
from p2pml.chain.types import Block
from p2pml.config import P2PSettings
from p2pml.crypto import Identity
from p2pml.errors import NetworkError
from p2pml.net import protocol as P
from p2pml.net.backend import ChainBackend, Verdict
from p2pml.net.bans import Ban, BanStore, MemoryBanStore, SqliteBanStore
from p2pml.net.block_topic import BlockTopic
from p2pml.net.bridge import TrioBridge
from p2pml.net.host import HostConfig, TrioHost, peer_id_of
from p2pml.net.host_callbacks import GossipItem, HostCallbacks
from p2pml.net.lowwork import LowWorkBudget
from p2pml.net.metrics import Metrics
from p2pml.net.sync import SyncManager, SyncPeer
from p2pml.net.topics import TopicRegistry
from p2pml.supervisor import Supervisor

log = logging.getLogger(__name__)

STATUS_INTERVAL = 30.0
MAINTENANCE_INTERVAL = 0.5
BACKOFF_MIN, BACKOFF_MAX = 1.0, 60.0


@dataclass(frozen=True)
class PeerInfo:
    """One connected peer, for the admin API (``dataclasses.asdict`` it)."""

    peer_id: str
    direction: str  # inbound | outbound
    addrs: tuple[str, ...]
    connected_since: float  # unix time
    score: int  # accumulated penalties; banned at 100
    tip: str | None  # hex
    height: int
    chain_work: int


@dataclass
class _Peer:
    peer_id: str
    direction: str
    addrs: list[str]
    connected_since: float
    score: int = 0


@dataclass
class _Bootstrap:
    addr: str
    peer_id: str
    next_try: float = 0.0
    backoff: float = BACKOFF_MIN


class P2PService:
    def __init__(
        self,
        identity: Identity,
        params: NetworkParams,
        settings: P2PSettings,
        bans: BanStore | Path | None = None,
        clock: Callable[[], float] = time.time,
        request_timeout: float = 10.0,
    ) -> None:
        self.identity = identity
        self.params = params
        # Set by start(): what we hand blocks, gossip and sync requests to.
        # It is a start argument, not a constructor one, because the node's
        # services send through this service and receive through the backend.
        self.backend: ChainBackend = _NO_BACKEND
        self.settings = settings
        # A path: we open (and close) a SQLite store; a store: the caller owns it.
        self._own_bans = isinstance(bans, Path)
        if isinstance(bans, Path):
            self.bans: BanStore = SqliteBanStore(bans)
        else:
            self.bans = bans if bans is not None else MemoryBanStore()
        self.clock = clock
        self.request_timeout = request_timeout
        self.counters = Metrics()
        self.chain_lock = asyncio.Lock()
        self.peer_id = peer_id_of(identity.seed)
        self.topics = TopicRegistry(params.name)
        self.bridge = TrioBridge(f"p2pml-trio-{self.peer_id[-6:]}")
        self._host: TrioHost | None = None
        self._peers: dict[str, _Peer] = {}
        self.sync = SyncManager(self, self._peer_tip)
        self.low_work = LowWorkBudget()
        self._block_topic = BlockTopic(
            params,
            self.counters,
            self.chain_lock,
            lambda: self.backend,
            self.sync,
            self.charge_low_work,
        )
        self.topics.register(self._block_topic.spec())
        self._queues: dict[str, asyncio.Queue[GossipItem]] = {}
        self._bootstrap = [_Bootstrap(a, _peer_of(a)) for a in settings.bootstrap]
        self._jobs = Supervisor(log, lambda: self.counters.inc("task_failures"))
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._ready = asyncio.Event()
        self._started = False
        self._stopped = False
        self._ban_listeners: list[Callable[[str], None]] = []

    # -- lifecycle -------------------------------------------------------------

    async def start(
        self, backend: ChainBackend, supervisor: asyncio.TaskGroup | None = None
    ) -> None:
        """Bind and start, handing what arrives to ``backend``. ``supervisor``:
        the caller's TaskGroup, which then owns this service's background
        tasks (the node passes its own); alone (tests, tools) the service
        runs them in a task of its own."""
        if self._started:
            raise RuntimeError("P2PService already started")
        self._started = True
        self.backend = backend
        self.topics.frozen = True
        banned = {b.peer_id for b in self.bans.active(self.clock())}
        cfg = HostConfig(
            seed=self.identity.seed,
            listen=tuple(self.settings.listen),
            topics=tuple(self.topics.topics()),
            sync_protocol=P.sync_protocol(self.params.name),
            heartbeat_seconds=self.settings.heartbeat_seconds,
            request_timeout=self.request_timeout,
            max_connections=max(4, self.settings.max_peers * 2),
            max_peers=self.settings.max_peers,
        )

        async def serve(task_status: Any) -> None:
            callbacks = HostCallbacks(
                self.bridge,
                self.counters,
                self.topics,
                connected=self._peer_connected,
                disconnected=self._peer_disconnected,
                penalise=self.penalise,
                enqueue=self._enqueue_gossip,
                answer=self._answer,
            )
            host = TrioHost(cfg, callbacks)
            host.banned.update(banned)
            self._host = host
            await host.serve(task_status=task_status)

        try:
            await self.bridge.start(serve)
        except NetworkError:
            raise
        except Exception as exc:
            raise NetworkError(f"p2p host failed to start: {exc}") from None
        for kind in self.topics.kinds():
            spec = self.topics.by_kind(kind)
            assert spec is not None
            self._queues[self.topics.topic(kind)] = asyncio.Queue(spec.queue_size)
        if supervisor is not None:
            self._supervisor = supervisor.create_task(self._supervise(), name="p2p-supervisor")
        else:
            self._supervisor = asyncio.create_task(self._supervise(), name="p2p-supervisor")
        await self._ready.wait()

    async def _supervise(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                self._jobs.attach(tg)
                for topic, q in self._queues.items():
                    self.spawn(self._gossip_worker(q), f"gossip-{topic}")
                self.spawn(self._maintenance(), "maintenance")
                self.spawn(self._watch_host(), "watch-host")
                self._ready.set()
                await self._stopping.wait()
                self._jobs.close()
        finally:
            self._jobs.close()
            self._ready.set()

    def spawn(self, coro: Awaitable[None], name: str) -> None:
        """Run ``coro`` under the supervisor; its failure is logged, not fatal."""
        if self._stopping.is_set():
            if asyncio.iscoroutine(coro):
                coro.close()
            return
        self._jobs.spawn(coro, f"p2p-{name}")

    async def stop(self) -> None:
        """Ordered: background tasks, then connections, then the trio thread."""
        if not self._started or self._stopped:
            return
        self._stopped = True
        self._stopping.set()
        sup, self._supervisor = self._supervisor, None
        if sup is not None:
            # The owner's TaskGroup may have cancelled it already (the node
            # stops its jobs before the network): wait, never re-raise.
            await asyncio.wait({sup})
            if not sup.cancelled() and sup.exception() is not None:
                log.warning("p2p supervisor ended with %r", sup.exception())
        for q in self._queues.values():
            while not q.empty():
                q.get_nowait().reply(Verdict.IGNORE)
        host = self._host
        await self.bridge.stop(host.close_connections if host else None, timeout=1.0)
        self._host = None
        if self._own_bans:
            self.bans.close()

    async def _watch_host(self) -> None:
        await self.bridge.wait_finished()
        if not self._stopping.is_set():
            log.error("p2p host thread ended unexpectedly")
            self.counters.inc("host_crashes")

    # -- public API --------------------------------------------------------------

    def listen_addrs(self) -> list[str]:
        """Full multiaddrs (with /p2p/<id>) we listen on."""
        return self._host.listen_addrs() if self._host else []

    def peers(self) -> list[PeerInfo]:
        out = []
        for p in self._peers.values():
            sp = self.sync.peers.get(p.peer_id)
            out.append(
                PeerInfo(
                    peer_id=p.peer_id,
                    direction=p.direction,
                    addrs=tuple(p.addrs),
                    connected_since=p.connected_since,
                    score=p.score,
                    tip=sp.tip_hash.hex() if sp and sp.tip_hash else None,
                    height=sp.height if sp else -1,
                    chain_work=sp.chain_work if sp else 0,
                )
            )
        return out

    def gossip_peers(self, kind: str) -> int:
        """How many connected peers are subscribed to ``kind``'s topic."""
        host = self._host
        return host.topic_peers(self.topics.topic(kind)) if host else 0

    async def connection_protocols(self, peer_id: str) -> tuple[str | None, str | None]:
        """(security, muxer) negotiated with ``peer_id``."""
        host = self._require_host()
        return await self.bridge.call_trio(host.connection_protocols, peer_id)

    def metrics(self) -> dict[str, int]:
        """Plain counters (drops, penalties, bans, sync progress, ...)."""
        return self.counters.snapshot()

    def banned(self) -> list[Ban]:
        return self.bans.active(self.clock())

    def unban(self, peer_id: str) -> Ban | None:
        """Lift a ban now, whatever set it; the ban lifted, or None if there was none."""
        ban = self.bans.get(peer_id, self.clock())
        self.bans.remove(peer_id)
        host = self._host
        if host is not None:
            self.bridge.post_to_trio(host.unban, peer_id)
        if ban is not None:
            log.info("ban of peer %s lifted by the operator", peer_id)
        return ban

    async def connect(self, addr: str) -> str:
        """Dial ``/ip4/.../tcp/N/p2p/<id>``; returns the peer id."""
        host = self._require_host()
        pid = _peer_of(addr)
        if pid and self.bans.get(pid, self.clock()) is not None:
            raise NetworkError(f"peer {pid} is banned")
        return await self.bridge.call_trio(host.connect, addr)

    async def disconnect(self, peer_id: str, ban_seconds: float = 0) -> None:
        if ban_seconds > 0:
            self._ban(peer_id, "manual", ban_seconds)
        else:
            host = self._require_host()
            await self.bridge.call_trio(host.disconnect, peer_id, False)

    async def publish_block(self, block: Block) -> None:
        """Gossip a block the node has accepted (checked here statelessly)."""
        data = encode_block(block)
        self._block_topic.check(self._block_topic.decode(data))
        await self._publish(self.topics.topic("blocks"), data)

    async def publish(self, kind: str, payload: bytes) -> None:
        """Gossip an encoded task/result/...; it must pass its own topic checks."""
        spec = self.topics.by_kind(kind)
        if spec is None:
            raise ValueError(f"unknown topic kind {kind!r}")
        if len(payload) > spec.max_bytes:
            raise ValueError(f"{kind} payload of {len(payload)} bytes > {spec.max_bytes}")
        spec.check(spec.decode(payload))
        await self._publish(self.topics.topic(kind), payload)

    async def _publish(self, topic: str, data: bytes) -> None:
        host = self._require_host()
        await self.bridge.call_trio(host.publish, topic, data)
        self.counters.inc("gossip_published")

    def _require_host(self) -> TrioHost:
        if self._host is None or self._stopping.is_set():
            raise NetworkError("p2p service is not running")
        return self._host

    # -- peers and penalties ---------------------------------------------------

    def _peer_connected(self, peer_id: str, direction: str, addr: str) -> None:
        if self._stopping.is_set():
            return
        self._peers[peer_id] = _Peer(peer_id, direction, [addr] if addr else [], self.clock())
        self.counters.inc("peers_connected")
        for b in self._bootstrap:
            if b.peer_id == peer_id:
                b.backoff = BACKOFF_MIN
        self.sync.add_peer(peer_id)

    def _peer_disconnected(self, peer_id: str) -> None:
        self._peers.pop(peer_id, None)
        self.low_work.forget(peer_id)
        self.counters.inc("peers_disconnected")
        self.sync.remove_peer(peer_id)

    def _peer_tip(self, p: SyncPeer) -> None:
        pass  # PeerInfo reads SyncPeer directly; kept as a hook for the node

    def penalise(self, peer_id: str, reason: str, penalty: int) -> None:
        if penalty <= 0 or peer_id == self.peer_id:
            return
        self.counters.inc("penalties")
        self.counters.inc(f"penalty_{reason.split(':')[0]}")
        log.info("peer %s misbehaved: %s (+%d)", peer_id, reason, penalty)
        p = self._peers.get(peer_id)
        score = penalty
        if p is not None:
            p.score += penalty
            score = p.score
        if score >= P.BAN_THRESHOLD:
            self._ban(peer_id, reason, self.settings.ban_seconds)

    def on_banned(self, fn: Callable[[str], None]) -> None:
        """``fn(peer_id)`` whenever a peer gets banned (e.g. to cancel its work)."""
        self._ban_listeners.append(fn)

    def charge_low_work(self, peer_id: str, items: int) -> None:
        """``items`` headers/blocks of lighter branches from ``peer_id``:
        free up to its budget, then one penalty point each (and a ban)."""
        if items <= 0:
            return
        self.counters.inc("low_work_items", items)
        over = self.low_work.charge(peer_id, items)
        if over:
            self.penalise(peer_id, "low-work-spam", min(over, P.BAN_THRESHOLD))

    def _ban(self, peer_id: str, reason: str, seconds: float) -> None:
        self.bans.add(Ban(peer_id, self.clock() + seconds, reason))
        self.counters.inc("bans")
        log.warning("banned peer %s for %ss: %s", peer_id, seconds, reason)
        for fn in self._ban_listeners:
            fn(peer_id)
        host = self._host
        if host is not None:
            self.spawn(self._disconnect_quietly(host, peer_id, True), f"ban-{peer_id[-6:]}")

    async def _disconnect_quietly(self, host: TrioHost, peer_id: str, ban: bool) -> None:
        with contextlib.suppress(NetworkError):
            await self.bridge.call_trio(host.disconnect, peer_id, ban)

    def drop_peer(self, peer_id: str, reason: str) -> None:
        log.info("dropping peer %s: %s", peer_id, reason)
        host = self._host
        if host is not None:
            self.spawn(self._disconnect_quietly(host, peer_id, False), f"drop-{peer_id[-6:]}")

    async def request(self, peer_id: str, req: P.Request, timeout: float | None = None) -> bytes:
        host = self._require_host()
        return await self.bridge.call_trio(host.request, peer_id, P.encode_request(req), timeout)

    # -- background loops --------------------------------------------------------

    async def _maintenance(self) -> None:
        """Bootstrap dials with backoff, periodic status, ban expiry."""
        next_status = time.monotonic() + STATUS_INTERVAL
        while True:
            now = time.monotonic()
            for b in self._bootstrap:
                if b.peer_id in self._peers or now < b.next_try:
                    continue
                if len(self._peers) >= self.settings.max_peers:
                    break
                if self.bans.get(b.peer_id, self.clock()) is not None:
                    continue
                b.next_try = now + b.backoff
                b.backoff = min(b.backoff * 2, BACKOFF_MAX)
                self.spawn(self._dial(b.addr), f"dial-{b.peer_id[-6:]}")
            if now >= next_status:
                next_status = now + STATUS_INTERVAL
                for pid in list(self.sync.peers):
                    self.spawn(self.sync.refresh_status(pid), f"status-{pid[-6:]}")
                self._expire_bans()
            await asyncio.sleep(MAINTENANCE_INTERVAL)

    async def _dial(self, addr: str) -> None:
        try:
            await self.connect(addr)
        except NetworkError as exc:
            self.counters.inc("dial_failures")
            log.debug("dial %s failed: %s", addr, exc)

    def _expire_bans(self) -> None:
        host = self._host
        if host is None:
            return
        active = {b.peer_id for b in self.bans.active(self.clock())}
        expired = [pid for pid in list(host.banned) if pid not in active]
        for pid in expired:
            self.bridge.post_to_trio(host.unban, pid)

    # -- gossip ----------------------------------------------------------------------

    def _enqueue_gossip(self, item: GossipItem, topic: str) -> None:
        q = self._queues.get(topic)
        if q is None or self._stopping.is_set():
            item.reply(Verdict.IGNORE)
            return
        try:
            q.put_nowait(item)
        except asyncio.QueueFull:
            self.counters.inc("gossip_inbound_dropped")
            item.reply(Verdict.IGNORE)

    async def _gossip_worker(self, q: asyncio.Queue[GossipItem]) -> None:
        while True:
            item = await q.get()
            verdict = Verdict.IGNORE
            try:
                handle = item.spec.handle
                if handle is None:
                    verdict = await self.backend.on_gossip(item.spec.kind, item.obj, item.peer_id)
                else:
                    verdict = await handle(item.obj, item.peer_id)
            except asyncio.CancelledError:
                item.reply(Verdict.IGNORE)
                raise
            except Exception:
                log.exception("gossip handler for %s failed", item.spec.kind)
                self.counters.inc("gossip_handler_errors")
            item.reply(verdict)
            self.counters.inc(f"gossip_{item.spec.kind}_{verdict.value}")
            if verdict is Verdict.REJECT:
                self.penalise(item.peer_id, f"invalid-{item.spec.kind}", P.PENALTY_INVALID)

    # -- sync responder (asyncio side of serve_request) --------------------------

    def _answer(self, req: P.Request) -> bytes:
        b = self.backend
        if req is None:
            s = b.status()
            return P.encode_status(P.StatusMsg(s.genesis_hash, s.tip_hash, s.height, s.chain_work))
        if isinstance(req, P.HeadersReq):
            headers = b.headers_after(list(req.locator), req.stop, P.MAX_HEADERS)
            return P.encode_headers([h.serialize() for h in headers])
        out: list[bytes] = []
        total = 0
        for block in b.get_blocks(list(req.hashes)):
            raw = encode_block(block)
            if out and total + len(raw) > P.MAX_BLOCKS_RESPONSE_BYTES:
                break
            out.append(raw)
            total += len(raw)
        self.counters.inc("sync_blocks_served", len(out))
        return P.encode_blocks(out)


def _peer_of(addr: str) -> str:
    marker = "/p2p/"
    i = addr.rfind(marker)
    return addr[i + len(marker) :].split("/")[0] if i >= 0 else ""


class _NoBackend:
    """Before start(): nothing arrives, so nothing is asked of it."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError("P2PService is not started: it has no chain backend yet")


_NO_BACKEND: Any = _NoBackend()
