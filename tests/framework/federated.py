"""Federated tasks on real node processes (docs/federated.md §11): the digits
data, publishing a public-shard task, driving a round by hand on regtest,
reading the task's federated view, and the centralised baseline the tests
print beside the federated accuracy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.datasets import load_digits
from sklearn.linear_model import SGDClassifier

from p2pml.federated import rounds
from p2pml.federated.encoding import decode
from p2pml.federated.params import build
from p2pml.ml.partition import holdout_indices, partition_indices
from tests.framework.testnode import TestNode, sync_blocks
from tests.framework.waiting import wait_until_sync


def g0_hash(node: TestNode, task_id: str) -> bytes:
    """hash(G_0) of a federated task: the ``base`` its round-0 updates commit to
    (docs/federated.md §11.3)."""
    task = node.api.get(f"/tasks/{task_id}")
    wire = task["spec"]
    return rounds.round_hash(wire, rounds.initial(wire, bytes.fromhex(task["seed"])))


def upload_digits(node: TestNode, tmp_path: Path) -> tuple[str, pd.DataFrame]:
    """scikit-learn's digits (pixels / 16) as CSV on ``node``'s IPFS: (CID, frame)."""
    frame = load_digits(as_frame=True).frame
    frame.iloc[:, :-1] = frame.iloc[:, :-1] / 16.0
    csv = tmp_path / "digits.csv"
    frame.to_csv(csv, index=False)
    return str(node.api.upload("/datasets", csv)["cid"]), frame


def federated_body(
    cid: str,
    *,
    rounds: int,
    participants: int,
    round_blocks: int,
    bounty: int,
    local_epochs: int = 1,
    partition: float = 0.25,
    deadline: int = 400,
) -> dict[str, Any]:
    """A POST /tasks body: ``sgd_classifier`` on digits, public shards, FedAvg
    (the node fills in the features and the class list from the dataset)."""
    return {
        "dataset_cid": cid,
        "target": "target",
        "model": "sgd_classifier",
        "kind": "classification",
        "metric": "accuracy",
        "rounds": rounds,
        "partition_fraction": partition,
        "holdout_fraction": 0.25,
        "deadline": deadline,
        "bounty": bounty,
        "federated": {
            "aggregation": "fedavg",
            "local_epochs": local_epochs,
            "participants": participants,
            "round_blocks": round_blocks,
        },
    }


def publish_federated(node: TestNode, cid: str, **fields: Any) -> str:
    """Post :func:`federated_body` to ``node``: the task id."""
    return str(node.api.post("/tasks", federated_body(cid, **fields))["id"])


def fed_view(node: TestNode, task_id: str) -> dict[str, Any]:
    view: dict[str, Any] = node.api.get(f"/tasks/{task_id}")["federated"]
    return view


def updates_pooled(node: TestNode, task_id: str, rnd: int) -> int:
    return len(pooled_updates(node, task_id, rnd))


def pooled_updates(node: TestNode, task_id: str, rnd: int) -> list[dict[str, Any]]:
    return [
        tx
        for tx in node.api.get("/mempool")
        if tx["type"] == "update" and tx["task"] == task_id and tx["round"] == rnd
    ]


def model_hashes(node: TestNode, task_id: str) -> list[str]:
    """The committed hash of G_1..G_r in ``node``'s chain state, in round order."""
    return [rd["model_hash"] for rd in fed_view(node, task_id)["rounds"]]


def run_round(miner: TestNode, nodes: list[TestNode], task_id: str, rnd: int, updates: int) -> None:
    """Round ``rnd`` on regtest: wait for ``updates`` updates in ``miner``'s
    mempool, mine them (the round is full), wait for the miner to hold
    G_{rnd+1}, mine the close, and let ``nodes`` agree on the tip."""
    wait_until_sync(
        lambda: updates_pooled(miner, task_id, rnd) >= updates,
        240,
        what=f"{updates} updates of round {rnd} in node{miner.index}'s mempool",
    )
    miner.mine(1)
    sync_blocks(nodes)
    close_round(miner, nodes, task_id, rnd)


def close_round(miner: TestNode, nodes: list[TestNode], task_id: str, rnd: int) -> None:
    """Mine the block closing round ``rnd`` once ``miner`` holds G_{rnd+1}."""
    wait_until_sync(
        lambda: bool(fed_view(miner, task_id)["next_model_ready"]),
        120,
        what=f"G_{rnd + 1} at node{miner.index}",
    )
    miner.mine(1)
    sync_blocks(nodes)
    got = fed_view(miner, task_id)["round"]
    assert got == rnd + 1, f"round {rnd} did not close: the open round is {got}"


def served_model_hash(node: TestNode, task_id: str, path: Path) -> str:
    """Download the node's final global model (GET /tasks/{id}/model) and hash
    its bytes as the chain does (decoded against the task's layout first, so
    a malformed artifact fails here rather than hashing to something)."""
    headers = node.api.download(f"/tasks/{task_id}/model", path)
    spec = node.api.get(f"/tasks/{task_id}")["spec"]
    digest = rounds.round_hash(spec, decode(rounds.layout_of(spec), path.read_bytes())).hex()
    assert headers["x-model-hash"] == digest, (headers, digest)
    return digest


def holdout_accuracy(task: dict[str, Any], frame: pd.DataFrame, model_bytes: bytes) -> float:
    """The accuracy of a downloaded global model on the task's holdout rows."""
    spec = task["spec"]
    X, y, hold = _rows(task, frame)
    layout = rounds.layout_of(spec)
    model = build(layout, decode(layout, model_bytes), {}, rounds.classes_of(spec))
    return float((model.predict(X[hold]) == y[hold]).mean())


def centralised_accuracy(
    task: dict[str, Any], frame: pd.DataFrame, participants: list[bytes]
) -> tuple[float, int]:
    """The same estimator fitted once on the union of the participants'
    shards, scored on the task's holdout: (accuracy, rows fitted)."""
    spec = task["spec"]
    X, y, hold = _rows(task, frame)
    seed, tid = bytes.fromhex(task["seed"]), bytes.fromhex(task["id"])
    shards = [
        partition_indices(
            seed, tid, k, 0, len(y), spec["holdout_fraction"], spec["partition_fraction"]
        )
        for k in participants
    ]
    rows = np.unique(np.concatenate(shards))
    central = SGDClassifier(random_state=0).fit(X[rows], y[rows])
    return float((central.predict(X[hold]) == y[hold]).mean()), len(rows)


def _rows(task: dict[str, Any], frame: pd.DataFrame) -> tuple[Any, Any, Any]:
    spec = task["spec"]
    X = frame.drop(columns="target").to_numpy(dtype=np.float64)
    y = frame["target"].to_numpy(dtype=np.int64)
    seed, tid = bytes.fromhex(task["seed"]), bytes.fromhex(task["id"])
    return X, y, holdout_indices(seed, tid, len(y), spec["holdout_fraction"])
