"""Local training from G_r: seeded, shape-stable with missing classes, checked inputs;
and the same global model hash in two processes."""

from __future__ import annotations

import hashlib
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest
from sklearn.datasets import load_digits

from p2pml.errors import ValidationError
from p2pml.federated.aggregate import Rule, Update, aggregate
from p2pml.federated.encoding import model_hash
from p2pml.federated.layout import Layout
from p2pml.federated.local import train_local
from p2pml.federated.params import build, initial_vector

SEED = hashlib.sha256(b"seed").digest()
TASK = hashlib.sha256(b"task").digest()


def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # type: ignore[type-arg]
    X, y = load_digits(return_X_y=True)
    return X / 16.0, y.astype(np.int64), np.arange(10, dtype=np.int64)


def rounds_hash(estimator: str, rounds: int, clipped: bool) -> str:
    """Runs ``rounds`` rounds over 5 label-skewed shards; the last G's hash."""
    X, y, classes = digits()
    layout = Layout(estimator, 64, 10)
    params = {"max_iter": 3} if estimator == "logistic_regression" else {}
    order = np.argsort(y, kind="stable")
    shards = np.array_split(order, 5)
    g = initial_vector(layout, SEED)
    rule = Rule("median", clip=5.0) if clipped else Rule("fedavg")
    for r in range(rounds):
        ups = [
            Update(
                bytes([i + 1]) * 32,
                train_local(
                    layout,
                    params,
                    g,
                    X[s],
                    y[s],
                    classes,
                    round=r,
                    local_epochs=2,
                    random_state=1000 + i,
                    participants=5,
                ),
                len(s),
            )
            for i, s in enumerate(shards)
        ]
        g = aggregate(layout, g, ups, rule)
    return model_hash(layout, g).hex()


@pytest.mark.parametrize(
    ("estimator", "clipped"), [("sgd_classifier", True), ("logistic_regression", False)]
)
def test_same_hash_in_two_processes(estimator: str, clipped: bool) -> None:
    here = rounds_hash(estimator, 3, clipped)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=ctx) as pool:
        there = pool.submit(rounds_hash, estimator, 3, clipped).result(timeout=120)
    assert there == here


def test_training_starts_from_the_global_model() -> None:
    X, y, classes = digits()
    layout = Layout("sgd_classifier", 64, 10)
    g0 = initial_vector(layout, SEED)
    kw = {"round": 0, "local_epochs": 1, "random_state": 5, "participants": 5}
    w0 = train_local(layout, {}, g0, X[:300], y[:300], classes, **kw)  # type: ignore[arg-type]
    assert np.array_equal(w0, train_local(layout, {}, g0, X[:300], y[:300], classes, **kw))  # type: ignore[arg-type]
    w1 = train_local(layout, {}, w0, X[:300], y[:300], classes, **kw)  # type: ignore[arg-type]
    assert not np.array_equal(w0, w1)
    model = build(layout, w1, {}, classes)
    assert model.score(X, y) > 0.8


@pytest.mark.parametrize("estimator", ["sgd_classifier", "logistic_regression"])
def test_a_shard_without_some_classes_keeps_the_task_shape(estimator: str) -> None:
    X, y, classes = digits()
    few = y < 3  # classes 3..9 missing
    layout = Layout(estimator, 64, 10)
    w = train_local(
        layout,
        {},
        initial_vector(layout, SEED),
        X[few],
        y[few],
        classes,
        round=0,
        local_epochs=1,
        random_state=1,
        participants=1,
    )
    assert w.shape == (layout.size,)
    model = build(layout, w, {}, classes)
    assert set(model.predict(X[few])) <= {0, 1, 2}


def test_binary_and_regression_layouts() -> None:
    X, y, _ = digits()
    binary = Layout("sgd_classifier", 64, 2)
    yb = (y >= 5).astype(np.int64)
    w = train_local(
        binary,
        {},
        initial_vector(binary, SEED),
        X,
        yb,
        np.array([0, 1]),
        round=0,
        local_epochs=1,
        random_state=1,
        participants=1,
    )
    assert build(binary, w, {}, np.array([0, 1])).score(X, yb) > 0.8
    reg = Layout("sgd_regressor", 64)
    w = train_local(
        reg,
        {},
        initial_vector(reg, SEED),
        X,
        y.astype(float),
        np.array([]),
        round=0,
        local_epochs=2,
        random_state=1,
        participants=1,
    )
    assert build(reg, w, {}, np.array([])).score(X, y) > 0.3


def test_bad_local_data_is_refused() -> None:
    X, y, classes = digits()
    layout = Layout("sgd_classifier", 64, 10)
    g = initial_vector(layout, SEED)
    cases = [
        (X[:, :10], y, classes, "bad-update-shape"),
        (X, y[:-1], classes, "bad-update-shape"),
        (X, y + 1, classes, "federated-labels"),  # label 10 is not a class
        (X, y, classes[::-1], "federated-labels"),
    ]
    for Xc, yc, cc, reason in cases:
        with pytest.raises(ValidationError) as err:
            train_local(
                layout, {}, g, Xc, yc, cc, round=0, local_epochs=1, random_state=1, participants=1
            )
        assert err.value.reason == reason
    with pytest.raises(ValidationError, match="bad-task-param"):
        train_local(
            layout,
            {"random_state": 3},
            g,
            X,
            y,
            classes,
            round=0,
            local_epochs=1,
            random_state=1,
            participants=1,
        )


def test_the_sgd_learning_rate_clock_resumes_with_the_round() -> None:
    X, y, classes = digits()
    layout = Layout("sgd_classifier", 64, 10)
    g = initial_vector(layout, SEED)
    early, late = (
        train_local(
            layout,
            {},
            g,
            X[:300],
            y[:300],
            classes,
            round=r,
            local_epochs=1,
            random_state=5,
            participants=5,
        )
        for r in (0, 10)
    )
    # Later rounds take smaller steps ("optimal" schedule: eta = 1 / (alpha (t0 + t))).
    assert np.linalg.norm(late - g) < np.linalg.norm(early - g)


def test_the_sgd_clock_counts_the_rows_of_all_participants() -> None:
    """t_ resumes at 1 + r E m n: with m = 5 round 2 steps like round 10 with m = 1."""
    X, y, classes = digits()
    layout = Layout("sgd_classifier", 64, 10)
    g = initial_vector(layout, SEED)
    kw = {"local_epochs": 1, "random_state": 5}
    five = train_local(layout, {}, g, X[:300], y[:300], classes, round=2, participants=5, **kw)  # type: ignore[arg-type]
    ten = train_local(layout, {}, g, X[:300], y[:300], classes, round=10, participants=1, **kw)  # type: ignore[arg-type]
    one = train_local(layout, {}, g, X[:300], y[:300], classes, round=2, participants=1, **kw)  # type: ignore[arg-type]
    assert np.array_equal(five, ten)
    assert not np.array_equal(five, one)
    with pytest.raises(ValidationError, match="bad-task-param"):
        train_local(layout, {}, g, X, y, classes, round=0, participants=0, **kw)  # type: ignore[arg-type]
