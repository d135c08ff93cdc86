"""Per-peer token buckets: what a peer may make this node spend.

A bucket refills at ``rate`` units per second up to ``burst``. Spending is
allowed while the balance is positive and may take it below zero (a check
whose cost is known only afterwards is charged in full), so a peer that
overspent waits until the refill pays its debt. The map of peers is bounded:
the peers charged least recently are forgotten first (a forgotten peer
starts again with a full bucket, so the map is sized well above the peers
a node is connected to at once).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

MAX_PEERS = 4_096


class PeerBudget:
    def __init__(
        self,
        rate: float,
        burst: float,
        clock: Callable[[], float] = time.monotonic,
        max_peers: int = MAX_PEERS,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._max_peers = max_peers
        self._buckets: OrderedDict[str, tuple[float, float]] = (
            OrderedDict()
        )  # peer -> (balance, at)

    def balance(self, peer: str) -> float:
        now = self._clock()
        bal, at = self._buckets.get(peer, (self.burst, now))
        return min(self.burst, bal + (now - at) * self.rate)

    def allows(self, peer: str) -> bool:
        """True while the peer's balance is positive."""
        return self.balance(peer) > 0

    def charge(self, peer: str, cost: float) -> bool:
        """Take ``cost``; True if the peer could afford it (balance stayed >= 0)."""
        bal = self.balance(peer) - cost
        self._buckets[peer] = (bal, self._clock())
        self._buckets.move_to_end(peer)
        while len(self._buckets) > self._max_peers:
            self._buckets.popitem(last=False)
        return bal >= 0

    def forget(self, peer: str) -> None:
        self._buckets.pop(peer, None)
