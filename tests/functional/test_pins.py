"""Issue 14, against real node processes (regtest, embedded IPFS): what a node
still needs stays pinned through its storage cap's GC, and what it no longer
needs is released for it.

Node a publishes a task on a dataset it added; node b trains for it,
fetching the dataset from a over bitswap. While the task is open, b's repo
pins the dataset (and b's own model): a collection (run on b's repo while b
is stopped, as its GC does) keeps them. b restarts, derives its pins from the
chain again, and once the task is paid (``payout_window`` blocks after its
close: a dispute may need both until then) and ``ipfs.pin_retention_blocks``
have passed it unpins both: the next collection takes them.
"""

from __future__ import annotations

from pathlib import Path

from sklearn.datasets import load_diabetes

from p2pml.chain.params import REGTEST
from p2pml.cidv0 import b58decode
from tests.framework.cli import cli as run_cli
from tests.framework.ipfsrepo import held_pins, repo_after_collection
from tests.framework.testnode import (
    NodeSet,
    TestNode,
    connect_nodes,
    sync_blocks,
    wait_until_sync,
)

DEADLINE = 4
RETENTION = 2


def cli(node: TestNode, *args: str) -> str:
    return run_cli(node, *args, timeout=120, cwd=node.dir).stdout.strip()


def test_dataset_of_an_open_task_stays_pinned_and_is_released_after_retention(
    nodes: NodeSet, tmp_path: Path
) -> None:
    a = nodes.add(node={"dev_key": 0})
    b = nodes.add(
        node={"dev_key": 1},
        training={"enabled": True, "workers": 1},
        ipfs={"pin_retention_blocks": RETENTION},
    )
    nodes.start_mesh()
    connect_nodes(a, b)
    csv = tmp_path / "diabetes.csv"
    load_diabetes(as_frame=True).frame.to_csv(csv, index=False)
    dataset = cli(a, "dataset", "add", str(csv))
    task_id = cli(
        a, "task", "publish", "--dataset", dataset, "--target", "target", "--model", "ridge",
        "--rounds", "1", "--bounty", "1000", "--deadline", str(DEADLINE), "--fee", "2500",
        "--max-results", "5",
    )  # fmt: skip
    a.mine(1)
    sync_blocks([a, b])
    # b trains (fetching the dataset from a); its result is mined: the task
    # stays open (deadline not reached, fewer results than max_results).
    wait_until_sync(lambda: len(a.api.get("/mempool")) == 1, 120, what="b's result")
    a.mine(1)
    sync_blocks([a, b])
    view = b.api.get(f"/tasks/{task_id}")
    assert view["status"] == "open" and len(view["results"]) == 1
    model = view["results"][0]["model_cid"]
    # The dataset and b's own model (pinned at its add) are both held.
    wait_until_sync(lambda: held_pins(b) == 2, 60, what="b pins the dataset and its model")

    b.stop()
    pins, blocks = repo_after_collection(b)
    assert {dataset, model} <= pins
    assert blocks.complete(b58decode(dataset)) and blocks.complete(b58decode(model))

    b.start()
    connect_nodes(a, b)
    a.mine(DEADLINE - 1)  # the task closes at its deadline height
    sync_blocks([a, b])
    assert b.api.get(f"/tasks/{task_id}")["status"] == "closed"
    # Until the payout and within the retention after it b still holds both
    # (derived again after the restart).
    wait_until_sync(lambda: held_pins(b) == 2, 60, what="b pins again after its restart")
    a.mine(REGTEST.payout_window)
    sync_blocks([a, b])
    assert b.api.get(f"/tasks/{task_id}")["paid"]
    a.mine(RETENTION)
    sync_blocks([a, b])
    wait_until_sync(lambda: held_pins(b) == 0, 60, what="b releases both")

    b.stop()
    pins, blocks = repo_after_collection(b)
    assert dataset not in pins and model not in pins
    assert blocks.dag(b58decode(dataset)) == set() and blocks.dag(b58decode(model)) == set()
