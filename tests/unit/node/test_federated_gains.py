"""The node's gains for a task rewarding improvement (docs/federated.md §11.5):
the round close's oracle scores G_r and each update's model on every row of
the validation CSV in the ``fed_gains`` worker job. Checked against an
independent scikit-learn computation; an update equal to G_r gains 0; a CSV
that does not fit the task's layout gives the verdict ``()`` (fallback shares)
while one nobody serves is missing data. Real jobs run in process; IPFS is a
dict."""

from __future__ import annotations

import asyncio
import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest
from sklearn.datasets import load_digits
from sklearn.metrics import accuracy_score

from p2pml.chain.fedspec import FederatedSpec
from p2pml.chain.taskspec import TaskSpec
from p2pml.federated import rounds
from p2pml.federated.encoding import decode
from p2pml.federated.params import build
from p2pml.node.federated_verifier import CloseCheck
from tests.unit.node.test_federated_verifier import (
    P1,
    P2,
    SEED,
    TASK,
    DictStore,
    g0,
    make_verifier,
    trained,
)

P3 = b"\x03" * 32


@pytest.fixture
def improving(tmp_path: Path) -> tuple[Any, DictStore, TaskSpec, Any]:
    frame = load_digits(as_frame=True).frame
    store = DictStore(tmp_path)
    train_csv, valid_csv = tmp_path / "train.csv", tmp_path / "valid.csv"
    frame.iloc[:1200].to_csv(train_csv, index=False)
    frame.iloc[1200:].to_csv(valid_csv, index=False)
    data = asyncio.run(store.add_bytes(train_csv.read_bytes()))
    valid = asyncio.run(store.add_bytes(valid_csv.read_bytes()))
    spec = TaskSpec(
        dataset_cid=data,
        target="target",
        model="sgd_classifier",
        kind="classification",
        metric="accuracy",
        features=tuple(c for c in frame.columns if c != "target"),
        holdout_fraction=0.25,
        partition_fraction=0.2,
        rounds=2,
        federated=FederatedSpec(
            "fedavg", 3, 1, 10, tuple(range(10)), validation=valid, reward="improvement"
        ),
    )
    spec.validate()
    return make_verifier(store, tmp_path), store, spec, frame.iloc[1200:]


def round_updates(store: DictStore, spec: TaskSpec) -> tuple[tuple[bytes, str, int], ...]:
    """P1 and P2 train from G_0; P3 sends G_0 itself (a zero delta: no improvement)."""
    start = g0(spec)
    out = []
    for who in (P1, P2):
        art, n = trained(store, spec, who, 0, start)
        out.append((who, asyncio.run(store.add_bytes(art)), n))
    out.append((P3, asyncio.run(store.add_bytes(start)), 7))
    return tuple(out)


def test_gains_are_each_updates_improvement_on_every_validation_row(improving: Any) -> None:
    fv, store, spec, valid = improving
    wire = spec.to_wire()
    ups = round_updates(store, spec)
    answer = asyncio.run(fv.answer(CloseCheck(TASK, wire, SEED, (), (), ups)))
    assert answer is not None
    _digest, gains = answer
    # Independently: each update's model G_0 + D_i, scored with scikit-learn.
    layout = rounds.layout_of(wire)
    base = rounds.initial(wire, SEED)
    X, y = valid.drop(columns="target").to_numpy(float), valid["target"].to_numpy()

    def accuracy(vector: Any) -> float:
        model = build(layout, vector, spec.param_dict, rounds.classes_of(wire))
        return float(accuracy_score(y, model.predict(X)))

    s0 = accuracy(base)
    expected = []
    for _p, cid, _n in ups:
        w = decode(layout, store.files[cid].read_bytes())
        expected.append(max(0, math.floor((accuracy(w) - s0) * 1e6)))
    assert gains == tuple(expected)
    assert gains[0] > 0 and gains[1] > 0 and gains[2] == 0


def test_a_validation_csv_that_does_not_fit_gives_no_gains_not_no_close(
    improving: Any,
) -> None:
    fv, store, spec, _valid = improving
    junk = asyncio.run(store.add_bytes(b"x,y\n1,2\n"))  # none of the task's columns
    bad = dataclasses.replace(spec, federated=dataclasses.replace(spec.federated, validation=junk))
    wire = bad.to_wire()
    ups = round_updates(store, bad)
    answer = asyncio.run(fv.answer(CloseCheck(TASK, wire, SEED, (), (), ups)))
    assert answer is not None and answer[1] == ()  # the verdict: fall back to sample shares


def test_a_validation_csv_nobody_serves_is_missing_data(improving: Any) -> None:
    fv, store, spec, valid = improving
    csv = valid.to_csv(index=False).encode() + b"\n"  # other bytes: a CID not in the store
    from p2pml.ipfs.cid import cid_of_bytes

    missing = cid_of_bytes(csv)
    gone = dataclasses.replace(
        spec, federated=dataclasses.replace(spec.federated, validation=missing)
    )
    wire = gone.to_wire()
    ups = round_updates(store, gone)
    check = CloseCheck(TASK, wire, SEED, (), (), ups)
    assert asyncio.run(fv.answer(check)) is None  # the block waits
    asyncio.run(store.add_bytes(csv))
    again = asyncio.run(fv.answer(check))
    assert again is not None and len(again[1]) == 3
