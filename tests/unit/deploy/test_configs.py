"""The shipped configs: they load, the example is complete, the devnet stays on loopback.

The network rule: nothing the tests, the devnet or CI start may send a packet
beyond 127.0.0.0/8 or ::1. The devnet configs are checked here address by
address (docker configs are checked against the compose file in test_docker).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import tomllib
import typing
from pathlib import Path
from typing import Any

import pytest

from p2pml.chain.params import dev_identity
from p2pml.config import Settings, load_settings
from p2pml.ipfs.netconfig import embedded_kubo_config
from p2pml.net.host import peer_id_of

ROOT = Path(__file__).resolve().parents[3]
CONFIGS = ROOT / "configs"
EXAMPLE = CONFIGS / "example.toml"
DEVNET = sorted((CONFIGS / "devnet").glob("*.toml"))
ALL_CONFIGS = sorted(CONFIGS.rglob("*.toml"))
# Configs that something on this machine may start: they must obey the network rule.
LOCAL_CONFIGS = [EXAMPLE, *DEVNET]


def section_fields() -> dict[str, set[str]]:
    """Every [section] and its keys, from the dataclasses (so new fields count)."""
    hints = typing.get_type_hints(Settings)
    return {
        f.name: {g.name for g in dataclasses.fields(hints[f.name])}
        for f in dataclasses.fields(Settings)
    }


def is_loopback_multiaddr(maddr: str) -> bool:
    # Only IP literals can be proven loopback: a DNS name may resolve anywhere.
    m = re.fullmatch(r"/(ip4|ip6)/([^/]+)(/.*)?", maddr)
    if m is None:
        return False
    try:
        return ipaddress.ip_address(m.group(2)).is_loopback
    except ValueError:
        return False


def is_loopback_hostport(hostport: str) -> bool:
    host, _, _port = hostport.rpartition(":")
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def raw(path: Path) -> dict[str, Any]:
    with open(path, "rb") as fh:
        return tomllib.load(fh)


def test_there_are_configs_to_check() -> None:
    names = {p.relative_to(CONFIGS).as_posix() for p in ALL_CONFIGS}
    assert {"example.toml", "devnet/node1.toml", "devnet/node2.toml", "devnet/node3.toml"} <= names
    assert len(DEVNET) == 3


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=lambda p: p.relative_to(CONFIGS).as_posix())
def test_every_config_loads(path: Path) -> None:
    s = load_settings(path, env={})
    assert isinstance(s, Settings)


# -- example.toml --------------------------------------------------------------


def test_example_names_every_field_of_every_section() -> None:
    data = raw(EXAMPLE)
    expected = section_fields()
    assert set(data) == set(expected)
    for section, keys in expected.items():
        assert set(data[section]) == keys, f"[{section}]"


def test_example_comments_every_key_with_its_default() -> None:
    # Each key line must follow a comment block that says "Default".
    comment: list[str] = []
    checked = 0
    for line in EXAMPLE.read_text().splitlines():
        text = line.strip()
        if text.startswith("#"):
            comment.append(text)
        elif re.match(r"^[a-z_]+\s*=", text):
            key = text.split("=")[0].strip()
            assert any("Default" in c for c in comment), f"{key}: no comment naming its default"
            comment = []
            checked += 1
        else:
            comment = []
    assert checked == sum(len(keys) for keys in section_fields().values())


def normalise(value: Any, base: Path) -> Any:
    return (base / value).resolve() if isinstance(value, Path) else value


def test_example_values_are_the_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Relative paths in the file are relative to it; defaults are relative to
    # the working directory. Put both in the same place and compare everything.
    copy = tmp_path / "example.toml"
    copy.write_text(EXAMPLE.read_text())
    monkeypatch.chdir(tmp_path)
    example = load_settings(copy, env={})
    defaults = load_settings(None, env={})
    for f in dataclasses.fields(Settings):
        ours, theirs = getattr(example, f.name), getattr(defaults, f.name)
        for g in dataclasses.fields(ours):
            a = normalise(getattr(ours, g.name), tmp_path)
            b = normalise(getattr(theirs, g.name), tmp_path)
            assert a == b, f"[{f.name}] {g.name}: example {a!r}, default {b!r}"


# -- the network rule ---------------------------------------------------------


@pytest.mark.parametrize(
    "addr, ok",
    [
        ("/ip4/127.0.0.1/tcp/4101", True),
        ("/ip4/127.9.9.9/tcp/1/p2p/12D3KooWGKYECNxwAqF9n8peMhzA3Dwwi9WMewXCPiigMNoXNfN6", True),
        ("/ip6/::1/tcp/4001", True),
        ("/ip4/0.0.0.0/tcp/4001", False),
        ("/ip4/10.0.0.1/tcp/4001", False),
        ("/ip4/104.131.131.82/tcp/4001", False),
        ("/dns4/localhost/tcp/4001", False),
        ("/ip6/::/tcp/4001", False),
    ],
)
def test_loopback_check_itself(addr: str, ok: bool) -> None:
    assert is_loopback_multiaddr(addr) is ok


@pytest.mark.parametrize("path", LOCAL_CONFIGS, ids=lambda p: p.relative_to(CONFIGS).as_posix())
def test_local_configs_stay_on_loopback(path: Path) -> None:
    s = load_settings(path, env={})
    addrs = {
        "p2p.listen": s.p2p.listen,
        "p2p.bootstrap": s.p2p.bootstrap,
        "ipfs.api": (s.ipfs.api,),
        "ipfs.swarm": s.ipfs.swarm,
        "ipfs.peers": s.ipfs.peers,
    }
    assert s.p2p.listen and s.ipfs.swarm
    for key, values in addrs.items():
        for a in values:
            assert is_loopback_multiaddr(a), f"{path.name}: {key} {a} is not loopback"
    assert is_loopback_hostport(s.admin.listen), f"{path.name}: admin.listen {s.admin.listen}"


@pytest.mark.parametrize("path", LOCAL_CONFIGS, ids=lambda p: p.relative_to(CONFIGS).as_posix())
def test_local_configs_have_no_public_ipfs_bootstrap(path: Path) -> None:
    # Embedded Kubo: the repo config is rewritten from these settings before
    # the node first starts; Kubo's stock public bootstrap list must not survive.
    s = load_settings(path, env={})
    assert s.ipfs.mode == "embedded"
    stock = {
        "Bootstrap": [
            "/dnsaddr/bootstrap.libp2p.io/p2p/QmNnooDu7bfjPFoTZYxMNLWUQJyrVwtbZg5gBMjTezGAJN"
        ],
        "Discovery": {"MDNS": {"Enabled": True}},
        "Routing": {"Type": "auto"},
    }
    cfg = embedded_kubo_config(stock, s.ipfs.swarm)
    assert cfg["Bootstrap"] == []
    assert cfg["Discovery"]["MDNS"]["Enabled"] is False
    assert cfg["Routing"]["Type"] == "none"
    assert all(is_loopback_multiaddr(a) for a in cfg["Addresses"]["Swarm"])
    assert all(is_loopback_multiaddr(a) for a in s.ipfs.peers)


# -- the devnet topology ------------------------------------------------------------


def devnet() -> dict[int, Settings]:
    return {int(p.stem.removeprefix("node")): load_settings(p, env={}) for p in DEVNET}


def test_devnet_fixed_ports_keys_and_dirs() -> None:
    for n, s in devnet().items():
        assert s.node.network == "devnet"
        assert s.node.dev_key == n - 1
        assert s.p2p.listen == (f"/ip4/127.0.0.1/tcp/{4100 + n}",)
        assert s.admin.listen == f"127.0.0.1:{8080 + n}"
        assert s.ipfs.swarm == (f"/ip4/127.0.0.1/tcp/{4200 + n}",)
        assert s.ipfs.dev_identity == n - 1  # well-known Kubo ids: peers known in advance
        assert s.node.data_dir.resolve() == ROOT / "devnet-data" / f"node{n}"
        assert s.mining.enabled and s.training.enabled


def test_devnet_bootstraps_to_the_other_nodes_by_their_dev_key_peer_ids() -> None:
    nodes = devnet()
    by_listen = {s.p2p.listen[0]: (n, s) for n, s in nodes.items()}
    for n, s in nodes.items():
        targets = set()
        for entry in s.p2p.bootstrap:
            addr, _, peer = entry.partition("/p2p/")
            assert addr in by_listen, f"node{n}: {entry} is no devnet node's listen address"
            m, other = by_listen[addr]
            assert m != n, f"node{n} bootstraps to itself"
            assert peer == peer_id_of(dev_identity(other.node.dev_key).seed), entry
            targets.add(m)
        assert targets == set(nodes) - {n}


def test_devnet_ipfs_peers_are_the_other_nodes_by_their_dev_ipfs_ids() -> None:
    from p2pml.ipfs.devidentity import dev_ipfs_identity

    nodes = devnet()
    by_swarm = {s.ipfs.swarm[0]: (n, s) for n, s in nodes.items()}
    for n, s in nodes.items():
        targets = set()
        for entry in s.ipfs.peers:
            addr, _, peer = entry.partition("/p2p/")
            assert addr in by_swarm, f"node{n}: {entry} is no devnet node's IPFS swarm address"
            m, other = by_swarm[addr]
            assert m != n
            assert peer == dev_ipfs_identity(other.ipfs.dev_identity)["PeerID"], entry
            targets.add(m)
        assert targets == set(nodes) - {n}


def test_devnet_nodes_do_not_share_ports_or_dirs() -> None:
    nodes = devnet().values()
    attrs: list[typing.Callable[[Settings], object]] = [
        lambda s: s.p2p.listen[0],
        lambda s: s.admin.listen,
        lambda s: s.ipfs.swarm[0],
        lambda s: s.node.data_dir.resolve(),
        lambda s: s.node.dev_key,
    ]
    for attr in attrs:
        values = [attr(s) for s in nodes]
        assert len(set(values)) == len(values)
