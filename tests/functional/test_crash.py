"""Scenario 3: kill -9 a node while it mines, trains and syncs; it restarts
from its store, rejoins and converges."""

from __future__ import annotations

import threading
from pathlib import Path

from p2pml.errors import ApiError
from tests.framework.tasks import upload_diabetes
from tests.framework.testnode import NodeSet, connect_nodes, sync_blocks
from tests.framework.waiting import wait_until_sync


def background(fn: object, *args: object) -> threading.Thread:
    def run() -> None:
        try:
            fn(*args)  # type: ignore[operator]
        except ApiError:
            pass  # the node under it was killed: expected

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_kill_9_while_mining_training_and_syncing(nodes: NodeSet, tmp_path: Path) -> None:
    a = nodes.add(node={"dev_key": 0})
    b = nodes.add(node={"dev_key": 1}, training={"enabled": True, "workers": 1})
    c = nodes.add(node={"dev_key": 2})
    nodes.start_mesh()
    connect_nodes(a, b)
    connect_nodes(b, c)
    cid = upload_diabetes(a, tmp_path)
    c.api.post(
        "/tasks",
        {
            "dataset_cid": cid,
            "target": "target",
            "model": "random_forest_regressor",
            "kind": "regression",
            "metric": "r2",
            "params": {"n_estimators": 200},
            "rounds": 4,
            "deadline": 500,
        },
    )
    wait_until_sync(lambda: len(a.api.get("/mempool")) == 1, 30, what="task at node0")
    a.mine(1)
    sync_blocks([a, b, c])

    start = b.height
    jobs = [background(b.mine, 400), background(a.mine, 400)]
    wait_until_sync(
        lambda: b.height >= start + 30 and b.status()["training"]["running_jobs"] > 0,
        60,
        what="node1 mining, syncing and training",
    )
    b.kill()
    for j in jobs:
        j.join(120)

    b.start()  # the store reopens: no error, a consistent tip
    st = b.status()
    assert st["height"] >= start + 30
    chain = b.api.get("/chain?limit=1000")
    heights = [h["height"] for h in chain]
    assert heights == list(range(st["height"], st["height"] - len(chain), -1))
    assert all(h["status"] == "active" for h in chain)
    connect_nodes(b, a)
    connect_nodes(b, c)
    a.mine(1)
    sync_blocks([a, b, c], timeout=120)
    b.check_no_traceback()
