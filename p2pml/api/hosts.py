"""Admin API ``Host`` check: a defence against DNS rebinding.

A web page on ``evil.example`` can make the browser resolve that name to
127.0.0.1 and then talk to the admin API as a same-origin site: reads need no
token. The browser still sends ``Host: evil.example``, so requests are only
served when the Host names the node itself:

* ``127.0.0.1``, ``localhost`` or ``[::1]``;
* the IP address the request arrived on (a node listening on a LAN address
  is reached by that address; an IP literal cannot be rebound);
* a name listed in ``[admin] allowed_hosts`` (a reverse proxy's or a
  container's name).

The port is not compared: behind a published container port the client's
port differs from the one the node listens on, and a rebinding page cannot
choose the name, only the port. Anything else gets 421 with the API's usual
error body and reason ``bad-host``; so does a request without a Host header.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def host_name(host: str) -> str | None:
    """The name part of a Host header value (lower case, IPv6 unbracketed), or
    None if it is malformed."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        if end < 0 or (host[end + 1 :] and not _is_port(host[end + 1 :])):
            return None
        return host[1:end]
    name, sep, port = host.rpartition(":")
    if not sep:
        return host or None
    if not _is_port(":" + port) or not name:
        return None
    return name


def _is_port(text: str) -> bool:
    return text.startswith(":") and text[1:].isascii() and text[1:].isdigit()


def _same_ip(name: str, local: str | None) -> bool:
    if local is None:
        return False
    try:
        return ipaddress.ip_address(name) == ipaddress.ip_address(local)
    except ValueError:
        return False


def host_middleware(
    allowed_hosts: Iterable[str] = (),
) -> Callable[..., Awaitable[web.StreamResponse]]:
    """aiohttp middleware refusing requests whose Host does not name this node."""
    allowed = LOOPBACK_NAMES | {n for h in allowed_hosts if (n := host_name(h)) is not None}

    @web.middleware
    async def check_host(request: web.Request, handler: Handler) -> web.StreamResponse:
        raw = request.headers.get("Host")
        name = host_name(raw) if raw is not None else None
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        local = sockname[0] if isinstance(sockname, tuple) and sockname else None
        if name is None or not (name in allowed or _same_ip(name, local)):
            return web.json_response(
                {"error": f"Host {raw!r} is not this node's admin API", "reason": "bad-host"},
                status=421,
            )
        return await handler(request)

    return check_host
