"""The daemon's admin API and CLI against a real node process (regtest)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from p2pml.api.client import ApiClient
from p2pml.errors import ApiError
from tests.framework.testnode import ROOT, NodeSet, TestNode
from tests.framework.waiting import scaled


def cli(node: TestNode, *args: str) -> subprocess.CompletedProcess[str]:
    token = node.data_dir / "admin.token"
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "p2pml.cli",
            "--api",
            node.api.base,
            "--token-file",
            str(token),
            *args,
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )


def raw(
    node: TestNode, method: str, path: str, data: bytes | None, headers: dict[str, str]
) -> tuple[int, dict]:  # type: ignore[type-arg]
    req = urllib.request.Request(node.api.base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def node(nodes: NodeSet) -> TestNode:
    n = nodes.add()
    n.start()
    return n


def test_status_mine_chain_and_blocks(node: TestNode) -> None:
    st = node.status()
    assert st["network"] == "regtest" and st["height"] == 0
    hashes = node.mine(3)
    assert node.height == 3
    chain = node.api.get("/chain?limit=2")
    assert [h["hash"] for h in chain] == [hashes[2], hashes[1]]
    assert node.api.get("/chain?start=1&limit=5")[0]["hash"] == hashes[0]
    by_height = node.api.get("/blocks/2")
    by_hash = node.api.get(f"/blocks/{hashes[1]}")
    assert by_height == by_hash
    assert by_hash["txs"][0]["type"] == "coinbase"
    assert by_hash["txs"][0]["miner"] == st["public_key"]
    bal = node.api.get(f"/balances/{st['public_key']}")
    assert bal["balance"] == 3 * 50_000_000
    tips = node.api.get("/chain/tips")
    assert tips[0]["hash"] == hashes[2] and tips[0]["status"] == "active"
    metrics = node.api.get("/metrics")
    assert "p2pml_height 3" in metrics
    assert "p2pml_blocks_accepted_total 3" in metrics
    for family in ("p2pml_peers ", "p2pml_ipfs_fetches_total", "p2pml_training_jobs_total"):
        assert family in metrics, family


def test_errors_are_json_with_reasons(node: TestNode) -> None:
    base = node.api.base
    anon = ApiClient(base)
    with pytest.raises(ApiError) as e:
        anon.post("/mine", {"blocks": 1})
    assert e.value.status == 401 and e.value.reason == "unauthorized"
    wrong = ApiClient(base, token="0" * 64)
    with pytest.raises(ApiError) as e:
        wrong.post("/mine", {"blocks": 1})
    assert e.value.status == 401

    auth = {"Authorization": f"Bearer {node.api.token}"}
    status, body = raw(node, "POST", "/mine", b"{not json", auth)
    assert (status, body["reason"]) == (400, "bad-json")
    status, body = raw(node, "POST", "/mine", b"[1]", auth)
    assert (status, body["reason"]) == (400, "bad-json")
    status, body = raw(node, "POST", "/mine", json.dumps({"blocks": 0}).encode(), auth)
    assert (status, body["reason"]) == (400, "bad-request")
    status, body = raw(node, "POST", "/mine", b"x" * (2 * 1024 * 1024), auth)
    assert (status, body["reason"]) == (413, "body-too-large")
    for path in ("/blocks/" + "00" * 32, "/blocks/99999", "/blocks/nothex", "/nope"):
        status, body = raw(node, "GET", path, None, {})
        assert status == 404, path
    status, body = raw(node, "GET", "/chain?limit=abc", None, {})
    assert (status, body["reason"]) == (400, "bad-request")
    status, body = raw(node, "GET", "/balances/zz", None, {})
    assert (status, body["reason"]) == (400, "bad-request")


def test_cli_commands(node: TestNode) -> None:
    r = cli(node, "mine", "2")
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.split()) == 2
    r = cli(node, "status", "--json")
    assert json.loads(r.stdout)["height"] == 2
    r = cli(node, "chain")
    assert r.returncode == 0 and "HEIGHT" in r.stdout and "active" in r.stdout
    r = cli(node, "block", "1")
    assert json.loads(r.stdout)["header"]["height"] == 1
    r = cli(node, "block", "77")
    assert r.returncode == 1 and r.stderr.strip() == "p2pml: no such block (not-found)"
    r = subprocess.run(
        [sys.executable, "-m", "p2pml.cli", "--api", "http://127.0.0.1:1", "status"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1
    assert "cannot reach the node" in r.stderr


def test_mine_is_regtest_only(nodes: NodeSet) -> None:
    n = nodes.add(network="devnet")
    n.start()
    with pytest.raises(ApiError) as e:
        n.api.post("/mine", {"blocks": 1})
    assert e.value.status == 403


def test_sigterm_is_quick_and_restart_resumes(node: TestNode) -> None:
    node.mine(5)
    tip = node.tip
    took = node.stop()
    assert took < scaled(5)  # the README promises an ordered stop "within seconds"
    node.start()
    assert node.tip == tip and node.height == 5


def test_files_are_private(node: TestNode) -> None:
    for name in ("node.key", "admin.token"):
        assert (node.data_dir / name).stat().st_mode & 0o777 == 0o600


def run_node(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "p2pml.cli", "node", "--config", str(config)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )


@pytest.mark.parametrize(
    ("body", "expect"),
    [
        ("[node]\nnetwork = 'regtest'\nbogus = 1\n", "[node] unknown key 'bogus'"),
        ("[nodes]\n", "unknown section [nodes]"),
        ("[mining]\nworkers = 'two'\n", "[mining] workers: expected an integer, got 'two'"),
        ("[p2p]\nlisten = ['/ip4/300.0.0.1/tcp/1']\n", "[p2p] listen: '/ip4/300.0.0.1/tcp/1'"),
        ("[node]\nnetwork = 'moon'\n", "[node] network: unknown network 'moon'"),
        ("[node\n", "invalid TOML"),
        ("[admin]\nlisten = 'nohost'\n", "[admin] listen: 'nohost': expected HOST:PORT"),
    ],
)
def test_bad_config_is_one_clear_line(tmp_path: Path, body: str, expect: str) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(
        body + f"\n[log]\nfile = '{tmp_path / 'x.log'}'\n" if "[log]" not in body else body
    )
    r = run_node(cfg)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert str(cfg) in lines[0] and expect in lines[0], lines[0]


def test_loose_key_file_and_busy_port_are_refused(tmp_path: Path, node: TestNode) -> None:
    key = tmp_path / "loose.key"
    key.write_text("00" * 32)
    key.chmod(0o644)
    cfg = tmp_path / "n.toml"
    data = tmp_path / "d"
    cfg.write_text(
        f"[node]\ndata_dir = '{data}'\nkey_file = '{key}'\n[admin]\nlisten = '127.0.0.1:0'\n"
    )
    r = run_node(cfg)
    assert r.returncode != 0
    assert r.stderr.strip().splitlines() == [
        f"p2pml: {key}: key file permissions 0o644 are too open (want 0600)"
    ]
    busy = node.api.base.removeprefix("http://")
    cfg.write_text(f"[node]\ndata_dir = '{tmp_path / 'e'}'\n[admin]\nlisten = '{busy}'\n")
    r = run_node(cfg)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"admin API cannot listen on {busy}" in lines[0], r.stderr
