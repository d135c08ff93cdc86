"""The py-libp2p host, gossipsub and request/response: trio side only.

Everything in this module runs in the bridge's trio thread. The host talks
to the node through :class:`HostCallbacks` (also called in the trio thread;
the service's implementation crosses to asyncio through the bridge).

Choices forced by py-libp2p 0.8.x (see docs/protocol.md):

* security is Noise only (its defaults also offer plaintext, secio, TLS);
* yamux first, mplex as fallback;
* no mDNS, UPnP, bootstrap discovery, DHT, relay or AutoNAT (``new_host``
  starts none of them when not asked; its auto-connector is disarmed with
  zero watermarks so it never dials peers on its own, e.g. banned ones);
* yamux window updates not sent on every read; a peer's signed peer
  record verified once, not on every RPC;
* gossipsub heartbeat 1 s (default 120 s), IP-diversity ("eclipse") mesh
  logic off (every test peer is 127.0.0.1), spam limit raised and our own
  publishes paced under it, since its limit also silently drops our own;
* subscription channels (32 slots, silent drops) are bypassed: messages are
  delivered through the topic validator, which must say yes before relay.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import INetConn, INetStream, INetwork, INotifee
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.exceptions import ValidationError
from libp2p.network.config import ConnectionConfig
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11, PROTOCOL_ID_V12, GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub, ValidationResult
from libp2p.request_response import (
    BytesCodec,
    MessageTooLargeError,
    ProtocolNotSupportedError,
    RequestResponse,
    RequestResponseConfig,
    RequestResponseError,
    RequestTimeoutError,
)
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.mplex.mplex import MPLEX_PROTOCOL_ID, Mplex
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.tools.anyio_service import background_trio_service

from p2pml.errors import NetworkError
from p2pml.net import protocol, records, yamux_credit

log = logging.getLogger(__name__)

# py-libp2p's yamux sends a WINDOW_UPDATE frame after every read by default
# ("release on read"), and pubsub reads each message's varint prefix a byte at
# a time: 6 encrypted frames and socket writes per small inbound gossip
# message, a large share of what a flood costs us (and the attacker). Off,
# only the library's go-yamux-like hysteresis sends credit (measured ~1.2
# frames per message). The library reads this at call time.
os.environ.setdefault("PY_YAMUX_RELEASE_ON_READ", "0")
# ... nor once per message from yamux's own "partial slack" credit (yamux_credit.py).
yamux_credit.install()
# A peer's signed peer record rides on every RPC: verify it once (records.py).
records.install()

# Publishing waits while any peer's outbound queue (32 RPCs) is this full.
QUEUE_HIGH_WATER = 24


class RequestFailed(NetworkError):
    """A sync request failed; ``kind`` is timeout | too-large | transport | unsupported."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


class HostCallbacks(Protocol):
    """Called in the trio thread."""

    def on_refused(self, peer_id: str, reason: str) -> None: ...

    def on_connected(self, peer_id: str, direction: str, addr: str) -> None: ...

    def on_disconnected(self, peer_id: str) -> None: ...

    async def validate(self, topic: str, forwarder: str, data: bytes, msg_id: bytes) -> bool: ...

    async def serve_request(self, peer_id: str, data: bytes) -> bytes: ...

    def on_dropped(self, what: str, count: int) -> None: ...

    def on_oversize(self, peer_id: str) -> None:
        """A gossip RPC frame over the 1 MiB cap arrived from ``peer_id``."""
        ...

    def on_sent(self, nbytes: int) -> None:
        """A gossip RPC frame of ``nbytes`` (length prefix included) was
        written to a peer's stream: every publish, relay and control message."""
        ...


@dataclass(frozen=True)
class HostConfig:
    seed: bytes
    listen: tuple[str, ...]
    topics: tuple[str, ...]
    sync_protocol: str
    heartbeat_seconds: float = 1.0
    degree: int = 6
    degree_low: int = 4
    degree_high: int = 12
    gossip_rate_limit: float = 200.0  # per peer per topic per second (relay)
    own_publish_rate: float = 100.0  # our own publishes per topic per second
    publish_wait_seconds: float = 2.0
    request_timeout: float = 10.0
    max_connections: int = 64
    max_peers: int = 32


def message_id(msg: rpc_pb2.Message) -> bytes:
    """Content-addressed: the same block from two origins is one message."""
    return hashlib.sha256(msg.data).digest()


def peer_id_of(seed: bytes) -> str:
    return str(ID.from_pubkey(create_new_key_pair(seed).public_key))


# go-libp2p's IDontWantMessageThreshold: py-libp2p sent an IDONTWANT (one
# RPC to each mesh peer) for every message it relayed or published, however
# small; for a message this small the IDONTWANT costs about what it saves.
IDONTWANT_MIN_BYTES = 1024


class _GossipSub(GossipSub):
    """Counts the RPCs gossipsub drops on full peer queues (it only logs);
    sends IDONTWANT only for received messages of ``IDONTWANT_MIN_BYTES``."""

    on_drop: Callable[[str, int], None] | None = None
    _idontwant = False  # for the message being published (set, then read without an await)

    async def publish(self, msg_forwarder: ID, pubsub_msg: rpc_pb2.Message) -> None:
        own = self.pubsub is not None and msg_forwarder == self.pubsub.my_id
        # Our own message goes to every mesh peer from us: nothing to tell them.
        self._idontwant = not own and len(pubsub_msg.data) >= IDONTWANT_MIN_BYTES
        await super().publish(msg_forwarder, pubsub_msg)

    async def _emit_idontwant_for_message(self, msg_id: bytes, topic_ids: Any) -> None:
        if self._idontwant:
            await super()._emit_idontwant_for_message(msg_id, topic_ids)

    def _get_peers_to_send(
        self,
        topic_ids: Any,
        msg_forwarder: ID,
        origin: ID,
        msg_id: bytes | None = None,
    ) -> Any:
        peers = set(super()._get_peers_to_send(topic_ids, msg_forwarder, origin, msg_id))
        pubsub = self.pubsub
        if pubsub is not None and origin == msg_forwarder == pubsub.my_id:
            # Flood-publish our own messages to every subscribed peer (go-libp2p's
            # default): a fresh block must not wait for the mesh to form.
            for topic in topic_ids:
                peers.update(pubsub.peer_topics.get(topic, ()))
            peers.discard(origin)
        return peers

    def _handle_dropped_rpc(self, peer_id: ID, rpc: rpc_pb2.RPC, reason: str) -> None:
        super()._handle_dropped_rpc(peer_id, rpc, reason)
        if self.on_drop is not None and rpc.publish:
            self.on_drop(f"gossip_dropped_{reason}", len(rpc.publish))


class _Pubsub(Pubsub):
    """Delivery happens in the topic validators; the 32-slot channels stay empty.
    Validation without formatting every refused message into its error."""

    on_oversize: Callable[[str], None] | None = None
    on_sent: Callable[[int], None] | None = None

    async def write_msg(self, stream: INetStream, rpc_msg: rpc_pb2.RPC) -> bool:
        """The library's write, counted (bytes handed to the stream, before the
        muxer's and Noise's framing): what gossip costs the node's uplink."""
        ok = await super().write_msg(stream, rpc_msg)
        if ok and self.on_sent is not None:
            size = rpc_msg.ByteSize()
            self.on_sent(size + _uvarint_len(size))
        return ok

    async def validate_msg(self, msg_forwarder: ID, msg: rpc_pb2.Message) -> None:
        """The library's ``validate_msg`` (cached verdicts, the validator
        semaphore, the timeout), minus its cost per refusal: it built each
        ValidationError with the whole message as protobuf text (~0.2 ms for
        a 1 KB message, for every message a validator refuses: most of a
        flood), and ran each validator in a nursery of its own."""
        msg_id = self._msg_id_constructor(msg)
        # Not for our own publish: a message we refused from a peer (ignored
        # while it could not be judged yet: an attestation before its beacon,
        # a result before its check) and accepted since is ours to send on;
        # its cached refusal would drop it silently for the cache's 300 s.
        own = msg_forwarder == self.my_id
        cached = None if own else self.validation_cache.get(msg_id)
        if cached is not None:
            if not cached.is_valid:
                raise ValidationError(f"cached: {cached.error_message}")
            return
        error: str | None = None
        with trio.move_on_after(self.validation_timeout) as scope:
            try:
                for v in self.get_msg_validators(msg):
                    if v.is_async:
                        async with self._validator_semaphore:
                            ok = await v.validator(msg_forwarder, msg)  # type: ignore[misc]
                    else:
                        ok = v.validator(msg_forwarder, msg)
                    if not ok:
                        error = "validation failed"
                        break
            except Exception as exc:  # the library turns these into a refusal too
                error = f"validation error: {type(exc).__name__}"
        if scope.cancelled_caught:
            error = "validation timeout"
        self.validation_cache.put(
            msg_id,
            ValidationResult(is_valid=error is None, timestamp=time.time(), error_message=error),
        )
        if error is not None:
            raise ValidationError(error)

    def notify_subscriptions(self, publish_message: rpc_pb2.Message) -> None:
        return None

    async def continuously_read_stream(self, stream: INetStream) -> None:
        # Pubsub resets an inbound stream only when a frame is over the RPC
        # size cap, and tells nobody: the wrapper turns that into a penalty.
        inbound: Any = _InboundStream(stream, self._oversize)
        await super().continuously_read_stream(inbound)

    def _oversize(self, peer_id: str) -> None:
        if self.on_oversize is not None and self.manager.is_running:
            self.on_oversize(peer_id)


def _uvarint_len(n: int) -> int:
    """Bytes of the unsigned varint that prefixes an RPC of ``n`` bytes."""
    out = 1
    while n >= 0x80:
        n >>= 7
        out += 1
    return out


class _InboundStream:
    """A pubsub stream as its read loop sees it: resets reported, reads buffered.

    Pubsub reads each RPC's varint prefix a byte at a time and then its body:
    three or more stream reads per small message, each through py-libp2p's
    NetStream and yamux layers (locks, state checks, eagerly formatted debug
    strings). Reading what is there (up to ``READ_CHUNK``) into a buffer the
    loop then consumes makes that about one read per message. Only the loop
    reads this stream, so the buffer is its alone; it holds at most one chunk.
    """

    READ_CHUNK = 65536

    def __init__(self, stream: INetStream, on_reset: Callable[[str], None]) -> None:
        self._stream = stream
        self._on_reset = on_reset
        self._buf = b""
        self._at = 0  # consumed prefix of _buf (no copying of the rest per read)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    async def read(self, n: int | None = None) -> bytes:
        if self._at >= len(self._buf):
            if n is None or n < 0:
                return await self._stream.read(n)
            self._buf, self._at = await self._stream.read(max(n, self.READ_CHUNK)), 0
        start = self._at
        end = len(self._buf) if n is None or n < 0 else min(len(self._buf), start + n)
        self._at = end
        return self._buf[start:end]

    async def reset(self) -> None:
        self._on_reset(str(self._stream.muxed_conn.peer_id))
        await self._stream.reset()


class _Notifee(INotifee):
    def __init__(self, host: TrioHost) -> None:
        self._host = host

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        pass

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        pass

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        self._host._on_conn(conn)

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        self._host._on_conn_closed(conn)

    async def listen(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        pass

    async def listen_close(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        pass


class TrioHost:
    def __init__(self, config: HostConfig, callbacks: HostCallbacks) -> None:
        self.config = config
        self.cb = callbacks
        key_pair = create_new_key_pair(config.seed)
        self.peer_id = str(ID.from_pubkey(key_pair.public_key))
        self._listen = [multiaddr.Multiaddr(a) for a in config.listen]
        for a in self._listen:
            if not {p.name for p in a.protocols()} & {"tcp"}:
                raise NetworkError(f"listen address {a}: only TCP is supported")
        noise = NoiseTransport(key_pair, noise_privkey=create_x25519_key_pair().private_key)
        # Zero watermarks: the swarm's auto-connector must never dial on its own.
        conn_cfg = ConnectionConfig(
            max_connections=config.max_connections,
            min_connections=0,
            low_watermark=0,
            high_watermark=config.max_connections,  # pruning starts above this
            max_connections_per_peer=2,
            dial_timeout=5.0,
        )
        self.host = new_host(
            key_pair=key_pair,
            sec_opt={TProtocol(NOISE_PROTOCOL_ID): noise},
            muxer_opt={
                TProtocol(YAMUX_PROTOCOL_ID): Yamux,
                TProtocol(MPLEX_PROTOCOL_ID): Mplex,
            },
            listen_addrs=self._listen,
            enable_mDNS=False,
            enable_upnp=False,
            bootstrap=None,
            connection_config=conn_cfg,
        )
        # The swarm's auto-connector dials peerstore entries (banned ones too)
        # towards a target derived from the watermarks: we do all dialing.
        swarm: Any = self.host.get_network()
        swarm.auto_connector.maybe_connect = _no_auto_connect
        self.gossipsub = _GossipSub(
            protocols=[PROTOCOL_ID_V12, PROTOCOL_ID_V11],
            degree=config.degree,
            degree_low=config.degree_low,
            degree_high=config.degree_high,
            heartbeat_initial_delay=0.1,
            heartbeat_interval=config.heartbeat_seconds,  # type: ignore[arg-type]
            do_px=False,
            spam_protection_enabled=True,
            max_messages_per_topic_per_second=config.gossip_rate_limit,
            eclipse_protection_enabled=False,
        )
        self.gossipsub.on_drop = self.cb.on_dropped
        self.pubsub = _Pubsub(
            self.host,
            self.gossipsub,
            msg_id_constructor=message_id,
            strict_signing=True,
            max_inbound_rpc_size=protocol.MAX_GOSSIP_RPC_BYTES,
            allowed_topics=set(config.topics),
            seen_ttl=120,
            # Block validation (done before relay) may re-check ML results:
            # allow time, and do not let slow results starve block validators.
            validation_timeout=60.0,
            max_concurrent_validator_count=64,
        )
        self.pubsub.on_oversize = self.cb.on_oversize
        self.pubsub.on_sent = self.cb.on_sent
        self.rr = RequestResponse(self.host)
        self._rr_server_cfg = RequestResponseConfig(
            timeout=config.request_timeout,
            max_request_size=protocol.MAX_REQUEST_BYTES,
            max_response_size=protocol.MAX_RESPONSE_BYTES,
            max_concurrent_inbound=32,
        )
        self.banned: set[str] = set()
        self._nursery: trio.Nursery | None = None
        self._addrs: list[str] = []
        self._connected: set[str] = set()
        self._own_sent: dict[str, deque[float]] = defaultdict(deque)
        self._publish_lock = trio.Lock()
        self.addrs_lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------

    async def serve(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await self._serve(task_status)
        finally:
            # Pubsub's seen-cache sweeper is a thread that nothing else stops.
            self.pubsub.seen_messages.stop()

    async def _serve(self, task_status: Any) -> None:
        self.host.get_network().register_notifee(_Notifee(self))
        self.rr.set_handler(
            TProtocol(self.config.sync_protocol),
            self._handle_request,
            BytesCodec(),
            self._rr_server_cfg,
        )
        async with (
            self.host.run(listen_addrs=self._listen),
            trio.open_nursery() as nursery,
        ):
            self._nursery = nursery
            bound = self.host.get_transport_addrs()
            missing = [a for a in self._listen if not self._matches(a, bound)]
            if missing:
                # py-libp2p only logs listen failures: fail loudly, with the cause.
                raise NetworkError(
                    "cannot listen on " + ", ".join(f"{a} ({_bind_error(a)})" for a in missing)
                )
            async with (
                background_trio_service(self.pubsub),
                background_trio_service(self.gossipsub),
            ):
                await self.pubsub.wait_until_ready()
                for topic in self.config.topics:
                    self.pubsub.set_topic_validator(topic, self._validator(topic), True)
                    await self.pubsub.subscribe(topic)
                with self.addrs_lock:
                    self._addrs = [f"{a}/p2p/{self.peer_id}" for a in bound]
                task_status.started()
                await trio.sleep_forever()

    @staticmethod
    def _matches(want: multiaddr.Multiaddr, bound: Sequence[multiaddr.Multiaddr]) -> bool:
        ip = want.value_for_protocol("ip4") if "ip4" in str(want) else None
        port = want.value_for_protocol("tcp")
        for b in bound:
            bip = b.value_for_protocol("ip4") if "ip4" in str(b) else None
            if bip == ip and (str(port) == "0" or b.value_for_protocol("tcp") == port):
                return True
        return False

    def listen_addrs(self) -> list[str]:
        with self.addrs_lock:
            return list(self._addrs)

    async def close_connections(self) -> None:
        """Graceful part of stop: close every connection (bounded by the bridge)."""
        async with trio.open_nursery() as n:
            for pid in list(self.host.get_network().connections):
                n.start_soon(self._close_peer, pid)

    async def _close_peer(self, pid: ID) -> None:
        try:
            await self.host.disconnect(pid)
        except Exception as exc:  # closing a dying connection may fail; nothing to do
            log.debug("disconnect %s: %s", pid, exc)

    # -- connections -------------------------------------------------------

    def _on_conn(self, conn: INetConn) -> None:
        pid = conn.muxed_conn.peer_id
        spid = str(pid)
        direction = str(getattr(conn, "direction", "unknown"))  # inbound | outbound
        if spid in self._connected:
            return
        refuse = ""
        if spid in self.banned:
            refuse = "banned"
        elif direction == "inbound" and len(self._connected) >= self.config.max_peers:
            refuse = "max_peers"
        if refuse:
            self.cb.on_refused(spid, refuse)
            self._spawn(self._close_peer, pid)
            return
        self._connected.add(spid)
        addr = ""
        try:
            addrs = conn.get_transport_addresses()
            addr = str(addrs[0]) if addrs else ""
        except Exception:  # not all connection types know their addresses
            pass
        self.cb.on_connected(spid, direction, addr)

    def _on_conn_closed(self, conn: INetConn) -> None:
        pid = conn.muxed_conn.peer_id
        spid = str(pid)
        live = [
            c
            for c in self.host.get_network().get_connections(pid)
            if c is not conn and not getattr(c, "is_closed", False)
        ]
        if live or spid not in self._connected:
            return
        self._connected.discard(spid)
        self.cb.on_disconnected(spid)

    def _spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(fn, *args)

    async def connect(self, addr: str) -> str:
        try:
            info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
        except Exception as exc:
            raise NetworkError(f"bad peer address {addr!r}: {exc}") from None
        spid = str(info.peer_id)
        if spid == self.peer_id:
            raise NetworkError("refusing to dial ourselves")
        if spid in self.banned:
            raise NetworkError(f"peer {spid} is banned")
        # An explicit dial uses exactly this address: forget stale ones (a peer
        # that restarted on a new port) and the swarm's 60 s "all addresses
        # failed" cache, which would otherwise defeat our reconnect backoff.
        swarm: Any = self.host.get_network()
        if info.peer_id not in swarm.connections:
            self.host.get_peerstore().clear_addrs(info.peer_id)
            swarm.unblock_peer(info.peer_id)
        try:
            with trio.fail_after(10):
                await self.host.connect(info)
        except trio.TooSlowError:
            raise NetworkError(f"dial {addr}: timed out") from None
        except Exception as exc:
            raise NetworkError(f"dial {addr}: {type(exc).__name__}: {exc}") from None
        return spid

    async def disconnect(self, peer_id: str, ban: bool) -> None:
        pid = ID.from_base58(peer_id)
        if ban:
            self.banned.add(peer_id)
            self.pubsub.blacklisted_peers.add(pid)  # drop its messages at once
        await self._close_peer(pid)

    def unban(self, peer_id: str) -> None:
        self.banned.discard(peer_id)
        self.pubsub.blacklisted_peers.discard(ID.from_base58(peer_id))

    async def connection_protocols(self, peer_id: str) -> tuple[str | None, str | None]:
        conns = self.host.get_network().get_connections(ID.from_base58(peer_id))
        if not conns:
            return (None, None)
        c: Any = conns[0]
        return (c.get_negotiated_security_protocol(), c.get_negotiated_muxer_protocol())

    def connected_peers(self) -> list[str]:
        return sorted(self._connected)

    # -- gossip ------------------------------------------------------------

    def _validator(self, topic: str) -> Callable[[ID, rpc_pb2.Message], Awaitable[bool]]:
        async def validate(forwarder: ID, msg: rpc_pb2.Message) -> bool:
            if str(forwarder) == self.peer_id:
                return True  # our own publish: checked before publishing
            return await self.cb.validate(topic, str(forwarder), bytes(msg.data), message_id(msg))

        return validate

    async def publish(self, topic: str, data: bytes) -> None:
        """Publish with flow control: never into full peer queues, never over
        the spam limit our peers apply (both would drop silently)."""
        if len(data) + 1024 > protocol.MAX_GOSSIP_RPC_BYTES:
            raise NetworkError(f"message of {len(data)} bytes is over the gossip limit")
        async with self._publish_lock:
            sent = self._own_sent[topic]
            now = time.monotonic()
            while sent and sent[0] <= now - 1.0:
                sent.popleft()
            if len(sent) >= self.config.own_publish_rate:
                await trio.sleep(sent[0] + 1.0 - now)
                sent.popleft()
            deadline = trio.current_time() + self.config.publish_wait_seconds
            while trio.current_time() < deadline and any(
                len(q) >= QUEUE_HIGH_WATER for q in self.pubsub.peer_queues.values()
            ):
                await trio.sleep(0.005)
            sent.append(time.monotonic())
            await self.pubsub.publish(topic, data)

    def mesh_sizes(self) -> dict[str, int]:
        return {t: len(p) for t, p in self.gossipsub.mesh.items()}

    def topic_peers(self, topic: str) -> int:
        return len(self.pubsub.peer_topics.get(topic, ()))

    # -- sync request/response --------------------------------------------

    async def _handle_request(self, request: bytes, ctx: Any) -> bytes:
        return await self.cb.serve_request(str(ctx.peer_id), request)

    async def request(self, peer_id: str, data: bytes, timeout: float | None = None) -> bytes:
        cfg = RequestResponseConfig(
            timeout=timeout or self.config.request_timeout,
            max_request_size=protocol.MAX_REQUEST_BYTES,
            max_response_size=protocol.MAX_RESPONSE_BYTES,
        )
        try:
            return await self.rr.send_request(
                ID.from_base58(peer_id),
                [TProtocol(self.config.sync_protocol)],
                data,
                BytesCodec(),
                cfg,
            )
        except RequestTimeoutError as exc:
            raise RequestFailed("timeout", str(exc)) from None
        except MessageTooLargeError as exc:
            raise RequestFailed("too-large", str(exc)) from None
        except ProtocolNotSupportedError as exc:
            raise RequestFailed("unsupported", str(exc)) from None
        except RequestResponseError as exc:
            raise RequestFailed("transport", str(exc)) from None
        except Exception as exc:
            raise RequestFailed("transport", f"{type(exc).__name__}: {exc}") from None


def _bind_error(addr: multiaddr.Multiaddr) -> str:
    """Why binding ``addr`` fails, probed with a plain socket."""
    family, ip = socket.AF_INET, None
    for proto, fam in (("ip4", socket.AF_INET), ("ip6", socket.AF_INET6)):
        try:
            ip = addr.value_for_protocol(proto)
        except Exception:
            continue
        if ip:
            family = fam
            break
    try:
        port = int(addr.value_for_protocol("tcp") or 0)
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((ip or "", port))
    except OSError as exc:
        return exc.strerror or str(exc)
    except Exception as exc:
        return str(exc)
    return "listener did not start"


async def _no_auto_connect() -> None:
    return None
