"""Issue 15, against real node processes (regtest, embedded IPFS): a dispute
never stalls on an artifact its trainer stops serving after inclusion.

Node h trains a result; a (publisher, miner) and v (a validator) fetch its
model for the cheap checks when the result is included. Then h, the
artifact's only origin, goes away for good, and a and v each evict their
project cache (as its LRU under ``ipfs.cache_max_bytes`` does) and run a full
collection of their IPFS repo (as the GC under ``ipfs.storage_max_mb`` does). a challenges h's
result; at the dispute's resolution height every node must re-run its full
audit, which needs the model. Both kept it pinned (the task is not paid
yet), so both decide it, the chain advances past the dispute height and the
verdict is recorded. Before the fix the collection dropped the model from
both, nobody served it, and no node could decide the block.
"""

from __future__ import annotations

from pathlib import Path

from p2pml.chain.params import REGTEST
from p2pml.cidv0 import b58decode
from tests.framework.cli import cli
from tests.framework.ipfsrepo import evict_project_cache, held_pins, repo_after_collection
from tests.framework.tasks import publish_ridge_task, upload_diabetes
from tests.framework.testnode import NodeSet, TestNode, connect_nodes, sync_blocks
from tests.framework.waiting import wait_until_sync


def collected(node: TestNode, model: str) -> None:
    """Stop ``node``, evict its project cache and collect everything unpinned
    in its IPFS repo, start it again: the model survives only by its pin."""
    node.stop()
    assert model in evict_project_cache(node)  # fetched for the cheap checks
    pins, blocks = repo_after_collection(node)
    assert model in pins, f"node {node.index} does not pin the disputable model"
    assert blocks.complete(b58decode(model))
    node.start()


def test_a_dispute_resolves_after_the_trainer_withholds_its_artifact_and_validators_gc(
    nodes: NodeSet, tmp_path: Path
) -> None:
    a = nodes.add(node={"dev_key": 0, "attest": False})  # publishes, mines, challenges
    h = nodes.add(node={"dev_key": 1, "attest": False}, training={"enabled": True, "workers": 1})
    v = nodes.add(node={"dev_key": 3, "attest": False})
    nodes.start_mesh()
    connect_nodes(a, h)
    connect_nodes(a, v)
    dataset = upload_diabetes(a, tmp_path)
    task_id = publish_ridge_task(a, dataset, bounty=1000, deadline=30, max_results=5)
    a.mine(1)
    sync_blocks([a, h, v])
    wait_until_sync(lambda: a.api.get("/mempool"), 120, what="h's result at node a")
    a.mine(1)
    sync_blocks([a, h, v])
    view = v.api.get(f"/tasks/{task_id}")
    assert view["status"] == "open" and len(view["results"]) == 1
    rid, model = view["results"][0]["id"], view["results"][0]["model_cid"]
    # a pins the dataset (it published it) and h's model; v both (open task).
    for n in (a, v):
        wait_until_sync(lambda n=n: held_pins(n) == 2, 60, what=f"node {n.index} pins h's model")

    h.stop()  # the artifact's origin is gone for good
    for n in (a, v):
        collected(n, model)
    connect_nodes(a, v)

    assert "challenged" in cli(a, "challenge", rid).stdout
    a.mine(1)
    sync_blocks([a, v])
    resolve_at = a.height + REGTEST.dispute_delay
    assert a.api.get(f"/results/{rid}")["dispute"]["resolve_at"] == resolve_at
    # Every node re-runs the full audit from its pinned copy (nobody else has it).
    for n in (a, v):
        wait_until_sync(
            lambda n=n: n.status()["challenges"].get("dispute-valid", 0) >= 1,
            120,
            what=f"node {n.index}'s audit of the disputed result",
        )
    a.mine(REGTEST.dispute_delay + 1)
    sync_blocks([a, v])
    assert a.height == v.height == resolve_at + 1
    for n in (a, v):
        got = n.api.get(f"/results/{rid}")
        assert got["verdict"] == "ok"
        assert got["dispute"]["outcome"] == "result-valid"  # a's challenge was wrong
