"""Peer bans in the admin API: list them with their expiry, lift one.

``GET /peers/bans`` lists active bans (peer, reason, until, seconds left);
``DELETE /peers/{peer_id}/ban`` lifts a ban at once, manual or earned by
misbehaviour (404 ``not-banned`` if there is none). The peer may then dial
in or be dialled again; its penalty score starts from zero on reconnect.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from aiohttp import web

from p2pml.net.bans import Ban


class BanControl(Protocol):
    def banned(self) -> list[Ban]: ...

    def unban(self, peer_id: str) -> Ban | None: ...


def is_peer_id(text: str) -> bool:
    from libp2p.peer.id import ID

    try:
        return 32 <= len(text) < 128 and bool(ID.from_base58(text).to_bytes())
    except Exception:  # base58 and multihash raise several types
        return False


def ban_json(ban: Ban, now: float) -> dict[str, Any]:
    return {
        "peer_id": ban.peer_id,
        "reason": ban.reason,
        "until": round(ban.until, 3),
        "expires_in": max(0, round(ban.until - now)),
    }


class BanRoutes:
    def __init__(self, p2p: BanControl) -> None:
        self.p2p = p2p

    def add_to(self, router: web.UrlDispatcher) -> None:
        router.add_get("/peers/bans", self.list_bans)
        router.add_delete("/peers/{peer_id}/ban", self.unban)

    async def list_bans(self, _req: web.Request) -> web.Response:
        now = time.time()
        bans = sorted(self.p2p.banned(), key=lambda b: b.until)
        return web.json_response([ban_json(b, now) for b in bans])

    async def unban(self, req: web.Request) -> web.Response:
        peer_id = req.match_info["peer_id"]
        if not is_peer_id(peer_id):
            return _error(400, f"{peer_id[:80]!r} is not a libp2p peer id", "bad-peer-id")
        ban = self.p2p.unban(peer_id)
        if ban is None:
            return _error(404, "that peer is not banned", "not-banned")
        return web.json_response({"peer_id": peer_id, "unbanned": True, "reason": ban.reason})


def _error(status: int, error: str, reason: str) -> web.Response:
    return web.json_response({"error": error, "reason": reason}, status=status)
