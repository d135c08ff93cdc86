"""Nodes configured by hand, as configs/devnet/*.toml are, share datasets.

Each node's config is written before any node runs (no status exchange, no
start order): the embedded IPFS peer ids come from ``[ipfs] dev_identity``.
A dataset added on the node that does not train is fetched over IPFS by the
trainer, which trains it and reports a verified result.
"""

from __future__ import annotations

from pathlib import Path

from p2pml.devnet import free_port
from p2pml.ipfs.devidentity import dev_ipfs_identity
from tests.framework.tasks import upload_diabetes
from tests.framework.testnode import NodeSet, connect_nodes, wait_until_sync


def test_hand_configured_nodes_share_datasets(nodes: NodeSet, tmp_path: Path) -> None:
    ports = [free_port(), free_port()]
    swarm = [f"/ip4/127.0.0.1/tcp/{p}" for p in ports]
    ids = [dev_ipfs_identity(i)["PeerID"] for i in range(2)]
    trainer, holder = (
        nodes.add(
            node={"dev_key": i},
            training={"enabled": i == 0, "workers": 1},
            ipfs={
                "swarm": [swarm[i]],
                "dev_identity": i,
                "peers": [f"{swarm[1 - i]}/p2p/{ids[1 - i]}"],
            },
        )
        for i in range(2)
    )
    nodes.start_all()  # both at once, like two terminals
    for node, ident in ((trainer, ids[0]), (holder, ids[1])):
        assert node.status()["ipfs"]["swarm"] == [f"{swarm[node.index]}/p2p/{ident}"]
    connect_nodes(trainer, holder)

    cid = upload_diabetes(holder, tmp_path)
    task = trainer.api.post(
        "/tasks",
        {"dataset_cid": cid, "target": "target", "model": "ridge", "kind": "regression",
         "metric": "r2", "rounds": 1, "deadline": 30},
    )["id"]  # fmt: skip
    trainer.mine(1)
    wait_until_sync(
        lambda: any(r["task"] == task for r in trainer.api.get("/results")),
        120,
        what="a result trained on the dataset fetched from the other node",
    )
    assert trainer.api.get(f"/tasks/{task}")["failures"] == []
