"""Headers-first chain sync over ``/p2pml/<network>/sync/<PROTOCOL_VERSION>`` (asyncio side).

1. ``status`` on connect (and periodically): a different genesis is
   misbehaviour; a peer with more work than ours starts a header session.
2. A header session (one at a time) walks the peer's chain with locators,
   2,000 headers per round; each batch must link and is checked by the
   backend (PoW, retarget, time) before any body is requested. Bodies are
   requested only once a batch's last header carries at least our chain's
   work, and only those missing below it in our index: a lighter branch can
   never become ours, so storing it would only let a peer fill our disk
   with blocks forked where work is cheap.
3. Bodies are fetched from every peer that has them: batches of up to 128,
   two requests in flight per peer, inside a window of 1,024 blocks past the
   first missing one; they are submitted strictly in header order. A request
   that times out moves to other peers and the staller is disconnected.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from p2pml.chain.encoding import decode_block, decode_header
from p2pml.chain.params import NetworkParams
from p2pml.chain.types import Block, BlockHeader
from p2pml.errors import DecodeError
from p2pml.net import protocol as P
from p2pml.net.backend import BlockStatus, ChainBackend
from p2pml.net.host import RequestFailed
from p2pml.net.metrics import Metrics

log = logging.getLogger(__name__)

WINDOW = 1024
STALL_MEMORY = 120.0  # seconds a staller gets no body requests (even if it reconnects)
BATCH = P.MAX_BLOCKS_PER_REQUEST
PER_PEER = 2


@dataclass
class SyncPeer:
    peer_id: str
    genesis_ok: bool = False
    tip_hash: bytes | None = None
    height: int = -1
    chain_work: int = 0
    synced_to: bytes | None = None  # peer tip our last header session reached
    inflight: int = 0
    lacks: set[bytes] = field(default_factory=set)


class SyncHost(Protocol):
    """What the sync manager needs from the service."""

    backend: ChainBackend
    params: NetworkParams
    counters: Metrics
    chain_lock: asyncio.Lock

    async def request(
        self, peer_id: str, req: P.Request, timeout: float | None = None
    ) -> bytes: ...

    def penalise(self, peer_id: str, reason: str, penalty: int) -> None: ...

    def drop_peer(self, peer_id: str, reason: str) -> None: ...

    def spawn(self, coro: Awaitable[None], name: str) -> None: ...


class SyncManager:
    def __init__(self, host: SyncHost, on_peer_tip: Callable[[SyncPeer], None]) -> None:
        self.h = host
        self.peers: dict[str, SyncPeer] = {}
        self._on_peer_tip = on_peer_tip
        self._session: str | None = None
        self._pending_sessions: deque[str] = deque()
        self._order: deque[bytes] = deque()  # wanted bodies, header order
        self._want: dict[bytes, int] = {}  # hash -> height
        self._assigned: dict[bytes, str] = {}
        self._got: dict[bytes, tuple[Block, str]] = {}
        self._drain_lock = asyncio.Lock()
        self._stalled_until: dict[str, float] = {}

    # -- peers ---------------------------------------------------------------

    def add_peer(self, peer_id: str) -> SyncPeer:
        p = self.peers.get(peer_id)
        if p is None:
            p = self.peers[peer_id] = SyncPeer(peer_id)
            self.h.spawn(self.refresh_status(peer_id), f"status-{peer_id[-6:]}")
        return p

    def remove_peer(self, peer_id: str) -> None:
        self.peers.pop(peer_id, None)
        for h, pid in list(self._assigned.items()):
            if pid == peer_id:
                del self._assigned[h]
        if self._session == peer_id:
            self._session = None
        if peer_id in self._pending_sessions:
            self._pending_sessions.remove(peer_id)
        self.schedule()
        self.maybe_sync()

    def saw_block(self, peer_id: str, block: Block) -> None:
        """A peer relayed a block we accepted: it has at least that chain."""
        p = self.peers.get(peer_id)
        if p is not None and block.height > p.height:
            p.height = block.height
            p.tip_hash = block.hash
            self._on_peer_tip(p)

    def on_orphan(self, peer_id: str, block: Block) -> None:
        """Gossip gave us a block whose parent we lack: fetch the ancestors."""
        p = self.peers.get(peer_id)
        if p is None:
            return
        p.height = max(p.height, block.height)
        p.synced_to = None
        # Also while a session with this peer runs: it may have ended its walk
        # before this block existed, so it walks once more afterwards.
        if peer_id not in self._pending_sessions:
            self._pending_sessions.append(peer_id)
        self.maybe_sync()

    async def refresh_status(self, peer_id: str) -> None:
        for attempt in range(3):
            try:
                data = await self.h.request(peer_id, None, timeout=5.0)
                st = P.decode_status(data)
                break
            except RequestFailed as exc:
                if exc.kind == "unsupported":
                    self.h.penalise(peer_id, "wrong-network", P.PENALTY_WRONG_NETWORK)
                    return
                if exc.kind == "too-large":
                    self.h.penalise(peer_id, "oversize-status", P.PENALTY_MALFORMED)
                    return
                if peer_id not in self.peers or attempt == 2:
                    log.debug("status request to %s failed: %s", peer_id, exc)
                    return
                # A stream on a connection that is still settling can fail: retry.
                await asyncio.sleep(0.2 * (attempt + 1))
            except DecodeError:
                self.h.penalise(peer_id, "malformed-status", P.PENALTY_MALFORMED)
                return
        else:  # pragma: no cover - the loop always breaks or returns
            return
        p = self.peers.get(peer_id)
        if p is None:
            return
        if st.genesis_hash != self.h.params.genesis_hash:
            self.h.penalise(peer_id, "wrong-genesis", P.PENALTY_WRONG_NETWORK)
            return
        p.genesis_ok = True
        p.tip_hash, p.height, p.chain_work = st.tip_hash, st.height, st.chain_work
        log.debug("status of %s: height %d", peer_id, st.height)
        self._on_peer_tip(p)
        self.maybe_sync()
        self.schedule()

    # -- header sessions -------------------------------------------------------

    def maybe_sync(self) -> None:
        if self._session is not None:
            return
        while self._pending_sessions:
            pid = self._pending_sessions.popleft()
            if pid in self.peers:
                self._start_session(pid)
                return
        ours = self.h.backend.status().chain_work
        best: SyncPeer | None = None
        for p in self.peers.values():
            if not p.genesis_ok or p.chain_work <= ours or p.tip_hash is None:
                continue
            # Having its tip block is not enough: after a restart we may hold
            # headers (and a tip body) whose ancestors' bodies never came.
            if p.synced_to == p.tip_hash:
                continue
            if best is None or p.chain_work > best.chain_work:
                best = p
        if best is not None:
            self._start_session(best.peer_id)

    def _start_session(self, peer_id: str) -> None:
        log.debug("header session with %s", peer_id)
        self._session = peer_id
        self.h.spawn(self._header_session(peer_id), f"headers-{peer_id[-6:]}")

    async def _header_session(self, peer_id: str) -> None:
        try:
            await self._walk_headers(peer_id)
        finally:
            if self._session == peer_id:
                self._session = None
            self.maybe_sync()

    async def _walk_headers(self, peer_id: str) -> None:
        backend = self.h.backend
        locator = backend.locator()
        target = self.peers[peer_id].tip_hash if peer_id in self.peers else None
        reached = False  # did any batch reach our chain's work?
        while peer_id in self.peers:
            req = P.HeadersReq(tuple(locator[: P.MAX_LOCATOR]), None)
            try:
                raw = P.decode_headers(await self.h.request(peer_id, req))
                headers = [decode_header(r) for r in raw]
            except RequestFailed as exc:
                self._request_failed(peer_id, exc)
                return
            except DecodeError:
                self.h.penalise(peer_id, "malformed-headers", P.PENALTY_MALFORMED)
                return
            if not headers:
                break
            if not _linked(headers):
                self.h.penalise(peer_id, "headers-not-linked", P.PENALTY_UNCONNECTED)
                return
            async with self.h.chain_lock:
                out = await backend.submit_headers(headers, peer_id)
            log.debug(
                "%d headers from %s: %d fine, error %s",
                len(headers),
                peer_id,
                out.accepted,
                out.error,
            )
            self.h.counters.inc("sync_headers", out.accepted)
            if out.accepted and out.chain_work >= backend.status().chain_work:
                # Bodies of the branch the last header is on, found in the
                # index: not the headers sent, which a peer may have taken
                # from a lighter branch before jumping to a known heavy one.
                reached = True
                last = headers[out.accepted - 1].hash
                self._want_bodies(backend.bodiless_ancestors(last, self._want))
            p = self.peers.get(peer_id)
            if p is not None and out.accepted:
                p.height = max(p.height, headers[out.accepted - 1].height)
            if out.error is not None:
                if out.error == "prev-unknown":
                    self.h.penalise(peer_id, "headers-not-connected", P.PENALTY_UNCONNECTED)
                elif out.error not in P.BENIGN_REASONS:
                    self.h.penalise(peer_id, f"bad-header:{out.error}", P.PENALTY_INVALID)
                return
            if len(headers) < P.MAX_HEADERS:
                break
            locator = [headers[-1].hash, *locator]
        if not reached:
            self.h.counters.inc("sync_lighter_branches")
            log.debug("%s: its branch is not heavier than ours; no bodies asked", peer_id)
        p = self.peers.get(peer_id)
        if p is not None:
            p.synced_to = target

    def _request_failed(self, peer_id: str, exc: RequestFailed) -> None:
        if exc.kind == "timeout":
            self.h.counters.inc("sync_stalls")
            self._stalled_until[peer_id] = time.monotonic() + STALL_MEMORY
            self.h.drop_peer(peer_id, "stalled")
        elif exc.kind == "too-large":
            self.h.penalise(peer_id, "oversize-response", P.PENALTY_MALFORMED)
        elif exc.kind == "unsupported":
            self.h.penalise(peer_id, "wrong-network", P.PENALTY_WRONG_NETWORK)

    # -- bodies ----------------------------------------------------------------

    def _want_bodies(self, headers: list[BlockHeader]) -> None:
        has = self.h.backend.has_block
        for hd in headers:
            h = hd.hash
            if h in self._want or has(h):
                continue
            self._want[h] = hd.height
            self._order.append(h)
        self.schedule()

    def schedule(self) -> None:
        """Hand out body requests to every peer with spare capacity."""
        if not self._order:
            return
        window = [
            h
            for _, h in zip(range(WINDOW), self._order, strict=False)
            if h not in self._assigned and h not in self._got
        ]
        if not window:
            return
        now = time.monotonic()
        peers = sorted(
            (
                p
                for p in self.peers.values()
                if p.genesis_ok
                and p.inflight < PER_PEER
                and self._stalled_until.get(p.peer_id, 0.0) <= now
            ),
            key=lambda p: p.inflight,
        )
        if not peers and not any(p.inflight for p in self.peers.values()):
            self._give_up_if_unservable()
            return
        for p in peers:
            while p.inflight < PER_PEER and window:
                batch = [h for h in window if self._want[h] <= p.height and h not in p.lacks]
                batch = batch[:BATCH]
                if not batch:
                    break
                taken = set(batch)
                window = [h for h in window if h not in taken]
                for h in batch:
                    self._assigned[h] = p.peer_id
                p.inflight += 1
                self.h.spawn(self._fetch(p.peer_id, batch), f"blocks-{p.peer_id[-6:]}")
        if not self._assigned and window:
            self._give_up_if_unservable()

    def _give_up_if_unservable(self) -> None:
        """Nobody connected can serve the first wanted body: forget the queue
        (the next header session re-queues whatever is still missing)."""
        front = self._order[0]
        if any(
            self._want[front] <= p.height and front not in p.lacks
            for p in self.peers.values()
            if p.genesis_ok
        ):
            return
        self._order.clear()
        self._want.clear()
        self._got.clear()

    async def _fetch(self, peer_id: str, batch: list[bytes]) -> None:
        try:
            await self._fetch_one(peer_id, batch)
        finally:
            for h in batch:
                if self._assigned.get(h) == peer_id:
                    del self._assigned[h]
            p = self.peers.get(peer_id)
            if p is not None:
                p.inflight -= 1
        await self._drain()
        self.schedule()

    async def _fetch_one(self, peer_id: str, batch: list[bytes]) -> None:
        log.debug("asking %s for %d blocks", peer_id, len(batch))
        max_block = self.h.params.max_block_bytes
        try:
            data = await self.h.request(peer_id, P.BlocksReq(tuple(batch)))
            blocks = [decode_block(r, max_block) for r in P.decode_blocks(data, max_block)]
        except RequestFailed as exc:
            self._request_failed(peer_id, exc)
            return
        except DecodeError:
            self.h.penalise(peer_id, "malformed-blocks", P.PENALTY_MALFORMED)
            return
        wanted = set(batch)
        for b in blocks:
            if b.hash not in wanted:
                self.h.penalise(peer_id, "unrequested-block", P.PENALTY_UNREQUESTED)
                return
        for b in blocks:
            if b.hash in self._want:
                self._got[b.hash] = (b, peer_id)
            wanted.discard(b.hash)
        p = self.peers.get(peer_id)
        if p is not None and not blocks:
            p.lacks.update(wanted)  # it served nothing: ask someone else

    async def _drain(self) -> None:
        """Submit received bodies strictly in header order."""
        async with self._drain_lock:
            backend = self.h.backend
            while self._order:
                h = self._order[0]
                got = self._got.pop(h, None)
                if got is None:
                    if h not in self._assigned and backend.has_block(h):
                        self._order.popleft()  # arrived by gossip meanwhile
                        self._want.pop(h, None)
                        continue
                    break
                self._order.popleft()
                self._want.pop(h, None)
                block, peer_id = got
                async with self.h.chain_lock:
                    out = await backend.submit_block(block, peer_id, requested=True)
                if out.status is BlockStatus.INVALID and out.reason not in P.BENIGN_REASONS:
                    self.h.penalise(peer_id, f"invalid-block:{out.reason}", P.PENALTY_INVALID)
                elif out.status is BlockStatus.ACCEPTED:
                    self.h.counters.inc("sync_blocks")

    def busy(self) -> bool:
        return bool(self._session or self._order or self._pending_sessions)


def _linked(headers: list[BlockHeader]) -> bool:
    prev = headers[0]
    for hd in headers[1:]:
        if hd.prev_hash != prev.hash or hd.height != prev.height + 1:
            return False
        prev = hd
    return True
