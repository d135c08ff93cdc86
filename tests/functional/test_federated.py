"""Federated rounds on real node processes (regtest, loopback): three
bonded dev-key nodes take part in an sgd_classifier task on scikit-learn's
digits with public shards. Each round every node trains its update from G_r,
gossips it, and the block closing the round commits hash(G_{r+1}); every node
validates that block by recomputing the aggregate itself, so all nodes hold
the same committed hashes and each scored the global model itself. The final
global model is downloaded (canonical P2FL bytes, not a pickle) and its
accuracy on the task's holdout is printed next to a centralised fit of the
same estimator on the union of the shards' rows."""

from __future__ import annotations

import json
from pathlib import Path

from p2pml.federated import rounds
from p2pml.federated.encoding import decode
from tests.framework.cli import cli
from tests.framework.federated import (
    centralised_accuracy,
    fed_view,
    holdout_accuracy,
    run_round,
    upload_digits,
)
from tests.framework.testnode import NodeSet, connect_nodes, sync_blocks

ROUNDS = 3
PARTICIPANTS = 3
BOUNTY = 3 * 10_000


def test_federated_rounds_on_three_nodes(nodes: NodeSet, tmp_path: Path) -> None:
    trained = {"enabled": True, "workers": 1}
    trio = [nodes.add(node={"dev_key": i}, training=trained) for i in range(3)]
    a = trio[0]
    nodes.start_mesh()
    connect_nodes(a, trio[1])
    connect_nodes(a, trio[2])
    connect_nodes(trio[1], trio[2])
    cid, frame = upload_digits(a, tmp_path)
    r = cli(
        a, "task", "publish", "--federated", "--model", "sgd_classifier", "--dataset", cid,
        "--target", "target", "--rounds", str(ROUNDS), "--participants", str(PARTICIPANTS),
        "--local-epochs", "2", "--aggregation", "fedavg", "--round-blocks", "50",
        "--partition", "0.25", "--holdout", "0.25", "--deadline", "400",
        "--bounty", str(BOUNTY), "--json",
    )  # fmt: skip
    task_id = json.loads(r.stdout)["id"]
    a.mine(1)
    sync_blocks(trio)
    for rnd in range(ROUNDS):
        run_round(a, trio, task_id, rnd, PARTICIPANTS)

    views = [fed_view(n, task_id) for n in trio]
    hashes = [[rd["model_hash"] for rd in v["rounds"]] for v in views]
    assert len(hashes[0]) == ROUNDS and hashes[0] == hashes[1] == hashes[2]
    # Each node scored every global model itself (it computed each one).
    for v in views:
        assert all(rd["metric"] is not None for rd in v["rounds"]), v
        assert all(len(rd["updates"]) == PARTICIPANTS for rd in v["rounds"])
    curve = [rd["metric"] for rd in views[0]["rounds"]]
    task = a.api.get(f"/tasks/{task_id}")
    assert task["status"] == "closed"
    # The bounty is split per round by sample count (floor; the rest back).
    # Node a is both publisher (its refund is the last entry) and participant.
    assert sum(p["amount"] for p in task["payout"]) == BOUNTY
    shares = {p["to"]: p["amount"] for p in task["payout"][:PARTICIPANTS]}
    assert set(shares) == {n.status()["public_key"] for n in trio}
    assert sum(shares.values()) > BOUNTY - PARTICIPANTS * ROUNDS
    shown = cli(a, "task", "show", task_id).stdout
    assert "round 0: accuracy" in shown and "accepted" in shown, shown
    got = json.loads(
        cli(trio[1], "model", "get", task_id, "-o", str(tmp_path / "g.p2fl"), "--json").stdout
    )
    assert got["model_hash"] == fed_view(trio[1], task_id)["rounds"][-1]["model_hash"]

    # The final model, downloaded: canonical bytes whose hash the chain committed.
    headers = a.api.download(f"/tasks/{task_id}/model", tmp_path / "global.p2fl")
    data = (tmp_path / "global.p2fl").read_bytes()
    assert headers["x-model-hash"] == hashes[0][-1]
    spec = task["spec"]
    assert rounds.round_hash(spec, decode(rounds.layout_of(spec), data)).hex() == hashes[0][-1]
    federated = holdout_accuracy(task, frame, data)
    assert abs(federated - curve[-1]) < 1e-12
    keys = [bytes.fromhex(n.status()["public_key"]) for n in trio]
    centralised, n_rows = centralised_accuracy(task, frame, keys)
    print(
        f"\nfederated sgd_classifier on digits, {PARTICIPANTS} nodes, {ROUNDS} rounds:"
        f" accuracy per round {[round(c, 4) for c in curve]};"
        f" centralised on the same {n_rows} rows {centralised:.4f}"
    )
    assert federated > 0.8, curve
