"""Gossiped transactions that came before the chain they need, held until it connects.

A peer can send a transaction that is valid only on a tip we do not have
yet: an attestation before its beacon block, an update for a round whose
opening (the close of the round before, or the task's block) has not
reached us. Refused and dropped, it would never be sent again (gossip
delivers a message once), and our pool, and what we relay, would lack it.
:class:`ChainWaits` keeps such transactions until the tip reaches a given
height, then hands them back to be tried again; the service that owns one
says what waits for what (:mod:`p2pml.node.attest_orphans`,
:mod:`p2pml.node.federated`).

Bounded (issue 14's rule): at most ``per_peer`` entries from one peer,
``per_signer`` signed by one key (the subclass's :meth:`signer`), and
``total`` in all; a full peer or signer loses its oldest entry, a full
buffer the oldest entry of the signer holding most. Quotas by key, not only
by peer: what waits cannot be fully checked yet (an attestation of a result
not known here), so one bonded key could sign any number of entries and,
spread over fresh peer ids, push everyone else's out. One entry per key (the
subclass's :meth:`key`): later variants are ignored. Entries expire at a height.
What enters has had its signature checked and comes from a key that could
be paid for it (the caller's job), so filling a buffer needs bonded keys,
not just bytes. Taking the ready entries is O(buffer), once per tip.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

PER_PEER_MAX = 64
#: An honest key has few transactions early at one time (an attestation per
#: result it audits, an update per round it trains).
PER_SIGNER_MAX = 8
TOTAL_MAX = 1_024


@dataclass(frozen=True)
class Waiting(Generic[T]):
    tx: T
    peer: str
    ready_at: int  # the tip must be at least here to try it again
    expires_at: int  # the last height a block including it may have


class ChainWaits(Generic[T]):
    def __init__(
        self,
        per_peer: int = PER_PEER_MAX,
        total: int = TOTAL_MAX,
        per_signer: int = PER_SIGNER_MAX,
    ) -> None:
        self.per_peer = per_peer
        self.per_signer = per_signer
        self.total = total
        self._entries: OrderedDict[Hashable, Waiting[T]] = OrderedDict()
        self._by_peer: dict[str, OrderedDict[Hashable, None]] = {}
        self._by_signer: dict[bytes, OrderedDict[Hashable, None]] = {}

    def key(self, tx: T) -> Hashable:
        """What makes two transactions one entry (the first one is kept)."""
        raise NotImplementedError

    def signer(self, tx: T) -> bytes:
        """The key that signed ``tx`` (its quota)."""
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self._entries)

    def peer_count(self, peer: str) -> int:
        return len(self._by_peer.get(peer, ()))

    def add(self, tx: T, peer: str, ready_at: int, expires_at: int) -> bool:
        """Hold ``tx`` (signature already checked) until the tip reaches
        ``ready_at``; False if an entry of its key is held already."""
        key = self.key(tx)
        if key in self._entries or expires_at < ready_at:
            return False
        signer = self.signer(tx)
        mine = self._by_peer.get(peer)
        signed = self._by_signer.get(signer)
        if mine is not None and len(mine) >= self.per_peer:
            self._remove(next(iter(mine)))
        elif signed is not None and len(signed) >= self.per_signer:
            self._remove(next(iter(signed)))
        elif len(self._entries) >= self.total:
            fullest = max(self._by_signer.values(), key=len)
            self._remove(next(iter(fullest)))
        self._entries[key] = Waiting(tx, peer, ready_at, expires_at)
        self._by_peer.setdefault(peer, OrderedDict())[key] = None
        self._by_signer.setdefault(signer, OrderedDict())[key] = None
        return True

    def take_ready(self, tip_height: int) -> list[Waiting[T]]:
        """Remove and return what the tip at ``tip_height`` may pool now
        (oldest first); drop what can no longer be included."""
        ready: list[Waiting[T]] = []
        for key, w in list(self._entries.items()):
            if w.expires_at <= tip_height:
                self._remove(key)
            elif w.ready_at <= tip_height:
                ready.append(w)
                self._remove(key)
        return ready

    def _remove(self, key: Hashable) -> None:
        w = self._entries.pop(key)
        by_peer = self._by_peer[w.peer]
        del by_peer[key]
        if not by_peer:
            del self._by_peer[w.peer]
        signer = self.signer(w.tx)
        by_key = self._by_signer[signer]
        del by_key[key]
        if not by_key:
            del self._by_signer[signer]
