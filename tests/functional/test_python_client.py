"""The public Python client and examples/quickstart.py on a devnet of real nodes.

Two devnet node processes mine and train on their own (no test-driven
mining); the example script runs as a user would run it, by path, with a
``--devnet``-style data dir; then the client's pieces are checked directly.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from sklearn.datasets import load_wine

from p2pml.client import Client
from p2pml.errors import ApiError, InputError, WaitTimeout
from tests.framework.testnode import ROOT, NodeSet, TestNode, connect_nodes


def devnet_pair(nodes: NodeSet) -> list[TestNode]:
    pair = [
        nodes.add(
            "devnet",
            node={"dev_key": i},
            mining={"enabled": True, "workers": 1},
            training={"enabled": True, "workers": 1},
        )
        for i in range(2)
    ]
    nodes.start_mesh()
    connect_nodes(pair[0], pair[1])
    return pair


def test_quickstart_example_runs_against_a_devnet(nodes: NodeSet, tmp_path: Path) -> None:
    a, _b = devnet_pair(nodes)
    # The example reads DIR/node1/data like `p2pml devnet` lays it out.
    devnet_dir = tmp_path / "devnet"
    (devnet_dir / "node1").mkdir(parents=True)
    (devnet_dir / "node1" / "data").symlink_to(a.data_dir)
    r = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py"), "--devnet", str(devnet_dir)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,  # run by path from anywhere; examples/ is not an installed package
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "task closed: best accuracy" in r.stdout
    assert "best model: LogisticRegression(" in r.stdout
    assert "predicted_target" in r.stdout and "proba_2" in r.stdout
    assert "Traceback" not in r.stderr


def test_client_pieces(nodes: NodeSet, tmp_path: Path) -> None:
    a = nodes.add(node={"dev_key": 0}, training={"enabled": True, "workers": 1})
    a.start()
    c = Client(a.api.base, token_file=a.data_dir / "admin.token")
    wine = load_wine(as_frame=True).frame
    cid = c.add_dataset(wine, name="wine.csv")
    assert c.datasets()["cid"].tolist() == [cid]

    task = c.publish_task(cid, "target", "decision_tree_classifier", params={"max_depth": 3})
    assert task.info()["spec"]["kind"] == "classification"
    assert task.info()["spec"]["metric"] == "accuracy"
    with pytest.raises(ApiError) as err:
        task.best_model()
    assert (err.value.status, err.value.reason) == (404, "no-result")
    with pytest.raises(WaitTimeout):
        task.wait(timeout=0.5, poll=0.1)
    a.mine(1)
    # rounds 1, max_results 3 (default): our one result does not close it before the deadline.
    from tests.framework.waiting import wait_until_sync

    wait_until_sync(lambda: len(a.api.get("/mempool")) == 1, 120, what="own result")
    a.mine(1)
    model = task.best_model()
    assert type(model).__name__ == "DecisionTreeClassifier" and model.get_depth() <= 3
    df = task.results()
    assert isinstance(df, pd.DataFrame) and len(df) == 1
    assert df.loc[0, "metric"] == task.info()["best"]["metric"]
    pred = task.predict(wine.drop(columns=["target"]).iloc[:3])
    assert (
        pred["predicted_target"].tolist()
        == model.predict(wine.drop(columns=["target"]).iloc[:3].to_numpy()).tolist()
    )
    path = task.download_model(tmp_path / "m.skops")
    assert path.with_name("m.skops.json").exists()

    with pytest.raises(ApiError) as err:
        c.task("0" * 64)
    assert err.value.status == 404
    with pytest.raises(InputError):
        c.publish_task(cid, "target", "svm")
    with pytest.raises(ApiError) as err:
        c.publish_task(cid, "target", "ridge", params={"alpha": -1})
    assert err.value.reason == "bad-task-param"
    with pytest.raises(ApiError) as err:  # writes need the token
        Client(a.api.base).add_dataset(wine)
    assert err.value.status == 401
