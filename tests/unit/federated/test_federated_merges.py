"""Exact merges: shards' statistics summed give the centralised fit."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_diabetes, load_digits, load_wine
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.naive_bayes import GaussianNB

from p2pml.federated.aggregate import Rule, Update, aggregate
from p2pml.federated.layout import Layout
from p2pml.federated.local import train_local
from p2pml.federated.params import build, initial_vector

SEED = bytes(32)


def merged(
    layout: Layout, X: np.ndarray, y: np.ndarray, classes: np.ndarray, params: dict
) -> object:  # type: ignore[type-arg]
    g = initial_vector(layout, SEED)
    parts = np.array_split(np.random.default_rng(3).permutation(len(y)), 5)
    updates = [
        Update(
            bytes([i + 1]) * 32,
            train_local(
                layout,
                params,
                g,
                X[p],
                y[p],
                classes,
                round=0,
                local_epochs=1,
                random_state=1,
                participants=5,
            ),
            len(p),
        )
        for i, p in enumerate(parts)
    ]
    return build(layout, aggregate(layout, g, updates, Rule("sum")), params, classes)


@pytest.mark.parametrize("loader", [load_digits, load_wine])
def test_gaussian_nb_merge_equals_centralised(loader: object) -> None:
    X, y = loader(return_X_y=True)  # type: ignore[operator]
    classes = np.unique(y)
    # Skewed shards: sort by label so that some shards lack classes.
    order = np.argsort(y, kind="stable")
    X, y = X[order], y[order]
    layout = Layout("gaussian_nb", X.shape[1], len(classes))
    ours = merged(layout, X, y, classes, {})
    ref = GaussianNB().fit(X, y)
    assert np.allclose(ours.theta_, ref.theta_, rtol=1e-9, atol=1e-12)  # type: ignore[attr-defined]
    assert np.allclose(ours.var_, ref.var_, rtol=1e-9, atol=1e-12)  # type: ignore[attr-defined]
    assert np.allclose(ours.class_prior_, ref.class_prior_)  # type: ignore[attr-defined]
    assert np.array_equal(ours.predict(X), ref.predict(X))  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("estimator", "params", "reference"),
    [
        ("linear_regression", {}, LinearRegression()),
        ("linear_regression", {"fit_intercept": False}, LinearRegression(fit_intercept=False)),
        ("ridge", {"alpha": 0.5}, Ridge(alpha=0.5)),
    ],
)
def test_least_squares_merge_equals_centralised(
    estimator: str,
    params: dict,
    reference: object,  # type: ignore[type-arg]
) -> None:
    X, y = load_diabetes(return_X_y=True)
    layout = Layout(estimator, X.shape[1])
    ours = merged(layout, X, y, np.array([], dtype=np.int64), params)
    ref = reference.fit(X, y)  # type: ignore[attr-defined]
    assert np.allclose(ours.coef_, ref.coef_, rtol=1e-7, atol=1e-8)  # type: ignore[attr-defined]
    assert np.isclose(ours.intercept_, ref.intercept_, rtol=1e-9)  # type: ignore[attr-defined]
    assert np.allclose(ours.predict(X), ref.predict(X), rtol=1e-9)  # type: ignore[attr-defined]


def test_linear_regression_with_collinear_columns_matches_minimum_norm() -> None:
    X, y = load_digits(return_X_y=True)  # constant-zero pixels: a singular X^T X
    y = y.astype(np.float64)
    layout = Layout("linear_regression", X.shape[1])
    ours = merged(layout, X, y, np.array([], dtype=np.int64), {})
    ref = LinearRegression().fit(X, y)
    assert np.allclose(ours.predict(X), ref.predict(X), atol=1e-6)  # type: ignore[attr-defined]
