"""Coins that move, and the runtime as a network parameter, on real node
processes (regtest): ``p2pml send``, POST /transfers and the Python client;
gossip relay and mining of transfers; a node whose scikit-learn differs from
the network's refuses to validate, or follows when configured so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from p2pml.chain.params import DEV_ALLOCATION, REGTEST, dev_identity
from p2pml.client import Client
from p2pml.crypto import Identity
from p2pml.errors import ApiError
from tests.framework.cli import cli
from tests.framework.testnode import (
    ROOT,
    NodeSet,
    TestNode,
    connect_nodes,
    sync_blocks,
    sync_mempools,
)
from tests.framework.waiting import scaled, wait_until_sync

CAROL = Identity.from_seed(b"\x0c" * 32).public_key.hex()


def balance(node: TestNode, key: str) -> int:
    return int(node.api.get(f"/balances/{key}")["balance"])


def refusal(node: TestNode, body: dict[str, Any]) -> tuple[int, str]:
    with pytest.raises(ApiError) as err:
        node.api.post("/transfers", body)
    return err.value.status, err.value.reason


def test_send_relay_mine_and_refusals(nodes: NodeSet) -> None:
    a = nodes.add(node={"dev_key": 0})
    b = nodes.add(node={"dev_key": 1})
    nodes.start_all()
    connect_nodes(a, b)
    a_key, b_key = dev_identity(0).public_key.hex(), dev_identity(1).public_key.hex()

    # The CLI sends from a's key; the transfer reaches b's mempool by gossip.
    out = cli(a, "send", CAROL, "12345", "--fee", "2000").stdout
    assert out.startswith(f"sent 12345 to {CAROL}: transfer ")
    sent = out.split()[-1]
    sync_mempools([a, b])
    pooled = {tx["id"]: tx for tx in b.api.get("/mempool")}
    assert pooled[sent] == {
        "id": sent,
        "type": "transfer",
        "fee": 2000,
        "sender": a_key,
        "recipient": CAROL,
        "amount": 12345,
    }
    # The Python client sends too (default fee: the network minimum).
    via_client = Client(b.api.base, token_file=b.data_dir / "admin.token").send(CAROL, 5)
    sync_mempools([a, b])
    assert {sent, via_client} <= {tx["id"] for tx in a.api.get("/mempool")}

    # b mines them: fees to b's key, amounts to Carol, on both nodes.
    b.mine(1)
    sync_blocks([a, b])
    for n in (a, b):
        assert balance(n, CAROL) == 12345 + 5
        assert balance(n, a_key) == DEV_ALLOCATION - 12345 - 2000
        fees = 2000 + REGTEST.min_transfer_fee
        assert balance(n, b_key) == DEV_ALLOCATION - 5 - REGTEST.min_transfer_fee + (
            REGTEST.coinbase_reward + fees
        )
        assert n.api.get("/mempool") == []
    block = a.api.get("/blocks/1")
    assert len(block["txs"]) == 3
    assert {
        "id": sent,
        "type": "transfertx",
        "sender": a_key,
        "recipient": CAROL,
        "amount": 12345,
        "fee": 2000,
    } in block["txs"]
    assert Client(a.api.base).balance(CAROL) == 12345 + 5

    # Refusals name the rule; nothing is pooled.
    assert refusal(a, {"recipient": a_key, "amount": 1}) == (400, "bad-transfer-self")
    assert refusal(a, {"recipient": CAROL, "amount": 0}) == (400, "bad-transfer-amount")
    assert refusal(a, {"recipient": CAROL, "amount": 1, "fee": 1}) == (400, "bad-transfer-fee")
    assert refusal(a, {"recipient": CAROL, "amount": DEV_ALLOCATION}) == (
        400,
        "insufficient-funds",
    )
    assert refusal(a, {"recipient": "ab", "amount": 1})[0] == 400
    assert refusal(a, {"recipient": CAROL, "amount": 1, "memo": "x"})[0] == 400
    bad = cli(a, "send", a_key, "1", check=False)
    assert bad.returncode != 0 and "bad-transfer-self" in bad.stderr
    assert a.api.get("/mempool") == []


def node_config(tmp_path: Path, name: str, runtime: list[str]) -> Path:
    cfg = tmp_path / f"{name}.toml"
    cfg.write_text(
        f"[node]\nnetwork = 'regtest'\ndata_dir = '{tmp_path / name}'\n"
        f"regtest_runtime = {json.dumps(runtime)}\n"
        "[admin]\nlisten = '127.0.0.1:0'\n[ipfs]\nmode = 'embedded'\n"
    )
    return cfg


def test_a_node_whose_runtime_differs_refuses_to_validate(tmp_path: Path) -> None:
    numpy = metadata.version("numpy")
    cfg = node_config(tmp_path, "wrong", ["scikit-learn==0.0.1", f"numpy=={numpy}"])
    r = subprocess.run(
        [sys.executable, "-m", "p2pml.cli", "node", "--config", str(cfg)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=scaled(60),
    )
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    sklearn = metadata.version("scikit-learn")
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("p2pml: ")
    assert f"scikit-learn {sklearn} installed, network regtest runs 0.0.1" in lines[0]
    assert "numpy" not in lines[0]  # only what differs
    assert "validate_results = false" in lines[0]
    assert not (tmp_path / "wrong" / "chain.sqlite").exists()  # stopped before anything


def test_a_follower_with_another_runtime_runs_and_says_so(nodes: NodeSet) -> None:
    validator = nodes.add(node={"dev_key": 0})
    follower = nodes.add(
        node={"validate_results": False, "regtest_runtime": ["scikit-learn==0.0.1"]}
    )
    nodes.start_all()
    st = follower.status()["validation"]
    assert st["mode"] == "follower"
    assert st["network_runtime"] == {"scikit-learn": "0.0.1"}
    assert st["runtime"] == {"scikit-learn": metadata.version("scikit-learn")}
    assert st["runtime_matches"] is False
    assert validator.status()["validation"] == {
        "mode": "validator",
        "runtime": dict(REGTEST.runtime),
        "network_runtime": dict(REGTEST.runtime),
        "runtime_matches": True,
    }
    # The follower follows the chain (blocks with a transfer in them).
    connect_nodes(follower, validator)
    validator.api.post("/transfers", {"recipient": CAROL, "amount": 9})
    validator.mine(2)
    sync_blocks([validator, follower])
    wait_until_sync(lambda: balance(follower, CAROL) == 9, 30, what="follower has the transfer")
