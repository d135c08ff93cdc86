#!/usr/bin/env python
"""Flower's half of scripts/bench_flower.py: runs in Flower's own venv.

Reads the shards, test rows and per-round random states that bench_flower.py
wrote (an .npz), runs Flower's FedAvg strategy (``flwr.server.strategy.FedAvg``,
its ``aggregate_fit``) over Flower ``NumPyClient`` clients driven in process:
the parameters travel as Flower ``Parameters`` (its ndarray serialisation)
both ways. Flower's simulation engine needs Ray (``flwr[simulation]``), which
is not installed here; the strategy and client code are the same ones a
deployment runs. Prints one JSON document on stdout.

Client modes: ``plain`` is the local step a Flower user writes for
SGDClassifier (set coef_/intercept_ from the parameters, ``partial_fit`` E
epochs: scikit-learn's learning-rate clock starts afresh each round, as the
client keeps no state); ``clock`` resumes the clock as p2pml does
(``t_ = 1 + r E m n``, the round from the config), to separate the local step
from the aggregation.

    FLWR_TELEMETRY_ENABLED=0 python scripts/flower_side.py IN.npz
"""

from __future__ import annotations

import json
import sys
import warnings
from typing import Any

import numpy as np
from flwr.client import NumPyClient
from flwr.common import FitIns, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.strategy import FedAvg
from sklearn.linear_model import SGDClassifier


class Client(NumPyClient):  # type: ignore[misc]
    def __init__(self, X: Any, y: Any, classes: Any, states: Any, mode: str, m: int, epochs: int):
        self.X, self.y, self.classes, self.states = X, y, classes, states
        self.mode, self.m, self.epochs = mode, m, epochs

    def fit(self, parameters: list[Any], config: dict[str, Any]) -> tuple[list[Any], int, dict]:  # type: ignore[type-arg]
        r = int(config["round"])
        est = SGDClassifier(random_state=int(self.states[r]))
        est.coef_, est.intercept_ = parameters[0].copy(), parameters[1].copy()
        if self.mode == "clock":
            est.t_ = 1.0 + float(r) * self.epochs * self.m * len(self.y)
        for e in range(self.epochs):
            est.random_state = (int(self.states[r]) + e) & 0x7FFF_FFFF
            est.partial_fit(self.X, self.y, classes=self.classes)
        return [est.coef_, est.intercept_], len(self.y), {}


def run(data: Any, split: str, mode: str, rounds: int, epochs: int) -> dict[str, Any]:
    classes = data["classes"]
    m = int(data[f"{split}_m"])
    clients = [
        Client(
            data[f"{split}_X{i}"],
            data[f"{split}_y{i}"],
            classes,
            data[f"{split}_rs{i}"],
            mode,
            m,
            epochs,
        ).to_client()
        for i in range(m)
    ]
    d, k = data["Xte"].shape[1], len(classes)
    strategy = FedAvg(min_fit_clients=m, min_available_clients=m, inplace=False)
    params = ndarrays_to_parameters([np.zeros((k, d)), np.zeros(k)])
    curve, sent = [], []
    for r in range(rounds):
        down = sum(len(t) for t in params.tensors) * m
        results = [(None, c.fit(FitIns(params, {"round": r}))) for c in clients]
        up = sum(len(t) for _, res in results for t in res.parameters.tensors)
        params, _ = strategy.aggregate_fit(r + 1, results, [])
        coef, intercept = parameters_to_ndarrays(params)
        model = SGDClassifier()
        model.coef_, model.intercept_, model.classes_ = coef, intercept, classes
        model.n_features_in_ = d
        curve.append(100.0 * float((model.predict(data["Xte"]) == data["yte"]).mean()))
        sent.append(down + up)
    return {"curve": curve, "bytes_per_round": sent[0], "model_bytes": sent[0] // (2 * m)}


def main() -> None:
    warnings.simplefilter("ignore")
    import flwr

    data = np.load(sys.argv[1])
    rounds, epochs = int(data["rounds"]), int(data["epochs"])
    out: dict[str, Any] = {"flwr": flwr.__version__}
    for split in ("iid", "skewed"):
        for mode in ("plain", "clock"):
            out[f"{split}/{mode}"] = run(data, split, mode, rounds, epochs)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
