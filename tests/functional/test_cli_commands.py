"""What users do with the CLI and the node process, end to end on real nodes:
every ``p2pml`` command against a two-node regtest network (one node set for
all of them, to keep the time down), environment overrides, JSON logs in
blockchain.log, SIGINT, an unreadable key file and a busy p2p port."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from sklearn.datasets import load_diabetes

from tests.framework.calls import expected_calls
from tests.framework.cli import cli
from tests.framework.testnode import ROOT, NodeSet, TestNode
from tests.framework.waiting import scaled, wait_until_sync


def cli_json(node: TestNode, *args: str) -> Any:
    return json.loads(cli(node, "--json", *args).stdout)


def test_every_cli_command(nodes: NodeSet, tmp_path: Path) -> None:
    a = nodes.add(node={"dev_key": 0}, training={"enabled": True, "workers": 1})
    b = nodes.add(node={"dev_key": 1})
    nodes.start_mesh()
    a_st, b_st = a.status(), b.status()

    # peers connect / list
    assert f"connected to {b.p2p_addrs()[0]}" in cli(a, "peers", "connect", b.p2p_addrs()[0]).stdout
    wait_until_sync(
        lambda: b_st["peer_id"] in cli(a, "peers").stdout, 30, what="b in `peers` table"
    )
    assert [p["peer_id"] for p in cli_json(a, "peers")] == [b_st["peer_id"]]

    # mine, status, chain, chain --tips, block by height and by hash, balance
    mined = cli_json(a, "mine", "3")["hashes"]
    assert len(mined) == 3
    assert cli_json(a, "status")["height"] == 3
    assert "height" in cli(a, "status").stdout
    assert [h["hash"] for h in cli_json(a, "chain", "--limit", "3")] == mined[::-1]
    assert mined[-1] in cli(a, "chain").stdout
    tips = cli_json(a, "chain", "--tips")
    assert [(t["hash"], t["status"]) for t in tips] == [(mined[-1], "active")]
    assert mined[-1][:16] in cli(a, "chain", "--tips").stdout
    assert cli_json(a, "block", "2")["header"]["hash"] == mined[1]
    assert cli_json(a, "block", mined[1])["header"]["height"] == 2
    bal = cli_json(a, "balance", a_st["public_key"])
    assert bal["public_key"] == a_st["public_key"] and bal["balance"] > 0
    assert str(bal["balance"]) in cli(a, "balance", a_st["public_key"]).stdout

    # dataset add, task publish (with --param parsing), tasks, task show, mempool
    csv = tmp_path / "diabetes.csv"
    load_diabetes(as_frame=True).frame.to_csv(csv, index=False)
    cid = cli(a, "dataset", "add", str(csv)).stdout.split()[-1]
    assert cid.startswith("Qm") and len(cid) == 46
    bad = cli(a, "task", "publish", "--dataset", cid, "--param", "alpha", check=False)
    assert bad.returncode == 2 and "--param 'alpha': expected NAME=VALUE" in bad.stderr
    published = cli_json(
        a,
        "task", "publish", "--dataset", cid, "--target", "target", "--model", "ridge",
        "--param", "alpha=0.5", "--param", "solver=svd", "--param", "fit_intercept=true",
        "--metric", "r2", "--rounds", "1", "--partition", "0.5", "--bounty", "1000",
        "--deadline", "20",
    )  # fmt: skip
    tid = published["id"]
    view = cli_json(a, "task", "show", tid)
    assert dict(view["spec"]["params"]) == {"alpha": 0.5, "solver": "svd", "fit_intercept": True}
    assert tid[:16] in cli(a, "task", "show", tid).stdout
    assert tid in {t["id"] for t in cli_json(a, "tasks")}
    assert tid[:16] in cli(a, "tasks").stdout
    assert tid in {tx["id"] for tx in cli_json(a, "mempool")}
    assert tid[:16] in cli(a, "mempool").stdout

    # The task goes into a block; node a trains it; its result is listed.
    cli(a, "mine", "1")
    wait_until_sync(lambda: cli_json(a, "results", "--task", tid), 120, what="a result")
    res = cli_json(a, "results", "--task", tid)[0]
    assert cli_json(a, "results", res["id"])["id"] == res["id"]  # GET /results/{id}
    assert res["id"][:16] in cli(a, "results").stdout

    # peers disconnect --ban: gone, banned, and a redial is refused.
    out = cli(a, "peers", "disconnect", b_st["peer_id"], "--ban", "600").stdout
    assert f"disconnected {b_st['peer_id']}, banned 600s" in out
    wait_until_sync(lambda: not cli_json(a, "peers"), 30, what="b disconnected")
    assert b_st["peer_id"] in a.status()["banned"]
    again = cli(a, "peers", "connect", b.p2p_addrs()[0], check=False)
    assert again.returncode != 0 and "banned" in again.stderr

    # The served OpenAPI document lists exactly the routes the node serves.
    doc = a.api.get("/openapi.json")
    documented = {f"route {m.upper()} {path}" for path, ops in doc["paths"].items() for m in ops}
    assert documented == {c for c in expected_calls() if c.startswith("route ")}


def test_env_override_json_log_and_sigint(nodes: NodeSet) -> None:
    n = nodes.add(mining={"enabled": False}, log={"json": False, "level": "INFO"})
    n.start(env={"P2PML_MINING_ENABLED": "true", "P2PML_LOG_JSON": "true"})
    assert n.status()["mining"]["enabled"]  # the environment won over the file
    wait_until_sync(lambda: n.height >= 2, 60, what="blocks mined (mining on from env)")
    log = n.data_dir / "blockchain.log"

    def records() -> list[dict[str, Any]]:
        # JSON lines only (a last line still being written is not read yet)
        lines = log.read_text().split("\n")[:-1]
        return [json.loads(line) for line in lines]

    def logged_height_2() -> bool:
        chain_log = [r["msg"] for r in records() if r["logger"] == "p2pml.node.chain_manager"]
        return any("height 2" in msg for msg in chain_log)

    assert {"ts", "level", "logger", "msg"} <= set(records()[0])
    # The tip (what /status shows) moves before the block's log line is written.
    wait_until_sync(logged_height_2, 30, what="height 2 in the JSON log")

    assert n.proc is not None
    n.proc.send_signal(signal.SIGINT)
    assert n.proc.wait(scaled(10)) == 0  # an ordered stop, like SIGTERM
    n.check_no_traceback()
    tail = [json.loads(line) for line in log.read_text().splitlines()][-5:]
    assert any("stop" in r["msg"] for r in tail), tail


def run_node(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "p2pml.cli", "node", "--config", str(config)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=scaled(60),
    )


def test_unreadable_key_file_and_busy_p2p_port(tmp_path: Path) -> None:
    key = tmp_path / "node.key"
    key.mkdir()  # root reads any file, so a directory stands for "cannot read"
    cfg = tmp_path / "n.toml"
    cfg.write_text(
        f"[node]\nnetwork = 'regtest'\ndata_dir = '{tmp_path / 'd'}'\nkey_file = '{key}'\n"
        "[admin]\nlisten = '127.0.0.1:0'\n[ipfs]\nmode = 'embedded'\n"
    )
    r = run_node(cfg)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(key) in lines[0], r.stderr
    assert "Traceback" not in r.stderr

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg.write_text(
            f"[node]\nnetwork = 'regtest'\ndata_dir = '{tmp_path / 'e'}'\n"
            f"[p2p]\nlisten = ['/ip4/127.0.0.1/tcp/{port}']\n"
            "[admin]\nlisten = '127.0.0.1:0'\n[ipfs]\nmode = 'embedded'\n"
        )
        r = run_node(cfg)
    assert r.returncode != 0
    # The last line names the address and the problem. (Not the only line yet:
    # libp2p's own listener error and the node's INFO stop line come first.)
    last = r.stderr.strip().splitlines()[-1]
    assert last == f"p2pml: cannot listen on /ip4/127.0.0.1/tcp/{port} (Address already in use)"
    assert "Traceback" not in r.stderr
