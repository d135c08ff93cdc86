"""SIGTERM while the node mines on all workers, trains and serves API
requests: it stops within 5 s, and a restart resumes from its store."""

from __future__ import annotations

import threading
from pathlib import Path

from tests.framework.tasks import upload_diabetes
from tests.framework.testnode import NodeSet
from tests.framework.waiting import scaled, wait_until_sync


def test_sigterm_under_load(nodes: NodeSet, tmp_path: Path) -> None:
    node = nodes.add(
        node={"dev_key": 0},
        mining={"enabled": True, "workers": 2},
        training={"enabled": True, "workers": 1},
    )
    node.start()
    cid = upload_diabetes(node, tmp_path)
    node.api.post(
        "/tasks",
        {
            "dataset_cid": cid,
            "target": "target",
            "model": "random_forest_regressor",
            "kind": "regression",
            "metric": "r2",
            "params": {"n_estimators": 500},
            "rounds": 8,
            "deadline": 10_000,
        },
    )
    wait_until_sync(
        lambda: node.status()["training"]["running_jobs"] > 0, 60, what="a training job"
    )
    stop = threading.Event()
    answered = [0]

    def hammer() -> None:
        while not stop.is_set():
            try:
                node.api.get("/status")
                answered[0] += 1
            except Exception:
                return  # the node went away under us: expected

    threads = [threading.Thread(target=hammer, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    wait_until_sync(lambda: answered[0] > 20, 30, what="API under load")
    before = node.height
    assert node.status()["mining"]["enabled"] and before > 0
    took = node.stop()
    stop.set()
    for t in threads:
        t.join(10)
    # The README promises an ordered stop "within seconds", also under load.
    assert took < scaled(5), f"shutdown took {took:.1f}s"

    node.configure("mining", enabled=False)
    node.start()
    st = node.status()
    assert st["height"] >= before
    chain = node.api.get("/chain?limit=50")
    assert [h["height"] for h in chain] == list(range(st["height"], st["height"] - len(chain), -1))
