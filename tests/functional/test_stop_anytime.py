"""SIGTERM or SIGINT at random moments of mining, training, sync and an
upload: every stop exits 0 with no traceback, and the store it leaves is
consistent (the node restarts from it at no lower height).

The moment of each signal is drawn from a seeded generator (printed, so a
failing draw can be replayed with P2PML_STOP_SEED); a random delay picks
*when* to interrupt, it never waits for anything to happen.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_diabetes

from p2pml.errors import ApiError
from tests.framework.testnode import NodeSet, TestNode, connect_nodes
from tests.framework.waiting import wait_until_sync

STOPS_PER_ACTIVITY = 5  # 4 activities: 20 stops
SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _task(cid: str) -> dict[str, object]:
    return {
        "dataset_cid": cid,
        "target": "target",
        "model": "random_forest_regressor",
        "kind": "regression",
        "metric": "r2",
        "params": {"n_estimators": 200},
        "rounds": 4,
        "deadline": 10_000,
    }


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_stops_at_random_moments_exit_zero_and_keep_the_store(
    nodes: NodeSet, tmp_path: Path
) -> None:
    seed = int(os.environ.get("P2PML_STOP_SEED", random.SystemRandom().randrange(2**32)))
    print(f"P2PML_STOP_SEED={seed}")
    rng = random.Random(seed)
    a = nodes.add(
        node={"dev_key": 0},
        mining={"enabled": True, "workers": 1},
        training={"enabled": True, "workers": 1},
    )
    b = nodes.add()
    a.start()
    diabetes = tmp_path / "diabetes.csv"
    load_diabetes(as_frame=True).frame.to_csv(diabetes, index=False)
    cid = a.api.upload("/datasets", diabetes)["cid"]
    big = tmp_path / "big.csv"
    pd.DataFrame(np.random.default_rng(1).random((150_000, 6))).to_csv(big, index=False)
    a.mine(300)  # a chain for b to sync
    stops = 0

    def cycle(node: TestNode, begin: Callable[[], None]) -> None:
        nonlocal stops
        if node.proc is None or node.proc.poll() is not None:
            node.start()
        begin()
        before = node.height
        time.sleep(rng.uniform(0.0, 1.5))  # the random moment to interrupt at
        sig = rng.choice(SIGNALS)
        took = node.stop(sig=sig)  # asserts exit 0 and no traceback
        stops += 1
        print(f"stop {stops}: {begin.__name__}, {sig.name}, stopped in {took:.2f}s")
        node.start()
        assert node.height >= before, f"store lost blocks: {node.height} < {before}"

    def mining() -> None:
        assert a.status()["mining"]["enabled"]

    def training() -> None:
        try:
            a.api.post("/tasks", _task(cid))
        except ApiError as exc:
            assert exc.reason == "insufficient-funds", exc
        wait_until_sync(
            lambda: a.status()["training"]["running_jobs"] > 0, 60, what="a training job"
        )

    def upload() -> None:
        def send() -> None:
            try:
                a.api.upload("/datasets", big)
            except Exception:
                pass  # the node stops under the upload: that is the point

        threading.Thread(target=send, daemon=True).start()

    def sync() -> None:
        connect_nodes(b, a)

    for _ in range(STOPS_PER_ACTIVITY):
        cycle(a, mining)
        cycle(a, training)
        cycle(a, upload)
        cycle(b, sync)
    assert stops == 4 * STOPS_PER_ACTIVITY
    # b got at least part of a's chain across its interrupted syncs, and
    # finishes it from the store it kept.
    connect_nodes(b, a)
    wait_until_sync(lambda: b.height >= 300, 120, what="b to finish syncing")
