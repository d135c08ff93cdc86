"""Issue 14, attack 10: DNS rebinding against the admin API of a real node process.

A page on ``evil.example`` rebound to 127.0.0.1 reaches the API with
``Host: evil.example``; the node used to answer it (200 on /status).
"""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit

import pytest

from tests.framework.testnode import NodeSet, TestNode


def request(
    node: TestNode, host: str | None, method: str = "GET", path: str = "/status"
) -> tuple[int, dict[str, object]]:
    url = urlsplit(node.api.base)
    assert url.hostname == "127.0.0.1" and url.port
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        conn.putrequest(method, path, skip_host=True)
        if host is not None:
            conn.putheader("Host", host)
        if method == "POST":
            conn.putheader("Authorization", f"Bearer {node.api.token}")
            conn.putheader("Content-Type", "application/json")
            conn.putheader("Content-Length", "2")
            conn.endheaders(b"{}")
        else:
            conn.endheaders()
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


@pytest.fixture
def node(nodes: NodeSet) -> TestNode:
    n = nodes.add(admin={"allowed_hosts": ["Proxy.Internal"]})
    n.start()
    return n


def test_foreign_host_gets_421_bad_host(node: TestNode) -> None:
    for host in (
        "evil.example",
        f"evil.example:{urlsplit(node.api.base).port}",
        "127.0.0.1.evil.example",
        "localhost.:1",
        "[::1",
    ):
        status, body = request(node, host)
        assert status == 421, (host, status, body)
        assert body["reason"] == "bad-host" and isinstance(body["error"], str), body
    # Writes are refused before the token is even looked at.
    status, body = request(node, "evil.example", "POST", "/mine?n=1")
    assert status == 421 and body["reason"] == "bad-host"
    assert node.height == 0


def test_own_names_are_served(node: TestNode) -> None:
    port = urlsplit(node.api.base).port
    for host in (
        f"127.0.0.1:{port}",
        f"localhost:{port}",
        f"[::1]:{port}",
        "LOCALHOST",
        "proxy.internal:443",
    ):
        status, body = request(node, host)
        assert status == 200, (host, status, body)
        assert "height" in body
