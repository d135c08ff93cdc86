"""Federated rounds on five real node processes (issue 16's first test):
public shards, ``sgd_classifier`` on scikit-learn's digits. Every node trains
its update each round and validates every round-closing block by
recomputing G_{r+1} itself, so each node's own record of every round's model
hash must be the same on all five, each must have scored every global model
on the holdout itself (to the same value), and each serves the final model
under the committed hash. The final accuracy is printed next to a
centralised fit of the same estimator on the union of the five shards."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

from tests.framework.federated import (
    centralised_accuracy,
    fed_view,
    holdout_accuracy,
    publish_federated,
    run_round,
    served_model_hash,
    upload_digits,
)
from tests.framework.testnode import NodeSet, connect_nodes, sync_blocks

NODES = 5
ROUNDS = 3
BOUNTY = ROUNDS * 10_000


def test_federated_rounds_on_five_nodes(nodes: NodeSet, tmp_path: Path) -> None:
    t0 = time.monotonic()
    five = [
        nodes.add(node={"dev_key": i}, training={"enabled": True, "workers": 1})
        for i in range(NODES)
    ]
    a = five[0]
    nodes.start_mesh()
    for x, y in itertools.combinations(five, 2):
        connect_nodes(x, y)
    cid, frame = upload_digits(a, tmp_path)
    task_id = publish_federated(
        a, cid, rounds=ROUNDS, participants=NODES, round_blocks=5, bounty=BOUNTY
    )
    a.mine(1)
    sync_blocks(five)
    started = time.monotonic()
    for rnd in range(ROUNDS):
        run_round(a, five, task_id, rnd, NODES)
    rounds_took = time.monotonic() - started

    keys = [n.status()["public_key"] for n in five]
    views = [fed_view(n, task_id) for n in five]
    for n, v in zip(five, views, strict=True):
        assert len(v["rounds"]) == ROUNDS, (n.index, v)
        for rd in v["rounds"]:
            # All five took part in every round, and this node computed (and
            # scored) G_{r+1} itself: only its own aggregate fills the metric.
            assert sorted(u["participant"] for u in rd["updates"]) == sorted(keys), rd
            assert rd["metric"] is not None, (n.index, rd)
    hashes = [[rd["model_hash"] for rd in v["rounds"]] for v in views]
    assert all(h == hashes[0] for h in hashes), hashes
    assert len(set(hashes[0])) == ROUNDS  # every round moved the model
    curves = [[rd["metric"] for rd in v["rounds"]] for v in views]
    assert all(c == curves[0] for c in curves), curves

    task = a.api.get(f"/tasks/{task_id}")
    assert task["status"] == "closed"
    for n in five:
        assert served_model_hash(n, task_id, tmp_path / f"g{n.index}.p2fl") == hashes[0][-1]
    federated = holdout_accuracy(task, frame, (tmp_path / "g0.p2fl").read_bytes())
    assert abs(federated - curves[0][-1]) < 1e-12
    centralised, n_rows = centralised_accuracy(task, frame, [bytes.fromhex(k) for k in keys])
    print(
        f"\nfederated sgd_classifier on digits, {NODES} nodes, {ROUNDS} rounds:"
        f" holdout accuracy per round {[round(c, 4) for c in curves[0]]};"
        f" centralised fit on the same {n_rows} rows {centralised:.4f};"
        f" {ROUNDS} rounds in {rounds_took:.1f} s, test {time.monotonic() - t0:.1f} s"
    )
    assert federated > 0.8, curves[0]
