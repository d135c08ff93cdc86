"""Attestations that came before their beacon block, held until it connects.

A committee member attests as soon as its audit ends; its attestation can
reach a peer before the beacon block does (``attest-too-early`` there), or
even before the result's block (``attest-unknown-result``: the peer lags,
or that block waits for its data). Refused and dropped, it would never be
sent again, and that pool (and what it relays) would lack it.
:class:`AttestOrphans` keeps such attestations until the tip reaches a
given height (the beacon's, or the next block for an unknown result), then
hands them back to be tried again (:class:`p2pml.node.audits.AuditService`).

Bounded (issue 14's rule): at most ``per_peer`` entries from one peer,
``per_attester`` signed by one key, and ``total`` in all; a full peer or
attester loses its oldest entry, a full buffer the oldest entry of the
attester holding most. Quotas by key, not only by peer: an attestation for a
result not known yet cannot be checked against its committee, so one bonded
key could sign any number of them and, spread over fresh peer ids, push
everyone else's out. One entry per (attester, result):
the attester's later variants are ignored. Entries expire at a height
(the end of the attest window, or a bound for an unknown result). What
enters has had its signature checked and comes from a key that can sit on
a committee at the beacon (the caller's job), so filling the buffer needs
bonded keys, not just bytes.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from p2pml.chain.types import AttestTx

PER_PEER_MAX = 64
#: A committee member attests each result it audits once: a few results per
#: key can be early at one time.
PER_ATTESTER_MAX = 8
TOTAL_MAX = 1_024


@dataclass(frozen=True)
class Orphan:
    tx: AttestTx
    peer: str
    ready_at: int  # the beacon's height: the tip must be at least here
    expires_at: int  # the last height a block including it may have


class AttestOrphans:
    def __init__(
        self,
        per_peer: int = PER_PEER_MAX,
        total: int = TOTAL_MAX,
        per_attester: int = PER_ATTESTER_MAX,
    ) -> None:
        self.per_peer = per_peer
        self.per_attester = per_attester
        self.total = total
        self._entries: OrderedDict[tuple[bytes, bytes], Orphan] = OrderedDict()
        self._by_peer: dict[str, OrderedDict[tuple[bytes, bytes], None]] = {}
        self._by_attester: dict[bytes, OrderedDict[tuple[bytes, bytes], None]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def peer_count(self, peer: str) -> int:
        return len(self._by_peer.get(peer, ()))

    def add(self, tx: AttestTx, peer: str, ready_at: int, expires_at: int) -> bool:
        """Hold ``tx`` (signature already checked) until the tip reaches
        ``ready_at``; False if an attestation of the pair is held already."""
        key = (tx.attester, tx.result_id)
        if key in self._entries or expires_at < ready_at:
            return False
        mine = self._by_peer.get(peer)
        signed = self._by_attester.get(tx.attester)
        if mine is not None and len(mine) >= self.per_peer:
            self._remove(next(iter(mine)))
        elif signed is not None and len(signed) >= self.per_attester:
            self._remove(next(iter(signed)))
        elif len(self._entries) >= self.total:
            fullest = max(self._by_attester.values(), key=len)
            self._remove(next(iter(fullest)))
        self._entries[key] = Orphan(tx, peer, ready_at, expires_at)
        self._by_peer.setdefault(peer, OrderedDict())[key] = None
        self._by_attester.setdefault(tx.attester, OrderedDict())[key] = None
        return True

    def take_ready(self, tip_height: int) -> list[Orphan]:
        """Remove and return what the tip at ``tip_height`` may pool now
        (oldest first); drop what can no longer be included. O(buffer)."""
        ready: list[Orphan] = []
        for key, o in list(self._entries.items()):
            if o.expires_at <= tip_height:
                self._remove(key)
            elif o.ready_at <= tip_height:
                ready.append(o)
                self._remove(key)
        return ready

    def _remove(self, key: tuple[bytes, bytes]) -> None:
        o = self._entries.pop(key)
        by_peer = self._by_peer[o.peer]
        del by_peer[key]
        if not by_peer:
            del self._by_peer[o.peer]
        by_key = self._by_attester[o.tx.attester]
        del by_key[key]
        if not by_key:
            del self._by_attester[o.tx.attester]
