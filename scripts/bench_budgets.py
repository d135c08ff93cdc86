#!/usr/bin/env python3
"""Benchmark: the cost budgets of a result's model (issue 14) against its predict.

Honest side: a random forest, gradient boosting and histogram boosting model
fitted on a synthetic regression set (20,000 rows x 10 features; ``--quick``:
5,000), each loaded from its artifact; the time of ``budgets.check_model`` is
compared with the whole check of the result (load, budgets, holdout predict).

Hostile side (attacks 1 and 2 of issue 14): the time to the verdict, in this
process, for a forest of 5,000 memo references to one tree 20,000 levels
deep, and for a tree of 1000 outputs x 1000 classes. Before the budgets,
predicting on the holdout took hours and ~8 GB respectively.

    python scripts/bench_budgets.py [--quick]
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
import warnings
import zipfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/ is not a package

import numpy as np
from benchlib import figure

from p2pml.errors import ModelArtifactError
from p2pml.ml.artifact import dump_model, load_model
from p2pml.ml.budgets import TaskShape, check_model
from p2pml.ml.estimators import build_estimator
from p2pml.ml.worker import limit_threads

RS = 11
FEATURES = 10


def timed(fn: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def honest(rows: int) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(rows, FEATURES))
    y = X @ rng.normal(size=FEATURES) + rng.normal(size=rows)
    hold = rng.normal(size=(rows // 5, FEATURES))
    cases = [
        ("random_forest_regressor", {"n_estimators": 100}),
        ("gradient_boosting_regressor", {"n_estimators": 200}),
        ("hist_gradient_boosting_regressor", {"max_iter": 200}),
    ]
    for name, params in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = build_estimator(name, params, RS).fit(X, y)
        data = dump_model(model)
        loaded, load_s = timed(lambda d=data, n=name, p=params: load_model(d, n, p, RS))
        shape = TaskShape(name, loaded.get_params(deep=False), len(hold), rows, FEATURES, None)
        _, check_s = timed(lambda m=loaded, s=shape: check_model(m, s))
        _, predict_s = timed(lambda m=loaded: m.predict(hold))
        total = load_s + check_s + predict_s
        figure(
            f"{name}: budgets' share of verify",
            f"{100 * check_s / total:.0f} %",
            "<= 25 %",
            f"check {check_s * 1000:.0f} ms, load {load_s * 1000:.0f} ms, "
            f"predict {predict_s * 1000:.0f} ms",
        )


def rewrite(artifact: bytes, edit: Any) -> bytes:
    src = zipfile.ZipFile(io.BytesIO(artifact))
    schema = json.loads(src.read("schema.json"))
    edit(schema)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for name in src.namelist():
            dst.writestr(name, json.dumps(schema) if name == "schema.json" else src.read(name))
    return out.getvalue()


def verdict_seconds(data: bytes, name: str, params: dict[str, Any], classes: Any) -> float:
    t0 = time.perf_counter()
    try:
        model = load_model(data, name, params, RS, n_features=FEATURES)
        check_model(
            model, TaskShape(name, model.get_params(deep=False), 1000, 2500, FEATURES, classes)
        )
    except ModelArtifactError:
        return time.perf_counter() - t0
    raise SystemExit(f"{name}: the hostile model was accepted")


def hostile() -> None:
    from sklearn.tree._tree import NODE_DTYPE, Tree

    rng = np.random.default_rng(1)
    X = rng.normal(size=(500, FEATURES))
    forest = build_estimator("random_forest_regressor", {"n_estimators": 10}, RS).fit(X, X[:, 0])
    depth = 20_000
    n = 2 * depth + 1
    nodes = np.zeros(n, dtype=NODE_DTYPE)
    inner = np.arange(depth)
    nodes["left_child"] = nodes["right_child"] = -1
    nodes["feature"] = -2
    nodes["left_child"][inner] = np.where(inner + 1 < depth, inner + 1, 2 * depth)
    nodes["right_child"][inner] = depth + inner
    nodes["feature"][inner] = 0
    nodes["threshold"][inner] = 1e300
    chain = Tree(FEATURES, np.array([1], dtype=np.intp), 1)
    chain.__setstate__(
        {"max_depth": depth, "node_count": n, "nodes": nodes, "values": np.zeros((n, 1, 1))}
    )
    forest.estimators_ = forest.estimators_[:1]
    forest.estimators_[0].tree_ = chain

    def refs(schema: dict[str, Any]) -> None:
        trees = schema["content"]["content"]["estimators_"]["content"]
        trees += [{"__id__": trees[0]["__id__"]}] * 4999

    data = rewrite(dump_model(forest), refs)
    s = verdict_seconds(data, "random_forest_regressor", {"n_estimators": 10}, None)
    figure(
        "attack 1: verdict on 5,000 refs to a deep tree",
        f"{s * 1000:.0f} ms",
        "<= 1000 ms",
        f"{len(data) / 2**20:.1f} MiB artifact; hours of predict before",
    )

    y = (X[:, 0] > 0).astype(np.int64)
    tree = build_estimator("decision_tree_classifier", {}, RS).fit(X, y)
    big = Tree(FEATURES, np.full(1000, 1000, dtype=np.intp), 1000)
    leaf = np.zeros(1, dtype=NODE_DTYPE)
    leaf["left_child"] = leaf["right_child"] = -1
    leaf["feature"] = -2
    big.__setstate__(
        {"max_depth": 0, "node_count": 1, "nodes": leaf, "values": np.ones((1, 1000, 1000))}
    )
    tree.tree_, tree.n_outputs_ = big, 1000
    tree.classes_ = [np.arange(1000)] * 1000
    tree.n_classes_ = [1000] * 1000
    data = dump_model(tree)
    s = verdict_seconds(data, "decision_tree_classifier", {}, np.array([0, 1]))
    figure(
        "attack 2: verdict on 1000 x 1000 tree",
        f"{s * 1000:.0f} ms",
        "<= 1000 ms",
        f"{len(data) / 2**20:.1f} MiB artifact; ~8 GB predict_proba before",
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    limits = limit_threads()  # one BLAS thread, as in the workers
    honest(5_000 if args.quick else 20_000)
    hostile()
    del limits


if __name__ == "__main__":
    main()
