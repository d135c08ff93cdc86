"""Per-peer budget for low-work traffic: headers and blocks of lighter branches.

An honest miner on a losing branch sends a few such blocks, and a peer whose
claimed chain went stale mid-sync a few headers; a peer that keeps sending
them is spending our CPU on branches that can never become ours. Each peer
gets a token bucket (``BURST`` items, refilled at ``REFILL_PER_SECOND``);
every item past it is one penalty point ("low-work-spam"), so a peer that
overdraws by ``protocol.BAN_THRESHOLD`` items is banned.

Memory: one (tokens, time) pair per connected peer, forgotten on disconnect.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

BURST = 200
REFILL_PER_SECOND = 0.1  # one item every 10 s


class LowWorkBudget:
    def __init__(
        self,
        burst: int = BURST,
        refill_per_second: float = REFILL_PER_SECOND,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst = burst
        self.refill = refill_per_second
        self.clock = clock
        self._peers: dict[str, tuple[float, float]] = {}  # peer -> (tokens, at)

    def charge(self, peer_id: str, items: int) -> int:
        """Spend ``items``; returns how many went past the budget (0 if none)."""
        now = self.clock()
        tokens, at = self._peers.get(peer_id, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.refill) - items
        self._peers[peer_id] = (max(tokens, 0.0), now)
        return math.ceil(-tokens) if tokens < 0 else 0

    def forget(self, peer_id: str) -> None:
        self._peers.pop(peer_id, None)
