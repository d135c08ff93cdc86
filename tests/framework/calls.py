"""The CLI commands and API routes a user can call (for the call report)."""

from __future__ import annotations

from types import SimpleNamespace

from p2pml import calllog


def expected_calls() -> set[str]:
    """Every CLI command (the argparse tree) and API route (the aiohttp router)."""
    from p2pml.api.server import make_app
    from p2pml.cli import build_parser

    calls = {f"cli {c}" for c in calllog.all_commands(build_parser())}
    # make_app reads only these two attributes until a request comes in.
    stub = SimpleNamespace(settings=SimpleNamespace(admin=SimpleNamespace(max_body_bytes=1)))
    stub.admin_token = ""
    app = make_app(stub)  # type: ignore[arg-type]
    for route in app.router.routes():
        if route.method != "HEAD" and route.resource is not None:  # HEAD comes with each GET
            calls.add(f"route {route.method} {route.resource.canonical}")
    return calls
