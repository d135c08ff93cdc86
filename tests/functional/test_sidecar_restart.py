"""Scenario 5: the IPFS sidecar (a real Kubo-RPC daemon) goes down mid-task
and comes back; the nodes wait for it, say so in /status, and the task still
completes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.framework.ipfs_daemon import DaemonNotInstalled, JsIpfsDaemon
from tests.framework.tasks import publish_ridge_task, upload_diabetes
from tests.framework.testnode import NodeSet, connect_nodes, sync_blocks
from tests.framework.waiting import wait_until_sync


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[JsIpfsDaemon]:
    try:
        d = JsIpfsDaemon(tmp_path / "jsipfs-repo")
    except DaemonNotInstalled as exc:
        pytest.fail(str(exc), pytrace=False)
    d.start()
    yield d
    d.stop()


def test_task_completes_across_a_sidecar_restart(
    nodes: NodeSet, tmp_path: Path, daemon: JsIpfsDaemon
) -> None:
    ipfs = {"mode": "sidecar", "api": daemon.api_multiaddr, "timeout": 120.0}
    a = nodes.add(node={"dev_key": 0}, ipfs=ipfs, training={"enabled": True, "workers": 1})
    b = nodes.add(node={"dev_key": 1}, ipfs=ipfs, training={"enabled": True, "workers": 1})
    nodes.start_all()
    connect_nodes(a, b)
    cid = upload_diabetes(a, tmp_path)
    task = publish_ridge_task(b, cid, bounty=5, deadline=20, max_results=2)
    wait_until_sync(lambda: len(a.api.get("/mempool")) == 1, 30, what="task at node0")

    daemon.stop()
    a.mine(1)  # training starts now, with the sidecar down
    sync_blocks([a, b])
    wait_until_sync(
        lambda: a.status()["ipfs"]["state"].startswith("waiting for data: sidecar unreachable"),
        60,
        what="node0 to report the sidecar down",
    )
    assert a.api.get(f"/tasks/{task}")["results"] == []

    daemon.start()
    wait_until_sync(lambda: a.status()["ipfs"]["state"] == "ready", 120, what="sidecar back")
    wait_until_sync(lambda: len(a.api.get("/mempool")) == 2, 180, what="both results")
    a.mine(1)
    sync_blocks([a, b])
    view = b.api.get(f"/tasks/{task}")
    assert view["status"] == "closed" and len(view["results"]) == 2
    assert all(f["reason"] != "dataset-unavailable" for f in view["failures"])
