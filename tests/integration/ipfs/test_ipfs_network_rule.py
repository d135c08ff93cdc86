"""The network rule on the real processes: every config written is loopback-only,
and every socket the daemons hold is on loopback."""

from __future__ import annotations

from pathlib import Path

import psutil

from p2pml.config import IpfsSettings
from p2pml.ipfs.netconfig import all_loopback
from tests.framework.ipfs_daemon import JsIpfsDaemon, loopback_violations

LOOPBACK = ("127.0.0.1", "::1")


def _sockets_of_tree(pid: int) -> list[psutil._common.pconn]:
    root = psutil.Process(pid)
    conns = []
    for proc in [root, *root.children(recursive=True)]:
        conns.extend(proc.net_connections(kind="inet"))
    return conns


def test_jsipfs_fixture_config_is_loopback_only(shared_jsipfs: JsIpfsDaemon) -> None:
    cfg = shared_jsipfs.config()
    assert loopback_violations(cfg) == []
    assert cfg["Addresses"]["API"] == shared_jsipfs.api_multiaddr


def test_jsipfs_sockets_are_loopback_only(shared_jsipfs: JsIpfsDaemon) -> None:
    assert shared_jsipfs.proc is not None
    conns = _sockets_of_tree(shared_jsipfs.proc.pid)
    assert any(c.status == psutil.CONN_LISTEN for c in conns)
    for conn in conns:
        assert conn.laddr.ip in LOOPBACK, conn
        if conn.raddr:
            assert conn.raddr.ip in LOOPBACK, conn


def test_default_ipfs_settings_are_loopback(tmp_path: Path) -> None:
    s = IpfsSettings()
    assert s.peers == ()
    assert all_loopback((s.api, *s.swarm))
