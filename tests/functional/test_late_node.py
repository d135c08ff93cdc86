"""Scenario 6: a late node joins a 1,000-block chain holding tasks and
verified results, syncs it (re-verifying every result) and reaches the same
state as the node it learned from."""

from __future__ import annotations

from pathlib import Path

from tests.framework.tasks import upload_diabetes
from tests.framework.testnode import NodeSet, TestNode, connect_nodes, sync_blocks
from tests.framework.waiting import wait_until_sync


def state(n: TestNode, keys: list[str]) -> dict[str, object]:
    return {
        "tip": n.tip,
        "tasks": n.api.get("/tasks"),
        "results": sorted(n.api.get("/results"), key=lambda r: r["id"]),
        "balances": [n.api.get(f"/balances/{k}") for k in keys],
    }


def test_late_node_syncs_a_long_chain_with_tasks(nodes: NodeSet, tmp_path: Path) -> None:
    a = nodes.add(node={"dev_key": 0}, training={"enabled": True, "workers": 1})
    nodes.start_mesh([a])
    cid = upload_diabetes(a, tmp_path)
    a.mine(300)
    for model in ("ridge", "lasso"):
        a.api.post(
            "/tasks",
            {
                "dataset_cid": cid,
                "target": "target",
                "model": model,
                "kind": "regression",
                "metric": "mae",
                "rounds": 2,
                "bounty": 777,
                "deadline": 100,
                "max_results": 2,
            },
        )
    a.mine(1)
    wait_until_sync(lambda: len(a.api.get("/mempool")) == 4, 120, what="four results")
    a.mine(699)
    assert a.height == 1000
    tasks = a.api.get("/tasks")
    assert [t["status"] for t in tasks] == ["closed", "closed"]
    assert all(t["results"] == 2 for t in tasks)

    late = nodes.add(node={"dev_key": 3})
    nodes.start_mesh([late])
    connect_nodes(late, a)
    sync_blocks([a, late], timeout=180)
    keys = [a.status()["public_key"], late.status()["public_key"]]
    assert state(late, keys) == state(a, keys)
    assert late.status()["verification"]["verified"] == 4
