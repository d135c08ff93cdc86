"""The task most functional tests publish: ridge regression on scikit-learn's
bundled diabetes data (442 rows, trains in well under a second), uploaded
through a node's API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sklearn.datasets import load_diabetes

from tests.framework.testnode import TestNode


def upload_diabetes(node: TestNode, tmp_path: Path) -> str:
    """Write diabetes as CSV under ``tmp_path`` and add it to ``node``'s IPFS: its CID."""
    csv = tmp_path / "diabetes.csv"
    load_diabetes(as_frame=True).frame.to_csv(csv, index=False)
    return str(node.api.upload("/datasets", csv)["cid"])


def ridge_task(cid: str, **fields: Any) -> dict[str, Any]:
    """A ``POST /tasks`` body: one round of ridge on ``cid`` scored by r2;
    ``fields`` override or add (bounty, deadline, max_results, ...)."""
    return {
        "dataset_cid": cid,
        "target": "target",
        "model": "ridge",
        "kind": "regression",
        "metric": "r2",
        "rounds": 1,
        **fields,
    }


def publish_ridge_task(node: TestNode, cid: str, **fields: Any) -> str:
    """Post :func:`ridge_task` to ``node``: the task id."""
    return str(node.api.post("/tasks", ridge_task(cid, **fields))["id"])
