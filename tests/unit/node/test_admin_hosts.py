"""Host header parsing of the admin API's DNS-rebinding check (p2pml.api.hosts)."""

from __future__ import annotations

import pytest

from p2pml.api.hosts import host_name


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("127.0.0.1:8080", "127.0.0.1"),
        ("LocalHost:1", "localhost"),
        ("localhost", "localhost"),
        ("[::1]:8080", "::1"),
        ("[::1]", "::1"),
        ("evil.example", "evil.example"),
        ("[::1", None),
        ("[::1]x", None),
        ("host:port", None),
        (":80", None),
        ("", None),
    ],
)
def test_host_name(header: str, name: str | None) -> None:
    assert host_name(header) == name
