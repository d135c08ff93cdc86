"""The libp2p host's callbacks, run in its trio thread: connection events
cross to the asyncio loop; gossip is validated here (size, peek, precheck,
the asyncio-side context, decode, check), then queued for its handler on the
loop, whose verdict decides relay; sync requests are answered on the loop.
Misbehaviour is penalised through the service."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from p2pml.errors import DecodeError, ValidationError
from p2pml.net import protocol as P
from p2pml.net.backend import Verdict
from p2pml.net.bridge import TrioBridge
from p2pml.net.metrics import Metrics
from p2pml.net.topics import TopicRegistry, TopicSpec


@dataclass
class GossipItem:
    """A validated gossip message waiting for its topic's handler."""

    spec: TopicSpec
    obj: Any
    peer_id: str
    reply: Callable[[Verdict], None]


class HostCallbacks:
    """The host's ``HostCallbacks``: runs in the trio thread and crosses over
    to the service's asyncio side through the bridge."""

    def __init__(
        self,
        bridge: TrioBridge,
        counters: Metrics,
        topics: TopicRegistry,
        *,
        connected: Callable[[str, str, str], None],
        disconnected: Callable[[str], None],
        penalise: Callable[[str, str, int], None],
        enqueue: Callable[[GossipItem, str], None],
        answer: Callable[[P.Request], bytes],
    ) -> None:
        self.bridge = bridge
        self.counters = counters
        self.topics = topics
        self._connected = connected
        self._disconnected = disconnected
        self._penalise_fn = penalise
        self._enqueue = enqueue
        self._answer = answer
        self._inflight_msgs: set[bytes] = set()  # trio thread only

    def on_connected(self, peer_id: str, direction: str, addr: str) -> None:
        self.bridge.post_to_asyncio(self._connected, peer_id, direction, addr)

    def on_disconnected(self, peer_id: str) -> None:
        self.bridge.post_to_asyncio(self._disconnected, peer_id)

    def on_refused(self, peer_id: str, reason: str) -> None:
        self.counters.inc(f"refused_{reason}")

    def on_dropped(self, what: str, count: int) -> None:
        self.counters.inc(what, count)

    def on_sent(self, nbytes: int) -> None:
        self.counters.inc("gossip_bytes_sent", nbytes)

    def on_oversize(self, peer_id: str) -> None:
        self.counters.inc("gossip_oversize_rpc")
        self._penalise(peer_id, "oversize-rpc", P.PENALTY_MALFORMED)

    def _penalise(self, peer_id: str, reason: str, penalty: int) -> None:
        self.bridge.post_to_asyncio(self._penalise_fn, peer_id, reason, penalty)

    async def validate(self, topic: str, forwarder: str, data: bytes, msg_id: bytes) -> bool:
        spec = self.topics.by_topic(topic)
        if spec is None:
            return False
        if len(data) > spec.max_bytes:
            self.counters.inc("gossip_oversize")
            self._penalise(forwarder, f"oversize-{spec.kind}", P.PENALTY_MALFORMED)
            return False
        try:
            obj = None if spec.peek is not None else spec.decode(data)
            view = spec.peek(data) if spec.peek is not None else obj
            if spec.precheck is not None:
                spec.precheck(view)
            if spec.context is not None:
                await self.bridge.call_asyncio_sync(spec.context, view, forwarder)
            if obj is None:
                obj = spec.decode(data)
            spec.check(obj)
        except DecodeError:
            self.counters.inc("gossip_malformed")
            self._penalise(forwarder, f"malformed-{spec.kind}", P.PENALTY_MALFORMED)
            return False
        except ValidationError as err:
            if err.reason in P.BENIGN_REASONS:
                return False  # context said: not worth it (its own charge, if any)
            self.counters.inc("gossip_invalid")
            self._penalise(forwarder, f"invalid-{spec.kind}:{err.reason}", P.PENALTY_INVALID)
            return False
        if msg_id in self._inflight_msgs:
            return False  # the same message from another peer is being handled
        self._inflight_msgs.add(msg_id)
        try:
            verdict: Verdict = await self.bridge.wait_asyncio(
                lambda reply: self._enqueue(GossipItem(spec, obj, forwarder, reply), topic)
            )
        finally:
            self._inflight_msgs.discard(msg_id)
        return verdict is Verdict.ACCEPT

    async def serve_request(self, peer_id: str, data: bytes) -> bytes:
        try:
            req = P.decode_request(data)
        except DecodeError:
            self._penalise(peer_id, "malformed-request", P.PENALTY_MALFORMED)
            raise
        return await self.bridge.call_asyncio_sync(self._answer, req)
