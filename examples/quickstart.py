"""Quickstart: train a model on the p2pml network from Python, then use it.

Start a devnet in another terminal (``scripts/demo``, or ``.venv/bin/p2pml
devnet``), then run from the repository root::

    .venv/bin/python examples/quickstart.py              # uses ./devnet/node1
    .venv/bin/python examples/quickstart.py --devnet DIR # or another devnet dir
    .venv/bin/python examples/quickstart.py --api URL --token-file FILE

It adds scikit-learn's wine data as a DataFrame, publishes a logistic
regression task, follows it with a progress bar until it closes, prints the
results table, loads the best model (a fitted scikit-learn estimator, read
with p2pml's safe reader, never pickle) and predicts on a few rows. The test
suite runs it against a devnet of real node processes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from sklearn.datasets import load_wine

from p2pml.chain.params import NETWORKS
from p2pml.client import Client
from p2pml.errors import P2PMLError


def connect(args: argparse.Namespace) -> Client:
    if args.api:
        return Client(args.api, token_file=args.token_file)
    data = Path(args.devnet) / "node1" / "data"
    url_file = data / "api.url"
    if not url_file.exists():
        sys.exit(f"no devnet at {args.devnet} (start one: .venv/bin/p2pml devnet)")
    return Client(url_file.read_text().strip(), token_file=data / "admin.token")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devnet", default="devnet", help="devnet dir (default ./devnet)")
    ap.add_argument("--api", help="a node's admin API URL instead of --devnet")
    ap.add_argument("--token-file", help="with --api: the node's admin.token")
    ap.add_argument("--timeout", type=float, default=600, help="seconds to wait for the task")
    args = ap.parse_args()

    client = connect(args)
    print(f"node {client.url}: height {client.status()['height']}")

    wine = load_wine(as_frame=True).frame  # 178 rows, 13 features, 3 classes
    new_rows = wine.sample(5, random_state=0).drop(columns=["target"])
    cid = client.add_dataset(wine, name="wine.csv")
    print(f"dataset added: {cid}")

    # A result counts only from a bond registered bond_maturity blocks before
    # the task's block: on a fresh devnet, wait until the dev keys' genesis
    # bonds are that old, or every result is refused (bond-too-young).
    status = client.status()
    mature = NETWORKS[status["network"]].bond_maturity if status["network"] in NETWORKS else 0
    while status["height"] < mature - 1:
        time.sleep(0.5)  # polling the node's API, as a user would
        status = client.status()

    task = client.publish_task(
        cid,
        target="target",
        model="logistic_regression",
        params={"C": 1.0, "max_iter": 500},
        metric="accuracy",
        rounds=1,
        partition=0.6,
        bounty=10_000,
        deadline=30,
        max_results=2,
    )
    print(f"task published: {task.id}")
    final = task.wait(progress=True, timeout=args.timeout)
    if not final["best"]:
        print(f"task {final['status']} without a valid result")
        return 1
    print(f"task {final['status']}: best accuracy {final['best']['metric']:.4f}")

    print(task.results()[["round", "trainer", "metric", "model_cid"]].to_string())
    model = task.best_model()
    print(f"best model: {model!r}, classes {list(model.classes_)}")

    predictions = task.predict(new_rows, proba=True)
    print(predictions[["predicted_target", "proba_0", "proba_1", "proba_2"]].round(3).to_string())
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except P2PMLError as exc:  # one line, as the CLI does
        sys.exit(f"quickstart: {exc}")
