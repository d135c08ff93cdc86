"""MLPs federate by parameters: the vector's order, the seeded G_0, local
training from G_r, and a short federated run on digits."""

from __future__ import annotations

import hashlib
import warnings

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.neural_network import MLPClassifier, MLPRegressor

from p2pml.errors import ValidationError
from p2pml.federated.aggregate import Rule, Update, aggregate
from p2pml.federated.encoding import decode, encode
from p2pml.federated.layout import Layout, task_layout
from p2pml.federated.local import train_local
from p2pml.federated.params import build, initial_vector, split_mlp, vector_of
from p2pml.federated.plan import Plan, check_plan

SEED = hashlib.sha256(b"mlp seed").digest()
CLASSES = np.arange(10, dtype=np.int64)


def digits() -> tuple[np.ndarray, np.ndarray]:  # type: ignore[type-arg]
    X, y = load_digits(return_X_y=True)
    return X / 16.0, y.astype(np.int64)


def fitted(estimator: object, X: np.ndarray, y: np.ndarray) -> object:  # type: ignore[type-arg]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a few iterations: "did not converge"
        return estimator.fit(X, y)  # type: ignore[attr-defined,no-any-return]


def test_layout_sizes_and_the_task_default() -> None:
    layout = task_layout("mlp_classifier", 64, 10, {"hidden_layer_sizes": (32, 16)})
    assert layout.units == (64, 32, 16, 10)
    assert layout.size == 64 * 32 + 32 * 16 + 16 * 10 + 32 + 16 + 10
    assert task_layout("mlp_classifier", 64, 10, {}).hidden == (100,)
    assert Layout("mlp_classifier", 4, 2, (3,)).units == (4, 3, 1)  # binary: one logistic output
    assert Layout("mlp_regressor", 4, 0, (3,)).units == (4, 3, 1)
    for bad in ((), (0,), (1,) * 9):
        with pytest.raises(ValidationError, match="bad-update-shape"):
            Layout("mlp_classifier", 4, 3, bad)
    with pytest.raises(ValidationError, match="bad-update-shape"):
        Layout("sgd_classifier", 4, 3, (3,))
    # The hidden sizes are part of the encoding: another architecture is another model.
    a, b = Layout("mlp_regressor", 2, 0, (3,)), Layout("mlp_regressor", 2, 0, (1, 3))
    assert a.size == b.size == 13
    with pytest.raises(ValidationError, match="bad-update-shape"):
        decode(b, encode(a, np.ones(13)))


@pytest.mark.parametrize(
    ("estimator", "k"), [("mlp_classifier", 10), ("mlp_classifier", 2), ("mlp_regressor", 0)]
)
def test_vector_order_is_scikit_learns_and_build_predicts_the_same(estimator: str, k: int) -> None:
    X, y = digits()
    target = y if k == 10 else (y >= 5).astype(np.int64) if k == 2 else y.astype(float)
    cls = MLPClassifier if k else MLPRegressor
    model = fitted(cls(hidden_layer_sizes=(8, 5), max_iter=20, random_state=0), X, target)
    layout = Layout(estimator, 64, k, (8, 5))
    vector = vector_of(layout, model)
    expected = [*model.coefs_, *model.intercepts_]  # type: ignore[attr-defined]
    assert vector.tolist() == np.concatenate([p.reshape(-1) for p in expected]).tolist()
    coefs, intercepts = split_mlp(layout, vector)
    assert all(np.array_equal(a, b) for a, b in zip(coefs, model.coefs_, strict=True))  # type: ignore[attr-defined]
    assert all(np.array_equal(a, b) for a, b in zip(intercepts, model.intercepts_, strict=True))  # type: ignore[attr-defined]
    classes = np.unique(target) if k else np.array([])
    params = {"hidden_layer_sizes": (8, 5)}
    rebuilt = build(layout, vector, params, classes)  # type: ignore[arg-type]
    assert np.array_equal(rebuilt.predict(X), model.predict(X))  # type: ignore[attr-defined]


def test_initial_vector_is_seeded_glorot() -> None:
    params = {"hidden_layer_sizes": (20,)}
    layout = task_layout("mlp_classifier", 64, 10, params)  # type: ignore[arg-type]
    g0 = initial_vector(layout, SEED, params)  # type: ignore[arg-type]
    assert np.array_equal(g0, initial_vector(layout, SEED, params))  # type: ignore[arg-type]
    assert not np.array_equal(g0, initial_vector(layout, bytes(32), params))  # type: ignore[arg-type]
    coefs, intercepts = split_mlp(layout, g0)
    for (fan_in, fan_out), coef, bias in zip(((64, 20), (20, 10)), coefs, intercepts, strict=True):
        bound = np.sqrt(6.0 / (fan_in + fan_out))
        assert np.abs(coef).max() <= bound and np.abs(bias).max() <= bound
        assert np.abs(coef).max() > 0.9 * bound  # spread over the whole interval
    # Hidden units start distinct, or they would stay identical forever.
    assert len({tuple(col) for col in coefs[0].T}) == 20
    logistic = initial_vector(layout, SEED, {**params, "activation": "logistic"})  # type: ignore[arg-type]
    assert np.allclose(logistic, g0 * np.sqrt(2.0 / 6.0))


def test_local_training_starts_from_g_and_keeps_the_task_shape() -> None:
    X, y = digits()
    params = {"hidden_layer_sizes": (16,)}
    layout = task_layout("mlp_classifier", 64, 10, params)  # type: ignore[arg-type]
    g = initial_vector(layout, SEED, params)  # type: ignore[arg-type]
    few = y < 3
    kw = {"round": 0, "local_epochs": 2, "random_state": 3, "participants": 5}
    w = train_local(layout, params, g, X[few], y[few], CLASSES, **kw)  # type: ignore[arg-type]
    assert w.shape == g.shape and not np.array_equal(w, g)
    assert np.array_equal(w, train_local(layout, params, g, X[few], y[few], CLASSES, **kw))  # type: ignore[arg-type]
    # The shard's classes gained probability; the absent classes' outputs are still there.
    before = build(layout, g, params, CLASSES).predict_proba(X[few])  # type: ignore[arg-type]
    after = build(layout, w, params, CLASSES).predict_proba(X[few])  # type: ignore[arg-type]
    assert after.shape == (few.sum(), 10)
    assert after[:, :3].sum(axis=1).mean() > before[:, :3].sum(axis=1).mean() + 0.02
    with pytest.raises(ValidationError) as err:
        train_local(layout, {**params, "solver": "lbfgs"}, g, X, y, CLASSES, **kw)  # type: ignore[arg-type]
    assert err.value.reason == "federated-estimator"
    with pytest.raises(ValidationError) as err:
        train_local(layout, {"hidden_layer_sizes": (17,)}, g, X, y, CLASSES, **kw)  # type: ignore[arg-type]
    assert err.value.reason == "bad-update-shape"


def test_five_participants_learn_digits_together() -> None:
    X, y = digits()
    params = {"hidden_layer_sizes": (32,), "learning_rate_init": 0.01}
    layout = task_layout("mlp_classifier", 64, 10, params)  # type: ignore[arg-type]
    train, test = np.arange(0, 1400), np.arange(1400, len(y))
    shards = np.array_split(train, 5)
    g = initial_vector(layout, SEED, params)  # type: ignore[arg-type]
    for r in range(5):
        ups = [
            Update(
                bytes([i + 1]) * 32,
                train_local(
                    layout,
                    params,
                    g,
                    X[s],
                    y[s],
                    CLASSES,  # type: ignore[arg-type]
                    round=r,
                    local_epochs=3,
                    random_state=10 * r + i,
                    participants=5,
                ),
                len(s),
            )
            for i, s in enumerate(shards)
        ]
        g = aggregate(layout, g, ups, Rule("fedavg"))
    accuracy = build(layout, g, params, CLASSES).score(X[test], y[test])  # type: ignore[arg-type]
    assert accuracy > 0.85


def test_plans() -> None:
    base = {"estimator": "mlp_classifier", "rounds": 10, "participants": 5}
    assert check_plan(Plan(**base, params={"hidden_layer_sizes": (32,)})) is None  # type: ignore[arg-type]
    with pytest.raises(ValidationError) as err:
        check_plan(Plan(**base, params={"solver": "lbfgs"}))  # type: ignore[arg-type]
    assert err.value.reason == "federated-estimator"
    with pytest.raises(ValidationError) as err:
        check_plan(Plan(**base, rule=Rule("sum")))  # type: ignore[arg-type]
    assert err.value.reason == "federated-aggregation"
