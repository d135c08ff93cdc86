"""The CLI commands and API routes a user can call (for the call report)."""

from __future__ import annotations

from unittest.mock import MagicMock

from p2pml import calllog


def expected_calls() -> set[str]:
    """Every CLI command (the argparse tree) and API route (the aiohttp router)."""
    from p2pml.api.server import make_app
    from p2pml.cli import build_parser

    calls = {f"cli {c}" for c in calllog.all_commands(build_parser())}
    # Routes are registered without calling into the node (or admin context):
    # a mock stands in for it, with the few settings read at construction.
    stub = MagicMock()
    stub.settings.admin.max_body_bytes = 1
    stub.settings.admin.allowed_hosts = ("127.0.0.1",)
    app = make_app(stub)
    for route in app.router.routes():
        if route.method != "HEAD" and route.resource is not None:  # HEAD comes with each GET
            calls.add(f"route {route.method} {route.resource.canonical}")
    return calls
