"""A node process that trains on a real Dask cluster (2 worker processes on
127.0.0.1), and one whose scheduler is down: both run, both agree on the block.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from distributed import LocalCluster
from sklearn.datasets import load_diabetes

from p2pml.devnet import free_port
from p2pml.ml.worker import THREAD_ENV
from tests.framework.testnode import NodeSet, connect_nodes, sync_blocks
from tests.framework.waiting import wait_until_sync

from .test_model_delivery import cli


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(
        host="127.0.0.1",
        processes=True,
        n_workers=2,
        threads_per_worker=1,
        dashboard_address="127.0.0.1:0",
        env=THREAD_ENV,
    ) as c:
        yield c


def test_task_trained_on_dask_and_verified_by_a_node_without_its_cluster(
    cluster: LocalCluster, nodes: NodeSet, tmp_path: Path
) -> None:
    # (cluster first: it outlives the nodes, which stop first)
    dask = {"executor": "dask", "dask_scheduler": cluster.scheduler_address}
    a = nodes.add(node={"dev_key": 0}, training={"enabled": True, "workers": 1, **dask})
    # b's scheduler is down at start: not fatal, b verifies on its own workers.
    down = {"executor": "dask", "dask_scheduler": f"tcp://127.0.0.1:{free_port()}"}
    b = nodes.add(node={"dev_key": 1}, training=down)
    nodes.start_mesh()
    connect_nodes(a, b)

    def executor(n: object) -> dict[str, object]:
        return n.status()["training"]["executor"]  # type: ignore[attr-defined, no-any-return]

    wait_until_sync(
        lambda: executor(a)["state"] == "connected" and len(executor(a)["workers"]) == 2,  # type: ignore[arg-type]
        60,
        what="node0 connected to the cluster's two workers",
    )
    wait_until_sync(lambda: executor(b)["state"] == "unreachable", 60, what="node1's failure")
    assert executor(b)["reason"]

    csv = tmp_path / "diabetes.csv"
    load_diabetes(as_frame=True).frame.to_csv(csv, index=False)
    r = cli(a, "dataset", "add", str(csv))
    assert r.returncode == 0, r.stderr
    r = cli(
        a, "task", "publish", "--dataset", r.stdout.strip(), "--target", "target",
        "--model", "ridge", "--param", "alpha=0.5", "--rounds", "1", "--bounty", "1000",
        "--deadline", "30", "--max-results", "1",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    task_id = r.stdout.strip()
    a.mine(1)
    wait_until_sync(lambda: len(a.api.get("/mempool")) == 1, 120, what="node0's own result")
    a.mine(1)
    sync_blocks([a, b], timeout=120)  # b re-ran the result on its local pool to accept it
    view = b.api.get(f"/tasks/{task_id}")
    assert view["status"] == "closed" and len(view["results"]) == 1

    ea, eb = executor(a), executor(b)
    assert ea["jobs_on_cluster"] >= 1 and ea["jobs_on_local"] == 0  # type: ignore[operator]
    assert ea["datasets_scattered"] == 1
    assert eb["jobs_on_cluster"] == 0 and eb["jobs_on_local"] >= 1  # type: ignore[operator]
    # The CLI shows the executor, its workers and their load.
    r = cli(a, "status")
    assert r.returncode == 0, r.stderr
    assert "executor: dask" in r.stdout and "state: connected" in r.stdout
    assert r.stdout.count("address=tcp://127.0.0.1:") == 2

    # The cluster goes away: node0 notices, keeps running, and stops cleanly
    # (no traceback in its output: the fixture checks at cleanup).
    cluster.close()
    wait_until_sync(lambda: executor(a)["state"] == "unreachable", 60, what="node0's notice")
    assert executor(a)["workers"] == []
    a.mine(1)
    sync_blocks([a, b], timeout=60)
    assert a.stop() < 10
