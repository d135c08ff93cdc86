"""Verify a peer's signed peer record once, not on every RPC it sends; and
build our own once, not for every RPC we send.

py-libp2p's pubsub attaches the sender's signed peer record (an Envelope with
an Ed25519 signature) to every RPC, and the receiver checks it on every RPC:
once when reading it and again in gossipsub's control handling. Under a flood
of small gossip messages that check was the largest single cost of the libp2p
thread (~15 % of its busy samples in scripts/bench_attack.py). A peer sends
the same record bytes over and over, so a record already verified and stored
for this host and peer is accepted without verifying again; a new or changed
record is checked as before (a bad one is still refused), and a known one is
re-checked every ``REFRESH_SECONDS`` so the peerstore's 2 h TTL stays fresh.

The other way round, py-libp2p attaches our own record to every RPC it
sends (each relay, IDONTWANT, IHAVE and control message) and fetches it
through ``env_to_send_in_RPC``, which rebuilds the host's address list
(multiaddr parsing and formatting, ~7 % of the libp2p thread's busy samples
under the attack mix) to compare it with the cached record's. Our listen
addresses are fixed once the host runs, so :class:`OwnRecordMemo` keeps the
envelope per host and asks the library again every ``OWN_REFRESH_SECONDS``.

Installed by :mod:`p2pml.net.host` (it replaces the functions the library's
pubsub and gossipsub modules imported): this changes no bytes on the wire.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from libp2p.abc import IHost
from libp2p.peer import peerstore as _peerstore
from libp2p.peer.id import ID
from libp2p.pubsub import gossipsub as _gossipsub
from libp2p.pubsub import pubsub as _pubsub
from libp2p.pubsub import utils as _utils
from libp2p.pubsub.pb.rpc_pb2 import RPC

REFRESH_SECONDS = 600.0
MAX_PEERS = 1024  # remembered per host; the oldest is forgotten first
OWN_REFRESH_SECONDS = 5.0

_verify: Callable[[RPC, IHost, ID], bool] = _utils.maybe_consume_signed_record
_own: Callable[[IHost], tuple[bytes, bool]] = _peerstore.env_to_send_in_RPC


class RecordMemo:
    """The last verified record of each peer, per host (hosts are weak keys:
    a stopped host takes its memo with it)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._hosts: weakref.WeakKeyDictionary[Any, OrderedDict[str, tuple[bytes, float]]] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()  # hosts of one process run in their own threads

    def consume(self, msg: RPC, host: IHost, peer_id: ID) -> bool:
        """``maybe_consume_signed_record``, verifying only what is new."""
        if not msg.HasField("senderRecord"):
            return True
        record = msg.senderRecord
        key = str(peer_id)
        now = self.clock()
        with self._lock:
            seen = self._hosts.setdefault(host, OrderedDict())
            known = seen.get(key)
            if known is not None and known[0] == record and now - known[1] < REFRESH_SECONDS:
                seen.move_to_end(key)
                return True
        ok = _verify(msg, host, peer_id)
        with self._lock:
            seen = self._hosts.setdefault(host, OrderedDict())
            if ok:
                seen[key] = (bytes(record), now)
                seen.move_to_end(key)
                while len(seen) > MAX_PEERS:
                    seen.popitem(last=False)
            else:
                seen.pop(key, None)
        return ok


class OwnRecordMemo:
    """Our own record's envelope per host, asked of the library again after
    ``OWN_REFRESH_SECONDS`` (a changed address list then issues a new one)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._hosts: weakref.WeakKeyDictionary[Any, tuple[bytes, float]] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    def envelope(self, host: IHost) -> tuple[bytes, bool]:
        """``env_to_send_in_RPC``: (envelope bytes, whether it was just issued)."""
        now = self.clock()
        with self._lock:
            known = self._hosts.get(host)
        if known is not None and now - known[1] < OWN_REFRESH_SECONDS:
            return known[0], False
        env, fresh = _own(host)
        with self._lock:
            self._hosts[host] = (env, now)
        return env, fresh


MEMO = RecordMemo()
OWN = OwnRecordMemo()


def install() -> None:
    """Route the library's record checks through :data:`MEMO` and its record
    building through :data:`OWN` (idempotent)."""
    _pubsub.maybe_consume_signed_record = MEMO.consume  # type: ignore[attr-defined]
    _gossipsub.maybe_consume_signed_record = MEMO.consume  # type: ignore[attr-defined]
    _pubsub.env_to_send_in_RPC = OWN.envelope  # type: ignore[attr-defined]
    _gossipsub.env_to_send_in_RPC = OWN.envelope  # type: ignore[attr-defined]
