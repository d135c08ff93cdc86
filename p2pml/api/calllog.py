"""aiohttp middleware for the test-suite call log (see p2pml.calllog):
records ``route METHOD /path/{var}`` for every request that matched a route.
Installed only when P2PML_TEST_CALL_LOG is set."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from p2pml import calllog


@web.middleware
async def call_log_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    resource = request.match_info.route.resource
    if resource is not None:
        calllog.record(f"route {request.method} {resource.canonical}")
    return await handler(request)


def call_log_middlewares() -> list[Middleware]:
    return [call_log_middleware] if calllog.enabled() else []
